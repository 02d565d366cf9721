package pgbouncertest

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var roleSeq sync.Map // name -> URL, so that -count=N creates each role once

func role(t *testing.T, d *pgtest.Database, name string) string {
	if u, ok := roleSeq.Load(name); ok {
		return u.(string)
	}
	u := d.CreateRole(t, name, "")
	roleSeq.Store(name, u)
	return u
}

func connect(t *testing.T, connString string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(connString)
	require.NoError(t, err)
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	c, err := pgx.ConnectConfig(ctxT(t), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func pid(t *testing.T, c *pgx.Conn) int {
	t.Helper()
	var p int
	require.NoError(t, c.QueryRow(ctxT(t), `SELECT pg_backend_pid()`).Scan(&p))
	return p
}

func TestClientsShareServerConnectionsInTransactionMode(t *testing.T) {
	d := pgtest.DB(t)
	b := StartConfig(t, d, Config{PoolSize: 1})
	appURL := role(t, d, "share")
	bounced := b.URL(t, appURL)

	u, err := url.Parse(bounced)
	require.NoError(t, err)
	assert.Equal(t, b.Addr(), u.Host)
	assert.Equal(t, "/"+d.Name(), u.Path)

	c1, c2 := connect(t, bounced), connect(t, bounced)
	var user, db string
	require.NoError(t, c1.QueryRow(ctxT(t), `SELECT current_user, current_database()`).Scan(&user, &db))
	assert.Equal(t, d.Prefix()+"share", user)
	assert.Equal(t, d.Name(), db)
	// Two clients, one server connection.
	assert.Equal(t, pid(t, c1), pid(t, c2))
	// A direct connection is a backend of its own.
	direct := connect(t, appURL)
	assert.NotEqual(t, pid(t, c1), pid(t, direct))

	var mode string
	for _, r := range b.Show(t, "CONFIG") {
		if r["key"] == "pool_mode" {
			mode = r["value"]
		}
	}
	assert.Equal(t, "transaction", mode)
	found := false
	for _, r := range b.Show(t, "POOLS") {
		if r["database"] == d.Name() && r["user"] == user {
			found = true
			assert.Equal(t, "2", r["cl_active"], "two clients")
			sv := 0
			for _, k := range []string{"sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"} {
				n, _ := strconv.Atoi(r[k])
				sv += n
			}
			assert.Equal(t, 1, sv, "one server connection: %v", r)
		}
	}
	assert.True(t, found, "SHOW POOLS has the role's pool")
}

// PgBouncer is started without a reset query: what one client leaves on a
// server connection at session level, the next client sees. The store's
// tests rely on this to detect leaks.
func TestSessionStateCrossesClients(t *testing.T) {
	d := pgtest.DB(t)
	b := StartConfig(t, d, Config{PoolSize: 1})
	bounced := b.URL(t, role(t, d, "crosses"))
	c1, c2 := connect(t, bounced), connect(t, bounced)
	_, err := c1.Exec(ctxT(t), `SELECT set_config('app.left_behind', 'by c1', false)`)
	require.NoError(t, err)
	var s string
	require.NoError(t, c2.QueryRow(ctxT(t), `SELECT current_setting('app.left_behind')`).Scan(&s))
	assert.Equal(t, "by c1", s)
	// Transaction-local settings do not.
	_, err = c1.Exec(ctxT(t), `SELECT set_config('app.local', 'by c1', true)`)
	require.NoError(t, err)
	var p *string
	require.NoError(t, c2.QueryRow(ctxT(t), `SELECT current_setting('app.local', true)`).Scan(&p))
	if p != nil {
		assert.Equal(t, "", *p)
	}
}

func TestPoolSizeBoundsServerConnections(t *testing.T) {
	d := pgtest.DB(t)
	b := Start(t, d)
	require.Equal(t, 2, b.PoolSize())
	bounced := b.URL(t, role(t, d, "poolsize"))
	ctx := ctxT(t)
	var txs []pgx.Tx
	pids := map[int]bool{}
	for range 2 {
		tx, err := connect(t, bounced).Begin(ctx)
		require.NoError(t, err)
		var p int
		require.NoError(t, tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&p))
		pids[p] = true
		txs = append(txs, tx)
	}
	assert.Len(t, pids, 2)
	// Both server connections are in a transaction: a third client waits
	// until one of them is released.
	third := connect(t, bounced)
	got := make(chan int, 1)
	go func() {
		var p int
		if err := third.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&p); err != nil {
			p = -1
		}
		got <- p
	}()
	require.Eventually(t, func() bool {
		for _, r := range b.Show(t, "POOLS") {
			if r["database"] == d.Name() && r["cl_waiting"] == "1" {
				return true
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, "the third client waits for a server connection")
	select {
	case p := <-got:
		t.Fatalf("a third transaction ran on server %d while both were busy", p)
	case <-time.After(100 * time.Millisecond):
	}
	var p0 int
	require.NoError(t, txs[0].QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&p0))
	require.NoError(t, txs[0].Commit(ctx))
	assert.Equal(t, p0, <-got, "the third client runs on the released server connection")
	require.NoError(t, txs[1].Rollback(ctx))
	assert.Len(t, b.Show(t, "SERVERS"), 2)
}

func TestURLRegistersRolesAfterStartAndChecksPasswords(t *testing.T) {
	d := pgtest.DB(t)
	b := Start(t, d)
	for _, name := range []string{"late_one", "late_two"} {
		bounced := b.URL(t, role(t, d, name))
		var user string
		require.NoError(t, connect(t, bounced).QueryRow(ctxT(t), `SELECT current_user`).Scan(&user))
		assert.Equal(t, d.Prefix()+name, user)

		u, _ := url.Parse(bounced)
		u.User = url.UserPassword(u.User.Username(), "wrong")
		_, err := pgx.Connect(ctxT(t), u.String())
		require.Error(t, err, "PgBouncer must check the password")
		u.User = url.UserPassword(d.Prefix()+"nobody", "x")
		_, err = pgx.Connect(ctxT(t), u.String())
		require.Error(t, err, "PgBouncer must refuse unregistered users")
	}
}

func TestStopEndsPgBouncer(t *testing.T) {
	d := pgtest.DB(t)
	var b *Bouncer
	t.Run("run", func(t *testing.T) {
		b = Start(t, d)
		connect(t, b.URL(t, role(t, d, "stop")))
	})
	require.NotNil(t, b)
	select {
	case <-b.done:
	default:
		t.Fatal("PgBouncer still runs after the test that started it ended")
	}
	_, err := net.DialTimeout("tcp", b.Addr(), time.Second)
	assert.Error(t, err, "nothing listens on %s any more", b.Addr())
	_, err = os.Stat(b.dir)
	assert.True(t, errors.Is(err, os.ErrNotExist), "the directory is removed: %v", err)
}

func TestFindBinary(t *testing.T) {
	t.Setenv(EnvBinary, "/nonexistent/pgbouncer")
	_, err := findBinary()
	var ce *configError
	assert.ErrorAs(t, err, &ce, "a binary named explicitly but missing fails, also outside CI")

	self, err := os.Executable()
	require.NoError(t, err)
	t.Setenv(EnvBinary, self)
	got, err := findBinary()
	require.NoError(t, err)
	assert.Equal(t, self, got)
}

func TestRegisterLetsARoleLogInThroughPgBouncer(t *testing.T) {
	d := pgtest.DB(t)
	b := Start(t, d)
	b.URL(t, role(t, d, "reg_other")) // the database URL the code under test would be given
	cfg, err := pgx.ParseConfig(role(t, d, "reg_created"))
	require.NoError(t, err)
	through := b.url(cfg.User, cfg.Password, d.Name())
	_, err = pgx.Connect(ctxT(t), through)
	require.Error(t, err, "PgBouncer must refuse a role it does not know")

	b.Register(t, cfg.User, cfg.Password)
	var user string
	require.NoError(t, connect(t, through).QueryRow(ctxT(t), `SELECT session_user`).Scan(&user))
	assert.Equal(t, cfg.User, user)

	b.Register(t, cfg.User, "replaced")
	_, err = pgx.Connect(ctxT(t), through)
	require.Error(t, err, "the old password no longer logs in")
}

// Settings, prepared statements and cursors WITH HOLD survive on a server
// connection into the next client's transactions, unless ResetAlways.
func TestResetAlwaysClearsSessionStateBetweenClients(t *testing.T) {
	d := pgtest.DB(t)
	bounced := role(t, d, "reset")
	for _, reset := range []bool{false, true} {
		t.Run("ResetAlways="+strconv.FormatBool(reset), func(t *testing.T) {
			b := StartConfig(t, d, Config{PoolSize: 1, ResetAlways: reset})
			c1, c2 := connect(t, b.URL(t, bounced)), connect(t, b.URL(t, bounced))
			ctx := ctxT(t)
			for _, sql := range []string{
				`SET app.left_behind = 'by c1'`,
				`PREPARE left_behind AS SELECT 1`,
				`DECLARE left_behind CURSOR WITH HOLD FOR SELECT 1`,
			} {
				_, err := c1.Exec(ctx, sql)
				require.NoError(t, err, sql)
			}
			require.Equal(t, pid(t, c1), pid(t, c2), "one server connection")
			var setting string
			var statements, cursors int
			require.NoError(t, c2.QueryRow(ctx, `SELECT coalesce(current_setting('app.left_behind', true), ''),
				(SELECT count(*) FROM pg_prepared_statements WHERE name = 'left_behind'),
				(SELECT count(*) FROM pg_cursors WHERE name = 'left_behind')`).Scan(&setting, &statements, &cursors))
			if reset {
				assert.Equal(t, []any{"", 0, 0}, []any{setting, statements, cursors}, "setting, prepared statements, cursors")
			} else {
				assert.Equal(t, []any{"by c1", 1, 1}, []any{setting, statements, cursors}, "setting, prepared statements, cursors")
			}
		})
	}
}
