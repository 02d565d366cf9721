// Package pgbouncertest runs a real PgBouncer in transaction-pooling mode in
// front of a [pgtest] database, so that tests can prove that what they do
// stays correct when many client connections share a few server
// connections.
//
//	func TestBehindPgBouncer(t *testing.T) {
//		d := pgtest.DB(t)
//		b := pgbouncertest.Start(t, d)           // pool_mode = transaction, 2 server connections
//		appURL := d.CreateRole(t, "app", "NOINHERIT")
//		conn, err := pgx.Connect(ctx, b.URL(t, appURL)) // same role and database, through PgBouncer
//		...
//	}
//
// # What runs
//
// [Start] writes pgbouncer.ini and an auth file into a new private
// temporary directory and starts the pgbouncer binary as a child process in
// the foreground, listening on a free port of 127.0.0.1 only (no Unix
// socket). Its one database entry is the fallback "*", so every database
// name a client asks for is the same name on the PostgreSQL server of the
// pgtest database (the host and port login roles use, see
// [pgtest.Database.URL]: 127.0.0.1 or a Unix-socket directory). The pool
// mode is transaction, default_pool_size is [Config.PoolSize] (2 unless
// set) per database and user, there is no reserve pool, and no reset query
// at all: PgBouncer cleans nothing up between clients, so whatever a client
// leaves on a server connection, the next client sees. [Config.ResetAlways]
// turns on the reset a deployment can choose instead (DISCARD ALL after
// every transaction). The binary's output is kept and logged when the test
// fails.
//
// When the tests run as root, PgBouncer (which refuses to run as root) runs
// as the OS user postgres, which owns the directory; otherwise it runs as
// the current user. The process is stopped with SIGTERM (SIGKILL after a
// few seconds) and the directory removed when the test that started it
// ends; on Linux it also gets SIGTERM if the test process dies first.
//
// # Authentication
//
// Clients authenticate with SCRAM-SHA-256 (auth_type = scram-sha-256)
// against the auth file, which holds the plain-text passwords of the roles
// registered with [Bouncer.URL] or [Bouncer.Register]. PgBouncer needs the
// plain text anyway: it logs in to PostgreSQL as the client's role with
// that password (SCRAM or MD5, whatever pg_hba.conf asks for; with trust
// it is not used). auth_type trust would still need every user in the
// auth file, with its password for the server login, and "any" logs every
// client in as one fixed user, which would hide the role a test connects
// as; so real passwords it is. A registered role is added to the auth file
// and PgBouncer is told to RELOAD on its admin console before URL or
// Register returns.
//
// # PgBouncer versions
//
// Debian's PgBouncer 1.18 does not track named prepared statements in
// transaction mode (1.21 and later can, with max_prepared_statements): a
// statement pgx prepared on one server connection is unknown on the next.
// Clients must use pgx.QueryExecModeExec, pgx.QueryExecModeCacheDescribe or
// pgx.QueryExecModeSimpleProtocol (set ConnConfig.DefaultQueryExecMode),
// which prepare nothing by name.
//
// # When there is no PgBouncer
//
// The binary is $TENANCY_TEST_PGBOUNCER if set (a failure, in or out of
// CI, if that does not exist), else pgbouncer on PATH, else
// /usr/sbin/pgbouncer and /usr/local/{sbin,bin}/pgbouncer. When none is
// found, Start skips the test with how to install it, or fails it if
// CI=true.
package pgbouncertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/internal/testenv"
)

// EnvBinary names the pgbouncer binary to use instead of looking for one.
const EnvBinary = "TENANCY_TEST_PGBOUNCER"

const howTo = "install PgBouncer (apt-get install pgbouncer) or set " + EnvBinary + " to its binary"

// adminUser is the admin-console user of every Bouncer. It exists only in
// the auth file, never on the PostgreSQL server.
const adminUser = "pgbouncertest_admin"

const (
	startTimeout   = 15 * time.Second // until PgBouncer accepts connections
	stopTimeout    = 5 * time.Second  // after SIGTERM, before SIGKILL
	consoleTimeout = 10 * time.Second // for one admin-console command
)

