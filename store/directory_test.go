package store_test

// The tenant directory and placement: what CreateTenant makes and refuses,
// the lifecycle of SetState, unknown tenants on the request path, and the
// validation of AdminConfig and Config.

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// superuser connects to d as superuser, to inspect what store made: a
// superuser bypasses row level security and sees every row.
func superuser(t testing.TB, d *pgtest.Database) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(t.Context(), d.AdminURL())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// count runs a query returning one count.
func count(t testing.TB, c *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, c.QueryRow(t.Context(), sql, args...).Scan(&n), sql)
	return n
}

// objects counts what placing a tenant makes in d: directory rows, logins,
// schemas, relations, and the cluster's roles of this test package.
type objects struct{ tenants, logins, schemas, relations, roles int }

func countObjects(t testing.TB, c *pgx.Conn, d *pgtest.Database) objects {
	t.Helper()
	var o objects
	require.NoError(t, c.QueryRow(t.Context(), `SELECT
		(SELECT count(*) FROM tenancy.tenants), (SELECT count(*) FROM tenancy.tenant_logins),
		(SELECT count(*) FROM pg_namespace), (SELECT count(*) FROM pg_class),
		(SELECT count(*) FROM pg_roles WHERE starts_with(rolname, $1))`, d.Prefix()).
		Scan(&o.tenants, &o.logins, &o.schemas, &o.relations, &o.roles))
	return o
}

// freshID returns a tenant ID starting with name that no other test of
// this package run uses.
func freshID(name string) tenant.ID {
	return tenant.MustParseID(fmt.Sprintf("%s%d", name, tenantSeq.Add(1)))
}

// notes is a second tenant table, for tests that need more than one.
var notes = store.Table{Name: "notes", Columns: `note_id text PRIMARY KEY, body text NOT NULL`}

func withNotes(a *store.AdminConfig, _ *store.Config) { a.Tables = append(a.Tables, notes) }

