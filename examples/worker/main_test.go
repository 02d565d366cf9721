package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// envCrashWorker makes the test binary a worker that crashes mid-job: it
// attaches to the stack given as JSON (a crashRun) and hangs in the handler
// of the first job it takes, for TestWorkerKilledMidJobRerunsOnItsRow to
// kill it.
const envCrashWorker = "WORKER_TEST_CRASH_WORKER"

// inHandler is the line the crashing worker prints from its handler.
const inHandler = "worker test: in the handler, kill me"

// crashRun is what the crashing worker is given.
type crashRun struct {
	Options options
	Secrets secrets
}

func TestMain(m *testing.M) {
	if js := os.Getenv(envCrashWorker); js != "" {
		crashWorker(js)
		return
	}
	pgtest.Main(m)
}

// crashWorker works the queue until its handler is called, then hangs
// until it is killed (a minute at most).
func crashWorker(js string) {
	var r crashRun
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := attachStack(ctx, r.Options, r.Secrets, func(*store.DB) Handler[Recount] {
		return func(ctx context.Context, job Job[Recount]) error {
			fmt.Println(inHandler)
			<-ctx.Done()
			os.Exit(3)
			return nil
		}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "attach:", err)
		os.Exit(2)
	}
	<-ctx.Done()
	os.Exit(3)
}

// testOptions returns names under pgtest's prefix, so that pgtest drops
// whatever a test leaves behind. tag is at most 3 bytes (store's role
// prefix is at most 16).
func testOptions(d *pgtest.Database, tag string) options {
	return options{
		AdminURL:   d.AdminURL(),
		Database:   d.Prefix() + "worker_" + tag,
		RolePrefix: d.Prefix() + tag + "_",
	}
}