// Config adjusts a Bouncer; the zero Config gives the defaults.
type Config struct {
	// PoolSize is default_pool_size: how many server connections PgBouncer
	// opens at most per (database, user) pair. 0 means 2. With 1, every
	// client of a role runs on the very same server connection, one
	// transaction after another.
	PoolSize int
	// MaxClientConn is max_client_conn; 0 means 200.
	MaxClientConn int
	// ResetAlways makes PgBouncer run DISCARD ALL on a server connection
	// after every transaction, before another client gets it
	// (server_reset_query = DISCARD ALL, server_reset_query_always = 1):
	// settings, prepared statements, cursors WITH HOLD, LISTEN and
	// advisory locks then end with the transaction. Without it nothing is
	// reset.
	ResetAlways bool
}

// Bouncer is a running PgBouncer. Its methods are safe for concurrent use.
type Bouncer struct {
	port     int
	poolSize int
	adminPW  string
	dir      string
	uid, gid int // owner of dir and its files; -1: leave as created

	mu    sync.Mutex
	users map[string]string // role -> password, as in the auth file

	cmd  *exec.Cmd
	out  *logBuffer
	done chan struct{} // closed when the process has exited
}

// Start starts a PgBouncer in transaction-pooling mode in front of d's
// server with the default [Config], and stops it when tb ends. See the
// package documentation.
func Start(tb testing.TB, d *pgtest.Database) *Bouncer {
	tb.Helper()
	return StartConfig(tb, d, Config{})
}

// StartConfig is [Start] with cfg.
func StartConfig(tb testing.TB, d *pgtest.Database, cfg Config) *Bouncer {
	tb.Helper()
	bin, err := findBinary()
	if err != nil {
		var ce *configError
		if inCI() || errors.As(err, &ce) {
			tb.Fatalf("pgbouncertest: %v", err)
		}
		tb.Skipf("pgbouncertest: %v; to run this test, %s", err, howTo)
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = 2
	}
	if cfg.MaxClientConn <= 0 {
		cfg.MaxClientConn = 200
	}
	host, port, err := serverAddr(d)
	if err != nil {
		tb.Fatalf("pgbouncertest: %v", err)
	}

	b := &Bouncer{poolSize: cfg.PoolSize, adminPW: randomHex(16), uid: -1, gid: -1, users: map[string]string{}}
	b.users[adminUser] = b.adminPW
	var runAs *osUser
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Fatalf("pgbouncertest: running as root, PgBouncer must run as another user, and there is no OS user postgres: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		b.uid, b.gid = uid, gid
		runAs = &osUser{uid: uint32(uid), gid: uint32(gid)}
	}
	if b.dir, err = os.MkdirTemp("", "pgbouncertest-"); err != nil {
		tb.Fatalf("pgbouncertest: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(b.dir) }) // runs after stop: cleanups are LIFO
	if err := b.chown(b.dir); err != nil {
		tb.Fatalf("pgbouncertest: %v", err)
	}
	if err := b.writeAuthFile(); err != nil {
		tb.Fatalf("pgbouncertest: %v", err)
	}

	// The free port is found by listening and closing; if another process
	// takes it in between, PgBouncer exits and we try another.
	var errs []error
	for range 3 {
		if b.port, err = freePort(); err != nil {
			tb.Fatalf("pgbouncertest: finding a free port: %v", err)
		}
		ini := b.ini(host, port, cfg)
		iniPath := filepath.Join(b.dir, "pgbouncer.ini")
		if err := b.writeFile(iniPath, []byte(ini)); err != nil {
			tb.Fatalf("pgbouncertest: %v", err)
		}
		err := b.start(bin, iniPath, runAs)
		if err == nil {
			tb.Cleanup(func() {
				if tb.Failed() {
					tb.Logf("pgbouncertest: PgBouncer's log:\n%s", b.out.String())
				}
				if err := b.stop(); err != nil {
					tb.Errorf("pgbouncertest: %v", err)
				}
			})
			return b
		}
		errs = append(errs, err)
		if !strings.Contains(err.Error(), "in use") {
			break
		}
	}
	tb.Fatalf("pgbouncertest: starting %s: %v", bin, errors.Join(errs...))
	return nil
}

// osUser is an OS account PgBouncer runs as.
type osUser struct{ uid, gid uint32 }

// configError is a binary named explicitly that cannot be used.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// findBinary returns the pgbouncer binary to run.
func findBinary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", &configError{fmt.Errorf("%s=%s: %w", EnvBinary, p, err)}
		}
		return p, nil
	}
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/local/bin/pgbouncer"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("no pgbouncer binary (not on PATH, nor in /usr/sbin or /usr/local)")
}

