// Package store is tenancy's PostgreSQL layer (pgx v5): the control-plane
// catalog of tenants, the placement of each tenant's data, the tenant-scoped
// unit of work, and the row-level security that backs it.
//
// # Layers
//
// Every tenant-scoped statement is protected by all of these at once:
//
//  1. The application role (the one request handling connects as) is not a
//     superuser, has no BYPASSRLS or CREATEROLE, owns no tenant object and holds
//     no privilege on any tenant schema by itself. [Open] refuses a role that
//     breaks this and says how to fix it.
//  2. Each tenant has a NOLOGIN role (RolePrefix + "tenant_<id>") with
//     privileges on its own schema only. The application role is a member
//     without inheritance and assumes the tenant role per transaction.
//  3. Every tenant table has a tenant_id column (filled in from the
//     transaction's tenant), ROW LEVEL SECURITY enabled and FORCEd, and a
//     policy that compares tenant_id with the transaction's app.tenant_id. A
//     statement run without that setting fails with an error; it does not
//     silently see zero rows.
//  4. Every tenant-scoped unit of work is a transaction whose first action
//     closes any cursor left open on the connection (a cursor declared WITH
//     HOLD outlives its transaction, with rows read as its tenant) and then
//     sets role, search_path and app.tenant_id with transaction-local scope
//     (set_config(..., true)). Nothing survives on the connection after commit
//     or rollback, so it is also correct behind PgBouncer in transaction
//     pooling mode. The setup travels in the same network round trip as BEGIN
//     and the first statement.
//  5. Identifiers are quoted with pgx's sanitiser; tenant values travel as bind
//     parameters.
//
// # Placement
//
// A standard-tier tenant lives in schema tenant_<id> of the shared database.
// Enterprise and government placements are added by later versions.
//
// # Cost
//
// A tenant-scoped call costs PostgreSQL two more statements in the same
// round trip (closing held cursors, and the setup), a role and search_path
// switch, and the policy check:
// about 1.7 times the server and client CPU of the same primary-key SELECT
// without any isolation on PostgreSQL 15, and level, within the noise of
// the measurement, with the same isolation written by hand with pgx in one
// round trip (docs/benchmarks.md). A connection
// that passes between tenants re-plans its cached statements; see
// [Config.PlanPerTenant].
//
// # Tenant count per cluster
//
// The application role is a member of every standard-tier tenant's role.
// PostgreSQL computes the list of a login role's memberships when a
// backend first switches role, and again in every backend after any role
// or membership changes anywhere in the cluster (every tenant provisioned
// or deleted). On PostgreSQL 15 this takes time that grows with the square
// of the number of memberships: on a 2-core machine about 5–7 ms at 1,000
// tenants and 50–75 ms at 4,000 (BenchmarkMembershipRecompute), and over a
// minute at 100,000 (store/testdata/pgbench/memberships.sh, by hand).
// Each pooled connection pays it once per
// change, on its next call. Keep the standard tier of one cluster to a few
// thousand tenants on PostgreSQL 15 (measure on your version), spread
// tenants over clusters, or place large tenants in the enterprise tier.
//
// # Errors
//
// Scoped calls without a tenant in the context fail with an error wrapping
// [tenant.ErrNoTenant]. [ErrUnsafeAppRole] is returned by [Open] for an
// application role that breaks layer 1; [ErrUnknownTenant] for a tenant the
// database does not know; [ErrTenantExists] when creating a tenant twice;
// [ErrInvalidTable] for a table declaration that breaks the rules.
//
// # Security
//
// The layers protect against bugs: a handler that forgot its tenant, a query
// with an unqualified name, a pooled connection reused by another tenant.
// They do not make SQL injection harmless: SQL that the application runs
// with the application role's connection could RESET ROLE. Always pass
// values as bind parameters. The admin connection (DDL, provisioning) is
// never used for tenant-scoped work and is not exposed.
//
// The tenant's search_path is its own schema, then pg_temp: a temporary
// table left on a pooled connection cannot shadow a tenant table. Create
// temporary tables ON COMMIT DROP all the same, and never grant them to
// others.
//
// Tenant IDs are not secret from tenants: any SQL can list schema and role
// names in the system catalogs (pg_namespace, pg_roles). Use IDs that do not
// reveal a customer's identity if that matters. Nor is every tenant's
// activity: the statistics views (pg_stat_user_tables: rows inserted,
// updated, deleted per table) and the last value of a shared table's
// sequence are readable by all. Rows are not.
package store
