// Package pgtest is the one way the tests of tenancy get a real PostgreSQL.
//
// A package whose tests need PostgreSQL runs them through [Main] and asks
// for its database with [DB]:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		db := pgtest.DB(t)
//		db.Exec(t, `CREATE TABLE t (id int PRIMARY KEY)`)
//		appURL := db.CreateRole(t, "app", "NOINHERIT")
//		conn, err := pgx.Connect(ctx, appURL)
//		...
//	}
//
// # Finding a server
//
// The first call to [DB] in a test package finds a server on which it can
// act as superuser, in this order:
//
//  1. TENANCY_TEST_DATABASE_URL, a postgres:// URL for a superuser on any
//     database of the server. If it is set, nothing else is tried.
//  2. The libpq defaults as pgx understands them: PGHOST, PGPORT, PGUSER,
//     PGPASSWORD, PGDATABASE, ~/.pgpass, else a local socket directory
//     (/var/run/postgresql, /tmp) and the OS user name. Where PGUSER and
//     PGDATABASE are unset, user and database "postgres" are tried too, and
//     127.0.0.1 where PGHOST is unset. Each attempt has a few seconds.
//  3. A throwaway cluster: if initdb and pg_ctl are found (in the directory
//     TENANCY_TEST_PG_BIN if set, else on PATH, else in
//     /usr/lib/postgresql/*/bin and similar), pgtest runs initdb in a new
//     temporary directory and starts a server on a free port of 127.0.0.1,
//     with trust authentication on loopback and a private socket only. When
//     the tests run as root, initdb and the server run as the OS user
//     postgres, which owns the directory. At the end the server is stopped
//     (pg_ctl stop -m immediate) and the directory removed; a small
//     watchdog process does the same if the test process dies first.
//
// The server must be PostgreSQL 13 or newer.
//
// # What a package gets
//
// Each test package gets a fresh database with a unique name, created from
// template0, and a unique [Database.Prefix] for the cluster-wide names it
// makes (roles). [Database.CreateRole] makes login roles, [Database.NewDatabase]
// more databases, [NewCluster] a private second server. Connection strings
// are postgres:// URLs; those of login roles use 127.0.0.1 instead of a
// local socket on which the server refuses password logins (peer
// authentication). After the tests,
// whether they passed or not, [Main] drops the package's databases WITH
// (FORCE), every database owned by a role with the prefix, and every role
// with the prefix. Databases and roles a test names otherwise are the test's
// to drop.
//
// # When there is no server
//
// Outside CI, tests calling [DB] are skipped with the reason and a note on
// how to get a server. With CI=true (any value strconv.ParseBool takes as
// true), they fail instead and Main exits with status 1: in CI a missing
// database is a broken setup, never a reason to skip. A set but unusable
// TENANCY_TEST_DATABASE_URL fails the tests too, in or out of CI.
//
// # Security
//
// pgtest is for tests only. It acts as superuser, runs the SQL given to
// [Database.Exec] and the attributes given to [Database.CreateRole] as
// trusted text, and puts passwords in the connection strings it returns.
// The throwaway cluster trusts every connection from 127.0.0.1.
package pgtest
