package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rtmx-ai/tenancy/tenant"
)

func validateInfo(info tenant.Info) error {
	var errs []error
	if info.ID.IsZero() {
		errs = append(errs, errors.New("field ID: must be set (parse it with tenant.ParseID)"))
	}
	if info.Name == "" || len(info.Name) > 200 || !utf8.ValidString(info.Name) || strings.ContainsRune(info.Name, 0) {
		errs = append(errs, errors.New("field Name: must be 1 to 200 bytes of UTF-8, without NUL"))
	}
	if !info.Tier.Valid() {
		errs = append(errs, fmt.Errorf("field Tier: %q is not a tier (standard, enterprise, government)", info.Tier))
	}
	switch info.State {
	case "", tenant.StateActive, tenant.StateProvisioning, tenant.StateSuspended:
	default:
		if !info.State.Valid() {
			errs = append(errs, fmt.Errorf("field State: %q is not a state", info.State))
		} else {
			// A placed tenant is not deleted, failed, or on its way out:
			// only DropTenant records deleted, once the data is gone.
			errs = append(errs, fmt.Errorf("field State: a new tenant is active, provisioning or suspended, not %s", info.State))
		}
	}
	if len(info.Region) > 64 || !utf8.ValidString(info.Region) || strings.ContainsRune(info.Region, 0) {
		errs = append(errs, errors.New("field Region: must be at most 64 bytes of UTF-8, without NUL"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("store: invalid tenant: %w", errors.Join(errs...))
	}
	return nil
}

// CreateTenant places a new tenant and records it in the tenant directory.
// Where by tier:
//
//   - standard: schema tenant_<id> of the shared database;
//   - enterprise: database RolePrefix+"tenant_<id>" on the shared cluster,
//     with schema tenant_<id> in it;
//   - government: the same on a dedicated cluster, named with [OnCluster].
//
// In the schema it creates every table of AdminConfig.Tables and applies
// every tenant migration (AdminConfig.Migrations), each secured (see
// [Table]). The tenant's login role (ModeTenantLogin, and every tenant
// with a database of its own) gets an opaque name, a password derived from
// the newest login secret and set as a SCRAM verifier, CONNECTION LIMIT
// AdminConfig.ConnLimit, search_path its schema, and no other privilege
// than its own schema (and database) and what the standard tenants of the
// shared database share; it is recorded in tenancy.tenant_logins. A tenant
// database grants CONNECT to that login only. info.State defaults to
// active.
//
// A standard tenant is created in one admin transaction: either everything
// exists afterwards or nothing does. A database cannot be created inside a
// transaction, so for the other tiers CreateTenant records the tenant as
// requested first, then creates the database, then everything in it in one
// transaction on it, then records the tenant's state; when a step fails it
// undoes the steps before. After a crash the tenant stays requested, and
// calling CreateTenant again with the same tier (and cluster) finishes it.
// Creating a tenant that exists (or existed: IDs are never reused) fails
// with an error wrapping [ErrTenantExists].
func (a *Admin) CreateTenant(ctx context.Context, info tenant.Info, opts ...CreateOption) error {
	if err := validateInfo(info); err != nil {
		return err
	}
	var o createOptions
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	if info.State == "" {
		info.State = tenant.StateActive
	}
	id := info.ID
	p, err := a.place(ctx, id, info.Tier, o)
	if err == nil {
		if p.ownDatabase() {
			err = a.createWithDatabase(ctx, info, p)
		} else {
			err = pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
				if err := insertTenant(ctx, tx, info, p, info.State); err != nil {
					return err
				}
				if p.Role != "" {
					if err := a.createRole(ctx, tx, p, info.State); err != nil {
						return err
					}
					if err := a.recordLogin(ctx, tx, id, p); err != nil {
						return err
					}
				}
				_, err := a.fillSchema(ctx, tx, id, p)
				return err
			})
		}
	}
	if err != nil {
		return fmt.Errorf("store: create tenant %s: %w", id, err)
	}
	a.log.InfoContext(ctx, "store: tenant created", "tenant_id", id.String(), "tier", string(info.Tier), "placement", p.Kind, "cluster", p.Cluster)
	return nil
}

// insertTenant records a new tenant in the directory.
func insertTenant(ctx context.Context, tx pgx.Tx, info tenant.Info, p placement, state tenant.State) error {
	_, err := tx.Exec(ctx, `INSERT INTO tenancy.tenants (id, name, tier, region, state, placement)
		VALUES ($1, $2, $3, $4, $5, $6)`, info.ID.String(), info.Name, string(info.Tier), info.Region, string(state), p)
	if isUniqueViolation(err) {
		return ErrTenantExists
	}
	return err
}

