package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/tenant"
)

// ErrUnsafeBackupRole is wrapped by BackupTx's error for a backup role
// that is missing, cannot bypass row level security, or could do more
// than read.
var ErrUnsafeBackupRole = errors.New("unsafe backup role")

// BackupTable is one table holding a tenant's rows, as BackupTx sees it.
type BackupTable struct {
	// Schema and Name name the table.
	Schema, Name string
	// Shared is true for a shared table (Admin.CreateSharedTable), which
	// holds other tenants' rows too: read it WHERE tenant_id = the
	// tenant's ID.
	Shared bool
}

// Ident returns the table's qualified, quoted name for SQL.
func (t BackupTable) Ident() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// BackupTx runs fn in a read-only, repeatable-read transaction on the
// database holding tenant id's placement, as the backup role role: a
// role made by the platform's DBA with BYPASSRLS (row level security is
// FORCEd on every tenant table, so no other non-superuser role can read a
// tenant's rows outside its own session) and nothing else: not
// superuser, no CREATEROLE, CREATEDB or REPLICATION, NOLOGIN (the admin
// role switches to it, so the admin must be a member: GRANT role TO
// admin), a member of no role. Backups of one database take turns. For the length of the call the role gets USAGE
// on the tenant's schema and SELECT on its tables (and on the shared
// tables), revoked again afterwards, so it can read one tenant at a time
// and write nothing. fn gets the tenant's tables (its schema's, then the
// shared ones) in name order.
//
// This is the read of a deprovisioning's backup. It refuses, with an error
// wrapping ErrUnsafeBackupRole, a role that is missing, lacks BYPASSRLS,
// or has any of those attributes.
func (a *Admin) BackupTx(ctx context.Context, id tenant.ID, role string, fn func(tx pgx.Tx, tables []BackupTable) error) error {
	if id.IsZero() {
		return fmt.Errorf("store: backup: %w", tenant.ErrNoTenant)
	}
	var p placement
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) (err error) {
		p, err = placementOf(ctx, tx, id)
		return err
	})
	if err == nil && p == (placement{}) {
		err = ErrUnknownTenant
	}
	if err != nil {
		return fmt.Errorf("store: backup of %s: %w", id, err)
	}
	// One backup at a time on this database: the backup role is granted
	// one tenant's schema for the length of a read, and two reads at once
	// would each see it hold both (and one's REVOKE on a shared table
	// would cut the other off).
	lock, err := pgx.ConnectConfig(ctx, a.poolConfig.ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("store: backup of %s: %w", id, err)
	}
	defer lock.Close(context.WithoutCancel(ctx))
	if _, err := lock.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended('tenancy.backup', 0))`); err != nil {
		return fmt.Errorf("store: backup of %s: wait for other backups: %w", id, err)
	}
	t, err := a.targetOf(ctx, p)
	if err != nil {
		return fmt.Errorf("store: backup of %s: %w", id, err)
	}
	defer t.close()
	if err := checkBackupRole(ctx, t, role); err != nil {
		return fmt.Errorf("store: backup of %s: %w", id, err)
	}
	var shared []BackupTable
	if err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT schema_name, table_name FROM tenancy.shared_tables ORDER BY 1, 2`)
		if err != nil {
			return err
		}
		shared, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (BackupTable, error) {
			var bt BackupTable
			bt.Shared = true
			return bt, r.Scan(&bt.Schema, &bt.Name)
		})
		return err
	}); err != nil {
		return fmt.Errorf("store: backup of %s: %w", id, err)
	}
	if p.ownDatabase() {
		shared = nil // shared tables live in the shared database only
	}
	r := q(role)
	grants := []string{`GRANT USAGE ON SCHEMA ` + q(p.Schema) + ` TO ` + r, `GRANT SELECT ON ALL TABLES IN SCHEMA ` + q(p.Schema) + ` TO ` + r}
	revokes := []string{`REVOKE SELECT ON ALL TABLES IN SCHEMA ` + q(p.Schema) + ` FROM ` + r, `REVOKE USAGE ON SCHEMA ` + q(p.Schema) + ` FROM ` + r}
	for _, s := range shared {
		grants = append(grants, `GRANT USAGE ON SCHEMA `+q(s.Schema)+` TO `+r, `GRANT SELECT ON `+s.Ident()+` TO `+r)
		revokes = append(revokes, `REVOKE SELECT ON `+s.Ident()+` FROM `+r, `REVOKE USAGE ON SCHEMA `+q(s.Schema)+` FROM `+r)
	}
	defer func() {
		if err := pgx.BeginFunc(context.WithoutCancel(ctx), t.pool, func(tx pgx.Tx) error { return execAll(context.WithoutCancel(ctx), tx, revokes...) }); err != nil {
			a.log.ErrorContext(ctx, "store: backup: revoking the backup role's grants failed; the next backup revokes them", "tenant_id", id.String(), "role", role, "err", err)
		}
	}()
	// Grants a crashed backup left (of any tenant) go first.
	if err := a.revokeBackupGrants(ctx, t, role); err != nil {
		return fmt.Errorf("store: backup of %s: revoke the backup role's earlier grants: %w", id, err)
	}
	if err := pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error { return execAll(ctx, tx, grants...) }); err != nil {
		return fmt.Errorf("store: backup of %s: grant the backup role: %w", id, err)
	}
	err = pgx.BeginTxFunc(ctx, t.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('role', $1, true)`, role); err != nil {
			return fmt.Errorf("switch to the backup role: %w", err)
		}
		rows, err := tx.Query(ctx, `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1`, p.Schema)
		if err != nil {
			return err
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		tables := make([]BackupTable, 0, len(names)+len(shared))
		for _, n := range names {
			tables = append(tables, BackupTable{Schema: p.Schema, Name: n})
		}
		return fn(tx, append(tables, shared...))
	})
	if err != nil {
		return fmt.Errorf("store: backup of %s: %w", id, err)
	}
	return nil
}

// revokeBackupGrants revokes every privilege role holds on a table or
// schema of the tenant's database (what a backup that crashed left).
func (a *Admin) revokeBackupGrants(ctx context.Context, t target, role string) error {
	return pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT DISTINCT table_schema FROM information_schema.role_table_grants WHERE grantee = $1`, role)
		if err != nil {
			return err
		}
		schemas, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, sc := range schemas {
			if err := execAll(ctx, tx, `REVOKE ALL ON ALL TABLES IN SCHEMA `+q(sc)+` FROM `+q(role), `REVOKE USAGE ON SCHEMA `+q(sc)+` FROM `+q(role)); err != nil {
				return err
			}
		}
		return nil
	})
}