// TestDemoRuns keeps `go run ./examples/worker` true: both tenants' jobs
// run, each in its own tenant as its own login, the forged and the
// replayed job are refused and recorded, and nothing is left behind.
func TestDemoRuns(t *testing.T) {
	t.Parallel()
	d := pgtest.DB(t)
	o := testOptions(d, "dm")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out, o), out.String())
	s := out.String()

	assert.Regexp(t, `job \d+ \(recount_requirements, queue default\) enqueued as tenant acme: completed`, s)
	assert.Regexp(t, `job \d+ \(recount_requirements, queue default\) enqueued as tenant globex: completed`, s)
	assert.Regexp(t, `acme's envelope with its tenant edited to globex, inserted directly: cancelled`, s)
	assert.Regexp(t, `args inserted again \(a replay\): cancelled`, s)
	assert.Contains(t, s, "enqueue without a tenant\n  -> worker: enqueue recount_requirements: tenant: seal job: tenant: no tenant in context")
	// Each tenant's recount counted its own requirements (acme 3, 2 of
	// them complete; globex 1), as a login of its own.
	acme := regexp.MustCompile(`\n  acme +\d+ +nightly acme +3 +2 +(\S+)\n`).FindStringSubmatch(s)
	globex := regexp.MustCompile(`\n  globex +\d+ +nightly globex +1 +0 +(\S+)\n`).FindStringSubmatch(s)
	require.NotNil(t, acme, s)
	require.NotNil(t, globex, s)
	assert.NotEqual(t, acme[1], globex[1], "two tenants' jobs ran as one login")
	assert.NotContains(t, s, "forged", "the forged job's label was written somewhere")
	assert.Regexp(t, `\n  \d+ +tampered +"globex" +1 +tenant: job envelope rejected: integrity tag does not verify`, s)
	assert.Regexp(t, `\n  \d+ +replayed +"acme" +1 +tenant: open job "[0-9a-f]{32}": job envelope replayed`, s)
	assert.Contains(t, s, "cleaned up: River stopped, database "+o.Database+" and roles "+o.RolePrefix+"* dropped")

	conn, err := pgx.Connect(t.Context(), d.AdminURL())
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(t.Context()))
	var dbLeft, rolesLeft bool
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1),
		EXISTS (SELECT FROM pg_roles WHERE starts_with(rolname, $2))`, o.Database, o.RolePrefix).Scan(&dbLeft, &rolesLeft))
	assert.False(t, dbLeft, "database left behind")
	assert.False(t, rolesLeft, "roles left behind")
}

// TestUniqueOptionsAreValidAndDistinct checks that two runs of the demo
// get names of their own, which its cleanup accepts.
func TestUniqueOptionsAreValidAndDistinct(t *testing.T) {
	a, b := uniqueOptions("postgres://x/y"), uniqueOptions("postgres://x/y")
	require.NoError(t, a.validate())
	require.NoError(t, b.validate())
	assert.NotEqual(t, a.Database, b.Database)
	assert.NotEqual(t, a.RolePrefix, b.RolePrefix)
}

// TestWorkerKilledMidJobRerunsOnItsRow kills a worker process in its
// handler, after the replay check recorded the job and before it
// completed, makes the row available again as River's rescuer would, and
// checks that another worker runs it on the same row (a crash is a
// retry, not a replay) and that it writes once.
func TestWorkerKilledMidJobRerunsOnItsRow(t *testing.T) {
	t.Parallel()
	s := newStack(t, "kl", nil)
	// This process's client stops; the child will take the job.
	require.NoError(t, s.client.Stop(t.Context()))
	res, err := Enqueue(tenant.NewContext(t.Context(), gamma), s.enqueuer, Recount{Label: "survives a crash"}, nil)
	require.NoError(t, err)

	js, err := json.Marshal(crashRun{Options: options{AdminURL: s.o.AdminURL, Database: s.o.Database, RolePrefix: s.o.RolePrefix}, Secrets: s.secrets})
	require.NoError(t, err)
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envCrashWorker+"="+string(js))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != inHandler {
	}
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()

	var state string
	var completed bool
	var owner int64
	require.NoError(t, s.queue.QueryRow(t.Context(), `SELECT j.state::text, s.river_job_id, s.completed_at IS NOT NULL
		FROM queue.river_job j JOIN queue.tenant_job_seen s ON s.river_job_id = j.id WHERE j.id = $1`, res.Job.ID).
		Scan(&state, &owner, &completed), "the killed worker did not reach the handler; stderr:\n%s", stderr.String())
	require.Equal(t, "running", state)
	require.False(t, completed)
	// River's rescuer makes a stuck running row retryable after
	// RescueStuckJobsAfter, and its scheduler then available; both run on
	// the leader, which the killed process may still be for a while.
	_, err = s.queue.Exec(t.Context(), `UPDATE queue.river_job SET state = 'available', scheduled_at = now() WHERE id = $1`, res.Job.ID)
	require.NoError(t, err)

	again, err := attachStack(t.Context(), s.o, s.secrets, nil)
	require.NoError(t, err)
	defer func() { assert.NoError(t, again.close(context.WithoutCancel(t.Context()))) }()
	row, err := again.waitFinal(t.Context(), res.Job.ID)
	require.NoError(t, err)
	require.Equal(t, "completed", string(row.State), "errors: %v", row.Errors)
	assert.Equal(t, 2, row.Attempt)
	got := recountsOf(t, s, gamma)
	require.Len(t, got, 1)
	assert.Equal(t, res.Job.ID, got[0].RiverJobID)
	assert.Equal(t, "survives a crash", got[0].Label)
}

// TestDemoDropsWhatKilledRunsLeft leaves a database and a role named as a
// killed demo run leaves them, and another as a run in progress (its
// advisory lock held), and checks that the demo drops the first and keeps
// the second.
func TestDemoDropsWhatKilledRunsLeft(t *testing.T) {
	t.Parallel()
	d := pgtest.DB(t)
	dead, alive := uniqueOptions(d.AdminURL()), uniqueOptions(d.AdminURL())
	conn, err := pgx.Connect(t.Context(), d.AdminURL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.WithoutCancel(t.Context())) }) // after the cleanups below
	for _, o := range []options{dead, alive} {
		t.Cleanup(func() { assert.NoError(t, cleanup(context.WithoutCancel(t.Context()), conn, o)) })
		_, err := conn.Exec(t.Context(), `CREATE DATABASE `+o.Database)
		require.NoError(t, err)
		_, err = conn.Exec(t.Context(), `CREATE ROLE `+o.RolePrefix+`queue`)
		require.NoError(t, err)
	}
	holder, err := pgx.Connect(t.Context(), d.AdminURL())
	require.NoError(t, err)
	defer holder.Close(context.WithoutCancel(t.Context()))
	_, err = holder.Exec(t.Context(), `SELECT pg_advisory_lock($1, hashtext($2))`, demoLockClass, alive.Database)
	require.NoError(t, err)

	var out bytes.Buffer
	require.NoError(t, demo(t.Context(), &out, uniqueOptions(d.AdminURL())), out.String())
	assert.Contains(t, out.String(), "dropped database "+dead.Database+" and roles "+dead.RolePrefix+"*, left by a run that was killed")
	assert.NotContains(t, out.String(), alive.Database)
	exists := func(o options) (db, role bool) {
		require.NoError(t, conn.QueryRow(t.Context(), `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1),
			EXISTS (SELECT FROM pg_roles WHERE starts_with(rolname, $2))`, o.Database, o.RolePrefix).Scan(&db, &role))
		return db, role
	}
	db, role := exists(dead)
	assert.False(t, db || role, "the killed run's database or role was kept")
	db, role = exists(alive)
	assert.True(t, db && role, "the running run's database or role was dropped")
}

// TestRolePasswordsReachTheServerAsVerifiers: the platform and queue
// roles' passwords reach the server only as SCRAM-SHA-256 verifiers,
// never in clear text (which log_statement and pg_stat_statements would
// keep), and the roles log in with them on a server that asks them for a
// password. The setup session hashes a clear-text password as MD5, so a
// SCRAM verifier in pg_authid is one the statement carried.
func TestRolePasswordsReachTheServerAsVerifiers(t *testing.T) {
	t.Parallel()
	d := pgtest.NewSCRAMCluster(t)
	conn, err := pgx.Connect(t.Context(), d.AdminURL())
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(t.Context()))
	_, err = conn.Exec(t.Context(), `ALTER ROLE CURRENT_USER SET password_encryption = 'md5'`)
	require.NoError(t, err)

	o := testOptions(d, "sv")
	s, err := openStack(t.Context(), o, []tenant.ID{alpha}, nil)
	require.NoError(t, err)
	defer func() { assert.NoError(t, s.close(context.WithoutCancel(t.Context()))) }()
	for role, password := range map[string]string{o.RolePrefix + "platform": s.secrets.PlatformPassword, o.RolePrefix + "queue": s.secrets.QueuePassword} {
		var stored string
		require.NoError(t, conn.QueryRow(t.Context(), `SELECT rolpassword FROM pg_authid WHERE rolname = $1`, role).Scan(&stored))
		assert.Regexp(t, `^SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$`, stored, "role %s", role)
		cfg, err := pgx.ParseConfig(d.AdminURL())
		require.NoError(t, err)
		cfg.User, cfg.Password, cfg.Database = role, password, o.Database
		login, err := pgx.ConnectConfig(t.Context(), cfg)
		require.NoError(t, err, "role %s does not log in with its password", role)
		var who string
		require.NoError(t, login.QueryRow(t.Context(), `SELECT session_user`).Scan(&who))
		assert.Equal(t, role, who)
		require.NoError(t, login.Close(t.Context()))
	}
}

// TestClaimedTenantIsPrintedEscaped: a forged job whose envelope claims
// a tenant made of terminal escape sequences and control characters is
// refused, and the refusal table the demo prints carries the claim
// quoted, with no control character but the lines' ends: a forged job
// cannot drive the terminal of whoever reads the refusals.
func TestClaimedTenantIsPrintedEscaped(t *testing.T) {
	t.Parallel()
	s := newStack(t, "ce", nil)
	const claim = "\x1b]0;owned\x07\x1b[2J\x1b[31mbeta\tx\r\u202e\u009b"
	env, _ := seal(t, s, alpha, "escape", time.Time{})
	forged := edit(t, env, func(e map[string]any) { e["tenant"] = claim })
	id := insertArgs(t, s, Args[Recount]{Envelope: forged}, nil)
	requireRefused(t, s, id, ReasonTampered, claim, allRecounts(t, s))

	refused, err := s.mw.Refusals(t.Context())
	require.NoError(t, err)
	var out bytes.Buffer
	require.NoError(t, printRefusals(&out, refused))
	printed := out.String()
	for i, r := range printed {
		if r != '\n' && (r < 0x20 || r >= 0x7f) {
			t.Fatalf("byte %d of the printed refusals is %U, not printable ASCII:\n%q", i, r, printed)
		}
	}
	assert.Contains(t, printed, strconv.QuoteToASCII(claim))
}

// TestSecretsPrintNothing: the stack's secrets, printed with any verb,
// alone or inside a struct, show none of the passwords or keys.
func TestSecretsPrintNothing(t *testing.T) {
	sec := secrets{PlatformPassword: randomHex(16), QueuePassword: randomHex(16), LoginSecret: randomBytes(32), CarrierKey: randomBytes(32)}
	wrapped := struct{ S secrets }{sec}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
		for _, v := range []any{sec, &sec, wrapped} {
			out := fmt.Sprintf(verb, v)
			for _, secret := range []string{sec.PlatformPassword, sec.QueuePassword, hex.EncodeToString(sec.LoginSecret), hex.EncodeToString(sec.CarrierKey), string(sec.CarrierKey)} {
				assert.NotContains(t, out, secret, "%s of %T", verb, v)
			}
			assert.Contains(t, out, "redacted", "%s of %T", verb, v)
		}
	}
}
