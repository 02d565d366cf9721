package store_test

// Tests behind a real PgBouncer 1.18 in transaction-pooling mode (see
// internal/pgbouncertest). The DB's Config.Platform points at PgBouncer,
// so the platform pool, every tenant login (ModeTenantLogin) and the
// shared login (ModeSharedPool) reach PostgreSQL through it; its few
// server connections pass from client to client after every transaction,
// with no reset in between unless a test asks for one. The Admin connects
// directly. PgBouncer 1.18 keeps no named prepared statements in
// transaction mode, so the platform config uses pgx.QueryExecModeExec or
// pgx.QueryExecModeCacheDescribe (the shared pool always uses Exec), and
// store.Open refuses the simple protocol.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgbouncertest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// pgbExecModes are the pgx query exec modes that work behind PgBouncer 1.18
// in transaction mode and that store accepts.
var pgbExecModes = []struct {
	name string
	mode pgx.QueryExecMode
}{
	{"exec", pgx.QueryExecModeExec},
	{"cache_describe", pgx.QueryExecModeCacheDescribe},
}

// pgbEnv is an env whose DB reaches PostgreSQL through a PgBouncer.
type pgbEnv struct {
	*env
	b   *pgbouncertest.Bouncer
	cfg *store.Config // e.db's config, for more instances of the service
}

// newPgbEnv starts a PgBouncer with bcfg in front of the database of mode
// m, and opens an env whose DB connects through it: Config.Platform is the
// platform role through PgBouncer with execMode, then adjust applies.
func newPgbEnv(t *testing.T, m store.Mode, execMode pgx.QueryExecMode, bcfg pgbouncertest.Config, adjust ...func(*store.AdminConfig, *store.Config)) *pgbEnv {
	t.Helper()
	d := databaseFor(t, m)
	e := &pgbEnv{b: pgbouncertest.StartConfig(t, d, bcfg)}
	through := func(_ *store.AdminConfig, c *store.Config) {
		bc, err := store.ParseConfig(e.b.URL(t, platform(t, d)), secret)
		require.NoError(t, err)
		bc.Platform.ConnConfig.DefaultQueryExecMode = execMode
		c.Platform = bc.Platform
	}
	keep := func(_ *store.AdminConfig, c *store.Config) { e.cfg = c }
	e.env = newEnv(t, m, slices.Concat([]func(*store.AdminConfig, *store.Config){through}, adjust, []func(*store.AdminConfig, *store.Config){keep})...)
	if m == store.ModeSharedPool {
		role, password, err := store.SharedLogin(e.admin)
		require.NoError(t, err)
		e.b.Register(t, role, password)
	}
	return e
}

// newTenant creates a tenant, and in ModeTenantLogin lets its login
// through PgBouncer.
func (e *pgbEnv) newTenant(t testing.TB, name string) (tenant.ID, context.Context) {
	t.Helper()
	id, ctx := e.env.newTenant(t, name)
	if e.mode == store.ModeTenantLogin {
		role, password, err := store.LoginOf(t.Context(), e.admin, id)
		require.NoError(t, err)
		e.b.Register(t, role, password)
	}
	return id, ctx
}

// openDB opens another DB with e.db's config: a second instance of the
// service behind the same PgBouncer.
func (e *pgbEnv) openDB(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(t.Context(), e.cfg)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	return db
}

// pooledUsers returns the roles PgBouncer has pools of in e's database.
func (e *pgbEnv) pooledUsers(t testing.TB) []string {
	t.Helper()
	var users []string
	for _, p := range e.b.Show(t, "POOLS") {
		if p["database"] == e.d.Name() {
			users = append(users, p["user"])
		}
	}
	return users
}

// serverConns returns how many server connections PgBouncer has open to
// e's database.
func (e *pgbEnv) serverConns(t testing.TB) int {
	t.Helper()
	n := 0
	for _, s := range e.b.Show(t, "SERVERS") {
		if s["database"] == e.d.Name() {
			n++
		}
	}
	return n
}

