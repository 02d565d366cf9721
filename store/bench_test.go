package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// The benchmarks compare store with the same work done without it, in the
// same run, and name each variant with a mode= element, the baseline
// first, so that benchstat puts the modes side by side:
//
//	go test -run '^$' -bench PKSelect -count 2 ./store/ >> bench.txt # 3 times or more
//	go run golang.org/x/perf/cmd/benchstat@latest -col /mode bench.txt
//
// The baselines are plain pgx pools logged in as the same roles, with the
// same host, options and pool size as store's, reading a twin of the
// tenant's table (same columns, same rows) that has no row level security.
// docs/benchmarks.md reports the ratios and what they mean.

// benchRows is the number of rows of the table the SELECT benchmarks read.
const benchRows = 1000

// pkSelect is the query of every benchmark: one row by primary key, from
// the tenant's table as its login's search_path finds it.
const pkSelect = `SELECT requirement_text FROM requirements WHERE req_id = $1`

// twinTable is the name of the twin of requirements, without row level
// security, that benchTenants creates in every benchmark tenant's schema.
const twinTable = "requirements_raw"

// benchKey returns the key of the row that call i reads, of rows rows.
func benchKey(i int64, rows int) string { return "REQ-" + strconv.FormatInt(i%int64(rows)+1, 10) }

// benchMade records the tenants benchTenants has made, by database and
// name: tenants outlive the Admin and DB of the benchmark function that
// made them, which may run more than once per package run (-cpu 1,2), so
// later runs reuse them.
var benchMade sync.Map // database name + "/" + name -> []tenant.ID

// benchTenants returns n tenants of e's database whose IDs start with
// name, each with rows rows in its requirements table and (when rows > 0)
// the same rows in its twin table, which the tenant's login
// (ModeTenantLogin) or the shared login (ModeSharedPool) may read. In
// ModeTenantLogin it lifts the connection limit of each login at the
// server, so that the baselines' plain pools can log in as the tenant
// beside store's pools; the size of store's pools stays the tenant's
// quota, which store keeps in its directory. Rows are written as the
// superuser, so no store pool is opened for them.
func benchTenants(b *testing.B, e *env, name string, n, rows int) []tenant.ID {
	b.Helper()
	key := e.d.Name() + "/" + name
	var ids []tenant.ID
	if v, ok := benchMade.Load(key); ok {
		ids = v.([]tenant.ID)
	}
	if len(ids) >= n {
		return ids[:n]
	}
	fresh := make([]tenant.ID, n-len(ids))
	for i := range fresh {
		fresh[i] = tenant.MustParseID(fmt.Sprintf("%s_%d", name, len(ids)+i+1))
	}
	benchCreateTenants(b, e.admin, fresh)
	for _, id := range fresh {
		grantee := ""
		if e.mode == store.ModeTenantLogin {
			role, _, err := store.LoginOf(b.Context(), e.admin, id)
			require.NoError(b, err)
			e.d.Exec(b, `ALTER ROLE `+benchIdent(role)+` CONNECTION LIMIT -1`)
			grantee = role
		} else {
			role, _, err := store.SharedLogin(e.admin)
			require.NoError(b, err)
			grantee = role
		}
		if rows == 0 {
			continue
		}
		tbl, twin := pgx.Identifier{id.SchemaName(), "requirements"}.Sanitize(), pgx.Identifier{id.SchemaName(), twinTable}.Sanitize()
		// IDs match [a-z](_?[a-z0-9])*: safe inside a literal.
		e.d.Exec(b, fmt.Sprintf(`INSERT INTO %[1]s (tenant_id, req_id, category, requirement_text)
				SELECT '%[3]s', 'REQ-' || g, 'BENCH', 'requirement text ' || g FROM generate_series(1, %[4]d) g;
			CREATE TABLE %[2]s (LIKE %[1]s INCLUDING ALL);
			INSERT INTO %[2]s SELECT * FROM %[1]s;
			GRANT SELECT ON %[2]s TO %[5]s;
			ANALYZE %[1]s;
			ANALYZE %[2]s`, tbl, twin, id, rows, benchIdent(grantee)))
	}
	ids = append(ids, fresh...)
	benchMade.Store(key, ids)
	return ids
}

// benchCreateTenants creates the given standard-tier tenants, a few at a time.
func benchCreateTenants(b *testing.B, admin *store.Admin, ids []tenant.ID) {
	b.Helper()
	const workers = 4
	var next atomic.Int64
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ids) || errs[w] != nil {
					return
				}
				errs[w] = admin.CreateTenant(b.Context(), tenant.Info{ID: ids[i], Name: "Bench " + ids[i].String(), Tier: tenant.TierStandard})
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(b, err)
	}
}

func benchIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// benchPool opens a plain pgx pool of size conns as role on d, with the
// host and options of every other URL of d (as store's tenant pools have
// the platform pool's), and closes it when the benchmark ends.
func benchPool(b *testing.B, d *pgtest.Database, role, password string, conns int) *pgxpool.Pool {
	b.Helper()
	cfg, err := pgxpool.ParseConfig(d.URL(role, password))
	require.NoError(b, err)
	cfg.MaxConns, cfg.MinConns = int32(conns), 0
	pool, err := pgxpool.NewWithConfig(b.Context(), cfg)
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	return pool
}

// benchParallel runs op under b.RunParallel with a call counter i (from 1)
// and a string to scan into, and reports allocations and the CPU time per
// operation of this process and of the backends pids.
func benchParallel(b *testing.B, pids []int, op func(i int64, s *string) error) {
	b.Helper()
	b.ReportAllocs()
	var n atomic.Int64
	cpu := startCPU(b, pids)
	b.RunParallel(func(pb *testing.PB) {
		var s string
		for pb.Next() {
			if err := op(n.Add(1), &s); err != nil {
				b.Error(err)
				return
			}
		}
	})
	cpu.report(b)
}

// BenchmarkPKSelect is a one-row primary-key SELECT under RunParallel (one
// goroutine per CPU), for one tenant:
//
//   - raw: a plain pgx pool logged in as the tenant's login, of the size of
//     store's pool of the tenant, reading the twin table (no row level
//     security): the baseline;
//   - rawRLS: the same pool reading the tenant's table, with its isolation
//     policy: what PostgreSQL charges for the policy, without store;
//   - tenantLogin: store.DB.QueryRow in ModeTenantLogin;
//   - sharedPoolRaw: a plain pgx pool logged in as the shared login, of
//     the size of store's shared pool, in pgx's default exec mode, reading
//     the twin table: the baseline of ModeSharedPool;
//   - sharedPool: store.DB.QueryRow in ModeSharedPool (the tenant's SET
//     LOCALs pipelined with the statement in one round trip, exec mode).
func BenchmarkPKSelect(b *testing.B) {
	sharedConns := 0
	tl := newEnv(b, store.ModeTenantLogin)
	sp := newEnv(b, store.ModeSharedPool, func(_ *store.AdminConfig, c *store.Config) { sharedConns = c.MaxConns })
	idT := benchTenants(b, tl, "pk", 1, benchRows)[0]
	idS := benchTenants(b, sp, "pk", 1, benchRows)[0]
	ctx := b.Context()
	ctxT, ctxS := tenant.NewContext(ctx, idT), tenant.NewContext(ctx, idS)

	role, pw, err := store.LoginOf(ctx, tl.admin, idT)
	require.NoError(b, err)
	raw := benchPool(b, tl.d, role, pw, store.DefaultConnLimit)
	srole, spw, err := store.SharedLogin(sp.admin)
	require.NoError(b, err)
	sharedRaw := benchPool(b, sp.d, srole, spw, sharedConns)
	twinSQL := `SELECT requirement_text FROM ` + twinTable + ` WHERE req_id = $1`
	sharedTwinSQL := `SELECT requirement_text FROM ` + pgx.Identifier{idS.SchemaName(), twinTable}.Sanitize() + ` WHERE req_id = $1`

	b.Run("mode=raw", func(b *testing.B) {
		benchParallel(b, poolBackends(b, raw), func(i int64, s *string) error {
			return raw.QueryRow(ctx, twinSQL, benchKey(i, benchRows)).Scan(s)
		})
	})
	b.Run("mode=rawRLS", func(b *testing.B) {
		benchParallel(b, poolBackends(b, raw), func(i int64, s *string) error {
			return raw.QueryRow(ctx, pkSelect, benchKey(i, benchRows)).Scan(s)
		})
	})
	b.Run("mode=tenantLogin", func(b *testing.B) {
		benchParallel(b, dbBackends(b, tl.db, ctxT, store.DefaultConnLimit), func(i int64, s *string) error {
			return tl.db.QueryRow(ctxT, pkSelect, benchKey(i, benchRows)).Scan(s)
		})
	})
	b.Run("mode=sharedPoolRaw", func(b *testing.B) {
		benchParallel(b, poolBackends(b, sharedRaw), func(i int64, s *string) error {
			return sharedRaw.QueryRow(ctx, sharedTwinSQL, benchKey(i, benchRows)).Scan(s)
		})
	})
	b.Run("mode=sharedPool", func(b *testing.B) {
		benchParallel(b, dbBackends(b, sp.db, ctxS, sharedConns), func(i int64, s *string) error {
			return sp.db.QueryRow(ctxS, pkSelect, benchKey(i, benchRows)).Scan(s)
		})
	})
}

