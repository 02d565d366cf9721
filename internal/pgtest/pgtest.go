package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rtmx-ai/tenancy/internal/pgscram"
	"github.com/rtmx-ai/tenancy/internal/testenv"
)

// howTo tells a developer how to get the tests that were skipped to run.
const howTo = "To run them: set TENANCY_TEST_DATABASE_URL to a superuser URL " +
	"(postgres://postgres@127.0.0.1:5432/postgres), or run a server reachable with " +
	"the libpq defaults (PGHOST, PGPORT, PGUSER, ...), or install PostgreSQL so that " +
	"initdb and pg_ctl are found (on PATH or in /usr/lib/postgresql/*/bin) and pgtest " +
	"starts a throwaway cluster. See CONTRIBUTING.md, \"Test databases\"."

// setupTimeout bounds finding or starting a server and creating the
// package's database.
const setupTimeout = 2 * time.Minute

// maxIdentLen is PostgreSQL's identifier limit (NAMEDATALEN-1) in bytes.
const maxIdentLen = 63

var roleNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// errFinished answers DB calls made after the package's tests have finished.
var errFinished = errors.New("the package's tests have finished")

// current is the harness of this test binary, set by Main.
var current atomic.Pointer[harness]

// harness is the state of one test package run.
type harness struct {
	prefix string

	once sync.Once
	err  error     // why no server could be had, if so
	srv  *server   // the package's server
	db   *Database // the package's database

	seq atomic.Int64 // numbers the databases after the first

	mu       sync.Mutex
	clusters []*server // private clusters of NewCluster not yet stopped

	second    *Database // the database of SecondCluster, once started
	secondErr error
}

// server is one PostgreSQL server (cluster) and what this package made on it.
type server struct {
	url     *url.URL // superuser on a maintenance database
	cluster *cluster // non-nil if this package started it

	mu    sync.Mutex
	admin *pgx.Conn   // to the maintenance database, for CREATE DATABASE/ROLE
	dbs   []*Database // made by this package, in order

	loginOnce sync.Once
	loginURL  *url.URL // where login roles connect: url, or 127.0.0.1 instead of its socket
	loginErr  error
}

// Database is a database made for this test package (or for one test, by
// [NewCluster]) on a PostgreSQL server where pgtest acts as superuser. Its
// methods are safe for concurrent use by parallel tests.
type Database struct {
	h    *harness
	srv  *server
	name string

	mu   sync.Mutex
	conn *pgx.Conn // superuser connection used by Exec, opened on first use
}

// Main runs the tests of a package that uses PostgreSQL. Call it from the
// package's TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// The first call to [DB] finds or starts a server (see the package
// documentation) and creates a fresh database with a unique name; packages
// whose selected tests never call DB connect to nothing. After m.Run, Main
// drops the databases made by the package (WITH (FORCE)), every database
// owned by and every role named with [Database.Prefix], stops any server it
// started, and exits with m.Run's code (or 1 if cleanup failed, or if CI=true
// and no server could be had). Cleanup runs whether tests pass or fail; a
// throwaway cluster is also removed if the test process crashes.
//
// The functions in after run once m.Run has returned, before the database
// cleanup: the cleanups of other test harnesses that would otherwise need a
// TestMain of their own (pgtest.Main(m, softhsmtest.Cleanup)).
func Main(m *testing.M, after ...func()) {
	os.Exit(run(m, after...))
}

