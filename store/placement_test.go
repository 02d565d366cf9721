package store_test

// Placements of the enterprise tier (a database of its own on the shared
// cluster) and the government tier (a database of its own on a dedicated
// cluster, here pgtest.SecondCluster): what each tenant's login can reach,
// what dropping one leaves, and creation after a crash or a failed step.
// The isolation tests themselves run on every placement (forPlacements).

import (
	"context"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// dbURL is d.URL(role, password) on database db of d's server.
func dbURL(t testing.TB, d *pgtest.Database, db, role, password string) string {
	t.Helper()
	u, err := url.Parse(d.URL(role, password))
	require.NoError(t, err)
	u.Path = "/" + db
	return u.String()
}

// loginTo connects to database db of d's server as the login of tenant
// id, with its own password, as an attacker holding the tenant's
// credentials would.
func loginTo(t *testing.T, e *env, d *pgtest.Database, id tenant.ID, db string) (*pgx.Conn, error) {
	t.Helper()
	role, pw, err := store.LoginOf(t.Context(), e.admin, id)
	require.NoError(t, err)
	c, err := pgx.Connect(t.Context(), dbURL(t, d, db, role, pw))
	if err == nil {
		t.Cleanup(func() { c.Close(context.Background()) })
	}
	return c, err
}

// ownDatabaseOf is the database name store gives a tenant with one of its own.
func ownDatabaseOf(d *pgtest.Database, id tenant.ID) string { return d.Prefix() + id.SchemaName() }

// clusterObjects lists the databases and roles of d's cluster whose names
// start with the package's prefix.
func clusterObjects(t *testing.T, d *pgtest.Database) []string {
	t.Helper()
	rows, err := superuser(t, d).Query(t.Context(), `SELECT 'database ' || datname FROM pg_database WHERE starts_with(datname, $1)
		UNION ALL SELECT 'role ' || rolname FROM pg_roles WHERE starts_with(rolname, $1)`, d.Prefix())
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	sort.Strings(got)
	return got
}

func TestEnterpriseDatabaseLetsOnlyItsOwnLoginConnect(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			e := newPlacedEnv(t, placementCase{m, tenant.TierEnterprise})
			idA, ctxA := e.newTenant(t, "enta")
			idB, _ := e.newTenant(t, "entb")
			e.insertReq(t, ctxA, "REQ-1", "A's")
			dbA, dbB := ownDatabaseOf(e.d, idA), ownDatabaseOf(e.d, idB)
			roleA, _, err := store.LoginOf(t.Context(), e.admin, idA)
			require.NoError(t, err)
			roleB, _, err := store.LoginOf(t.Context(), e.admin, idB)
			require.NoError(t, err)

			su := superuser(t, e.d)
			var publicGrants int
			require.NoError(t, su.QueryRow(t.Context(), `SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a
				WHERE d.datname = $1 AND a.grantee = 0`, dbA).Scan(&publicGrants))
			assert.Zero(t, publicGrants, "PUBLIC has neither CONNECT nor TEMPORARY on a tenant database")
			for role, want := range map[string]bool{roleA: true, roleB: false, roleOf(t, platform(t, e.d)): false} {
				var can bool
				require.NoError(t, su.QueryRow(t.Context(), `SELECT has_database_privilege($1, $2, 'CONNECT')`, role, dbA).Scan(&can))
				assert.Equal(t, want, can, "CONNECT on A's database for %s", role)
			}

			_, err = loginTo(t, e, e.d, idB, dbA)
			require.Error(t, err, "B's login connects to A's database")
			assert.Equal(t, "42501", pgCode(err), "%v", err)
			_, err = loginTo(t, e, e.d, idA, e.d.Name())
			require.Error(t, err, "A's login connects to the shared database")
			assert.Equal(t, "42501", pgCode(err), "%v", err)

			c, err := loginTo(t, e, e.d, idA, dbA)
			require.NoError(t, err, "A's login connects to its own database")
			var n int
			require.NoError(t, c.QueryRow(t.Context(), `SELECT count(*) FROM requirements`).Scan(&n), "search_path is its schema")
			assert.Equal(t, 1, n)
			var temp, create bool
			require.NoError(t, c.QueryRow(t.Context(), `SELECT has_database_privilege(current_database(), 'TEMPORARY'),
				has_schema_privilege('public', 'CREATE')`).Scan(&temp, &create))
			assert.False(t, temp, "no TEMP in its own database")
			assert.False(t, create, "no CREATE on schema public")
			_, err = c.Exec(t.Context(), `SELECT * FROM `+pgx.Identifier{idB.SchemaName(), "requirements"}.Sanitize())
			assert.Equal(t, "42P01", pgCode(err), "B's schema is not in A's database: %v", err)
			var aInB bool
			require.NoError(t, su.QueryRow(t.Context(), `SELECT has_database_privilege($1, $2, 'CONNECT')`, roleA, dbB).Scan(&aInB))
			assert.False(t, aInB, "and the other way round")
		})
	}
}

