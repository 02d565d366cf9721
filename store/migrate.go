package store

// Tenant migrations: the tenant schema as SQL files, applied to every
// tenant, with one ledger in the control plane.
//
// The runner is written here rather than taken from goose (v3) or tern
// (v2). Both keep their version in a table of the database (or schema)
// they migrate, so a fleet of tenants would have a version table per
// tenant, and a run with nothing to do would cost a query per tenant
// instead of one; tern also serialises every run of a database on one
// advisory lock and allows no gaps in the numbering. And both commit each
// migration as soon as its SQL has run: neither has a hook between the
// SQL and the commit, where store must check that the tenant's schema is
// still secured (and secure what the file created) in the same
// transaction, so that a migration that breaks isolation never commits.
// What they would add (reading an fs.FS, ordering by number, running a
// file) is a few dozen lines.
//
// The ledger: tenancy.migrations (control plane) records each file's
// version, name and checksum; tenancy.tenant_migrations (control plane)
// records which tenant has which version. A tenant with a database of its
// own has a copy of its rows in that database's tenancy.tenant_migrations,
// written in the migration's own transaction; the control plane's row
// follows the commit, and a row found in the tenant's copy but missing
// from the control plane's is copied, never applied again.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/tenant"
)

var (
	// ErrMigrationChanged is wrapped by the error of [OpenAdmin] when
	// AdminConfig.Migrations disagrees with the migrations the database has
	// recorded: a recorded version whose file changed (another checksum),
	// is missing, or a new file numbered below the newest recorded one.
	// Applied migrations are never edited: add a new file instead.
	ErrMigrationChanged = errors.New("tenant migrations changed")

	// ErrMigrationFailed is wrapped by the error of [Admin.Migrate] when a
	// migration failed for one or more tenants; the [MigrateReport] says
	// which, at which version, and why.
	ErrMigrationFailed = errors.New("tenant migration failed")
)

// migration is one file of AdminConfig.Migrations.
type migration struct {
	version  int
	name     string // the file name without the version and .sql
	file     string
	sql      string
	checksum [sha256.Size]byte
}

// migrationFileRE is the name of a migration file: the version, an
// underscore, a name, .sql. Nine digits at most keep the version in an
// int column.
var migrationFileRE = regexp.MustCompile(`^([0-9]{1,9})_([A-Za-z0-9][A-Za-z0-9_-]*)\.sql$`)

// loadMigrations reads the migration files of fsys (AdminConfig.Migrations;
// nil means none), in version order. Every entry at the root of fsys must
// be a migration file: anything else (another file, a directory) is an
// error naming it, since a misnamed migration must not be skipped quietly.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	if fsys == nil {
		return nil, nil
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("store: %w: AdminConfig.Migrations: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fail("%w", err)
	}
	var ms []migration
	files := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		m := migrationFileRE.FindStringSubmatch(name)
		switch {
		case e.IsDir():
			return nil, fail("%q is a directory: the migration files (NNNN_name.sql) must be at the root of the FS, alone (use fs.Sub, or //go:embed dir/*.sql)", name)
		case m == nil:
			return nil, fail("%q is not a migration file: every file at the root of the FS must be named NNNN_name.sql (a version of up to 9 digits, _, a name of letters, digits, _ and -)", name)
		}
		v, _ := strconv.Atoi(m[1])
		if v == 0 {
			return nil, fail("file %q: the version must be greater than 0", name)
		}
		if other, ok := files[v]; ok {
			return nil, fail("files %q and %q have the same version %d: versions must be unique", other, name, v)
		}
		files[v] = name
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fail("file %q: %w", name, err)
		}
		if !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0 {
			return nil, fail("file %q must be UTF-8 text without NUL bytes", name)
		}
		if !skipTxControlCheck.Load() {
			if err := checkTxControl(string(b)); err != nil {
				return nil, fail("file %q, %w", name, err)
			}
		}
		ms = append(ms, migration{version: v, name: m[2], file: name, sql: string(b), checksum: sha256.Sum256(b)})
	}
	slices.SortFunc(ms, func(x, y migration) int { return cmp.Compare(x.version, y.version) })
	return ms, nil
}

// skipTxControlCheck, when set (by tests only), makes loadMigrations
// accept files that control their transaction, so that tests reach the
// check after the file has run (runFile).
var skipTxControlCheck atomic.Bool

// checkTxControl refuses SQL text (a migration file) with a top-level
// statement that controls the transaction: BEGIN, START TRANSACTION,
// COMMIT, END, ROLLBACK, ABORT (with AND CHAIN, or PREPARED, too),
// SAVEPOINT, RELEASE and PREPARE TRANSACTION. Store runs each file inside
// a transaction of its own and commits it only after checking the
// tenant's schema, in the same transaction (see [Admin.Migrate]); a file
// that committed would have committed before the check, and inside
// CreateTenant a half-made tenant. What cannot run inside a transaction
// block at all (VACUUM, CREATE INDEX CONCURRENTLY, CREATE DATABASE, ALTER
// SYSTEM, ...) is left to PostgreSQL, which refuses it there and so rolls
// the file back; so is COMMIT inside a DO block or a procedure (CALL),
// which PostgreSQL refuses inside a transaction block. It also refuses
// an unterminated string, quoted identifier or comment, which PostgreSQL
// would refuse too. The error names the line and the statement.
func checkTxControl(sql string) error {
	stmts, err := splitStatements(sql)
	if err != nil {
		return fmt.Errorf("%w: PostgreSQL would not parse the file", err)
	}
	for _, s := range stmts {
		if what := s.txControl(); what != "" {
			text := strings.Join(strings.Fields(strings.TrimSuffix(strings.TrimSpace(sql[s.at:s.end]), ";")), " ")
			if len(text) > 60 {
				cut := 57
				for !utf8.RuneStart(text[cut]) {
					cut--
				}
				text = text[:cut] + "..."
			}
			return fmt.Errorf("line %d: statement %q controls the transaction (%s): store runs each migration in a transaction of its own, "+
				"and commits it only after checking the tenant's schema; a migration must not begin, end or roll back a transaction, "+
				"nor use savepoints: remove the statement", s.line, text, what)
		}
	}
	return nil
}

