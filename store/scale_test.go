package store_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestTenThousandTenants provisions 10,000 standard-tier tenants in one
// database (TENANCY_TEST_TENANTS overrides the count), four at a time;
// repairs and rotates every login, which both commit every 500 logins so
// that PostgreSQL 16+'s lock table holds any count; and then times the
// first scoped query (a new pool: connect, log in, query) and a second
// one (warm) of the 1st tenant and of the last. No role of the platform
// is a member of any tenant's, and each login is a member of one role
// only (its database's group), so PostgreSQL's membership cache,
// recomputed after every role change, stays small whatever the count, and
// the last tenant is served as fast as the first. The timings are logged,
// not asserted: speed is for benchmarks. The tenants are removed with the
// database and its roles when the package ends (pgtest, in chunks too).
func TestTenThousandTenants(t *testing.T) {
	n := 10000
	if s := os.Getenv("TENANCY_TEST_TENANTS"); s != "" {
		var err error
		n, err = strconv.Atoi(s)
		require.NoError(t, err, "TENANCY_TEST_TENANTS")
	}
	d := databaseFor(t, store.ModeTenantLogin).NewDatabase(t)
	e := newEnvOn(t, d, store.ModeTenantLogin, func(a *store.AdminConfig, c *store.Config) {
		c.MaxConns, c.MinResidency, c.IdleTimeout = 4, 0, time.Minute
	})
	ids := make([]tenant.ID, n)
	for i := range ids {
		ids[i] = tenant.MustParseID(fmt.Sprintf("scale%d", i+1))
	}
	start := time.Now()
	var g errgroup.Group
	g.SetLimit(4)
	for i, id := range ids {
		g.Go(func() error {
			if err := e.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Scale", Tier: tenant.TierStandard}); err != nil {
				return err
			}
			if (i+1)%2500 == 0 {
				t.Logf("%d tenants after %s", i+1, time.Since(start).Round(time.Second))
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	t.Logf("%d tenants created in %s (%s each, 4 at a time)", n, time.Since(start).Round(time.Second), (time.Since(start) / time.Duration(n)).Round(time.Microsecond))

	var nRoles int
	ac, err := pgx.Connect(t.Context(), e.d.AdminURL())
	require.NoError(t, err)
	defer ac.Close(context.Background())
	require.NoError(t, ac.QueryRow(t.Context(), `SELECT count(*) FROM tenancy.tenant_logins`).Scan(&nRoles))
	assert.Equal(t, n, nRoles, "every tenant has its login")

	// Every login repaired and rotated: both commit every 500 logins, so
	// that PostgreSQL 16+'s lock table (a lock per role changed, until
	// commit) holds any number of tenants.
	start = time.Now()
	drift, err := e.admin.RepairLogins(t.Context())
	require.NoError(t, err)
	assert.Empty(t, drift)
	t.Logf("RepairLogins over %d logins: %s", n, time.Since(start).Round(time.Millisecond))
	secret2 := store.LoginSecret{Version: 2, Key: []byte("the second tenancy test login secret, 32+ bytes")}
	acfg2 := adminConfig(t, e.d, platform(t, e.d), store.ModeTenantLogin)
	acfg2.LoginSecrets = []store.LoginSecret{secret, secret2}
	admin2, err := store.OpenAdmin(t.Context(), acfg2)
	require.NoError(t, err)
	defer admin2.Close()
	start = time.Now()
	moved, err := admin2.RotateLogins(t.Context(), 0)
	require.NoError(t, err)
	assert.Equal(t, n, moved)
	t.Logf("RotateLogins over %d logins: %s", n, time.Since(start).Round(time.Millisecond))

	time1 := func(id tenant.ID) (first, warm time.Duration) {
		ctx := tenant.NewContext(t.Context(), id)
		var k int
		for i := range 2 {
			s := time.Now()
			require.NoError(t, e.db.QueryRow(ctx, `SELECT count(*) FROM requirements WHERE req_id = $1`, "REQ-1").Scan(&k))
			if i == 0 {
				first = time.Since(s)
			} else {
				warm = time.Since(s)
			}
		}
		return first, warm
	}
	for round := range 3 { // interleaved, three times: the machine is noisy
		// A new DB each round, so that each first query opens a new pool;
		// with both secrets, since the logins now use the second.
		e.db.Close()
		cfg, err := store.ParseConfig(platform(t, e.d), secret, secret2)
		require.NoError(t, err)
		cfg.MaxConns, cfg.MinResidency = 4, 0
		e.db, err = store.Open(t.Context(), cfg)
		require.NoError(t, err)
		t.Cleanup(e.db.Close)
		f1, w1 := time1(ids[0])
		fn, wn := time1(ids[n-1])
		t.Logf("round %d: 1st tenant: first query %s, warm %s; %dth tenant: first query %s, warm %s",
			round+1, f1.Round(time.Microsecond), w1.Round(time.Microsecond), n, fn.Round(time.Microsecond), wn.Round(time.Microsecond))
	}

	c, err := pgx.Connect(t.Context(), platform(t, e.d))
	require.NoError(t, err)
	defer c.Close(context.Background())
	var platformMemberships int
	require.NoError(t, c.QueryRow(t.Context(), `SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = current_user`).Scan(&platformMemberships))
	assert.Zero(t, platformMemberships, "the platform role belongs to no role")
	var maxPerLogin int
	require.NoError(t, ac.QueryRow(t.Context(), `SELECT max(k) FROM (SELECT count(m.roleid) k FROM tenancy.tenant_logins l
		LEFT JOIN pg_auth_members m ON m.member = l.role_oid GROUP BY l.role_oid) x`).Scan(&maxPerLogin))
	assert.Equal(t, 1, maxPerLogin, "each tenant login belongs to its group only")
}
