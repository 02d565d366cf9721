package store_test

import (
	"testing"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// BenchmarkFirstQueryByTier times the first query of a tenant that has no
// pool yet, as BenchmarkColdTenant does, for a standard tenant (schema in
// the shared database) and an enterprise tenant (a database of its own):
// in store (mode=tenantLogin) the directory lookup, the pool, the
// connection and the query; in the baseline (mode=raw) a new plain pgx
// pool logged in as the same tenant on the same database, and the same
// query. The package's server, trust authentication; BenchmarkColdTenant
// has the cost of SCRAM.
func BenchmarkFirstQueryByTier(b *testing.B) {
	for _, tier := range []tenant.Tier{tenant.TierStandard, tenant.TierEnterprise} {
		b.Run("tier="+string(tier), func(b *testing.B) {
			e := newPlacedEnv(b, placementCase{store.ModeTenantLogin, tier})
			ids := make([]tenant.ID, coldTenants)
			for i := range ids {
				id, ctx := e.newTenant(b, "firstq")
				e.insertReq(b, ctx, benchKey(0, 1), "first")
				ids[i] = id
			}
			dbOf := func(tenant.ID) string { return e.d.Name() }
			if tier != tenant.TierStandard {
				dbOf = func(id tenant.ID) string { return ownDatabaseOf(e.d, id) }
			}
			benchFirstQuery(b, e, platform(b, e.d), ids, dbOf)
		})
	}
}
