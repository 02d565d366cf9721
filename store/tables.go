package store

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Table declares a tenant table: one that lives in every tenant's schema
// (or, with [Admin.CreateSharedTable], one shared table holding rows of many
// tenants). Store adds to it a first column
//
//	tenant_id text NOT NULL DEFAULT tenancy.current_tenant()
//
// which is filled in from the session's tenant, enables and FORCEs row
// level security, and installs the policy tenancy_isolation, which lets a
// session see and write only rows of its own tenant and raises an error
// for a session that has no tenant.
//
// Every tenant's copy of a table must have the same shape, so that cached
// statements fit every tenant: put per-tenant custom fields in a jsonb
// column, never in per-tenant DDL.
type Table struct {
	// Name is the unqualified table name: [a-z][a-z0-9_]*, at most 63
	// bytes, not starting with "pg_".
	Name string
	// Columns is the body of CREATE TABLE after the tenant_id column:
	// column definitions and table constraints, e.g.
	// "req_id text PRIMARY KEY, status text NOT NULL". It is trusted SQL
	// from the application, never input. It must not declare tenant_id (it
	// may use it in constraints, e.g. PRIMARY KEY (tenant_id, id)).
	Columns string
}

var tableNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

func (t Table) validate() error {
	switch {
	case !tableNameRE.MatchString(t.Name):
		return fmt.Errorf("%w: Name %q must match [a-z][a-z0-9_]* and be at most 63 bytes", ErrInvalidTable, t.Name)
	case strings.HasPrefix(t.Name, "pg_"):
		return fmt.Errorf("%w: Name %q must not start with pg_ (reserved by PostgreSQL)", ErrInvalidTable, t.Name)
	case strings.TrimSpace(t.Columns) == "":
		return fmt.Errorf("%w: table %s: Columns must declare at least one column", ErrInvalidTable, t.Name)
	case strings.Contains(t.Columns, ";"):
		return fmt.Errorf("%w: table %s: Columns must not contain ';'", ErrInvalidTable, t.Name)
	}
	return nil
}

// createTable creates t in schema and secures it with g.
func createTable(ctx context.Context, tx pgx.Tx, g guard, schema string, t Table) error {
	name := pgx.Identifier{schema, t.Name}.Sanitize()
	_, err := tx.Exec(ctx, `CREATE TABLE `+name+` (
	tenant_id text NOT NULL DEFAULT `+g.def+`,
	`+t.Columns+`)`)
	if err != nil {
		return fmt.Errorf("create table %s: %w", name, err)
	}
	return secureTable(ctx, tx, g, schema, t.Name)
}

// secureTable enables and forces row level security on an existing table
// that has a tenant_id column, and (re)creates the isolation policy.
func secureTable(ctx context.Context, tx pgx.Tx, g guard, schema, table string) error {
	name := pgx.Identifier{schema, table}.Sanitize()
	err := execAll(ctx, tx,
		`ALTER TABLE `+name+` ENABLE ROW LEVEL SECURITY`,
		`ALTER TABLE `+name+` FORCE ROW LEVEL SECURITY`,
		`DROP POLICY IF EXISTS tenancy_isolation ON `+name,
		`CREATE POLICY tenancy_isolation ON `+name+` AS PERMISSIVE FOR ALL
			USING `+g.policy+` WITH CHECK `+g.check,
	)
	if err != nil {
		return fmt.Errorf("secure table %s: %w", name, err)
	}
	return nil
}

// CreateSharedTable creates a table in a shared schema (not a tenant's)
// whose rows belong to many tenants, isolated by row level security alone:
// every tenant role may read and write it, and sees only its own rows.
// Prefer per-tenant tables ([AdminConfig.Tables]); shared tables suit small
// cross-tenant indexes. Every unique or exclusion constraint of a shared
// table must include tenant_id (PRIMARY KEY (tenant_id, id)), or one tenant
// could learn another's keys from a unique violation; CreateSharedTable
// refuses the table otherwise. The table is recorded in the control plane, so that
// dropping a tenant deletes its rows there too. schema must match
// [a-z][a-z0-9_]* and must not be a tenant schema or tenancy.
func (a *Admin) CreateSharedTable(ctx context.Context, schema string, t Table) error {
	if err := t.validate(); err != nil {
		return fmt.Errorf("store: create shared table: %w", err)
	}
	if !tableNameRE.MatchString(schema) || strings.HasPrefix(schema, "tenant_") || schema == "tenancy" || strings.HasPrefix(schema, "pg_") {
		return fmt.Errorf("store: create shared table: %w: schema %q must match [a-z][a-z0-9_]* and not be tenancy, pg_* or a tenant schema", ErrInvalidTable, schema)
	}
	group := q(a.sharedWorkRole())
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		s := pgx.Identifier{schema}.Sanitize()
		if err := execAll(ctx, tx, `CREATE SCHEMA IF NOT EXISTS `+s, `GRANT USAGE ON SCHEMA `+s+` TO `+group); err != nil {
			return err
		}
		if err := createTable(ctx, tx, sharedTableGuard(a.mode), schema, t); err != nil {
			return err
		}
		name := pgx.Identifier{schema, t.Name}.Sanitize()
		// A unique key without tenant_id would let one tenant learn, through
		// a unique violation, which keys another tenant holds.
		var bad []string
		// An exclusion constraint must compare tenant_id with equality:
		// "tenant_id WITH <>" would make one tenant's rows conflict with
		// every other tenant's.
		rows, err := tx.Query(ctx, `
			WITH t AS (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attname = 'tenant_id')
			SELECT i.indexrelid::regclass::text FROM pg_index i, t
			WHERE i.indrelid = $1::regclass AND i.indisunique
			  AND NOT t.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1]) -- key columns only, not INCLUDE
			UNION
			SELECT c.conname::text FROM pg_constraint c, t
			WHERE c.conrelid = $1::regclass AND c.contype = 'x'
			  AND NOT EXISTS (SELECT 1 FROM unnest(c.conkey, c.conexclop) k(attnum, op) JOIN pg_operator o ON o.oid = k.op
			                  WHERE k.attnum = t.attnum AND o.oprname = '=')
			ORDER BY 1`, name)
		if err != nil {
			return err
		}
		if bad, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		if len(bad) > 0 {
			return fmt.Errorf("%w: table %s: unique or exclusion constraints %v do not include tenant_id (with = in an exclusion), so a tenant could probe another tenant's keys: add tenant_id to them, e.g. PRIMARY KEY (tenant_id, id) or EXCLUDE (tenant_id WITH =, ...)", ErrInvalidTable, t.Name, bad)
		}
		if err := execAll(ctx, tx,
			// The admin deletes a dropped tenant's rows (DropTenant).
			`CREATE POLICY tenancy_admin ON `+name+` FOR ALL TO `+q(a.adminRole)+` USING (true) WITH CHECK (true)`,
			`GRANT SELECT, INSERT, UPDATE, DELETE ON `+name+` TO `+group,
			`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA `+s+` TO `+group,
		); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO tenancy.shared_tables (schema_name, table_name) VALUES ($1, $2)`, schema, t.Name)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: create shared table %s.%s: %w", schema, t.Name, err)
	}
	return nil
}
