package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Admin is the administrative side of store: the control plane, tenant
// placement and logins, state changes, shared tables and DDL. It holds the
// admin connection and must never be handed to request handling, which
// gets a [DB]. It is safe for concurrent use.
type Admin struct {
	pool       *pgxpool.Pool
	adminRole  string
	platform   string
	rolePrefix string
	mode       Mode
	secrets    *secrets
	tables     []Table
	connLimit  int
	iterations int
	pgVersion  int
	dbName     string
	log        *slog.Logger

	poolConfig   *pgxpool.Config            // cfg.Pool: the shared cluster's admin connection
	clusters     map[string]*pgxpool.Config // cfg.Clusters
	mu           sync.Mutex                 // guards clusterPools
	clusterPools map[string]*pgxpool.Pool

	migrations []migration // cfg.Migrations, in version order
}

// OpenAdmin connects with cfg.Pool, creates or upgrades the control-plane
// schema tenancy (idempotent, versioned, safe from several processes at
// once), fixes the database's mode and role prefix on first use (and
// refuses a cfg that disagrees with them later), hardens the database
// (CONNECT and TEMP revoked from PUBLIC, CREATE on schema public revoked)
// and grants the platform role its control-plane reads.
func OpenAdmin(ctx context.Context, cfg *AdminConfig) (*Admin, error) {
	if cfg == nil || cfg.Pool == nil {
		return nil, fmt.Errorf("store: %w: AdminConfig.Pool is required: build the AdminConfig with store.ParseAdminConfig", ErrInvalidConfig)
	}
	if err := validRolePrefix(cfg.RolePrefix); err != nil {
		return nil, err
	}
	if !cfg.Mode.valid() {
		return nil, fmt.Errorf("store: %w: AdminConfig.Mode %q is not a mode (store.ModeTenantLogin or store.ModeSharedPool)", ErrInvalidConfig, cfg.Mode)
	}
	if cfg.PlatformRole == "" {
		return nil, fmt.Errorf("store: %w: AdminConfig.PlatformRole is required: the login role that DBs connect as for control-plane reads", ErrInvalidConfig)
	}
	if cfg.ConnLimit < 1 || cfg.ConnLimit > 10000 {
		return nil, fmt.Errorf("store: %w: AdminConfig.ConnLimit must be between 1 and 10000, got %d", ErrInvalidConfig, cfg.ConnLimit)
	}
	if cfg.SCRAMIterations < 1 || cfg.SCRAMIterations > 1<<20 {
		return nil, fmt.Errorf("store: %w: AdminConfig.SCRAMIterations must be between 1 and %d, got %d", ErrInvalidConfig, 1<<20, cfg.SCRAMIterations)
	}
	sec, err := newSecrets("AdminConfig.LoginSecrets", cfg.LoginSecrets)
	if err != nil {
		return nil, err
	}
	for i, t := range cfg.Tables {
		if err := t.validate(); err != nil {
			return nil, fmt.Errorf("store: AdminConfig.Tables[%d]: %w", i, err)
		}
	}
	a := &Admin{
		platform: cfg.PlatformRole, rolePrefix: cfg.RolePrefix, mode: cfg.Mode, secrets: sec,
		tables: append([]Table(nil), cfg.Tables...), connLimit: cfg.ConnLimit, iterations: cfg.SCRAMIterations,
		log: cfg.Logger, poolConfig: cfg.Pool.Copy(), clusters: map[string]*pgxpool.Config{}, clusterPools: map[string]*pgxpool.Pool{},
	}
	for name, c := range cfg.Clusters {
		if !clusterNameRE.MatchString(name) || c == nil {
			return nil, fmt.Errorf("store: %w: AdminConfig.Clusters[%q]: the name must match [a-z][a-z0-9_]* (at most 63 bytes) and the config be set: use AdminConfig.AddCluster", ErrInvalidConfig, name)
		}
		a.clusters[name] = c.Copy()
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.migrations, err = loadMigrations(cfg.Migrations); err != nil {
		return nil, err
	}
	if a.pool, err = pgxpool.NewWithConfig(ctx, cfg.Pool.Copy()); err != nil {
		return nil, fmt.Errorf("store: open admin pool: %w", err)
	}
	if err := a.init(ctx); err != nil {
		a.pool.Close()
		return nil, err
	}
	return a, nil
}

// Close closes the admin pools.
func (a *Admin) Close() {
	a.mu.Lock()
	for name, p := range a.clusterPools {
		p.Close()
		delete(a.clusterPools, name)
	}
	a.mu.Unlock()
	a.pool.Close()
}

// Mode returns the database's connection mode.
func (a *Admin) Mode() Mode { return a.mode }

func (a *Admin) init(ctx context.Context) error {
	err := a.pool.QueryRow(ctx, `SELECT current_user, current_setting('server_version_num')::int, current_database()`).
		Scan(&a.adminRole, &a.pgVersion, &a.dbName)
	if err != nil {
		return fmt.Errorf("store: connect as admin: %w", err)
	}
	if a.adminRole == a.platform {
		return fmt.Errorf("store: %w: %q is both the admin and the platform role: the platform role must be a least-privilege role of its own", ErrUnsafeAppRole, a.platform)
	}
	var exists bool
	if err := a.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, a.platform).Scan(&exists); err != nil {
		return fmt.Errorf("store: look up platform role: %w", err)
	}
	if !exists {
		return fmt.Errorf("store: %w: AdminConfig.PlatformRole %q does not exist: create it (CREATE ROLE ... LOGIN) first", ErrInvalidConfig, a.platform)
	}
	if err := a.migrate(ctx); err != nil {
		return err
	}
	return a.recordMigrations(ctx)
}

