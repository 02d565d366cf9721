package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
)

// envKilledRun makes the test binary a quickstart that is killed mid-run:
// it runs the options given as JSON and hangs once the tenants have data,
// logins and keys, for TestRerunCleansUpKilledRun to kill it.
const envKilledRun = "QUICKSTART_TEST_KILLED_RUN"

// hanging is the line the killed run prints when it starts to hang.
const hanging = "quickstart test: hanging, kill me"

func TestMain(m *testing.M) {
	if js := os.Getenv(envKilledRun); js != "" {
		killedRun(js)
		return
	}
	pgtest.Main(m)
}

// testOptions returns names under pgtest's prefix, never the fixed ones: a
// `go run` of the quickstart on the same server at the same time keeps its
// database and roles, and whatever a test leaves behind pgtest drops.
func testOptions(d *pgtest.Database, tag string) options {
	return options{
		AdminURL:   d.AdminURL(),
		Database:   d.Prefix() + "quickstart_" + tag,
		RolePrefix: d.Prefix() + tag + "_",
	}
}

// TestQuickstartRuns keeps the README's first command true: the quickstart
// runs against a real PostgreSQL, shows what it promises, and leaves
// nothing behind. It runs in parallel with TestRerunCleansUpKilledRun: two
// quickstarts with different names share a server.
func TestQuickstartRuns(t *testing.T) {
	t.Parallel()
	d := pgtest.DB(t)
	o := testOptions(d, "qs")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out, o), out.String())
	s := out.String()

	assert.Contains(t, s, "database "+o.Database+", platform role "+o.RolePrefix+"platform, mode tenant-login")
	assert.NotContains(t, s, "tenancy_quickstart", "the test used the fixed names of `go run`")
	assert.NotContains(t, s, "tenancy_qs_", "the test used the fixed names of `go run`")

	// Each tenant's connection is logged in as a role of its own, whose
	// name does not reveal the tenant.
	logins := map[string]string{}
	for _, id := range []string{"abc123", "xyz789"} {
		m := regexp.MustCompile(`as tenant ` + id + ` \(logged in as (\S+)\): SELECT`).FindStringSubmatch(s)
		if assert.NotNil(t, m, "no login line for %s", id) {
			logins[id] = m[1]
			assert.True(t, strings.HasPrefix(m[1], o.RolePrefix+"t"), "login %q of %s", m[1], id)
			assert.NotContains(t, m[1], id, "the login role names the tenant")
		}
	}
	assert.NotEqual(t, logins["abc123"], logins["xyz789"], "two tenants share a login")

	// Isolation: each sees its own rows, and only those.
	assert.Contains(t, s, "abc123     REQ-DEPLOY-004  MISSING  HIGH")
	assert.Contains(t, s, "abc123     REQ-SEC-002     PARTIAL  HIGH")
	assert.Contains(t, s, "xyz789     REQ-UI-010  COMPLETE  MEDIUM")
	assert.NotContains(t, s, "abc123     REQ-UI-010", "xyz789's row shown to abc123")
	assert.NotContains(t, s, "xyz789     REQ-DEPLOY-004", "abc123's row shown to xyz789")
	assert.NotContains(t, s, "xyz789     REQ-SEC-002", "abc123's row shown to xyz789")

	// Keys, and what fails.
	assert.Contains(t, s, `opens to "ghp_token_of_abc123"`)
	assert.Contains(t, s, `opens to "ghp_token_of_xyz789"`)
	assert.Contains(t, s, "open abc123's sealed secret\n  -> keys: Open: decryption failed")
	assert.Contains(t, s, "SELECT count(*) FROM tenant_xyz789.requirements\n  -> ERROR: permission denied for schema tenant_xyz789")
	assert.Contains(t, s, "without a tenant: SELECT * FROM requirements\n  -> store: query: tenant: no tenant in context")
	assert.Contains(t, s, "dropped tenant abc123: schema, rows, audit log and login role deleted, 1 object(s) purged, keys shredded")
	assert.Contains(t, s, "dropped tenant xyz789: schema, rows, audit log and login role deleted, 1 object(s) purged, keys shredded")
	// Object storage and audit (issue 10): each tenant's object encrypted in
	// its own prefix, an audit entry per tenant with its chain verified, and
	// bytes copied across tenants in storage not decrypting.
	for _, id := range []string{"abc123", "xyz789"} {
		assert.Regexp(t, `as tenant `+id+`: attachments/spec.txt stored at tenants/`+id+`/attachments/spec.txt, \d+ bytes encrypted, reads back "attachment of `+id+`"`, s)
		assert.Contains(t, s, "as tenant "+id+": audit entry 1 written to tenant_"+id+".audit_log; chain verified (1 entries)")
	}
	assert.Regexp(t, `after abc123's bytes were copied over it in storage\n  -> .*decryption failed`, s)
	assert.Regexp(t, `open a saved copy of its secret\n  -> .*tenant keys destroyed`, s)
	assert.Contains(t, s, "cleaned up: database "+o.Database+" and roles "+o.RolePrefix+"* dropped")

	requireNothingLeft(t, d, o)
}

