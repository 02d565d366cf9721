package store_test

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

var (
	benchScaleOnce sync.Once
	benchScaleDB   *pgtest.Database
)

// benchScaleDatabase returns the database of BenchmarkMembershipRecompute, made
// once per package run: its tenants outlive one run of the benchmark
// function, which may run more than once (-cpu 1,2).
func benchScaleDatabase(b *testing.B) *pgtest.Database {
	b.Helper()
	d := pgtest.DB(b)
	benchScaleOnce.Do(func() { benchScaleDB = d.NewDatabase(b) })
	return benchScaleDB
}

// BenchmarkMembershipRecompute times a tenant's primary-key SELECT on a
// warm pooled connection right after another session of the cluster
// created and dropped a role (mode=roleChange; the CREATE and DROP ROLE
// are not timed), against the same SELECT with no role change in between
// (mode=noRoleChange: the admin runs SELECT 1 instead; mode=pause: it
// sleeps about as long as the CREATE and DROP ROLE take, so that the
// tenant's backend is idle as long), with 10 and with 1,000 tenants in the
// benchmark's database.
//
// PostgreSQL keeps, per backend, the list of roles the session's role is a
// member of, and drops it in every backend of the cluster when any role or
// membership changes: every tenant created or dropped. In ModeTenantLogin
// each tenant login is a member of one role only (its database's group),
// whatever the number of tenants, so recomputing the list costs the same
// at 10 tenants as at 1,000. (When one role was a member of every tenant's
// role, this grew with the square of their number.)
//
// The tenants of the smaller count are among those of the larger, and
// stay: a second run of the function (-cpu 1,2) skips the counts the
// database has passed. The cluster-roles metric is the number of roles in
// the whole cluster during the run, which includes those of other
// benchmarks and of anyone else using the server.
func BenchmarkMembershipRecompute(b *testing.B) {
	d := benchScaleDatabase(b)
	e := envWith(b, d, platform(b, d), store.ModeTenantLogin)
	churn := benchIdent(d.Prefix() + "churn")
	d.Exec(b, `DROP ROLE IF EXISTS `+churn)
	for _, n := range []int{10, 1000} {
		b.Run("tenants="+strconv.Itoa(n), func(b *testing.B) {
			have := benchCount(b, d, `SELECT count(*) FROM tenancy.tenant_logins`)
			if have > n {
				b.Skipf("the database holds %d tenants already (from an earlier run of this benchmark): run it once per process to measure %d", have, n)
			}
			ids := benchTenants(b, e, "scale", n, 0)
			if have == 0 {
				// The warm tenant's table needs its row.
				e.d.Exec(b, `INSERT INTO `+benchIdent(ids[0].SchemaName())+`.requirements (tenant_id, req_id, category, requirement_text)
					VALUES ('`+ids[0].String()+`', 'REQ-1', 'BENCH', 'requirement text 1')`)
			}
			ctx := tenant.NewContext(b.Context(), ids[0])
			roles := float64(benchCount(b, d, `SELECT count(*) FROM pg_roles`))
			query := func(b *testing.B) {
				var s string
				if err := e.db.QueryRow(ctx, pkSelect, benchKey(0, 1)).Scan(&s); err != nil {
					b.Fatal(err)
				}
			}
			for _, m := range []struct {
				name   string
				before []string // run by the admin, untimed, before each query
			}{
				{"noRoleChange", []string{`SELECT 1`}},
				{"pause", []string{`SELECT pg_sleep(0.002)`}},
				{"roleChange", []string{`CREATE ROLE ` + churn + ` NOLOGIN`, `DROP ROLE ` + churn}},
			} {
				b.Run("mode="+m.name, func(b *testing.B) {
					query(b) // the tenant's connection is open and has the statement prepared
					b.ResetTimer()
					for range b.N {
						b.StopTimer()
						for _, sql := range m.before {
							d.Exec(b, sql)
						}
						b.StartTimer()
						query(b)
					}
					b.StopTimer()
					b.ReportMetric(roles, "cluster-roles")
				})
			}
		})
	}
}

// benchCount runs a count query as the superuser on d.
func benchCount(b *testing.B, d *pgtest.Database, sql string) int {
	b.Helper()
	c, err := pgx.Connect(b.Context(), d.AdminURL())
	require.NoError(b, err)
	defer c.Close(context.Background())
	var n int
	require.NoError(b, c.QueryRow(b.Context(), sql).Scan(&n))
	return n
}