func TestCreateTenantCreatesSchemaLoginAndSecuredTables(t *testing.T) {
	forModes(t, func(t *testing.T, e *env) {
		c := superuser(t, e.d)
		id := freshID("place")
		require.NoError(t, e.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Placed", Tier: tenant.TierStandard, Region: "eu-west"}))
		other, _ := e.newTenant(t, "placeother")
		schema := id.SchemaName()

		info, err := e.admin.Tenant(t.Context(), id)
		require.NoError(t, err)
		assert.Equal(t, id, info.ID)
		assert.Equal(t, "Placed", info.Name)
		assert.Equal(t, tenant.TierStandard, info.Tier)
		assert.Equal(t, "eu-west", info.Region)
		assert.Equal(t, tenant.StateActive, info.State, "a new tenant is active by default")
		assert.False(t, info.CreatedAt.IsZero())

		assert.Equal(t, 1, count(t, c, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, schema), "schema")
		var public bool
		require.NoError(t, c.QueryRow(t.Context(), `SELECT has_schema_privilege('public', $1, 'USAGE')`, schema).Scan(&public))
		assert.False(t, public, "PUBLIC has no USAGE on the tenant's schema")

		// The role that works in the schema: the tenant's own login, or the
		// shared login.
		var worker, placed string
		if e.mode == store.ModeTenantLogin {
			worker, _, err = store.LoginOf(t.Context(), e.admin, id)
			require.NoError(t, err)
			placed = worker
			var canLogin bool
			var settings []string
			require.NoError(t, c.QueryRow(t.Context(), `SELECT r.rolcanlogin, COALESCE(d.setconfig, '{}')
				FROM pg_roles r LEFT JOIN pg_db_role_setting d ON d.setrole = r.oid AND d.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
				WHERE r.rolname = $1`, worker).Scan(&canLogin, &settings))
			assert.True(t, canLogin, "an active tenant's login may log in")
			assert.Equal(t, []string{"search_path=" + schema}, settings, "its search_path is its schema")
			assert.Equal(t, 1, count(t, c, `SELECT count(*) FROM tenancy.tenant_logins l JOIN pg_roles r ON r.oid = l.role_oid
				WHERE l.tenant_id = $1 AND r.rolname = $2`, id.String(), worker), "the login is recorded by OID")
		} else {
			worker, _, err = store.SharedLogin(e.admin)
			require.NoError(t, err)
			assert.Zero(t, count(t, c, `SELECT count(*) FROM tenancy.tenant_logins WHERE tenant_id = $1`, id.String()), "no login of its own")
		}
		var kind, placedSchema, placedRole string
		require.NoError(t, c.QueryRow(t.Context(), `SELECT placement->>'kind', placement->>'schema', COALESCE(placement->>'role', '')
			FROM tenancy.tenants WHERE id = $1`, id.String()).Scan(&kind, &placedSchema, &placedRole))
		assert.Equal(t, []string{"schema", schema, placed}, []string{kind, placedSchema, placedRole}, "the placement is recorded")

		var own, foreign bool
		require.NoError(t, c.QueryRow(t.Context(), `SELECT has_schema_privilege($1, $2, 'USAGE'), has_schema_privilege($1, $3, 'USAGE')`,
			worker, schema, other.SchemaName()).Scan(&own, &foreign))
		assert.True(t, own, "USAGE on its schema")
		assert.Equal(t, e.mode == store.ModeSharedPool, foreign, "on another tenant's schema: only the shared login")

		for _, table := range []string{"requirements", "notes"} {
			name := pgx.Identifier{schema, table}.Sanitize()
			var rls, force bool
			var first string
			var notNull bool
			err := c.QueryRow(t.Context(), `SELECT c.relrowsecurity, c.relforcerowsecurity, a.attname, a.attnotnull
				FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = 1 WHERE c.oid = $1::regclass`, name).
				Scan(&rls, &force, &first, &notNull)
			require.NoError(t, err, "table %s", name)
			assert.True(t, rls, "%s: row level security enabled", name)
			assert.True(t, force, "%s: row level security forced", name)
			assert.Equal(t, "tenant_id", first, "%s: first column", name)
			assert.True(t, notNull, "%s: tenant_id NOT NULL", name)
			assert.Equal(t, 1, count(t, c, `SELECT count(*) FROM pg_policies WHERE schemaname = $1 AND tablename = $2
				AND policyname = 'tenancy_isolation' AND cmd = 'ALL' AND qual IS NOT NULL AND with_check IS NOT NULL`, schema, table),
				"%s: policy tenancy_isolation for every command", name)
			assert.Equal(t, 1, count(t, c, `SELECT count(*) FROM pg_policies WHERE schemaname = $1 AND tablename = $2`, schema, table),
				"%s: no other policy", name)
			var privileged bool
			require.NoError(t, c.QueryRow(t.Context(), `SELECT has_table_privilege($1, $2, 'SELECT, INSERT, UPDATE, DELETE')`, worker, name).Scan(&privileged))
			assert.True(t, privileged, "%s: the worker may read and write it", name)
		}

		ctx := tenant.NewContext(t.Context(), id)
		_, err = e.db.Exec(ctx, `INSERT INTO notes (note_id, body) VALUES ('N-1', 'x')`)
		require.NoError(t, err)
		var tid string
		require.NoError(t, c.QueryRow(t.Context(), `SELECT tenant_id FROM `+pgx.Identifier{schema, "notes"}.Sanitize()).Scan(&tid))
		assert.Equal(t, id.String(), tid, "tenant_id is filled in with the tenant")
	}, withNotes)
}

func TestCreateTenantTwiceFailsAndChangesNothing(t *testing.T) {
	forModes(t, func(t *testing.T, e *env) {
		c := superuser(t, e.d)
		id, ctx := e.newTenant(t, "twice")
		e.insertReq(t, ctx, "REQ-1", "kept")
		before := countObjects(t, c, e.d)
		err := e.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Again", Tier: tenant.TierStandard})
		require.ErrorIs(t, err, store.ErrTenantExists)
		assert.Contains(t, err.Error(), id.String())
		assert.Equal(t, before, countObjects(t, c, e.d))
		info, err := e.admin.Tenant(t.Context(), id)
		require.NoError(t, err)
		assert.Equal(t, "Tenant twice", info.Name, "the directory entry is the first one")
		got, err := reqIDs(t, e.db, ctx, `SELECT req_id FROM requirements`)
		require.NoError(t, err)
		assert.Equal(t, []string{"REQ-1"}, got, "and the data is untouched")
	})
}

// Login roles are cluster-wide, and a tenant's login name derives from the
// RolePrefix, the login secret and the ID: a second database set up with
// the same prefix and secret cannot place the same ID, nor take over the
// first database's login.
func TestCreateTenantRefusesALoginRoleThatExistsOnTheCluster(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	id, ctx := e.newTenant(t, "cluster")
	e.insertReq(t, ctx, "REQ-1", "first database")
	d2 := pgtest.DB(t).NewDatabase(t)
	e2 := newEnvOn(t, d2, store.ModeTenantLogin)
	c2 := superuser(t, d2)
	before := countObjects(t, c2, d2)

	err := e2.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Twin", Tier: tenant.TierStandard})
	require.ErrorIs(t, err, store.ErrTenantExists)
	assert.Contains(t, err.Error(), "already exists on this cluster")
	assert.Equal(t, before, countObjects(t, c2, d2), "nothing made in the second database")
	_, err = e2.admin.Tenant(t.Context(), id)
	assert.ErrorIs(t, err, store.ErrUnknownTenant)

	got, err := reqIDs(t, e.db, ctx, `SELECT req_id FROM requirements`)
	require.NoError(t, err, "the first database's tenant still logs in")
	assert.Equal(t, []string{"REQ-1"}, got)
}

func TestCreateTenantRejectsInvalidInfoNamingTheField(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	c := superuser(t, e.d)
	std := tenant.TierStandard
	for name, tc := range map[string]struct {
		info tenant.Info
		want []string
		opts []store.CreateOption
	}{
		"no ID":                  {info: tenant.Info{Name: "N", Tier: std}, want: []string{"field ID:"}},
		"empty name":             {info: tenant.Info{ID: freshID("bad"), Tier: std}, want: []string{"field Name:"}},
		"overlong name":          {info: tenant.Info{ID: freshID("bad"), Name: strings.Repeat("n", 201), Tier: std}, want: []string{"field Name:"}},
		"overlong UTF-8 name":    {info: tenant.Info{ID: freshID("bad"), Name: strings.Repeat("é", 101), Tier: std}, want: []string{"field Name:"}},
		"invalid UTF-8 name":     {info: tenant.Info{ID: freshID("bad"), Name: "bad \xff name", Tier: std}, want: []string{"field Name:"}},
		"overlong region":        {info: tenant.Info{ID: freshID("bad"), Name: "N", Tier: std, Region: strings.Repeat("r", 65)}, want: []string{"field Region:"}},
		"invalid UTF-8 region":   {info: tenant.Info{ID: freshID("bad"), Name: "N", Tier: std, Region: "eu\xc3"}, want: []string{"field Region:"}},
		"NUL in name":            {info: tenant.Info{ID: freshID("bad"), Name: "a\x00b", Tier: std}, want: []string{"field Name:", "NUL"}},
		"NUL in region":          {info: tenant.Info{ID: freshID("bad"), Name: "N", Tier: std, Region: "eu\x00"}, want: []string{"field Region:", "NUL"}},
		"no tier":                {info: tenant.Info{ID: freshID("bad"), Name: "N"}, want: []string{"field Tier:"}},
		"unknown tier":           {info: tenant.Info{ID: freshID("bad"), Name: "N", Tier: "platinum"}, want: []string{"field Tier:", "platinum"}},
		"government, no cluster": {info: tenant.Info{ID: freshID("bad"), Name: "N", Tier: tenant.TierGovernment}, want: []string{"option OnCluster:", "dedicated cluster"}},
		"government, unregistered cluster": {info: tenant.Info{ID: freshID("bad"), Name: "N", Tier: tenant.TierGovernment}, want: []string{"option OnCluster:", `"nowhere" is not registered`},
			opts: []store.CreateOption{store.OnCluster("nowhere")}},
		"standard on a cluster": {info: tenant.Info{ID: freshID("bad"), Name: "N", Tier: std}, want: []string{"option OnCluster:", "standard"},
			opts: []store.CreateOption{store.OnCluster("nowhere")}},
		"enterprise on a cluster": {info: tenant.Info{ID: freshID("bad"), Name: "N", Tier: tenant.TierEnterprise}, want: []string{"option OnCluster:", "enterprise"},
			opts: []store.CreateOption{store.OnCluster("nowhere")}},
		"unknown state":          {info: tenant.Info{ID: freshID("bad"), Name: "N", Tier: std, State: "bogus"}, want: []string{"field State:", "bogus"}},
		"created deleted":        {info: tenant.Info{ID: freshID("bad"), Name: "N", Tier: std, State: tenant.StateDeleted}, want: []string{"field State:"}},
		"created failed":         {info: tenant.Info{ID: freshID("bad"), Name: "N", Tier: std, State: tenant.StateFailed}, want: []string{"field State:"}},
		"created requested":      {info: tenant.Info{ID: freshID("bad"), Name: "N", Tier: std, State: tenant.StateRequested}, want: []string{"field State:"}},
		"created decommissioned": {info: tenant.Info{ID: freshID("bad"), Name: "N", Tier: std, State: tenant.StateDecommissioning}, want: []string{"field State:"}},
		"every field at once": {info: tenant.Info{Name: "", Tier: "platinum", State: "bogus", Region: strings.Repeat("r", 65)},
			want: []string{"field ID:", "field Name:", "field Tier:", "field State:", "field Region:"}},
	} {
		t.Run(name, func(t *testing.T) {
			before := countObjects(t, c, e.d)
			err := e.admin.CreateTenant(t.Context(), tc.info, tc.opts...)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.Equal(t, before, countObjects(t, c, e.d), "nothing created")
			if !tc.info.ID.IsZero() {
				_, err := e.admin.Tenant(t.Context(), tc.info.ID)
				assert.ErrorIs(t, err, store.ErrUnknownTenant, "nothing recorded")
			}
		})
	}
	// The limits themselves are allowed, in bytes.
	id := freshID("limits")
	longest := tenant.Info{ID: id, Name: strings.Repeat("é", 100), Tier: std, Region: strings.Repeat("r", 64), State: tenant.StateProvisioning}
	require.NoError(t, e.admin.CreateTenant(t.Context(), longest))
	info, err := e.admin.Tenant(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, []string{longest.Name, longest.Region, string(longest.State)}, []string{info.Name, info.Region, string(info.State)})
}

// A table declaration that fails at the database, past the checks of
// OpenAdmin, fails CreateTenant after the directory row, the login and the
// schema were made: none of them is left, and the ID can be placed again.
func TestCreateTenantIsAllOrNothing(t *testing.T) {
	for name, tc := range map[string]struct {
		table store.Table
		want  string
	}{
		"unknown type":        {store.Table{Name: "broken", Columns: `x no_such_type`}, "no_such_type"},
		"declares tenant_id":  {store.Table{Name: "broken", Columns: `tenant_id text, x int`}, "42701"},
		"second of that name": {requirements, "42P07"},
	} {
		t.Run(name, func(t *testing.T) {
			forModes(t, func(t *testing.T, e *env) {
				c := superuser(t, e.d)
				before := countObjects(t, c, e.d)
				id := freshID("half")
				err := e.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Half", Tier: tenant.TierStandard})
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.want)
				assert.Equal(t, before, countObjects(t, c, e.d), "no directory row, login, schema, table or role left")
				assert.Zero(t, count(t, c, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, id.SchemaName()), "no schema")
				_, err = e.admin.Tenant(t.Context(), id)
				require.ErrorIs(t, err, store.ErrUnknownTenant)

				good := newEnv(t, e.mode)
				require.NoError(t, good.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Whole", Tier: tenant.TierStandard}),
					"the ID was not taken")
				good.insertReq(t, tenant.NewContext(t.Context(), id), "REQ-1", "x")
			}, func(a *store.AdminConfig, _ *store.Config) { a.Tables = append(a.Tables, tc.table) })
		})
	}
}