// fillSchema creates the schema of tenant id placed at p in tx (on the
// tenant's database), its tables and migrations, and grants its tables,
// views and sequences to the tenant's worker role, by name (GRANT ... ON
// ALL TABLES IN SCHEMA would scan pg_class, milliseconds per tenant in a
// database of thousands); it returns the migration versions applied.
func (a *Admin) fillSchema(ctx context.Context, tx pgx.Tx, id tenant.ID, p placement) ([]int, error) {
	schema, w := q(p.Schema), q(a.workerOf(p))
	if err := execAll(ctx, tx,
		`CREATE SCHEMA `+schema,
		`REVOKE ALL ON SCHEMA `+schema+` FROM PUBLIC`,
		`GRANT USAGE ON SCHEMA `+schema+` TO `+w,
	); err != nil {
		return nil, err
	}
	g := a.guardOf(id, p)
	for _, t := range a.tables {
		if err := createTable(ctx, tx, g, p.Schema, t); err != nil {
			return nil, err
		}
	}
	versions, objs, err := a.applyAllNew(ctx, tx, id, p)
	if err != nil {
		return nil, err
	}
	if len(versions) == 0 {
		// No migration listed what the schema holds.
		if objs, err = schemaGrantables(ctx, tx, p.Schema); err != nil {
			return nil, err
		}
	}
	return versions, grantObjects(ctx, tx, p.Schema, a.workerOf(p), objs)
}

// tenantLock takes the advisory lock of tenant id's creation and
// deletion, a session lock (the steps are several transactions, on
// several databases), on a connection of its own outside the admin pool:
// a lock holding a pool connection while its steps wait for another would
// starve a small pool under concurrent calls. The steps on the shared
// cluster that cannot run in a transaction (CREATE and DROP DATABASE) use
// that connection too. unlock releases the lock and closes it.
func (a *Admin) tenantLock(ctx context.Context, id tenant.ID) (_ *pgx.Conn, unlock func(), err error) {
	c, err := pgx.ConnectConfig(ctx, a.poolConfig.ConnConfig.Copy())
	if err != nil {
		return nil, nil, fmt.Errorf("lock tenant: %w", err)
	}
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended($1, 0))`, `tenancy.tenant:`+id.String()); err != nil {
		_ = c.Close(context.WithoutCancel(ctx))
		return nil, nil, fmt.Errorf("lock tenant: %w", err)
	}
	// Closing the session releases its advisory locks.
	return c, func() { _ = c.Close(context.Background()) }, nil
}

// clusterConn runs statements on a cluster outside any transaction: the
// tenant lock's connection on the shared cluster, a dedicated cluster's
// admin pool elsewhere.
type clusterConn interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// clusterOf returns where the cluster-wide steps of a tenant placed at p
// run; lock is the tenant lock's connection.
func (a *Admin) clusterOf(ctx context.Context, p placement, lock *pgx.Conn) (clusterConn, error) {
	if p.Cluster == "" {
		return lock, nil
	}
	return a.clusterPool(ctx, p.Cluster)
}

// crashAfter, when set (by tests only), is asked after each step of
// createWithDatabase whether to stop there as a crash would: without
// undoing anything.
var crashAfter func(step int) bool

// errCrashed is what createWithDatabase returns when crashAfter stops it.
var errCrashed = errors.New("stopped by a simulated crash")

// createWithDatabase creates a tenant with a database of its own; see
// CreateTenant.
func (a *Admin) createWithDatabase(ctx context.Context, info tenant.Info, p placement) (err error) {
	id := info.ID
	lock, unlock, err := a.tenantLock(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	// 1. The directory: the tenant, requested, and its login.
	resume := false
	err = pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		var state string
		var prev placement
		err := tx.QueryRow(ctx, `SELECT state, placement FROM tenancy.tenants WHERE id = $1 FOR UPDATE`, id.String()).Scan(&state, &prev)
		switch {
		case err == nil && state == string(tenant.StateRequested) && prev == p:
			resume = true // an earlier call stopped half-way: finish it
			return nil
		case err == nil:
			return ErrTenantExists
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		if err := insertTenant(ctx, tx, info, p, tenant.StateRequested); err != nil {
			return err
		}
		return a.recordLogin(ctx, tx, id, p)
	})
	if err != nil {
		return err
	}
	if crashAfter != nil && crashAfter(1) {
		return errCrashed
	}
	cluster, err := a.clusterOf(ctx, p, lock)
	if err != nil {
		return err
	}
	dbOurs, roleMade := false, false
	defer func() {
		if err != nil && !errors.Is(err, errCrashed) {
			if cerr := a.undoCreate(context.WithoutCancel(ctx), cluster, id, p, dbOurs, roleMade); cerr != nil {
				err = fmt.Errorf("%w (and undoing the steps before: %v; call CreateTenant again to finish, or DropTenant to remove it)", err, cerr)
			}
		}
	}()
	// 2. The database.
	if dbOurs, err = a.ensureDatabase(ctx, cluster, id, p, resume); err != nil {
		return err
	}
	if crashAfter != nil && crashAfter(2) {
		return errCrashed
	}
	// 3. Everything in it, in one transaction.
	t, err := a.targetOf(ctx, p)
	if err != nil {
		return err
	}
	defer t.close()
	var versions []int
	err = pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		var done bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, p.Schema).Scan(&done); err != nil {
			return err
		}
		if done { // an earlier call got this far
			rows, err := tx.Query(ctx, `SELECT version FROM tenancy.tenant_migrations WHERE tenant_id = $1 ORDER BY 1`, id.String())
			if err != nil {
				return err
			}
			versions, err = pgx.CollectRows(rows, pgx.RowTo[int])
			return err
		}
		if err := a.bootstrapTenantDatabase(ctx, tx, p); err != nil {
			return err
		}
		if err := a.createRole(ctx, tx, p, info.State); err != nil {
			return err
		}
		if err := execAll(ctx, tx,
			`GRANT USAGE ON SCHEMA tenancy TO `+q(p.Role),
			`GRANT EXECUTE ON FUNCTION tenancy.no_tenant(text) TO `+q(p.Role),
		); err != nil {
			return err
		}
		versions, err = a.fillSchema(ctx, tx, id, p)
		return err
	})
	if err != nil {
		return err
	}
	roleMade = true
	if crashAfter != nil && crashAfter(3) {
		return errCrashed
	}
	// 4. The directory: the migrations it has, and its state.
	return pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		if len(versions) > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO tenancy.tenant_migrations (tenant_id, version)
				SELECT $1, v FROM unnest($2::int[]) v ON CONFLICT DO NOTHING`, id.String(), versions); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `UPDATE tenancy.tenants SET state = $2, updated_at = now() WHERE id = $1 AND state = 'requested'`, id.String(), string(info.State))
		return err
	})
}

