package store_test

import (
	"context"
	"fmt"
	"os"
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

// The migration benchmarks, beside their baselines (mode=, baseline
// first, as in bench_test.go):
//
//	TENANCY_BENCH_TENANTS=10000 go test -run '^$' -bench '^BenchmarkMigrateNoop$' -timeout 1h ./store/
//	go test -run '^$' -bench '^BenchmarkMigrateReal$' -benchtime 1x -count 3 ./store/
//
// Both use ModeSharedPool, so that thousands of tenants add no role to
// the cluster; what a migration run does does not depend on the mode.

// benchMigBase are the migrations every benchmark tenant is created with.
var benchMigBase = []string{"0001_docs.sql", migDocs}

// benchMigDB is a database of the migration benchmarks with its tenants,
// made once per process: tenants outlive one run of a benchmark function.
type benchMigDB struct {
	once sync.Once
	d    *pgtest.Database
	ids  []tenant.ID
}

var benchNoopDB, benchRealDB benchMigDB

// get returns the database, with n standard tenants created (four at a
// time) by an Admin with benchMigBase.
func (m *benchMigDB) get(b *testing.B, name string, n int) (*pgtest.Database, []tenant.ID) {
	b.Helper()
	m.once.Do(func() {
		m.d = pgtest.DB(b).NewDatabase(b)
		admin, err := store.OpenAdmin(b.Context(), migAdminConfig(b, m.d, store.ModeSharedPool, migFS(benchMigBase...)))
		require.NoError(b, err)
		defer admin.Close()
		start := time.Now()
		m.ids = createTenants(b, admin, name, n)
		b.Logf("created %d tenants in %v", n, time.Since(start).Round(time.Second))
	})
	if m.ids == nil {
		b.Fatal("the benchmark's tenants could not be created (see the first run)")
	}
	return m.d, m.ids
}

// benchTenantCount is TENANCY_BENCH_TENANTS, or def.
func benchTenantCount(b *testing.B, def int) int {
	b.Helper()
	s := os.Getenv("TENANCY_BENCH_TENANTS")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("TENANCY_BENCH_TENANTS=%q: want a positive number of tenants", s)
	}
	return n
}

// BenchmarkMigrateNoop times a Migrate run with nothing to do over
// TENANCY_BENCH_TENANTS (default 10,000) tenants that have every
// migration: mode=rawQuery is the same question asked of the ledger with
// one plain pgx query (the baseline), mode=store is Admin.Migrate, and
// mode=queryPerTenant asks it once per tenant, as a runner with a version
// table per tenant schema (goose, tern) would.
func BenchmarkMigrateNoop(b *testing.B) {
	n := benchTenantCount(b, 10000)
	d, ids := benchNoopDB.get(b, "mignoop", n)
	admin, err := openAdmin(b, migAdminConfig(b, d, store.ModeSharedPool, migFS(benchMigBase...)))
	require.NoError(b, err)
	raw, err := pgxpool.New(b.Context(), d.AdminURL())
	require.NoError(b, err)
	b.Cleanup(raw.Close)

	b.Run("mode=rawQuery", func(b *testing.B) {
		for b.Loop() {
			rows, err := raw.Query(b.Context(), `SELECT t.id FROM tenancy.tenants t
				WHERE t.state <> ALL (ARRAY['requested', 'deleted', 'failed'])
				  AND NOT EXISTS (SELECT 1 FROM tenancy.tenant_migrations m WHERE m.tenant_id = t.id AND m.version = $1)`, 1)
			require.NoError(b, err)
			behind, err := pgx.CollectRows(rows, pgx.RowTo[string])
			require.NoError(b, err)
			require.Empty(b, behind)
		}
		b.ReportMetric(float64(n), "tenants")
	})
	b.Run("mode=store", func(b *testing.B) {
		for b.Loop() {
			rep, err := admin.Migrate(b.Context(), store.MigrateOptions{})
			require.NoError(b, err)
			require.Zero(b, rep.Total)
		}
		b.ReportMetric(float64(n), "tenants")
	})
	b.Run("mode=queryPerTenant", func(b *testing.B) {
		for b.Loop() {
			for _, id := range ids {
				var v int
				require.NoError(b, raw.QueryRow(b.Context(), `SELECT COALESCE(max(version), 0) FROM tenancy.tenant_migrations WHERE tenant_id = $1`, id.String()).Scan(&v))
				require.Equal(b, 1, v)
			}
		}
		b.ReportMetric(float64(n), "tenants")
	})
}