// coldTenants is how many tenants each DB of BenchmarkColdTenant serves
// before it is closed and another opened: at most Config.MaxConns, so that
// no cold tenant waits for another's connection to be closed for it.
const coldTenants = 8

// BenchmarkColdTenant times the first query of a tenant that has no pool
// yet: in store, the directory lookup, the pool, the connection (dial,
// authentication, the new backend) and the query; in the baseline
// (mode=raw), a new plain pgx pool logged in as the tenant and the same
// query. It runs against the package's server (trust authentication) and
// against a throwaway cluster that asks for SCRAM-SHA-256, with the
// verifiers at store's default iteration count and at PostgreSQL's
// (4096), and reports the median and 99th percentile besides the mean.
func BenchmarkColdTenant(b *testing.B) {
	b.Run("auth=trust", func(b *testing.B) {
		e := newEnv(b, store.ModeTenantLogin)
		b.Run("iterations="+strconv.Itoa(store.DefaultSCRAMIterations), func(b *testing.B) {
			benchCold(b, e, platform(b, e.d), benchTenants(b, e, "coldtrust", coldTenants, 1))
		})
	})
	b.Run("auth=scram", func(b *testing.B) {
		d := pgtest.NewSCRAMCluster(b)
		platformURL := d.CreateRole(b, "benchplatform", "")
		for _, n := range []int{store.DefaultSCRAMIterations, 4096} {
			e := envWith(b, d, platformURL, store.ModeTenantLogin, func(a *store.AdminConfig, _ *store.Config) { a.SCRAMIterations = n })
			ids := benchTenants(b, e, "cold"+strconv.Itoa(n), coldTenants, 1)
			b.Run("iterations="+strconv.Itoa(n), func(b *testing.B) { benchCold(b, e, platformURL, ids) })
		}
	})
}

func benchCold(b *testing.B, e *env, platformURL string, ids []tenant.ID) {
	b.Helper()
	benchFirstQuery(b, e, platformURL, ids, func(tenant.ID) string { return e.d.Name() })
}

