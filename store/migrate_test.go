package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Migration files of the tests.
const (
	// migDocs creates the table docs, secured by store.
	migDocs = `CREATE TABLE docs (
		tenant_id text NOT NULL,
		doc_id    int PRIMARY KEY,
		body      text NOT NULL);`
	// migDocsTag adds a column to docs.
	migDocsTag = `ALTER TABLE docs ADD COLUMN tag text NOT NULL DEFAULT 'none';`
	// migPoison fails where the tenant has the requirement 'poison', and
	// otherwise adds a column (rolled back where it fails).
	migPoison = `ALTER TABLE docs ADD COLUMN poisoned boolean;
		DO $$ BEGIN
		  IF EXISTS (SELECT 1 FROM requirements WHERE req_id = 'poison') THEN RAISE EXCEPTION 'poison'; END IF;
		END $$;`
	// migTags creates the table tags, with a sequence.
	migTags = `CREATE TABLE tags (tenant_id text NOT NULL, tag text PRIMARY KEY, n serial);`
)

// migFS is a migration FS of the given files (name, SQL, name, SQL, ...).
func migFS(files ...string) fstest.MapFS {
	m := fstest.MapFS{}
	for i := 0; i+1 < len(files); i += 2 {
		m[files[i]] = &fstest.MapFile{Data: []byte(files[i+1])}
	}
	return m
}

// withMigrations sets AdminConfig.Migrations.
func withMigrations(fsys fs.FS) func(*store.AdminConfig, *store.Config) {
	return func(a *store.AdminConfig, _ *store.Config) { a.Migrations = fsys }
}

// migEnv opens an env of mode m on a database of its own (migrations are
// recorded per database) with the migrations of fsys.
func migEnv(t testing.TB, m store.Mode, fsys fs.FS, adjust ...func(*store.AdminConfig, *store.Config)) *env {
	t.Helper()
	return newEnvOn(t, pgtest.DB(t).NewDatabase(t), m, append([]func(*store.AdminConfig, *store.Config){withMigrations(fsys)}, adjust...)...)
}

// reopen opens another env on e's database, with the migrations of fsys.
func reopen(t testing.TB, e *env, fsys fs.FS) *env {
	t.Helper()
	return newEnvOn(t, e.d, e.mode, withMigrations(fsys))
}

// migAdminConfig is the AdminConfig of the envs of database d in mode m,
// with the migrations of fsys.
func migAdminConfig(t testing.TB, d *pgtest.Database, m store.Mode, fsys fs.FS) *store.AdminConfig {
	t.Helper()
	acfg := adminConfig(t, d, platform(t, d), m)
	acfg.Migrations = fsys
	return acfg
}

// openAdmin opens an Admin with cfg, closed when the test ends.
func openAdmin(t testing.TB, cfg *store.AdminConfig) (*store.Admin, error) {
	t.Helper()
	a, err := store.OpenAdmin(t.Context(), cfg)
	if err == nil {
		t.Cleanup(a.Close)
	}
	return a, err
}

// createTenants creates standard-tier tenants with fresh IDs starting
// with name, four at a time, and returns them in ID order.
func createTenants(t testing.TB, admin *store.Admin, name string, n int) []tenant.ID {
	t.Helper()
	ids := make([]tenant.ID, n)
	for i := range ids {
		ids[i] = freshID(name)
	}
	var next atomic.Int64
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range min(4, n) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				errs <- admin.CreateTenant(context.Background(), tenant.Info{ID: ids[i], Name: "Tenant " + name, Tier: tenant.TierStandard})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	sortIDs(ids)
	return ids
}

func sortIDs(ids []tenant.ID) {
	slices.SortFunc(ids, func(x, y tenant.ID) int { return strings.Compare(x.String(), y.String()) })
}

// ledger returns the versions the control plane records for id.
func ledger(t testing.TB, c *pgx.Conn, id tenant.ID) []int {
	t.Helper()
	rows, err := c.Query(t.Context(), `SELECT version FROM tenancy.tenant_migrations WHERE tenant_id = $1 ORDER BY 1`, id.String())
	require.NoError(t, err)
	v, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	return v
}

// requireSecured checks that table of schema has row level security
// enabled and forced and the isolation policy, and no other permissive one.
func requireSecured(t testing.TB, c *pgx.Conn, schema, table string) {
	t.Helper()
	var rls, force bool
	var policies []string
	require.NoError(t, c.QueryRow(t.Context(), `SELECT c.relrowsecurity, c.relforcerowsecurity,
			ARRAY(SELECT policyname::text FROM pg_policies p WHERE p.schemaname = $1 AND p.tablename = $2 AND p.permissive = 'PERMISSIVE' ORDER BY 1)
		FROM pg_class c WHERE c.oid = (quote_ident($1) || '.' || quote_ident($2))::regclass`, schema, table).Scan(&rls, &force, &policies))
	require.True(t, rls, "%s.%s: row level security enabled", schema, table)
	require.True(t, force, "%s.%s: row level security forced", schema, table)
	require.Equal(t, []string{"tenancy_isolation"}, policies, "%s.%s: policies", schema, table)
}

// exists reports whether relation schema.name exists.
func exists(t testing.TB, c *pgx.Conn, schema, name string) bool {
	t.Helper()
	var ok bool
	require.NoError(t, c.QueryRow(t.Context(), `SELECT to_regclass(quote_ident($1) || '.' || quote_ident($2)) IS NOT NULL`, schema, name).Scan(&ok))
	return ok
}

func TestNewTenantGetsEveryMigration(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			fsys := migFS("0001_docs.sql", migDocs, "0005_docs_tag.sql", migDocsTag)
			e := migEnv(t, m, fsys)
			c := superuser(t, e.d)
			a, ctxA := e.newTenant(t, "mignew")
			_, ctxB := e.newTenant(t, "mignew")

			require.Equal(t, []int{1, 5}, ledger(t, c, a))
			requireSecured(t, c, a.SchemaName(), "docs")
			_, err := e.db.Exec(ctxA, `INSERT INTO docs (doc_id, body) VALUES (1, 'hello')`)
			require.NoError(t, err)
			var owner, tag string
			require.NoError(t, e.db.QueryRow(ctxA, `SELECT tenant_id, tag FROM docs WHERE doc_id = 1`).Scan(&owner, &tag))
			require.Equal(t, a.String(), owner, "tenant_id defaults to the tenant")
			require.Equal(t, "none", tag)
			require.Zero(t, count(t, c, `SELECT count(*) FROM `+pgx.Identifier{a.SchemaName(), "docs"}.Sanitize()+` WHERE tenant_id <> $1`, a.String()))
			n := -1
			require.NoError(t, e.db.QueryRow(ctxB, `SELECT count(*) FROM docs`).Scan(&n))
			require.Zero(t, n)

			// The control plane records each file with its checksum.
			rows, err := c.Query(t.Context(), `SELECT version, name, checksum FROM tenancy.migrations ORDER BY 1`)
			require.NoError(t, err)
			type rec struct {
				Version  int
				Name     string
				Checksum []byte
			}
			recs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[rec])
			require.NoError(t, err)
			s1, s5 := sha256.Sum256([]byte(migDocs)), sha256.Sum256([]byte(migDocsTag))
			require.Equal(t, []rec{{1, "docs", s1[:]}, {5, "docs_tag", s5[:]}}, recs)

			// Nothing to do for a tenant created with every migration.
			rep, err := e.admin.Migrate(t.Context(), store.MigrateOptions{})
			require.NoError(t, err)
			require.Zero(t, rep.Total)
		})
	}
}

