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

// placement says where a tenant's data lives.
type placement struct {
	// Kind is "schema" for the standard tier.
	Kind string `json:"kind"`
	// Schema is the tenant's schema name.
	Schema string `json:"schema,omitempty"`
	// Role is the tenant's login role in ModeTenantLogin, "" in
	// ModeSharedPool.
	Role string `json:"role,omitempty"`
}

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
	} else if info.Tier != tenant.TierStandard {
		errs = append(errs, fmt.Errorf("field Tier: %s placement is not supported by this version of store (only standard)", info.Tier))
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

// CreateTenant places a new tenant and records it in the tenant directory,
// all in one admin transaction: either everything exists afterwards or
// nothing does. For the standard tier it creates schema tenant_<id> and
// every table of AdminConfig.Tables (secured, see [Table]); in
// ModeTenantLogin also the tenant's login role (an opaque name, the
// password derived from the newest login secret and set as a SCRAM
// verifier, CONNECTION LIMIT AdminConfig.ConnLimit, search_path its
// schema, no other privilege than its own schema and what all tenants
// share), recorded in tenancy.tenant_logins. info.State defaults to active.
// Creating a tenant that exists (or existed: IDs are never reused) fails
// with an error wrapping [ErrTenantExists].
func (a *Admin) CreateTenant(ctx context.Context, info tenant.Info) error {
	if err := validateInfo(info); err != nil {
		return err
	}
	if info.State == "" {
		info.State = tenant.StateActive
	}
	id := info.ID
	schemaName := id.SchemaName()
	schema := q(schemaName)
	place := placement{Kind: "schema", Schema: schemaName}
	var roleName string
	if a.mode == ModeTenantLogin {
		var err error
		if roleName, err = a.secrets.roleName(a.rolePrefix, id); err != nil {
			return fmt.Errorf("store: create tenant %s: %w", id, err)
		}
		place.Role = roleName
	}
	worker := a.sharedRole()
	if a.mode == ModeTenantLogin {
		worker = roleName
	}

	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO tenancy.tenants (id, name, tier, region, state, placement)
			VALUES ($1, $2, $3, $4, $5, $6)`, id.String(), info.Name, string(info.Tier), info.Region, string(info.State), place)
		if isUniqueViolation(err) {
			return ErrTenantExists
		}
		if err != nil {
			return err
		}
		if a.mode == ModeTenantLogin {
			if err := a.createLogin(ctx, tx, id, roleName, schemaName, info.State); err != nil {
				return err
			}
		}
		w := q(worker)
		if err := execAll(ctx, tx,
			`CREATE SCHEMA `+schema,
			`REVOKE ALL ON SCHEMA `+schema+` FROM PUBLIC`,
			`GRANT USAGE ON SCHEMA `+schema+` TO `+w,
		); err != nil {
			return err
		}
		g := sharedTableGuard(a.mode)
		if a.mode == ModeTenantLogin {
			g = tenantTableGuard(id, roleName)
		}
		for _, t := range a.tables {
			if err := createTable(ctx, tx, g, schemaName, t); err != nil {
				return err
			}
		}
		return execAll(ctx, tx,
			`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA `+schema+` TO `+w,
			`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA `+schema+` TO `+w,
		)
	})
	if err != nil {
		return fmt.Errorf("store: create tenant %s: %w", id, err)
	}
	a.log.InfoContext(ctx, "store: tenant created", "tenant_id", id.String(), "tier", string(info.Tier), "schema", schemaName)
	return nil
}

// createLogin creates the login role of tenant id in tx and records it.
func (a *Admin) createLogin(ctx context.Context, tx pgx.Tx, id tenant.ID, roleName, schemaName string, state tenant.State) error {
	var roleExists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, roleName).Scan(&roleExists); err != nil {
		return err
	}
	if roleExists {
		return fmt.Errorf("%w: role %s already exists on this cluster (another deployment with the same RolePrefix and login secret?)", ErrTenantExists, q(roleName))
	}
	login := "NOLOGIN"
	if canLogin(state) {
		login = "LOGIN"
	}
	role := q(roleName)
	groupGrant := `GRANT ` + q(a.groupRole()) + ` TO ` + role
	if a.pgVersion >= 160000 {
		groupGrant += ` WITH INHERIT TRUE, SET FALSE`
	}
	if err := execAll(ctx, tx,
		`CREATE ROLE `+role+` `+login+` NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT `+strconv.Itoa(a.connLimit),
		groupGrant,
		`ALTER ROLE `+role+` IN DATABASE `+q(a.dbName)+` SET search_path = `+q(schemaName),
	); err != nil {
		return err
	}
	if err := a.setVerifier(ctx, tx, roleName, a.secrets.current); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO tenancy.tenant_logins (tenant_id, role_oid, role_name, secret_version, conn_limit)
		VALUES ($1, $2::regrole::oid, $2, $3, $4)`, id.String(), roleName, a.secrets.current, a.connLimit)
	return err
}

