// Package scratchdb is the plumbing the example programs share for the
// scratch database and roles each one makes on a PostgreSQL server as a
// superuser and drops at the end: the rules their names follow, the
// statement that creates a login role without sending its password, the
// drop of everything they made, and a description of a server that holds
// no secret. It holds none of the SDK's own use, which each example shows
// in full.
package scratchdb

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rtmx-ai/tenancy/store"
)

// IsName reports whether s can be written into SQL unquoted:
// [a-z_][a-z0-9_]*, at most 63 bytes.
func IsName(s string) bool {
	if s == "" || len(s) > 63 || ('0' <= s[0] && s[0] <= '9') {
		return false
	}
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// CheckNames checks the scratch database's name and the prefix of the
// roles: Drop drops every role starting with the prefix, so it must be a
// name of 3 to 16 bytes ending in '_', not starting with '_' or "pg_".
func CheckNames(database, rolePrefix string) error {
	if !IsName(database) {
		return fmt.Errorf("database %q is not a lower-case SQL name", database)
	}
	p := rolePrefix
	if !IsName(p) || len(p) < 3 || len(p) > 16 || p[0] == '_' || !strings.HasSuffix(p, "_") || strings.HasPrefix(p, "pg_") {
		return fmt.Errorf("role prefix %q is not a lower-case SQL name of 3 to 16 bytes ending in _ (and not pg_)", p)
	}
	return nil
}

// LoginRole returns the statement that creates the login role name (a
// name IsName takes) with password. The password goes as a SCRAM-SHA-256
// verifier computed in Go, never in clear text, which the server's
// log_statement and pg_stat_statements would keep. The verifier has
// store.DefaultSCRAMIterations iterations: the passwords of the examples
// are 128 random bits, which no iteration count needs to slow down.
func LoginRole(name, password string) (string, error) {
	if !IsName(name) {
		return "", fmt.Errorf("role %q is not a lower-case SQL name", name)
	}
	verifier, err := store.SCRAMVerifier(password, store.DefaultSCRAMIterations)
	if err != nil {
		return "", err
	}
	return `CREATE ROLE ` + name + ` LOGIN PASSWORD '` + verifier + `'`, nil
}

// Drop drops the database and every role whose name starts with
// rolePrefix (after CheckNames), with what they own; it is safe to run
// again, and drops nothing of a role outside the prefix.
func Drop(ctx context.Context, server *pgx.Conn, database, rolePrefix string) error {
	if err := CheckNames(database, rolePrefix); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	if _, err := server.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{database}.Sanitize()+` WITH (FORCE)`); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	rows, err := server.Query(ctx, `SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY rolname`, rolePrefix)
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(roles) == 0 {
		return err
	}
	// The roles hold privileges in the dropped database only; DROP OWNED
	// also revokes any held in the database the server is connected to.
	list := make([]string, len(roles))
	for i, r := range roles {
		list[i] = pgx.Identifier{r}.Sanitize()
	}
	if _, err := server.Exec(ctx, `DROP OWNED BY `+strings.Join(list, ", ")); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	if _, err := server.Exec(ctx, `DROP ROLE `+strings.Join(list, ", ")); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	return nil
}

// Target names the server, the user and the database of a connection
// string, for messages. It holds no password, whichever form the string
// gave one in (URL user info, ?password=, password=), nor anything else
// of a string that does not parse.
func Target(connString string) string {
	c, err := pgconn.ParseConfig(connString)
	if err != nil {
		return "a connection string that does not parse"
	}
	return TargetOf(c)
}

// TargetOf is Target of a parsed configuration.
func TargetOf(c *pgconn.Config) string {
	return fmt.Sprintf("user=%s host=%s port=%d database=%s", c.User, c.Host, c.Port, c.Database)
}