func run(m *testing.M, after ...func()) int {
	h := &harness{prefix: newPrefix()}
	if !current.CompareAndSwap(nil, h) {
		fmt.Fprintln(os.Stderr, "pgtest: Main called twice")
		return 2
	}
	code := m.Run()
	for _, f := range after {
		f()
	}
	// Later DB calls (from goroutines tests leaked) must not set up again.
	h.once.Do(func() { h.err = errFinished })
	if err := h.close(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: cleanup: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	if h.err != nil && !errors.Is(h.err, errFinished) && h.mustFail() {
		fmt.Fprintf(os.Stderr, "pgtest: no PostgreSQL server for this package: %v\n", h.err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// mustFail says whether a missing server fails tests instead of skipping
// them: when CI is true, or when TENANCY_TEST_DATABASE_URL was set but
// cannot be used.
func (h *harness) mustFail() bool {
	var ce *configError
	return inCI() || errors.As(h.err, &ce)
}

func inCI() bool { return testenv.InCI() }

// DB returns the test package's database, setting it up on first use.
//
// When no server could be had, DB skips the test with the reason and how to
// get a server, or fails it (t.Fatal with the reason) if CI=true or if
// TENANCY_TEST_DATABASE_URL is set but unusable. It fails the test if
// [Main] is not running the package's tests.
func DB(tb testing.TB) *Database {
	tb.Helper()
	h := harnessFor(tb, "DB")
	h.once.Do(h.setup)
	if h.err != nil {
		h.unavailable(tb)
	}
	return h.db
}

func harnessFor(tb testing.TB, fn string) *harness {
	tb.Helper()
	h := current.Load()
	if h == nil {
		tb.Fatalf("pgtest.%s: pgtest.Main is not running this package's tests: call pgtest.Main from TestMain:\n"+
			"\tfunc TestMain(m *testing.M) { pgtest.Main(m) }", fn)
	}
	return h
}

func (h *harness) unavailable(tb testing.TB) {
	tb.Helper()
	if h.mustFail() {
		why := "CI=true"
		if !inCI() {
			why = envDatabaseURL + " is set"
		}
		tb.Fatalf("pgtest: no PostgreSQL server (a failure, not a skip, since %s): %v", why, h.err)
	}
	tb.Skipf("pgtest: no PostgreSQL server: %v\n%s", h.err, howTo)
}

func (h *harness) setup() {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	srv, err := discover(ctx)
	if err != nil {
		h.err = err
		return
	}
	db, err := srv.createDatabase(ctx, h, h.prefix+"db")
	if err != nil {
		h.err = fmt.Errorf("creating the package's database: %w", err)
		if cerr := srv.close(h.prefix); cerr != nil {
			h.err = fmt.Errorf("%w; cleaning up: %v", h.err, cerr)
		}
		return
	}
	h.srv, h.db = srv, db
}

// close drops what the package made and stops what it started.
func (h *harness) close() error {
	var errs []error
	h.mu.Lock()
	clusters := h.clusters
	h.clusters = nil
	h.mu.Unlock()
	for _, s := range clusters {
		errs = append(errs, s.close(h.prefix))
	}
	if h.srv != nil {
		errs = append(errs, h.srv.close(h.prefix))
	}
	return errors.Join(errs...)
}

// newPrefix returns "pgt", 8 random characters of [a-z2-7] (40 bits) and "_".
func newPrefix() string {
	return "pgt" + strings.ToLower(rand.Text()[:8]) + "_"
}

// adminConn returns the connection to the server's maintenance database,
// reconnecting if it was lost. The caller holds s.mu.
func (s *server) adminConn(ctx context.Context) (*pgx.Conn, error) {
	if s.admin != nil && !s.admin.IsClosed() {
		return s.admin, nil
	}
	conn, err := pgx.Connect(ctx, s.url.String())
	if err != nil {
		return nil, err
	}
	s.admin = conn
	return conn, nil
}

// adminExec runs sql on the maintenance database.
func (s *server) adminExec(ctx context.Context, sql string, args ...any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	conn, err := s.adminConn(ctx)
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// createDatabase creates database name from template0, so that it holds
// nothing a DBA added to template1.
func (s *server) createDatabase(ctx context.Context, h *harness, name string) (*Database, error) {
	if err := s.adminExec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0"); err != nil {
		return nil, err
	}
	d := &Database{h: h, srv: s, name: name}
	s.mu.Lock()
	s.dbs = append(s.dbs, d)
	s.mu.Unlock()
	return d, nil
}

// close drops the databases and roles the package made on s, or, for a
// throwaway cluster, stops it and removes it whole.
func (s *server) close(prefix string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.dbs {
		d.closeConn()
	}
	if s.admin != nil {
		s.admin.Close(context.Background())
		s.admin = nil
	}
	if s.cluster != nil {
		return s.cluster.stop()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // thousands of roles, in chunks
	defer cancel()
	conn, err := pgx.Connect(ctx, s.url.String())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	var errs []error
	dbs := map[string]bool{}
	for _, d := range s.dbs {
		dbs[d.name] = true
	}
	rows, _ := conn.Query(ctx, `
		SELECT d.datname FROM pg_database d LEFT JOIN pg_roles r ON r.oid = d.datdba
		WHERE starts_with(d.datname, $1) OR starts_with(r.rolname, $1)`, prefix)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		errs = append(errs, fmt.Errorf("listing databases: %w", err))
	}
	for _, n := range names {
		dbs[n] = true
	}
	for n := range dbs {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{n}.Sanitize()+" WITH (FORCE)"); err != nil {
			errs = append(errs, fmt.Errorf("dropping database %s: %w", n, err))
		}
	}

	rows, _ = conn.Query(ctx, `SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY rolname`, prefix)
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		errs = append(errs, fmt.Errorf("listing roles: %w", err))
	}
	// In chunks: each dropped role takes a lock until commit, and
	// PostgreSQL 16+ runs out of shared memory at about 12,000 in one
	// transaction.
	for len(roles) > 0 {
		n := min(len(roles), 500)
		idents := make([]string, n)
		for i, r := range roles[:n] {
			idents[i] = pgx.Identifier{r}.Sanitize()
		}
		roles = roles[n:]
		list := strings.Join(idents, ", ")
		// DROP OWNED also revokes privileges on shared objects (databases,
		// tablespaces) and memberships, which would block DROP ROLE.
		if _, err := conn.Exec(ctx, "DROP OWNED BY "+list); err != nil {
			errs = append(errs, fmt.Errorf("DROP OWNED BY %s: %w", abbreviate(list), err))
		}
		if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+list); err != nil {
			errs = append(errs, fmt.Errorf("DROP ROLE %s: %w", abbreviate(list), err))
		}
	}
	return errors.Join(errs...)
}

// Name returns the database's name.
func (d *Database) Name() string { return d.name }

// Prefix returns the prefix of every cluster-wide name (roles, databases)
// this test package makes: "pgt", 8 random characters of [a-z2-7] and
// "_", 12 bytes in all, the same for the whole package run. Roles and
// databases whose names start with it are dropped when the package ends, so
// tests that make such objects themselves should name them with it.
func (d *Database) Prefix() string { return d.h.prefix }

// AdminURL returns a postgres:// connection string for a superuser on this
// database.
func (d *Database) AdminURL() string {
	u := *d.srv.url
	u.Path, u.RawPath = "/"+d.name, ""
	return u.String()
}

// URL returns a postgres:// connection string for login role on this
// database, with password (none if empty). Host, port and options are those
// of [Database.AdminURL], except that when AdminURL uses a local socket on
// which the server does not accept password logins (peer authentication,
// as Debian configures it) but 127.0.0.1 does, URL uses 127.0.0.1.
func (d *Database) URL(role, password string) string {
	base, _ := d.srv.loginBase(d.h.prefix, d.name)
	u := *base
	u.Path, u.RawPath = "/"+d.name, ""
	if password == "" {
		u.User = url.User(role)
	} else {
		u.User = url.UserPassword(role, password)
	}
	return u.String()
}

// CreateRole creates the LOGIN role Prefix()+name with a random password and
// the given attributes, and returns a connection string for it on this
// database. attrs is trusted SQL from test code, appended to CREATE ROLE:
// "NOINHERIT", "SUPERUSER", "BYPASSRLS", "CREATEROLE", ... or "" for none.
// name must match [a-z][a-z0-9_]* and fit the 63-byte identifier limit
// with the prefix.
//
// Roles are cluster-wide and live until the package ends, when they are
// dropped: creating the same name twice in one package run fails the test.
// A test that may run more than once per package run (go test -count=N, a
// helper called from several tests) creates the role once (sync.Once) or
// gives each call a distinct name.
func (d *Database) CreateRole(tb testing.TB, name, attrs string) string {
	tb.Helper()
	if !roleNameRE.MatchString(name) {
		tb.Fatalf("pgtest.CreateRole: role name %q does not match [a-z][a-z0-9_]*", name)
	}
	role := d.h.prefix + name
	if len(role) > maxIdentLen {
		tb.Fatalf("pgtest.CreateRole: role name %q is longer than %d bytes", role, maxIdentLen)
	}
	if _, err := d.srv.loginBase(d.h.prefix, d.name); err != nil {
		tb.Fatalf("pgtest.CreateRole: %v", err)
	}
	password := randomHex(16)
	verifier, err := scramVerifier(password)
	if err != nil {
		tb.Fatalf("pgtest.CreateRole: %v", err)
	}
	sql := fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s' %s", pgx.Identifier{role}.Sanitize(), verifier, attrs)
	if err := d.srv.adminExec(context.Background(), sql); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" { // duplicate_object
			tb.Fatalf("pgtest.CreateRole: role %s already exists: roles live until the package ends (across tests and -count runs); create it once or use distinct names", role)
		}
		tb.Fatalf("pgtest.CreateRole(%q, %q): %v", name, attrs, err)
	}
	return d.URL(role, password)
}

