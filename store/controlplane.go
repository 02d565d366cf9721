package store

import (
	"context"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/rtmx-ai/tenancy/tenant"
)

// ControlPlaneLock is the key of the transaction-level advisory lock
// (pg_advisory_xact_lock) that serialises changes to the schema of the
// control plane (schema tenancy) across processes: store takes it for its
// migrations, the keysets schema and the audit checkpoints, and every
// package that adds tables to the control plane (audit's platform trail,
// lifecycle's journal, lifecycle/invite's invitations) takes it for its
// install, so that two processes starting at once take turns rather than
// fail on a half-made table. Its value spells "tenancy" in ASCII.
const ControlPlaneLock int64 = 0x74656e616e6379

// controlPlaneLock is ControlPlaneLock, as store's own code names it.
const controlPlaneLock = ControlPlaneLock

// controlPlaneSteps are the versioned migrations of schema tenancy. Step i
// brings the schema to version i+1. Steps are append-only: never edit one
// that has shipped. Each runs in the migration transaction.
var controlPlaneSteps = []func(ctx context.Context, tx pgx.Tx) error{
	// 1: the tenant directory.
	func(ctx context.Context, tx pgx.Tx) error {
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
	ensureKeysetsSchemaTx,
	// 3: tenant logins: which login role (by OID) is which tenant, for the
	// RLS guard, and the secret version and quota of each. Row level
	// security lets a tenant login read its own row only.
	func(ctx context.Context, tx pgx.Tx) error {
		return execAll(ctx, tx,
			`CREATE TABLE tenancy.tenant_logins (
				tenant_id      text COLLATE "C" PRIMARY KEY REFERENCES tenancy.tenants (id),
				role_oid       oid NOT NULL UNIQUE,
				role_name      text COLLATE "C" NOT NULL UNIQUE,
				secret_version int NOT NULL CHECK (secret_version > 0),
				conn_limit     int NOT NULL CHECK (conn_limit > 0))`,
			`ALTER TABLE tenancy.tenant_logins ENABLE ROW LEVEL SECURITY`,
		)
	},
	// 4: placements beyond the shared database, and fleet migrations.
	// Dedicated clusters are registered by name (their connection strings
	// are configuration, never stored); a login on another database or
	// cluster records where it lives, and has no OID on this cluster.
	// tenant_migrations is the ledger of tenant migrations: which tenant
	// has which version (see migrate.go).
	func(ctx context.Context, tx pgx.Tx) error {
		return execAll(ctx, tx,
			`CREATE TABLE tenancy.clusters (
				name          text COLLATE "C" PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
				registered_at timestamptz NOT NULL DEFAULT now())`,
			`ALTER TABLE tenancy.tenant_logins
				ALTER COLUMN role_oid DROP NOT NULL,
				ADD COLUMN cluster text COLLATE "C" REFERENCES tenancy.clusters (name),
				ADD COLUMN database text COLLATE "C"`,
			`CREATE TABLE tenancy.migrations (
				version     int PRIMARY KEY CHECK (version > 0),
				name        text NOT NULL,
				checksum    bytea NOT NULL,
				recorded_at timestamptz NOT NULL DEFAULT now())`,
			`CREATE TABLE tenancy.tenant_migrations (
				tenant_id  text COLLATE "C" NOT NULL REFERENCES tenancy.tenants (id),
				version    int NOT NULL REFERENCES tenancy.migrations (version),
				applied_at timestamptz NOT NULL DEFAULT now(),
				PRIMARY KEY (tenant_id, version))`,
		)
	},
	// 5: package blob's records (see blobs.go): each tenant's object
	// storage usage, the holds of changes in progress, per-tenant quota
	// overrides, and the bucket of a tenant that has one of its own. The
	// rows of a tenant go with its directory entry.
	func(ctx context.Context, tx pgx.Tx) error {
		return execAll(ctx, tx,
			`CREATE TABLE tenancy.blob_usage (
				tenant_id       text COLLATE "C" PRIMARY KEY REFERENCES tenancy.tenants (id) ON DELETE CASCADE,
				bytes           bigint NOT NULL DEFAULT 0 CHECK (bytes >= 0),
				objects         bigint NOT NULL DEFAULT 0 CHECK (objects >= 0),
				stale           boolean NOT NULL DEFAULT false,
				reconcile_token bigint,
				reconcile_until timestamptz,
				reconciled_at   timestamptz,
				updated_at      timestamptz NOT NULL DEFAULT now())`,
			`CREATE TABLE tenancy.blob_holds (
				id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
				tenant_id  text COLLATE "C" NOT NULL REFERENCES tenancy.blob_usage (tenant_id) ON DELETE CASCADE,
				object_key text COLLATE "C" NOT NULL CHECK (object_key <> ''),
				state      text COLLATE "C" NOT NULL CHECK (state IN ('held', 'reserved', 'orphan')),
				bytes      bigint NOT NULL DEFAULT 0,
				objects    bigint NOT NULL DEFAULT 0,
				created_at timestamptz NOT NULL DEFAULT now(),
				expires_at timestamptz NOT NULL)`,
			`CREATE UNIQUE INDEX blob_holds_live_key ON tenancy.blob_holds (tenant_id, object_key) WHERE state IN ('held', 'reserved')`,
			`CREATE INDEX blob_holds_tenant ON tenancy.blob_holds (tenant_id, state)`,
			`CREATE TABLE tenancy.blob_quotas (
				tenant_id   text COLLATE "C" PRIMARY KEY REFERENCES tenancy.tenants (id) ON DELETE CASCADE,
				max_bytes   bigint NOT NULL CHECK (max_bytes >= -1),
				max_objects bigint NOT NULL CHECK (max_objects >= -1),
				updated_at  timestamptz NOT NULL DEFAULT now())`,
			`CREATE TABLE tenancy.tenant_buckets (
				tenant_id  text COLLATE "C" PRIMARY KEY REFERENCES tenancy.tenants (id) ON DELETE CASCADE,
				url        text NOT NULL CHECK (url <> '' AND length(url) <= 2048),
				updated_at timestamptz NOT NULL DEFAULT now())`,
		)
	},
}

// idCheck is the SQL check of a tenant ID column: tenant.ParseID's
// grammar and length (the column name is a constant of this package).
func idCheck(column string) string {
	return column + ` ~ '^[a-z](_?[a-z0-9])*$' AND length(` + column + `) <= ` + strconv.Itoa(tenant.MaxIDLen)
}

// sessionRoleSQL is the OID of the session's login role. session_user is
// the role the connection authenticated as: only a superuser session can
// change it (SET SESSION AUTHORIZATION), SET ROLE cannot.
// It is read with a cast of the quoted name (a cache lookup), not a query
// of pg_roles; the quoting makes the lookup exact for any name.
const sessionRoleSQL = `pg_catalog.to_regrole(pg_catalog.quote_ident(session_user))::pg_catalog.oid`

// ownLoginSQL is the policy of tenancy.tenant_logins for tenant logins.
const ownLoginSQL = `role_oid OPERATOR(pg_catalog.=) ` + sessionRoleSQL

// loginTenantSQL is the tenant of the session's login role, or NULL.
const loginTenantSQL = `(SELECT l.tenant_id FROM tenancy.tenant_logins l WHERE l.role_oid OPERATOR(pg_catalog.=) ` + sessionRoleSQL + `)`

// guard is the row-level-security policy expression and the tenant_id
// default of a tenant table. Every name and operator in the policy is
// schema-qualified and bound when the policy is created, so nothing on a
// caller's search_path (pg_temp included) can shadow it.
type guard struct{ policy, check, def string }

// sharedTableGuard is the guard of a table that holds rows of many
// tenants (a shared table, and every table of ModeSharedPool).
//
// In ModeTenantLogin the tenant is looked up from the session's login
// role, by OID in tenancy.tenant_logins, once per statement (an InitPlan),
// so the per-row cost is one comparison; a session that is not a tenant
// login gets an error from tenancy.no_tenant at the first row it would
// see. (Such a session has no privilege on any tenant table in the first
// place.) The raise is inside the sub-select so that the planner, which
// evaluates stable functions of constants to estimate selectivity, never
// calls it.
//
// In ModeSharedPool it is tenancy.current_tenant(), which PostgreSQL
// inlines: the planner pre-evaluates it to estimate selectivity, so a
// statement without a tenant fails even on an empty table, and the
// executor evaluates it per row, so a cached plan cannot skip it.
func sharedTableGuard(m Mode) guard {
	def := `tenancy.current_tenant()`
	if m == ModeSharedPool {
		// A setting can name any ID, also one never created or already
		// dropped: rows are written only for a placed tenant, so none is
		// left behind by a dropped tenant or waits for a future one.
		p := `(tenant_id OPERATOR(pg_catalog.=) tenancy.current_tenant())`
		return guard{p, `(` + p + ` AND tenancy.is_placed(tenant_id))`, def}
	}
	p := `(tenant_id OPERATOR(pg_catalog.=) (SELECT COALESCE(` + loginTenantSQL + `, tenancy.no_tenant(NULL))))`
	return guard{p, p, def}
}

// tenantTableGuard is the guard of a table in the schema of tenant id,
// whose login is role, in ModeTenantLogin: only that login has privileges
// on the schema, so the policy names both as constants and needs no
// lookup. For the tenant's own sessions the planner folds it to
// tenant_id = '<id>' (it evaluates session_user to estimate selectivity);
// any other session gets an error from tenancy.no_tenant when the
// statement is planned, even on an empty table. The executor checks
// session_user per row all the same, so a plan cannot outlive its session.
func tenantTableGuard(id tenant.ID, role string) guard {
	lit := literal(id.String())
	p := `(tenant_id OPERATOR(pg_catalog.=) CASE WHEN session_user OPERATOR(pg_catalog.=) ` + literal(role) + `::pg_catalog.name
			THEN ` + lit + `::pg_catalog.text ELSE tenancy.no_tenant(NULL) END)`
	return guard{policy: p, check: p, def: lit}
}

// noTenantSQL creates tenancy.no_tenant(text), which raises the error of
// a session without a tenant (or, in ModeSharedPool, with a tenant setting
// but not the shared login).
const noTenantSQL = `CREATE OR REPLACE FUNCTION tenancy.no_tenant(t text) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  IF t IS NULL OR t = '' THEN
    RAISE EXCEPTION 'tenancy: this session has no tenant'
      USING ERRCODE = '42501',
            HINT = 'Run tenant-scoped statements through tenancy/store with a tenant in the context.';
  END IF;
  RAISE EXCEPTION 'tenancy: app.tenant_id is set, but this session is not the shared login'
    USING ERRCODE = '42501';
END
$f$`

// guardSQL returns the definitions of the guard functions of mode m:
// tenancy.current_tenant(), the default of every tenant_id column (and
// the guard of ModeSharedPool), and tenancy.no_tenant(text), which raises.
// Both have bodies bound at creation (BEGIN ATOMIC, qualified names), so
// no object a session creates can shadow what they call.
func guardSQL(m Mode, sharedRole string) []string {
	noTenant := noTenantSQL
	isPlaced := `CREATE OR REPLACE FUNCTION tenancy.is_placed(t text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT EXISTS (SELECT 1 FROM tenancy.tenants WHERE id OPERATOR(pg_catalog.=) t
                    AND state OPERATOR(pg_catalog.<>) ALL (ARRAY['requested', 'deleted', 'failed']));
END`
	if m == ModeSharedPool {
		return []string{noTenant, isPlaced, `CREATE OR REPLACE FUNCTION tenancy.current_tenant() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
  SELECT CASE WHEN session_user OPERATOR(pg_catalog.=) ` + literal(sharedRole) + `::pg_catalog.name
               AND pg_catalog.current_setting('app.tenant_id', true) OPERATOR(pg_catalog.<>) ''
              THEN pg_catalog.current_setting('app.tenant_id', true)
              ELSE tenancy.no_tenant(pg_catalog.current_setting('app.tenant_id', true)) END;
END`}
	}
	return []string{noTenant, isPlaced, `CREATE OR REPLACE FUNCTION tenancy.current_tenant() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
  SELECT COALESCE(` + loginTenantSQL + `, tenancy.no_tenant(NULL));
END`}
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
func ControlPlaneVersion() int { return len(controlPlaneSteps) }
