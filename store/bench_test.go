package store_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/stretchr/testify/require"
)

// The benchmarks compare store with the same work done without it, on the
// same pool (the application role's), in the same run:
//
//   - raw: plain pgx, the same SELECT against an identical table without
//     row level security and without any tenant setup (no isolation);
//   - rawPlusNoop: raw with a SELECT 1 in the same round trip (the price of
//     any second statement);
//   - rawPipelined: the same isolation by hand at its cheapest (CLOSE ALL,
//     the setup statement and the SELECT in one pgx.Batch, against the
//     tenant table);
//   - rawByHand: the same isolation by hand the idiomatic way
//     (pgx.BeginFunc, setup, SELECT, COMMIT);
//   - scoped: through store.
//
// Besides time per operation, each reports the CPU time per operation of
// this process (client-cpu-µs/op) and of the PostgreSQL backends serving
// the pool (server-cpu-µs/op), which are steadier than wall-clock time on a
// shared machine. Compare them with benchstat:
//
//	go test -run '^$' -bench . -count 6 ./store/ | tee bench.txt
//	benchstat -col /mode bench.txt
//
// docs/benchmarks.md reports the ratios and what they mean.

const benchRows = 1000

var (
	benchOnce sync.Once
	benchDB   *store.DB
	benchCtxs []context.Context
	benchErr  error
)

// benchSetup creates (once per package run) a store with a pool of 4, 20
// tenants with benchRows requirements each, and the raw twin table.
func benchSetup(b *testing.B) (*store.DB, []context.Context) {
	b.Helper()
	d := pgtest.DB(b)
	benchOnce.Do(func() {
		cfg, err := store.ParseConfig(appRole(b), d.AdminURL())
		if err != nil {
			benchErr = err
			return
		}
		cfg.RolePrefix = d.Prefix()
		cfg.Tables = []store.Table{requirements}
		cfg.App.MaxConns = 4
		db, err := store.OpenConfig(context.Background(), cfg)
		if err != nil {
			benchErr = err
			return
		}
		benchDB = db
		for i := range 20 {
			id := tenant.MustParseID(fmt.Sprintf("bench%d", i))
			if benchErr = db.CreateTenant(context.Background(), tenant.Info{ID: id, Name: "Bench", Tier: tenant.TierStandard}); benchErr != nil {
				return
			}
			ctx := tenant.NewContext(context.Background(), id)
			benchCtxs = append(benchCtxs, ctx)
			if _, benchErr = db.Exec(ctx, `INSERT INTO requirements (req_id, category, requirement_text)
				SELECT 'REQ-' || g, 'BENCH', 'requirement text ' || g FROM generate_series(1, $1) g`, benchRows); benchErr != nil {
				return
			}
			if _, benchErr = db.Exec(ctx, `ANALYZE requirements`); benchErr != nil {
				return
			}
		}
		d.Exec(b, `CREATE SCHEMA benchraw`)
		d.Exec(b, `CREATE TABLE benchraw.requirements (tenant_id text NOT NULL DEFAULT 'bench0', `+requirements.Columns+`)`)
		d.Exec(b, `INSERT INTO benchraw.requirements (req_id, category, requirement_text)
			SELECT 'REQ-' || g, 'BENCH', 'requirement text ' || g FROM generate_series(1, $1) g`, benchRows)
		d.Exec(b, `ANALYZE benchraw.requirements`)
		d.Exec(b, `GRANT USAGE ON SCHEMA benchraw TO `+pgx.Identifier{benchDB.AppRole()}.Sanitize())
		d.Exec(b, `GRANT SELECT, UPDATE ON benchraw.requirements TO `+pgx.Identifier{benchDB.AppRole()}.Sanitize())
	})
	require.NoError(b, benchErr)
	return benchDB, benchCtxs
}

func reqKey(i int64) string { return fmt.Sprintf("REQ-%d", i%benchRows+1) }