// loginBase returns the URL login roles connect with (user and database to
// be replaced). On first use with a server reached through a local socket,
// it checks that a role with a password can log in there, and else tries
// 127.0.0.1 on the same port; if neither works, it returns the socket URL
// and an error saying why.
func (s *server) loginBase(prefix, dbName string) (*url.URL, error) {
	s.loginOnce.Do(func() {
		s.loginURL = s.url
		q := s.url.Query()
		if s.url.Host != "" || !strings.HasPrefix(q.Get("host"), "/") {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 4*probeTimeout)
		defer cancel()
		role, password := prefix+"pgtest_login", randomHex(16)
		ident := pgx.Identifier{role}.Sanitize()
		verifier, err := scramVerifier(password)
		if err != nil {
			s.loginErr = err
			return
		}
		if err := s.adminExec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", ident, verifier)); err != nil {
			s.loginErr = fmt.Errorf("checking how login roles connect: %w", err)
			return
		}
		defer s.adminExec(ctx, "DROP ROLE IF EXISTS "+ident)

		tcp := *s.url
		tcp.Host = net.JoinHostPort("127.0.0.1", q.Get("port"))
		q.Del("host")
		q.Del("port")
		tcp.RawQuery = q.Encode()
		var errs []error
		for _, base := range []*url.URL{s.url, &tcp} {
			u := *base
			u.User = url.UserPassword(role, password)
			u.Path, u.RawPath = "/"+dbName, ""
			err := tryLogin(ctx, u.String())
			if err == nil {
				s.loginURL = base
				return
			}
			errs = append(errs, fmt.Errorf("%s: %w", u.Redacted(), err))
		}
		s.loginErr = fmt.Errorf("a login role with a password cannot connect (pg_hba.conf must allow password or trust authentication for it): %w",
			errors.Join(errs...))
	})
	return s.loginURL, s.loginErr
}