// TestRerunCleansUpKilledRun kills a quickstart once its tenants have
// data, logins and keys and its pools are open, and checks that the next
// run with the same names cleans up what the killed one left and itself
// leaves nothing.
func TestRerunCleansUpKilledRun(t *testing.T) {
	t.Parallel()
	d := pgtest.DB(t)
	o := testOptions(d, "qk")
	js, err := json.Marshal(o)
	require.NoError(t, err)

	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envKilledRun+"="+string(js))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != hanging {
		out.WriteString(sc.Text() + "\n")
	}
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	require.Contains(t, out.String(), "as tenant abc123 (logged in as", "the killed run did not get far enough:\n%s\nstderr:\n%s", out.String(), stderr.String())
	require.NotContains(t, out.String(), "cleaned up")

	exists, roles := leftovers(t, d, o)
	require.True(t, exists, "the killed run left no database: the test kills too late")
	require.GreaterOrEqual(t, len(roles), 4, "the killed run should leave the platform role, the tenants' group and two tenant logins: %v", roles)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var rerun bytes.Buffer
	require.NoError(t, run(ctx, &rerun, o), rerun.String())
	assert.Contains(t, rerun.String(), "cleaned up")
	requireNothingLeft(t, d, o)
}

// killedRun is the process TestRerunCleansUpKilledRun kills.
func killedRun(js string) {
	var o options
	if err := json.Unmarshal([]byte(js), &o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, hangAfter{w: os.Stdout, marker: "as tenant xyz789 (logged in as"}, o)
	fmt.Fprintln(os.Stderr, "run returned before the test killed it:", err)
	os.Exit(2)
}

// hangAfter writes to w until a write contains marker, then prints
// [hanging] and blocks, for at most a minute, and exits.
type hangAfter struct {
	w      io.Writer
	marker string
}

func (h hangAfter) Write(b []byte) (int, error) {
	n, err := h.w.Write(b)
	if bytes.Contains(b, []byte(h.marker)) {
		fmt.Fprintln(h.w, "\n"+hanging)
		time.Sleep(time.Minute)
		os.Exit(3)
	}
	return n, err
}

// leftovers reports whether o's database exists and which roles start
// with o's prefix.
func leftovers(t testing.TB, d *pgtest.Database, o options) (dbExists bool, roles []string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), d.AdminURL())
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(t.Context()))
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, o.Database).Scan(&dbExists))
	rows, err := conn.Query(t.Context(), `SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1`, o.RolePrefix)
	require.NoError(t, err)
	roles, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return dbExists, roles
}

func requireNothingLeft(t testing.TB, d *pgtest.Database, o options) {
	t.Helper()
	exists, roles := leftovers(t, d, o)
	require.False(t, exists, "database %s left behind", o.Database)
	require.Empty(t, roles, "roles with prefix %s left behind", o.RolePrefix)
}

// TestRunRejectsNames checks that run refuses, before it connects
// anywhere, names it would have to quote and role prefixes that would make
// its cleanup drop roles that are not its own.
func TestRunRejectsNames(t *testing.T) {
	for _, bad := range []string{"", "Upper", "1db", "x; DROP DATABASE postgres", `x"y`} {
		o := defaultOptions("postgres://invalid.invalid/postgres")
		o.Database = bad
		err := run(t.Context(), &bytes.Buffer{}, o)
		require.ErrorContains(t, err, "not a lower-case SQL name", "database %q", bad)
	}
	for _, bad := range []string{"", "_", "_qs_", "p", "pg", "pg_", "pg_qs_", "qs", "Qs_", "qs_; DROP ROLE x", "a_prefix_too_long_", `q"s_`} {
		o := defaultOptions("postgres://invalid.invalid/postgres")
		o.RolePrefix = bad
		err := run(t.Context(), &bytes.Buffer{}, o)
		require.ErrorContains(t, err, "role prefix", "prefix %q", bad)
	}
}

// TestConnectFailureShowsNoPassword: a quickstart that cannot reach its
// server names the server and the user, never the password, whichever
// form the connection string gives it in.
func TestConnectFailureShowsNoPassword(t *testing.T) {
	for _, f := range []struct{ name, url, password string }{
		{"url user info", "postgres://postgres:Sentinel1userinfo@127.0.0.1:1/postgres", "Sentinel1userinfo"},
		{"url query", "postgres://postgres@127.0.0.1:1/postgres?password=Sentinel2query", "Sentinel2query"},
		{"keyword/value", "host=127.0.0.1 port=1 user=postgres password=Sentinel3keyword dbname=postgres", "Sentinel3keyword"},
		{"quoted keyword/value", "host=127.0.0.1 port=1 user=postgres password='Sentinel4 quoted' dbname=postgres", "Sentinel4"},
	} {
		t.Run(f.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(t.Context(), &out, defaultOptions(f.url))
			require.ErrorContains(t, err, "connect to PostgreSQL as superuser (user=postgres host=127.0.0.1 port=1 database=postgres)")
			assert.NotContains(t, err.Error()+out.String(), f.password)
		})
	}
}

// TestPlatformPasswordIsSentAsAVerifier: the statement creating the
// platform role carries a SCRAM-SHA-256 verifier, not the password, and
// the quickstart runs on a server that asks every role but the superuser
// for a password, so the platform role and the tenants log in with theirs.
func TestPlatformPasswordIsSentAsAVerifier(t *testing.T) {
	t.Parallel()
	const password = "0123456789abcdef0123456789abcdef"
	sql, err := defaultOptions("").createPlatformRole(password)
	require.NoError(t, err)
	assert.NotContains(t, sql, password)
	assert.Regexp(t, `^CREATE ROLE tenancy_qs_platform LOGIN PASSWORD 'SCRAM-SHA-256\$16:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+'$`, sql)

	d := pgtest.NewSCRAMCluster(t)
	o := testOptions(d, "qp")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out, o), out.String())
	assert.Contains(t, out.String(), "platform role "+o.RolePrefix+"platform, mode tenant-login")
	requireNothingLeft(t, d, o)
}
