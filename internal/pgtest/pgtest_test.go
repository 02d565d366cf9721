package pgtest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(envNoMain) != "" {
		// A child process checking what DB does without Main.
		os.Exit(m.Run())
	}
	pgtest.Main(m)
}

func connect(t *testing.T, connString string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), connString)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

var seq atomic.Int64

// unique makes role names unique within the package run, so that the tests
// pass with -count=N (roles are dropped when the package ends, not before).
func unique(name string) string {
	return name + strconv.FormatInt(seq.Add(1), 10)
}

func TestDB(t *testing.T) {
	db := pgtest.DB(t)
	if db != pgtest.DB(t) {
		t.Error("DB returned two different databases in one package run")
	}
	conn := connect(t, db.AdminURL())
	var name string
	var super bool
	if err := conn.QueryRow(t.Context(),
		`SELECT current_database(), rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&name, &super); err != nil {
		t.Fatal(err)
	}
	if name != db.Name() {
		t.Errorf("AdminURL connects to %q, want %q", name, db.Name())
	}
	if !super {
		t.Error("AdminURL is not a superuser")
	}
	if got := db.Name(); got != db.Prefix()+"db" {
		t.Errorf("Name() = %q, want Prefix()+\"db\" = %q", got, db.Prefix()+"db")
	}

	// The package's database lives as long as the package run, -count
	// repetitions included: drop what the test made.
	t.Cleanup(func() { db.Exec(t, `DROP TABLE IF EXISTS t`) })
	db.Exec(t, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one')`)
	db.Exec(t, `INSERT INTO t VALUES ($1, $2)`, 2, "two")
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM t`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("count = %d, want 2", n)
	}
	// Exec after a schema change under the same SQL text still works.
	db.Exec(t, `DROP TABLE t; CREATE TABLE t (id bigint PRIMARY KEY, v int)`)
	db.Exec(t, `INSERT INTO t VALUES ($1, $2)`, 3, 3)
}

func TestPrefix(t *testing.T) {
	db := pgtest.DB(t)
	p := db.Prefix()
	if !regexp.MustCompile(`^[a-z][a-z0-9]*_$`).MatchString(p) || len(p) > 12 {
		t.Errorf("Prefix() = %q: want [a-z][a-z0-9]*_ of at most 12 bytes", p)
	}
	if db.NewDatabase(t).Prefix() != p {
		t.Error("Prefix differs between databases of one package run")
	}
}

func TestURLsParse(t *testing.T) {
	db := pgtest.DB(t)
	for _, s := range []string{db.AdminURL(), db.URL("someone", "p@ss:w/rd?"), db.URL("someone", "")} {
		if !regexp.MustCompile(`^postgres(ql)?://`).MatchString(s) {
			t.Errorf("%q is not in URL form", s)
		}
		cfg, err := pgx.ParseConfig(s)
		if err != nil {
			t.Errorf("pgx.ParseConfig(%q): %v", s, err)
			continue
		}
		if cfg.Database != db.Name() {
			t.Errorf("%q: database %q, want %q", s, cfg.Database, db.Name())
		}
	}
	cfg, _ := pgx.ParseConfig(db.URL("someone", "p@ss:w/rd?"))
	if cfg.User != "someone" || cfg.Password != "p@ss:w/rd?" {
		t.Errorf("URL: user %q password %q, want someone and p@ss:w/rd?", cfg.User, cfg.Password)
	}
}

func TestCreateRole(t *testing.T) {
	db := pgtest.DB(t)
	cases := []struct {
		name, attrs                     string
		super, inherit, bypass, creater bool
	}{
		{"plain", "", false, true, false, false},
		{"noinherit", "NOINHERIT", false, false, false, false},
		{"super", "SUPERUSER", true, true, false, false},
		{"bypass", "BYPASSRLS", false, true, true, false},
		{"creator", "CREATEROLE NOINHERIT", false, false, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := unique(c.name)
			connString := db.CreateRole(t, name, c.attrs)
			cfg, err := pgx.ParseConfig(connString)
			if err != nil {
				t.Fatal(err)
			}
			if want := db.Prefix() + name; cfg.User != want || cfg.Password == "" {
				t.Errorf("user %q password %q, want user %q and a password", cfg.User, cfg.Password, want)
			}
			conn := connect(t, connString)
			var user, dbName string
			var super, inherit, bypass, creater, login bool
			if err := conn.QueryRow(t.Context(), `
				SELECT current_user, current_database(), rolsuper, rolinherit, rolbypassrls, rolcreaterole, rolcanlogin
				FROM pg_roles WHERE rolname = current_user`).Scan(
				&user, &dbName, &super, &inherit, &bypass, &creater, &login); err != nil {
				t.Fatal(err)
			}
			if user != db.Prefix()+name || dbName != db.Name() || !login {
				t.Errorf("logged in as %q on %q (login %v), want %q on %q", user, dbName, login, db.Prefix()+name, db.Name())
			}
			if super != c.super || inherit != c.inherit || bypass != c.bypass || creater != c.creater {
				t.Errorf("super=%v inherit=%v bypassrls=%v createrole=%v, want %v %v %v %v",
					super, inherit, bypass, creater, c.super, c.inherit, c.bypass, c.creater)
			}
		})
	}
}