// ensureDatabase creates the database of tenant id placed at p on cluster,
// unless an earlier call for the same tenant did (resume, and a database
// of that name owned by the admin role). Any other database of that name
// is someone else's (another control plane's, or left over) and refused.
func (a *Admin) ensureDatabase(ctx context.Context, cluster clusterConn, id tenant.ID, p placement, resume bool) (ours bool, err error) {
	var admins *bool
	err = cluster.QueryRow(ctx, `SELECT pg_has_role(current_user, datdba, 'USAGE') FROM pg_database WHERE datname = $1`, p.Database).Scan(&admins)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, err
	}
	if admins != nil {
		if !*admins || !resume {
			return false, fmt.Errorf("%w: database %s exists on the cluster already (another deployment with the same RolePrefix, or one left over: drop it if it is)", ErrTenantExists, q(p.Database))
		}
		return true, nil
	}
	db := q(p.Database)
	if _, err := cluster.Exec(ctx, `CREATE DATABASE `+db); err != nil {
		return false, fmt.Errorf("create database %s: %w", db, err)
	}
	// Until the grants of step 3, no role but the admin may connect.
	_, err = cluster.Exec(ctx, `REVOKE CONNECT, TEMPORARY ON DATABASE `+db+` FROM PUBLIC`)
	if err == nil {
		_, err = cluster.Exec(ctx, `COMMENT ON DATABASE `+db+` IS `+literal("tenancy: database of tenant "+id.String()))
	}
	return true, err
}

// bootstrapTenantDatabase sets up a tenant's own database in tx: nothing
// for PUBLIC (CONNECT, TEMPORARY, CREATE on schema public), and a schema
// tenancy with the guard's function and the database's migration ledger.
func (a *Admin) bootstrapTenantDatabase(ctx context.Context, tx pgx.Tx, p placement) error {
	return execAll(ctx, tx,
		`REVOKE CONNECT, TEMPORARY ON DATABASE `+q(p.Database)+` FROM PUBLIC`,
		`REVOKE CREATE ON SCHEMA public FROM PUBLIC`,
		`CREATE SCHEMA IF NOT EXISTS tenancy`,
		`REVOKE ALL ON SCHEMA tenancy FROM PUBLIC`,
		noTenantSQL,
		`REVOKE ALL ON FUNCTION tenancy.no_tenant(text) FROM PUBLIC`,
		// This database's copy of the ledger, written in the transaction of
		// each migration, so that a crash between it and the control
		// plane's copy loses nothing (see migrate.go).
		`CREATE TABLE IF NOT EXISTS tenancy.tenant_migrations (
			tenant_id  text COLLATE "C" NOT NULL,
			version    int NOT NULL CHECK (version > 0),
			applied_at timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (tenant_id, version))`,
	)
}

// undoCreate undoes the steps of createWithDatabase after a failure: the
// database and the login role, each only if it is this tenant's (made by
// this call or the one it resumes: one of that name made by anyone else
// is not ours to drop), and the directory rows.
func (a *Admin) undoCreate(ctx context.Context, cluster clusterConn, id tenant.ID, p placement, dbOurs, roleMade bool) error {
	var errs []error
	if dbOurs {
		if _, err := cluster.Exec(ctx, `DROP DATABASE IF EXISTS `+q(p.Database)+` WITH (FORCE)`); err != nil {
			errs = append(errs, err)
		}
	}
	if roleMade {
		if _, err := cluster.Exec(ctx, `DROP ROLE IF EXISTS `+q(p.Role)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		for _, sql := range []string{
			`DELETE FROM tenancy.tenant_migrations WHERE tenant_id = $1`,
			`DELETE FROM tenancy.tenant_logins WHERE tenant_id = $1`,
			`DELETE FROM tenancy.tenants WHERE id = $1 AND state = 'requested'`,
		} {
			if _, err := tx.Exec(ctx, sql, id.String()); err != nil {
				return err
			}
		}
		return nil
	})
}

