package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/stretchr/testify/require"
)

// BenchmarkMembershipRecompute measures the first tenant-scoped call
// (setup and a primary-key SELECT, one round trip) after PostgreSQL has
// dropped its list of the application role's memberships, while the
// application role is a member of n more roles, as it is of every tenant's
// role in the standard tier: on a new connection (after=connect;
// connecting is not timed) and on a connection that has served the tenant
// before, after another session created and dropped a role
// (after=createRole; that is not timed either).
//
// PostgreSQL computes the list of roles a login role is a member of when a
// backend first needs it (SET ROLE does), keeps it per backend, and drops
// it in every backend whenever any role or membership changes: every
// CREATE ROLE or GRANT, so every tenant provisioned. On PostgreSQL 15 that
// computation grows with the square of the number of memberships. What
// this costs at a given tenant count is what this benchmark shows; see
// docs/benchmarks.md and store's package documentation.
func BenchmarkMembershipRecompute(b *testing.B) {
	db, ctxs := benchSetup(b)
	d := pgtest.DB(b)
	id, _ := tenant.FromContext(ctxs[0])
	role, path := db.TenantRole(id), pgx.Identifier{id.SchemaName()}.Sanitize()+", pg_temp"
	cfg, err := pgx.ParseConfig(appRole(b))
	require.NoError(b, err)
	// A new connection has nothing prepared, and pgx would prepare the
	// SELECT before the setup runs: send both as one simple query.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	ctx := context.Background()
	assume := func(conn *pgx.Conn) error {
		bt := &pgx.Batch{}
		bt.Queue(benchSetupSQL, role, path, id.String())
		var s string
		bt.Queue(`SELECT requirement_text FROM requirements WHERE req_id = $1`, reqKey(1)).
			QueryRow(func(r pgx.Row) error { return r.Scan(&s) })
		return conn.SendBatch(ctx, bt).Close()
	}
	var created []string // dropped when the benchmark ends
	b.Cleanup(func() { dropRoles(b, d, created) })
	for _, n := range []int{0, 1000, 2000, 4000} {
		b.Run(fmt.Sprintf("memberships=%d", n), func(b *testing.B) {
			// Memberships accumulate: a filtered run creates what the
			// skipped smaller steps would have.
			created = append(created, addMemberships(b, d, db.AppRole(), len(created), n)...)
			b.Run("after=connect", func(b *testing.B) {
				for range b.N {
					b.StopTimer()
					conn, err := pgx.ConnectConfig(ctx, cfg)
					require.NoError(b, err)
					b.StartTimer()
					err = assume(conn)
					b.StopTimer()
					require.NoError(b, errors.Join(err, conn.Close(ctx)))
					b.StartTimer()
				}
			})
			b.Run("after=createRole", func(b *testing.B) {
				// Another session creates and drops a role (as provisioning
				// and deprovisioning a tenant do) before each call on a
				// connection that has served the tenant before.
				conn, err := pgx.ConnectConfig(ctx, cfg)
				require.NoError(b, err)
				defer conn.Close(ctx)
				require.NoError(b, assume(conn))
				other := pgx.Identifier{d.Prefix() + "churn"}.Sanitize()
				d.Exec(b, `DROP ROLE IF EXISTS `+other)
				b.ResetTimer()
				for range b.N {
					b.StopTimer()
					d.Exec(b, `CREATE ROLE `+other+` NOLOGIN`)
					d.Exec(b, `DROP ROLE `+other)
					b.StartTimer()
					require.NoError(b, assume(conn))
				}
			})
		})
	}
}

// addMemberships creates the NOLOGIN roles number from to to-1 under the
// package's role prefix, grants each to app, and returns their quoted
// names. The caller drops them with dropRoles (dropping a role ends its
// memberships), so that later benchmarks run without them; pgtest drops
// any role with the package's prefix at the end in any case.
func addMemberships(b *testing.B, d *pgtest.Database, app string, from, to int) []string {
	b.Helper()
	if to <= from {
		return nil
	}
	names := make([]string, to-from)
	bt := &pgx.Batch{}
	for i := range names {
		names[i] = pgx.Identifier{fmt.Sprintf("%smember%d", d.Prefix(), from+i)}.Sanitize()
		bt.Queue(`CREATE ROLE ` + names[i] + ` NOLOGIN`)
		bt.Queue(`GRANT ` + names[i] + ` TO ` + pgx.Identifier{app}.Sanitize())
	}
	conn, err := pgx.Connect(context.Background(), d.AdminURL())
	require.NoError(b, err)
	defer conn.Close(context.Background())
	// The batch is one implicit transaction: all roles or none.
	require.NoError(b, conn.SendBatch(context.Background(), bt).Close())
	return names
}

// dropRoles drops the given (quoted) roles, a few hundred per statement.
func dropRoles(b *testing.B, d *pgtest.Database, names []string) {
	if len(names) == 0 {
		return
	}
	c, err := pgx.Connect(context.Background(), d.AdminURL())
	if err != nil {
		b.Error(err)
		return
	}
	defer c.Close(context.Background())
	for chunk := range slicesChunk(names, 500) {
		if _, err := c.Exec(context.Background(), `DROP ROLE IF EXISTS `+strings.Join(chunk, ", ")); err != nil {
			b.Error(err)
		}
	}
}

func slicesChunk(s []string, n int) func(yield func([]string) bool) {
	return func(yield func([]string) bool) {
		for i := 0; i < len(s); i += n {
			if !yield(s[i:min(i+n, len(s))]) {
				return
			}
		}
	}
}