func TestMigrateAppliesToEveryTenant(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			v1 := migFS("0001_docs.sql", migDocs)
			e := migEnv(t, m, v1)
			c := superuser(t, e.d)
			ids := createTenants(t, e.admin, "migall", 5)

			v2 := migFS("0001_docs.sql", migDocs, "0002_tags.sql", migTags, "0003_docs_tag.sql", migDocsTag)
			e2 := reopen(t, e, v2)
			rep, err := e2.admin.Migrate(t.Context(), store.MigrateOptions{Parallelism: 2})
			require.NoError(t, err)
			require.Equal(t, 5, rep.Total)
			require.Equal(t, ids, rep.Migrated)
			require.Empty(t, rep.Failed)
			require.Empty(t, rep.Pending)
			require.NoError(t, rep.Stopped)
			for _, id := range ids {
				require.Equal(t, []int{1, 2, 3}, ledger(t, c, id), id)
				requireSecured(t, c, id.SchemaName(), "tags")
				requireSecured(t, c, id.SchemaName(), "docs")
			}

			// Rows of tenant A in a table made by a migration are not
			// tenant B's.
			ctxA, ctxB := tenant.NewContext(t.Context(), ids[0]), tenant.NewContext(t.Context(), ids[1])
			// (n takes the next value of a sequence made by the migration.)
			_, err = e2.db.Exec(ctxA, `INSERT INTO tags (tag) VALUES ('a-only')`)
			require.NoError(t, err)
			_, err = e2.db.Exec(ctxB, `INSERT INTO tags (tag) VALUES ('b-only')`)
			require.NoError(t, err)
			got, err := reqIDs(t, e2.db, ctxA, `SELECT tag FROM tags`)
			require.NoError(t, err)
			require.Equal(t, []string{"a-only"}, got)
			got, err = reqIDs(t, e2.db, ctxB, `SELECT tag FROM tags`)
			require.NoError(t, err)
			require.Equal(t, []string{"b-only"}, got)
			// A row naming another tenant is refused by the policy.
			_, err = e2.db.Exec(ctxA, `INSERT INTO tags (tenant_id, tag) VALUES ($1, 'forged')`, ids[1].String())
			require.Error(t, err)
			require.Equal(t, "42501", pgCode(err))

			// Run again: nothing to do.
			rep, err = e2.admin.Migrate(t.Context(), store.MigrateOptions{})
			require.NoError(t, err)
			require.Zero(t, rep.Total)
			require.Empty(t, rep.Migrated)
		})
	}
}