// recordMigrations checks the Admin's migrations against those recorded
// in tenancy.migrations and records the new ones. A recorded version
// whose checksum differs or that is missing from the Admin's migrations,
// and a new version below the newest recorded one, fail with
// ErrMigrationChanged: tenants may have applied what is recorded, and
// every tenant applies the migrations in version order. The name of a
// file may change; its version and content may not.
func (a *Admin) recordMigrations(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(controlPlaneLock)); err != nil {
			return err
		}
		type recorded struct {
			version  int
			name     string
			checksum []byte
		}
		rows, err := tx.Query(ctx, `SELECT version, name, checksum FROM tenancy.migrations ORDER BY version`)
		if err != nil {
			return err
		}
		recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (recorded, error) {
			var x recorded
			err := r.Scan(&x.version, &x.name, &x.checksum)
			return x, err
		})
		if err != nil {
			return err
		}
		have := map[int]migration{}
		for _, m := range a.migrations {
			have[m.version] = m
		}
		var problems []string
		newest := 0
		known := map[int]bool{}
		for _, r := range recs {
			known[r.version] = true
			newest = max(newest, r.version)
			m, ok := have[r.version]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("version %d (recorded with the name %q, a file NNNN_%s.sql) is recorded but missing from AdminConfig.Migrations: tenants may have applied it; put the file back", r.version, r.name, r.name))
			case !bytes.Equal(m.checksum[:], r.checksum):
				problems = append(problems, fmt.Sprintf("version %d: file %s is not the one recorded (another SHA-256): tenants may have applied the recorded one; restore it and put the change in a new file", r.version, m.file))
			}
		}
		var fresh []migration
		for _, m := range a.migrations {
			if known[m.version] {
				continue
			}
			if m.version < newest {
				problems = append(problems, fmt.Sprintf("version %d: new file %s is numbered below %d, the newest recorded: every tenant applies the migrations in version order, so number new files above %d", m.version, m.file, newest, newest))
				continue
			}
			fresh = append(fresh, m)
		}
		if len(problems) > 0 {
			return fmt.Errorf("%w: %s", ErrMigrationChanged, strings.Join(problems, "; "))
		}
		if len(fresh) == 0 {
			return nil
		}
		versions, names, sums := make([]int, len(fresh)), make([]string, len(fresh)), make([][]byte, len(fresh))
		for i, m := range fresh {
			versions[i], names[i], sums[i] = m.version, m.name, m.checksum[:]
		}
		_, err = tx.Exec(ctx, `INSERT INTO tenancy.migrations (version, name, checksum)
			SELECT * FROM unnest($1::int[], $2::text[], $3::bytea[])`, versions, names, sums)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: tenant migrations: %w", err)
	}
	return nil
}