func inCI() bool { return testenv.InCI() }

// serverAddr returns where PgBouncer reaches d's server: the host (or
// Unix-socket directory) and port that login roles with a password use.
func serverAddr(d *pgtest.Database) (host string, port uint16, err error) {
	cfg, err := pgx.ParseConfig(d.URL("pgbouncertest", ""))
	if err != nil {
		return "", 0, fmt.Errorf("parsing the database's URL: %w", err)
	}
	host, port = cfg.Host, cfg.Port
	if strings.ContainsAny(host, " '\"\\") {
		return "", 0, fmt.Errorf("server host %q cannot be written into pgbouncer.ini", host)
	}
	return host, port, nil
}

func (b *Bouncer) ini(host string, port uint16, cfg Config) string {
	// No reset query unless asked: in transaction mode PgBouncer does not
	// run one anyway (server_reset_query_always = 0), and the tests using
	// this package must see whatever a client leaves on a server
	// connection.
	reset, always := "", 0
	if cfg.ResetAlways {
		reset, always = "DISCARD ALL", 1
	}
	return fmt.Sprintf(`[databases]
* = host=%s port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %s
admin_users = %s
pool_mode = transaction
default_pool_size = %d
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = %d
server_reset_query = %s
server_reset_query_always = %d
server_login_retry = 1
query_wait_timeout = 30
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
`, host, port, b.port, filepath.Join(b.dir, "userlist.txt"), adminUser, cfg.PoolSize, cfg.MaxClientConn, reset, always)
}

