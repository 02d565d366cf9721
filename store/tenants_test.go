package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// admin opens a superuser connection for inspecting what store created.
func admin(t testing.TB) *pgx.Conn {
	conn, err := pgx.Connect(ctxT(t), pgtest.DB(t).AdminURL())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exists(t testing.TB, conn *pgx.Conn, sql string, args ...any) bool {
	t.Helper()
	var ok bool
	require.NoError(t, conn.QueryRow(ctxT(t), `SELECT EXISTS (`+sql+`)`, args...).Scan(&ok))
	return ok
}

func TestCreateTenantCreatesSchemaRoleAndSecuredTables(t *testing.T) {
	db := newStore(t)
	id, _ := newTenant(t, db, "abc")
	a := admin(t)
	role := db.TenantRole(id)

	assert.True(t, exists(t, a, `SELECT 1 FROM pg_namespace WHERE nspname = $1`, id.SchemaName()), "schema")
	var canLogin, super, bypass bool
	require.NoError(t, a.QueryRow(ctxT(t), `SELECT rolcanlogin, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1`, role).Scan(&canLogin, &super, &bypass))
	assert.False(t, canLogin, "tenant role is NOLOGIN")
	assert.False(t, super)
	assert.False(t, bypass)
	assert.True(t, exists(t, a, `SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
		WHERE r.rolname = $1 AND u.rolname = $2`, role, db.AppRole()), "application role is a member of the tenant role")
	var rls, force bool
	require.NoError(t, a.QueryRow(ctxT(t), `SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = $1::regclass`,
		pgx.Identifier{id.SchemaName(), "requirements"}.Sanitize()).Scan(&rls, &force))
	assert.True(t, rls, "row level security enabled")
	assert.True(t, force, "row level security forced")
	assert.True(t, exists(t, a, `SELECT 1 FROM pg_policies WHERE schemaname = $1 AND tablename = 'requirements' AND policyname = 'tenancy_isolation'`, id.SchemaName()))
	// The tenant role holds privileges on its own schema and on no other tenant's.
	other, _ := newTenant(t, db, "other")
	var own, foreign bool
	require.NoError(t, a.QueryRow(ctxT(t), `SELECT has_schema_privilege($1, $2, 'USAGE'), has_schema_privilege($1, $3, 'USAGE')`,
		role, id.SchemaName(), other.SchemaName()).Scan(&own, &foreign))
	assert.True(t, own)
	assert.False(t, foreign)

	info, err := db.Tenant(ctxT(t), id)
	require.NoError(t, err)
	assert.Equal(t, tenant.StateActive, info.State)
	assert.Equal(t, tenant.TierStandard, info.Tier)
	assert.Equal(t, id, info.ID)
}

func TestCreateTenantTwiceFails(t *testing.T) {
	db := newStore(t)
	id, _ := newTenant(t, db, "twice")
	err := db.CreateTenant(ctxT(t), tenant.Info{ID: id, Name: "again", Tier: tenant.TierStandard})
	assert.ErrorIs(t, err, store.ErrTenantExists)
	require.NoError(t, db.DropTenant(ctxT(t), id))
	err = db.CreateTenant(ctxT(t), tenant.Info{ID: id, Name: "again", Tier: tenant.TierStandard})
	assert.ErrorIs(t, err, store.ErrTenantExists, "a deleted tenant's ID is never reused")
}

func countTenants(t testing.TB, a *pgx.Conn) int {
	var n int
	require.NoError(t, a.QueryRow(ctxT(t), `SELECT count(*) FROM tenancy.tenants`).Scan(&n))
	return n
}

func TestCreateTenantRejectsBadInfoAndChangesNothing(t *testing.T) {
	db := newStore(t)
	a := admin(t)
	before := countTenants(t, a)
	err := db.CreateTenant(ctxT(t), tenant.Info{Name: "", Tier: "platinum", State: "bogus"})
	require.Error(t, err)
	for _, field := range []string{"field ID:", "field Name:", "field Tier:", "field State:"} {
		assert.Contains(t, err.Error(), field, "every error is reported at once")
	}
	err = db.CreateTenant(ctxT(t), tenant.Info{ID: tenant.MustParseID("ent1"), Name: "E", Tier: tenant.TierEnterprise})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not supported")
	assert.Equal(t, before, countTenants(t, a))
}

func TestCreateTenantIsAllOrNothing(t *testing.T) {
	db := newStore(t, func(c *store.Config) {
		c.Tables = append(c.Tables, store.Table{Name: "broken", Columns: "x no_such_type"})
	})
	a := admin(t)
	before := countTenants(t, a)
	id := tenant.MustParseID("halfmade")
	err := db.CreateTenant(ctxT(t), tenant.Info{ID: id, Name: "H", Tier: tenant.TierStandard})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no_such_type")
	assert.Equal(t, before, countTenants(t, a))
	assert.False(t, exists(t, a, `SELECT 1 FROM pg_namespace WHERE nspname = $1`, id.SchemaName()), "no schema left behind")
	assert.False(t, exists(t, a, `SELECT 1 FROM pg_roles WHERE rolname = $1`, db.TenantRole(id)), "no role left behind")
}

func TestDropTenantRemovesAllItsData(t *testing.T) {
	db := newStore(t)
	sch := uniqueName("dropshared")
	require.NoError(t, db.CreateSharedTable(ctxT(t), sch, store.Table{Name: "notes", Columns: "body text NOT NULL"}))
	notes := pgx.Identifier{sch, "notes"}.Sanitize()
	id, ctx := newTenant(t, db, "gone")
	keep, keepCtx := newTenant(t, db, "keep")
	insertReq(t, db, ctx, "R1", "x")
	for _, c := range []context.Context{ctx, keepCtx} {
		_, err := db.Exec(c, `INSERT INTO `+notes+` (body) VALUES ('n')`)
		require.NoError(t, err)
	}

	require.NoError(t, db.DropTenant(ctxT(t), id))

	a := admin(t)
	assert.False(t, exists(t, a, `SELECT 1 FROM pg_namespace WHERE nspname = $1`, id.SchemaName()), "schema dropped")
	assert.False(t, exists(t, a, `SELECT 1 FROM pg_roles WHERE rolname = $1`, db.TenantRole(id)), "role dropped")
	assert.False(t, exists(t, a, `SELECT 1 FROM `+notes+` WHERE tenant_id = $1`, id.String()), "shared rows deleted")
	assert.True(t, exists(t, a, `SELECT 1 FROM `+notes+` WHERE tenant_id = $1`, keep.String()), "other tenants' rows kept")
	info, err := db.Tenant(ctxT(t), id)
	require.NoError(t, err)
	assert.Equal(t, tenant.StateDeleted, info.State, "the directory keeps a deletion record")

	_, err = db.Exec(ctx, `SELECT 1`)
	assert.ErrorIs(t, err, store.ErrUnknownTenant)
	assert.ErrorIs(t, db.DropTenant(ctxT(t), id), store.ErrUnknownTenant)
	assert.ErrorIs(t, db.DropTenant(ctxT(t), tenant.ID{}), tenant.ErrNoTenant)
}

func TestSetStateFollowsLifecycle(t *testing.T) {
	db := newStore(t)
	id, _ := newTenant(t, db, "life")
	require.NoError(t, db.SetState(ctxT(t), id, tenant.StateSuspended))
	require.NoError(t, db.SetState(ctxT(t), id, tenant.StateActive))
	err := db.SetState(ctxT(t), id, tenant.StateDeleted)
	assert.ErrorIs(t, err, tenant.ErrIllegalTransition)
	info, err := db.Tenant(ctxT(t), id)
	require.NoError(t, err)
	assert.Equal(t, tenant.StateActive, info.State, "an illegal move changes nothing")
	assert.ErrorIs(t, db.SetState(ctxT(t), tenant.MustParseID("nobody"), tenant.StateActive), store.ErrUnknownTenant)
}

// Deleted means the data is gone: only DropTenant records it. A tenant set
// to deleted by SetState (even through the legal decommissioning step) or
// created as deleted would keep its data and then refuse DropTenant.
func TestOnlyDropTenantRecordsDeleted(t *testing.T) {
	db := newStore(t)
	id, ctx := newTenant(t, db, "onlydrop")
	require.NoError(t, db.SetState(ctxT(t), id, tenant.StateSuspended))
	require.NoError(t, db.SetState(ctxT(t), id, tenant.StateDecommissioning))
	err := db.SetState(ctxT(t), id, tenant.StateDeleted)
	require.ErrorIs(t, err, tenant.ErrIllegalTransition)
	require.ErrorContains(t, err, "DropTenant")
	require.NoError(t, db.DropTenant(ctxT(t), id), "the tenant can still be dropped")
	_, err = db.Exec(ctx, `SELECT 1`)
	require.ErrorIs(t, err, store.ErrUnknownTenant, "and its data is gone")

	for _, st := range []tenant.State{tenant.StateDeleted, tenant.StateFailed, tenant.StateDecommissioning, tenant.StateRequested} {
		err := db.CreateTenant(ctxT(t), tenant.Info{ID: tenant.MustParseID(uniqueName("created")), Name: "X", Tier: tenant.TierStandard, State: st})
		require.ErrorContains(t, err, "field State:", "created as %s", st)
	}
}

// Hostile or careless names for a shared table's schema and table are
// refused with ErrInvalidTable before anything is created.
func TestCreateSharedTableRefusesBadNamesAndCreatesNothing(t *testing.T) {
	db := newStore(t)
	a := admin(t)
	ok := store.Table{Name: "notes", Columns: "body text"}
	for name, tc := range map[string]struct {
		schema string
		table  store.Table
	}{
		"tenant schema":       {"tenant_acme", ok},
		"control plane":       {"tenancy", ok},
		"system schema":       {"pg_catalog", ok},
		"system prefix":       {"pg_x", ok},
		"upper case":          {"Shared", ok},
		"quote injection":     {`s"; DROP SCHEMA tenancy; --`, ok},
		"empty schema":        {"", ok},
		"leading digit":       {"1shared", ok},
		"bad table name":      {"sharedbad", store.Table{Name: "No-Dash", Columns: "body text"}},
		"statement in column": {"sharedbad", store.Table{Name: "notes", Columns: "body text); DROP TABLE x; --"}},
	} {
		t.Run(name, func(t *testing.T) {
			err := db.CreateSharedTable(ctxT(t), tc.schema, tc.table)
			require.ErrorIs(t, err, store.ErrInvalidTable)
			var n int
			require.NoError(t, a.QueryRow(ctxT(t), `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, tc.schema).Scan(&n))
			if tc.schema != "tenancy" && tc.schema != "pg_catalog" {
				require.Zero(t, n, "schema %q created", tc.schema)
			}
		})
	}
}

// Every field of tenant.Info that CreateTenant checks is refused with a
// message naming it.
func TestCreateTenantRejectsOverlongAndInvalidText(t *testing.T) {
	db := newStore(t)
	id := func() tenant.ID { return tenant.MustParseID(uniqueName("texts")) }
	for field, info := range map[string]tenant.Info{
		"field Name:":   {ID: id(), Name: strings.Repeat("n", 201), Tier: tenant.TierStandard},
		"field Name: ":  {ID: id(), Name: "bad \xff utf8", Tier: tenant.TierStandard},
		"field Region:": {ID: id(), Name: "R", Tier: tenant.TierStandard, Region: strings.Repeat("r", 65)},
	} {
		err := db.CreateTenant(ctxT(t), info)
		require.ErrorContains(t, err, strings.TrimSpace(field))
		_, err = db.Tenant(ctxT(t), info.ID)
		require.ErrorIs(t, err, store.ErrUnknownTenant, "nothing recorded")
	}
}
