package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

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
	assert.Regexp(t, `\n  \d+ +tampered +globex +1 +tenant: job envelope rejected: integrity tag does not verify`, s)
	assert.Regexp(t, `\n  \d+ +replayed +acme +1 +tenant: open job "[0-9a-f]{32}": job envelope replayed`, s)
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