// requireState checks the directory's state of id and, in ModeTenantLogin,
// that its login may log in exactly in the states that allow it.
func requireState(t *testing.T, e *env, c *pgx.Conn, id tenant.ID, want tenant.State) {
	t.Helper()
	info, err := e.admin.Tenant(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, want, info.State)
	if e.mode != store.ModeTenantLogin || want == tenant.StateDeleted {
		return
	}
	role, _, err := store.LoginOf(t.Context(), e.admin, id)
	require.NoError(t, err)
	var canLogin bool
	require.NoError(t, c.QueryRow(t.Context(), `SELECT rolcanlogin FROM pg_roles WHERE rolname = $1`, role).Scan(&canLogin))
	require.Equal(t, want == tenant.StateActive || want == tenant.StateProvisioning, canLogin, "LOGIN in state %s", want)
}

// Every move SetState makes or refuses, from every state a placed tenant
// can be in, is the lifecycle's (tenant.State.CanTransition), except that
// it never moves a tenant to deleted.
func TestSetStateFollowsTheLifecycle(t *testing.T) {
	forModes(t, func(t *testing.T, e *env) {
		c := superuser(t, e.d)
		// at places a new tenant and brings it to state from.
		at := func(t *testing.T, from tenant.State) tenant.ID {
			t.Helper()
			id := freshID("life")
			created := from
			switch from {
			case tenant.StateDecommissioning:
				created = tenant.StateActive
			case tenant.StateFailed:
				created = tenant.StateProvisioning
			}
			require.NoError(t, e.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Life", Tier: tenant.TierStandard, State: created}))
			if created != from {
				require.NoError(t, e.admin.SetState(t.Context(), id, from))
			}
			requireState(t, e, c, id, from)
			return id
		}
		targets := append(tenant.States(), "bogus")
		for _, from := range []tenant.State{tenant.StateProvisioning, tenant.StateActive, tenant.StateSuspended, tenant.StateDecommissioning, tenant.StateFailed} {
			t.Run(string(from), func(t *testing.T) {
				id := at(t, from)
				for _, to := range targets {
					if from.CanTransition(to) && to != tenant.StateDeleted {
						continue
					}
					err := e.admin.SetState(t.Context(), id, to)
					require.ErrorIs(t, err, tenant.ErrIllegalTransition, "%s -> %s", from, to)
					if to == tenant.StateDeleted {
						assert.Contains(t, err.Error(), "DropTenant", "says what records deleted")
					}
					requireState(t, e, c, id, from)
				}
				for _, to := range from.Next() {
					if to == tenant.StateDeleted {
						continue
					}
					id := at(t, from)
					require.NoError(t, e.admin.SetState(t.Context(), id, to), "%s -> %s", from, to)
					requireState(t, e, c, id, to)
				}
			})
		}
	})
}

func TestStateChangesOfUnknownAndDeletedTenantsAreRefused(t *testing.T) {
	forModes(t, func(t *testing.T, e *env) {
		c := superuser(t, e.d)
		before := countObjects(t, c, e.d)
		never := freshID("never")
		assert.ErrorIs(t, e.admin.SetState(t.Context(), never, tenant.StateActive), store.ErrUnknownTenant)
		assert.ErrorIs(t, e.admin.DropTenant(t.Context(), never), store.ErrUnknownTenant)
		assert.ErrorIs(t, e.admin.DropTenant(t.Context(), tenant.ID{}), tenant.ErrNoTenant)
		_, err := e.admin.Tenant(t.Context(), never)
		assert.ErrorIs(t, err, store.ErrUnknownTenant)
		assert.Equal(t, before, countObjects(t, c, e.d), "nothing recorded for an unknown tenant")

		// Only DropTenant records deleted, and nothing moves a tenant out
		// of it.
		id, _ := e.newTenant(t, "gone")
		require.NoError(t, e.admin.SetState(t.Context(), id, tenant.StateDecommissioning))
		require.ErrorIs(t, e.admin.SetState(t.Context(), id, tenant.StateDeleted), tenant.ErrIllegalTransition)
		require.NoError(t, e.admin.DropTenant(t.Context(), id), "the refused move leaves the tenant droppable")
		for _, to := range tenant.States() {
			err := e.admin.SetState(t.Context(), id, to)
			require.ErrorIs(t, err, tenant.ErrIllegalTransition, "deleted -> %s", to)
			requireState(t, e, c, id, tenant.StateDeleted)
		}
		assert.Zero(t, count(t, c, `SELECT count(*) FROM tenancy.tenant_logins WHERE tenant_id = $1`, id.String()), "no login restored")
	})
}

// A tenant the directory does not know fails every call of the request
// path with ErrUnknownTenant, and the failure is not kept: no pool is
// opened for it, and once the tenant is created its calls work.
func TestUnknownTenantFailsAndIsNotCached(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	_, ctxKnown := e.newTenant(t, "known")
	e.insertReq(t, ctxKnown, "REQ-1", "x")
	before := e.db.Stats()
	require.Positive(t, before.Pools)

	ghost := freshID("ghost")
	ctx := tenant.NewContext(t.Context(), ghost)
	for i := range 20 {
		other := tenant.NewContext(t.Context(), freshID(fmt.Sprintf("ghost%dx", i)))
		_, err := e.db.Exec(other, `SELECT 1`)
		require.ErrorIs(t, err, store.ErrUnknownTenant)
	}
	_, err := e.db.Exec(ctx, `SELECT 1`)
	assert.ErrorIs(t, err, store.ErrUnknownTenant, "Exec")
	_, err = e.db.Query(ctx, `SELECT 1`)
	assert.ErrorIs(t, err, store.ErrUnknownTenant, "Query")
	var one int
	assert.ErrorIs(t, e.db.QueryRow(ctx, `SELECT 1`).Scan(&one), store.ErrUnknownTenant, "QueryRow")
	called := false
	err = e.db.Tx(ctx, func(*store.Tx) error { called = true; return nil })
	assert.ErrorIs(t, err, store.ErrUnknownTenant, "Tx")
	assert.False(t, called, "fn does not run for an unknown tenant")
	_, err = e.db.Tenant(ctx)
	assert.ErrorIs(t, err, store.ErrUnknownTenant, "Tenant")

	after := e.db.Stats()
	assert.Equal(t, before.Pools, after.Pools, "no pool kept for unknown tenants")
	assert.Equal(t, before.Opened, after.Opened, "nor opened")
	assert.Equal(t, before.Connects, after.Connects, "no connection made")

	require.NoError(t, e.admin.CreateTenant(t.Context(), tenant.Info{ID: ghost, Name: "Late", Tier: tenant.TierStandard}))
	e.insertReq(t, ctx, "REQ-1", "created after its first calls")
	got, err := reqIDs(t, e.db, ctx, `SELECT req_id FROM requirements`)
	require.NoError(t, err)
	assert.Equal(t, []string{"REQ-1"}, got)
	info, err := e.db.Tenant(ctx)
	require.NoError(t, err)
	assert.Equal(t, ghost, info.ID)
	assert.Equal(t, before.Pools+1, e.db.Stats().Pools)
}

// adminRole returns the role of d's admin URL.
func adminRole(t testing.TB, d *pgtest.Database) string {
	t.Helper()
	var role string
	require.NoError(t, superuser(t, d).QueryRow(t.Context(), `SELECT current_user`).Scan(&role))
	return role
}

func TestAdminConfigErrorsNameTheField(t *testing.T) {
	d := databaseFor(t, store.ModeTenantLogin)
	newEnv(t, store.ModeTenantLogin) // the database is set up with the package's prefix and mode
	c := superuser(t, d)
	pc, err := pgx.ParseConfig(platform(t, d))
	require.NoError(t, err)
	shortKey := []byte("short and secret")
	for name, tc := range map[string]struct {
		adjust func(*store.AdminConfig)
		is     error
		want   []string
	}{
		"no pool":              {func(a *store.AdminConfig) { a.Pool = nil }, store.ErrInvalidConfig, []string{"AdminConfig.Pool"}},
		"role prefix upper":    {func(a *store.AdminConfig) { a.RolePrefix = "Bad" }, store.ErrInvalidConfig, []string{"RolePrefix"}},
		"role prefix quote":    {func(a *store.AdminConfig) { a.RolePrefix = `x"; drop` }, store.ErrInvalidConfig, []string{"RolePrefix"}},
		"role prefix long":     {func(a *store.AdminConfig) { a.RolePrefix = strings.Repeat("a", 17) }, store.ErrInvalidConfig, []string{"RolePrefix", "16 bytes"}},
		"role prefix mismatch": {func(a *store.AdminConfig) { a.RolePrefix = "other_" }, store.ErrInvalidConfig, []string{"AdminConfig.RolePrefix", "set up with"}},
		"unknown mode":         {func(a *store.AdminConfig) { a.Mode = "bogus" }, store.ErrInvalidConfig, []string{"AdminConfig.Mode"}},
		"zero mode":            {func(a *store.AdminConfig) { a.Mode = "" }, store.ErrInvalidConfig, []string{"AdminConfig.Mode"}},
		"mode mismatch":        {func(a *store.AdminConfig) { a.Mode = store.ModeSharedPool }, store.ErrInvalidConfig, []string{"AdminConfig.Mode", "set up with"}},
		"no platform role":     {func(a *store.AdminConfig) { a.PlatformRole = "" }, store.ErrInvalidConfig, []string{"AdminConfig.PlatformRole"}},
		"absent platform role": {func(a *store.AdminConfig) { a.PlatformRole = d.Prefix() + "nosuchrole" }, store.ErrInvalidConfig, []string{"AdminConfig.PlatformRole", "does not exist"}},
		"platform is admin":    {func(a *store.AdminConfig) { a.PlatformRole = adminRole(t, d) }, store.ErrUnsafeAppRole, []string{"both the admin and the platform role"}},
		"conn limit zero":      {func(a *store.AdminConfig) { a.ConnLimit = 0 }, store.ErrInvalidConfig, []string{"AdminConfig.ConnLimit"}},
		"conn limit huge":      {func(a *store.AdminConfig) { a.ConnLimit = 10001 }, store.ErrInvalidConfig, []string{"AdminConfig.ConnLimit"}},
		"no iterations":        {func(a *store.AdminConfig) { a.SCRAMIterations = 0 }, store.ErrInvalidConfig, []string{"AdminConfig.SCRAMIterations"}},
		"no login secrets":     {func(a *store.AdminConfig) { a.LoginSecrets = nil }, store.ErrInvalidConfig, []string{"AdminConfig.LoginSecrets"}},
		"short key": {func(a *store.AdminConfig) { a.LoginSecrets = []store.LoginSecret{{Version: 1, Key: shortKey}} },
			store.ErrInvalidConfig, []string{"AdminConfig.LoginSecrets[0].Key"}},
		"version zero": {func(a *store.AdminConfig) { a.LoginSecrets = []store.LoginSecret{{Version: 0, Key: secret.Key}} },
			store.ErrInvalidConfig, []string{"AdminConfig.LoginSecrets[0].Version"}},
		"duplicate versions": {func(a *store.AdminConfig) { a.LoginSecrets = []store.LoginSecret{secret, secret} },
			store.ErrInvalidConfig, []string{"AdminConfig.LoginSecrets[1]", "twice"}},
		"table name": {func(a *store.AdminConfig) {
			a.Tables = []store.Table{requirements, {Name: "x; drop table y", Columns: "a int"}}
		},
			store.ErrInvalidTable, []string{"AdminConfig.Tables[1]", "Name"}},
		"table pg_": {func(a *store.AdminConfig) { a.Tables = []store.Table{{Name: "pg_x", Columns: "a int"}} },
			store.ErrInvalidTable, []string{"AdminConfig.Tables[0]", "pg_"}},
		"table columns": {func(a *store.AdminConfig) { a.Tables = []store.Table{{Name: "x", Columns: " "}} },
			store.ErrInvalidTable, []string{"AdminConfig.Tables[0]", "Columns"}},
		"table statements": {func(a *store.AdminConfig) {
			a.Tables = []store.Table{{Name: "x", Columns: "a int); DROP SCHEMA tenancy CASCADE; --"}}
		},
			store.ErrInvalidTable, []string{"AdminConfig.Tables[0]", "Columns"}},
	} {
		t.Run(name, func(t *testing.T) {
			acfg, err := store.ParseAdminConfig(d.AdminURL())
			require.NoError(t, err)
			acfg.RolePrefix, acfg.PlatformRole = d.Prefix(), pc.User
			acfg.LoginSecrets, acfg.Tables = []store.LoginSecret{secret}, []store.Table{requirements}
			tc.adjust(acfg)
			a, err := store.OpenAdmin(t.Context(), acfg)
			if err == nil {
				a.Close()
			}
			require.ErrorIs(t, err, tc.is)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), string(shortKey), "no key in the error")
			assert.NotContains(t, err.Error(), string(secret.Key), "no key in the error")
		})
	}
	_, err = store.OpenAdmin(t.Context(), nil)
	assert.ErrorIs(t, err, store.ErrInvalidConfig)
	_, err = store.ParseAdminConfig("postgres://%zz")
	assert.ErrorIs(t, err, store.ErrInvalidConfig)

	// A refused configuration changed nothing the database was set up with.
	var prefix, mode, platformRole string
	require.NoError(t, c.QueryRow(t.Context(), `SELECT (SELECT value FROM tenancy.meta WHERE key = 'role_prefix'),
		(SELECT value FROM tenancy.meta WHERE key = 'mode'), (SELECT roles[1] FROM pg_policies WHERE policyname = 'tenancy_platform')`).
		Scan(&prefix, &mode, &platformRole))
	assert.Equal(t, []string{d.Prefix(), string(store.ModeTenantLogin), pc.User}, []string{prefix, mode, platformRole})
}

