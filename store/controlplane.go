package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rtmx-ai/tenancy/tenant"
)

// controlPlaneLock is the advisory lock key that serialises control-plane
// migrations across processes.
const controlPlaneLock = 0x74656e616e6379 // "tenancy"

// controlPlaneSteps are the versioned migrations of schema tenancy. Step i
// brings the schema to version i+1. Steps are append-only: never edit one
// that has shipped. Each runs in the migration transaction.
var controlPlaneSteps = []func(ctx context.Context, db *DB, tx pgx.Tx) error{
	// 1: the tenant directory and the row-level-security guard.
	func(ctx context.Context, db *DB, tx pgx.Tx) error {
		return execAll(ctx, tx,
			`CREATE TABLE tenancy.meta (
				key   text PRIMARY KEY,
				value text NOT NULL)`,
			`CREATE TABLE tenancy.tenants (
				id               text PRIMARY KEY CHECK (`+idCheck("id")+`),
				name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
				tier             text NOT NULL CHECK (tier IN ('standard', 'enterprise', 'government')),
				region           text NOT NULL DEFAULT '',
				state            text NOT NULL CHECK (state IN ('requested', 'provisioning', 'active', 'suspended', 'decommissioning', 'deleted', 'failed')),
				placement        jsonb NOT NULL DEFAULT '{}',
				settings_version bigint NOT NULL DEFAULT 0,
				created_at       timestamptz NOT NULL DEFAULT now(),
				updated_at       timestamptz NOT NULL DEFAULT now())`,
			`CREATE TABLE tenancy.shared_tables (
				schema_name text NOT NULL,
				table_name  text NOT NULL,
				PRIMARY KEY (schema_name, table_name))`,
		)
	},
	// 2: wrapped keysets of package keys (see keysets.go).
	func(ctx context.Context, db *DB, tx pgx.Tx) error { return ensureKeysetsSchemaTx(ctx, tx) },
}

// guardSQL returns the definition of the row-level-security guard. The role
// prefix is validated by OpenConfig ([a-z0-9_]) and quoted as a literal.
//
// tenancy.current_tenant() returns the transaction's tenant, and raises when
// app.tenant_id is unset or empty (a pooled connection that once had it set
// returns ” rather than NULL), or when it does not name the tenant role the
// transaction has assumed. It is a SQL function that PostgreSQL inlines into
// the policy, so the per-row cost is a comparison of two settings; the
// PL/pgSQL function that raises runs only on failure. See isolationPolicy
// for when it is evaluated.
// idCheck is the SQL check of a tenant ID column: tenant.ParseID's
// grammar and length (the column name is a constant of this package).
func idCheck(column string) string {
	return column + ` ~ '^[a-z](_?[a-z0-9])*$' AND length(` + column + `) <= ` + strconv.Itoa(tenant.MaxIDLen)
}

func guardSQL(rolePrefix string) []string {
	return []string{`CREATE OR REPLACE FUNCTION tenancy.no_tenant(t text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $f$
BEGIN
  IF t IS NULL OR t = '' THEN
    RAISE EXCEPTION 'tenancy: no tenant is set for this transaction (app.tenant_id is unset)'
      USING ERRCODE = '42501',
            HINT = 'Run tenant-scoped statements through tenancy/store with a tenant in the context.';
  END IF;
  RAISE EXCEPTION 'tenancy: app.tenant_id does not match the tenant role of this transaction'
    USING ERRCODE = '42501';
END
$f$`,
		`CREATE OR REPLACE FUNCTION tenancy.current_tenant() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $f$
  SELECT CASE WHEN current_user = '` + strings.ReplaceAll(rolePrefix, "'", "''") + `tenant_' || current_setting('app.tenant_id', true)
              THEN current_setting('app.tenant_id', true)
              ELSE tenancy.no_tenant(current_setting('app.tenant_id', true)) END
$f$`}
}