// applyAllNew applies every tenant migration of AdminConfig.Migrations to
// the new tenant id placed at p, in tx (a transaction on the tenant's
// database, with the tenant's schema created and empty but for
// AdminConfig.Tables), records each in tx's tenancy.tenant_migrations and
// returns the versions applied, in order, and what the schema holds then
// (as checkSchema found it after the last). Each file runs as
// [Admin.Migrate] runs it (search_path the schema, then RESET ALL, which
// also resets what tx SET LOCAL before), and is checked as Migrate checks
// it; the tables are secured once, after the last. The caller grants the
// tables to the tenant's worker role. With no migrations it does nothing
// and returns nothing.
func (a *Admin) applyAllNew(ctx context.Context, tx pgx.Tx, id tenant.ID, p placement) ([]int, schemaObjects, error) {
	var objs schemaObjects
	if len(a.migrations) == 0 {
		return nil, objs, nil
	}
	var role string
	var started time.Time
	if err := tx.QueryRow(ctx, `SELECT current_user, now()`).Scan(&role, &started); err != nil {
		return nil, objs, err
	}
	versions := make([]int, 0, len(a.migrations))
	for _, m := range a.migrations {
		if err := execAll(ctx, tx, `SET LOCAL search_path = `+q(p.Schema)); err != nil {
			return nil, objs, err
		}
		var err error
		if objs, err = a.runFile(ctx, tx, id, p, m, role, started); err != nil {
			return nil, objs, fmt.Errorf("migration %d (%s): %w", m.version, m.file, err)
		}
		versions = append(versions, m.version)
	}
	if err := a.secureTables(ctx, tx, id, p, objs.tables); err != nil {
		return nil, objs, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO tenancy.tenant_migrations (tenant_id, version)
		SELECT $1, v FROM unnest($2::int[]) v`, id.String(), versions); err != nil {
		return nil, objs, err
	}
	return versions, objs, nil
}

// runFile runs migration m in tx (search_path already the tenant's
// schema) for tenant id, resets the session's settings, and checks that
// the tenant's schema is still one that row level security binds
// (checkSchema), and returns what checkSchema found to secure and grant.
//
// The file runs with the tenant's tables opened to the admin role, their
// owner: row level security not forced (so that the owner is not held to
// the policy, which refuses every session but the tenant's) and tenant_id
// defaulting to the tenant's ID (the guard's default may need the
// tenant's session too), so that a file can read and write the tenant's
// rows. Nobody else sees this state: secureTables forces the tables again
// before the commit.
func (a *Admin) runFile(ctx context.Context, tx pgx.Tx, id tenant.ID, p placement, m migration, role string, started time.Time) (schemaObjects, error) {
	var none schemaObjects
	tables, err := tenantIDTables(ctx, tx, p.Schema)
	if err != nil {
		return none, err
	}
	b := &pgx.Batch{}
	// The file is parsed as checkTxControl lexed it (with '...' strings
	// taking no backslash escapes), whatever the role's or server's
	// setting. (The whole file is parsed before any of it runs, so a SET
	// in it does not change how the rest of it is read.)
	b.Queue(`SET LOCAL standard_conforming_strings = on`)
	for _, t := range tables {
		b.Queue(`ALTER TABLE ` + pgx.Identifier{p.Schema, t}.Sanitize() +
			` NO FORCE ROW LEVEL SECURITY, ALTER COLUMN tenant_id SET DEFAULT ` + literal(id.String()))
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return none, err
	}
	conn := tx.Conn().PgConn()
	// Trusted SQL of several statements: the simple protocol.
	if _, err := conn.Exec(ctx, m.sql).ReadAll(); err != nil {
		return none, err
	}
	// Settings the file made with SET would otherwise stay on the admin's
	// pooled connection after the commit. A file that ended the
	// transaction leaves none, or another one (now() tells).
	ended := conn.TxStatus() != 'T'
	var now time.Time
	b = &pgx.Batch{}
	b.Queue(`RESET ALL`)
	b.Queue(`SELECT now()`).QueryRow(func(r pgx.Row) error { return r.Scan(&now) })
	if err := tx.Conn().SendBatch(ctx, b).Close(); err != nil {
		return none, err
	}
	if ended || !now.Equal(started) {
		err := errors.New("the file ended the transaction store runs it in (COMMIT, ROLLBACK or END): a migration must not control its transaction; what it committed stays, with its tables secured again")
		if conn.TxStatus() == 'T' {
			if _, rerr := conn.Exec(ctx, `ROLLBACK`).ReadAll(); rerr != nil {
				return none, fmt.Errorf("%w (and rolling back the transaction it began: %v)", err, rerr)
			}
		}
		// What it committed may include the tables opened above.
		if rerr := pgx.BeginFunc(ctx, tx.Conn(), func(tx pgx.Tx) error {
			tables, err := tenantIDTables(ctx, tx, p.Schema)
			if err != nil {
				return err
			}
			return a.secureTables(ctx, tx, id, p, tables)
		}); rerr != nil {
			return none, fmt.Errorf("%w (and securing the tables again: %v)", err, rerr)
		}
		return none, err
	}
	return checkSchema(ctx, tx, p.Schema, role, a.workerOf(p))
}

// tenantIDTables returns the tables of schema that have a tenant_id
// column (found as schemaCheckSQL finds them).
func tenantIDTables(ctx context.Context, tx pgx.Tx, schema string) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT c.relname::text
		FROM pg_catalog.pg_namespace n
		JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
		  AND d.refobjid = n.oid AND d.refobjsubid = 0 AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
		JOIN pg_catalog.pg_class c ON c.oid = d.objid AND c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
		WHERE n.nspname = $1
		  AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
		ORDER BY 1`, schema)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// schemaCheckSQL lists what row level security cannot bind in a tenant's
// schema ($1), as (kind, object, detail) rows, and what to secure and
// grant: rows of kind table, view and sequence with an empty detail. $2 is
// the admin role, $3 the tenant's worker role.
//
// The schema's relations and functions are found through pg_depend, whose
// index leads to them (pg_class and pg_proc have none on the namespace,
// and a scan of the catalog costs milliseconds per tenant in a database of
// thousands); every object of a schema depends on it there, which is how
// DROP SCHEMA finds them. Indexes depend on their table instead.
const schemaCheckSQL = `
WITH s AS (SELECT n.oid, n.nspowner, n.nspacl FROM pg_catalog.pg_namespace n WHERE n.nspname = $1),
     adm AS (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = $2),
     rel AS (SELECT c.oid, c.relname::text AS name, c.relkind, c.relowner, c.reloptions
             FROM s JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                      AND d.refobjid = s.oid AND d.refobjsubid = 0 AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    JOIN pg_catalog.pg_class c ON c.oid = d.objid AND c.relnamespace = s.oid),
     fn AS (SELECT p.oid, p.prosecdef, p.proowner
            FROM s JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                     AND d.refobjid = s.oid AND d.refobjsubid = 0 AND d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                   JOIN pg_catalog.pg_proc p ON p.oid = d.objid AND p.pronamespace = s.oid)
SELECT 'role', current_user::text, '' WHERE current_user <> $2::name
UNION ALL
SELECT 'table', rel.name, CASE
         WHEN a.attname IS NULL THEN 'no tenant_id'
         WHEN a.atttypid <> 'pg_catalog.text'::pg_catalog.regtype OR NOT a.attnotnull THEN 'tenant_id type'
         ELSE '' END
  FROM rel LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = rel.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
  WHERE rel.relkind IN ('r', 'p')
UNION ALL
SELECT 'materialized view', rel.name, '' FROM rel WHERE rel.relkind = 'm'
UNION ALL
SELECT 'foreign table', rel.name, '' FROM rel WHERE rel.relkind = 'f'
UNION ALL
SELECT 'view', rel.name, CASE WHEN COALESCE((SELECT o.option_value::boolean FROM pg_catalog.pg_options_to_table(rel.reloptions) o
                                              WHERE o.option_name = 'security_invoker'), false) THEN '' ELSE 'definer' END
  FROM rel WHERE rel.relkind = 'v'
UNION ALL
SELECT 'sequence', rel.name, '' FROM rel WHERE rel.relkind = 'S'
UNION ALL
SELECT 'owner', rel.name, pg_catalog.pg_get_userbyid(rel.relowner)::text FROM rel, adm WHERE rel.relowner <> adm.oid
UNION ALL
SELECT 'security definer', fn.oid::pg_catalog.regprocedure::text, '' FROM fn WHERE fn.prosecdef
UNION ALL
SELECT 'function owner', fn.oid::pg_catalog.regprocedure::text, pg_catalog.pg_get_userbyid(fn.proowner)::text
  FROM fn, adm WHERE fn.proowner <> adm.oid
UNION ALL
SELECT 'policy', rel.name, pol.polname::text FROM rel JOIN pg_catalog.pg_policy pol ON pol.polrelid = rel.oid
  WHERE pol.polpermissive AND pol.polname <> 'tenancy_isolation'
UNION ALL
SELECT 'rule', rel.name, r.rulename::text FROM rel JOIN pg_catalog.pg_rewrite r ON r.ev_class = rel.oid
  WHERE r.rulename <> '_RETURN'
UNION ALL
SELECT 'schema owner', $1, pg_catalog.pg_get_userbyid(s.nspowner)::text FROM s, adm WHERE s.nspowner <> adm.oid
UNION ALL
SELECT 'schema privilege', $1,
       CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(acl.grantee)::text END || ' ' || acl.privilege_type
  FROM s, adm, LATERAL pg_catalog.aclexplode(s.nspacl) acl
  WHERE acl.grantee <> adm.oid
    AND NOT (acl.grantee = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = $3) AND acl.privilege_type = 'USAGE')
ORDER BY 1, 2, 3`

// schemaObjects are what a tenant's schema holds that store secures and
// grants to the tenant's role.
type schemaObjects struct{ tables, views, sequences []string }

// checkSchema is the fail-closed check after a migration: it fails,
// naming each object and the fix, unless every relation of the tenant's
// schema is one that row level security binds, and returns the tables (to
// be secured), views and sequences. See [Admin.Migrate] for the rules.
func checkSchema(ctx context.Context, tx pgx.Tx, schema, role, worker string) (schemaObjects, error) {
	var objs schemaObjects
	rows, err := tx.Query(ctx, schemaCheckSQL, schema, role, worker)
	if err != nil {
		return objs, err
	}
	type finding struct{ kind, object, detail string }
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (finding, error) {
		var f finding
		err := r.Scan(&f.kind, &f.object, &f.detail)
		return f, err
	})
	if err != nil {
		return objs, err
	}
	var problems []string
	for _, f := range found {
		o := q(f.object)
		var p string
		switch f.kind {
		case "table":
			switch f.detail {
			case "":
				objs.tables = append(objs.tables, f.object)
			case "no tenant_id":
				p = "table " + o + " has no tenant_id column: every tenant table needs one, so add `tenant_id text NOT NULL` (store sets its default to the tenant and adds the isolation policy)"
			default:
				p = "table " + o + ": tenant_id must be text NOT NULL"
			}
		case "role":
			p = "the file changed the role to " + o + " (SET ROLE or SET SESSION AUTHORIZATION) and did not reset it"
		case "materialized view":
			p = "materialized view " + o + ": row level security does not apply to a materialized view, so every reader would see all its rows: use a table, or a view WITH (security_invoker = true)"
		case "foreign table":
			p = "foreign table " + o + ": row level security cannot bind the rows of a foreign server"
		case "view":
			if f.detail == "" {
				objs.views = append(objs.views, f.object)
			} else {
				p = "view " + o + " reads with its owner's privileges, past row level security: create it WITH (security_invoker = true)"
			}
		case "sequence":
			objs.sequences = append(objs.sequences, f.object)
		case "owner":
			p = o + " is owned by " + q(f.detail) + ", not by the admin role: its owner could turn row level security off or change it"
		case "function owner":
			p = "function " + f.object + " is owned by " + q(f.detail) + ", not by the admin role"
		case "security definer":
			p = "function " + f.object + " is SECURITY DEFINER: it would run with its owner's privileges, past row level security"
		case "policy":
			p = "table " + o + ": permissive policy " + q(f.detail) + " widens what the isolation policy allows: make it AS RESTRICTIVE, or drop it"
		case "rule":
			p = "table " + o + ": rule " + q(f.detail) + " runs its actions with the table owner's privileges, past row level security: use a trigger"
		case "schema owner":
			p = "schema " + o + " is owned by " + q(f.detail) + ", not by the admin role"
		case "schema privilege":
			p = "schema " + o + " grants " + f.detail + ": only the tenant's own role may use the schema (USAGE), and nobody may create in it"
		default:
			p = f.kind + " " + o + " " + f.detail
		}
		if p != "" {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return objs, fmt.Errorf("schema %s is not secured (the migration is rolled back): %s", q(schema), strings.Join(problems, "; "))
	}
	return objs, nil
}

// secureTables secures every table of the schema of tenant id placed at
// p: tenant_id's default is the tenant (as the guard sets it for
// AdminConfig.Tables), row level security is enabled and forced, and the
// isolation policy (re)created, so that whatever a migration did to them
// is undone.
func (a *Admin) secureTables(ctx context.Context, tx pgx.Tx, id tenant.ID, p placement, tables []string) error {
	g := a.guardOf(id, p)
	b := &pgx.Batch{}
	for _, t := range tables {
		b.Queue(`ALTER TABLE ` + pgx.Identifier{p.Schema, t}.Sanitize() + ` ALTER COLUMN tenant_id SET DEFAULT ` + g.def)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("secure the tables of schema %s: %w", q(p.Schema), err)
	}
	for _, t := range tables {
		if err := secureTable(ctx, tx, g, p.Schema, t); err != nil {
			return err
		}
	}
	return nil
}

// grantObjects grants the tables and views of a tenant's schema, and its
// sequences, to the tenant's worker role (append-only tables with SELECT
// and INSERT only: see AppendOnlyMark). (GRANT ... ON ALL TABLES IN
// SCHEMA would scan the catalog.)
func grantObjects(ctx context.Context, tx pgx.Tx, schema, worker string, objs schemaObjects) error {
	list := func(names ...[]string) string {
		var l []string
		for _, ns := range names {
			for _, n := range ns {
				l = append(l, pgx.Identifier{schema, n}.Sanitize())
			}
		}
		return strings.Join(l, ", ")
	}
	w := q(worker)
	tables, err := grantAppendOnly(ctx, tx, schema, worker, objs.tables)
	if err != nil {
		return err
	}
	if rels := list(tables, objs.views); rels != "" {
		if err := execAll(ctx, tx, `GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE `+rels+` TO `+w); err != nil {
			return err
		}
	}
	if seqs := list(objs.sequences); seqs != "" {
		return execAll(ctx, tx, `GRANT USAGE, SELECT ON SEQUENCE `+seqs+` TO `+w)
	}
	return nil
}

// schemaGrantables returns what GRANT ... ON ALL TABLES IN SCHEMA and ON
// ALL SEQUENCES IN SCHEMA would grant in a tenant's schema, found through
// pg_depend as schemaCheckSQL finds it (without the scan of pg_class that
// those GRANTs make): its tables (ordinary and partitioned), its views,
// materialized views and foreign tables (in views), and its sequences.
func schemaGrantables(ctx context.Context, tx pgx.Tx, schema string) (schemaObjects, error) {
	var objs schemaObjects
	rows, err := tx.Query(ctx, `SELECT c.relname::text, c.relkind::text
		FROM pg_catalog.pg_namespace n
		JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
		  AND d.refobjid = n.oid AND d.refobjsubid = 0 AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
		JOIN pg_catalog.pg_class c ON c.oid = d.objid AND c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
		WHERE n.nspname = $1
		ORDER BY 1`, schema)
	if err != nil {
		return objs, err
	}
	var name, kind string
	_, err = pgx.ForEachRow(rows, []any{&name, &kind}, func() error {
		switch kind {
		case "r", "p":
			objs.tables = append(objs.tables, name)
		case "S":
			objs.sequences = append(objs.sequences, name)
		default:
			objs.views = append(objs.views, name)
		}
		return nil
	})
	return objs, err
}

// MigrateOptions adjusts [Admin.Migrate]. The zero value migrates every
// tenant, four at a time.
type MigrateOptions struct {
	// Parallelism is how many tenants are migrated at once; 0 means 4.
	// Each takes one admin connection (of the Admin's pool, for the
	// standard tier; of a pool of two on the tenant's database for the
	// others).
	Parallelism int
	// Canary is how many tenants (the first ones behind, in ID order) are
	// migrated first. If any of them fails, Migrate stops and touches no
	// other tenant; the report lists the others as pending. 0 means no
	// canary.
	Canary int
	// AfterCanary, if set, is called once the canary tenants have all
	// been migrated, with their IDs, before any other tenant is touched:
	// to check the application against them, say. An error stops Migrate
	// there (the others stay pending) and is wrapped by its error. It is
	// not called when there is no canary, or no tenant was behind.
	AfterCanary func(ctx context.Context, canary []tenant.ID) error
	// Progress, if set, is called after each tenant is done with, migrated
	// or failed. Calls come from one goroutine at a time, while the
	// other tenants go on being migrated; a slow Progress holds up the
	// workers that finish meanwhile.
	Progress func(MigrateProgress)
	// Tenants, if set, restricts the run to these tenants. Tenants that
	// are not placed, or have every migration already, are left out.
	Tenants []tenant.ID
}

// MigrateProgress is one call of [MigrateOptions.Progress]: one tenant is
// done with, and the counts of the run so far.
type MigrateProgress struct {
	// Tenant is the tenant just done with.
	Tenant tenant.ID
	// Err is nil if Tenant was migrated, and otherwise names the migration
	// that failed and why.
	Err error
	// Migrated and Failed count the tenants done with so far (Tenant
	// included); Total is the number of tenants the run started with
	// behind ([MigrateReport.Total]).
	Migrated, Failed, Total int
}

// MigrateReport is what [Admin.Migrate] did. Every tenant of Total is in
// exactly one of Migrated, Failed and Pending; each list is in ID order.
type MigrateReport struct {
	// Total is the number of tenants that were behind (lacked a migration)
	// when the run started.
	Total int
	// Canary are the tenants migrated first ([MigrateOptions.Canary]).
	Canary []tenant.ID
	// Migrated are the tenants that have every migration now.
	Migrated []tenant.ID
	// Failed are the tenants where a migration failed: it was rolled back,
	// and the later ones were not tried. Those before it stay applied.
	Failed []MigrationFailure
	// Pending are the tenants the run did not touch: after a failed
	// canary, an error of AfterCanary, or the end of ctx.
	Pending []tenant.ID
	// Stopped says why the run stopped before it had tried every tenant
	// (nil if it did not).
	Stopped error
}

// MigrationFailure is one tenant's failed migration.
type MigrationFailure struct {
	Tenant tenant.ID
	// Version and File name the migration that failed.
	Version int
	File    string
	// Err is why: PostgreSQL's error for the file, or what the
	// fail-closed check refused.
	Err error
}

// behind is a tenant that lacks a migration: its placement, and the
// versions the control plane's ledger has for it.
type behind struct {
	id      tenant.ID
	p       placement
	applied []int
}

// Migrate applies the pending tenant migrations of AdminConfig.Migrations
// to every placed tenant (every state but requested, deleted and failed),
// on every tier: in the shared database for the standard tier, in the
// tenant's own database for the others. Tenants are migrated
// Parallelism at a time, each tenant's migrations in version order; a
// tenant whose migration fails keeps the migrations before it and is
// reported, and the other tenants go on (outside the canary). Migrate
// returns the report, and an error wrapping [ErrMigrationFailed] if any
// tenant failed (the report is returned then too).
//
// Finding the tenants behind is one query to the control plane, so a run
// with nothing to do costs one query, whatever the number of tenants: a
// tenant that has the newest version has all (a new version must be
// numbered above every recorded one, see [OpenAdmin], and each tenant
// applies them in order).
//
// Each migration of each tenant runs in one transaction on the tenant's
// database: an advisory lock on the tenant (so two runs of Migrate, in
// this process or another, take turns), the ledger checked again (a run
// that got there first is not repeated), SET LOCAL search_path = the
// tenant's schema, the file (several statements allowed), RESET ALL, the
// fail-closed check below, the ledger row, the commit. For the standard
// tier the ledger is the control plane's, in the same transaction; a
// tenant with a database of its own writes that database's ledger, and
// the control plane's row follows the commit (a later run copies a row
// the control plane lacks, and does not apply the migration again). So a
// crash at any point never applies a migration twice.
//
// Fail closed: after the file, in its transaction, every relation of the
// tenant's schema must be one that row level security binds, or the
// migration is rolled back and fails naming what it refused:
//
//   - every table (partitioned ones and partitions too) must have a
//     column tenant_id text NOT NULL; store does not add it (a migration
//     declares its tables' columns), but sets its default to the tenant,
//     enables and forces row level security and (re)creates the isolation
//     policy on every table of the schema, and grants SELECT, INSERT,
//     UPDATE and DELETE on the tables (SELECT and INSERT only on a table
//     marked append-only: see [AppendOnlyMark]) and USAGE and SELECT on
//     the sequences to the tenant's role;
//   - refused: materialized views and foreign tables (row level security
//     does not apply to them), views without security_invoker = true,
//     SECURITY DEFINER functions (both would run with their owner's
//     privileges), rules other than a view's, permissive policies other
//     than the isolation policy (they would widen it; restrictive ones are
//     allowed), relations, functions or the schema owned by another role
//     than the admin, privileges on the schema for any role but the
//     tenant's own (USAGE), a role left changed (SET ROLE), and a file
//     that commits or rolls back.
//
// A file is trusted SQL of the application, run by the admin role with
// search_path the tenant's schema: write names unqualified, so that the
// same file serves every tenant. It may read and write the tenant's rows:
// while it runs, the tenant's tables do not force row level security on
// their owner, the admin, and their tenant_id defaults to the tenant's ID
// (the check forces them again before the commit). It must not control
// the transaction: [OpenAdmin] refuses a file with a top-level BEGIN,
// START TRANSACTION, COMMIT, END, ROLLBACK, ABORT, SAVEPOINT, RELEASE or
// PREPARE TRANSACTION, naming the line (strings, quoted identifiers,
// comments and function bodies are told apart as PostgreSQL tells them),
// and a file that ends its transaction anyway fails when it runs (what it
// committed stays, its tables secured again). What cannot run inside a
// transaction (CREATE INDEX CONCURRENTLY, VACUUM) fails, refused by
// PostgreSQL. The file is read with standard_conforming_strings on.
// Settings made with SET end with the migration. What the file does outside the tenant's schema is
// not checked.
func (a *Admin) Migrate(ctx context.Context, opts MigrateOptions) (*MigrateReport, error) {
	switch {
	case opts.Parallelism < 0:
		return nil, fmt.Errorf("store: migrate: %w: MigrateOptions.Parallelism must be 0 (meaning 4) or more, got %d", ErrInvalidConfig, opts.Parallelism)
	case opts.Canary < 0:
		return nil, fmt.Errorf("store: migrate: %w: MigrateOptions.Canary must be 0 (no canary) or more, got %d", ErrInvalidConfig, opts.Canary)
	}
	if opts.Parallelism == 0 {
		opts.Parallelism = 4
	}
	rep := &MigrateReport{}
	if len(a.migrations) == 0 {
		return rep, nil
	}
	tenants, err := a.tenantsBehind(ctx, opts.Tenants)
	if err != nil {
		return nil, fmt.Errorf("store: migrate: find the tenants behind: %w", err)
	}
	rep.Total = len(tenants)
	r := &migrateRun{a: a, opts: opts, rep: rep}
	rest := tenants
	if opts.Canary > 0 && len(tenants) > 0 {
		canary := tenants[:min(opts.Canary, len(tenants))]
		rest = tenants[len(canary):]
		for _, t := range canary {
			rep.Canary = append(rep.Canary, t.id)
		}
		r.run(ctx, canary)
		switch {
		case len(rep.Failed) > 0:
			rep.Stopped = fmt.Errorf("%d of the %d canary tenants failed: the other %d tenants were not touched", len(rep.Failed), len(canary), len(rest))
		case rep.Stopped != nil:
		case opts.AfterCanary != nil:
			if err := opts.AfterCanary(ctx, slices.Clone(rep.Canary)); err != nil {
				rep.Stopped = fmt.Errorf("MigrateOptions.AfterCanary: %w", err)
			}
		}
		if rep.Stopped != nil {
			for _, t := range rest {
				rep.Pending = append(rep.Pending, t.id)
			}
			return r.finish(ctx)
		}
	}
	r.run(ctx, rest)
	return r.finish(ctx)
}

// tenantsBehind returns the placed tenants that lack the newest
// migration (restricted to only, if set), in ID order, with the versions
// they have. (The sort is Go's: an ORDER BY makes PostgreSQL sort every
// tenant for a merge join, which costs more than the query otherwise.)
func (a *Admin) tenantsBehind(ctx context.Context, only []tenant.ID) ([]behind, error) {
	sql := `SELECT t.id, t.placement,
			ARRAY(SELECT m.version FROM tenancy.tenant_migrations m WHERE m.tenant_id = t.id ORDER BY 1)
		FROM tenancy.tenants t
		WHERE t.state <> ALL (ARRAY['requested', 'deleted', 'failed'])
		  AND NOT EXISTS (SELECT 1 FROM tenancy.tenant_migrations m WHERE m.tenant_id = t.id AND m.version = $1)`
	args := []any{a.migrations[len(a.migrations)-1].version}
	if only != nil {
		ids := make([]string, len(only))
		for i, id := range only {
			ids[i] = id.String()
		}
		sql += ` AND t.id = ANY ($2)`
		args = append(args, ids)
	}
	rows, err := a.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	tenants, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (behind, error) {
		var b behind
		var id string
		if err := r.Scan(&id, &b.p, &b.applied); err != nil {
			return b, err
		}
		var err error
		b.id, err = tenant.ParseID(id)
		return b, err
	})
	slices.SortFunc(tenants, func(x, y behind) int { return strings.Compare(x.id.String(), y.id.String()) })
	return tenants, err
}