func TestConfigErrorsNameTheField(t *testing.T) {
	d := databaseFor(t, store.ModeTenantLogin)
	newEnv(t, store.ModeTenantLogin)
	shortKey := []byte("short and secret")
	for name, tc := range map[string]struct {
		adjust func(*store.Config)
		want   string
	}{
		"no platform":        {func(c *store.Config) { c.Platform = nil }, "Config.Platform"},
		"no login secrets":   {func(c *store.Config) { c.LoginSecrets = nil }, "Config.LoginSecrets"},
		"short key":          {func(c *store.Config) { c.LoginSecrets = []store.LoginSecret{{Version: 1, Key: shortKey}} }, "Config.LoginSecrets[0].Key"},
		"version zero":       {func(c *store.Config) { c.LoginSecrets = []store.LoginSecret{{Version: 0, Key: secret.Key}} }, "Config.LoginSecrets[0].Version"},
		"duplicate versions": {func(c *store.Config) { c.LoginSecrets = []store.LoginSecret{secret, secret} }, "Config.LoginSecrets[1]"},
		"max conns zero":     {func(c *store.Config) { c.MaxConns = 0 }, "Config.MaxConns"},
		"negative residency": {func(c *store.Config) { c.MinResidency = -time.Second }, "Config.MinResidency"},
		"no idle timeout":    {func(c *store.Config) { c.IdleTimeout = 0 }, "Config.IdleTimeout"},
		"negative rate":      {func(c *store.Config) { c.ConnectRate = -1 }, "Config.ConnectRate"},
		"negative burst":     {func(c *store.Config) { c.ConnectBurst = -1 }, "ConnectBurst"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := store.ParseConfig(platform(t, d), secret)
			require.NoError(t, err)
			tc.adjust(cfg)
			db, err := store.Open(t.Context(), cfg)
			if err == nil {
				db.Close()
			}
			require.ErrorIs(t, err, store.ErrInvalidConfig)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), string(shortKey), "no key in the error")
			assert.NotContains(t, err.Error(), string(secret.Key), "no key in the error")
		})
	}
	_, err := store.Open(t.Context(), nil)
	assert.ErrorIs(t, err, store.ErrInvalidConfig)
	_, err = store.ParseConfig("postgres://%zz", secret)
	assert.ErrorIs(t, err, store.ErrInvalidConfig)
	cfg, err := store.ParseConfig(platform(t, d), secret)
	require.NoError(t, err)
	db, err := store.Open(t.Context(), cfg)
	require.NoError(t, err, "the configuration the cases start from opens")
	db.Close()
}