func TestChangedMigrationFailsOpenAdmin(t *testing.T) {
	d := pgtest.DB(t).NewDatabase(t)
	m := store.ModeTenantLogin
	v := migFS("0001_docs.sql", migDocs, "0003_tags.sql", migTags)
	_, err := openAdmin(t, migAdminConfig(t, d, m, v))
	require.NoError(t, err)

	for _, tc := range []struct {
		name string
		fsys fs.FS
		want []string
	}{
		{"changed", migFS("0001_docs.sql", migDocs, "0003_tags.sql", migTags+"\n-- edited"), []string{"version 3", "0003_tags.sql"}},
		{"removed", migFS("0001_docs.sql", migDocs), []string{"version 3", `"tags"`, "missing"}},
		{"nil", nil, []string{"version 1", `"docs"`, "version 3"}},
		{"inserted below the newest", migFS("0001_docs.sql", migDocs, "0002_x.sql", migDocsTag, "0003_tags.sql", migTags), []string{"version 2", "0002_x.sql", "above 3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := openAdmin(t, migAdminConfig(t, d, m, tc.fsys))
			require.ErrorIs(t, err, store.ErrMigrationChanged)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
	// The same content under another name is the same migration; a new
	// version above the newest is recorded.
	_, err = openAdmin(t, migAdminConfig(t, d, m, migFS("0001_docs.sql", migDocs, "3_tags_renamed.sql", migTags, "0004_docs_tag.sql", migDocsTag)))
	require.NoError(t, err)
	c := superuser(t, d)
	require.Equal(t, 3, count(t, c, `SELECT count(*) FROM tenancy.migrations`))
}

func TestMigrationFilesAreCheckedNamingTheFile(t *testing.T) {
	d := pgtest.DB(t)
	for _, tc := range []struct {
		name string
		fsys fs.FS
		want string
	}{
		{"other file", migFS("0001_docs.sql", migDocs, "README.md", "hello"), `"README.md" is not a migration file`},
		{"no name", migFS("0001.sql", migDocs), `"0001.sql" is not a migration file`},
		{"upper-case suffix", migFS("0001_docs.SQL", migDocs), `"0001_docs.SQL"`},
		{"version 0", migFS("0000_docs.sql", migDocs), `"0000_docs.sql": the version must be greater than 0`},
		{"same version", migFS("0001_docs.sql", migDocs, "1_tags.sql", migTags), `"0001_docs.sql" and "1_tags.sql" have the same version 1`},
		{"directory", migFS("0001_docs.sql", migDocs, "sub/0002_tags.sql", migTags), `"sub" is a directory`},
		{"NUL", migFS("0001_docs.sql", "SELECT 1;\x00DROP TABLE x"), `"0001_docs.sql" must be UTF-8 text without NUL`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := openAdmin(t, migAdminConfig(t, d, store.ModeTenantLogin, tc.fsys))
			require.ErrorIs(t, err, store.ErrInvalidConfig)
			require.Contains(t, err.Error(), "AdminConfig.Migrations")
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

// poison plants the requirement that makes migPoison fail, as tenant id.
func poison(t testing.TB, e *env, id tenant.ID) {
	t.Helper()
	e.insertReq(t, tenant.NewContext(t.Context(), id), "poison", "makes migration 2 fail")
}

func TestMigrateFailureIsIsolatedToItsTenant(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			e := migEnv(t, m, migFS("0001_docs.sql", migDocs))
			c := superuser(t, e.d)
			ids := createTenants(t, e.admin, "migfail", 3)
			bad := ids[1]
			poison(t, e, bad)

			v2 := migFS("0001_docs.sql", migDocs, "0002_poison.sql", migPoison, "0003_tags.sql", migTags)
			e2 := reopen(t, e, v2)
			rep, err := e2.admin.Migrate(t.Context(), store.MigrateOptions{})
			require.ErrorIs(t, err, store.ErrMigrationFailed)
			require.Contains(t, err.Error(), bad.String())
			require.Equal(t, 3, rep.Total)
			require.Equal(t, []tenant.ID{ids[0], ids[2]}, rep.Migrated)
			require.Len(t, rep.Failed, 1)
			f := rep.Failed[0]
			require.Equal(t, bad, f.Tenant)
			require.Equal(t, 2, f.Version)
			require.Equal(t, "0002_poison.sql", f.File)
			require.ErrorContains(t, f.Err, "poison")
			require.Empty(t, rep.Pending)

			require.Equal(t, []int{1, 2, 3}, ledger(t, c, ids[0]))
			require.Equal(t, []int{1, 2, 3}, ledger(t, c, ids[2]))
			require.Equal(t, []int{1}, ledger(t, c, bad), "the failed migration and the later ones are not recorded")
			require.Zero(t, count(t, c, `SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'docs' AND column_name = 'poisoned'`, bad.SchemaName()),
				"the failed migration was rolled back")
			require.False(t, exists(t, c, bad.SchemaName(), "tags"), "the later migration was not tried")

			// Fix the data, run again: it completes.
			_, err = e2.db.Exec(tenant.NewContext(t.Context(), bad), `DELETE FROM requirements WHERE req_id = 'poison'`)
			require.NoError(t, err)
			rep, err = e2.admin.Migrate(t.Context(), store.MigrateOptions{})
			require.NoError(t, err)
			require.Equal(t, 1, rep.Total)
			require.Equal(t, []tenant.ID{bad}, rep.Migrated)
			require.Equal(t, []int{1, 2, 3}, ledger(t, c, bad))
			requireSecured(t, c, bad.SchemaName(), "tags")
		})
	}
}

// marker is the first statement of every migration of the fail-closed
// tests: a table that exists afterwards only if the migration committed.
const marker = `CREATE TABLE marker (tenant_id text NOT NULL); `

func TestMigrationFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		sql  string
		want string // in the error; "" when the migration succeeds
	}{
		{name: "table without tenant_id", sql: `CREATE TABLE bare (id int PRIMARY KEY);`,
			want: `table "bare" has no tenant_id column`},
		{name: "tenant_id not text", sql: `CREATE TABLE numbered (tenant_id int NOT NULL);`,
			want: `table "numbered": tenant_id must be text NOT NULL`},
		{name: "tenant_id nullable", sql: `CREATE TABLE loose (tenant_id text);`,
			want: `table "loose": tenant_id must be text NOT NULL`},
		{name: "materialized view", sql: `CREATE MATERIALIZED VIEW mv AS SELECT req_id FROM requirements;`,
			want: `materialized view "mv"`},
		{name: "view without security_invoker", sql: `CREATE VIEW v AS SELECT req_id FROM requirements;`,
			want: `view "v" reads with its owner's privileges`},
		{name: "foreign table", sql: `CREATE FOREIGN DATA WRAPPER migtest_fdw; CREATE SERVER migtest_srv FOREIGN DATA WRAPPER migtest_fdw;
			CREATE FOREIGN TABLE ft (tenant_id text NOT NULL) SERVER migtest_srv;`,
			want: `foreign table "ft"`},
		{name: "security definer function", sql: `CREATE FUNCTION peek() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS 'SELECT count(*) FROM requirements';`,
			want: `is SECURITY DEFINER`},
		{name: "permissive policy", sql: `CREATE POLICY open ON requirements USING (true);`,
			want: `permissive policy "open"`},
		{name: "rule", sql: `CREATE TABLE copies (tenant_id text NOT NULL, req_id text);
			CREATE RULE copy AS ON INSERT TO requirements DO ALSO INSERT INTO copies VALUES (NEW.tenant_id, NEW.req_id);`,
			want: `rule "copy"`},
		{name: "owner", sql: `DO $$ BEGIN EXECUTE format('ALTER TABLE requirements OWNER TO %I', (SELECT value FROM tenancy.meta WHERE key = 'platform_role')); END $$;`,
			want: `"requirements" is owned by`},
		{name: "schema privilege", sql: `DO $$ BEGIN EXECUTE format('GRANT CREATE ON SCHEMA %I TO PUBLIC', current_schema()); END $$;`,
			want: `grants PUBLIC CREATE`},
		{name: "role left changed", sql: `DO $$ BEGIN EXECUTE format('SET ROLE %I', (SELECT value FROM tenancy.meta WHERE key = 'platform_role')); END $$;`,
			want: `changed the role`},
		// What store secures instead of refusing.
		{name: "table without row level security", sql: `CREATE TABLE plain (tenant_id text NOT NULL, x int);`},
		{name: "isolation undone", sql: `ALTER TABLE requirements NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY, ALTER COLUMN tenant_id DROP DEFAULT;
			DROP POLICY tenancy_isolation ON requirements;`},
		{name: "restrictive policy", sql: `CREATE POLICY narrow ON requirements AS RESTRICTIVE USING (status <> 'HIDDEN');`},
		{name: "view with security_invoker", sql: `CREATE VIEW v WITH (security_invoker = true) AS SELECT req_id FROM requirements;`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := migEnv(t, store.ModeTenantLogin, migFS("0001_docs.sql", migDocs))
			c := superuser(t, e.d)
			var version int
			require.NoError(t, c.QueryRow(t.Context(), `SELECT current_setting('server_version_num')::int`).Scan(&version))
			if strings.Contains(tc.sql, "security_invoker") && version < 150000 {
				t.Skip("security_invoker needs PostgreSQL 15")
			}
			id, ctx := e.newTenant(t, "migclosed")
			schema := id.SchemaName()
			e2 := reopen(t, e, migFS("0001_docs.sql", migDocs, "0002_case.sql", marker+tc.sql))
			rep, err := e2.admin.Migrate(t.Context(), store.MigrateOptions{})
			if tc.want == "" {
				require.NoError(t, err)
				require.Equal(t, []tenant.ID{id}, rep.Migrated)
				require.Equal(t, []int{1, 2}, ledger(t, c, id))
				rows, err := c.Query(t.Context(), `SELECT relname::text FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind IN ('r', 'p') ORDER BY 1`, schema)
				require.NoError(t, err)
				tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
				require.NoError(t, err)
				for _, tbl := range tables {
					requireSecured(t, c, schema, tbl)
				}
				// Still usable, still isolated.
				e2.insertReq(t, ctx, "after", "written after the migration")
				_, other := e2.newTenant(t, "migclosed")
				got, err := reqIDs(t, e2.db, other, `SELECT req_id FROM requirements`)
				require.NoError(t, err)
				require.Empty(t, got)
				if exists(t, c, schema, "v") { // granted to the tenant, read with its policy
					got, err := reqIDs(t, e2.db, ctx, `SELECT req_id FROM v`)
					require.NoError(t, err)
					require.Equal(t, []string{"after"}, got)
				}
				return
			}
			require.ErrorIs(t, err, store.ErrMigrationFailed)
			require.Len(t, rep.Failed, 1)
			require.Equal(t, 2, rep.Failed[0].Version)
			require.ErrorContains(t, rep.Failed[0].Err, tc.want)
			require.Equal(t, []int{1}, ledger(t, c, id), "the tenant's ledger does not record the migration")
			require.False(t, exists(t, c, schema, "marker"), "nothing of the migration is left")
			requireSecured(t, c, schema, "requirements")
			// The admin's pooled connections are the admin's still.
			_, err = e2.admin.Migrate(t.Context(), store.MigrateOptions{})
			require.ErrorIs(t, err, store.ErrMigrationFailed)
		})
	}
}

