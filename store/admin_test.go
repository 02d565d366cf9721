package store_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

var adminSeq atomic.Int64

// ownedDatabase returns a new database owned by a new CREATEROLE login
// (not a superuser), and that login's connection string on it.
func ownedDatabase(t *testing.T) (*pgtest.Database, string) {
	t.Helper()
	base := pgtest.DB(t)
	name := fmt.Sprintf("adm%d", adminSeq.Add(1))
	url := base.CreateRole(t, name, "CREATEROLE")
	d := base.NewDatabase(t)
	d.Exec(t, `ALTER DATABASE `+pgx.Identifier{d.Name()}.Sanitize()+` OWNER TO `+pgx.Identifier{base.Prefix() + name}.Sanitize())
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	return d, d.URL(cfg.User, cfg.Password)
}

// TestLeastPrivilegeAdmin runs the admin side as a role with CREATEROLE
// that owns the database, not a superuser: everything works, and the
// shared-pool mode, whose safety needs set_config revoked (which only a
// superuser can), refuses to start until a superuser has done it.
func TestLeastPrivilegeAdmin(t *testing.T) {
	t.Run("tenant-login", func(t *testing.T) {
		d, adminURL := ownedDatabase(t)
		e := newEnvOn(t, d, store.ModeTenantLogin, func(a *store.AdminConfig, c *store.Config) {
			p, err := store.ParseAdminConfig(adminURL)
			require.NoError(t, err)
			a.Pool = p.Pool
			pc, err := store.ParseConfig(platform(t, d), secret)
			require.NoError(t, err)
			c.Platform = pc.Platform
			c.MaxConns, c.MinResidency = 1, 0
		})
		idA, ctxA := e.newTenant(t, "lpa")
		_, ctxB := e.newTenant(t, "lpb")
		e.insertReq(t, ctxA, "REQ-A", "a")
		e.insertReq(t, ctxB, "REQ-B", "b")
		got, err := reqIDs(t, e.db, ctxA, `SELECT req_id FROM requirements`)
		require.NoError(t, err)
		assert.Equal(t, []string{"REQ-A"}, got)

		require.NoError(t, e.admin.SetState(t.Context(), idA, tenant.StateSuspended))
		_, err = e.db.Exec(ctxB, `SELECT 1`) // takes the one connection
		require.NoError(t, err)
		_, err = e.db.Exec(ctxA, `SELECT 1`)
		require.Error(t, err, "suspended")
		require.NoError(t, e.admin.SetState(t.Context(), idA, tenant.StateActive))
		_, err = e.db.Exec(ctxA, `SELECT 1`)
		require.NoError(t, err)

		// The admin owns the tenant tables, and FORCE ROW LEVEL SECURITY
		// holds it to the policy: a session that is not the tenant's gets
		// an error, even where the table has no row.
		ac, err := pgx.Connect(t.Context(), adminURL)
		require.NoError(t, err)
		defer ac.Close(t.Context())
		idEmpty, _ := e.newTenant(t, "lpempty")
		for _, id := range []tenant.ID{idA, idEmpty} {
			_, err = ac.Exec(t.Context(), `SELECT * FROM `+pgx.Identifier{id.SchemaName(), "requirements"}.Sanitize())
			require.Error(t, err, "tenant %s", id)
			assert.Contains(t, err.Error(), "no tenant")
		}

		drift, err := e.admin.RepairLogins(t.Context())
		require.NoError(t, err)
		assert.Empty(t, drift)
		require.NoError(t, e.admin.SetState(t.Context(), idA, tenant.StateDecommissioning))
		require.NoError(t, e.admin.DropTenant(t.Context(), idA))
		_, err = e.db.Exec(ctxB, `SELECT 1`)
		require.NoError(t, err, "the other tenant is untouched")
	})
	t.Run("shared-pool", func(t *testing.T) {
		d, adminURL := ownedDatabase(t)
		acfg, err := store.ParseAdminConfig(adminURL)
		require.NoError(t, err)
		acfg.Mode, acfg.RolePrefix, acfg.LoginSecrets = store.ModeSharedPool, d.Prefix(), []store.LoginSecret{secret}
		pc, err := pgx.ParseConfig(platform(t, d))
		require.NoError(t, err)
		acfg.PlatformRole = pc.User
		_, err = store.OpenAdmin(t.Context(), acfg)
		require.ErrorIs(t, err, store.ErrUnsafeAppRole)
		assert.Contains(t, err.Error(), "REVOKE EXECUTE ON FUNCTION pg_catalog.set_config")
		d.Exec(t, `REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC`)
		a, err := store.OpenAdmin(t.Context(), acfg)
		require.NoError(t, err, "after the superuser's REVOKE")
		a.Close()
	})
}

func TestChangingThePlatformRoleRevokesTheOldOne(t *testing.T) {
	base := pgtest.DB(t)
	d := base.NewDatabase(t)
	n := adminSeq.Add(1)
	oldURL := base.CreateRole(t, fmt.Sprintf("oldplat%d", n), "")
	newURL := base.CreateRole(t, fmt.Sprintf("newplat%d", n), "")
	open := func(url string) (*store.Admin, string) {
		c, err := pgx.ParseConfig(url)
		require.NoError(t, err)
		acfg, err := store.ParseAdminConfig(d.AdminURL())
		require.NoError(t, err)
		acfg.RolePrefix, acfg.LoginSecrets, acfg.PlatformRole = d.Prefix(), []store.LoginSecret{secret}, c.User
		a, err := store.OpenAdmin(t.Context(), acfg)
		require.NoError(t, err)
		t.Cleanup(a.Close)
		return a, d.URL(c.User, c.Password)
	}
	_, oldOnD := open(oldURL)
	cfg, err := store.ParseConfig(oldOnD, secret)
	require.NoError(t, err)
	db, err := store.Open(t.Context(), cfg)
	require.NoError(t, err, "the platform role works")
	db.Close()

	_, newOnD := open(newURL)
	_, err = store.Open(t.Context(), cfg)
	require.Error(t, err, "the old platform role lost CONNECT and its reads")
	cfg2, err := store.ParseConfig(newOnD, secret)
	require.NoError(t, err)
	db2, err := store.Open(t.Context(), cfg2)
	require.NoError(t, err, "the new one works")
	db2.Close()
}
