package store_test

// Tests behind a real PgBouncer in transaction-pooling mode (see
// internal/pgbouncertest): the store's application pool connects through
// PgBouncer, whose few server connections pass from client to client after
// every transaction, with no reset query in between; the admin pool connects
// directly. PgBouncer 1.18 does not support named prepared statements in
// transaction mode, so the application pool uses pgx.QueryExecModeExec or
// pgx.QueryExecModeSimpleProtocol; each test runs with both.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rtmx-ai/tenancy/internal/pgbouncertest"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pgbModes are the query exec modes that work behind PgBouncer 1.18 in
// transaction mode.
var pgbModes = []struct {
	name string
	mode pgx.QueryExecMode
}{
	{"Exec", pgx.QueryExecModeExec},
	{"SimpleProtocol", pgx.QueryExecModeSimpleProtocol},
}

// pgbStore opens a store whose application pool (at most maxConns client
// connections, in mode) goes through b, and whose admin pool connects
// directly.
func pgbStore(t *testing.T, b *pgbouncertest.Bouncer, mode pgx.QueryExecMode, maxConns int32) *store.DB {
	t.Helper()
	return newStore(t, func(c *store.Config) {
		app, err := pgxpool.ParseConfig(b.URL(t, appRole(t)))
		require.NoError(t, err)
		app.MaxConns = maxConns
		app.ConnConfig.DefaultQueryExecMode = mode
		c.App = app
	})
}