func TestCreateTenantFailsClosedOnAMigration(t *testing.T) {
	e := migEnv(t, store.ModeTenantLogin, migFS("0001_docs.sql", migDocs, "0002_bare.sql", `CREATE TABLE bare (id int);`))
	c := superuser(t, e.d)
	id := freshID("migcreate")
	err := e.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Bare", Tier: tenant.TierStandard})
	require.ErrorContains(t, err, `migration 2 (0002_bare.sql)`)
	require.ErrorContains(t, err, `table "bare" has no tenant_id column`)
	_, err = e.admin.Tenant(t.Context(), id)
	require.ErrorIs(t, err, store.ErrUnknownTenant)
	require.Zero(t, count(t, c, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, id.SchemaName()))
}

// counters is a tenant table with sequences: a serial column's, and an
// identity column's.
var counters = store.Table{Name: "counters", Columns: `id serial PRIMARY KEY, n bigint GENERATED ALWAYS AS IDENTITY, label text`}

// migGrants makes a table with a sequence, a partitioned table and a view
// that reads with its reader's privileges.
const migGrants = migTags + `
	CREATE TABLE parts (tenant_id text NOT NULL, k int NOT NULL) PARTITION BY RANGE (k);
	CREATE TABLE parts_low PARTITION OF parts FOR VALUES FROM (0) TO (10);
	CREATE VIEW tag_names WITH (security_invoker = true) AS SELECT tag FROM tags;`

// TestCreateTenantGrantsEveryTableAndSequence checks that a new tenant's
// worker role has, on every relation of its schema, what GRANT ... ON ALL
// TABLES IN SCHEMA and ON ALL SEQUENCES IN SCHEMA gave it (SELECT,
// INSERT, UPDATE and DELETE on tables and views, USAGE and SELECT on
// sequences) and nothing else, with and without migrations.
func TestCreateTenantGrantsEveryTableAndSequence(t *testing.T) {
	for _, m := range modes {
		for _, tc := range []struct {
			name string
			fsys fs.FS
		}{{"no migrations", nil}, {"migrations", migFS("0001_docs.sql", migDocs, "0002_grants.sql", migGrants)}} {
			fsys := tc.fsys
			t.Run(string(m)+"/"+tc.name, func(t *testing.T) {
				e := migEnv(t, m, fsys, func(a *store.AdminConfig, _ *store.Config) { a.Tables = append(a.Tables, counters) })
				c := superuser(t, e.d)
				id, ctx := e.newTenant(t, "miggrant")
				worker, _, err := store.SharedLogin(e.admin)
				if m == store.ModeTenantLogin {
					worker, _, err = store.LoginOf(t.Context(), e.admin, id)
				}
				require.NoError(t, err)
				rows, err := c.Query(t.Context(), `SELECT c.relname::text || ' ' || c.relkind::text,
						COALESCE((SELECT string_agg(x.privilege_type, ', ' ORDER BY x.privilege_type)
						          FROM aclexplode(c.relacl) x WHERE x.grantee = $2::regrole), '')
					FROM pg_class c WHERE c.relnamespace = $1::regnamespace AND c.relkind NOT IN ('i', 'I', 't', 'c')
					ORDER BY 1`, id.SchemaName(), worker)
				require.NoError(t, err)
				got := map[string]string{}
				var rel, privs string
				_, err = pgx.ForEachRow(rows, []any{&rel, &privs}, func() error { got[rel] = privs; return nil })
				require.NoError(t, err)
				table, sequence := "DELETE, INSERT, SELECT, UPDATE", "SELECT, USAGE"
				want := map[string]string{
					"requirements r": table, "counters r": table, "counters_id_seq S": sequence, "counters_n_seq S": sequence,
				}
				if fsys != nil {
					for k, v := range map[string]string{
						"docs r": table, "tags r": table, "tags_n_seq S": sequence,
						"parts p": table, "parts_low r": table, "tag_names v": table,
					} {
						want[k] = v
					}
				}
				require.Equal(t, want, got)

				// The tenant uses them.
				_, err = e.db.Exec(ctx, `INSERT INTO counters (label) VALUES ('a')`)
				require.NoError(t, err)
				if fsys != nil {
					_, err = e.db.Exec(ctx, `INSERT INTO tags (tag) VALUES ('t1')`)
					require.NoError(t, err)
					_, err = e.db.Exec(ctx, `INSERT INTO parts (k) VALUES (1)`)
					require.NoError(t, err)
					tags, err := reqIDs(t, e.db, ctx, `SELECT tag FROM tag_names`)
					require.NoError(t, err)
					require.Equal(t, []string{"t1"}, tags)
				}
			})
		}
	}
}

// txControlFiles are migration files that control their transaction,
// with where OpenAdmin finds the statement.
var txControlFiles = []struct{ name, sql, want string }{
	{"commit", marker + `COMMIT;`, `line 1: statement "COMMIT"`},
	{"commit and begin", marker + "\nCOMMIT; BEGIN;", `line 2: statement "COMMIT"`},
	{"commit and chain", marker + "\n-- done ; now\ncommit and chain;", `line 3: statement "commit and chain"`},
	{"rollback to savepoint", marker + "SAVEPOINT s; ROLLBACK TO s;", `line 1: statement "SAVEPOINT s"`},
	{"end after a function", marker + "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;\nEND;", `line 2: statement "END"`},
	{"prepare transaction", marker + "PREPARE TRANSACTION 'x';", `line 1: statement "PREPARE TRANSACTION 'x'"`},
}

