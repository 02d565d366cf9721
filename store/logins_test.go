package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// connectAs connects to database d as role with password, directly, as
// someone holding the tenant's credentials would.
func connectAs(t *testing.T, d *pgtest.Database, role, password string) (*pgx.Conn, error) {
	t.Helper()
	c, err := pgx.Connect(t.Context(), d.URL(role, password))
	if err == nil {
		t.Cleanup(func() { c.Close(context.Background()) })
	}
	return c, err
}

func TestTenantLoginIsHardened(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	idA, _ := e.newTenant(t, "hard")
	role, pw, err := store.LoginOf(t.Context(), e.admin, idA)
	require.NoError(t, err)
	assert.NotContains(t, role, idA.String(), "the role name reveals no tenant")
	c, err := connectAs(t, e.d, role, pw)
	require.NoError(t, err)

	var super, createDB, createRole, repl, bypass, inherit bool
	var limit int
	require.NoError(t, c.QueryRow(t.Context(), `SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolinherit, rolconnlimit
		FROM pg_roles WHERE rolname = current_user`).Scan(&super, &createDB, &createRole, &repl, &bypass, &inherit, &limit))
	assert.False(t, super || createDB || createRole || repl || bypass, "no dangerous attribute")
	assert.Equal(t, store.DefaultConnLimit, limit)

	var memberships []string
	rows, err := c.Query(t.Context(), `SELECT r.rolname FROM pg_roles r WHERE pg_has_role(current_user, r.oid, 'MEMBER') AND r.rolname <> current_user ORDER BY 1`)
	require.NoError(t, err)
	memberships, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Len(t, memberships, 1, "only the tenants' group: %v", memberships)
	assert.NotContains(t, memberships[0], "pg_")

	var owns int
	require.NoError(t, c.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid) + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)
		+ (SELECT count(*) FROM pg_proc WHERE proowner = r.oid) FROM pg_roles r WHERE rolname = current_user`).Scan(&owns))
	assert.Zero(t, owns, "owns nothing")
	var createAnywhere, temp bool
	require.NoError(t, c.QueryRow(t.Context(), `SELECT bool_or(has_schema_privilege(current_user, oid, 'CREATE')) FROM pg_namespace`).Scan(&createAnywhere))
	require.NoError(t, c.QueryRow(t.Context(), `SELECT has_database_privilege(current_user, current_database(), 'TEMPORARY')`).Scan(&temp))
	assert.False(t, createAnywhere, "no CREATE on any schema")
	assert.False(t, temp, "no TEMP")

	// The tenant cannot raise its own quota.
	_, err = c.Exec(t.Context(), `ALTER ROLE CURRENT_USER CONNECTION LIMIT 1000`)
	require.Error(t, err)
	assert.Equal(t, "42501", pgCode(err), "%v", err)
	// Nor become another role.
	_, err = c.Exec(t.Context(), `SET SESSION AUTHORIZATION postgres`)
	require.Error(t, err)
}

// rtmx:req REQ-TEN-018
func TestConnectionLimitIsTheQuota(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin, func(a *store.AdminConfig, _ *store.Config) { a.ConnLimit = 2 })
	idA, _ := e.newTenant(t, "quota")
	role, pw, err := store.LoginOf(t.Context(), e.admin, idA)
	require.NoError(t, err)
	for range 2 {
		_, err := connectAs(t, e.d, role, pw)
		require.NoError(t, err)
	}
	_, err = connectAs(t, e.d, role, pw)
	require.Error(t, err, "PostgreSQL refuses the third connection")
	assert.Contains(t, err.Error(), "too many connections")
}

// A connection PostgreSQL refuses for the tenant login's CONNECTION LIMIT
// is retried for a moment: the server still counts a backend whose client
// just closed it (an evicted pool, another replica) until it exits, and a
// request should not fail for that. Held longer, the refusal is the
// request's, with PostgreSQL's error.
func TestConnectionLimitRefusalIsRetriedBriefly(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin, func(a *store.AdminConfig, _ *store.Config) { a.ConnLimit = 1 })
	id, ctx := e.newTenant(t, "brief")
	role, pw, err := store.LoginOf(t.Context(), e.admin, id)
	require.NoError(t, err)

	other, err := connectAs(t, e.d, role, pw) // the connection limit's one slot, taken elsewhere
	require.NoError(t, err)
	time.AfterFunc(150*time.Millisecond, func() { other.Close(context.Background()) })
	var n int
	require.NoError(t, e.db.QueryRow(ctx, `SELECT count(*) FROM requirements`).Scan(&n), "the slot came free within the retries")

	id2, ctx2 := e.newTenant(t, "brief")
	role2, pw2, err := store.LoginOf(t.Context(), e.admin, id2)
	require.NoError(t, err)
	held, err := connectAs(t, e.d, role2, pw2)
	require.NoError(t, err)
	defer held.Close(context.Background())
	start := time.Now()
	err = e.db.QueryRow(ctx2, `SELECT count(*) FROM requirements`).Scan(&n)
	require.Error(t, err, "held for good, the slot is not there")
	assert.Equal(t, "53300", pgCode(err), "%v", err)
	assert.Less(t, time.Since(start), 5*time.Second, "the retries are brief")
}

func TestTenantCannotConnectToAnotherDatabase(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	other := databaseFor(t, store.ModeSharedPool)
	newEnv(t, store.ModeSharedPool) // hardened by its Admin
	idA, _ := e.newTenant(t, "conn")
	role, pw, err := store.LoginOf(t.Context(), e.admin, idA)
	require.NoError(t, err)
	_, err = connectAs(t, other, role, pw)
	require.Error(t, err)
	assert.Equal(t, "42501", pgCode(err), "permission denied for database: %v", err)
	_, err = connectAs(t, e.d, role, pw)
	require.NoError(t, err, "its own database")
}

func TestNoTenantFailsAtTheDatabase(t *testing.T) {
	t.Run("platform role", func(t *testing.T) {
		e := newEnv(t, store.ModeTenantLogin)
		idA, ctxA := e.newTenant(t, "pl")
		e.insertReq(t, ctxA, "REQ-1", "x")
		c, err := pgx.Connect(t.Context(), platform(t, e.d))
		require.NoError(t, err)
		defer c.Close(context.Background())
		_, err = c.Exec(t.Context(), `SELECT * FROM `+pgx.Identifier{idA.SchemaName(), "requirements"}.Sanitize())
		require.Error(t, err)
		assert.Equal(t, "42501", pgCode(err), "%v", err)
	})
	t.Run("shared login without the setting", func(t *testing.T) {
		e := newEnv(t, store.ModeSharedPool)
		idA, _ := e.newTenant(t, "sl") // empty table: must still fail
		role, pw, err := store.SharedLogin(e.admin)
		require.NoError(t, err)
		c, err := connectAs(t, e.d, role, pw)
		require.NoError(t, err)
		_, err = c.Exec(t.Context(), `SELECT * FROM `+pgx.Identifier{idA.SchemaName(), "requirements"}.Sanitize())
		require.Error(t, err)
		assert.Equal(t, "42501", pgCode(err), "%v", err)
		assert.Contains(t, err.Error(), "no tenant")
	})
}

func TestGuardCannotBeShadowed(t *testing.T) {
	forModes(t, func(t *testing.T, e *env) {
		idA, ctxA, idB, ctxB, canary := victim(t, e)
		shared := createShared(t, e, store.Table{Name: "notes", Columns: `body text NOT NULL`})
		for ctx, body := range map[context.Context]string{ctxA: "own note", ctxB: canary} {
			_, err := e.db.Exec(ctx, `INSERT INTO `+shared+` (body) VALUES ($1)`, body)
			require.NoError(t, err)
		}
		// A superuser plants, in a schema every role may use, everything a
		// guard names without its schema: the lookup tables, the functions
		// (current_setting, to_regrole, quote_ident) and = operators that
		// are always true; the tenant then puts that schema before
		// pg_catalog on its search_path.
		plant := e.d.Prefix() + "plant"
		e.d.Exec(t, fmt.Sprintf(`CREATE SCHEMA IF NOT EXISTS %[1]s;
			CREATE TABLE IF NOT EXISTS %[1]s.tenant_logins (tenant_id text, role_oid oid, role_name text);
			INSERT INTO %[1]s.tenant_logins SELECT %[2]s, oid, rolname FROM pg_catalog.pg_roles;
			CREATE OR REPLACE VIEW %[1]s.pg_roles AS SELECT oid, rolname FROM pg_catalog.pg_roles;
			CREATE OR REPLACE FUNCTION %[1]s.current_setting(text, boolean) RETURNS text LANGUAGE sql AS $$ SELECT %[2]s::text $$;
			CREATE OR REPLACE FUNCTION %[1]s.to_regrole(text) RETURNS regrole LANGUAGE sql AS $$ SELECT 0::oid::regrole $$;
			CREATE OR REPLACE FUNCTION %[1]s.quote_ident(text) RETURNS text LANGUAGE sql AS $$ SELECT 'postgres'::text $$;
			CREATE OR REPLACE FUNCTION %[1]s.yes(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
			CREATE OR REPLACE FUNCTION %[1]s.yes(oid, oid) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
			CREATE OR REPLACE FUNCTION %[1]s.yes(name, name) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
			CREATE OPERATOR %[1]s.= (LEFTARG = text, RIGHTARG = text, FUNCTION = %[1]s.yes);
			CREATE OPERATOR %[1]s.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = %[1]s.yes);
			CREATE OPERATOR %[1]s.= (LEFTARG = name, RIGHTARG = name, FUNCTION = %[1]s.yes);
			GRANT USAGE ON SCHEMA %[1]s TO PUBLIC; GRANT SELECT ON ALL TABLES IN SCHEMA %[1]s TO PUBLIC;
			GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA %[1]s TO PUBLIC`,
			plant, "'"+idB.String()+"'"))
		t.Cleanup(func() { e.d.Exec(t, `DROP SCHEMA `+plant+` CASCADE`) })
		err := e.db.Tx(ctxA, func(tx *store.Tx) error {
			if _, err := tx.Exec(ctxA, `SET LOCAL search_path = `+plant+`, pg_catalog, "$user"`); err != nil {
				return err
			}
			// The plants work on this path: SQL parsed with it gets them.
			var planted bool
			var quoted string
			if err := tx.QueryRow(ctxA, `SELECT 'a'::text = 'b'::text, quote_ident('x')`).Scan(&planted, &quoted); err != nil {
				return err
			}
			require.True(t, planted, "the planted = is found first")
			require.Equal(t, "postgres", quoted, "the planted quote_ident is found first")
			// The shared table (the lookup guard) and A's own table (the
			// guard of constants) show A its own rows and no canary.
			var bodies []string
			rows, err := tx.Query(ctxA, `SELECT tenant_id || ':' || body FROM `+shared)
			if err != nil {
				return err
			}
			if bodies, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return err
			}
			assert.Equal(t, []string{idA.String() + ":own note"}, bodies, "the shared table")
			own := pgx.Identifier{idA.SchemaName(), "requirements"}.Sanitize()
			rows, err = tx.Query(ctxA, `SELECT tenant_id FROM `+own)
			if err != nil {
				return err
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			assert.Equal(t, []string{idA.String()}, ids, "A's own table")
			// B's table by name: no privilege (tenant logins) or no rows
			// (the shared pool, whose guard calls pg_catalog's functions).
			return noCanary(t, canary)(tx.Query(ctxA, `SELECT * FROM `+pgx.Identifier{idB.SchemaName(), "requirements"}.Sanitize()))
		})
		if e.mode == store.ModeTenantLogin {
			require.Error(t, err)
			assert.Equal(t, "42501", pgCode(err), "%v", err)
		} else {
			require.NoError(t, err)
		}
	})
}

func TestSCRAMAuthentication(t *testing.T) {
	d := pgtest.NewSCRAMCluster(t)
	platformURL := d.CreateRole(t, "scramplatform", "")
	pc, err := pgx.ParseConfig(platformURL)
	require.NoError(t, err)
	acfg, err := store.ParseAdminConfig(d.AdminURL())
	require.NoError(t, err)
	acfg.RolePrefix, acfg.PlatformRole = d.Prefix(), pc.User
	acfg.LoginSecrets = []store.LoginSecret{secret}
	acfg.Tables = []store.Table{requirements}
	admin, err := store.OpenAdmin(t.Context(), acfg)
	require.NoError(t, err)
	defer admin.Close()
	require.NoError(t, admin.HardenDatabases(t.Context(), "postgres", "template1"))
	cfg, err := store.ParseConfig(platformURL, secret)
	require.NoError(t, err)
	db, err := store.Open(t.Context(), cfg)
	require.NoError(t, err)
	defer db.Close()

	id := tenant.MustParseID("scram1")
	require.NoError(t, admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "SCRAM", Tier: tenant.TierStandard}))
	ctx := tenant.NewContext(t.Context(), id)
	_, err = db.Exec(ctx, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ('R', 'C', 'T')`)
	require.NoError(t, err, "the derived password authenticates with SCRAM")

	role, pw, err := store.LoginOf(t.Context(), admin, id)
	require.NoError(t, err)
	_, err = connectAs(t, d, role, pw+"x")
	require.Error(t, err, "a wrong password fails")
	assert.Contains(t, err.Error(), "password authentication failed")
	for _, other := range []string{"postgres", "template1"} {
		u, err := pgx.ParseConfig(d.URL(role, pw))
		require.NoError(t, err)
		u.Database = other
		_, err = pgx.ConnectConfig(t.Context(), u)
		require.Error(t, err, "HardenDatabases: no CONNECT to %s", other)
	}

	// Drift: the tenant changes its own password and settings; its next
	// connection fails until the admin repairs the login.
	c, err := connectAs(t, d, role, pw)
	require.NoError(t, err)
	_, err = c.Exec(t.Context(), `ALTER ROLE CURRENT_USER PASSWORD 'mine now'`)
	require.NoError(t, err, "PostgreSQL lets a role change its own password")
	_, err = c.Exec(t.Context(), `ALTER ROLE CURRENT_USER SET work_mem = '1GB'`)
	require.NoError(t, err)
	_, err = connectAs(t, d, role, pw)
	require.Error(t, err)
	drift, err := admin.RepairLogins(t.Context())
	require.NoError(t, err)
	require.Len(t, drift, 1)
	assert.Equal(t, id, drift[0].Tenant)
	assert.ElementsMatch(t, []string{"password", "settings"}, drift[0].What)
	_, err = connectAs(t, d, role, pw)
	require.NoError(t, err, "repaired")
	drift, err = admin.RepairLogins(t.Context())
	require.NoError(t, err)
	assert.Empty(t, drift, "nothing left to repair")

	// Rotation to a new secret: the DB that has both keeps working.
	secret2 := store.LoginSecret{Version: 2, Key: []byte("the second tenancy test login secret, 32+ bytes")}
	acfg.LoginSecrets = []store.LoginSecret{secret, secret2}
	admin2, err := store.OpenAdmin(t.Context(), acfg)
	require.NoError(t, err)
	defer admin2.Close()
	cfg2, err := store.ParseConfig(platformURL, secret, secret2)
	require.NoError(t, err)
	db2, err := store.Open(t.Context(), cfg2)
	require.NoError(t, err)
	defer db2.Close()
	n, err := admin2.RotateLogins(t.Context(), 0)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	_, err = connectAs(t, d, role, pw)
	require.Error(t, err, "the old password no longer works")
	_, err = db2.Exec(ctx, `SELECT 1`)
	require.NoError(t, err, "a DB with the new secret connects")
}