// pgbRaw connects as the application role through b, without store.
func pgbRaw(t *testing.T, b *pgbouncertest.Bouncer, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(b.URL(t, appRole(t)))
	require.NoError(t, err)
	cfg.DefaultQueryExecMode = mode
	c, err := pgx.ConnectConfig(ctxT(t), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// pgbSession is what a server connection carries into the next
// transaction, and which server connection (backend) it is.
type pgbSession struct {
	User, Role, SearchPath, TenantID string
	PID                              int
}

const pgbSessionSQL = `SELECT current_user, current_setting('role'), current_setting('search_path'),
	coalesce(current_setting('app.tenant_id', true), ''), pg_backend_pid()`

// pgbQueryer is what pgbReadSession reads through: a pgx.Conn or a pool.
type pgbQueryer interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// pgbReadSession reads the session state of the server connection PgBouncer
// gives q next. The short timeout turns a server connection that a client
// kept (a transaction left open) into a failure instead of a hang.
func pgbReadSession(ctx context.Context, q pgbQueryer) (pgbSession, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var s pgbSession
	err := q.QueryRow(ctx, pgbSessionSQL).Scan(&s.User, &s.Role, &s.SearchPath, &s.TenantID, &s.PID)
	return s, err
}

// TestBehindPgBouncerTenantsSeeOnlyTheirOwnRows is the leak hunt of
// leak_test.go behind PgBouncer: 32 goroutines over 10 tenants on 16 client
// connections that share 2 server connections, through every scoped call,
// with failing statements (implicit and in a transaction) in the traffic,
// and unscoped probes of the application role that land on server
// connections other tenants just used.
func TestBehindPgBouncerTenantsSeeOnlyTheirOwnRows(t *testing.T) {
	const (
		tenants    = 10
		goroutines = 32
		rounds     = 6
	)
	for _, m := range pgbModes {
		t.Run(m.name, func(t *testing.T) {
			b := pgbouncertest.Start(t, pgtest.DB(t))
			db := pgbStore(t, b, m.mode, 16)
			schema := "pgbshared" + strconv.FormatInt(tenantSeq.Add(1), 10)
			shared := store.Table{Name: "events", Columns: `seq bigint NOT NULL, owner text NOT NULL`}
			require.NoError(t, db.CreateSharedTable(ctxT(t), schema, shared))
			ids := make([]tenant.ID, tenants)
			ctxs := make([]context.Context, tenants)
			for i := range ctxs {
				ids[i], ctxs[i] = newTenant(t, db, "pgb")
			}
			clean, err := pgbReadSession(ctxT(t), db.UnscopedPool())
			require.NoError(t, err)
			require.Equal(t, db.AppRole(), clean.User)
			require.Equal(t, "none", clean.Role)
			require.Empty(t, clean.TenantID)
			foreignTable := pgx.Identifier{ids[0].SchemaName(), "requirements"}.Sanitize()

			var pids sync.Map // backends that served scoped statements
			var wg sync.WaitGroup
			errs := make(chan error, goroutines)
			for g := range goroutines {
				wg.Go(func() {
					for r := range rounds {
						ctx := ctxs[(g+r)%tenants]
						id := ids[(g+r)%tenants]
						key := fmt.Sprintf("G%d-R%d", g, r)
						if err := pgbLeakRound(ctx, db, id, key, schema, g*rounds+r, clean, foreignTable, &pids); err != nil {
							errs <- fmt.Errorf("goroutine %d round %d (tenant %s): %w", g, r, id, err)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}

			// PgBouncer really multiplexed: 16 client connections, at most 2 backends.
			n := 0
			pids.Range(func(any, any) bool { n++; return true })
			assert.Positive(t, n)
			assert.LessOrEqual(t, n, b.PoolSize(), "scoped statements ran on %d backends; PgBouncer allows %d", n, b.PoolSize())

			// Every tenant ends with exactly its own rows: none of another
			// tenant, none of a rolled-back transaction.
			want := make([]int, tenants)
			for g := range goroutines {
				for r := range rounds {
					want[(g+r)%tenants]++
				}
			}
			for i, ctx := range ctxs {
				var rows, foreign, rolledBack, events int
				require.NoError(t, db.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE requirement_text <> $1),
					count(*) FILTER (WHERE req_id LIKE '%-undone'), (SELECT count(*) FROM `+pgx.Identifier{schema, "events"}.Sanitize()+`)
					FROM requirements`, ids[i].String()).Scan(&rows, &foreign, &rolledBack, &events))
				assert.Equal(t, want[i], rows, "tenant %s rows", ids[i])
				assert.Zero(t, foreign, "tenant %s rows of others", ids[i])
				assert.Zero(t, rolledBack, "tenant %s rows of rolled-back transactions", ids[i])
				assert.Equal(t, want[i], events, "tenant %s shared-table rows", ids[i])
			}
			after, err := pgbReadSession(ctxT(t), db.UnscopedPool())
			require.NoError(t, err)
			after.PID = clean.PID
			assert.Equal(t, clean, after, "the server connections are back to the application role's defaults")
		})
	}
}

// pgbLeakRound is one round of the leak hunt for tenant id.
func pgbLeakRound(ctx context.Context, db *store.DB, id tenant.ID, key, schema string, seq int, clean pgbSession, foreignTable string, pids *sync.Map) error {
	events := pgx.Identifier{schema, "events"}.Sanitize()
	if _, err := db.Exec(ctx, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ($1, 'PGB', $2)`, key, id.String()); err != nil {
		return err
	}
	if _, err := db.Exec(ctx, `INSERT INTO `+events+` (seq, owner) VALUES ($1, $2)`, seq, id.String()); err != nil {
		return err
	}
	rows, err := db.Query(ctx, `SELECT tenant_id, requirement_text FROM requirements`)
	if err := ownRows(id, rows, err); err != nil {
		return err
	}
	rows, err = db.Query(ctx, `SELECT tenant_id, owner FROM `+events)
	if err := ownRows(id, rows, err); err != nil {
		return err
	}
	// The setup and the statement ran on the same server connection, in
	// the same transaction.
	var user, tid, path, text string
	var pid int
	if err := db.QueryRow(ctx, `SELECT current_user, current_setting('app.tenant_id'), current_setting('search_path'), pg_backend_pid(),
		(SELECT requirement_text FROM requirements WHERE req_id = $1)`, key).Scan(&user, &tid, &path, &pid, &text); err != nil {
		return err
	}
	pids.Store(pid, true)
	wantPath := pgx.Identifier{id.SchemaName()}.Sanitize() + ", pg_temp"
	if user != db.TenantRole(id) || tid != id.String() || path != wantPath || text != id.String() {
		return fmt.Errorf("LEAK: statement ran as user=%s tenant=%s search_path=%s and read %q", user, tid, path, text)
	}

	// Failing statements in the traffic: implicit, and inside a transaction
	// that wrote first. Neither may leave anything behind.
	if _, err := db.Exec(ctx, `SELECT 1/0 FROM requirements`); pgCode(err) != "22012" {
		return fmt.Errorf("division by zero: want 22012, got %v", err)
	}
	err = db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ($1, 'PGB', $2)`, key+"-undone", id.String()); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT 1/0`)
		return err
	})
	if pgCode(err) != "22012" {
		return fmt.Errorf("division by zero in a transaction: want 22012, got %v", err)
	}

	err = db.Tx(ctx, func(tx *store.Tx) error {
		if tx.Tenant() != id {
			return fmt.Errorf("LEAK: tx for %s scoped to %s", id, tx.Tenant())
		}
		if _, err := tx.Exec(ctx, `UPDATE requirements SET status = 'TESTED' WHERE req_id = $1`, key); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT tenant_id, requirement_text FROM requirements WHERE status = 'TESTED'`)
		if err := ownRows(id, rows, err); err != nil {
			return err
		}
		var tid string
		var pid int
		if err := tx.QueryRow(ctx, `SELECT current_setting('app.tenant_id'), pg_backend_pid()`).Scan(&tid, &pid); err != nil {
			return err
		}
		pids.Store(pid, true)
		if tid != id.String() {
			return fmt.Errorf("LEAK: tx of %s has app.tenant_id %s", id, tid)
		}
		return nil
	})
	if err != nil {
		return err
	}

	// Unscoped, the application role lands on a server connection that
	// some tenant just used: it must carry nothing of it.
	s, err := pgbReadSession(ctx, db.UnscopedPool())
	if err != nil {
		return err
	}
	pids.Store(s.PID, true)
	s.PID = clean.PID
	if s != clean {
		return fmt.Errorf("LEAK: unscoped connection carries %+v, want %+v", s, clean)
	}
	if _, err := db.UnscopedPool().Exec(ctx, `SELECT count(*) FROM `+foreignTable); pgCode(err) != "42501" {
		return fmt.Errorf("LEAK: unscoped read of a tenant table: want 42501, got %v", err)
	}
	return nil
}

// TestBehindPgBouncerNothingSurvivesTransaction runs each kind of scoped
// call through a PgBouncer with a single server connection, and then reads,
// with a separate raw client of the application role, what that very server
// connection carries: it must be back to the role's defaults. A control
// shows that a session-level setting does survive there, so the probe would
// see a leak.
func TestBehindPgBouncerNothingSurvivesTransaction(t *testing.T) {
	for _, m := range pgbModes {
		t.Run(m.name, func(t *testing.T) {
			b := pgbouncertest.StartConfig(t, pgtest.DB(t), pgbouncertest.Config{PoolSize: 1})
			db := pgbStore(t, b, m.mode, 4)
			id, ctx := newTenant(t, db, "pgbsurv")
			insertReq(t, db, ctx, "R0", "zero")
			raw := pgbRaw(t, b, m.mode)
			before, err := pgbReadSession(ctx, raw)
			require.NoError(t, err)
			require.Equal(t, db.AppRole(), before.User)
			require.Equal(t, "none", before.Role)
			require.Empty(t, before.TenantID)
			require.NotContains(t, before.SearchPath, id.SchemaName())

			// scopedPID checks that a scoped statement ran on the one server connection.
			scopedPID := func(pid int) error {
				if pid != before.PID {
					return fmt.Errorf("scoped statement ran on backend %d, not the only one (%d)", pid, before.PID)
				}
				return nil
			}
			errRollback := errors.New("roll back")
			copied := 0
			cases := []struct {
				name string
				run  func() error
			}{
				{"Commit", func() error {
					return db.Tx(ctx, func(tx *store.Tx) error {
						if _, err := tx.Exec(ctx, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ('R1', 'C', 'T')`); err != nil {
							return err
						}
						var pid int
						if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
							return err
						}
						return scopedPID(pid)
					})
				}},
				{"Rollback", func() error {
					err := db.Tx(ctx, func(tx *store.Tx) error {
						var n int
						if err := tx.QueryRow(ctx, `SELECT count(*) FROM requirements`).Scan(&n); err != nil {
							return err
						}
						return errRollback
					})
					if !errors.Is(err, errRollback) {
						return fmt.Errorf("want the rollback error, got %v", err)
					}
					return nil
				}},
				{"FailedStatement", func() error {
					if _, err := db.Exec(ctx, `SELECT 1/0 FROM requirements`); pgCode(err) != "22012" {
						return fmt.Errorf("want 22012, got %v", err)
					}
					return nil
				}},
				{"FailedStatementInTx", func() error {
					err := db.Tx(ctx, func(tx *store.Tx) error {
						if _, err := tx.Exec(ctx, `UPDATE requirements SET status = 'BROKEN'`); err != nil {
							return err
						}
						_, err := tx.Exec(ctx, `SELECT 1/0 FROM requirements`)
						return err
					})
					if pgCode(err) != "22012" {
						return fmt.Errorf("want 22012, got %v", err)
					}
					return nil
				}},
				{"FailedSetupUnknownTenant", func() error {
					unknown := tenant.NewContext(ctx, tenant.MustParseID("pgbneverprovisioned"))
					if _, err := db.Exec(unknown, `SELECT count(*) FROM requirements`); !errors.Is(err, store.ErrUnknownTenant) {
						return fmt.Errorf("want ErrUnknownTenant, got %v", err)
					}
					return nil
				}},
				{"ImplicitQuery", func() error {
					var n, pid int
					if err := db.QueryRow(ctx, `SELECT count(*), pg_backend_pid() FROM requirements`).Scan(&n, &pid); err != nil {
						return err
					}
					return scopedPID(pid)
				}},
				{"ImplicitExec", func() error {
					for range 3 {
						if _, err := db.Exec(ctx, `UPDATE requirements SET status = 'COMPLETE'`); err != nil {
							return err
						}
					}
					return nil
				}},
				{"QueryClosedEarly", func() error {
					rows, err := db.Query(ctx, `SELECT g FROM requirements, generate_series(1, 5000) g`)
					if err != nil {
						return err
					}
					if !rows.Next() {
						return fmt.Errorf("no rows: %v", rows.Err())
					}
					rows.Close()
					return rows.Err()
				}},
				{"BatchInTx", func() error {
					return db.Tx(ctx, func(tx *store.Tx) error {
						b := &pgx.Batch{}
						b.Queue(`INSERT INTO requirements (req_id, category, requirement_text) VALUES ('R2', 'C', 'T')`)
						b.Queue(`SELECT count(*) FROM requirements`)
						return tx.SendBatch(ctx, b).Close()
					})
				}},
				{"CopyInTx", func() error {
					// PostgreSQL refuses COPY FROM into a table under row-level
					// security (0A000), that is into every tenant table; either
					// way, nothing may survive on the server connection.
					err := db.Tx(ctx, func(tx *store.Tx) error {
						n, err := tx.CopyFrom(ctx, pgx.Identifier{"requirements"}, []string{"req_id", "category", "requirement_text"},
							pgx.CopyFromRows([][]any{{"R3", "C", "T"}, {"R4", "C", "T"}}))
						copied += int(n)
						return err
					})
					if err != nil && pgCode(err) != "0A000" {
						return err
					}
					return nil
				}},
				{"PanicInTx", func() (err error) {
					defer func() {
						if r := recover(); r != nil && r != "boom" {
							err = fmt.Errorf("unexpected panic %v", r)
						}
					}()
					_ = db.Tx(ctx, func(tx *store.Tx) error {
						if _, err := tx.Exec(ctx, `UPDATE requirements SET status = 'PANIC'`); err != nil {
							return err
						}
						panic("boom")
					})
					return errors.New("the panic did not propagate")
				}},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					require.NoError(t, c.run())
					after, err := pgbReadSession(ctx, raw)
					require.NoError(t, err, "the server connection must be free again")
					assert.Equal(t, before, after, "role, search_path and app.tenant_id on the shared server connection must be back to their defaults")
				})
			}
			var n, panicked, broken int
			require.NoError(t, db.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE status = 'PANIC'), count(*) FILTER (WHERE status = 'BROKEN') FROM requirements`).
				Scan(&n, &panicked, &broken))
			assert.Equal(t, 3+copied, n, "R0 to R2, and what COPY wrote")
			assert.Zero(t, panicked+broken, "rolled-back updates")

			t.Run("ControlSessionLevelSettingsDoSurvive", func(t *testing.T) {
				// What store must never do: a session-level SET, here by
				// another client of the application role. The probe sees it.
				_, err := db.UnscopedPool().Exec(ctx, `SELECT set_config('search_path', $1, false), set_config('app.tenant_id', $2, false)`,
					pgx.Identifier{id.SchemaName()}.Sanitize(), id.String())
				require.NoError(t, err)
				leaked, err := pgbReadSession(ctx, raw)
				require.NoError(t, err)
				assert.Equal(t, id.String(), leaked.TenantID)
				assert.Contains(t, leaked.SearchPath, id.SchemaName())
				assert.NotEqual(t, before, leaked)
				_, err = raw.Exec(ctx, `RESET ALL`)
				require.NoError(t, err)
				after, err := pgbReadSession(ctx, raw)
				require.NoError(t, err)
				assert.Equal(t, before, after)
			})
		})
	}
}

// TestBehindPgBouncerQueryWithoutTenantFails checks that without a tenant,
// the API refuses and the database raises, also on a server connection
// that PgBouncer just had serve the tenant.
func TestBehindPgBouncerQueryWithoutTenantFails(t *testing.T) {
	for _, m := range pgbModes {
		t.Run(m.name, func(t *testing.T) {
			b := pgbouncertest.StartConfig(t, pgtest.DB(t), pgbouncertest.Config{PoolSize: 1})
			db := pgbStore(t, b, m.mode, 4)
			id, ctxA := newTenant(t, db, "pgbnone")
			insertReq(t, db, ctxA, "REQ-1", "not for the tenantless")
			table := pgx.Identifier{id.SchemaName(), "requirements"}.Sanitize()
			ctx := ctxT(t)

			t.Run("API", func(t *testing.T) {
				_, err := db.Exec(ctx, `SELECT count(*) FROM requirements`)
				assert.ErrorIs(t, err, tenant.ErrNoTenant)
				_, err = db.Query(ctx, `SELECT count(*) FROM requirements`)
				assert.ErrorIs(t, err, tenant.ErrNoTenant)
				var n int
				assert.ErrorIs(t, db.QueryRow(ctx, `SELECT count(*) FROM requirements`).Scan(&n), tenant.ErrNoTenant)
				called := false
				err = db.Tx(ctx, func(*store.Tx) error { called = true; return nil })
				assert.ErrorIs(t, err, tenant.ErrNoTenant)
				assert.False(t, called, "fn must not run without a tenant")
				_, err = db.Exec(tenant.NewContext(ctx, tenant.ID{}), `SELECT count(*) FROM requirements`)
				assert.ErrorIs(t, err, tenant.ErrNoTenant)
			})

			raw := pgbRaw(t, b, m.mode)
			roleOnly := func() error {
				return pgx.BeginFunc(ctx, raw, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `SELECT set_config('role', $1, true)`, db.TenantRole(id)); err != nil {
						return err
					}
					var n int
					return tx.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n)
				})
			}
			t.Run("AppRoleAloneIsDenied", func(t *testing.T) {
				_, err := raw.Exec(ctx, `SELECT count(*) FROM `+table)
				require.Error(t, err)
				assert.Equal(t, "42501", pgCode(err), "%v", err)
			})
			t.Run("TenantRoleWithoutSetting", func(t *testing.T) {
				err := roleOnly()
				require.Error(t, err)
				assert.Contains(t, err.Error(), "no tenant is set")
			})
			t.Run("TenantRoleWithoutSettingImplicitTransaction", func(t *testing.T) {
				// Role and query in one implicit transaction, as store's
				// one-statement calls send them, minus app.tenant_id.
				bt := &pgx.Batch{}
				bt.Queue(`SELECT set_config('role', $1, true)`, db.TenantRole(id))
				bt.Queue(`SELECT req_id FROM ` + table)
				br := raw.SendBatch(ctx, bt)
				_, err := br.Exec()
				if err == nil {
					_, err = br.Exec()
				}
				if cerr := br.Close(); err == nil {
					err = cerr
				}
				require.Error(t, err)
				assert.Contains(t, err.Error(), "no tenant is set")
			})
			t.Run("OnServerConnectionThatServedTheTenant", func(t *testing.T) {
				var pid, n int
				require.NoError(t, db.QueryRow(ctxA, `SELECT pg_backend_pid(), count(*) FROM requirements`).Scan(&pid, &n))
				require.Equal(t, 1, n)
				s, err := pgbReadSession(ctx, raw)
				require.NoError(t, err)
				require.Equal(t, pid, s.PID, "one server connection: the raw client gets the one that served the tenant")
				err = roleOnly()
				require.Error(t, err)
				assert.Contains(t, err.Error(), "no tenant is set")
				assert.False(t, strings.Contains(err.Error(), "0 rows"))
			})
		})
	}
}