// migrateRun is the state of one run of Migrate.
type migrateRun struct {
	a    *Admin
	opts MigrateOptions
	mu   sync.Mutex // guards rep and serialises opts.Progress
	rep  *MigrateReport
}

// run migrates tenants, opts.Parallelism at a time, until all are done or
// ctx ends; those not started then are pending.
func (r *migrateRun) run(ctx context.Context, tenants []behind) {
	next := make(chan behind)
	var wg sync.WaitGroup
	for range min(r.opts.Parallelism, len(tenants)) {
		wg.Go(func() {
			for t := range next {
				r.done(t.id, r.a.migrateTenant(ctx, t))
			}
		})
	}
	i := 0
feed:
	for ; i < len(tenants); i++ {
		select {
		case next <- tenants[i]:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range tenants[i:] {
		r.rep.Pending = append(r.rep.Pending, t.id)
	}
	if i < len(tenants) && r.rep.Stopped == nil {
		r.rep.Stopped = ctx.Err()
	}
}

// done records one tenant's outcome and reports progress.
func (r *migrateRun) done(id tenant.ID, f *MigrationFailure) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	if f == nil {
		r.rep.Migrated = append(r.rep.Migrated, id)
	} else {
		r.rep.Failed = append(r.rep.Failed, *f)
		err = fmt.Errorf("migration %d (%s): %w", f.Version, f.File, f.Err)
		r.a.log.Warn("store: tenant migration failed", "tenant_id", id.String(), "version", f.Version, "file", f.File, "error", f.Err)
	}
	if r.opts.Progress != nil {
		r.opts.Progress(MigrateProgress{Tenant: id, Err: err, Migrated: len(r.rep.Migrated), Failed: len(r.rep.Failed), Total: r.rep.Total})
	}
}

// finish sorts the report and makes Migrate's error.
func (r *migrateRun) finish(ctx context.Context) (*MigrateReport, error) {
	rep := r.rep
	byID := func(x, y tenant.ID) int { return strings.Compare(x.String(), y.String()) }
	slices.SortFunc(rep.Migrated, byID)
	slices.SortFunc(rep.Pending, byID)
	slices.SortFunc(rep.Failed, func(x, y MigrationFailure) int { return byID(x.Tenant, y.Tenant) })
	r.a.log.InfoContext(ctx, "store: tenant migrations run", "total", rep.Total, "migrated", len(rep.Migrated), "failed", len(rep.Failed), "pending", len(rep.Pending))
	switch {
	case len(rep.Failed) > 0:
		f := rep.Failed[0]
		msg := fmt.Sprintf("%d of %d tenants failed (the first: tenant %s, migration %d (%s): %v)", len(rep.Failed), rep.Total, f.Tenant, f.Version, f.File, f.Err)
		if rep.Stopped != nil {
			return rep, fmt.Errorf("store: migrate: %w: %s; stopped: %w", ErrMigrationFailed, msg, rep.Stopped)
		}
		return rep, fmt.Errorf("store: migrate: %w: %s", ErrMigrationFailed, msg)
	case rep.Stopped != nil:
		return rep, fmt.Errorf("store: migrate: stopped with %d of %d tenants pending: %w", len(rep.Pending), rep.Total, rep.Stopped)
	}
	return rep, nil
}

// migrateTenant applies to tenant t the migrations it lacks, in order,
// and returns the first failure (nil if none).
func (a *Admin) migrateTenant(ctx context.Context, t behind) *MigrationFailure {
	var pending []migration
	for _, m := range a.migrations {
		if !slices.Contains(t.applied, m.version) {
			pending = append(pending, m)
		}
	}
	if len(pending) == 0 {
		return nil
	}
	tgt, err := a.targetOf(ctx, t.p)
	if err != nil {
		return &MigrationFailure{Tenant: t.id, Version: pending[0].version, File: pending[0].file, Err: err}
	}
	defer tgt.close()
	for _, m := range pending {
		if err := a.migrateOne(ctx, tgt, t.id, t.p, m); err != nil {
			return &MigrationFailure{Tenant: t.id, Version: m.version, File: m.file, Err: err}
		}
	}
	return nil
}

// migrateLockKey is the key of the advisory lock that one tenant's
// migrations take, on the tenant's database.
func migrateLockKey(id tenant.ID) string { return "tenancy.migrate:" + id.String() }

// migrateOne applies migration m to tenant id placed at p, in its own
// transaction on tgt; see Migrate.
func (a *Admin) migrateOne(ctx context.Context, tgt target, id tenant.ID, p placement, m migration) error {
	own := p.ownDatabase()
	err := pgx.BeginFunc(ctx, tgt.pool, func(tx pgx.Tx) error {
		// The lock first, in a statement of its own: the check after it
		// then sees what a run that held the lock before committed.
		b := &pgx.Batch{}
		b.Queue(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, migrateLockKey(id))
		var role, state string
		var done bool
		var started time.Time
		if own {
			b.Queue(`SELECT current_user, now(), 'active',
				EXISTS (SELECT 1 FROM tenancy.tenant_migrations WHERE tenant_id = $1 AND version = $2)`, id.String(), m.version).
				QueryRow(func(r pgx.Row) error { return r.Scan(&role, &started, &state, &done) })
		} else {
			// The tenant's row is locked against DropTenant until the
			// commit (the ledger's foreign key takes the same lock).
			b.Queue(`SELECT current_user, now(), t.state,
				EXISTS (SELECT 1 FROM tenancy.tenant_migrations m WHERE m.tenant_id = t.id AND m.version = $2)
				FROM tenancy.tenants t WHERE t.id = $1 FOR KEY SHARE OF t`, id.String(), m.version).
				QueryRow(func(r pgx.Row) error {
					err := r.Scan(&role, &started, &state, &done)
					if errors.Is(err, pgx.ErrNoRows) {
						return ErrUnknownTenant
					}
					return err
				})
		}
		b.Queue(`SET LOCAL search_path = ` + q(p.Schema))
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		switch state {
		case string(tenant.StateRequested), string(tenant.StateDeleted), string(tenant.StateFailed):
			return fmt.Errorf("%w: the tenant is %s now", ErrUnknownTenant, state)
		}
		if done {
			return nil // another run applied it
		}
		objs, err := a.runFile(ctx, tx, id, p, m, role, started)
		if err != nil {
			return err
		}
		if err := a.secureTables(ctx, tx, id, p, objs.tables); err != nil {
			return err
		}
		if err := grantObjects(ctx, tx, p.Schema, a.workerOf(p), objs); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO tenancy.tenant_migrations (tenant_id, version) VALUES ($1, $2)`, id.String(), m.version)
		return err
	})
	if err != nil {
		return err
	}
	if own {
		// The tenant's database has the row; the control plane gets its
		// copy (a crash before this leaves it to the next run to copy).
		if _, err := a.pool.Exec(ctx, `INSERT INTO tenancy.tenant_migrations (tenant_id, version) VALUES ($1, $2)
			ON CONFLICT DO NOTHING`, id.String(), m.version); err != nil {
			return fmt.Errorf("record it in the control plane (it is applied; the next run records it): %w", err)
		}
	}
	return nil
}