func execAll(ctx context.Context, tx pgx.Tx, stmts ...string) error {
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// ControlPlaneVersion is the control-plane schema version this package
// creates and expects.
var ControlPlaneVersion = len(controlPlaneSteps)

func (db *DB) migrateControlPlane(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, db.admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(controlPlaneLock)); err != nil {
			return err
		}
		if err := execAll(ctx, tx,
			`CREATE SCHEMA IF NOT EXISTS tenancy`,
			`CREATE TABLE IF NOT EXISTS tenancy.schema_version (version int NOT NULL)`,
		); err != nil {
			return err
		}
		var version int
		err := tx.QueryRow(ctx, `SELECT version FROM tenancy.schema_version`).Scan(&version)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if _, err := tx.Exec(ctx, `INSERT INTO tenancy.schema_version VALUES (0)`); err != nil {
				return err
			}
		case err != nil:
			return err
		}
		if version > len(controlPlaneSteps) {
			return fmt.Errorf("control-plane schema is at version %d, newer than this build of tenancy knows (%d): upgrade tenancy", version, len(controlPlaneSteps))
		}
		for v := version; v < len(controlPlaneSteps); v++ {
			if err := controlPlaneSteps[v](ctx, db, tx); err != nil {
				return fmt.Errorf("step %d: %w", v+1, err)
			}
			db.log.InfoContext(ctx, "store: control plane migrated", "version", v+1)
		}
		if _, err := tx.Exec(ctx, `UPDATE tenancy.schema_version SET version = $1`, len(controlPlaneSteps)); err != nil {
			return err
		}
		// The role prefix is fixed for a database once chosen: the guard and
		// every tenant role depend on it.
		var prefix string
		err = tx.QueryRow(ctx, `INSERT INTO tenancy.meta (key, value) VALUES ('role_prefix', $1)
			ON CONFLICT (key) DO UPDATE SET value = tenancy.meta.value RETURNING value`, db.rolePrefix).Scan(&prefix)
		if err != nil {
			return err
		}
		if prefix != db.rolePrefix {
			return fmt.Errorf("%w: RolePrefix is %q but this database was set up with %q", ErrInvalidConfig, db.rolePrefix, prefix)
		}
		if err := db.ensureGroupRole(ctx, tx); err != nil {
			return err
		}
		group := pgx.Identifier{db.groupRole()}.Sanitize()
		app := pgx.Identifier{db.appRole}.Sanitize()
		return execAll(ctx, tx, append(guardSQL(db.rolePrefix),
			`REVOKE ALL ON SCHEMA tenancy FROM PUBLIC`,
			`REVOKE ALL ON FUNCTION tenancy.current_tenant(), tenancy.no_tenant(text) FROM PUBLIC`,
			`GRANT USAGE ON SCHEMA tenancy TO `+group+`, `+app,
			`GRANT EXECUTE ON FUNCTION tenancy.current_tenant(), tenancy.no_tenant(text) TO `+group,
			`GRANT SELECT ON tenancy.tenants TO `+app,
			// Serving reads wrapped keysets; only the admin role may write
			// (provision, rotate, shred) them.
			`GRANT SELECT ON tenancy.tenant_keysets, tenancy.tenant_keyset_tombstones TO `+app,
		)...)
	})
	if err != nil {
		return fmt.Errorf("store: migrate control plane: %w", err)
	}
	return nil
}

// groupRoleComment marks the group role as tenancy's, for its RolePrefix.
func (db *DB) groupRoleComment() string {
	return "tenancy: group of the tenant roles of RolePrefix " + strconv.Quote(db.rolePrefix)
}

// ensureGroupRole creates the NOLOGIN group role of the tenant roles if it
// does not exist, marked with a comment, and otherwise checks that the
// existing role carries that mark. Roles are cluster-wide: an unmarked role
// of that name may belong to another deployment (even be one of its tenant
// roles), and must not be adopted. Two databases of one deployment may race
// to create it: a duplicate is not an error.
func (db *DB) ensureGroupRole(ctx context.Context, tx pgx.Tx) error {
	name, mark := db.groupRole(), db.groupRoleComment()
	if _, err := tx.Exec(ctx, `SAVEPOINT ensure_role`); err != nil {
		return err
	}
	role := pgx.Identifier{name}.Sanitize()
	_, err := tx.Exec(ctx, `CREATE ROLE `+role+` NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB`)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42710" || pgErr.Code == "23505") { // duplicate_object, or a concurrent create
		if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT ensure_role`); err != nil {
			return err
		}
		var got *string
		if err := tx.QueryRow(ctx, `SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1`, name).Scan(&got); err != nil {
			return err
		}
		if got == nil || *got != mark {
			return fmt.Errorf("%w: role %s exists but tenancy did not create it as the group role of RolePrefix %q (it has no such comment); it may belong to another deployment on this cluster: choose another RolePrefix", ErrInvalidConfig, role, db.rolePrefix)
		}
		return nil
	}
	if err != nil {
		return err
	}
	// COMMENT takes no parameters; the mark holds the validated prefix only.
	_, err = tx.Exec(ctx, `COMMENT ON ROLE `+role+` IS '`+strings.ReplaceAll(mark, "'", "''")+`'`)
	return err
}