// createRole creates the login role of a tenant placed at p, in tx on the
// cluster where it lives: a member of the shared database's group for the
// standard tier; with CONNECT on its own database for the others.
func (a *Admin) createRole(ctx context.Context, tx pgx.Tx, p placement, state tenant.State) error {
	var roleExists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, p.Role).Scan(&roleExists); err != nil {
		return err
	}
	if roleExists {
		return fmt.Errorf("%w: role %s already exists on this cluster (another deployment with the same RolePrefix and login secret?)", ErrTenantExists, q(p.Role))
	}
	login := "NOLOGIN"
	if canLogin(state) {
		login = "LOGIN"
	}
	role := q(p.Role)
	db := a.dbName
	if p.ownDatabase() {
		db = p.Database
	}
	stmts := []string{
		`CREATE ROLE ` + role + ` ` + login + ` NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT ` + strconv.Itoa(a.connLimit),
		`ALTER ROLE ` + role + ` IN DATABASE ` + q(db) + ` SET search_path = ` + q(p.Schema),
	}
	if p.ownDatabase() {
		stmts = append(stmts, `GRANT CONNECT ON DATABASE `+q(db)+` TO `+role)
	} else {
		groupGrant := `GRANT ` + q(a.groupRole()) + ` TO ` + role
		if a.pgVersion >= 160000 {
			groupGrant += ` WITH INHERIT TRUE, SET FALSE`
		}
		stmts = append(stmts, groupGrant)
	}
	if err := execAll(ctx, tx, stmts...); err != nil {
		return err
	}
	return a.setVerifier(ctx, tx, p.Role, a.secrets.current)
}

// recordLogin records the login of tenant id placed at p in the control
// plane (tx on the shared database). A login on this cluster is recorded
// with its OID, for the guard of shared tables; one elsewhere without.
func (a *Admin) recordLogin(ctx context.Context, tx pgx.Tx, id tenant.ID, p placement) error {
	oid := `$2::regrole::oid`
	if p.ownDatabase() {
		oid = `NULL::oid`
	}
	_, err := tx.Exec(ctx, `INSERT INTO tenancy.tenant_logins (tenant_id, role_oid, role_name, secret_version, conn_limit, cluster, database)
		VALUES ($1, `+oid+`, $2, $3, $4, NULLIF($5, ''), NULLIF($6, ''))`, id.String(), p.Role, a.secrets.current, a.connLimit, p.Cluster, p.Database)
	return err
}

// canLogin reports whether a tenant's login role may log in in state s.
func canLogin(s tenant.State) bool { return s == tenant.StateActive || s == tenant.StateProvisioning }

// terminateSessions ends the sessions of role. It needs the privileges of
// the role: a non-superuser admin (CREATEROLE) makes itself a member for
// the rest of the transaction, and revoke says whether to undo that.
func terminateSessions(ctx context.Context, tx pgx.Tx, role string, revoke bool) error {
	// USAGE, not MEMBER: on PostgreSQL 16+ the admin is a "member" of the
	// roles it created through its ADMIN OPTION alone, without their
	// privileges.
	var member bool
	if err := tx.QueryRow(ctx, `SELECT pg_has_role(current_user, $1, 'USAGE')`, role).Scan(&member); err != nil {
		return err
	}
	if !member {
		if err := execAll(ctx, tx, `GRANT `+q(role)+` TO CURRENT_USER`); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role); err != nil {
		return err
	}
	if !member && revoke {
		return execAll(ctx, tx, `REVOKE `+q(role)+` FROM CURRENT_USER`)
	}
	return nil
}

// DropTenant deletes a tenant's data and placement: its rows in every
// shared table, its schema with everything in it (or its database, on the
// cluster where it lives) and its login role (whose sessions it ends). The
// directory keeps the tenant with state deleted, so the ID is never given
// to another tenant. Dropping a tenant that has no placement fails with an
// error wrapping [ErrUnknownTenant]. A standard tenant is dropped in one
// admin transaction; a tenant with a database of its own in steps that
// can be repeated: after a failure or a crash, call DropTenant again. It
// also removes a tenant whose creation stopped half-way (requested).
//
// It waits for transactions that are writing to shared tables to end, so
// that it deletes what they commit, and holds off new writers until it
// ends. Move the tenant to decommissioning first (SetState), which in
// ModeTenantLogin also stops its new logins and ends its sessions.
func (a *Admin) DropTenant(ctx context.Context, id tenant.ID) error {
	return a.dropTenant(ctx, "drop", id, tenant.StateDeleted)
}

// FailTenant removes what a provisioning that failed had placed of tenant
// id, as DropTenant does (its rows in shared tables, its schema or
// database, its login role), and keeps it in the directory in state
// failed, so that what went wrong stays on record and the ID is not given
// to another tenant. It refuses, with an error wrapping
// [tenant.ErrIllegalTransition] and changing nothing, a tenant that is not
// requested, provisioning or failed: a tenant that was ever active leaves
// only through DropTenant. Calling it again after a failure or a crash
// finishes it; for a failed tenant with nothing left it does nothing.
func (a *Admin) FailTenant(ctx context.Context, id tenant.ID) error {
	return a.dropTenant(ctx, "fail", id, tenant.StateFailed)
}