func TestGovernmentTenantLivesOnItsClusterOnly(t *testing.T) {
	e := newPlacedEnv(t, placementCase{store.ModeTenantLogin, tenant.TierGovernment})
	second := pgtest.SecondCluster(t)
	idG, ctxG := e.newTenant(t, "gov")
	e.insertReq(t, ctxG, "REQ-G", "government's")
	idS := tenant.MustParseID("std" + idG.String())
	require.NoError(t, e.admin.CreateTenant(t.Context(), tenant.Info{ID: idS, Name: "S", Tier: tenant.TierStandard}))
	ctxS := tenant.NewContext(t.Context(), idS)
	roleG, _, err := store.LoginOf(t.Context(), e.admin, idG)
	require.NoError(t, err)
	roleS, _, err := store.LoginOf(t.Context(), e.admin, idS)
	require.NoError(t, err)

	exists := func(d *pgtest.Database, kind, name string) bool {
		var ok bool
		q := `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`
		if kind == "database" {
			q = `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`
		}
		require.NoError(t, superuser(t, d).QueryRow(t.Context(), q, name).Scan(&ok))
		return ok
	}
	assert.True(t, exists(second, "database", ownDatabaseOf(e.d, idG)), "G's database is on the dedicated cluster")
	assert.True(t, exists(second, "role", roleG), "G's login is on the dedicated cluster")
	assert.False(t, exists(e.d, "database", ownDatabaseOf(e.d, idG)), "and not on the shared one")
	assert.False(t, exists(e.d, "role", roleG), "nor its login")
	assert.False(t, exists(second, "role", roleS), "no standard login on the dedicated cluster")

	_, err = loginTo(t, e, e.d, idG, e.d.Name())
	require.Error(t, err, "G's credentials mean nothing on the shared cluster")
	_, err = loginTo(t, e, second, idS, ownDatabaseOf(e.d, idG))
	require.Error(t, err, "S's credentials mean nothing on the dedicated cluster")
	for _, db := range []string{second.Name(), "postgres", "template1"} {
		_, err = loginTo(t, e, second, idG, db)
		require.Error(t, err, "RegisterCluster hardened every database of the dedicated cluster: %s", db)
		assert.Equal(t, "42501", pgCode(err), "%s: %v", db, err)
	}

	// A DB that was not given the dedicated cluster cannot reach G at
	// all, and says which cluster is missing; S is served as ever.
	cfg, err := store.ParseConfig(platform(t, e.d), secret)
	require.NoError(t, err)
	other, err := store.Open(t.Context(), cfg)
	require.NoError(t, err)
	defer other.Close()
	_, err = other.Exec(ctxG, `SELECT 1`)
	require.ErrorIs(t, err, store.ErrInvalidConfig)
	assert.Contains(t, err.Error(), `"gov"`)
	_, err = other.Exec(ctxS, `SELECT 1`)
	require.NoError(t, err)

	got, err := reqIDs(t, e.db, ctxG, `SELECT req_id FROM requirements`)
	require.NoError(t, err)
	assert.Equal(t, []string{"REQ-G"}, got)
	got, err = reqIDs(t, e.db, ctxS, `SELECT req_id FROM requirements`)
	require.NoError(t, err)
	assert.Empty(t, got, "S sees nothing of G's")

	// Registering the shared cluster as a dedicated one is refused.
	acfg := adminConfig(t, e.d, platform(t, e.d), store.ModeTenantLogin)
	require.NoError(t, acfg.AddCluster("itself", e.d.AdminURL()))
	self, err := store.OpenAdmin(t.Context(), acfg)
	require.NoError(t, err)
	defer self.Close()
	err = self.RegisterCluster(t.Context(), "itself")
	require.ErrorIs(t, err, store.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "shared cluster itself")
}