func TestMigrationControllingItsTransactionFailsOpenAdmin(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			e := migEnv(t, m, migFS("0001_docs.sql", migDocs))
			c := superuser(t, e.d)
			before, _ := e.newTenant(t, "migtxctl")
			for _, f := range txControlFiles {
				// On the database in use, as a new migration, and on a new
				// database, as the first.
				for _, fsys := range []fs.FS{
					migFS("0001_docs.sql", migDocs, "0002_bad.sql", f.sql),
					migFS("0001_bad.sql", f.sql),
				} {
					d := e.d
					if _, ok := fsys.(fstest.MapFS)["0001_bad.sql"]; ok {
						d = pgtest.DB(t).NewDatabase(t)
					}
					_, err := openAdmin(t, migAdminConfig(t, d, m, fsys))
					require.ErrorIs(t, err, store.ErrInvalidConfig, f.name)
					require.ErrorContains(t, err, "AdminConfig.Migrations: file \"", f.name)
					require.ErrorContains(t, err, "_bad.sql\", "+f.want, f.name)
					require.ErrorContains(t, err, "controls the transaction", f.name)
					dc := superuser(t, d)
					require.Zero(t, count(t, dc, `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\_%' AND nspname <> $1`, before.SchemaName()),
						"%s: no tenant schema was made", f.name)
					require.Zero(t, count(t, dc, `SELECT count(*) FROM pg_class WHERE relname = 'marker'`), "%s: nothing of the file ran", f.name)
				}
			}
			// The directory has the tenant made before, and the Admin that
			// was open goes on making whole tenants.
			after, _ := e.newTenant(t, "migtxctl")
			require.Equal(t, 2, count(t, c, `SELECT count(*) FROM tenancy.tenants`))
			require.Equal(t, 1, count(t, c, `SELECT count(*) FROM tenancy.migrations`), "the refused file was not recorded")
			for _, id := range []tenant.ID{before, after} {
				require.Equal(t, []int{1}, ledger(t, c, id))
				requireSecured(t, c, id.SchemaName(), "docs")
			}
		})
	}
}

// TestMigrationEndingItsTransactionFailsWhenRun checks the defense behind
// OpenAdmin's: a file that ends its transaction anyway (accepted here by a
// test hook) fails when it runs, and what it committed is secured again.
func TestMigrationEndingItsTransactionFailsWhenRun(t *testing.T) {
	for _, f := range txControlFiles[:2] {
		t.Run(f.name, func(t *testing.T) {
			e := migEnv(t, store.ModeTenantLogin, migFS("0001_docs.sql", migDocs))
			c := superuser(t, e.d)
			id, _ := e.newTenant(t, "migtxrun")
			restore := store.AllowTxControlInMigrations()
			e2 := reopen(t, e, migFS("0001_docs.sql", migDocs, "0002_case.sql", f.sql))
			restore()
			rep, err := e2.admin.Migrate(t.Context(), store.MigrateOptions{})
			require.ErrorIs(t, err, store.ErrMigrationFailed)
			require.Len(t, rep.Failed, 1)
			require.Equal(t, 2, rep.Failed[0].Version)
			require.ErrorContains(t, rep.Failed[0].Err, "ended the transaction")
			require.Equal(t, []int{1}, ledger(t, c, id), "the tenant's ledger does not record the migration")
			require.True(t, exists(t, c, id.SchemaName(), "marker"), "what the file committed stays")
			requireSecured(t, c, id.SchemaName(), "requirements")
			requireSecured(t, c, id.SchemaName(), "marker")
			// The admin's pooled connections are the admin's still.
			_, err = e2.admin.Migrate(t.Context(), store.MigrateOptions{})
			require.ErrorIs(t, err, store.ErrMigrationFailed)
		})
	}
}

func TestMigrateCanary(t *testing.T) {
	e := migEnv(t, store.ModeTenantLogin, migFS("0001_docs.sql", migDocs))
	c := superuser(t, e.d)
	ids := createTenants(t, e.admin, "migcanary", 6)
	poison(t, e, ids[1])
	e2 := reopen(t, e, migFS("0001_docs.sql", migDocs, "0002_poison.sql", migPoison))

	// A failure in the canary stops the run: the rest are not touched.
	called := false
	rep, err := e2.admin.Migrate(t.Context(), store.MigrateOptions{Canary: 3, AfterCanary: func(context.Context, []tenant.ID) error {
		called = true
		return nil
	}})
	require.ErrorIs(t, err, store.ErrMigrationFailed)
	require.False(t, called, "AfterCanary is not called after a failed canary")
	require.Equal(t, ids[:3], rep.Canary)
	require.Equal(t, []tenant.ID{ids[0], ids[2]}, rep.Migrated)
	require.Len(t, rep.Failed, 1)
	require.Equal(t, ids[1], rep.Failed[0].Tenant)
	require.Equal(t, ids[3:], rep.Pending)
	require.ErrorContains(t, rep.Stopped, "canary")
	for _, id := range ids[3:] {
		require.Equal(t, []int{1}, ledger(t, c, id), "a tenant after a failed canary is not touched")
	}

	// An error of AfterCanary stops the run after the canary.
	_, err = e2.db.Exec(tenant.NewContext(t.Context(), ids[1]), `DELETE FROM requirements WHERE req_id = 'poison'`)
	require.NoError(t, err)
	unhealthy := errors.New("the application is unhealthy")
	var seen []tenant.ID
	rep, err = e2.admin.Migrate(t.Context(), store.MigrateOptions{Canary: 2, AfterCanary: func(_ context.Context, canary []tenant.ID) error {
		seen = canary
		for _, id := range canary {
			if !slices.Equal([]int{1, 2}, ledger(t, c, id)) {
				return fmt.Errorf("canary %s not migrated", id)
			}
		}
		return unhealthy
	}})
	require.ErrorIs(t, err, unhealthy)
	require.NotErrorIs(t, err, store.ErrMigrationFailed)
	want := []tenant.ID{ids[1], ids[3]} // the first two behind
	require.Equal(t, want, seen)
	require.Equal(t, want, rep.Canary)
	require.Equal(t, want, rep.Migrated)
	require.Equal(t, ids[4:], rep.Pending)
	require.Equal(t, 4, rep.Total)
	for _, id := range ids[4:] {
		require.Equal(t, []int{1}, ledger(t, c, id))
	}

	// A canary that passes lets the rest go.
	rep, err = e2.admin.Migrate(t.Context(), store.MigrateOptions{Canary: 1, AfterCanary: func(context.Context, []tenant.ID) error { return nil }})
	require.NoError(t, err)
	require.Equal(t, ids[4:5], rep.Canary)
	require.Equal(t, ids[4:], rep.Migrated)
	for _, id := range ids {
		require.Equal(t, []int{1, 2}, ledger(t, c, id))
	}
}

