package store

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Config configures a [DB]. Make it with [ParseConfig] and then adjust it;
// a zero Config is not usable.
type Config struct {
	// App is the pool of the application role: least privilege, used for
	// all tenant-scoped work.
	App *pgxpool.Config
	// Admin is the pool of the admin role: DDL, provisioning and control
	// plane writes. It is never used for tenant-scoped work.
	Admin *pgxpool.Config
	// RolePrefix is prepended to the cluster-wide role names that store
	// creates (RolePrefix+"tenant_<id>", RolePrefix+"tenancy_tenants"), so
	// that several deployments can share one PostgreSQL cluster. It must
	// match [a-z][a-z0-9_]* and be at most 16 bytes; "" is allowed.
	RolePrefix string
	// Tables are the tenant tables created in every new tenant's schema.
	Tables []Table
	// PlanPerTenant makes every statement of a tenant a prepared statement
	// of its own on each connection (a comment naming the tenant is
	// appended to the SQL), so that PostgreSQL keeps a plan per tenant
	// instead of re-planning whenever a connection passes from one tenant
	// to another (role and search_path change). It pays off when few
	// tenants share a connection at a time: each connection then holds up
	// to (statements x tenants) prepared statements, bounded by pgx's
	// statement cache (ConnConfig.StatementCacheCapacity); beyond that,
	// evictions cost round trips. SQL passed to the scoped calls must then
	// be SQL, not the name of a statement prepared by hand. Off by default.
	PlanPerTenant bool
	// Logger receives store's logs; nil discards them. Logs carry tenant
	// IDs and role names, never row data or secrets.
	Logger *slog.Logger
	// WarnMemberships is the number of role memberships of the application
	// role (one per standard-tier tenant) above which store logs a warning,
	// once, at Open or when a tenant is created: PostgreSQL recomputes
	// them on every connection after any role change, on PostgreSQL 15 in
	// time that grows with their square (see "Tenant count per cluster" in
	// the package documentation). 0 means DefaultWarnMemberships; a
	// negative value turns the warning off.
	WarnMemberships int
}

// DefaultWarnMemberships is the default of [Config.WarnMemberships]: on
// PostgreSQL 15 on two cores, recomputing 2,000 memberships takes about
// 18 ms, paid by every pooled connection after every tenant provisioned
// (BenchmarkMembershipRecompute). Other versions may differ: measure.
const DefaultWarnMemberships = 2000

// ParseConfig builds a Config from the application role's and the admin
// role's connection strings (URL or keyword/value form, as pgxpool accepts).
func ParseConfig(appConnString, adminConnString string) (*Config, error) {
	app, err := pgxpool.ParseConfig(appConnString)
	if err != nil {
		return nil, fmt.Errorf("%w: application connection string: %w", ErrInvalidConfig, err)
	}
	admin, err := pgxpool.ParseConfig(adminConnString)
	if err != nil {
		return nil, fmt.Errorf("%w: admin connection string: %w", ErrInvalidConfig, err)
	}
	admin.MaxConns = 4
	return &Config{App: app, Admin: admin}, nil
}

var rolePrefixRE = regexp.MustCompile(`^(?:[a-z][a-z0-9_]*)?$`)

// DB is the tenant-scoped PostgreSQL store. It is safe for concurrent use.
type DB struct {
	app        *pgxpool.Pool
	admin      *pgxpool.Pool
	appRole    string
	adminRole  string
	rolePrefix string
	tables     []Table
	log        *slog.Logger

	planPerTenant   bool
	pgVersion       int // server_version_num
	warnMemberships int // < 0: never
	warnedMembers   atomic.Bool

	fastMode  bool     // every first statement can share the setup round trip
	slowMode  bool     // no first statement can (DescribeExec)
	warm      sync.Map // *pgx.Conn -> *warmSet
	scopes    sync.Map // tenant.ID -> *scope
	warmLimit int
}

