package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rtmx-ai/tenancy/store/internal/admit"
	"github.com/rtmx-ai/tenancy/tenant"
)

func defaultCPUs() int { return runtime.NumCPU() }

// DB is the request path of store: it runs work for the tenant in the
// context, and nothing else. It cannot create, drop or change tenants;
// that is [Admin]'s. It is safe for concurrent use.
//
// In ModeTenantLogin every tenant's work runs on connections logged in as
// that tenant's own role, from a pool per tenant opened on first use; in
// ModeSharedPool on the shared login's pool, with the tenant set per
// statement or transaction.
type DB struct {
	platform     *pgxpool.Pool
	platformRole string
	mode         Mode
	secrets      *secrets
	base         *pgxpool.Config // the platform's config: host, port, database, TLS
	adm          *admit.Controller
	idle         time.Duration
	maxConns     int
	log          *slog.Logger

	pools sync.Map // tenant.ID -> *tenantPool (ModeTenantLogin)

	mu     sync.Mutex // guards opening (one open per tenant at a time) and closed
	closed bool
	stop   chan struct{} // closed by Close: stops the janitor
	done   chan struct{} // closed when the janitor has stopped

	shared   *sharedPool                // ModeSharedPool
	clusters map[string]*pgxpool.Config // cfg.Clusters

	opened, closedPools atomic.Int64
}

// Open connects the platform pool, checks that the platform role is safe
// (see the package documentation) and that the control plane has been set
// up by an [Admin] of this version, and reads the database's mode. It
// opens no tenant connection: each tenant's pool opens on first use. An
// unsafe role fails with an error wrapping [ErrUnsafeAppRole] that says
// what is wrong and how to fix it; nothing is left open.
func Open(ctx context.Context, cfg *Config) (*DB, error) {
	if cfg == nil || cfg.Platform == nil {
		return nil, fmt.Errorf("store: %w: Config.Platform is required: build the Config with store.ParseConfig", ErrInvalidConfig)
	}
	sec, err := newSecrets("Config.LoginSecrets", cfg.LoginSecrets)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.MaxConns < 1:
		return nil, fmt.Errorf("store: %w: Config.MaxConns must be at least 1, got %d", ErrInvalidConfig, cfg.MaxConns)
	case cfg.MinResidency < 0:
		return nil, fmt.Errorf("store: %w: Config.MinResidency must not be negative, got %s", ErrInvalidConfig, cfg.MinResidency)
	case cfg.IdleTimeout <= 0:
		return nil, fmt.Errorf("store: %w: Config.IdleTimeout must be positive, got %s", ErrInvalidConfig, cfg.IdleTimeout)
	case cfg.ConnectRate < 0 || cfg.ConnectBurst < 0:
		return nil, fmt.Errorf("store: %w: Config.ConnectRate and ConnectBurst must not be negative", ErrInvalidConfig)
	}
	if m := cfg.Platform.ConnConfig.DefaultQueryExecMode; m == pgx.QueryExecModeSimpleProtocol {
		return nil, fmt.Errorf("store: %w: Config.Platform: default_query_exec_mode simple_protocol is refused: it inlines arguments into the SQL text (visible in pg_stat_activity) and lets one value carry several statements", ErrInvalidConfig)
	}
	adm, err := admit.New(admit.Config{
		MaxConns: cfg.MaxConns, MinResidency: cfg.MinResidency,
		ConnectRate: cfg.ConnectRate, ConnectBurst: cfg.ConnectBurst,
	})
	if err != nil {
		return nil, fmt.Errorf("store: %w: %w", ErrInvalidConfig, err)
	}
	db := &DB{
		secrets: sec, base: cfg.Platform.Copy(), adm: adm, idle: cfg.IdleTimeout, maxConns: cfg.MaxConns, log: cfg.Logger,
		stop: make(chan struct{}), done: make(chan struct{}), clusters: map[string]*pgxpool.Config{},
	}
	for name, c := range cfg.Clusters {
		if !clusterNameRE.MatchString(name) || c == nil {
			return nil, fmt.Errorf("store: %w: Config.Clusters[%q]: the name must match [a-z][a-z0-9_]* (at most 63 bytes) and the config be set: use Config.AddCluster", ErrInvalidConfig, name)
		}
		db.clusters[name] = c.Copy()
	}
	if db.log == nil {
		db.log = slog.New(slog.DiscardHandler)
	}
	if err := db.installTelemetry(cfg.Telemetry); err != nil {
		return nil, err
	}
	if db.platform, err = pgxpool.NewWithConfig(ctx, cfg.Platform.Copy()); err != nil {
		return nil, fmt.Errorf("store: open platform pool: %w", err)
	}
	if err := db.init(ctx); err != nil {
		db.platform.Close()
		return nil, err
	}
	if db.mode == ModeSharedPool {
		if db.shared, err = db.openShared(ctx); err != nil {
			db.platform.Close()
			return nil, err
		}
	}
	go db.janitor()
	return db, nil
}

