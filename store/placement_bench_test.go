package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// BenchmarkFirstQueryByTier times the first query of a tenant that has no
// pool yet, for a standard tenant (schema in the shared database) and an
// enterprise tenant (a database of its own): in store (mode=tenantLogin)
// the directory lookup, the pool, the connection and the query; in the
// baseline (mode=raw) a new plain pgx pool logged in as the same tenant on
// the same database, and the same query. The package's server, trust
// authentication; BenchmarkColdTenant has the cost of SCRAM.
func BenchmarkFirstQueryByTier(b *testing.B) {
	const query = `SELECT count(*) FROM requirements`
	for _, tier := range []tenant.Tier{tenant.TierStandard, tenant.TierEnterprise} {
		b.Run("tier="+string(tier), func(b *testing.B) {
			e := newPlacedEnv(b, placementCase{store.ModeTenantLogin, tier})
			ids := make([]tenant.ID, coldTenants)
			for i := range ids {
				ids[i], _ = e.newTenant(b, "firstq")
			}
			ctx := b.Context()
			b.Run("mode=raw", func(b *testing.B) {
				cfgs := make([]*pgxpool.Config, len(ids))
				for i, id := range ids {
					role, pw, err := store.LoginOf(ctx, e.admin, id)
					require.NoError(b, err)
					db := e.d.Name()
					if tier != tenant.TierStandard {
						db = ownDatabaseOf(e.d, id)
					}
					cfgs[i], err = pgxpool.ParseConfig(dbURL(b, e.d, db, role, pw))
					require.NoError(b, err)
					cfgs[i].MaxConns, cfgs[i].MinConns = store.DefaultConnLimit, 0
				}
				lat := make([]time.Duration, 0, b.N)
				var n int
				b.ResetTimer()
				for i := range b.N {
					start := time.Now()
					pool, err := pgxpool.NewWithConfig(ctx, cfgs[i%len(cfgs)].Copy())
					if err == nil {
						err = pool.QueryRow(ctx, query).Scan(&n)
					}
					lat = append(lat, time.Since(start))
					b.StopTimer()
					require.NoError(b, err)
					pool.Close()
					b.StartTimer()
				}
				reportLatency(b, lat)
			})
			b.Run("mode=tenantLogin", func(b *testing.B) {
				cfg, err := store.ParseConfig(platform(b, e.d), secret)
				require.NoError(b, err)
				ctxs := make([]context.Context, len(ids))
				for i, id := range ids {
					ctxs[i] = tenant.NewContext(ctx, id)
				}
				lat := make([]time.Duration, 0, b.N)
				var n int
				var db *store.DB
				b.ResetTimer()
				for i := range b.N {
					if i%len(ids) == 0 { // a new DB: its tenants have no pool
						b.StopTimer()
						if db != nil {
							db.Close()
						}
						db, err = store.Open(ctx, cfg)
						require.NoError(b, err)
						b.StartTimer()
					}
					start := time.Now()
					err := db.QueryRow(ctxs[i%len(ids)], query).Scan(&n)
					lat = append(lat, time.Since(start))
					if err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				db.Close()
				reportLatency(b, lat)
			})
		})
	}
}