// groupRole is the NOLOGIN role every tenant login of this database
// belongs to: it holds what all of them share (CONNECT to this database
// only, the control-plane lookups of the RLS guard, shared tables), never
// a tenant's schema. Its name carries a hash of the database name, so the
// tenants of one database cannot connect to another.
func (a *Admin) groupRole() string { return a.rolePrefix + "tenancy_g_" + dbTag(a.dbName) }

// sharedRole is the one login role of ModeSharedPool in this database.
func (a *Admin) sharedRole() string { return a.rolePrefix + "tenancy_s_" + dbTag(a.dbName) }

// dbTag is a short hash of a database name, for cluster-wide role names
// that belong to one database.
func dbTag(name string) string {
	h := sha256.Sum256([]byte(name))
	return nameEncoding.EncodeToString(h[:])[:10]
}

// tenantPrivilegesTo is the role that gets privileges on tenant schemas:
// in ModeTenantLogin each tenant's own login, in ModeSharedPool the
// shared login.
func (a *Admin) sharedWorkRole() string {
	if a.mode == ModeSharedPool {
		return a.sharedRole()
	}
	return a.groupRole()
}

func q(name string) string { return pgx.Identifier{name}.Sanitize() }

// literal quotes s as an SQL string literal, for the few statements that
// take no parameters (DDL). Callers pass validated names only.
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func (a *Admin) migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
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
			if err := controlPlaneSteps[v](ctx, tx); err != nil {
				return fmt.Errorf("step %d: %w", v+1, err)
			}
			a.log.InfoContext(ctx, "store: control plane migrated", "version", v+1)
		}
		if _, err := tx.Exec(ctx, `UPDATE tenancy.schema_version SET version = $1`, len(controlPlaneSteps)); err != nil {
			return err
		}
		// Role prefix and mode are fixed for a database once chosen: the
		// guard, the policies and every tenant role depend on them.
		for _, kv := range [][3]string{{"role_prefix", a.rolePrefix, "RolePrefix"}, {"mode", string(a.mode), "Mode"}} {
			var got string
			err = tx.QueryRow(ctx, `INSERT INTO tenancy.meta (key, value) VALUES ($1, $2)
				ON CONFLICT (key) DO UPDATE SET value = tenancy.meta.value RETURNING value`, kv[0], kv[1]).Scan(&got)
			if err != nil {
				return err
			}
			if got != kv[1] {
				return fmt.Errorf("%w: AdminConfig.%s is %q but this database was set up with %q", ErrInvalidConfig, kv[2], kv[1], got)
			}
		}
		// The admin role, so that DBs can check their platform role is not
		// a member of it.
		if _, err := tx.Exec(ctx, `INSERT INTO tenancy.meta (key, value) VALUES ('admin_role', $1)
			ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, a.adminRole); err != nil {
			return err
		}
		// The platform role this database had before: if it changed, the
		// old one loses what it was granted.
		var oldPlatform string
		err = tx.QueryRow(ctx, `SELECT value FROM tenancy.meta WHERE key = 'platform_role'`).Scan(&oldPlatform)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if oldPlatform != "" && oldPlatform != a.platform {
			if err := a.revokePlatform(ctx, tx, oldPlatform); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO tenancy.meta (key, value) VALUES ('platform_role', $1)
			ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, a.platform); err != nil {
			return err
		}
		if err := a.ensureMarkedRole(ctx, tx, a.groupRole(), "group of the tenant logins", `NOLOGIN`); err != nil {
			return err
		}
		if a.mode == ModeSharedPool {
			if err := a.ensureSharedLogin(ctx, tx); err != nil {
				return err
			}
		}
		return a.grantControlPlane(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: migrate control plane: %w", err)
	}
	return nil
}

// grantControlPlane (re)creates the guard and the grants of the platform
// role, the tenant group and the shared login, and hardens the database.
func (a *Admin) grantControlPlane(ctx context.Context, tx pgx.Tx) error {
	group, platform, db := q(a.groupRole()), q(a.platform), q(a.dbName)
	stmts := append(guardSQL(a.mode, a.sharedRole()),
		`REVOKE ALL ON SCHEMA tenancy FROM PUBLIC`,
		`REVOKE ALL ON ALL TABLES IN SCHEMA tenancy FROM PUBLIC`,
		`REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tenancy FROM PUBLIC`,
		`GRANT USAGE ON SCHEMA tenancy TO `+group+`, `+platform,
		`GRANT EXECUTE ON FUNCTION tenancy.current_tenant(), tenancy.no_tenant(text) TO `+group,
		// A tenant login reads its own row of tenant_logins only (the guard
		// looks it up); the platform role reads them all.
		`GRANT SELECT ON tenancy.tenant_logins TO `+group+`, `+platform,
		`DROP POLICY IF EXISTS tenancy_own_login ON tenancy.tenant_logins`,
		`CREATE POLICY tenancy_own_login ON tenancy.tenant_logins FOR SELECT TO `+group+` USING (`+ownLoginSQL+`)`,
		`DROP POLICY IF EXISTS tenancy_platform ON tenancy.tenant_logins`,
		`CREATE POLICY tenancy_platform ON tenancy.tenant_logins FOR SELECT TO `+platform+` USING (true)`,
		`GRANT SELECT ON tenancy.tenants, tenancy.meta, tenancy.schema_version TO `+platform,
		// Serving reads wrapped keysets; only the admin role may write them.
		`GRANT SELECT ON tenancy.tenant_keysets, tenancy.tenant_keyset_tombstones TO `+platform,
		// Nothing shared between tenants in this database: no CONNECT or
		// TEMP for PUBLIC, no CREATE in schema public.
		`REVOKE CONNECT, TEMPORARY ON DATABASE `+db+` FROM PUBLIC`,
		`REVOKE CREATE ON SCHEMA public FROM PUBLIC`,
		`GRANT CONNECT ON DATABASE `+db+` TO `+group+`, `+platform,
	)
	if a.mode == ModeSharedPool {
		shared := q(a.sharedRole())
		stmts = append(stmts,
			`GRANT CONNECT ON DATABASE `+db+` TO `+shared,
			`GRANT USAGE ON SCHEMA tenancy TO `+shared,
			`GRANT EXECUTE ON FUNCTION tenancy.current_tenant(), tenancy.no_tenant(text), tenancy.is_placed(text) TO `+shared,
		)
	}
	if err := execAll(ctx, tx, stmts...); err != nil {
		return err
	}
	if err := a.grantBlobs(ctx, tx); err != nil {
		return err
	}
	if a.mode == ModeSharedPool {
		// The tenant setting can then only be made by SET LOCAL, a
		// statement of its own: not from inside another statement. Only
		// the owner of set_config (a superuser) may revoke it; for others
		// the check below says what to do.
		if err := execAll(ctx, tx, `SAVEPOINT revoke_set_config`); err != nil {
			return err
		}
		if err := execAll(ctx, tx, `REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC`); err != nil {
			if err := execAll(ctx, tx, `ROLLBACK TO SAVEPOINT revoke_set_config`); err != nil {
				return err
			}
		}
		return checkSetConfigRevoked(ctx, tx, a.sharedRole())
	}
	return nil
}

// checkSetConfigRevoked fails unless role (the shared login) cannot call
// set_config, without which ModeSharedPool's setting could be changed from
// inside any statement.
func checkSetConfigRevoked(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, role string) error {
	var can bool
	if err := q.QueryRow(ctx, `SELECT has_function_privilege($1, 'pg_catalog.set_config(text, text, boolean)', 'EXECUTE')`, role).Scan(&can); err != nil {
		return err
	}
	if can {
		return fmt.Errorf("%w: the shared-pool mode needs EXECUTE on set_config revoked from PUBLIC, and the admin role may not revoke it: run once as a superuser, in this database: REVOKE EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) FROM PUBLIC", ErrUnsafeAppRole)
	}
	return nil
}

// revokePlatform takes from role what grantControlPlane gives the
// platform role, when the database's platform role changes. A role that no
// longer exists has nothing to lose.
func (a *Admin) revokePlatform(ctx context.Context, tx pgx.Tx, role string) error {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil || !exists {
		return err
	}
	r := q(role)
	a.log.InfoContext(ctx, "store: the platform role changed: revoking the old one's grants", "old", role, "new", a.platform)
	return execAll(ctx, tx,
		`REVOKE SELECT ON tenancy.tenants, tenancy.meta, tenancy.schema_version, tenancy.tenant_logins,
			tenancy.tenant_keysets, tenancy.tenant_keyset_tombstones FROM `+r,
		`REVOKE USAGE ON SCHEMA tenancy FROM `+r,
		`REVOKE CONNECT ON DATABASE `+q(a.dbName)+` FROM `+r,
	)
}

// ensureMarkedRole creates the NOLOGIN or LOGIN role name if it does not
// exist, marked with a comment, and otherwise checks that the existing
// role carries the mark. Roles are cluster-wide: an unmarked role of that
// name may belong to another deployment, and must not be adopted.
func (a *Admin) ensureMarkedRole(ctx context.Context, tx pgx.Tx, name, what, attrs string) error {
	mark := "tenancy: " + what + " of RolePrefix " + strconv.Quote(a.rolePrefix)
	if _, err := tx.Exec(ctx, `SAVEPOINT ensure_role`); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `CREATE ROLE `+q(name)+` `+attrs+` NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB NOREPLICATION`)
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
			return fmt.Errorf("%w: role %s exists but tenancy did not create it as the %s (it has no such comment); it may belong to another deployment on this cluster: choose another RolePrefix", ErrInvalidConfig, q(name), what)
		}
		return nil
	}
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `COMMENT ON ROLE `+q(name)+` IS `+literal(mark))
	return err
}

// ensureSharedLogin creates the shared login of ModeSharedPool and sets
// its password verifier from the newest login secret.
func (a *Admin) ensureSharedLogin(ctx context.Context, tx pgx.Tx) error {
	if err := a.ensureMarkedRole(ctx, tx, a.sharedRole(), "shared login", `LOGIN NOINHERIT`); err != nil {
		return err
	}
	if err := a.setVerifier(ctx, tx, a.sharedRole(), a.secrets.current); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO tenancy.meta (key, value) VALUES ('shared_secret_version', $1), ('shared_role', $2)
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, strconv.Itoa(a.secrets.current), a.sharedRole())
	return err
}

// setVerifier sets role's SCRAM verifier for secret version. The verifier
// is DDL that log_statement = 'ddl' or 'all' would log: when the admin may
// change those settings (a superuser, or GRANT SET ON PARAMETER), they are
// turned off for the statement; otherwise the server log gets the
// verifier, from which the password cannot be recovered (256 random bits),
// but which lets a reader impersonate the server to that role.
func (a *Admin) setVerifier(ctx context.Context, tx pgx.Tx, role string, version int) error {
	v, err := a.secrets.verifier(version, role, a.iterations)
	if err != nil {
		return err
	}
	var prevStmt, prevDur string
	if err := tx.QueryRow(ctx, `SELECT current_setting('log_statement'), current_setting('log_min_duration_statement')`).Scan(&prevStmt, &prevDur); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `SAVEPOINT quiet`); err != nil {
		return err
	}
	quiet := true
	if _, err := tx.Exec(ctx, `SET LOCAL log_statement = 'none'`); err != nil {
		quiet = false
		if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT quiet`); err != nil {
			return err
		}
	} else if _, err := tx.Exec(ctx, `SET LOCAL log_min_duration_statement = -1`); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `ALTER ROLE `+q(role)+` PASSWORD `+literal(v)); err != nil {
		return err
	}
	if quiet {
		return execAll(ctx, tx, `SET LOCAL log_statement = `+literal(prevStmt), `SET LOCAL log_min_duration_statement = `+literal(prevDur))
	}
	return nil
}

// Keysets returns the read-write control-plane store of wrapped keysets,
// for the keys.Manager of provisioning, rotation, re-wrapping and
// shredding. Never hand it to request handling: [DB.Keysets] reads only.
func (a *Admin) Keysets() *Keysets { return NewKeysets(a.pool) }