func tryLogin(ctx context.Context, connString string) error {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return err
	}
	cfg.ConnectTimeout = probeTimeout
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// NewDatabase creates another fresh database with a unique name on the same
// server, for tests that need more than one. It is dropped when the package
// ends.
func (d *Database) NewDatabase(tb testing.TB) *Database {
	tb.Helper()
	name := d.h.prefix + "db" + strconv.FormatInt(d.h.seq.Add(1)+1, 10)
	nd, err := d.srv.createDatabase(context.Background(), d.h, name)
	if err != nil {
		tb.Fatalf("pgtest.NewDatabase: %v", err)
	}
	return nd
}

// Exec runs trusted SQL as superuser on this database and fails the test on
// error. Without args, sql may hold several statements. It runs on one
// connection kept for the database, so Exec calls are serialised.
func (d *Database) Exec(tb testing.TB, sql string, args ...any) {
	tb.Helper()
	if err := d.exec(context.Background(), sql, args...); err != nil {
		tb.Fatalf("pgtest.Exec(%s): %v", abbreviate(sql), err)
	}
}

func (d *Database) exec(ctx context.Context, sql string, args ...any) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == nil || d.conn.IsClosed() {
		cfg, err := pgx.ParseConfig(d.AdminURL())
		if err != nil {
			return err
		}
		// No statement cache: tests change schemas under their statements.
		cfg.DefaultQueryExecMode = pgx.QueryExecModeDescribeExec
		d.conn, err = pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return err
		}
	}
	_, err := d.conn.Exec(ctx, sql, args...)
	return err
}

