package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/kubetest"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
)

// binary is tenantctl built once for the tests that need a process of
// its own (killed with SIGKILL).
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tenantctl-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "tenantctl")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	pgtest.Main(m, kubetest.Cleanup, func() { os.RemoveAll(dir) })
}

// seedRequest is examples/tenant.yaml, REQ-DEPLOY-004's seed request.
var seedRequest = filepath.Join("..", "..", "examples", "tenant.yaml")

// result is what one tenantctl invocation did.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// dev is a development deployment made by init --dev in a pgtest server.
type dev struct {
	t        *testing.T
	dir      string
	config   string
	opts     devOptions
	env      map[string]string // the environment of every invocation
	adminURL string            // the superuser
	// transcript is everything the in-process invocations printed.
	transcript strings.Builder
}

var devSeq atomic.Int64

// newDev runs tenantctl init --dev into a fresh database and directory.
func newDev(t *testing.T) *dev {
	t.Helper()
	return newDevOn(t, pgtest.DB(t))
}

// newDevOn runs tenantctl init --dev into a fresh database and directory
// on root's server.
func newDevOn(t *testing.T, root *pgtest.Database) *dev {
	t.Helper()
	n := devSeq.Add(1)
	d := &dev{t: t, dir: t.TempDir(), adminURL: root.AdminURL(), env: map[string]string{}}
	d.config = filepath.Join(d.dir, "tenantctl.yaml")
	d.opts = devOptions{adminURL: d.adminURL, database: fmt.Sprintf("%sdev%d", root.Prefix(), n),
		rolePrefix: fmt.Sprintf("%s%c_", root.Prefix(), 'a'+n-1), dir: filepath.Join(d.dir, "state"), configFile: d.config}
	require.Less(t, n, int64(26), "role prefixes run out")
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), d.adminURL)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer conn.Close(context.Background())
		if err := devCleanup(context.Background(), conn, d.opts); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	r := d.run("init", "--dev", "--admin-url", d.adminURL, "--database", d.opts.database, "--role-prefix", d.opts.rolePrefix, "--dir", d.opts.dir)
	require.Equal(t, 0, r.code, "init --dev: %s", r)
	return d
}

// run runs tenantctl in-process with the deployment's configuration.
func (d *dev) run(args ...string) result {
	d.t.Helper()
	return d.runIn("", args...)
}

// runIn runs tenantctl with stdin.
func (d *dev) runIn(stdin string, args ...string) result {
	d.t.Helper()
	r := runCLI(d.t, d.env, stdin, append([]string{"--config", d.config}, args...)...)
	d.transcript.WriteString(r.stdout)
	d.transcript.WriteString(r.stderr)
	return r
}

// secrets returns the deployment's secrets as init --dev wrote them.
func (d *dev) secrets() []string {
	d.t.Helper()
	var out []string
	for _, f := range []string{"login.secret", "platform.password"} {
		b, err := os.ReadFile(filepath.Join(d.opts.dir, f))
		require.NoError(d.t, err)
		out = append(out, strings.TrimSpace(string(b)))
	}
	return out
}

// runCLI runs tenantctl in-process with only the environment env.
func runCLI(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(t.Context(), args, strings.NewReader(stdin), &out, &errOut, func(k string) string { return env[k] })
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// proc runs the tenantctl binary with the deployment's configuration.
func (d *dev) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binary, append([]string{"--config", d.config}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + d.dir}
	for k, v := range d.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// jsonOut decodes a command's JSON output.
func jsonOut[T any](t *testing.T, r result) T {
	t.Helper()
	require.Equal(t, 0, r.code, "%s", r)
	var v T
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &v), "%s", r)
	return v
}

// snapshot is the state of a deployment's control plane and its cluster-wide
// objects: every row of every control-plane table, and the databases and
// roles named with its prefix.
func (d *dev) snapshot() map[string]string {
	d.t.Helper()
	ctx := d.t.Context()
	conn, err := pgx.Connect(ctx, withDatabase(d.adminURL, d.opts.database))
	require.NoError(d.t, err)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'tenancy' ORDER BY 1`)
	require.NoError(d.t, err)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(d.t, err)
	require.Contains(d.t, tables, "lifecycle_runs", "the journal is in the control plane")
	out := map[string]string{}
	for _, tb := range tables {
		var dump string
		require.NoError(d.t, conn.QueryRow(ctx, `SELECT coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '') FROM tenancy.`+quoteIdent(tb)+` t`).Scan(&dump), tb)
		out["table "+tb] = dump
	}
	for what, q := range map[string]string{
		"databases": `SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_database WHERE starts_with(datname, $1)`,
		"roles":     `SELECT coalesce(string_agg(rolname, ',' ORDER BY rolname), '') FROM pg_roles WHERE starts_with(rolname, $1)`,
		"schemas":   `SELECT coalesce(string_agg(nspname, ',' ORDER BY nspname), '') FROM pg_namespace WHERE starts_with(nspname, 'tenant_') AND $1 <> ''`,
	} {
		var v string
		require.NoError(d.t, conn.QueryRow(ctx, q, d.opts.rolePrefix).Scan(&v))
		out[what] = v
	}
	files, err := filepath.Glob(filepath.Join(d.opts.dir, "*", "*"))
	require.NoError(d.t, err)
	sort.Strings(files)
	out["files"] = strings.Join(files, ",")
	return out
}

// platformRecords returns the platform trail's entries of action about
// tenant id, as "action archive from".
func (d *dev) platformRecords(action, id string) []string {
	d.t.Helper()
	conn, err := pgx.Connect(d.t.Context(), withDatabase(d.adminURL, d.opts.database))
	require.NoError(d.t, err)
	defer conn.Close(context.Background())
	rows, err := conn.Query(d.t.Context(), `SELECT action || ' ' || coalesce(details->>'archive', '') || ' ' || coalesce(details->>'from', '')
		FROM tenancy.platform_audit WHERE action = $1 AND resource = $2 ORDER BY seq`, action, "tenant/"+id)
	require.NoError(d.t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(d.t, err)
	return out
}

// writeFile writes a file into the test's directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func TestExitCodeOfUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bogus"},
		{"list", "--bogus"},
		{"--output", "yaml", "list"},
		{"--log-level", "loud", "list"},
		{"show"},
		{"show", "a", "b"},
		{"provision"},
		{"keys"},
		{"audit", "verify"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runCLI(t, nil, "", args...)
			assert.Equal(t, exitUsage, r.code, "%s", r)
			assert.Empty(t, r.stdout)
			assert.NotEmpty(t, r.stderr)
		})
	}
}

func TestHelpDocumentsExitCodes(t *testing.T) {
	r := runCLI(t, nil, "", "--help")
	require.Equal(t, 0, r.code, "%s", r)
	for _, want := range []string{"Exit status:", "0  success", "2  usage", "3  configuration", "4  not found", "5  conflict", "provision", "deprovision", "migrate"} {
		assert.Contains(t, r.stdout, want)
	}
}