// benchRealTenants is the number of tenants of BenchmarkMigrateReal.
const benchRealTenants = 1000

// benchRealVersion numbers the migrations BenchmarkMigrateReal makes, one
// per iteration, across runs of the function.
var benchRealVersion atomic.Int64

// benchRealSQL is the migration of iteration v: a column added to a table
// with rows' worth of schema, and a new table.
func benchRealSQL(v int) string {
	return fmt.Sprintf(`ALTER TABLE docs ADD COLUMN c%[1]d text;
		CREATE TABLE t%[1]d (tenant_id text NOT NULL, id int PRIMARY KEY, body text NOT NULL);`, v)
}

// BenchmarkMigrateReal times one real migration (ADD COLUMN and CREATE
// TABLE) applied to 1,000 tenants, four at a time: mode=raw is the same
// SQL applied with plain pgx to 1,000 plain schemas holding the same
// table (BEGIN, SET LOCAL search_path, the file, COMMIT; no ledger, no
// check), mode=store is Admin.Migrate (the ledger, the lock, the
// fail-closed check, securing and granting every table). Every iteration
// is a new migration; the Admin that knows it is opened outside the timer.
// Run it with -benchtime 1x.
func BenchmarkMigrateReal(b *testing.B) {
	d, ids := benchRealDB.get(b, "migreal", benchRealTenants)
	const parallel = 4
	raw, err := pgxpool.New(b.Context(), d.AdminURL())
	require.NoError(b, err)
	b.Cleanup(raw.Close)
	d.Exec(b, `CREATE SCHEMA IF NOT EXISTS migbench`)
	for lo := 1; lo <= benchRealTenants; lo += 100 {
		d.Exec(b, fmt.Sprintf(`DO $$ BEGIN FOR i IN %d..%d LOOP
			EXECUTE format('CREATE SCHEMA IF NOT EXISTS migraw_%%s', i);
			EXECUTE format('CREATE TABLE IF NOT EXISTS migraw_%%s.docs (tenant_id text NOT NULL, doc_id int PRIMARY KEY, body text NOT NULL)', i);
		END LOOP; END $$`, lo, lo+99))
	}

	b.Run("mode=raw", func(b *testing.B) {
		for b.Loop() {
			sql := benchRealSQL(int(benchRealVersion.Add(1)) + 1)
			var next atomic.Int64
			var wg sync.WaitGroup
			for range parallel {
				wg.Go(func() {
					for i := next.Add(1); i <= benchRealTenants; i = next.Add(1) {
						err := pgx.BeginFunc(b.Context(), raw, func(tx pgx.Tx) error {
							if _, err := tx.Exec(b.Context(), `SET LOCAL search_path = `+pgx.Identifier{fmt.Sprintf("migraw_%d", i)}.Sanitize()); err != nil {
								return err
							}
							_, err := tx.Conn().PgConn().Exec(b.Context(), sql).ReadAll()
							return err
						})
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N)/benchRealTenants, "ms/tenant")
	})
	var files []string
	files = append(files, benchMigBase...)
	b.Run("mode=store", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			v := int(benchRealVersion.Add(1)) + 1
			files = append(files, fmt.Sprintf("%04d_real.sql", v), benchRealSQL(v))
			admin, err := store.OpenAdmin(b.Context(), migAdminConfig(b, d, store.ModeSharedPool, migFS(files...)))
			require.NoError(b, err)
			b.StartTimer()
			rep, err := admin.Migrate(context.Background(), store.MigrateOptions{Parallelism: parallel})
			b.StopTimer()
			require.NoError(b, err)
			require.Len(b, rep.Migrated, len(ids))
			admin.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N)/benchRealTenants, "ms/tenant")
	})
}