func TestDroppingATenantLeavesTheOtherClusterUntouched(t *testing.T) {
	e := newPlacedEnv(t, placementCase{store.ModeTenantLogin, tenant.TierGovernment})
	second := pgtest.SecondCluster(t)
	idG1, _ := e.newTenant(t, "dropg")
	_, ctxG2 := e.newTenant(t, "keepg")
	e.insertReq(t, ctxG2, "REQ-G2", "kept")
	idE := tenant.MustParseID("ent" + idG1.String())
	require.NoError(t, e.admin.CreateTenant(t.Context(), tenant.Info{ID: idE, Name: "E", Tier: tenant.TierEnterprise}))
	ctxE := tenant.NewContext(t.Context(), idE)
	e.insertReq(t, ctxE, "REQ-E", "kept")
	roleG1, _, err := store.LoginOf(t.Context(), e.admin, idG1)
	require.NoError(t, err)
	roleE, _, err := store.LoginOf(t.Context(), e.admin, idE)
	require.NoError(t, err)

	shared, dedicated := clusterObjects(t, e.d), clusterObjects(t, second)
	require.Contains(t, dedicated, "database "+ownDatabaseOf(e.d, idG1))
	require.NoError(t, e.admin.SetState(t.Context(), idG1, tenant.StateDecommissioning))
	require.NoError(t, e.admin.DropTenant(t.Context(), idG1))
	assert.Equal(t, shared, clusterObjects(t, e.d), "dropping G1 changed nothing on the shared cluster")
	assert.Equal(t, without(dedicated, "database "+ownDatabaseOf(e.d, idG1), "role "+roleG1), clusterObjects(t, second),
		"G1's database and login are gone, nothing else")
	got, err := reqIDs(t, e.db, ctxG2, `SELECT req_id FROM requirements`)
	require.NoError(t, err)
	assert.Equal(t, []string{"REQ-G2"}, got, "G2 on the same cluster is served")

	shared, dedicated = clusterObjects(t, e.d), clusterObjects(t, second)
	require.NoError(t, e.admin.DropTenant(t.Context(), idE))
	assert.Equal(t, dedicated, clusterObjects(t, second), "dropping E changed nothing on the dedicated cluster")
	assert.Equal(t, without(shared, "database "+ownDatabaseOf(e.d, idE), "role "+roleE), clusterObjects(t, e.d))
	_, err = e.db.Exec(ctxE, `SELECT 1`)
	_, err2 := e.db.Exec(ctxE, `SELECT 1`) // the first may meet its ended session
	require.Error(t, err2)
	assert.ErrorIs(t, err2, store.ErrUnknownTenant, "after %v", err)
	assert.ErrorIs(t, e.admin.DropTenant(t.Context(), idE), store.ErrUnknownTenant, "twice")
}

func without(list []string, drop ...string) []string {
	var out []string
	for _, s := range list {
		keep := true
		for _, d := range drop {
			keep = keep && s != d
		}
		if keep {
			out = append(out, s)
		}
	}
	return out
}

// A crash after any step of creating a tenant with a database of its own
// leaves it requested; CreateTenant again finishes it, DropTenant removes
// it. Not parallel: the crash is a package-level hook.
func TestCreateWithDatabaseResumesAfterACrash(t *testing.T) {
	e := newPlacedEnv(t, placementCase{store.ModeTenantLogin, tenant.TierEnterprise})
	for step := 1; step <= 3; step++ {
		t.Run("after step "+string(rune('0'+step)), func(t *testing.T) {
			for _, finish := range []string{"create again", "drop"} {
				id := freshID("crash")
				info := tenant.Info{ID: id, Name: "Crash", Tier: tenant.TierEnterprise}
				before := clusterObjects(t, e.d)
				restore := store.CrashCreateAfter(step)
				err := e.admin.CreateTenant(t.Context(), info)
				restore()
				require.ErrorIs(t, err, store.ErrCrashed)
				got, err := e.admin.Tenant(t.Context(), id)
				require.NoError(t, err)
				assert.Equal(t, tenant.StateRequested, got.State, "a crashed creation stays requested")

				if finish == "drop" {
					require.NoError(t, e.admin.DropTenant(t.Context(), id))
					assert.Equal(t, before, clusterObjects(t, e.d), "DropTenant removes what the crashed creation made")
					got, err := e.admin.Tenant(t.Context(), id)
					require.NoError(t, err)
					assert.Equal(t, tenant.StateDeleted, got.State)
					continue
				}
				require.NoError(t, e.admin.CreateTenant(t.Context(), info), "CreateTenant finishes it")
				got, err = e.admin.Tenant(t.Context(), id)
				require.NoError(t, err)
				assert.Equal(t, tenant.StateActive, got.State)
				ctx := tenant.NewContext(t.Context(), id)
				e.insertReq(t, ctx, "REQ-1", "after the crash")
				ids, err := reqIDs(t, e.db, ctx, `SELECT req_id FROM requirements`)
				require.NoError(t, err)
				assert.Equal(t, []string{"REQ-1"}, ids)
				assert.ErrorIs(t, e.admin.CreateTenant(t.Context(), info), store.ErrTenantExists, "once finished, it exists")
				other := info
				other.Tier = tenant.TierStandard
				assert.ErrorIs(t, e.admin.CreateTenant(t.Context(), other), store.ErrTenantExists)
			}
		})
	}
}