func TestMigrateProgress(t *testing.T) {
	e := migEnv(t, store.ModeSharedPool, migFS("0001_docs.sql", migDocs))
	ids := createTenants(t, e.admin, "migprog", 6)
	poison(t, e, ids[2])
	e2 := reopen(t, e, migFS("0001_docs.sql", migDocs, "0002_poison.sql", migPoison))
	var calls []store.MigrateProgress
	var inside atomic.Int32
	rep, err := e2.admin.Migrate(t.Context(), store.MigrateOptions{Parallelism: 3, Progress: func(p store.MigrateProgress) {
		require.Equal(t, int32(1), inside.Add(1), "Progress is called from one goroutine at a time")
		time.Sleep(time.Millisecond)
		calls = append(calls, p)
		inside.Add(-1)
	}})
	require.ErrorIs(t, err, store.ErrMigrationFailed)
	require.Len(t, calls, 6)
	var tenants []tenant.ID
	for i, p := range calls {
		tenants = append(tenants, p.Tenant)
		require.Equal(t, 6, p.Total)
		require.Equal(t, i+1, p.Migrated+p.Failed, "counts so far")
		if p.Tenant == ids[2] {
			require.ErrorContains(t, p.Err, "migration 2 (0002_poison.sql)")
			require.ErrorContains(t, p.Err, "poison")
		} else {
			require.NoError(t, p.Err)
		}
	}
	sortIDs(tenants)
	require.Equal(t, ids, tenants, "one call per tenant")
	last := calls[len(calls)-1]
	require.Equal(t, 5, last.Migrated)
	require.Equal(t, 1, last.Failed)
	require.Len(t, rep.Migrated, 5)
}

func TestMigrateOptionsErrorsNameTheField(t *testing.T) {
	e := migEnv(t, store.ModeTenantLogin, migFS("0001_docs.sql", migDocs))
	_, err := e.admin.Migrate(t.Context(), store.MigrateOptions{Parallelism: -1})
	require.ErrorIs(t, err, store.ErrInvalidConfig)
	require.ErrorContains(t, err, "MigrateOptions.Parallelism")
	_, err = e.admin.Migrate(t.Context(), store.MigrateOptions{Canary: -1})
	require.ErrorIs(t, err, store.ErrInvalidConfig)
	require.ErrorContains(t, err, "MigrateOptions.Canary")
}

func TestMigrateRestrictedToTenants(t *testing.T) {
	e := migEnv(t, store.ModeSharedPool, migFS("0001_docs.sql", migDocs))
	c := superuser(t, e.d)
	ids := createTenants(t, e.admin, "migonly", 3)
	e2 := reopen(t, e, migFS("0001_docs.sql", migDocs, "0002_tags.sql", migTags))
	rep, err := e2.admin.Migrate(t.Context(), store.MigrateOptions{Tenants: []tenant.ID{ids[2], freshID("nosuch")}})
	require.NoError(t, err)
	require.Equal(t, 1, rep.Total)
	require.Equal(t, ids[2:], rep.Migrated)
	require.Equal(t, []int{1}, ledger(t, c, ids[0]))
	require.Equal(t, []int{1, 2}, ledger(t, c, ids[2]))
}

// queryCounter is a pgx QueryTracer that counts the queries started while
// it is on.
type queryCounter struct {
	on   atomic.Bool
	mu   sync.Mutex // guards sqls
	sqls []string
}

func (c *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if c.on.Load() {
		c.mu.Lock()
		c.sqls = append(c.sqls, d.SQL)
		c.mu.Unlock()
	}
	return ctx
}

func (c *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func TestMigrateWithNothingToDoIsOneQuery(t *testing.T) {
	e := migEnv(t, store.ModeSharedPool, migFS("0001_docs.sql", migDocs))
	createTenants(t, e.admin, "migone", 20)
	v2 := migFS("0001_docs.sql", migDocs, "0002_tags.sql", migTags)
	tracer := &queryCounter{}
	cfg := migAdminConfig(t, e.d, e.mode, v2)
	cfg.Pool.ConnConfig.Tracer = tracer
	admin, err := openAdmin(t, cfg)
	require.NoError(t, err)

	tracer.on.Store(true)
	rep, err := admin.Migrate(t.Context(), store.MigrateOptions{})
	tracer.on.Store(false)
	require.NoError(t, err)
	require.Equal(t, 20, rep.Total)
	require.Greater(t, len(tracer.sqls), 20, "a run with work to do")

	tracer.sqls = nil
	tracer.on.Store(true)
	rep, err = admin.Migrate(t.Context(), store.MigrateOptions{})
	tracer.on.Store(false)
	require.NoError(t, err)
	require.Zero(t, rep.Total)
	require.Len(t, tracer.sqls, 1, "queries of a run with nothing to do: %q", tracer.sqls)
}

// The kill test: a child process (this test binary again) runs Migrate
// over many tenants and is killed (SIGKILL) half-way; the parent runs
// Migrate again.
const (
	envMigHelper   = "TENANCY_MIGTEST_HELPER_URL" // the admin URL; makes TestMigrateHelperProcess run
	envMigPrefix   = "TENANCY_MIGTEST_PREFIX"
	envMigPlatform = "TENANCY_MIGTEST_PLATFORM"
)

// killTestFS are the migrations of the kill test: the second writes one
// row per application to migtest.audit, outside the tenant schemas, in its
// transaction, and sleeps, so that the child is killed with some tenants
// done, some in flight and some not started.
func killTestFS() fs.FS {
	return migFS("0001_docs.sql", migDocs,
		"0002_audited.sql", `INSERT INTO migtest.audit (schema_name) VALUES (current_schema());
			ALTER TABLE docs ADD COLUMN audited boolean;
			SELECT pg_sleep(0.05);`)
}

// TestMigrateHelperProcess is the child of TestMigrateResumesAfterKill; it
// does nothing in a normal run.
func TestMigrateHelperProcess(t *testing.T) {
	url := os.Getenv(envMigHelper)
	if url == "" {
		return
	}
	acfg, err := store.ParseAdminConfig(url)
	require.NoError(t, err)
	acfg.Mode, acfg.RolePrefix = store.ModeSharedPool, os.Getenv(envMigPrefix)
	acfg.LoginSecrets = []store.LoginSecret{secret}
	acfg.Tables = []store.Table{requirements}
	acfg.PlatformRole = os.Getenv(envMigPlatform)
	acfg.Migrations = killTestFS()
	admin, err := store.OpenAdmin(t.Context(), acfg)
	require.NoError(t, err)
	defer admin.Close()
	fmt.Println("migrating")
	rep, err := admin.Migrate(t.Context(), store.MigrateOptions{Parallelism: 4})
	require.NoError(t, err)
	fmt.Println("migrated", len(rep.Migrated)) // the parent kills it before this
}

func TestMigrateResumesAfterKill(t *testing.T) {
	const n = 60
	e := migEnv(t, store.ModeSharedPool, migFS("0001_docs.sql", migDocs))
	c := superuser(t, e.d)
	ids := createTenants(t, e.admin, "migkill", n)
	e.d.Exec(t, `CREATE SCHEMA migtest; CREATE TABLE migtest.audit (schema_name text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`)
	pcfg, err := pgx.ParseConfig(platform(t, e.d))
	require.NoError(t, err)

	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestMigrateHelperProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), envMigHelper+"="+e.d.AdminURL(), envMigPrefix+"="+e.d.Prefix(), envMigPlatform+"="+pcfg.User)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	done := 0
	deadline := time.Now().Add(time.Minute)