// benchSetupSQL is the statement the by-hand baselines use to assume a
// tenant: the same one store sends.
const benchSetupSQL = `SELECT set_config('role', $1, true), set_config('search_path', $2, true), set_config('app.tenant_id', $3, true)`

// warmPool runs fn once on every connection the pool can hold, all held at
// once so that each is a different connection.
func warmPool(b *testing.B, pool *pgxpool.Pool, fn func(*pgx.Conn) error) {
	b.Helper()
	conns := make([]*pgxpool.Conn, 0, pool.Config().MaxConns)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range pool.Config().MaxConns {
		c, err := pool.Acquire(context.Background())
		require.NoError(b, err)
		conns = append(conns, c)
		require.NoError(b, fn(c.Conn()))
	}
}

// parallel runs op in parallel on every CPU, with a call counter i (from 1)
// and a string to scan into, between startCPU and report on pool.
func parallel(b *testing.B, pool *pgxpool.Pool, op func(i int64, s *string) error) {
	b.Helper()
	var n atomic.Int64
	cpu := startCPU(b, pool)
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

// BenchmarkSelectPK is a single-row primary-key SELECT, in parallel.
func BenchmarkSelectPK(b *testing.B) {
	db, ctxs := benchSetup(b)
	pool := db.UnscopedPool()
	b.Run("mode=raw", func(b *testing.B) {
		parallel(b, pool, func(i int64, s *string) error {
			return pool.QueryRow(context.Background(), `SELECT requirement_text FROM benchraw.requirements WHERE req_id = $1`, reqKey(i)).Scan(s)
		})
	})
	b.Run("mode=rawByHand", func(b *testing.B) {
		// The same isolation done by hand with raw pgx, the idiomatic way:
		// BEGIN, set role, search_path and app.tenant_id locally, SELECT,
		// COMMIT. What store adds (or saves) over this is our layer's cost;
		// what this costs over mode=raw is PostgreSQL's isolation work.
		id, _ := tenant.FromContext(ctxs[0])
		role, path := db.TenantRole(id), pgx.Identifier{id.SchemaName()}.Sanitize()+", pg_temp"
		parallel(b, pool, func(i int64, s *string) error {
			return pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(context.Background(), benchSetupSQL, role, path, id.String()); err != nil {
					return err
				}
				return tx.QueryRow(context.Background(), `SELECT requirement_text FROM requirements WHERE req_id = $1`, reqKey(i)).Scan(s)
			})
		})
	})
	b.Run("mode=rawPlusNoop", func(b *testing.B) {
		// mode=raw with one more statement, SELECT 1, in the same round
		// trip. No isolation at all: this is the price of any second
		// statement, and so a floor under the price of the setup that
		// assumes a tenant.
		parallel(b, pool, func(i int64, s *string) error {
			bt := &pgx.Batch{}
			bt.Queue(`SELECT 1`)
			bt.Queue(`SELECT requirement_text FROM benchraw.requirements WHERE req_id = $1`, reqKey(i)).QueryRow(func(r pgx.Row) error { return r.Scan(s) })
			return pool.SendBatch(context.Background(), bt).Close()
		})
	})
	b.Run("mode=rawPipelined", func(b *testing.B) {
		// The same isolation done by hand at its cheapest: CLOSE ALL (no
		// cursor held by an earlier transaction survives), the statement
		// that sets role, search_path and app.tenant_id locally, and the
		// SELECT in one pgx.Batch (one round trip, one implicit
		// transaction), against the tenant's own table. Raw pgx prepares
		// a batch's statements before it executes any, so each connection
		// first runs the SELECT once under the tenant (the warm-up below)
		// to have it in its statement cache. This is what store does,
		// without store: the ratio scoped/rawPipelined is our layer's own
		// cost; rawPipelined/raw is PostgreSQL's cost of the isolation.
		id, _ := tenant.FromContext(ctxs[0])
		role, path := db.TenantRole(id), pgx.Identifier{id.SchemaName()}.Sanitize()+", pg_temp"
		const q = `SELECT requirement_text FROM requirements WHERE req_id = $1`
		warmPool(b, pool, func(c *pgx.Conn) error {
			return pgx.BeginFunc(context.Background(), c, func(tx pgx.Tx) error {
				if _, err := tx.Exec(context.Background(), benchSetupSQL, role, path, id.String()); err != nil {
					return err
				}
				var s string
				return tx.QueryRow(context.Background(), q, reqKey(0)).Scan(&s)
			})
		})
		parallel(b, pool, func(i int64, s *string) error {
			bt := &pgx.Batch{}
			bt.Queue(`CLOSE ALL`)
			bt.Queue(benchSetupSQL, role, path, id.String())
			bt.Queue(q, reqKey(i)).QueryRow(func(r pgx.Row) error { return r.Scan(s) })
			return pool.SendBatch(context.Background(), bt).Close()
		})
	})
	b.Run("mode=scoped", func(b *testing.B) {
		parallel(b, pool, func(i int64, s *string) error {
			return db.QueryRow(ctxs[0], `SELECT requirement_text FROM requirements WHERE req_id = $1`, reqKey(i)).Scan(s)
		})
	})
	b.Run("mode=scoped20tenantsPlanPerTenant", func(b *testing.B) {
		// The same, with Config.PlanPerTenant: one prepared statement (and
		// plan) per tenant on each connection, so no re-planning.
		d := pgtest.DB(b)
		cfg, err := store.ParseConfig(appRole(b), d.AdminURL())
		require.NoError(b, err)
		cfg.RolePrefix = d.Prefix()
		cfg.App.MaxConns = 4
		cfg.PlanPerTenant = true
		pdb, err := store.OpenConfig(context.Background(), cfg)
		require.NoError(b, err)
		defer pdb.Close()
		parallel(b, pdb.UnscopedPool(), func(i int64, s *string) error {
			return pdb.QueryRow(ctxs[i%int64(len(ctxs))], `SELECT requirement_text FROM requirements WHERE req_id = $1`, reqKey(i)).Scan(s)
		})
	})
	b.Run("mode=scoped20tenants", func(b *testing.B) {
		// Tenants rotate on every call, so connections keep changing role
		// and search_path: the worst case for PostgreSQL's plan cache.
		parallel(b, pool, func(i int64, s *string) error {
			return db.QueryRow(ctxs[i%int64(len(ctxs))], `SELECT requirement_text FROM requirements WHERE req_id = $1`, reqKey(i)).Scan(s)
		})
	})
}

// BenchmarkReadWriteTx is a small transaction: UPDATE one row, SELECT it.
func BenchmarkReadWriteTx(b *testing.B) {
	db, ctxs := benchSetup(b)
	pool := db.UnscopedPool()
	b.Run("mode=raw", func(b *testing.B) {
		parallel(b, pool, func(i int64, s *string) error {
			key := reqKey(i)
			return pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(context.Background(), `UPDATE benchraw.requirements SET status = 'TESTED' WHERE req_id = $1`, key); err != nil {
					return err
				}
				return tx.QueryRow(context.Background(), `SELECT requirement_text FROM benchraw.requirements WHERE req_id = $1`, key).Scan(s)
			})
		})
	})
	b.Run("mode=scoped", func(b *testing.B) {
		ctx := ctxs[0]
		parallel(b, pool, func(i int64, s *string) error {
			key := reqKey(i)
			return db.Tx(ctx, func(tx *store.Tx) error {
				if _, err := tx.Exec(ctx, `UPDATE requirements SET status = 'TESTED' WHERE req_id = $1`, key); err != nil {
					return err
				}
				return tx.QueryRow(ctx, `SELECT requirement_text FROM requirements WHERE req_id = $1`, key).Scan(s)
			})
		})
	})
}