func (db *DB) init(ctx context.Context) error {
	var version int
	err := db.platform.QueryRow(ctx, `SELECT current_user, (SELECT version FROM tenancy.schema_version),
		(SELECT value FROM tenancy.meta WHERE key = 'mode')`).Scan(&db.platformRole, &version, &db.mode)
	if err != nil {
		return fmt.Errorf("store: read the control plane as the platform role (has an Admin of this database been opened with AdminConfig.PlatformRole naming this role?): %w", err)
	}
	if version != len(controlPlaneSteps) {
		return fmt.Errorf("store: %w: the control plane is at version %d, this build of tenancy needs %d: open an Admin of this version first", ErrInvalidConfig, version, len(controlPlaneSteps))
	}
	if !db.mode.valid() {
		return fmt.Errorf("store: %w: the control plane records mode %q, which this build does not know", ErrInvalidConfig, db.mode)
	}
	return checkPlatformRole(ctx, db.platform)
}

// Mode returns the database's connection mode.
func (db *DB) Mode() Mode { return db.mode }

// Close closes every pool. Calls after Close fail.
func (db *DB) Close() {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return
	}
	db.closed = true
	db.mu.Unlock()
	close(db.stop)
	<-db.done
	db.pools.Range(func(k, v any) bool {
		p := v.(*tenantPool)
		p.users.Store(-1 << 40)
		p.close()
		db.pools.Delete(k)
		return true
	})
	if db.shared != nil {
		db.shared.close()
	}
	db.platform.Close()
}

// Tenant returns the directory entry of the tenant in ctx, for checks
// such as "is it active"; it reads no other tenant's.
func (db *DB) Tenant(ctx context.Context) (tenant.Info, error) {
	id, err := tenant.Require(ctx, "store: tenant")
	if err != nil {
		return tenant.Info{}, err
	}
	return readTenant(ctx, db.platform, id)
}

// Keysets returns the read-only control-plane store of wrapped keysets,
// for the keys.Manager that serves requests. Provisioning, rotation and
// shredding use [Admin.Keysets].
func (db *DB) Keysets() *Keysets { return NewKeysets(db.platform) }

// PoolStats are counters of a DB's connections, for metrics.
type PoolStats struct {
	// Pools is the number of tenant pools open now; Opened and Closed
	// count pools opened and closed (idle) since Open.
	Pools          int
	Opened, Closed int64
	// Conns is the number of open tenant connections; Waiting the number
	// of connection requests waiting for the global cap.
	Conns, Waiting int
	// Connects counts new connections, ConnectFailures failed ones;
	// Evictions idle connections closed for a waiting tenant; Waits and
	// WaitTime the requests that had to wait for the cap, and how long.
	Connects, ConnectFailures, Evictions, Waits int64
	WaitTime                                    time.Duration
}

// Stats returns a snapshot of the counters.
func (db *DB) Stats() PoolStats {
	s := db.adm.Stats()
	n := 0
	db.pools.Range(func(_, v any) bool {
		if v.(*tenantPool).pool != nil {
			n++
		}
		return true
	})
	if db.shared != nil {
		s.Open = int(db.shared.pool.Stat().TotalConns())
	}
	return PoolStats{
		Pools: n, Opened: db.opened.Load(), Closed: db.closedPools.Load(),
		Conns: s.Open, Waiting: s.Waiting, Connects: s.Connects, ConnectFailures: s.ConnectFailures,
		Evictions: s.Evictions, Waits: s.Waits, WaitTime: s.WaitTime,
	}
}