poll:
	for {
		select {
		case err := <-exited:
			t.Fatalf("the child ended before it was killed (%v), with %d tenants migrated:\n%s", err, done, out.String())
		case <-time.After(5 * time.Millisecond):
		}
		done = count(t, c, `SELECT count(*) FROM tenancy.tenant_migrations WHERE version = 2`)
		switch {
		case done >= n/6:
			break poll
		case time.Now().After(deadline):
			t.Fatalf("the child migrated %d tenants in a minute:\n%s", done, out.String())
		}
	}
	require.NoError(t, cmd.Process.Kill())
	<-exited
	done = count(t, c, `SELECT count(*) FROM tenancy.tenant_migrations WHERE version = 2`)
	t.Logf("killed the child with %d of %d tenants migrated", done, n)
	require.Less(t, done, n, "the child was killed before it finished:\n%s", out.String())

	e2 := reopen(t, e, killTestFS())
	rep, err := e2.admin.Migrate(t.Context(), store.MigrateOptions{Parallelism: 4})
	require.NoError(t, err)
	require.Equal(t, n-done, rep.Total)
	require.Len(t, rep.Migrated, n-done)
	for _, id := range ids {
		require.Equal(t, []int{1, 2}, ledger(t, c, id), id)
	}
	rows, err := c.Query(t.Context(), `SELECT schema_name, count(*)::int FROM migtest.audit GROUP BY 1 ORDER BY 1`)
	require.NoError(t, err)
	type applied struct {
		Schema string
		N      int
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[applied])
	require.NoError(t, err)
	var want []applied
	for _, id := range ids {
		want = append(want, applied{id.SchemaName(), 1})
	}
	slices.SortFunc(want, func(x, y applied) int { return strings.Compare(x.Schema, y.Schema) })
	slices.SortFunc(got, func(x, y applied) int { return strings.Compare(x.Schema, y.Schema) })
	require.Equal(t, want, got, "every tenant has the migration applied exactly once")
}

// tenantDB connects as superuser to the database of its own of tenant id.
func tenantDB(t testing.TB, d *pgtest.Database, id tenant.ID) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(d.AdminURL())
	require.NoError(t, err)
	cfg.Database = d.Prefix() + id.SchemaName()
	c, err := pgx.ConnectConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// TestMigrateTenantsWithADatabaseOfTheirOwn migrates enterprise tenants (a
// database of their own on the shared cluster) and government tenants (on
// a second cluster) beside a standard one.
func TestMigrateTenantsWithADatabaseOfTheirOwn(t *testing.T) {
	for _, tier := range []tenant.Tier{tenant.TierEnterprise, tenant.TierGovernment} {
		t.Run(string(tier), func(t *testing.T) { testMigrateOwnDatabase(t, tier) })
	}
}

func testMigrateOwnDatabase(t *testing.T, tier tenant.Tier) {
	d := pgtest.DB(t).NewDatabase(t)
	cluster := d // where the tenant's database lives
	var opts []store.CreateOption
	var adjust []func(*store.AdminConfig, *store.Config)
	if tier == tenant.TierGovernment {
		cluster = pgtest.SecondCluster(t)
		opts = append(opts, store.OnCluster(govCluster))
		adjust = append(adjust, func(a *store.AdminConfig, c *store.Config) {
			require.NoError(t, a.AddCluster(govCluster, cluster.AdminURL()))
			require.NoError(t, c.AddCluster(govCluster, cluster.AdminURL()))
		})
	}
	open := func(fsys fs.FS) *env {
		return newEnvOn(t, d, store.ModeTenantLogin, append([]func(*store.AdminConfig, *store.Config){withMigrations(fsys)}, adjust...)...)
	}
	e := open(migFS("0001_docs.sql", migDocs))
	if tier == tenant.TierGovernment {
		require.NoError(t, e.admin.RegisterCluster(t.Context(), govCluster))
	}
	c := superuser(t, d)
	own := freshID("migown")
	require.NoError(t, e.admin.CreateTenant(t.Context(), tenant.Info{ID: own, Name: "Own database", Tier: tier}, opts...))
	std, _ := e.newTenant(t, "migstd")
	oc := tenantDB(t, cluster, own)

	t.Run("created with every migration", func(t *testing.T) {
		require.Equal(t, []int{1}, ledger(t, c, own), "the control plane's ledger")
		require.Equal(t, []int{1}, ledger(t, oc, own), "the tenant database's ledger")
		requireSecured(t, oc, own.SchemaName(), "docs")
		ctx := tenant.NewContext(t.Context(), own)
		_, err := e.db.Exec(ctx, `INSERT INTO docs (doc_id, body) VALUES (1, 'own')`)
		require.NoError(t, err)
		var owner string
		require.NoError(t, e.db.QueryRow(ctx, `SELECT tenant_id FROM docs`).Scan(&owner))
		require.Equal(t, own.String(), owner)
	})

	e2 := open(migFS("0001_docs.sql", migDocs, "0002_tags.sql", migTags))
	t.Run("migrated in its own database", func(t *testing.T) {
		rep, err := e2.admin.Migrate(t.Context(), store.MigrateOptions{})
		require.NoError(t, err)
		want := []tenant.ID{own, std}
		sortIDs(want)
		require.Equal(t, want, rep.Migrated)
		require.Equal(t, []int{1, 2}, ledger(t, c, own))
		require.Equal(t, []int{1, 2}, ledger(t, oc, own))
		require.Equal(t, []int{1, 2}, ledger(t, c, std))
		requireSecured(t, oc, own.SchemaName(), "tags")
		require.False(t, exists(t, c, own.SchemaName(), "tags"), "nothing of the tenant in the shared database")
		ctx := tenant.NewContext(t.Context(), own)
		_, err = e2.db.Exec(ctx, `INSERT INTO tags (tag) VALUES ('own')`)
		require.NoError(t, err)
	})

	t.Run("a version in the tenant's ledger only is copied, not applied again", func(t *testing.T) {
		// As after a crash between the tenant database's commit and the
		// control plane's row. Applying 0002 again would fail: tags exists.
		var at time.Time
		require.NoError(t, oc.QueryRow(t.Context(), `SELECT applied_at FROM tenancy.tenant_migrations WHERE version = 2`).Scan(&at))
		_, err := c.Exec(t.Context(), `DELETE FROM tenancy.tenant_migrations WHERE tenant_id = $1 AND version = 2`, own.String())
		require.NoError(t, err)
		rep, err := e2.admin.Migrate(t.Context(), store.MigrateOptions{})
		require.NoError(t, err)
		require.Equal(t, []tenant.ID{own}, rep.Migrated)
		require.Equal(t, []int{1, 2}, ledger(t, c, own))
		var again time.Time
		require.NoError(t, oc.QueryRow(t.Context(), `SELECT applied_at FROM tenancy.tenant_migrations WHERE version = 2`).Scan(&again))
		require.Equal(t, at, again)
	})

	t.Run("fails closed", func(t *testing.T) {
		e3 := open(migFS("0001_docs.sql", migDocs, "0002_tags.sql", migTags, "0003_bare.sql", marker+`CREATE TABLE bare (id int);`))
		rep, err := e3.admin.Migrate(t.Context(), store.MigrateOptions{})
		require.ErrorIs(t, err, store.ErrMigrationFailed)
		require.Len(t, rep.Failed, 2)
		require.Equal(t, []int{1, 2}, ledger(t, c, own))
		require.Equal(t, []int{1, 2}, ledger(t, oc, own))
		require.False(t, exists(t, oc, own.SchemaName(), "marker"))
	})
}