func TestCreateRolePasswordIsChecked(t *testing.T) {
	db := pgtest.DB(t)
	name := unique("pwcheck")
	connString := db.CreateRole(t, name, "")
	conn := connect(t, db.AdminURL())
	// Password authentication is up to the server's pg_hba.conf (trust is
	// common in tests); check at least that a password was set.
	var hasPassword bool
	if err := conn.QueryRow(t.Context(),
		`SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = $1`, db.Prefix()+name).Scan(&hasPassword); err != nil {
		t.Fatal(err)
	}
	if !hasPassword {
		t.Error("role has no password")
	}
	if _, err := pgx.ParseConfig(connString); err != nil {
		t.Fatal(err)
	}
}

// TestCreateRoleSendsNoClearTextPassword: CreateRole sets the password as
// a SCRAM-SHA-256 verifier computed in Go (16 iterations; PostgreSQL 15
// hashes a clear-text password with 4096), and the password logs in on a
// server that asks for it.
func TestCreateRoleSendsNoClearTextPassword(t *testing.T) {
	db := pgtest.NewSCRAMCluster(t)
	name := unique("verifier")
	connString := db.CreateRole(t, name, "")
	var stored string
	if err := connect(t, db.AdminURL()).QueryRow(t.Context(),
		`SELECT rolpassword FROM pg_authid WHERE rolname = $1`, db.Prefix()+name).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, "SCRAM-SHA-256$16:") {
		t.Errorf("rolpassword %q: not the verifier pgtest computes", stored)
	}
	connect(t, connString)
}

func TestNewDatabase(t *testing.T) {
	db := pgtest.DB(t)
	other := db.NewDatabase(t)
	third := db.NewDatabase(t)
	if other.Name() == db.Name() || other.Name() == third.Name() {
		t.Fatalf("names not unique: %q, %q, %q", db.Name(), other.Name(), third.Name())
	}
	other.Exec(t, `CREATE TABLE only_in_other (id int)`)
	conn := connect(t, other.AdminURL())
	var name string
	if err := conn.QueryRow(t.Context(), `SELECT current_database()`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if name != other.Name() {
		t.Errorf("AdminURL connects to %q, want %q", name, other.Name())
	}
	// The table is not in the package's database.
	conn = connect(t, db.AdminURL())
	var exists bool
	if err := conn.QueryRow(t.Context(), `SELECT to_regclass('only_in_other') IS NOT NULL`).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Error("a table made in NewDatabase shows in the package's database")
	}
	// A role made through one database logs in to another.
	role := other.CreateRole(t, unique("other_user"), "")
	cfg, _ := pgx.ParseConfig(role)
	connect(t, third.URL(cfg.User, cfg.Password))
}

func TestExecFailureIsReported(t *testing.T) {
	db := pgtest.DB(t)
	ft := &fakeTB{TB: t}
	func() {
		defer func() { recover() }()
		db.Exec(ft, `SELECT * FROM no_such_table`)
	}()
	if !ft.failed {
		t.Error("Exec of bad SQL did not fail the test")
	}
	ft = &fakeTB{TB: t}
	func() {
		defer func() { recover() }()
		db.CreateRole(ft, "Bad-Name", "")
	}()
	if !ft.failed {
		t.Error("CreateRole with a bad name did not fail the test")
	}
	twice := unique("twice")
	db.CreateRole(t, twice, "")
	ft = &fakeTB{TB: t}
	func() {
		defer func() { recover() }()
		db.CreateRole(ft, twice, "")
	}()
	if !ft.failed {
		t.Error("CreateRole of an existing name did not fail the test")
	} else if !strings.Contains(ft.msg, twice) {
		t.Errorf("the failure does not name the role %q: %q", twice, ft.msg)
	}
}

// fakeTB records Fatal instead of ending the real test.
type fakeTB struct {
	testing.TB
	failed bool
	msg    string
}

var errFatal = errors.New("fatal")

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = true
	f.msg = fmt.Sprintf(format, args...)
	panic(errFatal)
}
func (f *fakeTB) Fatal(args ...any) {
	f.failed = true
	f.msg = fmt.Sprint(args...)
	panic(errFatal)
}