// benchFirstQuery is benchCold for tenants whose database is dbOf(id) on
// e's server: mode=raw, a new plain pgx pool logged in as the tenant on
// that database, and mode=tenantLogin, a new DB's first query.
func benchFirstQuery(b *testing.B, e *env, platformURL string, ids []tenant.ID, dbOf func(tenant.ID) string) {
	b.Helper()
	ctx := b.Context()
	b.Run("mode=raw", func(b *testing.B) {
		cfgs := make([]*pgxpool.Config, len(ids))
		for i, id := range ids {
			role, pw, err := store.LoginOf(ctx, e.admin, id)
			require.NoError(b, err)
			cfgs[i], err = pgxpool.ParseConfig(dbURL(b, e.d, dbOf(id), role, pw))
			require.NoError(b, err)
			cfgs[i].MaxConns, cfgs[i].MinConns = store.DefaultConnLimit, 0
		}
		lat := make([]time.Duration, 0, b.N)
		var s string
		b.ResetTimer()
		for i := range b.N {
			start := time.Now()
			pool, err := pgxpool.NewWithConfig(ctx, cfgs[i%len(cfgs)].Copy())
			if err == nil {
				err = pool.QueryRow(ctx, pkSelect, benchKey(0, 1)).Scan(&s)
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
		cfg, err := store.ParseConfig(platformURL, secret)
		require.NoError(b, err)
		ctxs := make([]context.Context, len(ids))
		for i, id := range ids {
			ctxs[i] = tenant.NewContext(ctx, id)
		}
		lat := make([]time.Duration, 0, b.N)
		var s string
		var db *store.DB
		b.ResetTimer()
		for i := range b.N {
			if i%len(ids) == 0 {
				// Every tenant of this DB has had its first query: start
				// again with a new DB, whose tenants have no pool.
				b.StopTimer()
				if db != nil {
					db.Close()
				}
				db, err = store.Open(ctx, cfg)
				require.NoError(b, err)
				b.StartTimer()
			}
			start := time.Now()
			err := db.QueryRow(ctxs[i%len(ids)], pkSelect, benchKey(0, 1)).Scan(&s)
			lat = append(lat, time.Since(start))
			if err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		db.Close()
		reportLatency(b, lat)
	})
}

// reportLatency reports the median and 99th percentile of lat.
func reportLatency(b *testing.B, lat []time.Duration) {
	b.Helper()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	at := func(q float64) float64 {
		i := min(len(lat)-1, int(q*float64(len(lat))))
		return float64(lat[i]) / float64(time.Microsecond)
	}
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

// Over-cap load: overCapTenants tenants, a global cap of overCapConns
// connections, overCapParallelism goroutines per CPU.
const (
	overCapTenants     = 40
	overCapConns       = 8
	overCapParallelism = 8
	overCapRows        = 100
	overCapResidency   = 10 * time.Millisecond
)

// BenchmarkOverCap is the primary-key SELECT of tenants picked at random
// among overCapTenants, by more goroutines than the global connection cap
// (Config.MaxConns = overCapConns) has connections, so that more tenants
// are active at once than can hold a connection:
//
//   - raw: a plain pgx pool of overCapConns logged in as the shared login,
//     reading each tenant's twin table (no row level security);
//   - sharedPool: store in ModeSharedPool, whose pool of overCapConns
//     connections passes between tenants (DISCARD ALL at each change);
//   - tenantLogin: store in ModeTenantLogin, whose tenant pools close idle
//     connections of other tenants (MinResidency overCapResidency) to open
//     their own, at the default connect rate limit;
//   - tenantLoginNoRateLimit: the same without a connect rate limit.
//
// It reports evictions, new connections and the time requests waited for
// the cap, per operation (DB.Stats).
func BenchmarkOverCap(b *testing.B) {
	capped := func(_ *store.AdminConfig, c *store.Config) {
		c.MaxConns, c.MinResidency = overCapConns, overCapResidency
	}
	tl := newEnv(b, store.ModeTenantLogin, capped)
	sp := newEnv(b, store.ModeSharedPool, capped)
	idsT := benchTenants(b, tl, "cap", overCapTenants, overCapRows)
	idsS := benchTenants(b, sp, "cap", overCapTenants, overCapRows)
	ctx := b.Context()
	ctxsT, ctxsS := make([]context.Context, overCapTenants), make([]context.Context, overCapTenants)
	twinSQL := make([]string, overCapTenants)
	for i := range overCapTenants {
		ctxsT[i], ctxsS[i] = tenant.NewContext(ctx, idsT[i]), tenant.NewContext(ctx, idsS[i])
		twinSQL[i] = `SELECT requirement_text FROM ` + pgx.Identifier{idsS[i].SchemaName(), twinTable}.Sanitize() + ` WHERE req_id = $1`
	}
	srole, spw, err := store.SharedLogin(sp.admin)
	require.NoError(b, err)
	raw := benchPool(b, sp.d, srole, spw, overCapConns)
	cfg, err := store.ParseConfig(platform(b, tl.d), secret)
	require.NoError(b, err)
	capped(nil, cfg)
	cfg.ConnectRate, cfg.ConnectBurst = 0, 0
	unlimited, err := store.Open(ctx, cfg)
	require.NoError(b, err)
	b.Cleanup(unlimited.Close)

	b.Run("mode=raw", func(b *testing.B) {
		overCap(b, nil, func(t int, key string, s *string) error {
			return raw.QueryRow(ctx, twinSQL[t], key).Scan(s)
		})
	})
	b.Run("mode=sharedPool", func(b *testing.B) {
		overCap(b, sp.db, func(t int, key string, s *string) error {
			return sp.db.QueryRow(ctxsS[t], pkSelect, key).Scan(s)
		})
	})
	b.Run("mode=tenantLogin", func(b *testing.B) {
		overCap(b, tl.db, func(t int, key string, s *string) error {
			return tl.db.QueryRow(ctxsT[t], pkSelect, key).Scan(s)
		})
	})
	b.Run("mode=tenantLoginNoRateLimit", func(b *testing.B) {
		overCap(b, unlimited, func(t int, key string, s *string) error {
			return unlimited.QueryRow(ctxsT[t], pkSelect, key).Scan(s)
		})
	})
}

// overCap runs op for a random tenant (index t) and row under RunParallel
// with overCapParallelism goroutines per CPU, and reports db's evictions,
// new connections and time spent waiting for the cap per operation.
func overCap(b *testing.B, db *store.DB, op func(t int, key string, s *string) error) {
	b.Helper()
	b.SetParallelism(overCapParallelism)
	b.ReportAllocs()
	var s0 store.PoolStats
	if db != nil {
		s0 = db.Stats()
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var s string
		for pb.Next() {
			if err := op(rand.IntN(overCapTenants), benchKey(rand.Int64(), overCapRows), &s); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	var evictions, connects, wait float64
	if db != nil {
		s1 := db.Stats()
		evictions, connects = float64(s1.Evictions-s0.Evictions), float64(s1.Connects-s0.Connects)
		wait = float64(s1.WaitTime-s0.WaitTime) / float64(time.Microsecond)
	}
	b.ReportMetric(evictions/float64(b.N), "evictions/op")
	b.ReportMetric(connects/float64(b.N), "connects/op")
	b.ReportMetric(wait/float64(b.N), "cap-wait-µs/op")
}