// A step that fails undoes the steps before: no database, no role, no
// directory entry.
func TestCreateWithDatabaseUndoesAFailedStep(t *testing.T) {
	bad := store.Table{Name: "broken", Columns: `x no_such_type`}
	e := newEnvOn(t, databaseFor(t, store.ModeTenantLogin).NewDatabase(t), store.ModeTenantLogin, func(a *store.AdminConfig, _ *store.Config) {
		a.Tables = append(a.Tables, bad)
	})
	id := freshID("undo")
	before := clusterObjects(t, e.d)
	err := e.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Undo", Tier: tenant.TierEnterprise})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no_such_type")
	assert.Equal(t, before, clusterObjects(t, e.d), "no database or role left behind")
	_, err = e.admin.Tenant(t.Context(), id)
	assert.ErrorIs(t, err, store.ErrUnknownTenant, "nothing recorded")
	_, _, err = store.LoginOf(t.Context(), e.admin, id)
	assert.ErrorIs(t, err, pgx.ErrNoRows, "no login recorded")
}

// pg_hba.conf lines from HBARules keep each government tenant's login to
// its own database, even after a mistaken grant that lets PUBLIC connect.
func TestHBARulesConfineTenantLogins(t *testing.T) {
	e := newPlacedEnv(t, placementCase{store.ModeTenantLogin, tenant.TierGovernment})
	second := pgtest.SecondCluster(t)
	idA, ctxA := e.newTenant(t, "hbaa")
	idB, _ := e.newTenant(t, "hbab")
	dbB := ownDatabaseOf(e.d, idB)
	superuser(t, second).Exec(t.Context(), `GRANT CONNECT ON DATABASE `+pgx.Identifier{dbB}.Sanitize()+` TO PUBLIC`)
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), second.AdminURL())
		if err == nil {
			_, _ = c.Exec(context.Background(), `REVOKE CONNECT ON DATABASE `+pgx.Identifier{dbB}.Sanitize()+` FROM PUBLIC`)
			c.Close(context.Background())
		}
	})
	_, err := loginTo(t, e, second, idA, dbB)
	require.NoError(t, err, "without the rules, the mistaken grant lets A into B's database")

	rules, err := e.admin.HBARules(t.Context(), govCluster, "127.0.0.1/32", "trust")
	require.NoError(t, err)
	for _, id := range []tenant.ID{idA, idB} {
		role, _, err := store.LoginOf(t.Context(), e.admin, id)
		require.NoError(t, err)
		assert.Contains(t, rules, `host "`+ownDatabaseOf(e.d, id)+`" "`+role+`" 127.0.0.1/32 trust`)
	}
	second.SetHBA(t, append(append([]string{
		"local all postgres trust",
		"host  all postgres 127.0.0.1/32 trust",
	}, rules...), "host all all all reject", "local all all reject")...)

	_, err = loginTo(t, e, second, idA, dbB)
	require.Error(t, err, "with the rules, pg_hba.conf refuses A in B's database")
	assert.Contains(t, err.Error(), "pg_hba.conf")
	_, err = loginTo(t, e, second, idA, "postgres")
	require.Error(t, err)
	_, err = loginTo(t, e, second, idA, ownDatabaseOf(e.d, idA))
	require.NoError(t, err, "A's own database")
	_, err = e.db.Exec(ctxA, `SELECT 1`)
	require.NoError(t, err, "and A's pool")

	_, err = e.admin.HBARules(t.Context(), govCluster, "127.0.0.1/32 trust\nhost all all all", "trust")
	assert.ErrorIs(t, err, store.ErrInvalidConfig, "the address cannot smuggle in a line")
	_, err = e.admin.HBARules(t.Context(), govCluster, "127.0.0.1/32", "trust\nhost all all all trust")
	assert.ErrorIs(t, err, store.ErrInvalidConfig, "nor the method")
	_, err = e.admin.HBARules(t.Context(), govCluster, "127.0.0.1/32", "trust # all")
	assert.ErrorIs(t, err, store.ErrInvalidConfig, "nor a comment")
}

