package store_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/store"
)

// TestProvisioningManyTenantsStaysFlat provisions 1,000 tenants in a row
// (TENANCY_TEST_TENANTS overrides the count) and runs each one's first
// query right after its creation. No role of the platform is a member of
// any tenant's, and each login is a member of one role only (its
// database's group), so PostgreSQL's membership cache, recomputed after
// every role change, stays small whatever the count: the timings are
// logged (not asserted: speed is for benchmarks) to show it.
func TestProvisioningManyTenantsStaysFlat(t *testing.T) {
	n := 1000
	if s := os.Getenv("TENANCY_TEST_TENANTS"); s != "" {
		var err error
		n, err = strconv.Atoi(s)
		require.NoError(t, err, "TENANCY_TEST_TENANTS")
	}
	e := newEnv(t, store.ModeTenantLogin, func(a *store.AdminConfig, c *store.Config) {
		c.MaxConns, c.MinResidency, c.IdleTimeout = 4, 0, time.Second
	})
	var first, last time.Duration
	var create time.Duration
	for i := range n {
		start := time.Now()
		id, ctx := e.newTenant(t, "scale")
		created := time.Now()
		var k int
		require.NoError(t, e.db.QueryRow(ctx, `SELECT count(*) FROM requirements`).Scan(&k))
		took := time.Since(created)
		create += created.Sub(start)
		switch i {
		case 0:
			first = took
		case n - 1:
			last = took
		}
		if i%250 == 249 {
			t.Logf("tenant %d (%s): first query %s, creation %s on average so far", i+1, id, took, create/time.Duration(i+1))
		}
	}
	t.Logf("first query of the 1st tenant: %s, of the %dth: %s", first, n, last)

	c, err := pgx.Connect(t.Context(), platform(t, e.d))
	require.NoError(t, err)
	defer c.Close(context.Background())
	var platformMemberships int
	require.NoError(t, c.QueryRow(t.Context(), `SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = current_user`).Scan(&platformMemberships))
	assert.Zero(t, platformMemberships, "the platform role belongs to no role")
	var maxPerLogin int
	ac, err := pgx.Connect(t.Context(), e.d.AdminURL())
	require.NoError(t, err)
	defer ac.Close(context.Background())
	require.NoError(t, ac.QueryRow(t.Context(), `SELECT max(k) FROM (SELECT count(m.roleid) k FROM tenancy.tenant_logins l
		LEFT JOIN pg_auth_members m ON m.member = l.role_oid GROUP BY l.role_oid) x`).Scan(&maxPerLogin))
	assert.Equal(t, 1, maxPerLogin, "each tenant login belongs to its group only")
}