// tenantPool is the pool of one tenant's login.
type tenantPool struct {
	id   tenant.ID
	pool *pgxpool.Pool
	// users counts calls between taking the pool and getting their
	// connection; the janitor closes an idle pool only by swapping 0 for
	// a negative value, after which callers open a new one.
	users      atomic.Int64
	lastUsed   atomic.Int64 // unix nanoseconds
	created    sync.Map     // *pgx.Conn -> time.Time
	unregister func()
}

func (p *tenantPool) close() {
	p.unregister()
	if p.pool != nil {
		p.pool.Close()
	}
}

// acquire returns a connection of the tenant in ctx. op names the call for
// errors.
func (db *DB) acquire(ctx context.Context, op string) (*pgxpool.Conn, tenant.ID, error) {
	id, err := tenant.Require(ctx, op)
	if err != nil {
		return nil, id, err
	}
	refused := 0 // connections PostgreSQL refused for the login's CONNECTION LIMIT
	for {
		p, err := db.poolOf(ctx, id)
		if err != nil {
			return nil, id, fmt.Errorf("%s: tenant %s: %w", op, id, err)
		}
		if p.pool == nil { // a standard tenant in ModeSharedPool
			p.lastUsed.Store(time.Now().UnixNano())
			c, err := db.shared.acquire(ctx, id)
			if err != nil {
				return nil, id, fmt.Errorf("%s: %w", op, err)
			}
			return c, id, nil
		}
		n := p.users.Load()
		if n < 0 || !p.users.CompareAndSwap(n, n+1) {
			if n < 0 {
				db.pools.CompareAndDelete(id, p)
			}
			continue
		}
		p.lastUsed.Store(time.Now().UnixNano())
		db.adm.Touch(id.String())
		c, err := p.pool.Acquire(admit.WithRequest(ctx))
		p.users.Add(-1)
		if err != nil && tooManyConnections(err) && refused < len(connLimitBackoff) && sleepCtx(ctx, connLimitBackoff[refused]) {
			// The server still counts a backend whose connection was just
			// closed (an eviction, another replica's pool) until it exits:
			// wait for it, briefly, rather than fail the request.
			refused++
			continue
		}
		if err != nil {
			return nil, id, fmt.Errorf("%s: tenant %s: acquire connection: %w", op, id, err)
		}
		return c, id, nil
	}
}

// connLimitBackoff are the waits before the retries of a connection that
// PostgreSQL refused for the tenant login's CONNECTION LIMIT (SQLSTATE
// 53300): about 0.8 s in all, after which the refusal is the caller's.
var connLimitBackoff = []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond,
	40 * time.Millisecond, 80 * time.Millisecond, 160 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}

// tooManyConnections reports whether err is PostgreSQL's too_many_connections.
func tooManyConnections(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "53300"
}

// sleepCtx waits d, or until ctx is done; it reports whether it waited d.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// release gives c back to its pool, where it is idle at once, and tells a
// tenant waiting for the connection cap, if any, to evict it now.
func (db *DB) release(c *pgxpool.Conn) {
	c.Release()
	db.adm.Kick()
}