func TestBehindPgBouncerSimpleProtocolIsRefused(t *testing.T) {
	e := newPgbEnv(t, store.ModeTenantLogin, pgx.QueryExecModeExec, pgbouncertest.Config{})
	withMode := func(m pgx.QueryExecMode) *store.Config {
		c := *e.cfg
		c.Platform = e.cfg.Platform.Copy()
		c.Platform.ConnConfig.DefaultQueryExecMode = m
		return &c
	}
	db, err := store.Open(t.Context(), withMode(pgx.QueryExecModeSimpleProtocol))
	assert.ErrorIs(t, err, store.ErrInvalidConfig)
	assert.Nil(t, db)

	byParam, err := store.ParseConfig(e.cfg.Platform.ConnString()+"&default_query_exec_mode=simple_protocol", secret)
	require.NoError(t, err)
	require.Equal(t, pgx.QueryExecModeSimpleProtocol, byParam.Platform.ConnConfig.DefaultQueryExecMode)
	db, err = store.Open(t.Context(), byParam)
	assert.ErrorIs(t, err, store.ErrInvalidConfig, "default_query_exec_mode=simple_protocol in the connection string")
	assert.Nil(t, db)

	for _, x := range pgbExecModes {
		db, err := store.Open(t.Context(), withMode(x.mode))
		require.NoError(t, err, x.name)
		db.Close()
	}

	// Nor per query.
	_, ctx := e.newTenant(t, "pgbsp")
	_, err = e.db.Exec(ctx, `SELECT $1::int`, pgx.QueryExecModeSimpleProtocol, 1)
	assert.ErrorIs(t, err, store.ErrSimpleProtocol)
	_, err = e.db.Query(ctx, `SELECT $1::int`, pgx.QueryExecModeSimpleProtocol, 1)
	assert.ErrorIs(t, err, store.ErrSimpleProtocol)
}