// TestSCRAMVerifierSetsAPasswordThatLogsIn: a role's password set as the
// verifier store.SCRAMVerifier computes is stored as sent, so the
// statement carried no clear text, and the password logs in with
// SCRAM-SHA-256 while another does not.
func TestSCRAMVerifierSetsAPasswordThatLogsIn(t *testing.T) {
	d := pgtest.NewSCRAMCluster(t)
	const password = "correct horse battery staple"
	v, err := store.SCRAMVerifier(password, 4096)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(v, "SCRAM-SHA-256$4096:"), v)
	assert.NotContains(t, v, password)
	again, err := store.SCRAMVerifier(password, 4096)
	require.NoError(t, err)
	assert.NotEqual(t, v, again, "each verifier has a salt of its own")

	admin, err := pgx.Connect(t.Context(), d.AdminURL())
	require.NoError(t, err)
	defer admin.Close(context.Background())
	role := d.Prefix() + "verifier"
	ident := pgx.Identifier{role}.Sanitize()
	_, err = admin.Exec(t.Context(), `CREATE ROLE `+ident+` LOGIN PASSWORD '`+v+`'`)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), `DROP ROLE IF EXISTS `+ident) })
	var stored string
	require.NoError(t, admin.QueryRow(t.Context(), `SELECT rolpassword FROM pg_authid WHERE rolname = $1`, role).Scan(&stored))
	assert.Equal(t, v, stored, "PostgreSQL keeps a verifier as given")

	_, err = connectAs(t, d, role, password)
	require.NoError(t, err, "the password logs in")
	_, err = connectAs(t, d, role, password+"x")
	require.ErrorContains(t, err, "password authentication failed")

	for _, n := range []int{0, -1} {
		_, err = store.SCRAMVerifier(password, n)
		require.ErrorContains(t, err, "store: SCRAM iterations")
	}
}