var unsafeSeq atomic.Int64

// Open refuses a platform role that could reach tenant data, says what is
// wrong and, where a statement undoes it, which. Each case is a role of
// its own, made the database's platform role by an Admin of a database of
// this test's own (one platform role per database).
func TestOpenRefusesAnUnsafePlatformRole(t *testing.T) {
	d := pgtest.DB(t).NewDatabase(t)
	e := newEnvOn(t, d, store.ModeTenantLogin)
	id, _ := e.newTenant(t, "unsafe")
	login, _, err := store.LoginOf(t.Context(), e.admin, id)
	require.NoError(t, err)
	schema := pgx.Identifier{id.SchemaName()}.Sanitize()
	admin := adminRole(t, d)
	var group string
	require.NoError(t, superuser(t, d).QueryRow(t.Context(), `SELECT r.rolname FROM pg_roles r
		WHERE pg_has_role($1, r.oid, 'MEMBER') AND r.rolname <> $1`, login).Scan(&group))

	for _, tc := range []struct {
		name  string
		attrs string
		setup string // as superuser: %[1]s is the role, quoted, %[2]d a number of the case's own
		want  string
		fix   string // %[1]s is the role quoted, %[2]s bare; "" where the message gives no fix
	}{
		{name: "superuser", attrs: "SUPERUSER", want: "superuser", fix: "ALTER ROLE %[1]s NOSUPERUSER"},
		{name: "bypassrls", attrs: "BYPASSRLS", want: "BYPASSRLS", fix: "ALTER ROLE %[1]s NOBYPASSRLS"},
		{name: "createrole", attrs: "CREATEROLE", want: "CREATEROLE", fix: "ALTER ROLE %[1]s NOCREATEROLE"},
		{name: "replication", attrs: "REPLICATION", want: "REPLICATION", fix: "ALTER ROLE %[1]s NOREPLICATION"},
		{name: "reads all data", setup: `GRANT pg_read_all_data TO %[1]s`, want: "member of pg_read_all_data", fix: "REVOKE pg_read_all_data FROM %[2]s"},
		{name: "writes all data", setup: `GRANT pg_write_all_data TO %[1]s`, want: "member of pg_write_all_data", fix: "REVOKE pg_write_all_data FROM %[2]s"},
		{name: "tenant login", setup: `GRANT ` + pgx.Identifier{login}.Sanitize() + ` TO %[1]s`, want: "member of the tenant login", fix: "REVOKE " + login + " FROM %[2]s"},
		{name: "tenant group", setup: `GRANT ` + pgx.Identifier{group}.Sanitize() + ` TO %[1]s`, want: "which tenancy created", fix: "REVOKE " + group + " FROM %[2]s"},
		{name: "admin role", setup: `GRANT ` + pgx.Identifier{admin}.Sanitize() + ` TO %[1]s`, want: "member of the admin role", fix: "REVOKE " + admin + " FROM %[2]s"},
		{name: "tenant schema privilege", setup: `GRANT USAGE ON SCHEMA ` + schema + ` TO %[1]s`, want: "holds privileges on schema " + id.SchemaName(), fix: "REVOKE ALL ON SCHEMA " + id.SchemaName() + " FROM %[2]s"},
		{name: "tenant table owner", setup: `CREATE TABLE ` + schema + `.stray%[2]d (x int); ALTER TABLE ` + schema + `.stray%[2]d OWNER TO %[1]s`,
			want: "owns " + id.SchemaName() + ".stray", fix: "ALTER TABLE " + id.SchemaName() + ".stray"},
		{name: "row level security owner", setup: `CREATE TABLE public.rls%[2]d (x int); ALTER TABLE public.rls%[2]d ENABLE ROW LEVEL SECURITY; ALTER TABLE public.rls%[2]d OWNER TO %[1]s`,
			want: "owns public.rls", fix: "ALTER TABLE public.rls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := unsafeSeq.Add(1)
			name := fmt.Sprintf("unsafe%d", n)
			url := d.CreateRole(t, name, tc.attrs)
			role := d.Prefix() + name
			quoted := pgx.Identifier{role}.Sanitize()
			// An Admin naming this role as the platform role, so that Open
			// gets as far as checking it (the DB of e loses its platform
			// role: it is not used again).
			acfg, err := store.ParseAdminConfig(d.AdminURL())
			require.NoError(t, err)
			acfg.RolePrefix, acfg.LoginSecrets, acfg.PlatformRole = d.Prefix(), []store.LoginSecret{secret}, role
			a, err := store.OpenAdmin(t.Context(), acfg)
			require.NoError(t, err)
			a.Close()
			if tc.setup != "" {
				d.Exec(t, fmt.Sprintf(tc.setup, quoted, n))
			}
			cfg, err := store.ParseConfig(url, secret)
			require.NoError(t, err)
			db, err := store.Open(t.Context(), cfg)
			if err == nil {
				db.Close()
			}
			require.ErrorIs(t, err, store.ErrUnsafeAppRole)
			assert.Contains(t, err.Error(), tc.want)
			fix := tc.fix
			if strings.Contains(fix, "%") {
				fix = fmt.Sprintf(fix, quoted, role)
			}
			assert.Contains(t, err.Error(), "fix: "+fix, "the error says how to fix it")
		})
	}
	t.Run("safe role", func(t *testing.T) {
		name := fmt.Sprintf("safe%d", unsafeSeq.Add(1))
		url := d.CreateRole(t, name, "")
		acfg, err := store.ParseAdminConfig(d.AdminURL())
		require.NoError(t, err)
		acfg.RolePrefix, acfg.LoginSecrets, acfg.PlatformRole = d.Prefix(), []store.LoginSecret{secret}, d.Prefix()+name
		a, err := store.OpenAdmin(t.Context(), acfg)
		require.NoError(t, err)
		a.Close()
		cfg, err := store.ParseConfig(url, secret)
		require.NoError(t, err)
		db, err := store.Open(t.Context(), cfg)
		require.NoError(t, err, "a role with nothing but the Admin's grants opens")
		db.Close()
	})
	t.Run("role the admin did not set up", func(t *testing.T) {
		name := fmt.Sprintf("stranger%d", unsafeSeq.Add(1))
		cfg, err := store.ParseConfig(d.CreateRole(t, name, ""), secret)
		require.NoError(t, err)
		db, err := store.Open(t.Context(), cfg)
		if err == nil {
			db.Close()
		}
		require.Error(t, err)
		assert.Contains(t, err.Error(), "AdminConfig.PlatformRole", "says which setting names the role")
	})
}