func (d *Database) closeConn() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != nil {
		d.conn.Close(context.Background())
		d.conn = nil
	}
}

// NewCluster starts a private throwaway PostgreSQL cluster for the calling
// test (initdb and pg_ctl must be installed, see the package documentation)
// and returns a fresh database on it, for tests that need two servers. The
// cluster is stopped and removed when the test ends (or, at the latest,
// when the package ends). When no cluster can be started, NewCluster skips
// or fails the test as [DB] does.
func NewCluster(tb testing.TB) *Database { tb.Helper(); return newCluster(tb, "NewCluster") }

// NewSCRAMCluster is [NewCluster] with pg_hba.conf asking every role but
// the superuser postgres for a password, checked with SCRAM-SHA-256, on
// the socket and on 127.0.0.1: for tests that must see real password
// authentication, not trust.
func NewSCRAMCluster(tb testing.TB) *Database {
	tb.Helper()
	return newCluster(tb, "NewSCRAMCluster",
		"local all postgres trust",
		"host  all postgres 127.0.0.1/32 trust",
		"local all all scram-sha-256",
		"host  all all 127.0.0.1/32 scram-sha-256")
}

// SecondCluster returns a database on a second PostgreSQL cluster (a
// throwaway one, as [NewCluster] starts) shared by the whole test package:
// started on first use, stopped and removed when [Main] ends. For tests
// of placements on several clusters, where a cluster per test would cost
// a second or more each. When no cluster can be started it skips or fails
// the test as [DB] does.
func SecondCluster(tb testing.TB) *Database {
	tb.Helper()
	h := harnessFor(tb, "SecondCluster")
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.second == nil && h.secondErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		c, err := startThrowawayCluster(ctx)
		if err != nil {
			h.secondErr = err
		} else {
			u, _ := url.Parse(c.url)
			s := &server{url: u, cluster: c}
			h.clusters = append(h.clusters, s)
			h.second, h.secondErr = s.createDatabase(ctx, h, h.prefix+"second")
		}
	}
	if h.secondErr != nil {
		if inCI() {
			tb.Fatalf("pgtest.SecondCluster: (a failure, not a skip, since CI=true): %v", h.secondErr)
		}
		tb.Skipf("pgtest.SecondCluster: no throwaway cluster: %v\n%s", h.secondErr, howTo)
	}
	return h.second
}

func newCluster(tb testing.TB, fn string, hba ...string) *Database {
	tb.Helper()
	h := harnessFor(tb, fn)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	c, err := startThrowawayCluster(ctx, hba...)
	if err != nil {
		if inCI() {
			tb.Fatalf("pgtest.%s: (a failure, not a skip, since CI=true): %v", fn, err)
		}
		tb.Skipf("pgtest.%s: no throwaway cluster: %v\n%s", fn, err, howTo)
	}
	u, _ := url.Parse(c.url)
	s := &server{url: u, cluster: c}
	h.mu.Lock()
	h.clusters = append(h.clusters, s)
	h.mu.Unlock()
	tb.Cleanup(func() {
		h.mu.Lock()
		for i, x := range h.clusters {
			if x == s {
				h.clusters = append(h.clusters[:i], h.clusters[i+1:]...)
				break
			}
		}
		h.mu.Unlock()
		if err := s.close(h.prefix); err != nil {
			tb.Errorf("pgtest.%s: stopping the cluster: %v", fn, err)
		}
	})
	d, err := s.createDatabase(ctx, h, h.prefix+"db"+strconv.FormatInt(h.seq.Add(1)+1, 10))
	if err != nil {
		tb.Fatalf("pgtest.%s: %v", fn, err)
	}
	return d
}

