package store_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var roleSeq atomic.Int64

// adminRole returns the name of the role behind the package's admin URL.
func adminRole(t testing.TB) string {
	conn, err := pgx.Connect(ctxT(t), pgtest.DB(t).AdminURL())
	require.NoError(t, err)
	defer conn.Close(ctxT(t))
	var name string
	require.NoError(t, conn.QueryRow(ctxT(t), `SELECT current_user`).Scan(&name))
	return name
}

func TestOpenRefusesUnsafeAppRole(t *testing.T) {
	d := pgtest.DB(t)
	// A tenant must exist so that there are tenant schemas to hold privileges on.
	db := newStore(t)
	id, _ := newTenant(t, db, "victim")
	schema := pgx.Identifier{id.SchemaName()}.Sanitize()
	rlsSuffix := uniqueName("")

	cases := []struct {
		name  string
		attrs string
		setup func(t *testing.T, role string) // as superuser, after the role exists
		want  string                          // fragment of the error
	}{
		{name: "Superuser", attrs: "SUPERUSER NOINHERIT", want: "superuser"},
		{name: "BypassRLS", attrs: "BYPASSRLS NOINHERIT", want: "BYPASSRLS"},
		{name: "CreateRole", attrs: "CREATEROLE NOINHERIT", want: "CREATEROLE"},
		{name: "Inherits", attrs: "INHERIT", want: "NOINHERIT"},
		{name: "Replication", attrs: "REPLICATION NOINHERIT", want: "REPLICATION"},
		{name: "ReadAllData", attrs: "NOINHERIT", want: "member of pg_read_all_data",
			setup: func(t *testing.T, role string) { d.Exec(t, `GRANT pg_read_all_data TO `+role) }},
		{name: "WriteAllData", attrs: "NOINHERIT", want: "member of pg_write_all_data",
			setup: func(t *testing.T, role string) { d.Exec(t, `GRANT pg_write_all_data TO `+role) }},
		{name: "ServerProgram", attrs: "NOINHERIT", want: "member of pg_execute_server_program",
			setup: func(t *testing.T, role string) { d.Exec(t, `GRANT pg_execute_server_program TO `+role) }},
		{name: "ServerFiles", attrs: "NOINHERIT", want: "member of pg_read_server_files",
			setup: func(t *testing.T, role string) { d.Exec(t, `GRANT pg_read_server_files TO `+role) }},
		{name: "MemberOfAdmin", attrs: "NOINHERIT", want: "member of the admin role",
			setup: func(t *testing.T, role string) {
				d.Exec(t, `GRANT `+pgx.Identifier{adminRole(t)}.Sanitize()+` TO `+role)
			}},
		{name: "PrivilegeOnTenantSchema", attrs: "NOINHERIT", want: "holds privileges on schema " + id.SchemaName(),
			setup: func(t *testing.T, role string) { d.Exec(t, `GRANT USAGE ON SCHEMA `+schema+` TO `+role) }},
		{name: "OwnsTenantSchema", attrs: "NOINHERIT", want: "owns schema tenant_",
			setup: func(t *testing.T, role string) {
				d.Exec(t, `CREATE SCHEMA tenant_owned`+role[len(d.Prefix()):]+` AUTHORIZATION `+role)
			}},
		{name: "OwnsTableInTenantSchema", attrs: "NOINHERIT", want: "owns " + id.SchemaName() + ".stray",
			setup: func(t *testing.T, role string) {
				d.Exec(t, `CREATE TABLE `+schema+`.stray (x int)`)
				d.Exec(t, `ALTER TABLE `+schema+`.stray OWNER TO `+role)
			}},
		{name: "OwnsRLSTable", attrs: "NOINHERIT", want: "owns public.rlsowned" + rlsSuffix,
			setup: func(t *testing.T, role string) {
				d.Exec(t, `CREATE TABLE public.rlsowned`+rlsSuffix+` (x int)`)
				d.Exec(t, `ALTER TABLE public.rlsowned`+rlsSuffix+` ENABLE ROW LEVEL SECURITY`)
				d.Exec(t, `ALTER TABLE public.rlsowned`+rlsSuffix+` OWNER TO `+role)
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := fmt.Sprintf("unsafe%d", roleSeq.Add(1))
			url := d.CreateRole(t, name, c.attrs)
			if c.setup != nil {
				c.setup(t, d.Prefix()+name)
			}
			cfg, err := store.ParseConfig(url, d.AdminURL())
			require.NoError(t, err)
			cfg.RolePrefix = d.Prefix()
			db, err := store.OpenConfig(ctxT(t), cfg)
			if err == nil {
				db.Close()
			}
			require.ErrorIs(t, err, store.ErrUnsafeAppRole)
			assert.Contains(t, err.Error(), c.want)
			assert.Contains(t, err.Error(), "fix:", "the error says how to fix it")
		})
	}
	t.Run("SameAsAdmin", func(t *testing.T) {
		_, err := store.Open(ctxT(t), d.AdminURL(), d.AdminURL())
		require.ErrorIs(t, err, store.ErrUnsafeAppRole)
		assert.Contains(t, err.Error(), "both the application and the admin role")
	})
	t.Run("SafeRoleOpens", func(t *testing.T) {
		url := d.CreateRole(t, fmt.Sprintf("safe%d", roleSeq.Add(1)), "NOINHERIT")
		cfg, err := store.ParseConfig(url, d.AdminURL())
		require.NoError(t, err)
		cfg.RolePrefix = d.Prefix()
		db, err := store.OpenConfig(ctxT(t), cfg)
		require.NoError(t, err)
		db.Close()
	})
}

