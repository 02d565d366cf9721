package store_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// requirements is RTMX's requirement table (columns from RTMX's database.csv).
var requirements = store.Table{
	Name: "requirements",
	Columns: `req_id text PRIMARY KEY,
		category text NOT NULL,
		subcategory text NOT NULL DEFAULT '',
		requirement_text text NOT NULL,
		status text NOT NULL DEFAULT 'MISSING',
		priority text NOT NULL DEFAULT 'MEDIUM',
		phase int NOT NULL DEFAULT 1,
		custom jsonb NOT NULL DEFAULT '{}'`,
}

var (
	appOnce sync.Once
	appURL  string
)

// appRole returns the connection string of the package's least-privilege
// application role.
func appRole(t testing.TB) string {
	d := pgtest.DB(t)
	appOnce.Do(func() { appURL = d.CreateRole(t, "app", "NOINHERIT") })
	return appURL
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newStore opens a store over the package database with the application
// role, the package's role prefix and the requirements table.
func newStore(t testing.TB, adjust ...func(*store.Config)) *store.DB {
	t.Helper()
	d := pgtest.DB(t)
	cfg, err := store.ParseConfig(appRole(t), d.AdminURL())
	require.NoError(t, err)
	cfg.RolePrefix = d.Prefix()
	cfg.Tables = []store.Table{requirements}
	for _, a := range adjust {
		a(cfg)
	}
	db, err := store.OpenConfig(ctxT(t), cfg)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	return db
}

var tenantSeq atomic.Int64

// uniqueName returns name with a suffix no other test of this package run
// uses (tests may run with -count=N against the same database).
func uniqueName(name string) string { return fmt.Sprintf("%s%d", name, tenantSeq.Add(1)) }

// newTenant creates a standard-tier tenant with a unique ID starting with
// name, and returns its ID and a context carrying it.
func newTenant(t testing.TB, db *store.DB, name string) (tenant.ID, context.Context) {
	t.Helper()
	id := tenant.MustParseID(fmt.Sprintf("%s%d", name, tenantSeq.Add(1)))
	require.NoError(t, db.CreateTenant(ctxT(t), tenant.Info{ID: id, Name: "Tenant " + name, Tier: tenant.TierStandard}))
	return id, tenant.NewContext(ctxT(t), id)
}

// insertReq writes one requirement row as the tenant of ctx.
func insertReq(t testing.TB, db *store.DB, ctx context.Context, reqID, text string) {
	t.Helper()
	_, err := db.Exec(ctx, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ($1, 'DEPLOY', $2)`, reqID, text)
	require.NoError(t, err)
}

// ownRows checks that rows hold (tenant_id, owner) pairs naming want only,
// and at least one: the leak hunts' assertion.
func ownRows(want tenant.ID, rows pgx.Rows, err error) error {
	if err != nil {
		return err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var tid, owner string
		if err := rows.Scan(&tid, &owner); err != nil {
			return err
		}
		if tid != want.String() || owner != want.String() {
			return fmt.Errorf("LEAK: tenant %s saw row of tenant_id=%s owner=%s", want, tid, owner)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("tenant %s saw none of its own rows", want)
	}
	return nil
}