// scramVerifier returns a SCRAM-SHA-256 verifier of password (random
// salt, 16 iterations: the passwords are 128 random bits), so that no
// statement pgtest sends carries a clear-text password.
func scramVerifier(password string) (string, error) {
	salt := make([]byte, 16)
	rand.Read(salt)
	return pgscram.Verifier(password, salt, 16)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func abbreviate(sql string) string {
	sql = strings.Join(strings.Fields(sql), " ")
	if len(sql) > 80 {
		sql = sql[:77] + "..."
	}
	return strconv.Quote(sql)
}

// SetHBA replaces the pg_hba.conf of the throwaway cluster d lives on
// ([NewCluster], [SecondCluster]) with lines and reloads the server; when
// the test ends, the previous file comes back (and is reloaded). Keep a
// line for the superuser postgres on the socket and on 127.0.0.1, which
// pgtest itself needs. It fails the test for a server pgtest did not
// start: the package's own server's pg_hba.conf is not pgtest's to change.
func (d *Database) SetHBA(tb testing.TB, lines ...string) {
	tb.Helper()
	if d.srv.cluster == nil {
		tb.Fatalf("pgtest: SetHBA: %s is not on a cluster pgtest started", d.name)
	}
	name := filepath.Join(d.srv.cluster.dataDir, "pg_hba.conf")
	old, err := os.ReadFile(name)
	if err != nil {
		tb.Fatalf("pgtest: SetHBA: %v", err)
	}
	write := func(b []byte) error {
		// The file exists and is the server's: writing keeps its owner.
		if err := os.WriteFile(name, b, 0o600); err != nil {
			return err
		}
		return d.exec(context.Background(), `SELECT pg_reload_conf()`)
	}
	tb.Cleanup(func() {
		if err := write(old); err != nil {
			tb.Errorf("pgtest: SetHBA: restoring pg_hba.conf: %v", err)
		}
	})
	if err := write([]byte("# pgtest.SetHBA\n" + strings.Join(lines, "\n") + "\n")); err != nil {
		tb.Fatalf("pgtest: SetHBA: %v", err)
	}
}

// StopMode is how [Database.Stop] shuts a throwaway cluster down: the
// modes of pg_ctl stop -m.
type StopMode string

const (
	// StopImmediate kills the server's processes at once, as a crash
	// would: no checkpoint, recovery from the WAL at the next start.
	StopImmediate StopMode = "immediate"
	// StopFast ends every session and shuts down cleanly.
	StopFast StopMode = "fast"
)

// Stop shuts down the throwaway cluster d lives on ([NewCluster],
// [SecondCluster]) in mode and leaves its data directory in place, so that
// [Database.Start] brings it back on the same port with the same data: for
// tests of what clients see while the server is down and once it is back.
// Sessions open on the server, pgtest's own included, are lost.
//
// The throwaway cluster runs with synchronous_commit = off, for speed: a
// commit acknowledged less than wal_writer_delay (200 ms) before a
// [StopImmediate] may be lost. A test of durability turns it on first
// (d.Exec(t, `ALTER SYSTEM SET synchronous_commit = on`), then
// d.Exec(t, `SELECT pg_reload_conf()`)).
//
// It fails the test for a server pgtest did not start, or for an unknown
// mode.
func (d *Database) Stop(tb testing.TB, mode StopMode) {
	tb.Helper()
	if d.srv.cluster == nil {
		tb.Fatalf("pgtest: Stop: %s is not on a cluster pgtest started", d.name)
	}
	if mode != StopImmediate && mode != StopFast {
		tb.Fatalf("pgtest: Stop: mode %q: want StopImmediate or StopFast", mode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := d.srv.cluster.halt(ctx, string(mode)); err != nil {
		tb.Fatalf("pgtest: Stop: %v", err)
	}
	d.srv.dropConns()
}

// Start starts the throwaway cluster d lives on again after
// [Database.Stop], on the same port and data directory, and returns once
// it accepts connections (after crash recovery, for [StopImmediate]). It
// fails the test for a server pgtest did not start.
func (d *Database) Start(tb testing.TB) {
	tb.Helper()
	if d.srv.cluster == nil {
		tb.Fatalf("pgtest: Start: %s is not on a cluster pgtest started", d.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := d.srv.cluster.resume(ctx); err != nil {
		tb.Fatalf("pgtest: Start: %v", err)
	}
}

// dropConns closes pgtest's connections to s, lost with the server.
func (s *server) dropConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.dbs {
		d.closeConn()
	}
	if s.admin != nil {
		s.admin.Close(context.Background())
		s.admin = nil
	}
}