// canLogin reports whether a tenant's login role may log in in state s.
func canLogin(s tenant.State) bool { return s == tenant.StateActive || s == tenant.StateProvisioning }

// loginOf returns the login role name of tenant id, "" if it has none.
func loginOf(ctx context.Context, tx pgx.Tx, id tenant.ID) (string, error) {
	var role string
	err := tx.QueryRow(ctx, `SELECT role_name FROM tenancy.tenant_logins WHERE tenant_id = $1`, id.String()).Scan(&role)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return role, err
}

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

// DropTenant deletes a tenant's data and placement in one admin
// transaction: its rows in every shared table, its schema with everything
// in it, and its login role (whose sessions it ends). The
// directory keeps the tenant with state deleted, so the ID is never given
// to another tenant. Dropping a tenant that has no placement fails with an
// error wrapping [ErrUnknownTenant].
//
// It waits for transactions that are writing to shared tables to end, so
// that it deletes what they commit, and holds off new writers until it
// ends. Move the tenant to decommissioning first (SetState), which in
// ModeTenantLogin also stops its new logins and ends its sessions.
func (a *Admin) DropTenant(ctx context.Context, id tenant.ID) error {
	if id.IsZero() {
		return fmt.Errorf("store: drop tenant: %w", tenant.ErrNoTenant)
	}
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		var state string
		err := tx.QueryRow(ctx, `SELECT state FROM tenancy.tenants WHERE id = $1 FOR UPDATE`, id.String()).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) || state == string(tenant.StateDeleted) {
			return ErrUnknownTenant
		}
		if err != nil {
			return err
		}
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
		role, err := loginOf(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := execAll(ctx, tx, `DROP SCHEMA IF EXISTS `+q(id.SchemaName())+` CASCADE`); err != nil {
			return err
		}
		if role != "" {
			if _, err := tx.Exec(ctx, `DELETE FROM tenancy.tenant_logins WHERE tenant_id = $1`, id.String()); err != nil {
				return err
			}
			if err := execAll(ctx, tx, `ALTER ROLE `+q(role)+` NOLOGIN`); err != nil {
				return err
			}
			// Leaves the admin a member, which DROP OWNED needs; the role
			// goes right after.
			if err := terminateSessions(ctx, tx, role, false); err != nil {
				return err
			}
			if err := execAll(ctx, tx, `DROP OWNED BY `+q(role), `DROP ROLE `+q(role)); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE tenancy.tenants SET state = 'deleted', placement = '{}', updated_at = now() WHERE id = $1`, id.String())
		return err
	})
	if err != nil {
		return fmt.Errorf("store: drop tenant %s: %w", id, err)
	}
	a.log.InfoContext(ctx, "store: tenant dropped", "tenant_id", id.String())
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
		role, err := loginOf(ctx, tx, id)
		if err != nil || role == "" {
			return err
		}
		if canLogin(to) {
			return execAll(ctx, tx, `ALTER ROLE `+q(role)+` LOGIN`)
		}
		if err := execAll(ctx, tx, `ALTER ROLE `+q(role)+` NOLOGIN`); err != nil {
			return err
		}
		return terminateSessions(ctx, tx, role, true)
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

// RepairLogins checks every tenant login of this database and sets it
// back to what store made it: its password verifier from its recorded
// secret version, its role settings (search_path only), its connection
// limit and LOGIN according to the tenant's state. It repairs every login
// whether or not drift was seen (a password change is invisible to a
// non-superuser admin), and returns the drift it saw.
func (a *Admin) RepairLogins(ctx context.Context) ([]LoginDrift, error) {
	var drift []LoginDrift
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		var super bool
		if err := tx.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
			return err
		}
		type login struct {
			id, role, state, schema  string
			version, limit, rolLimit int
			canLogin                 bool
			settings                 []string
			password                 *string
		}
		pw := `NULL::text`
		if super {
			pw = `(SELECT rolpassword FROM pg_authid WHERE oid = l.role_oid)`
		}
		rows, err := tx.Query(ctx, `SELECT l.tenant_id, l.role_name, t.state, t.placement->>'schema', l.secret_version, l.conn_limit,
				r.rolconnlimit, r.rolcanlogin,
				COALESCE((SELECT array_agg(s.cfg ORDER BY d.setdatabase, s.cfg)
				          FROM pg_db_role_setting d, unnest(d.setconfig) s(cfg)
				          WHERE d.setrole = l.role_oid), '{}'), `+pw+`
			FROM tenancy.tenant_logins l JOIN tenancy.tenants t ON t.id = l.tenant_id
			JOIN pg_roles r ON r.oid = l.role_oid ORDER BY 1`)
		if err != nil {
			return err
		}
		logins, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (login, error) {
			var l login
			err := r.Scan(&l.id, &l.role, &l.state, &l.schema, &l.version, &l.limit, &l.rolLimit, &l.canLogin, &l.settings, &l.password)
			return l, err
		})
		if err != nil {
			return err
		}
		for _, l := range logins {
			id, err := tenant.ParseID(l.id)
			if err != nil {
				return err
			}
			var what []string
			if l.password != nil {
				v, err := a.secrets.verifier(l.version, l.role, a.iterations)
				if err != nil {
					return err
				}
				if *l.password != v {
					what = append(what, "password")
				}
			}
			if want := "search_path=" + q(l.schema); len(l.settings) != 1 || (l.settings[0] != want && l.settings[0] != "search_path="+l.schema) {
				what = append(what, "settings")
			}
			if l.rolLimit != l.limit {
				what = append(what, "connection limit")
			}
			login := canLogin(tenant.State(l.state))
			if l.canLogin != login {
				what = append(what, "login")
			}
			if len(what) > 0 {
				drift = append(drift, LoginDrift{Tenant: id, What: what})
			}
			attr := "NOLOGIN"
			if login {
				attr = "LOGIN"
			}
			role := q(l.role)
			if err := execAll(ctx, tx,
				`ALTER ROLE `+role+` RESET ALL`,
				`ALTER ROLE `+role+` IN DATABASE `+q(a.dbName)+` RESET ALL`,
				`ALTER ROLE `+role+` IN DATABASE `+q(a.dbName)+` SET search_path = `+q(l.schema),
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

// RotateLogins moves every tenant login (and the shared login) of this
// database whose password derives from an older login secret to the
// newest one, in batches of batch logins per transaction (0 means 500),
// and returns how many it moved. Every DB must have the newest secret
// before the rotation starts and keep the old ones until it ends: a DB
// whose connection fails authentication reopens the tenant's pool with
// the version the directory records.
func (a *Admin) RotateLogins(ctx context.Context, batch int) (int, error) {
	if batch <= 0 {
		batch = 500
	}
	total := 0
	for {
		n := 0
		err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `SELECT tenant_id, role_name FROM tenancy.tenant_logins
				WHERE secret_version <> $1 ORDER BY tenant_id LIMIT $2 FOR UPDATE`, a.secrets.current, batch)
			if err != nil {
				return err
			}
			type login struct{ id, role string }
			logins, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (login, error) {
				var l login
				err := r.Scan(&l.id, &l.role)
				return l, err
			})
			if err != nil {
				return err
			}
			for _, l := range logins {
				if err := a.setVerifier(ctx, tx, l.role, a.secrets.current); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `UPDATE tenancy.tenant_logins SET secret_version = $2 WHERE tenant_id = $1`, l.id, a.secrets.current); err != nil {
					return err
				}
			}
			n = len(logins)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("store: rotate logins: %w", err)
		}
		total += n
		if n < batch {
			break
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
	if a.mode == ModeSharedPool {
		if err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error { return a.ensureSharedLogin(ctx, tx) }); err != nil {
			return total, fmt.Errorf("store: rotate the shared login: %w", err)
		}
	}
	return total, nil
}