// The logins of tenants with a database of their own are suspended,
// repaired and rotated where they live: here a government tenant on a
// dedicated cluster that checks passwords (SCRAM), and an enterprise
// tenant on the shared one.
func TestLoginsOnTheirOwnClusterAreSuspendedRepairedAndRotated(t *testing.T) {
	scram := pgtest.NewSCRAMCluster(t)
	d := databaseFor(t, store.ModeTenantLogin).NewDatabase(t)
	var acfg *store.AdminConfig
	e := newEnvOn(t, d, store.ModeTenantLogin, func(a *store.AdminConfig, c *store.Config) {
		require.NoError(t, a.AddCluster("scram", scram.AdminURL()))
		require.NoError(t, c.AddCluster("scram", scram.AdminURL()))
		c.MaxConns, c.MinResidency = 1, 0
		acfg = a
	})
	require.NoError(t, e.admin.RegisterCluster(t.Context(), "scram"))
	idG := freshID("govl")
	require.NoError(t, e.admin.CreateTenant(t.Context(), tenant.Info{ID: idG, Name: "G", Tier: tenant.TierGovernment}, store.OnCluster("scram")))
	idE := freshID("entl")
	require.NoError(t, e.admin.CreateTenant(t.Context(), tenant.Info{ID: idE, Name: "E", Tier: tenant.TierEnterprise}))
	ctxG, ctxE := tenant.NewContext(t.Context(), idG), tenant.NewContext(t.Context(), idE)
	e.insertReq(t, ctxG, "REQ-G", "g")

	// Suspended: its login is refused on its cluster.
	require.NoError(t, e.admin.SetState(t.Context(), idG, tenant.StateSuspended))
	e.insertReq(t, ctxE, "REQ-E", "e") // takes the one connection: G's next call logs in anew
	_, err := e.db.Exec(ctxG, `SELECT 1`)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not permitted to log in")
	require.NoError(t, e.admin.SetState(t.Context(), idG, tenant.StateActive))
	_, err = e.db.Exec(ctxG, `SELECT 1`)
	require.NoError(t, err, "active again")

	// Hardened there as on the shared cluster: no membership, owns nothing.
	dbG := ownDatabaseOf(e.d, idG)
	c, err := loginTo(t, e, scram, idG, dbG)
	require.NoError(t, err)
	var memberships, owns int
	require.NoError(t, c.QueryRow(t.Context(), `SELECT count(*) FROM pg_roles r WHERE pg_has_role(current_user, r.oid, 'MEMBER') AND r.rolname <> current_user`).Scan(&memberships))
	require.NoError(t, c.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid) + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)
		+ (SELECT count(*) FROM pg_database WHERE datdba = r.oid) FROM pg_roles r WHERE rolname = current_user`).Scan(&owns))
	assert.Zero(t, memberships, "a login with a database of its own belongs to no role")
	assert.Zero(t, owns, "and owns nothing, not even its database")

	// Drift on the dedicated cluster, seen and repaired there.
	_, err = c.Exec(t.Context(), `ALTER ROLE CURRENT_USER PASSWORD 'mine now'`)
	require.NoError(t, err)
	_, err = c.Exec(t.Context(), `ALTER ROLE CURRENT_USER SET work_mem = '1GB'`)
	require.NoError(t, err)
	_, err = loginTo(t, e, scram, idG, dbG)
	require.Error(t, err, "its own password change locks it out")
	drift, err := e.admin.RepairLogins(t.Context())
	require.NoError(t, err)
	require.Len(t, drift, 1, "%v", drift)
	assert.Equal(t, idG, drift[0].Tenant)
	assert.ElementsMatch(t, []string{"password", "settings"}, drift[0].What)
	_, err = loginTo(t, e, scram, idG, dbG)
	require.NoError(t, err, "repaired")

	// Rotation moves both logins, each on its cluster.
	roleG, oldPW, err := store.LoginOf(t.Context(), e.admin, idG)
	require.NoError(t, err)
	secret2 := store.LoginSecret{Version: 2, Key: []byte("the second tenancy test login secret, 32+ bytes")}
	acfg.LoginSecrets = []store.LoginSecret{secret, secret2}
	admin2, err := store.OpenAdmin(t.Context(), acfg)
	require.NoError(t, err)
	defer admin2.Close()
	n, err := admin2.RotateLogins(t.Context(), 0)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	_, err = pgx.Connect(t.Context(), dbURL(t, scram, dbG, roleG, oldPW))
	require.Error(t, err, "the old password no longer works")
	cfg2, err := store.ParseConfig(platform(t, e.d), secret, secret2)
	require.NoError(t, err)
	require.NoError(t, cfg2.AddCluster("scram", scram.AdminURL()))
	db2, err := store.Open(t.Context(), cfg2)
	require.NoError(t, err)
	defer db2.Close()
	for _, ctx := range []context.Context{ctxG, ctxE} {
		_, err = db2.Exec(ctx, `SELECT 1`)
		require.NoError(t, err, "a DB with the new secret connects")
	}
}

// A database that already has a new tenant's name (left over, or another
// control plane's) is neither adopted nor dropped.
func TestCreateWithDatabaseRefusesAnExistingDatabase(t *testing.T) {
	e := newPlacedEnv(t, placementCase{store.ModeTenantLogin, tenant.TierEnterprise})
	id := freshID("taken")
	name := pgx.Identifier{ownDatabaseOf(e.d, id)}.Sanitize()
	e.d.Exec(t, `CREATE DATABASE `+name)
	err := e.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Taken", Tier: tenant.TierEnterprise})
	require.ErrorIs(t, err, store.ErrTenantExists)
	assert.Contains(t, err.Error(), "exists on the cluster already")
	var still bool
	require.NoError(t, superuser(t, e.d).QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, ownDatabaseOf(e.d, id)).Scan(&still))
	assert.True(t, still, "the existing database is left alone")
	_, err = e.admin.Tenant(t.Context(), id)
	assert.ErrorIs(t, err, store.ErrUnknownTenant, "nothing recorded")
}

// An operator grants B's login everything on A's database by mistake:
// B connects, and row level security still shows it none of A's rows,
// and says why.
func TestMistakenGrantOnATenantDatabaseDoesNotLeak(t *testing.T) {
	e := newPlacedEnv(t, placementCase{store.ModeTenantLogin, tenant.TierEnterprise})
	idA, ctxA := e.newTenant(t, "mga")
	idB, _ := e.newTenant(t, "mgb")
	e.insertReq(t, ctxA, "REQ-A", "CANARY-A")
	roleB, _, err := store.LoginOf(t.Context(), e.admin, idB)
	require.NoError(t, err)
	dbA := ownDatabaseOf(e.d, idA)
	cfg, err := pgx.ParseConfig(e.d.AdminURL())
	require.NoError(t, err)
	cfg.Database = dbA
	c, err := pgx.ConnectConfig(t.Context(), cfg)
	require.NoError(t, err)
	defer c.Close(context.Background())
	rb, schemaA := pgx.Identifier{roleB}.Sanitize(), pgx.Identifier{idA.SchemaName()}.Sanitize()
	for _, sql := range []string{
		`GRANT CONNECT ON DATABASE ` + pgx.Identifier{dbA}.Sanitize() + ` TO ` + rb,
		`GRANT USAGE ON SCHEMA ` + schemaA + `, tenancy TO ` + rb,
		`GRANT SELECT ON ALL TABLES IN SCHEMA ` + schemaA + ` TO ` + rb,
		`GRANT EXECUTE ON FUNCTION tenancy.no_tenant(text) TO ` + rb,
	} {
		_, err := c.Exec(t.Context(), sql)
		require.NoError(t, err, sql)
	}
	b, err := loginTo(t, e, e.d, idB, dbA)
	require.NoError(t, err, "the mistaken grant lets B connect")
	var n int
	err = b.QueryRow(t.Context(), `SELECT count(*) FROM `+schemaA+`.requirements`).Scan(&n)
	require.Error(t, err, "B read A's table")
	assert.Contains(t, err.Error(), "no tenant", "the policy of A's table refuses B's session: %v", err)
}

// In the shared-pool mode, a call for an ID the directory has not placed
// fails as unknown and leaves nothing cached: once the ID is created as
// an enterprise tenant, its calls reach its own database.
func TestSharedPoolDoesNotCacheAnUnplacedTenant(t *testing.T) {
	e := newPlacedEnv(t, placementCase{store.ModeSharedPool, tenant.TierEnterprise})
	id := freshID("later")
	ctx := tenant.NewContext(t.Context(), id)
	_, err := e.db.Exec(ctx, `SELECT 1`)
	require.ErrorIs(t, err, store.ErrUnknownTenant)
	require.NoError(t, e.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Later", Tier: tenant.TierEnterprise}))
	var db string
	require.NoError(t, e.db.QueryRow(ctx, `SELECT current_database()`).Scan(&db))
	assert.Equal(t, ownDatabaseOf(e.d, id), db, "served from its own database")
}

// Cluster names are checked where they enter: AddCluster on both sides,
// and maps filled by hand at OpenAdmin and Open.
func TestClusterNamesAreChecked(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	for _, name := range []string{"", "Gov", "gov east", "gov-east", "1gov", "gov;drop", strings.Repeat("g", 64)} {
		acfg := adminConfig(t, e.d, platform(t, e.d), store.ModeTenantLogin)
		err := acfg.AddCluster(name, e.d.AdminURL())
		require.ErrorIs(t, err, store.ErrInvalidConfig, "AdminConfig.AddCluster(%q)", name)
		assert.Contains(t, err.Error(), "must match")
		cfg, err := store.ParseConfig(platform(t, e.d), secret)
		require.NoError(t, err)
		require.ErrorIs(t, cfg.AddCluster(name, e.d.AdminURL()), store.ErrInvalidConfig, "Config.AddCluster(%q)", name)
	}
	acfg := adminConfig(t, e.d, platform(t, e.d), store.ModeTenantLogin)
	require.ErrorIs(t, acfg.AddCluster("gov", "postgres://%zz"), store.ErrInvalidConfig, "a bad connection string")

	acfg.Clusters = map[string]*pgxpool.Config{"Bad Name": acfg.Pool}
	_, err := store.OpenAdmin(t.Context(), acfg)
	require.ErrorIs(t, err, store.ErrInvalidConfig)
	assert.Contains(t, err.Error(), `AdminConfig.Clusters["Bad Name"]`)
	acfg.Clusters = map[string]*pgxpool.Config{"gov": nil}
	_, err = store.OpenAdmin(t.Context(), acfg)
	require.ErrorIs(t, err, store.ErrInvalidConfig, "a nil config")

	cfg, err := store.ParseConfig(platform(t, e.d), secret)
	require.NoError(t, err)
	cfg.Clusters = map[string]*pgxpool.Config{"gov": nil}
	_, err = store.Open(t.Context(), cfg)
	require.ErrorIs(t, err, store.ErrInvalidConfig)
	assert.Contains(t, err.Error(), `Config.Clusters["gov"]`)
}

// Creating, decommissioning and dropping standard tenants and tenants with
// databases of their own, many at once on an admin pool of 2: no step may
// hold a pool connection while it waits for another (the tenant's lock,
// CREATE and DROP DATABASE, a login's change).
func TestConcurrentCreateAndDropDoNotStarveTheAdminPool(t *testing.T) {
	d := databaseFor(t, store.ModeTenantLogin).NewDatabase(t)
	e := newEnvOn(t, d, store.ModeTenantLogin, func(a *store.AdminConfig, _ *store.Config) { a.Pool.MaxConns = 2 })
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	const n = 6
	ids := make([]tenant.ID, 2*n)
	errs := make(chan error, 2*n)
	var wg sync.WaitGroup
	for i := range ids {
		ids[i] = freshID("busy")
		tier := tenant.TierStandard
		if i%2 == 1 {
			tier = tenant.TierEnterprise
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- e.admin.CreateTenant(ctx, tenant.Info{ID: ids[i], Name: "Busy", Tier: tier})
		}()
	}
	wg.Wait()
	for range ids {
		require.NoError(t, <-errs, "create")
	}
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.admin.SetState(ctx, id, tenant.StateDecommissioning); err != nil {
				errs <- err
				return
			}
			errs <- e.admin.DropTenant(ctx, id)
		}()
	}
	wg.Wait()
	for range ids {
		require.NoError(t, <-errs, "drop")
	}
}