// dropTenant is DropTenant (final state deleted) and FailTenant (final
// state failed).
func (a *Admin) dropTenant(ctx context.Context, verb string, id tenant.ID, final tenant.State) error {
	if id.IsZero() {
		return fmt.Errorf("store: %s tenant: %w", verb, tenant.ErrNoTenant)
	}
	lock, unlock, err := a.tenantLock(ctx, id)
	if err != nil {
		return fmt.Errorf("store: %s tenant %s: %w", verb, id, err)
	}
	defer unlock()
	err = pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		var state string
		var p placement
		err := tx.QueryRow(ctx, `SELECT state, placement FROM tenancy.tenants WHERE id = $1 FOR UPDATE`, id.String()).Scan(&state, &p)
		if errors.Is(err, pgx.ErrNoRows) || state == string(tenant.StateDeleted) {
			return ErrUnknownTenant
		}
		if err != nil {
			return err
		}
		if final == tenant.StateFailed {
			switch tenant.State(state) {
			case tenant.StateRequested, tenant.StateProvisioning:
			case tenant.StateFailed:
				if p == (placement{}) {
					return nil // done before
				}
			default:
				return fmt.Errorf("%w: tenant %s is %s; only a tenant that is requested, provisioning or failed can be failed (use DropTenant to delete one that was ever active)", tenant.ErrIllegalTransition, id, state)
			}
		}
		if p.ownDatabase() {
			if err := a.dropDatabase(ctx, p, lock); err != nil {
				return err
			}
		} else if err := a.dropSchema(ctx, tx, id, p); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM tenancy.tenant_migrations WHERE tenant_id = $1`, id.String())
		if err == nil {
			_, err = tx.Exec(ctx, `DELETE FROM tenancy.tenant_logins WHERE tenant_id = $1`, id.String())
		}
		if err == nil {
			_, err = tx.Exec(ctx, `UPDATE tenancy.tenants SET state = $2, placement = '{}', updated_at = now() WHERE id = $1`, id.String(), string(final))
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("store: %s tenant %s: %w", verb, id, err)
	}
	a.log.InfoContext(ctx, "store: tenant placement removed", "tenant_id", id.String(), "state", string(final))
	return nil
}

// dropSchema deletes, in tx, a standard tenant's rows of the shared tables,
// its schema and its login.
func (a *Admin) dropSchema(ctx context.Context, tx pgx.Tx, id tenant.ID, p placement) error {
	rows, err := tx.Query(ctx, `SELECT schema_name, table_name FROM tenancy.shared_tables ORDER BY 1, 2`)
	if err != nil {
		return err
	}
	shared, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgx.Identifier, error) {
		var s, t string
		err := r.Scan(&s, &t)
		return pgx.Identifier{s, t}, err
	})
	if err != nil {
		return err
	}
	if len(shared) > 0 {
		// SHARE mode waits for every transaction that is writing to a
		// shared table, so that the DELETE below sees the rows they
		// commit, and holds off new writers until the tenant is gone.
		// Always in the same order.
		lock := make([]string, len(shared))
		for i, t := range shared {
			lock[i] = t.Sanitize()
		}
		if _, err := tx.Exec(ctx, `LOCK TABLE `+strings.Join(lock, ", ")+` IN SHARE MODE`); err != nil {
			return err
		}
		for _, t := range shared {
			// The admin's own policy (tenancy_admin) lets it see every
			// tenant's rows of a shared table.
			if _, err := tx.Exec(ctx, `DELETE FROM `+t.Sanitize()+` WHERE tenant_id = $1`, id.String()); err != nil {
				return err
			}
		}
	}
	if err := execAll(ctx, tx, `DROP SCHEMA IF EXISTS `+q(id.SchemaName())+` CASCADE`); err != nil {
		return err
	}
	if p.Role == "" {
		return nil
	}
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, p.Role).Scan(&exists); err != nil || !exists {
		return err
	}
	if err := execAll(ctx, tx, `ALTER ROLE `+q(p.Role)+` NOLOGIN`); err != nil {
		return err
	}
	// Leaves the admin a member, which DROP OWNED needs; the role goes
	// right after.
	if err := terminateSessions(ctx, tx, p.Role, false); err != nil {
		return err
	}
	return execAll(ctx, tx, `DROP OWNED BY `+q(p.Role), `DROP ROLE `+q(p.Role))
}

// dropDatabase deletes the database and the login of a tenant placed at p
// on its cluster (lock is the tenant lock's connection): NOLOGIN first,
// then the database with every session on it, then the role. Each step
// can be repeated.
func (a *Admin) dropDatabase(ctx context.Context, p placement, lock *pgx.Conn) error {
	cluster, err := a.clusterOf(ctx, p, lock)
	if err != nil {
		return err
	}
	var roleExists bool
	if err := cluster.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, p.Role).Scan(&roleExists); err != nil {
		return err
	}
	if roleExists {
		if _, err := cluster.Exec(ctx, `ALTER ROLE `+q(p.Role)+` NOLOGIN`); err != nil {
			return err
		}
	}
	var ours *bool
	err = cluster.QueryRow(ctx, `SELECT pg_has_role(current_user, datdba, 'USAGE') FROM pg_database WHERE datname = $1`, p.Database).Scan(&ours)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if ours != nil {
		if !*ours {
			return fmt.Errorf("database %s is not the admin role's: not dropping it", q(p.Database))
		}
		if _, err := cluster.Exec(ctx, `DROP DATABASE `+q(p.Database)+` WITH (FORCE)`); err != nil {
			return fmt.Errorf("drop database %s: %w", q(p.Database), err)
		}
	}
	if roleExists {
		if _, err := cluster.Exec(ctx, `DROP ROLE IF EXISTS `+q(p.Role)); err != nil {
			return fmt.Errorf("drop role %s: %w", q(p.Role), err)
		}
	}
	return nil
}

// Tenant returns the directory entry of id, or an error wrapping
// [ErrUnknownTenant].
func (a *Admin) Tenant(ctx context.Context, id tenant.ID) (tenant.Info, error) {
	return readTenant(ctx, a.pool, id)
}

func readTenant(ctx context.Context, pool *pgxpool.Pool, id tenant.ID) (tenant.Info, error) {
	var (
		info             tenant.Info
		sid, tier, state string
		created, updated time.Time
	)
	err := pool.QueryRow(ctx, `SELECT id, name, tier, region, state, created_at, updated_at
		FROM tenancy.tenants WHERE id = $1`, id.String()).Scan(&sid, &info.Name, &tier, &info.Region, &state, &created, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return tenant.Info{}, fmt.Errorf("store: tenant %s: %w", id, ErrUnknownTenant)
	}
	if err != nil {
		return tenant.Info{}, fmt.Errorf("store: tenant %s: %w", id, err)
	}
	info.ID, info.Tier, info.State, info.CreatedAt, info.UpdatedAt = id, tenant.Tier(tier), tenant.State(state), created, updated
	return info, nil
}

// SetState moves tenant id to state to, if the lifecycle allows the move
// from its current state (see [tenant.State.Transition]). It never moves a
// tenant to deleted: [Admin.DropTenant] does, with its data. In
// ModeTenantLogin a suspended tenant's login role gets NOLOGIN (PostgreSQL
// refuses its new connections) and its sessions are ended (and so in every
// state but active and provisioning); moving it back to active restores
// LOGIN.
func (a *Admin) SetState(ctx context.Context, id tenant.ID, to tenant.State) error {
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		var cur string
		err := tx.QueryRow(ctx, `SELECT state FROM tenancy.tenants WHERE id = $1 FOR UPDATE`, id.String()).Scan(&cur)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrUnknownTenant
		}
		if err != nil {
			return err
		}
		if to == tenant.StateDeleted {
			// Deleted means the data is gone: DropTenant deletes it and
			// records the state in the same transaction.
			return fmt.Errorf("%w: to delete a tenant's data and record it deleted, use DropTenant", tenant.ErrIllegalTransition)
		}
		if _, err := tenant.State(cur).Transition(to); err != nil {
			return err
		}
		if _, err = tx.Exec(ctx, `UPDATE tenancy.tenants SET state = $2, updated_at = now() WHERE id = $1`, id.String(), string(to)); err != nil {
			return err
		}
		p, err := placementOf(ctx, tx, id)
		if err != nil || p.Role == "" {
			return err
		}
		setLogin := func(tx pgx.Tx) error {
			if canLogin(to) {
				return execAll(ctx, tx, `ALTER ROLE `+q(p.Role)+` LOGIN`)
			}
			if err := execAll(ctx, tx, `ALTER ROLE `+q(p.Role)+` NOLOGIN`); err != nil {
				return err
			}
			return terminateSessions(ctx, tx, p.Role, true)
		}
		if p.Cluster == "" {
			// Roles are cluster-wide: a login on this cluster, whatever
			// its database, changes in this transaction.
			return setLogin(tx)
		}
		// The login lives on a dedicated cluster: changed there before
		// this transaction commits the state.
		cluster, err := a.clusterPool(ctx, p.Cluster)
		if err != nil {
			return err
		}
		return pgx.BeginFunc(ctx, cluster, setLogin)
	})
	if err != nil {
		return fmt.Errorf("store: set state of tenant %s: %w", id, err)
	}
	return nil
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// HardenDatabases revokes CONNECT and TEMPORARY from PUBLIC on each named
// database of the cluster (the admin must own it or be superuser), so that
// no tenant login can connect there: by default PostgreSQL lets every role
// connect to every database (postgres and template1 included) and create
// temporary objects in it. The database of this Admin is hardened by
// OpenAdmin already. Roles that need to connect there afterwards need
// GRANT CONNECT of their own.
func (a *Admin) HardenDatabases(ctx context.Context, names ...string) error {
	for _, n := range names {
		if _, err := a.pool.Exec(ctx, `REVOKE CONNECT, TEMPORARY ON DATABASE `+q(n)+` FROM PUBLIC`); err != nil {
			return fmt.Errorf("store: harden database %s: %w", q(n), err)
		}
	}
	return nil
}

// LoginDrift is what [Admin.RepairLogins] found changed on one tenant's
// login role since store set it up. A tenant may change its own password
// and its own role settings (PostgreSQL allows both); nothing in store
// relies on either for isolation, but a changed password locks the
// tenant's own pools out, and settings are not the tenant's to keep.
type LoginDrift struct {
	Tenant tenant.ID
	// What lists the changes found: "password" (only seen when the admin
	// may read pg_authid, i.e. is superuser), "settings", "connection
	// limit", "login".
	What []string
}

// RepairLogins checks every tenant login of this database, on every
// cluster, and sets it back to what store made it: its password verifier
// from its recorded secret version, its role settings (search_path only),
// its connection limit and LOGIN according to the tenant's state. It
// repairs every login whether or not drift was seen (a password change is
// invisible to a non-superuser admin), and returns the drift it saw. It
// commits every loginBatch logins, so that PostgreSQL 16+'s lock table
// (a lock per role changed) holds any number of tenants.
func (a *Admin) RepairLogins(ctx context.Context) ([]LoginDrift, error) {
	var drift []LoginDrift
	err := a.forLogins(ctx, `TRUE`, loginBatch, func(tx pgx.Tx, cluster string, ls []login) error {
		var super bool
		if err := tx.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
			return err
		}
		pw := `NULL::text`
		if super {
			pw = `(SELECT rolpassword FROM pg_authid WHERE oid = r.oid)`
		}
		names := make([]string, len(ls))
		for i, l := range ls {
			names[i] = l.role
		}
		type seen struct {
			rolLimit int
			canLogin bool
			settings []string
			password *string
		}
		rows, err := tx.Query(ctx, `SELECT r.rolname, r.rolconnlimit, r.rolcanlogin,
				COALESCE((SELECT array_agg(s.cfg ORDER BY d.setdatabase, s.cfg)
				          FROM pg_db_role_setting d, unnest(d.setconfig) s(cfg)
				          WHERE d.setrole = r.oid), '{}'), `+pw+`
			FROM pg_roles r WHERE r.rolname = ANY ($1)`, names)
		if err != nil {
			return err
		}
		found := map[string]seen{}
		var name string
		var x seen
		if _, err := pgx.ForEachRow(rows, []any{&name, &x.rolLimit, &x.canLogin, &x.settings, &x.password}, func() error {
			found[name] = x
			return nil
		}); err != nil {
			return err
		}
		for _, l := range ls {
			r, ok := found[l.role]
			if !ok {
				// Nothing to repair from: a login is made with its schema's
				// grants, by CreateTenant.
				drift = append(drift, LoginDrift{Tenant: l.id, What: []string{"missing"}})
				continue
			}
			var what []string
			if r.password != nil {
				v, err := a.secrets.verifier(l.version, l.role, a.iterations)
				if err != nil {
					return err
				}
				if *r.password != v {
					what = append(what, "password")
				}
			}
			if want := "search_path=" + q(l.schema); len(r.settings) != 1 || (r.settings[0] != want && r.settings[0] != "search_path="+l.schema) {
				what = append(what, "settings")
			}
			if r.rolLimit != l.limit {
				what = append(what, "connection limit")
			}
			login := canLogin(l.state)
			if r.canLogin != login {
				what = append(what, "login")
			}
			if len(what) > 0 {
				drift = append(drift, LoginDrift{Tenant: l.id, What: what})
			}
			attr := "NOLOGIN"
			if login {
				attr = "LOGIN"
			}
			role := q(l.role)
			if err := execAll(ctx, tx,
				`ALTER ROLE `+role+` RESET ALL`,
				`ALTER ROLE `+role+` IN DATABASE `+q(l.database)+` RESET ALL`,
				`ALTER ROLE `+role+` IN DATABASE `+q(l.database)+` SET search_path = `+q(l.schema),
				`ALTER ROLE `+role+` `+attr+` CONNECTION LIMIT `+strconv.Itoa(l.limit),
			); err != nil {
				return err
			}
			if err := a.setVerifier(ctx, tx, l.role, l.version); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: repair logins: %w", err)
	}
	for _, d := range drift {
		a.log.WarnContext(ctx, "store: tenant login had drifted and was repaired", "tenant_id", d.Tenant.String(), "what", d.What)
	}
	return drift, nil
}

// loginBatch is how many tenant logins one transaction changes: each
// ALTER ROLE takes a lock until commit, and PostgreSQL 16+ runs out of
// shared memory (max_locks_per_transaction) at about 12,000 in one.
const loginBatch = 500

// login is a tenant login as the control plane records it.
type login struct {
	id                tenant.ID
	role, schema      string
	database, cluster string // the database it connects to; "" for the shared cluster
	state             tenant.State
	version, limit    int
}

// forLogins calls fn with the tenant logins the control plane records
// (those matching where, an SQL condition on tenancy.tenant_logins l),
// cluster by cluster, in batches of size, each in a transaction on
// the login's cluster that commits before the next.
func (a *Admin) forLogins(ctx context.Context, where string, size int, fn func(tx pgx.Tx, cluster string, ls []login) error) error {
	rows, err := a.pool.Query(ctx, `SELECT l.tenant_id, l.role_name, t.placement->>'schema', COALESCE(l.database, current_database()),
			COALESCE(l.cluster, ''), t.state, l.secret_version, l.conn_limit
		FROM tenancy.tenant_logins l JOIN tenancy.tenants t ON t.id = l.tenant_id WHERE `+where+` ORDER BY l.cluster NULLS FIRST, l.tenant_id`)
	if err != nil {
		return err
	}
	var all []login
	var l login
	var id, state string
	if _, err := pgx.ForEachRow(rows, []any{&id, &l.role, &l.schema, &l.database, &l.cluster, &state, &l.version, &l.limit}, func() error {
		var err error
		l.id, err = tenant.ParseID(id)
		l.state = tenant.State(state)
		all = append(all, l)
		return err
	}); err != nil {
		return err
	}
	for len(all) > 0 {
		n := 1
		for n < len(all) && n < size && all[n].cluster == all[0].cluster {
			n++
		}
		batch := all[:n]
		all = all[n:]
		pool, err := a.clusterPool(ctx, batch[0].cluster)
		if err != nil {
			return err
		}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return fn(tx, batch[0].cluster, batch) }); err != nil {
			return err
		}
	}
	return nil
}

// RotateLogins moves every tenant login (and the shared login) of this
// database, on every cluster, whose password derives from an older login
// secret to the newest one, in batches of batch logins per transaction (0
// means loginBatch), and returns how many it moved. Every DB must have the
// newest secret before the rotation starts and keep the old ones until it
// ends: a DB whose connection fails authentication reopens the tenant's
// pool with the version the directory records. After a failure, run it
// again: it moves what is left.
func (a *Admin) RotateLogins(ctx context.Context, batch int) (int, error) {
	if batch <= 0 || batch > loginBatch {
		batch = loginBatch
	}
	total := 0
	cur := a.secrets.current
	err := a.forLogins(ctx, `l.secret_version <> `+strconv.Itoa(cur), batch, func(tx pgx.Tx, cluster string, ls []login) error {
		ids := make([]string, len(ls))
		for i, l := range ls {
			if err := a.setVerifier(ctx, tx, l.role, cur); err != nil {
				return err
			}
			ids[i] = l.id.String()
		}
		// On the shared cluster in the same transaction; for logins
		// elsewhere, just before that cluster's transaction commits.
		update := `UPDATE tenancy.tenant_logins SET secret_version = $2 WHERE tenant_id = ANY ($1)`
		var err error
		if cluster == "" {
			_, err = tx.Exec(ctx, update, ids, cur)
		} else {
			_, err = a.pool.Exec(ctx, update, ids, cur)
		}
		if err == nil {
			total += len(ls)
		}
		return err
	})
	if err != nil {
		return total, fmt.Errorf("store: rotate logins: %w", err)
	}
	if a.mode == ModeSharedPool {
		if err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error { return a.ensureSharedLogin(ctx, tx) }); err != nil {
			return total, fmt.Errorf("store: rotate the shared login: %w", err)
		}
	}
	return total, nil
}

// MaxListTenants is the most tenants ListTenants returns at once.
const MaxListTenants = 1000

// ListTenants returns up to limit directory entries (1 to
// MaxListTenants; 0 means 100), in ID order, starting after the ID after
// (the zero ID for the first page): page through the directory by passing
// the last ID of one page as the next's after. Deleted tenants are listed
// too (their IDs are never reused).
func (a *Admin) ListTenants(ctx context.Context, after tenant.ID, limit int) ([]tenant.Info, error) {
	switch {
	case limit == 0:
		limit = 100
	case limit < 0 || limit > MaxListTenants:
		return nil, fmt.Errorf("store: list tenants: %w: limit %d is not between 1 and %d", ErrInvalidConfig, limit, MaxListTenants)
	}
	rows, err := a.pool.Query(ctx, `SELECT id, name, tier, region, state, created_at, updated_at
		FROM tenancy.tenants WHERE id > $1 ORDER BY id LIMIT $2`, after.String(), limit)
	if err != nil {
		return nil, fmt.Errorf("store: list tenants: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tenant.Info, error) {
		var info tenant.Info
		var id, tier, state string
		if err := r.Scan(&id, &info.Name, &tier, &info.Region, &state, &info.CreatedAt, &info.UpdatedAt); err != nil {
			return info, err
		}
		parsed, err := tenant.ParseID(id)
		if err != nil {
			return info, fmt.Errorf("directory entry %q: %w", id, err)
		}
		info.ID, info.Tier, info.State = parsed, tenant.Tier(tier), tenant.State(state)
		return info, nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: list tenants: %w", err)
	}
	return out, nil
}

// TryLock takes the advisory lock named name (any string; callers prefix
// their own, as lifecycle does with "tenancy.lifecycle.run:<n>") on a
// connection of its own, outside the admin pool, if no other session
// holds it: ok is false, and nothing is held, if one does. The lock is
// held until unlock is called, or until the process dies (its connection
// with it), so a crashed holder never keeps it. It is for work that spans
// many transactions and must have one driver at a time.
func (a *Admin) TryLock(ctx context.Context, name string) (unlock func(), ok bool, err error) {
	c, err := pgx.ConnectConfig(ctx, a.poolConfig.ConnConfig.Copy())
	if err != nil {
		return nil, false, fmt.Errorf("store: lock %q: %w", name, err)
	}
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, name).Scan(&ok); err != nil || !ok {
		_ = c.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, false, fmt.Errorf("store: lock %q: %w", name, err)
		}
		return nil, false, nil
	}
	return func() { _ = c.Close(context.Background()) }, true, nil
}
