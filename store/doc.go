// Package store is tenancy's PostgreSQL layer (pgx v5): the control-plane
// catalog of tenants, the placement of each tenant's data, and the
// tenant-scoped request path, with the roles and row-level security that
// back it.
//
// Two types keep the request path apart from administration:
//
//   - [DB] is what request handlers get. It runs statements for the tenant
//     in the context ([DB.Query], [DB.QueryRow], [DB.Exec], [DB.Tx]) and
//     reads that tenant's directory entry ([DB.Tenant]) and the wrapped
//     keysets ([DB.Keysets], read-only). It cannot create, drop or change
//     tenants, and hands out no pool or connection.
//   - [Admin] holds the admin connection: control-plane migrations, tenant
//     placement ([Admin.CreateTenant], [Admin.DropTenant]), states, shared
//     tables, login repair and rotation, keysets read-write. Provisioning
//     and the operator CLI use it; request handling never sees it.
//
// # Tenant-bound connections (ModeTenantLogin, the default)
//
// Every tenant has a PostgreSQL LOGIN role of its own, and the DB runs a
// tenant's work only on connections logged in as that role, from a pool per
// tenant opened on first use. What SQL can change on a connection (SET
// ROLE, settings, prepared statements, cursors, LISTEN, session state)
// therefore never reaches another tenant: the next user of the connection
// is the same tenant. Row-level security derives the tenant from
// session_user, the role the connection authenticated as, which only a
// superuser session can change. So neither a bug nor a value injected into
// a tenant's statement can read another tenant's rows. No statement runs
// on the hot path but the caller's.
//
// The layers, all at once:
//
//  1. A tenant's login has privileges on its own schema only, is a member
//     of one role only (its database's tenant group: CONNECT to that
//     database, the guard's lookup, shared tables), has no CREATEDB,
//     CREATEROLE, REPLICATION or BYPASSRLS, owns nothing, may CREATE in no
//     schema and has no TEMP. Its CONNECTION LIMIT is its connection quota
//     ([AdminConfig.ConnLimit]), which PostgreSQL enforces and the tenant
//     cannot raise. Its search_path, its schema, is a role setting: the
//     tenant can change it (and its own password), nothing relies on it
//     for isolation, and [Admin.RepairLogins] detects and undoes both.
//  2. Every tenant table has a tenant_id column (filled in with the
//     tenant), ROW LEVEL SECURITY enabled and FORCEd, and the policy
//     tenancy_isolation. In a tenant's schema, which only that tenant's
//     login may use, the policy names the tenant and its login as
//     constants: tenant_id must be the tenant's, and a session that is not
//     the tenant's login gets an error when its statement is planned, even
//     on an empty table. In a shared table (rows of many tenants), tenant_id
//     must equal the tenant of the session's login, looked up by role OID
//     in tenancy.tenant_logins once per statement. Every name and operator
//     in a policy is schema-qualified and bound when the policy is created,
//     so nothing a session puts on its search_path (pg_temp included) can
//     shadow it.
//  3. The platform role the DB uses for control-plane reads is not a
//     superuser, has no BYPASSRLS, CREATEROLE or REPLICATION, is a member
//     of no tenant login, group or predefined role that reads everything,
//     owns nothing tenancy made and holds no privilege on any tenant
//     schema. [Open] refuses a role that breaks this and says how to fix
//     it. The admin role (CREATEROLE, owner of the database) is used only
//     by [Admin].
//  4. In every database store manages, PUBLIC loses CONNECT, TEMPORARY and
//     CREATE on schema public ([OpenAdmin]); [Admin.HardenDatabases] does
//     the same for others (postgres, template1), so that a tenant login
//     cannot connect anywhere but its own database.
//  5. Identifiers are quoted with pgx's sanitiser; tenant values travel as
//     bind parameters, except the tenant ID in the shared-pool mode's SET
//     LOCAL, which takes no parameter and which the ID grammar makes safe
//     to quote.
//
// Role names reveal nothing: every role can list pg_roles and
// pg_stat_activity, so a tenant's login is named RolePrefix + "t" + 24
// characters of a keyed hash of its ID, mapped to the tenant only in the
// control plane, which tenants cannot read (a login reads its own row of
// tenancy.tenant_logins only). Schema names are tenant_<id>, as
// REQ-DEPLOY-004 specifies, and pg_namespace lists them to every role: give
// tenants IDs that do not name the customer (the customer's name lives in
// the directory, which tenants cannot read) if that matters.
//
// Credentials: a login's password is 256 bits derived (HKDF-SHA256) from a
// platform secret ([LoginSecret], versioned) and the role name. PostgreSQL
// only ever receives its SCRAM-SHA-256 verifier, computed in Go with a
// salt derived the same way; the password itself appears in no SQL. The
// verifier is DDL that log_statement = 'ddl' would log: an admin allowed to
// change log_statement (a superuser, or one granted SET on it) turns
// logging off for that statement; otherwise the server log holds verifiers,
// from which the password cannot be recovered. [Admin.RotateLogins] moves
// every login to the newest secret while DBs that hold both keep
// connecting. Use sslmode=verify-full in production.
//
// Admission control: pgxpool caps each pool, not their sum, so the DB caps
// the connections open across every tenant's pool ([Config.MaxConns]).
// When the cap is reached, a tenant that needs a new connection waits its
// turn (first come, first served) while idle connections of other tenants
// that have been open at least [Config.MinResidency] are closed for it
// (least recently used tenant first); new connections are rate-limited
// ([Config.ConnectRate]); idle connections and pools close after
// [Config.IdleTimeout]. A request never falls back to a weaker mode.
// [DB.Stats] counts pools, connections, connects, evictions and waits.
//
// # Shared pool (ModeSharedPool, an explicit option)
//
// For deployments that cannot afford a connection per active tenant: one
// login role (RolePrefix + "tenancy_s_" + a hash of the database name) for
// the work of every tenant, with privileges on every tenant schema. Before
// each statement (or at the start of each transaction), in the same round
// trip, the DB sends SET LOCAL app.tenant_id and SET LOCAL search_path,
// each as its own protocol message; the policy compares tenant_id with
// that setting and raises when it is unset or the session is not the
// shared login. EXECUTE on set_config is revoked from PUBLIC (which also
// blocks UPDATE pg_settings), statements go over the extended protocol
// only (one statement per Parse, so a value cannot carry a second
// statement such as a SET), and a connection that passes to another tenant
// is reset with DISCARD ALL first. Since a setting can name any ID, a
// shared table takes rows only for a tenant the directory has placed.
//
// This is isolation by convention. It holds against bugs (a handler that
// forgot its tenant, an unqualified name, a connection reused by another
// tenant) and against a value injected into one statement. It does not
// hold against SQL that the application itself runs on a tenant's behalf:
// a statement of its own such as SET app.tenant_id becomes any tenant.
// docs/benchmarks.md puts its cost beside the default's.
//
// # Placement
//
// Where a tenant lives follows its tier, is recorded in the directory when
// it is created, and never changes:
//
//   - standard: schema tenant_<id> of the shared database;
//   - enterprise: database RolePrefix+"tenant_<id>" on the shared cluster,
//     with schema tenant_<id> in it;
//   - government: the same on a dedicated cluster, registered by name
//     ([Admin.RegisterCluster]) and chosen with [OnCluster]. The names and
//     connection strings of clusters are configuration
//     ([AdminConfig.AddCluster], [Config.AddCluster]); the control plane
//     records only the name. Several clusters may be registered, each
//     holding several government tenants, each in a database of its own.
//
// The schema has the same name on every tier, so the same SQL, the same
// tables and the same migrations serve every tenant. A tenant with a
// database of its own always has a login of its own, in both modes: a
// connection to that database can only serve that tenant, so there is
// nothing to share. Its login belongs to no role; its database grants
// CONNECT to that login only (nothing to PUBLIC: no CONNECT, no TEMP, no
// CREATE on schema public), and holds a small schema tenancy with the
// guard's function and that database's copy of the migration ledger. The
// control plane (directory, logins, keysets, the migration ledger) stays
// in the shared database, which the DB's platform role reads; tenant
// logins on other clusters connect with their own database as the
// database, and the host, port and TLS settings of Config.Clusters.
//
// PostgreSQL cannot create a database inside a transaction, so creating
// and dropping such a tenant are steps that can be repeated: see
// [Admin.CreateTenant] and [Admin.DropTenant]. [Admin.HBARules] renders
// pg_hba.conf lines that confine each tenant login to its own database on
// a cluster, as defense in depth against a mistaken grant.
//
// # Migrations
//
// The tenant schema can also be given as SQL files ([AdminConfig.Migrations]),
// applied to every new tenant and, by [Admin.Migrate], to every tenant of
// every tier and cluster; see Migrate.
//
// # Errors
//
// Tenant-scoped calls without a tenant in the context fail with an error
// wrapping [tenant.ErrNoTenant] and touch no connection; a [Tx] used with
// another tenant's context fails with [tenant.ErrCrossTenant].
// [ErrUnsafeAppRole] is returned by [Open] for a platform role that breaks
// layer 3; [ErrUnknownTenant] for a tenant the database does not know;
// [ErrTenantExists] when creating a tenant twice; [ErrInvalidTable] for a
// table declaration that breaks the rules; [ErrInvalidConfig] for a
// configuration that cannot be used, naming the field.
//
// # Security
//
// What every tenant can still see of others, in both modes: the names of
// schemas (pg_namespace), per-table statistics (pg_stat_user_tables: rows
// inserted, updated, deleted), the last value of a shared table's
// sequence, and which database roles are connected (pg_stat_activity shows
// no other role's queries). NOTIFY channels and advisory locks are
// database-wide: a tenant can signal on a channel another tenant listens
// to, so never trust a notification's payload. Rows are never visible.
//
// # Behind PgBouncer
//
// In transaction pooling mode (store/pgbouncer_test.go runs the isolation
// tests through a real PgBouncer 1.18):
//
//   - Tenant logins keep their isolation: PgBouncer pools server
//     connections per user, so a tenant's server connections serve that
//     tenant only.
//   - PgBouncer must know every login's password: use auth_query with an
//     auth user in production (an auth file must be rewritten and reloaded
//     after every CreateTenant and RotateLogins).
//   - Config.MaxConns caps the DB's client connections, not PgBouncer's
//     server connections: PgBouncer opens up to default_pool_size per
//     tenant login and keeps them for server_idle_timeout. Bound them with
//     max_db_connections and a short server_idle_timeout.
//   - Use pgx's QueryExecModeExec or QueryExecModeCacheDescribe (in the
//     connection string: default_query_exec_mode=exec): PgBouncer 1.18 has
//     no named prepared statements across server connections, so pgx's
//     default, QueryExecModeCacheStatement, fails after a server switch.
//   - ModeSharedPool needs server_reset_query = DISCARD ALL and
//     server_reset_query_always = 1. Without them, the shared login's
//     server connections pass between tenants with whatever session state
//     one left (a setting, a prepared statement, a cursor WITH HOLD over
//     its rows): the DB's own DISCARD ALL resets its client connection,
//     which PgBouncer maps to any server connection.
//
// The DB refuses the simple protocol, which inlines arguments into the SQL
// text and lets one string carry several statements; statements without
// arguments, which pgx's Exec would send that way, go over the extended
// protocol too.
package store