func TestBehindPgBouncerTenantsSeeOnlyTheirOwnRows(t *testing.T) {
	for _, m := range modes {
		for _, x := range pgbExecModes {
			t.Run(string(m)+"/"+x.name, func(t *testing.T) {
				e := newPgbEnv(t, m, x.mode, pgbouncertest.Config{})
				idA, ctxA := e.newTenant(t, "pgba")
				idB, ctxB := e.newTenant(t, "pgbb")
				e.insertReq(t, ctxA, "REQ-A-1", idA.String())
				e.insertReq(t, ctxB, "REQ-B-1", idB.String())
				e.insertReq(t, ctxB, "REQ-B-2", idB.String())

				got, err := reqIDs(t, e.db, ctxA, `SELECT req_id FROM requirements ORDER BY req_id`)
				require.NoError(t, err)
				assert.Equal(t, []string{"REQ-A-1"}, got)
				got, err = reqIDs(t, e.db, ctxB, `SELECT req_id FROM requirements ORDER BY req_id`)
				require.NoError(t, err)
				assert.Equal(t, []string{"REQ-B-1", "REQ-B-2"}, got)
				var text string
				err = e.db.QueryRow(ctxA, `SELECT requirement_text FROM requirements WHERE req_id = $1`, "REQ-B-1").Scan(&text)
				assert.ErrorIs(t, err, pgx.ErrNoRows)

				t.Run("OtherSchemaByName", func(t *testing.T) {
					other := pgx.Identifier{idB.SchemaName(), "requirements"}.Sanitize()
					got, err := reqIDs(t, e.db, ctxA, `SELECT req_id FROM `+other)
					if m == store.ModeTenantLogin {
						require.Error(t, err, "a tenant login has no privilege on another tenant's schema")
						assert.Equal(t, "42501", pgCode(err), "%v", err)
					} else {
						require.NoError(t, err)
						assert.Empty(t, got, "row level security shows A none of B's rows")
					}
				})

				t.Run("NoTenant", func(t *testing.T) {
					ctx := t.Context()
					_, err := e.db.Exec(ctx, `SELECT count(*) FROM requirements`)
					assert.ErrorIs(t, err, tenant.ErrNoTenant)
					_, err = e.db.Query(ctx, `SELECT count(*) FROM requirements`)
					assert.ErrorIs(t, err, tenant.ErrNoTenant)
					var n int
					assert.ErrorIs(t, e.db.QueryRow(ctx, `SELECT count(*) FROM requirements`).Scan(&n), tenant.ErrNoTenant)
					called := false
					err = e.db.Tx(ctx, func(*store.Tx) error { called = true; return nil })
					assert.ErrorIs(t, err, tenant.ErrNoTenant)
					assert.False(t, called, "fn must not run without a tenant")
				})

				t.Run("Transactions", func(t *testing.T) {
					require.NoError(t, e.db.Tx(ctxA, func(tx *store.Tx) error {
						_, err := tx.Exec(ctxA, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ($1, 'PGB', $2)`, "REQ-A-2", idA.String())
						return err
					}))
					err := e.db.Tx(ctxA, func(tx *store.Tx) error {
						if _, err := tx.Exec(ctxA, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ($1, 'PGB', $2)`, "REQ-A-undone", idA.String()); err != nil {
							return err
						}
						return errPgbUndo
					})
					assert.ErrorIs(t, err, errPgbUndo)
					err = e.db.Tx(ctxA, func(tx *store.Tx) error {
						if _, err := tx.Exec(ctxA, `UPDATE requirements SET status = 'BROKEN'`); err != nil {
							return err
						}
						_, err := tx.Exec(ctxA, `SELECT 1/0 FROM requirements`)
						return err
					})
					assert.Equal(t, "22012", pgCode(err), "%v", err)
					var n, broken int
					require.NoError(t, e.db.QueryRow(ctxA, `SELECT count(*), count(*) FILTER (WHERE status = 'BROKEN') FROM requirements`).Scan(&n, &broken))
					assert.Equal(t, 2, n, "REQ-A-1 and the committed REQ-A-2")
					assert.Zero(t, broken, "the failed transaction's update")
				})

				t.Run("ThroughPgBouncer", func(t *testing.T) {
					var user string
					require.NoError(t, e.db.QueryRow(ctxA, `SELECT session_user`).Scan(&user))
					want := []string{user}
					if m == store.ModeTenantLogin {
						roleA, _, err := store.LoginOf(t.Context(), e.admin, idA)
						require.NoError(t, err)
						roleB, _, err := store.LoginOf(t.Context(), e.admin, idB)
						require.NoError(t, err)
						assert.Equal(t, roleA, user, "A's work runs as A's login")
						want = []string{roleA, roleB}
					} else {
						shared, _, err := store.SharedLogin(e.admin)
						require.NoError(t, err)
						assert.Equal(t, shared, user)
					}
					pooled := e.pooledUsers(t)
					for _, w := range want {
						assert.Contains(t, pooled, w, "PgBouncer pools the tenant work's login")
					}
				})
			})
		}
	}
}

// pgbSeen counts the session state a tenant found that a tenant left on a
// server connection: its own (which shows the search works) and another
// tenant's.
type pgbSeen struct {
	own, settings, statements, rows atomic.Int64
}

// TestBehindPgBouncerConcurrentTenantsReadOnlyTheirOwnRows is the leak hunt
// behind PgBouncer: 64 goroutines over 20 tenants, with a DB that may hold
// only 8 connections in all, so that tenants wait for one another and, in
// ModeTenantLogin, evict one another's idle connections. Every row a
// goroutine reads must be its tenant's, by tenant_id and by a column
// carrying the tenant's ID, and the only errors are the expected ones.
//
// Each round also looks for session state another tenant left on the
// server connection (a setting, a prepared statement, a cursor WITH HOLD
// over that tenant's rows) and leaves its own. In ModeTenantLogin none may
// be found. In ModeSharedPool the few server connections of the shared
// login pass between tenants and nothing resets them: what is found is
// logged (see TestBehindPgBouncerSessionStateBetweenTenants for the
// deterministic case); behind a PgBouncer that resets every server
// connection after every transaction, none may be found.
func TestBehindPgBouncerConcurrentTenantsReadOnlyTheirOwnRows(t *testing.T) {
	const (
		tenants    = 20
		goroutines = 64
		rounds     = 4
		maxConns   = 8
	)
	cases := []struct {
		name string
		mode store.Mode
		bcfg pgbouncertest.Config
	}{
		// One server connection per tenant login: 20 in all.
		{"tenant-login", store.ModeTenantLogin, pgbouncertest.Config{PoolSize: 1}},
		// The shared login's two server connections carry every tenant.
		{"shared-pool", store.ModeSharedPool, pgbouncertest.Config{PoolSize: 2}},
		{"shared-pool/ResetAlways", store.ModeSharedPool, pgbouncertest.Config{PoolSize: 2, ResetAlways: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newPgbEnv(t, c.mode, pgx.QueryExecModeCacheDescribe, c.bcfg, func(_ *store.AdminConfig, cfg *store.Config) {
				cfg.MaxConns, cfg.MinResidency = maxConns, 0
			})
			ids := make([]tenant.ID, tenants)
			ctxs := make([]context.Context, tenants)
			logins := make([]string, tenants)
			for i := range tenants {
				ids[i], ctxs[i] = e.newTenant(t, "pgbh")
				if c.mode == store.ModeTenantLogin {
					var err error
					logins[i], _, err = store.LoginOf(t.Context(), e.admin, ids[i])
					require.NoError(t, err)
				}
			}

			var seen pgbSeen
			var wg sync.WaitGroup
			errs := make(chan error, goroutines)
			for g := range goroutines {
				wg.Go(func() {
					for r := range rounds {
						k := (g + r) % tenants
						key := fmt.Sprintf("G%d-R%d", g, r)
						if err := pgbHuntRound(ctxs[k], e.db, c.mode, ids[k], logins[k], key, &seen); err != nil {
							errs <- fmt.Errorf("goroutine %d round %d (tenant %s): %w", g, r, ids[k], err)
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

			want := make([]int, tenants)
			for g := range goroutines {
				for r := range rounds {
					want[(g+r)%tenants] += 2 // the round's row and its transaction's
				}
			}
			for i, ctx := range ctxs {
				var n, foreign, undone int
				require.NoError(t, e.db.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE tenant_id <> $1 OR requirement_text <> $1),
					count(*) FILTER (WHERE req_id LIKE '%-undone') FROM requirements`, ids[i].String()).Scan(&n, &foreign, &undone))
				assert.Equal(t, want[i], n, "tenant %s rows", ids[i])
				assert.Zero(t, foreign, "tenant %s rows of others", ids[i])
				assert.Zero(t, undone, "tenant %s rows of rolled-back transactions", ids[i])
			}

			st := e.db.Stats()
			t.Logf("%s: %+v; PgBouncer holds %d server connections to the database (DB MaxConns %d)", c.name, st, e.serverConns(t), maxConns)
			others := [3]int64{seen.settings.Load(), seen.statements.Load(), seen.rows.Load()}
			t.Logf("%s: session state found: %d times the tenant's own; another tenant's: %d settings, %d prepared statements, %d rows of held cursors",
				c.name, seen.own.Load(), others[0], others[1], others[2])
			switch {
			case c.mode == store.ModeSharedPool && !c.bcfg.ResetAlways:
				if others != [3]int64{} {
					t.Logf("%s: LEAK: tenants found other tenants' session state, rows included, on the shared login's server connections", c.name)
				}
			case c.mode == store.ModeTenantLogin:
				assert.Positive(t, st.Waits, "tenants waited for the global cap")
				assert.Positive(t, st.Evictions, "tenants evicted one another's idle connections")
				assert.Zero(t, others, "no tenant finds another's session state")
				assert.Positive(t, seen.own.Load(), "the search finds a tenant's own session state")
			case c.bcfg.ResetAlways:
				assert.Zero(t, others, "PgBouncer resets every server connection")
				assert.Zero(t, seen.own.Load(), "PgBouncer resets every server connection")
			}
		})
	}
}

var errPgbUndo = errors.New("undo")

// pgbHuntRound is one round of the leak hunt for tenant id (whose login is
// login in ModeTenantLogin).
func pgbHuntRound(ctx context.Context, db *store.DB, m store.Mode, id tenant.ID, login, key string, seen *pgbSeen) error {
	own := id.String()
	if _, err := db.Exec(ctx, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ($1, 'PGB', $2)`, key, own); err != nil {
		return err
	}
	rows, err := db.Query(ctx, `SELECT tenant_id, requirement_text FROM requirements`)
	if err := pgbOwnRows(own, rows, err); err != nil {
		return err
	}
	if m == store.ModeTenantLogin {
		var user string
		if err := db.QueryRow(ctx, `SELECT session_user`).Scan(&user); err != nil {
			return err
		}
		if user != login {
			return fmt.Errorf("LEAK: the tenant's statement ran as %s, not its login %s", user, login)
		}
	} else {
		var tid string
		if err := db.QueryRow(ctx, `SELECT current_setting('app.tenant_id')`).Scan(&tid); err != nil {
			return err
		}
		if tid != own {
			return fmt.Errorf("LEAK: the tenant's statement ran with app.tenant_id %s", tid)
		}
	}
	err = db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ($1, 'PGB', $2)`, key+"-tx", own); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT tenant_id, requirement_text FROM requirements WHERE req_id = $1`, key+"-tx")
		return pgbOwnRows(own, rows, err)
	})
	if err != nil {
		return err
	}
	err = db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ($1, 'PGB', $2)`, key+"-undone", own); err != nil {
			return err
		}
		return errPgbUndo
	})
	if !errors.Is(err, errPgbUndo) {
		return fmt.Errorf("rolled-back transaction: want the function's error, got %v", err)
	}
	if _, err := db.Exec(ctx, `SELECT 1/0 FROM requirements`); pgCode(err) != "22012" {
		return fmt.Errorf("division by zero: want 22012, got %v", err)
	}
	// Look for the session state of whoever used the server connection
	// last, and leave this tenant's: all in one transaction, so on one
	// server connection.
	return db.Tx(ctx, func(tx *store.Tx) error {
		var setting string
		var statement, cursor bool
		err := tx.QueryRow(ctx, `SELECT coalesce(current_setting('app.owner', true), ''),
			EXISTS (SELECT FROM pg_prepared_statements WHERE name = 'planted'),
			EXISTS (SELECT FROM pg_cursors WHERE name = 'held')`).Scan(&setting, &statement, &cursor)
		if err != nil {
			return err
		}
		found := func(owner string, n *atomic.Int64) {
			if owner == own {
				seen.own.Add(1)
			} else {
				n.Add(1)
			}
		}
		if setting != "" {
			found(setting, &seen.settings)
		}
		if statement {
			var owner string
			if err := tx.QueryRow(ctx, `EXECUTE planted`).Scan(&owner); err != nil {
				return err
			}
			found(owner, &seen.statements)
			if _, err := tx.Exec(ctx, `DEALLOCATE planted`); err != nil {
				return err
			}
		}
		if cursor {
			rows, err := tx.Query(ctx, `FETCH ALL FROM held`)
			if err != nil {
				return err
			}
			var tid, text string
			_, err = pgx.ForEachRow(rows, []any{&tid, &text}, func() error {
				found(tid, &seen.rows)
				return nil
			})
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `CLOSE held`); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `SET app.owner = `+pgbLiteral(own))
		if err == nil {
			_, err = tx.Exec(ctx, `PREPARE planted AS SELECT `+pgbLiteral(own)+`::text`)
		}
		if err == nil {
			_, err = tx.Exec(ctx, `DECLARE held CURSOR WITH HOLD FOR SELECT tenant_id, requirement_text FROM requirements`)
		}
		return err
	})
}

// pgbLiteral quotes a tenant ID (letters, digits and _) as an SQL literal.
func pgbLiteral(id string) string { return "'" + id + "'" }

// pgbOwnRows checks that every (tenant_id, text) row is own's.
func pgbOwnRows(own string, rows pgx.Rows, err error) error {
	if err != nil {
		return err
	}
	var tid, text string
	_, err = pgx.ForEachRow(rows, []any{&tid, &text}, func() error {
		if tid != own || text != own {
			return fmt.Errorf("LEAK: tenant %s read a row of tenant_id %s carrying %s", own, tid, text)
		}
		return nil
	})
	return err
}

// pgbLeftBehind is the session state a probe found on the server
// connection it ran on.
type pgbLeftBehind struct {
	Setting   string   // app.left_behind
	Statement string   // what EXECUTE planted returns
	Rows      []string // what FETCH ALL FROM held returns, "tenant_id: text"
}

// pgbProbe reads, as the tenant of ctx, the session state of
// TestBehindPgBouncerSessionStateBetweenTenants.
func pgbProbe(ctx context.Context, db *store.DB) (pgbLeftBehind, error) {
	var p pgbLeftBehind
	if err := db.QueryRow(ctx, `SELECT coalesce(current_setting('app.left_behind', true), '')`).Scan(&p.Setting); err != nil {
		return p, err
	}
	if err := db.QueryRow(ctx, `EXECUTE planted`).Scan(&p.Statement); err != nil && pgCode(err) != "26000" {
		return p, err
	}
	_, err := db.Exec(ctx, `MOVE ABSOLUTE 0 IN held`)
	if pgCode(err) == "34000" {
		return p, nil
	}
	if err != nil {
		return p, err
	}
	rows, err := db.Query(ctx, `FETCH ALL FROM held`)
	if err != nil {
		return p, err
	}
	p.Rows, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var tid, text string
		err := r.Scan(&tid, &text)
		return tid + ": " + text, err
	})
	return p, err
}

// TestBehindPgBouncerSessionStateBetweenTenants: tenant V leaves session
// state on its server connection (a setting, a prepared statement, a
// cursor WITH HOLD over its rows, as a bug or one injected statement in
// V's request path could); tenant O looks for it, served by another
// instance of the service through the same PgBouncer, and then by the same
// instance. PgBouncer has one server connection per role (PoolSize 1), so
// every client of a role runs on the same one, and V's own next call shows
// that the state is there to be found.
//
// In ModeTenantLogin PgBouncer pools server connections per role: O never
// runs on V's, so O finds nothing.
//
// In ModeSharedPool every tenant is the one shared login, so PgBouncer
// hands V's server connection to O. store resets a connection that passes
// to another tenant (DISCARD ALL), but that is its own client connection,
// which PgBouncer maps to whichever server connection is free for each
// transaction, and a client connection that never served V (another
// instance's, or a new one of the same instance) is not reset at all: O
// reads V's setting, runs V's prepared statement and FETCHes V's rows.
// This test shows that leak as it is. Only a PgBouncer that resets every
// server connection after every transaction (server_reset_query = DISCARD
// ALL, server_reset_query_always = 1) keeps the tenants apart, and then no
// tenant keeps session state from one call to the next.
func TestBehindPgBouncerSessionStateBetweenTenants(t *testing.T) {
	cases := []struct {
		name                   string
		mode                   store.Mode
		reset                  bool
		planterSees, otherSees bool
	}{
		{"tenant-login", store.ModeTenantLogin, false, true, false},
		{"shared-pool", store.ModeSharedPool, false, true, true},
		{"shared-pool/ResetAlways", store.ModeSharedPool, true, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newPgbEnv(t, c.mode, pgx.QueryExecModeExec, pgbouncertest.Config{PoolSize: 1, ResetAlways: c.reset})
			other := e.openDB(t)
			idV, ctxV := e.newTenant(t, "pgbv")
			_, ctxO := e.newTenant(t, "pgbo")
			v := idV.String()
			e.insertReq(t, ctxV, "REQ-V-1", "secret of "+v)
			for _, sql := range []string{
				`SET app.left_behind = ` + pgbLiteral(v),
				`PREPARE planted AS SELECT ` + pgbLiteral("planted by "+v),
				`DECLARE held SCROLL CURSOR WITH HOLD FOR SELECT tenant_id, requirement_text FROM requirements`,
			} {
				_, err := e.db.Exec(ctxV, sql)
				require.NoError(t, err, sql)
			}
			left := pgbLeftBehind{Setting: v, Statement: "planted by " + v, Rows: []string{v + ": secret of " + v}}

			got, err := pgbProbe(ctxV, e.db)
			require.NoError(t, err)
			if c.planterSees {
				assert.Equal(t, left, got, "V's own next call finds its session state")
			} else {
				assert.Zero(t, got, "PgBouncer reset V's server connection")
			}

			// O on another instance; then on the same one, while V holds the
			// client connection it planted with (its rows read, so its server
			// connection free): O gets a new client connection, which store
			// does not reset.
			got, err = pgbProbe(ctxO, other)
			require.NoError(t, err)
			hold, err := e.db.Query(ctxV, `SELECT 1`)
			require.NoError(t, err)
			defer hold.Close()
			gotSame, err := pgbProbe(ctxO, e.db)
			require.NoError(t, err)
			if c.otherSees {
				// The leak of ModeSharedPool behind transaction pooling.
				assert.Equal(t, left, got, "O, on another instance, finds V's setting, prepared statement and rows")
				assert.Equal(t, left, gotSame, "O, on the same instance, finds V's setting, prepared statement and rows")
			} else {
				assert.Zero(t, got, "O, on another instance, finds none of V's session state")
				assert.Zero(t, gotSame, "O, on the same instance, finds none of V's session state")
			}
		})
	}
}

// TestBehindPgBouncerCacheDescribeSurvivesServerSwitch runs the same
// statements for one tenant, on one client connection of the DB, on each
// of the two server connections of the tenant's PgBouncer pool in turn:
// pgx's QueryExecModeCacheDescribe caches statement descriptions per
// client connection and sends unnamed statements, which hold on any server
// connection. The control shows that the switch is real: with
// QueryExecModeCacheStatement, a statement prepared on one server
// connection is unknown on the other.
func TestBehindPgBouncerCacheDescribeSurvivesServerSwitch(t *testing.T) {
	for _, x := range []struct {
		name   string
		mode   pgx.QueryExecMode
		breaks bool
	}{
		{"cache_describe", pgx.QueryExecModeCacheDescribe, false},
		{"ControlCacheStatement", pgx.QueryExecModeCacheStatement, true},
	} {
		t.Run(x.name, func(t *testing.T) {
			e := newPgbEnv(t, store.ModeTenantLogin, x.mode, pgbouncertest.Config{PoolSize: 2})
			id, ctx := e.newTenant(t, "pgbcd")
			role, password, err := store.LoginOf(t.Context(), e.admin, id)
			require.NoError(t, err)
			tenantURL := e.b.URL(t, e.d.URL(role, password))

			seq := 0
			run := func() (pid int, err error) {
				seq++
				if _, err := e.db.Exec(ctx, `INSERT INTO requirements (req_id, category, requirement_text, phase, custom) VALUES ($1, $2, $3, $4, $5)`,
					fmt.Sprintf("REQ-%d", seq), "PGB", id.String(), seq, map[string]any{"seq": seq}); err != nil {
					return 0, err
				}
				var n, phase int
				var custom map[string]any
				if err := e.db.QueryRow(ctx, `SELECT pg_backend_pid(), count(*), max(phase), (array_agg(custom ORDER BY phase DESC))[1]
					FROM requirements WHERE category = $1`, "PGB").Scan(&pid, &n, &phase, &custom); err != nil {
					return 0, err
				}
				if n != seq || phase != seq || custom["seq"] != float64(seq) {
					return 0, fmt.Errorf("read %d rows, phase %d, custom %v; want %d", n, phase, custom, seq)
				}
				return pid, e.db.Tx(ctx, func(tx *store.Tx) error {
					var txPID int
					if err := tx.QueryRow(ctx, `SELECT pg_backend_pid() FROM requirements WHERE req_id = $1`, fmt.Sprintf("REQ-%d", seq)).Scan(&txPID); err != nil {
						return err
					}
					if txPID != pid {
						return fmt.Errorf("the transaction ran on backend %d, the statement before on %d", txPID, pid)
					}
					return nil
				})
			}
			p1, err := run()
			require.NoError(t, err)

			release := pgbPin(t, tenantURL, p1, e.b.PoolSize())
			p2, err := run()
			release()
			if x.breaks {
				require.Error(t, err, "a statement pgx prepared on backend %d", p1)
				assert.Equal(t, "26000", pgCode(err), "prepared statement does not exist: %v", err)
				return
			}
			require.NoError(t, err)
			require.NotEqual(t, p1, p2, "the second round ran on the other server connection")

			release = pgbPin(t, tenantURL, p2, e.b.PoolSize())
			p3, err := run()
			release()
			require.NoError(t, err)
			assert.Equal(t, p1, p3, "the third round ran on the first server connection again")
			assert.Equal(t, 1, e.db.Stats().Conns, "one client connection served the tenant throughout")
		})
	}
}

// pgbPin holds server connections of a PgBouncer pool (at most poolSize)
// in open transactions of clients connecting with url, until one of them
// is backend pid; it lets the others go and returns a function that lets
// that one go.
func pgbPin(t *testing.T, url string, pid, poolSize int) (release func()) {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	var held []pgx.Tx
	defer func() {
		for _, tx := range held {
			require.NoError(t, tx.Rollback(t.Context()))
		}
	}()
	for range poolSize {
		c, err := pgx.ConnectConfig(t.Context(), cfg)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close(context.WithoutCancel(t.Context())) })
		tx, err := c.Begin(t.Context())
		require.NoError(t, err)
		var p int
		require.NoError(t, tx.QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&p))
		if p == pid {
			return func() { require.NoError(t, tx.Rollback(t.Context())) }
		}
		held = append(held, tx)
	}
	t.Fatalf("no server connection of the pool is backend %d", pid)
	return nil
}