func TestOpenRejectsBadConfig(t *testing.T) {
	d := pgtest.DB(t)
	for name, c := range map[string]struct {
		adjust func(*store.Config)
		want   string
	}{
		"RolePrefixUpper":     {func(c *store.Config) { c.RolePrefix = "Bad" }, "RolePrefix"},
		"RolePrefixQuote":     {func(c *store.Config) { c.RolePrefix = `x"; drop` }, "RolePrefix"},
		"RolePrefixLong":      {func(c *store.Config) { c.RolePrefix = strings.Repeat("a", 17) }, "RolePrefix"},
		"RolePrefixMismatch":  {func(c *store.Config) { c.RolePrefix = "other_" }, "was set up with"},
		"TableNameInjection":  {func(c *store.Config) { c.Tables = []store.Table{{Name: `x; drop table y`, Columns: "a int"}} }, "Name"},
		"TableNameUpper":      {func(c *store.Config) { c.Tables = []store.Table{{Name: "Reqs", Columns: "a int"}} }, "Name"},
		"TableNamePg":         {func(c *store.Config) { c.Tables = []store.Table{{Name: "pg_x", Columns: "a int"}} }, "pg_"},
		"TableNoColumns":      {func(c *store.Config) { c.Tables = []store.Table{{Name: "x", Columns: " "}} }, "Columns"},
		"TableColumnsTwoStmt": {func(c *store.Config) { c.Tables = []store.Table{{Name: "x", Columns: "a int); drop table y; --"}} }, "Columns"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := store.ParseConfig(appRole(t), d.AdminURL())
			require.NoError(t, err)
			cfg.RolePrefix = d.Prefix()
			c.adjust(cfg)
			db, err := store.OpenConfig(ctxT(t), cfg)
			if err == nil {
				db.Close()
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
	_, err := store.OpenConfig(ctxT(t), &store.Config{})
	assert.ErrorIs(t, err, store.ErrInvalidConfig)
	_, err = store.ParseConfig("postgres://%zz", d.AdminURL())
	assert.ErrorIs(t, err, store.ErrInvalidConfig)
}

var prefixSeq atomic.Int32

// Roles are cluster-wide. A role with the group role's name that tenancy
// did not make (another deployment's, perhaps one of its tenant roles:
// prefix "a" with tenant "xtenancy_tenants" is "atenant_xtenancy_tenants",
// the group role of prefix "atenant_x") must not be adopted.
func TestOpenRefusesAnUnmarkedRoleWithTheGroupRolesName(t *testing.T) {
	d := pgtest.DB(t)
	nd := d.NewDatabase(t)
	// RolePrefix has at most 16 bytes; the package prefix takes 12.
	prefix := fmt.Sprintf("%sg%d", d.Prefix(), prefixSeq.Add(1))
	group := pgx.Identifier{prefix + "tenancy_tenants"}.Sanitize()
	nd.Exec(t, `CREATE ROLE `+group+` NOLOGIN`)
	t.Cleanup(func() { d.Exec(t, `DROP ROLE IF EXISTS `+group) })

	cfg, err := store.ParseConfig(appRole(t), nd.AdminURL())
	require.NoError(t, err)
	cfg.RolePrefix = prefix
	_, err = store.OpenConfig(ctxT(t), cfg)
	require.ErrorIs(t, err, store.ErrInvalidConfig)
	require.ErrorContains(t, err, "choose another RolePrefix")

	// Opening twice with a role tenancy made itself is fine.
	other := d.NewDatabase(t)
	cfg2, err := store.ParseConfig(appRole(t), other.AdminURL())
	require.NoError(t, err)
	cfg2.RolePrefix = fmt.Sprintf("%sh%d", d.Prefix(), prefixSeq.Add(1))
	for range 2 {
		db, err := store.OpenConfig(ctxT(t), cfg2)
		require.NoError(t, err)
		db.Close()
	}
}