// checkBackupRole checks role on the tenant's database.
func checkBackupRole(ctx context.Context, t target, role string) error {
	var super, bypass, createRole, createDB, repl, login bool
	var memberOf int
	err := t.pool.QueryRow(ctx, `SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication, rolcanlogin,
		(SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid)
		FROM pg_roles r WHERE rolname = $1`, role).
		Scan(&super, &bypass, &createRole, &createDB, &repl, &login, &memberOf)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: role %q does not exist: create it with CREATE ROLE %s NOLOGIN BYPASSRLS, and GRANT it to the admin role", ErrUnsafeBackupRole, role, q(role))
	}
	if err != nil {
		return err
	}
	switch {
	case !bypass:
		return fmt.Errorf("%w: role %q lacks BYPASSRLS, so it cannot read tenant tables, whose row level security is forced", ErrUnsafeBackupRole, role)
	case super || createRole || createDB || repl:
		return fmt.Errorf("%w: role %q may do more than read (SUPERUSER, CREATEROLE, CREATEDB or REPLICATION): a backup role has BYPASSRLS and nothing else", ErrUnsafeBackupRole, role)
	case login:
		return fmt.Errorf("%w: role %q can log in: a backup role is NOLOGIN (the admin switches to it), so no one can open a session that bypasses row level security", ErrUnsafeBackupRole, role)
	case memberOf > 0:
		return fmt.Errorf("%w: role %q is a member of %d other roles (pg_read_all_data, say), whose privileges it would bring: a backup role is a member of none", ErrUnsafeBackupRole, role, memberOf)
	}
	return nil
}