// Open connects with the application and admin connection strings and
// default settings; see [OpenConfig].
func Open(ctx context.Context, appConnString, adminConnString string) (*DB, error) {
	cfg, err := ParseConfig(appConnString, adminConnString)
	if err != nil {
		return nil, err
	}
	return OpenConfig(ctx, cfg)
}

// OpenConfig opens both pools, creates or upgrades the control-plane schema
// (idempotent, versioned, safe to run from several processes at once), and
// checks that the application role is safe (see the package doc, layer 1).
// An unsafe role fails with an error wrapping [ErrUnsafeAppRole] that says
// what is wrong and how to fix it; nothing is left open.
func OpenConfig(ctx context.Context, cfg *Config) (*DB, error) {
	if cfg == nil || cfg.App == nil || cfg.Admin == nil {
		return nil, fmt.Errorf("%w: Config.App and Config.Admin are required: build the Config with store.ParseConfig", ErrInvalidConfig)
	}
	if len(cfg.RolePrefix) > 16 || !rolePrefixRE.MatchString(cfg.RolePrefix) {
		return nil, fmt.Errorf("%w: RolePrefix %q must match [a-z][a-z0-9_]* and be at most 16 bytes", ErrInvalidConfig, cfg.RolePrefix)
	}
	for i, t := range cfg.Tables {
		if err := t.validate(); err != nil {
			return nil, fmt.Errorf("Config.Tables[%d]: %w", i, err)
		}
	}
	db := &DB{
		rolePrefix: cfg.RolePrefix,
		tables:     append([]Table(nil), cfg.Tables...),
		log:        cfg.Logger,

		planPerTenant:   cfg.PlanPerTenant,
		warnMemberships: cfg.WarnMemberships,
	}
	if db.warnMemberships == 0 {
		db.warnMemberships = DefaultWarnMemberships
	}
	if db.log == nil {
		db.log = slog.New(slog.DiscardHandler)
	}
	appCfg := cfg.App.Copy()
	switch appCfg.ConnConfig.DefaultQueryExecMode {
	case pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol:
		db.fastMode = true
	case pgx.QueryExecModeDescribeExec:
		db.slowMode = true
	}
	db.warmLimit = appCfg.ConnConfig.StatementCacheCapacity
	if appCfg.ConnConfig.DefaultQueryExecMode == pgx.QueryExecModeCacheDescribe {
		db.warmLimit = appCfg.ConnConfig.DescriptionCacheCapacity
	}
	prevClose := appCfg.BeforeClose
	appCfg.BeforeClose = func(c *pgx.Conn) {
		db.warm.Delete(c)
		if prevClose != nil {
			prevClose(c)
		}
	}

	var err error
	if db.admin, err = pgxpool.NewWithConfig(ctx, cfg.Admin.Copy()); err != nil {
		return nil, fmt.Errorf("store: open admin pool: %w", err)
	}
	if db.app, err = pgxpool.NewWithConfig(ctx, appCfg); err != nil {
		db.admin.Close()
		return nil, fmt.Errorf("store: open application pool: %w", err)
	}
	if err := db.init(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func (db *DB) init(ctx context.Context) error {
	if err := db.admin.QueryRow(ctx, "SELECT current_user, current_setting('server_version_num')::int").Scan(&db.adminRole, &db.pgVersion); err != nil {
		return fmt.Errorf("store: connect as admin: %w", err)
	}
	if err := db.app.QueryRow(ctx, "SELECT current_user").Scan(&db.appRole); err != nil {
		return fmt.Errorf("store: connect as application role: %w", err)
	}
	if db.appRole == db.adminRole {
		return fmt.Errorf("%w: %q is both the application and the admin role: connect the application with its own least-privilege role", ErrUnsafeAppRole, db.appRole)
	}
	if err := db.migrateControlPlane(ctx); err != nil {
		return err
	}
	if err := db.checkAppRole(ctx); err != nil {
		return err
	}
	db.checkMemberships(ctx)
	return nil
}

// checkMemberships logs a warning, once per DB, when the application role
// is a member of more roles than Config.WarnMemberships. It is advice, not
// a check: a failure to count is logged and otherwise ignored.
func (db *DB) checkMemberships(ctx context.Context) {
	if db.warnMemberships < 0 || db.warnedMembers.Load() {
		return
	}
	var n int
	err := db.admin.QueryRow(ctx, `SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1`, db.appRole).Scan(&n)
	if err != nil {
		db.log.DebugContext(ctx, "store: could not count the application role's memberships (the warning about many memberships is skipped this time)", "err", err)
		return
	}
	if n > db.warnMemberships && db.warnedMembers.CompareAndSwap(false, true) {
		db.log.WarnContext(ctx, "store: the application role is a member of many roles (one per standard-tier tenant); PostgreSQL recomputes them on every connection's next call after any role or membership change in the cluster (each tenant created or dropped), on PostgreSQL 15 in time that grows with their square: spread tenants over clusters, or see \"Tenant count per cluster\" in the store package documentation",
			"app_role", db.appRole, "memberships", n, "warn_above", db.warnMemberships, "server_version_num", db.pgVersion)
	}
}

// checkAppRole enforces layer 1. It runs with the application role's own
// connection, so what it sees is what the role can do.
func (db *DB) checkAppRole(ctx context.Context) error {
	var super, bypass, createRole, inherit bool
	err := db.app.QueryRow(ctx, `SELECT rolsuper, rolbypassrls, rolcreaterole, rolinherit FROM pg_roles WHERE rolname = current_user`).
		Scan(&super, &bypass, &createRole, &inherit)
	if err != nil {
		return fmt.Errorf("store: inspect application role: %w", err)
	}
	role := pgx.Identifier{db.appRole}.Sanitize()
	var problems []string
	if super {
		problems = append(problems, fmt.Sprintf("it is a superuser, which bypasses row-level security (fix: ALTER ROLE %s NOSUPERUSER)", role))
	}
	if bypass {
		problems = append(problems, fmt.Sprintf("it has BYPASSRLS (fix: ALTER ROLE %s NOBYPASSRLS)", role))
	}
	if createRole {
		problems = append(problems, fmt.Sprintf("it has CREATEROLE and could grant itself tenant roles (fix: ALTER ROLE %s NOCREATEROLE)", role))
	}
	if inherit && db.pgVersion < 160000 {
		problems = append(problems, fmt.Sprintf("it inherits the privileges of the roles it belongs to, so tenant roles would be open to it without SET ROLE (fix: ALTER ROLE %s NOINHERIT)", role))
	}
	// Predefined roles that read or write everything, or reach the server
	// itself, and replication (logical decoding ignores row level security).
	var replication bool
	if err := db.app.QueryRow(ctx, `SELECT rolreplication FROM pg_roles WHERE rolname = current_user`).Scan(&replication); err != nil {
		return fmt.Errorf("store: inspect application role: %w", err)
	}
	if replication {
		problems = append(problems, fmt.Sprintf("it has REPLICATION, and logical decoding reads every tenant's rows past row level security (fix: ALTER ROLE %s NOREPLICATION)", role))
	}
	rows, err := db.app.Query(ctx, `SELECT r.rolname FROM pg_roles r
		WHERE r.rolname = ANY($1) AND pg_has_role(current_user, r.oid, 'MEMBER') ORDER BY 1`,
		[]string{"pg_read_all_data", "pg_write_all_data", "pg_execute_server_program", "pg_read_server_files", "pg_write_server_files", "pg_signal_backend"})
	if err != nil {
		return fmt.Errorf("store: inspect application role: %w", err)
	}
	predefined, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("store: inspect application role: %w", err)
	}
	for _, r := range predefined {
		problems = append(problems, fmt.Sprintf("it is a member of %s, which reaches past tenant isolation (fix: REVOKE %s FROM %s)", r, r, role))
	}
	// A tenant table name that resolves on the role's own search_path would
	// let a statement be prepared against the wrong table before the tenant
	// is assumed.
	for _, t := range db.tables {
		var found *string
		if err := db.app.QueryRow(ctx, `SELECT to_regclass($1)::text`, t.Name).Scan(&found); err != nil {
			return fmt.Errorf("store: inspect application role: %w", err)
		}
		if found != nil {
			problems = append(problems, fmt.Sprintf("its own search_path finds a table %s named like the tenant table %s (fix: ALTER ROLE %s SET search_path = '', or drop or rename that table)", *found, t.Name, role))
		}
	}
	var adminMember bool
	if err := db.app.QueryRow(ctx, `SELECT pg_has_role(current_user, $1, 'MEMBER')`, db.adminRole).Scan(&adminMember); err != nil {
		return fmt.Errorf("store: inspect application role: %w", err)
	}
	if adminMember {
		problems = append(problems, fmt.Sprintf("it is a member of the admin role %s (fix: REVOKE %s FROM %s)", pgx.Identifier{db.adminRole}.Sanitize(), pgx.Identifier{db.adminRole}.Sanitize(), role))
	}
	// Ownership of, or privileges on, tenant schemas and their objects, and
	// ownership of any table under row-level security (owners are exempt
	// unless FORCE is set).
	rows, err = db.app.Query(ctx, `
SELECT what FROM (
  SELECT format('owns schema %I', n.nspname) AS what FROM pg_namespace n
   WHERE n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
     AND (n.nspname LIKE 'tenant\_%' OR n.nspname = 'tenancy')
  UNION ALL
  SELECT format('holds privileges on schema %I', n.nspname) FROM pg_namespace n
   WHERE n.nspname LIKE 'tenant\_%'
     AND (has_schema_privilege(current_user, n.oid, 'USAGE') OR has_schema_privilege(current_user, n.oid, 'CREATE'))
  UNION ALL
  SELECT format('owns %I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
     AND (n.nspname LIKE 'tenant\_%' OR c.relrowsecurity)
) p ORDER BY 1 LIMIT 10`)
	if err != nil {
		return fmt.Errorf("store: inspect application role: %w", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("store: inspect application role: %w", err)
	}
	for _, f := range found {
		problems = append(problems, "it "+f+" (fix: give ownership to the admin role and revoke the role's own grants)")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: application role %s: %s", ErrUnsafeAppRole, role, strings.Join(problems, "; "))
	}
	return nil
}

// Close closes both pools. Tenant-scoped calls after Close fail.
func (db *DB) Close() {
	if db.app != nil {
		db.app.Close()
	}
	if db.admin != nil {
		db.admin.Close()
	}
}

// AppRole returns the application role's name.
func (db *DB) AppRole() string { return db.appRole }

// TenantRole returns the name of the NOLOGIN role of tenant id.
func (db *DB) TenantRole(id tenant.ID) string { return db.rolePrefix + id.SchemaName() }

// groupRole is the role every tenant role belongs to (with inheritance): it
// holds the privileges all tenants share (the RLS guard, shared tables).
func (db *DB) groupRole() string { return db.rolePrefix + "tenancy_tenants" }

// UnscopedPool returns the application role's pool, without any tenant. The
// application role alone can reach no tenant data (see layer 1), so this
// pool serves only control-plane reads, health checks and baselines such as
// the raw-pgx benchmarks. Tenant-scoped work goes through [DB.Tx],
// [DB.Query], [DB.QueryRow] and [DB.Exec].
func (db *DB) UnscopedPool() *pgxpool.Pool { return db.app }

// Keysets returns the control-plane store of wrapped keysets, for a
// keys.Manager. With [KeysetsRead] it uses the application role, which may
// only read them: that is the one for serving requests. With
// [KeysetsReadWrite] it uses the admin role, for provisioning, rotation,
// re-wrapping and shredding; never hand that one to request handling.
func (db *DB) Keysets(access KeysetAccess) *Keysets {
	if access == KeysetsReadWrite {
		return NewKeysets(db.admin)
	}
	return NewKeysets(db.app)
}