// TestMigrateAsLeastPrivilegeAdmin migrates with an admin role that is not
// a superuser (CREATEROLE, owner of the database), which the tenant
// tables' forced row level security would hold to the policy: a file can
// still read and write the tenant's rows, at creation and in Migrate.
func TestMigrateAsLeastPrivilegeAdmin(t *testing.T) {
	d, adminURL := ownedDatabase(t)
	asAdmin := func(a *store.AdminConfig, _ *store.Config) {
		p, err := store.ParseAdminConfig(adminURL)
		require.NoError(t, err)
		a.Pool = p.Pool
	}
	seed := `INSERT INTO docs (doc_id, body) VALUES (100, 'seeded'); UPDATE docs SET body = upper(body);`
	v1 := migFS("0001_docs.sql", migDocs, "0002_seed.sql", seed)
	e := newEnvOn(t, d, store.ModeTenantLogin, withMigrations(v1), asAdmin)
	c := superuser(t, d)
	a, ctxA := e.newTenant(t, "miglp")
	var owner, body string
	require.NoError(t, e.db.QueryRow(ctxA, `SELECT tenant_id, body FROM docs WHERE doc_id = 100`).Scan(&owner, &body))
	require.Equal(t, a.String(), owner)
	require.Equal(t, "SEEDED", body)
	_, err := e.db.Exec(ctxA, `INSERT INTO docs (doc_id, body) VALUES (1, 'mine')`)
	require.NoError(t, err)
	poison(t, e, a)

	v2 := migFS("0001_docs.sql", migDocs, "0002_seed.sql", seed, "0003_poison.sql", migPoison,
		"0004_upper.sql", `UPDATE docs SET body = upper(body) WHERE doc_id = 1; INSERT INTO docs (doc_id, body) VALUES (101, 'again');`)
	e2 := newEnvOn(t, d, store.ModeTenantLogin, withMigrations(v2), asAdmin)
	rep, err := e2.admin.Migrate(t.Context(), store.MigrateOptions{})
	require.ErrorIs(t, err, store.ErrMigrationFailed, "the file read the tenant's rows: it saw the poison")
	require.Equal(t, 3, rep.Failed[0].Version)
	_, err = e2.db.Exec(ctxA, `DELETE FROM requirements WHERE req_id = 'poison'`)
	require.NoError(t, err)
	_, err = e2.admin.Migrate(t.Context(), store.MigrateOptions{})
	require.NoError(t, err)
	got, err := reqIDs(t, e2.db, ctxA, `SELECT body || '/' || tenant_id FROM docs ORDER BY doc_id`)
	require.NoError(t, err)
	require.Equal(t, []string{"MINE/" + a.String(), "SEEDED/" + a.String(), "again/" + a.String()}, got)
	requireSecured(t, c, a.SchemaName(), "docs")
	requireSecured(t, c, a.SchemaName(), "requirements")
	var def string
	require.NoError(t, c.QueryRow(t.Context(), `SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef
		WHERE adrelid = $1::regclass AND adnum = (SELECT attnum FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'tenant_id')`,
		a.SchemaName()+".docs").Scan(&def))
	require.Contains(t, def, a.String(), "tenant_id defaults to the tenant")
}

// TestConcurrentMigrateRunsApplyOnce runs Migrate from two Admins at once
// (as two processes would): the lock and the ledger checked under it
// apply each migration to each tenant once.
func TestConcurrentMigrateRunsApplyOnce(t *testing.T) {
	const n = 12
	e := migEnv(t, store.ModeTenantLogin, migFS("0001_docs.sql", migDocs))
	c := superuser(t, e.d)
	ids := createTenants(t, e.admin, "migboth", n)
	e.d.Exec(t, `CREATE SCHEMA migtest; CREATE TABLE migtest.audit (schema_name text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`)
	a1, a2 := reopen(t, e, killTestFS()).admin, reopen(t, e, killTestFS()).admin
	reps := make([]*store.MigrateReport, 2)
	var wg sync.WaitGroup
	for i, a := range []*store.Admin{a1, a2} {
		wg.Go(func() {
			var err error
			reps[i], err = a.Migrate(t.Context(), store.MigrateOptions{Parallelism: 3})
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	for _, r := range reps {
		require.Equal(t, ids, r.Migrated, "each run reports every tenant migrated (by it or by the other)")
	}
	require.Equal(t, n, count(t, c, `SELECT count(*) FROM migtest.audit`))
	require.Equal(t, n, count(t, c, `SELECT count(DISTINCT schema_name) FROM migtest.audit`), "each tenant's migration ran once")
	for _, id := range ids {
		require.Equal(t, []int{1, 2}, ledger(t, c, id))
	}
}
