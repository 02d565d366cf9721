package store

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rtmx-ai/tenancy/tenant"
)

// sharedPool is the pool of ModeSharedPool: one login role for every
// tenant. Each statement (or transaction) is preceded, in the same round
// trip, by SET LOCAL app.tenant_id and SET LOCAL search_path, each its own
// protocol message; set_config is revoked from PUBLIC, so no other
// statement can change the setting. Statements go over the extended
// protocol only (one statement per Parse: a value cannot carry a second
// statement). A connection that passes to another tenant is reset with
// DISCARD ALL first (prepared statements, cursors, LISTEN, session
// settings, advisory locks).
type sharedPool struct {
	pool *pgxpool.Pool
	last sync.Map // *pgx.Conn -> tenant.ID: the tenant it last served
}

func (db *DB) openShared(ctx context.Context) (*sharedPool, error) {
	var role, version string
	err := db.platform.QueryRow(ctx, `SELECT (SELECT value FROM tenancy.meta WHERE key = 'shared_role'),
		(SELECT value FROM tenancy.meta WHERE key = 'shared_secret_version')`).Scan(&role, &version)
	if err != nil {
		return nil, fmt.Errorf("store: look up the shared login: %w", err)
	}
	v, err := strconv.Atoi(version)
	if err != nil {
		return nil, fmt.Errorf("store: the control plane records shared_secret_version %q: %w", version, err)
	}
	password, err := db.secrets.password(v, role)
	if err != nil {
		return nil, fmt.Errorf("store: shared login: %w", err)
	}
	if err := checkSetConfigRevoked(ctx, db.platform, role); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	cfg := db.base.Copy()
	cfg.ConnConfig.User, cfg.ConnConfig.Password = role, password
	// Exec mode: extended protocol with unnamed statements, so no client
	// cache to invalidate on DISCARD ALL, and the tenant's statement is
	// parsed after its SET LOCALs ran in the same pipeline.
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	cfg.MaxConns = int32(min(db.maxConns, 1<<20))
	cfg.MaxConnIdleTime = db.idle
	cfg.BeforeConnect = func(ctx context.Context, cc *pgx.ConnConfig) error {
		// The password of the version the control plane records now, so
		// that Admin.RotateLogins needs no restart.
		var version string
		if err := db.platform.QueryRow(ctx, `SELECT value FROM tenancy.meta WHERE key = 'shared_secret_version'`).Scan(&version); err != nil {
			return fmt.Errorf("store: look up the shared login: %w", err)
		}
		v, err := strconv.Atoi(version)
		if err != nil {
			return fmt.Errorf("store: the control plane records shared_secret_version %q: %w", version, err)
		}
		pw, err := db.secrets.password(v, role)
		if err != nil {
			return fmt.Errorf("store: shared login: %w", err)
		}
		cc.Password = pw
		return nil
	}
	s := &sharedPool{}
	cfg.BeforeClose = func(c *pgx.Conn) { s.last.Delete(c) }
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, fmt.Errorf("store: open shared pool: %w", err)
	}
	return s, nil
}

func (s *sharedPool) close() { s.pool.Close() }

// acquire returns a connection that may serve tenant id: one that last
// served another tenant is reset first.
func (s *sharedPool) acquire(ctx context.Context, id tenant.ID) (*pgxpool.Conn, error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire connection: %w", err)
	}
	if last, ok := s.last.Load(c.Conn()); !ok || last.(tenant.ID) != id {
		if ok {
			if err := c.Conn().PgConn().Exec(ctx, `DISCARD ALL`).Close(); err != nil {
				c.Conn().Close(context.WithoutCancel(ctx))
				c.Release()
				return nil, fmt.Errorf("reset connection for tenant %s: %w", id, err)
			}
		}
		s.last.Store(c.Conn(), id)
	}
	return c, nil
}

func setupSQL(id tenant.ID) (string, string) {
	return `SET LOCAL app.tenant_id TO ` + literal(id.String()), `SET LOCAL search_path TO ` + q(id.SchemaName())
}

// pipeline sends BEGIN, the setup, sql and COMMIT in one round trip and
// returns the results positioned at sql's; finish reads the rest. The
// explicit transaction bounds the SET LOCALs (in an implicit one,
// PostgreSQL would apply them but log a warning for each).
func pipeline(ctx context.Context, c *pgxpool.Conn, id tenant.ID, sql string, args []any) (br pgx.BatchResults, finish func() error, err error) {
	a, b := setupSQL(id)
	batch := &pgx.Batch{}
	batch.Queue(`BEGIN`)
	batch.Queue(a)
	batch.Queue(b)
	batch.Queue(sql, args...)
	batch.Queue(`COMMIT`)
	br = c.SendBatch(ctx, batch)
	finish = func() error {
		err := br.Close()
		if c.Conn().PgConn().TxStatus() != 'I' {
			// sql failed, so the server skipped the COMMIT: end the
			// failed transaction, or the pool would drop the connection.
			if _, rerr := c.Conn().PgConn().Exec(context.WithoutCancel(ctx), `ROLLBACK`).ReadAll(); rerr != nil && err == nil {
				err = rerr
			}
		}
		return err
	}
	for range 3 {
		if _, err := br.Exec(); err != nil {
			_ = finish()
			return nil, nil, fmt.Errorf("store: set tenant %s: %w", id, err)
		}
	}
	return br, finish, nil
}

func (s *sharedPool) exec(ctx context.Context, c *pgxpool.Conn, id tenant.ID, sql string, args []any) (pgconn.CommandTag, error) {
	br, finish, err := pipeline(ctx, c, id, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	ct, err := br.Exec()
	if ferr := finish(); err == nil {
		err = ferr
	}
	return ct, err
}

func (s *sharedPool) query(ctx context.Context, c *pgxpool.Conn, id tenant.ID, sql string, args []any) (pgx.Rows, error) {
	br, finish, err := pipeline(ctx, c, id, sql, args)
	if err != nil {
		return nil, err
	}
	r, err := br.Query()
	if err != nil {
		_ = finish()
		return nil, err
	}
	return &finishRows{Rows: r, finish: finish}, nil
}