// Roles are cluster-wide: a role with the name of the tenants' group that
// tenancy did not mark as its own (another deployment's) is not adopted.
func TestOpenAdminRefusesAnUnmarkedRoleOfItsName(t *testing.T) {
	d := pgtest.DB(t).NewDatabase(t)
	e := newEnvOn(t, d, store.ModeTenantLogin)
	c := superuser(t, d)
	var group, mark string
	require.NoError(t, c.QueryRow(t.Context(), `SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles
		WHERE starts_with(rolname, $1) AND rolname LIKE '%tenancy\_g\_%' AND has_database_privilege(oid, current_database(), 'CONNECT')`,
		d.Prefix()).Scan(&group, &mark))
	e.admin.Close()
	ident := pgx.Identifier{group}.Sanitize()
	d.Exec(t, `COMMENT ON ROLE `+ident+` IS NULL`)

	acfg, err := store.ParseAdminConfig(d.AdminURL())
	require.NoError(t, err)
	pc, err := pgx.ParseConfig(platform(t, d))
	require.NoError(t, err)
	acfg.RolePrefix, acfg.PlatformRole, acfg.LoginSecrets = d.Prefix(), pc.User, []store.LoginSecret{secret}
	_, err = store.OpenAdmin(t.Context(), acfg)
	require.ErrorIs(t, err, store.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "choose another RolePrefix")

	d.Exec(t, `COMMENT ON ROLE `+ident+` IS `+literalSQL(mark))
	a, err := store.OpenAdmin(t.Context(), acfg)
	require.NoError(t, err, "its own marked role is adopted")
	a.Close()
}

// literalSQL quotes s as an SQL string literal, for test DDL.
func literalSQL(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