// poolOf returns the pool of tenant id, opening it if needed.
func (db *DB) poolOf(ctx context.Context, id tenant.ID) (*tenantPool, error) {
	if p, ok := db.pools.Load(id); ok {
		return p.(*tenantPool), nil
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed {
		return nil, errors.New("store: DB is closed")
	}
	if p, ok := db.pools.Load(id); ok {
		return p.(*tenantPool), nil
	}
	p, err := db.openPool(ctx, id)
	if err != nil {
		return nil, err
	}
	db.pools.Store(id, p)
	if p.pool != nil {
		db.opened.Add(1)
	}
	return p, nil
}

func (db *DB) openPool(ctx context.Context, id tenant.ID) (*tenantPool, error) {
	var (
		role              string
		version, limit    int
		cluster, database *string
	)
	err := db.platform.QueryRow(ctx, `SELECT role_name, secret_version, conn_limit, cluster, database FROM tenancy.tenant_logins WHERE tenant_id = $1`, id.String()).
		Scan(&role, &version, &limit, &cluster, &database)
	if errors.Is(err, pgx.ErrNoRows) {
		if db.mode == ModeSharedPool {
			// Standard tenants have no login of their own in this mode:
			// the shared pool serves them. The answer is kept until the
			// tenant is idle, so it is given only for a placed tenant: an
			// ID not created yet may become one with a database of its
			// own.
			var placed bool
			if err := db.platform.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenancy.tenants WHERE id = $1
				AND state <> ALL (ARRAY['requested', 'deleted', 'failed']))`, id.String()).Scan(&placed); err != nil {
				return nil, fmt.Errorf("look up the tenant: %w", err)
			}
			if !placed {
				return nil, fmt.Errorf("%w: not placed in this database's directory", ErrUnknownTenant)
			}
			p := &tenantPool{id: id, unregister: func() {}}
			p.lastUsed.Store(time.Now().UnixNano())
			return p, nil
		}
		return nil, fmt.Errorf("%w: no login in this database's directory", ErrUnknownTenant)
	}
	if err != nil {
		return nil, fmt.Errorf("look up the login: %w", err)
	}
	if _, err := db.secrets.password(version, role); err != nil {
		return nil, err
	}
	base := db.base
	if cluster != nil {
		var ok bool
		if base, ok = db.clusters[*cluster]; !ok {
			return nil, fmt.Errorf("%w: the tenant lives on cluster %q, which Config.Clusters does not have: add it with Config.AddCluster", ErrInvalidConfig, *cluster)
		}
	}
	cfg := base.Copy()
	cfg.ConnConfig.User = role
	if database != nil {
		cfg.ConnConfig.Database = *database
	}
	if cfg.ConnConfig.DefaultQueryExecMode == pgx.QueryExecModeSimpleProtocol {
		return nil, fmt.Errorf("%w: Config.Clusters[%q]: default_query_exec_mode simple_protocol is refused", ErrInvalidConfig, *cluster)
	}
	// The role's own settings give it its search_path; a setting in the
	// startup packet would not pass PgBouncer. Nothing here relies on it
	// for isolation.
	delete(cfg.ConnConfig.RuntimeParams, "search_path")
	cfg.MaxConns = int32(min(limit, 1<<20))
	cfg.MinConns, cfg.MinIdleConns = 0, 0
	cfg.MaxConnIdleTime = db.idle
	cfg.HealthCheckPeriod = min(db.idle/2+time.Millisecond, time.Minute)
	p := &tenantPool{id: id}
	key := id.String()
	dial := cfg.ConnConfig.DialFunc
	if dial == nil {
		d := &net.Dialer{KeepAlive: 5 * time.Minute}
		dial = d.DialContext
	}
	admitted := db.adm.Dial(key, dial)
	cfg.BeforeConnect = func(ctx context.Context, cc *pgx.ConnConfig) error {
		// The password of the secret version the directory records now,
		// so that Admin.RotateLogins needs no restart.
		var v int
		err := db.platform.QueryRow(ctx, `SELECT secret_version FROM tenancy.tenant_logins WHERE tenant_id = $1`, key).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: it has no login any more (dropped?)", ErrUnknownTenant)
		}
		if err != nil {
			return fmt.Errorf("look up the login: %w", err)
		}
		pw, err := db.secrets.password(v, role)
		if err != nil {
			return err
		}
		cc.Password = pw
		// Each connection gets its own dial. Its first socket takes a slot
		// of the global cap; a dial made while that socket is open is the
		// connection's cancel request, which PostgreSQL does not count
		// against max_connections and which must not queue behind the
		// cap the connection itself holds.
		var open atomic.Bool
		cc.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if open.Load() {
				return dial(ctx, network, addr)
			}
			c, err := admitted(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			open.Store(true)
			return &markedConn{Conn: c, open: &open}, nil
		}
		return nil
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		p.created.Store(c, time.Now())
		return nil
	}
	cfg.BeforeClose = func(c *pgx.Conn) { p.created.Delete(c) }
	if p.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("open pool: %w", err)
	}
	p.unregister = db.adm.Register(key, func(minAge time.Duration) bool { return evictIdle(p, minAge) })
	p.lastUsed.Store(time.Now().UnixNano())
	db.log.Debug("store: tenant pool opened", "tenant_id", key, "conn_limit", limit)
	return p, nil
}

// markedConn clears open when the socket closes.
type markedConn struct {
	net.Conn
	open *atomic.Bool
}

func (c *markedConn) Close() error {
	c.open.Store(false)
	return c.Conn.Close()
}

// evictIdle closes one idle connection of p that is at least minAge old.
func evictIdle(p *tenantPool, minAge time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evicted := false
	for _, c := range p.pool.AcquireAllIdle(ctx) {
		if !evicted {
			if t, ok := p.created.Load(c.Conn()); ok && time.Since(t.(time.Time)) >= minAge {
				_ = c.Conn().Close(ctx) // the pool destroys a closed connection on release
				evicted = true
			}
		}
		c.Release()
	}
	return evicted
}

// janitor closes tenant pools that have had no connection for the idle
// timeout.
func (db *DB) janitor() {
	defer close(db.done)
	t := time.NewTicker(min(db.idle/2+time.Millisecond, 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-db.stop:
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-db.idle).UnixNano()
		db.pools.Range(func(k, v any) bool {
			p := v.(*tenantPool)
			if p.lastUsed.Load() < cutoff && (p.pool == nil || p.pool.Stat().TotalConns() == 0) && p.users.CompareAndSwap(0, -1<<40) {
				db.pools.CompareAndDelete(k, p)
				if p.pool != nil {
					db.closedPools.Add(1)
				}
				p.close()
			}
			return true
		})
	}
}

// checkPlatformRole enforces layer 3 of the package documentation with the
// platform role's own connection, so what it sees is what the role can do.
func checkPlatformRole(ctx context.Context, pool *pgxpool.Pool) error {
	var role string
	var super, bypass, createRole, replication bool
	err := pool.QueryRow(ctx, `SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, rolreplication FROM pg_roles WHERE rolname = current_user`).
		Scan(&role, &super, &bypass, &createRole, &replication)
	if err != nil {
		return fmt.Errorf("store: inspect platform role: %w", err)
	}
	r := q(role)
	var problems []string
	if super {
		problems = append(problems, fmt.Sprintf("it is a superuser, which bypasses row-level security (fix: ALTER ROLE %s NOSUPERUSER)", r))
	}
	if bypass {
		problems = append(problems, fmt.Sprintf("it has BYPASSRLS (fix: ALTER ROLE %s NOBYPASSRLS)", r))
	}
	if createRole {
		problems = append(problems, fmt.Sprintf("it has CREATEROLE and could make itself a member of tenant roles (fix: ALTER ROLE %s NOCREATEROLE)", r))
	}
	if replication {
		problems = append(problems, fmt.Sprintf("it has REPLICATION, and logical decoding reads every tenant's rows past row level security (fix: ALTER ROLE %s NOREPLICATION)", r))
	}
	// Any role it can use that reaches tenant data: predefined roles that
	// read or write everything, tenant logins, their group, the shared
	// login, the admin.
	rows, err := pool.Query(ctx, `
SELECT what FROM (
  SELECT format('is a member of %I, which reaches past tenant isolation (fix: REVOKE %I FROM %I)', r.rolname, r.rolname, current_user) AS what
    FROM pg_roles r
   WHERE r.rolname = ANY ($1) AND pg_has_role(current_user, r.oid, 'MEMBER')
  UNION ALL
  SELECT format('is a member of the tenant login %I (fix: REVOKE %I FROM %I)', l.role_name, l.role_name, current_user)
    FROM tenancy.tenant_logins l WHERE pg_has_role(current_user, l.role_oid, 'MEMBER')
  UNION ALL
  SELECT format('is a member of %I, which tenancy created (fix: REVOKE %I FROM %I)', r.rolname, r.rolname, current_user)
    FROM pg_roles r
   WHERE r.rolname <> current_user AND shobj_description(r.oid, 'pg_authid') LIKE 'tenancy: %'
     AND pg_has_role(current_user, r.oid, 'MEMBER')
  UNION ALL
  SELECT format('is a member of the admin role %I (fix: REVOKE %I FROM %I)', m.value, m.value, current_user)
    FROM tenancy.meta m WHERE m.key = 'admin_role' AND pg_has_role(current_user, m.value, 'MEMBER')
  UNION ALL
  SELECT format('owns the database %I (fix: ALTER DATABASE %I OWNER TO the admin role)', d.datname, d.datname)
    FROM pg_database d WHERE d.datname = current_database() AND pg_has_role(current_user, d.datdba, 'MEMBER')
  UNION ALL
  SELECT format('holds privileges on schema %I (fix: REVOKE ALL ON SCHEMA %I FROM %I)', n.nspname, n.nspname, current_user) FROM pg_namespace n
   WHERE n.nspname LIKE 'tenant\_%'
     AND (has_schema_privilege(current_user, n.oid, 'USAGE') OR has_schema_privilege(current_user, n.oid, 'CREATE'))
  UNION ALL
  SELECT format('owns %I.%I, whose owner row level security does not bind unless forced (fix: ALTER TABLE %I.%I OWNER TO the admin role)', n.nspname, c.relname, n.nspname, c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
     AND (n.nspname LIKE 'tenant\_%' OR n.nspname = 'tenancy' OR c.relrowsecurity)
) p ORDER BY 1 LIMIT 10`,
		[]string{"pg_read_all_data", "pg_write_all_data", "pg_execute_server_program", "pg_read_server_files", "pg_write_server_files", "pg_signal_backend"})
	if err != nil {
		return fmt.Errorf("store: inspect platform role: %w", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("store: inspect platform role: %w", err)
	}
	for _, f := range found {
		problems = append(problems, "it "+f)
	}
	if len(problems) > 0 {
		return fmt.Errorf("store: %w: platform role %s: %s", ErrUnsafeAppRole, r, strings.Join(problems, "; "))
	}
	return nil
}

// rows hides the connection of the rows it wraps: a caller cannot keep a
// pooled connection past Close (Conn returns nil).
type rows struct{ pgx.Rows }

// Conn returns nil: store does not hand out pooled connections.
func (rows) Conn() *pgx.Conn { return nil }

// Query runs one query for the tenant of ctx. The rows hold a connection
// until they are closed or read to the end. Without a tenant in ctx it
// fails with an error wrapping [tenant.ErrNoTenant] and touches no
// connection.
func (db *DB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := db.checkArgs("store: query", args); err != nil {
		return nil, err
	}
	c, id, err := db.acquire(ctx, "store: query")
	if err != nil {
		return nil, err
	}
	r, err := db.query(ctx, c, id, sql, args)
	if err != nil {
		db.release(c)
		return nil, err
	}
	return &finishRows{Rows: r, finish: func() error { db.release(c); return nil }}, nil
}

// QueryRow runs one query for the tenant of ctx and returns its only row;
// see [DB.Query].
func (db *DB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	r, err := db.Query(ctx, sql, args...)
	return &row{rows: r, err: err}
}

// Exec runs one statement for the tenant of ctx.
func (db *DB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := db.checkArgs("store: exec", args); err != nil {
		return pgconn.CommandTag{}, err
	}
	c, id, err := db.acquire(ctx, "store: exec")
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer db.release(c)
	if db.mode == ModeSharedPool {
		return db.shared.exec(ctx, c, id, sql, args)
	}
	return execExtended(ctx, c, sql, args)
}

// execExtended runs sql as pgx's Exec would, but always over the extended
// protocol: pgx's Exec sends a statement without arguments over the simple
// protocol, where one string may carry several statements, and so one
// value concatenated into it could add a SET of its own.
func execExtended(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, sql string, args []any) (pgconn.CommandTag, error) {
	r, err := q.Query(ctx, sql, args...)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	r.Close()
	return r.CommandTag(), r.Err()
}

// hasOptions reports whether args start with a pgx per-query option,
// which a batch does not take: such a statement is not sent in the round
// trip of BEGIN.
func hasOptions(args []any) bool {
	if len(args) == 0 {
		return false
	}
	switch args[0].(type) {
	case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID, pgx.QueryRewriter:
		return true
	}
	return false
}

// checkArgs refuses per-query options that store cannot honour: the simple
// protocol everywhere, and any option in ModeSharedPool, whose statements
// travel in a batch with their setup.
func (db *DB) checkArgs(op string, args []any) error {
	// pgx reads every leading option, in any order, as it does here.
	for _, arg := range args {
		if !hasOptions([]any{arg}) {
			break
		}
		if m, ok := arg.(pgx.QueryExecMode); ok && m == pgx.QueryExecModeSimpleProtocol {
			return fmt.Errorf("%s: %w", op, ErrSimpleProtocol)
		}
	}
	if db.mode == ModeSharedPool && hasOptions(args) {
		return fmt.Errorf("%s: %w: per-query options (%T) are not taken in the shared-pool mode", op, ErrInvalidConfig, args[0])
	}
	return nil
}

func (db *DB) query(ctx context.Context, c *pgxpool.Conn, id tenant.ID, sql string, args []any) (pgx.Rows, error) {
	if db.mode == ModeSharedPool {
		return db.shared.query(ctx, c, id, sql, args)
	}
	return c.Query(ctx, sql, args...)
}

// finishRows runs finish once, when the rows are closed or read to the
// end; its error is the rows' error if they had none. Conn returns nil:
// store does not hand out pooled connections.
type finishRows struct {
	pgx.Rows
	finish func() error
	done   bool
	err    error
}

func (r *finishRows) Next() bool {
	if r.done {
		return false
	}
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *finishRows) Close() {
	if r.done {
		return
	}
	r.done = true
	r.Rows.Close()
	r.err = r.finish()
}

func (r *finishRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// Conn returns nil: store does not hand out pooled connections.
func (*finishRows) Conn() *pgx.Conn { return nil }

// Tx is a transaction of one tenant, handed to the function given to
// [DB.Tx]. It begins with its first statement, in the same round trip
// (with the tenant's setting, in the shared-pool mode). It must not be used
// after the function returns, nor by several goroutines at once, and every
// call needs the Tx's tenant in its context.
type Tx struct {
	db   *DB
	c    *pgxpool.Conn
	opts pgx.TxOptions
	tx   pgx.Tx // nil until the first statement
	id   tenant.ID
	done atomic.Bool // the function given to BeginTx has returned
}

func (t *Tx) check(ctx context.Context, op string, args []any) error {
	if t.done.Load() {
		return fmt.Errorf("%s: %w: the transaction ended when the function given to DB.Tx returned", op, pgx.ErrTxClosed)
	}
	if _, err := tenant.RequireSame(ctx, op, t.id); err != nil {
		return err
	}
	return t.db.checkArgs(op, args)
}

// Tenant returns the tenant the transaction belongs to.
func (t *Tx) Tenant() tenant.ID { return t.id }

// begin queues BEGIN (and the shared-pool setting) and, if sql is not
// empty, sql, sends them in one round trip, and reads the results before
// sql's. br is positioned at sql's result (nil when sql is empty).
func (t *Tx) begin(ctx context.Context, sql string, args []any) (pgx.BatchResults, error) {
	b := &pgx.Batch{}
	b.BeginTx(t.opts)
	before := 1
	if t.db.mode == ModeSharedPool {
		a, p := setupSQL(t.id)
		b.Queue(a)
		b.Queue(p)
		before += 2
	}
	if sql != "" {
		b.Queue(sql, args...)
	}
	br := t.c.SendBatch(ctx, b)
	t.tx = br.Tx()
	for range before {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return nil, fmt.Errorf("store: tx: begin: %w", err)
		}
	}
	if sql == "" {
		return nil, br.Close()
	}
	return br, nil
}

// Exec runs sql in the transaction; see [pgx.Tx.Exec].
func (t *Tx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := t.check(ctx, "store: tx exec", args); err != nil {
		return pgconn.CommandTag{}, err
	}
	if t.tx == nil && hasOptions(args) {
		if _, err := t.begin(ctx, "", nil); err != nil {
			return pgconn.CommandTag{}, err
		}
	}
	if t.tx == nil {
		br, err := t.begin(ctx, sql, args)
		if err != nil {
			return pgconn.CommandTag{}, err
		}
		ct, err := br.Exec()
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		return ct, err
	}
	return execExtended(ctx, t.tx, sql, args)
}

// Query runs sql in the transaction; see [pgx.Tx.Query]. The rows must be
// closed (or read to the end) before the next statement.
func (t *Tx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := t.check(ctx, "store: tx query", args); err != nil {
		return nil, err
	}
	if t.tx == nil && hasOptions(args) {
		if _, err := t.begin(ctx, "", nil); err != nil {
			return nil, err
		}
	}
	if t.tx == nil {
		br, err := t.begin(ctx, sql, args)
		if err != nil {
			return nil, err
		}
		r, err := br.Query()
		if err != nil {
			_ = br.Close()
			return nil, err
		}
		return &finishRows{Rows: r, finish: br.Close}, nil
	}
	r, err := t.tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return rows{r}, nil
}

// QueryRow runs sql in the transaction and returns its only row.
func (t *Tx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	r, err := t.Query(ctx, sql, args...)
	return &row{rows: r, err: err}
}

// SendBatch sends b in the transaction; see [pgx.Tx.SendBatch].
func (t *Tx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if err := t.check(ctx, "store: tx send batch", nil); err != nil {
		return errBatchResults{err}
	}
	if t.tx == nil {
		if _, err := t.begin(ctx, "", nil); err != nil {
			return errBatchResults{err}
		}
	}
	return batchResults{t.tx.SendBatch(ctx, b)}
}

// batchResults hides the connection of the rows of a batch, as rows does.
type batchResults struct{ pgx.BatchResults }

func (br batchResults) Query() (pgx.Rows, error) {
	r, err := br.BatchResults.Query()
	if err != nil {
		return nil, err
	}
	return rows{r}, nil
}

// QueryRow reads the next result's only row.
func (br batchResults) QueryRow() pgx.Row {
	r, err := br.Query()
	return &row{rows: r, err: err}
}

// CopyFrom copies rows into table in the transaction; see [pgx.Tx.CopyFrom].
// tableName is resolved with the tenant's search_path.
//
// PostgreSQL refuses COPY FROM into a table under row level security, which
// every tenant table is (SQLSTATE 0A000), and tenants have no TEMP
// privilege for a staging table. For bulk loads, send the rows as arrays
// in one INSERT, which the isolation policy checks row by row:
//
//	INSERT INTO requirements (req_id, requirement_text)
//	SELECT * FROM unnest($1::text[], $2::text[])
func (t *Tx) CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error) {
	if err := t.check(ctx, "store: tx copy from", nil); err != nil {
		return 0, err
	}
	if t.tx == nil {
		if _, err := t.begin(ctx, "", nil); err != nil {
			return 0, err
		}
	}
	return t.tx.CopyFrom(ctx, tableName, columnNames, rowSrc)
}

// Tx runs fn in a transaction of the tenant of ctx (read-write, the
// server's default isolation); see [DB.BeginTx].
func (db *DB) Tx(ctx context.Context, fn func(tx *Tx) error) error {
	return db.BeginTx(ctx, pgx.TxOptions{}, fn)
}

// BeginTx runs fn in a transaction of the tenant of ctx, with opts. If fn
// returns nil the transaction is committed, otherwise it is rolled back
// and fn's error returned. Without a tenant in ctx it fails with an error
// wrapping [tenant.ErrNoTenant] and touches no connection; for a tenant
// this database does not know, with one wrapping [ErrUnknownTenant]. If fn
// runs no statement, no transaction is begun.
func (db *DB) BeginTx(ctx context.Context, opts pgx.TxOptions, fn func(tx *Tx) error) (err error) {
	c, id, err := db.acquire(ctx, "store: tx")
	if err != nil {
		return err
	}
	defer db.release(c)
	t := &Tx{db: db, c: c, opts: opts, id: id}
	committed := false
	defer func() {
		// Runs on error, on success and while a panic of fn unwinds: roll
		// back whatever was not committed.
		t.done.Store(true)
		if t.tx != nil && !committed {
			_ = t.tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if err = fn(t); err != nil {
		return err
	}
	committed = true
	if t.tx == nil {
		return nil
	}
	if err = t.tx.Commit(ctx); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// row implements pgx.Row over rows, like pgx's own.
type row struct {
	rows pgx.Rows
	err  error
}

func (r *row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// errBatchResults reports err from every call.
type errBatchResults struct{ err error }

func (e errBatchResults) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, e.err }
func (e errBatchResults) Query() (pgx.Rows, error)         { return nil, e.err }
func (e errBatchResults) QueryRow() pgx.Row                { return &row{err: e.err} }
func (e errBatchResults) Close() error                     { return e.err }
func (e errBatchResults) Tx() pgx.Tx                       { return nil }