// start runs PgBouncer and waits until its admin console answers.
func (b *Bouncer) start(bin, iniPath string, runAs *osUser) error {
	b.out = &logBuffer{}
	b.done = make(chan struct{})
	cmd := exec.Command(bin, iniPath)
	cmd.Dir = b.dir
	cmd.Stdout, cmd.Stderr = b.out, b.out
	cmd.SysProcAttr = sysProcAttr(runAs)
	b.cmd = cmd
	started := make(chan error, 1)
	go func() {
		// On Linux the child gets SIGTERM when the thread that started it
		// ends (Pdeathsig), not only the process: keep this thread for the
		// child's whole life.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(b.done)
	}()
	if err := <-started; err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var lastErr error
	for {
		select {
		case <-b.done:
			return fmt.Errorf("pgbouncer exited (%v) before accepting connections:\n%s", cmd.ProcessState, b.out.String())
		default:
		}
		c, err := b.console(ctx)
		if err == nil {
			c.Close(ctx)
			return nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			_ = b.stop()
			return fmt.Errorf("pgbouncer did not accept connections within %v: %v\n%s", startTimeout, lastErr, b.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop ends PgBouncer: SIGTERM (immediate shutdown), SIGKILL if it is still
// there after stopTimeout.
func (b *Bouncer) stop() error {
	select {
	case <-b.done:
		return nil
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = b.cmd.Process.Kill()
	select {
	case <-b.done:
		return fmt.Errorf("pgbouncer (pid %d) ignored SIGTERM for %v and was killed", b.cmd.Process.Pid, stopTimeout)
	case <-time.After(stopTimeout):
		return fmt.Errorf("pgbouncer (pid %d) does not exit, even after SIGKILL", b.cmd.Process.Pid)
	}
}

// Addr returns PgBouncer's listen address, "127.0.0.1:port".
func (b *Bouncer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

// PoolSize returns the number of server connections PgBouncer opens at most
// per (database, user) pair.
func (b *Bouncer) PoolSize() int { return b.poolSize }

// URL returns a connection string that reaches the same database as the
// same role as connString, through PgBouncer, and registers the role and
// its password with PgBouncer (see the package documentation). connString
// is a login role's connection string with a password, such as
// [pgtest.Database.CreateRole] returns. The result is a postgres:// URL with
// sslmode=disable and no other options.
func (b *Bouncer) URL(tb testing.TB, connString string) string {
	tb.Helper()
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		tb.Fatalf("pgbouncertest.URL: %v", err)
	}
	if cfg.User == "" || cfg.Password == "" || cfg.User == adminUser {
		tb.Fatalf("pgbouncertest.URL: need a login role other than %s with a password, as pgtest's CreateRole gives, got user %q", adminUser, cfg.User)
	}
	if err := b.register(cfg.User, cfg.Password); err != nil {
		tb.Fatalf("pgbouncertest.URL: registering %s: %v", cfg.User, err)
	}
	return b.url(cfg.User, cfg.Password, cfg.Database)
}

// Register lets clients log in through PgBouncer as role with password,
// and PgBouncer log in to PostgreSQL as role with the same password: for
// login roles that code under test creates and connects as by itself
// (through the host and port of a URL that [Bouncer.URL] gave), such as
// the per-tenant logins of store. Registering a role again with another
// password replaces the old one.
func (b *Bouncer) Register(tb testing.TB, role, password string) {
	tb.Helper()
	if role == "" || password == "" || role == adminUser {
		tb.Fatalf("pgbouncertest.Register: need a login role other than %s and a password, got role %q", adminUser, role)
	}
	if err := b.register(role, password); err != nil {
		tb.Fatalf("pgbouncertest.Register: registering %s: %v", role, err)
	}
}

func (b *Bouncer) url(role, password, database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(role, password),
		Host:     b.Addr(),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// register adds role to the auth file and makes PgBouncer reload it.
func (b *Bouncer) register(role, password string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if pw, ok := b.users[role]; ok && pw == password {
		return nil
	}
	b.users[role] = password
	if err := b.writeAuthFile(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), consoleTimeout)
	defer cancel()
	c, err := b.console(ctx)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, "RELOAD")
	return err
}

// writeAuthFile writes every registered role, "name" "password" a line.
// The caller holds b.mu, or has b to itself.
func (b *Bouncer) writeAuthFile() error {
	names := make([]string, 0, len(b.users))
	for n := range b.users {
		names = append(names, n)
	}
	slices.Sort(names)
	var buf bytes.Buffer
	quote := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	for _, n := range names {
		fmt.Fprintf(&buf, "%s %s\n", quote(n), quote(b.users[n]))
	}
	// Write a new file and rename it, so that PgBouncer never reads half.
	tmp := filepath.Join(b.dir, "userlist.txt.new")
	if err := b.writeFile(tmp, buf.Bytes()); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(b.dir, "userlist.txt"))
}

// writeFile writes a private file that PgBouncer's user can read.
func (b *Bouncer) writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	return b.chown(path)
}

func (b *Bouncer) chown(path string) error {
	if b.uid < 0 {
		return nil
	}
	return os.Chown(path, b.uid, b.gid)
}

// console connects to PgBouncer's admin console, which speaks only the
// simple query protocol.
func (b *Bouncer) console(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(b.url(adminUser, b.adminPW, "pgbouncer"))
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	cfg.ConnectTimeout = 2 * time.Second
	return pgx.ConnectConfig(ctx, cfg)
}

// Show runs SHOW what (POOLS, SERVERS, CLIENTS, STATS, CONFIG, ...) on
// PgBouncer's admin console and returns its rows, each a map from column
// name to the value as text ("" for NULL). It fails the test on error.
func (b *Bouncer) Show(tb testing.TB, what string) []map[string]string {
	tb.Helper()
	if !isWord(what) {
		tb.Fatalf("pgbouncertest.Show: %q is not a SHOW subject", what)
	}
	ctx, cancel := context.WithTimeout(context.Background(), consoleTimeout)
	defer cancel()
	c, err := b.console(ctx)
	if err != nil {
		tb.Fatalf("pgbouncertest.Show(%s): %v", what, err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, "SHOW "+what)
	if err != nil {
		tb.Fatalf("pgbouncertest.Show(%s): %v", what, err)
	}
	defer rows.Close()
	var out []map[string]string
	for rows.Next() {
		m := map[string]string{}
		for i, fd := range rows.FieldDescriptions() {
			m[fd.Name] = string(rows.RawValues()[i])
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("pgbouncertest.Show(%s): %v", what, err)
	}
	return out
}

// isWord reports whether s is a non-empty run of ASCII letters and _.
func isWord(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') && r != '_' {
			return false
		}
	}
	return true
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// logBuffer collects PgBouncer's output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
