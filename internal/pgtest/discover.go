package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// envDatabaseURL names a superuser URL to any database of the server the
// tests use.
const envDatabaseURL = "TENANCY_TEST_DATABASE_URL"

// probeTimeout bounds each connection attempt during discovery.
const probeTimeout = 3 * time.Second

// minServerVersion is the oldest server pgtest works with: DROP DATABASE
// ... WITH (FORCE) arrived in PostgreSQL 13.
const minServerVersion = 130000

// configError is a server named explicitly (TENANCY_TEST_DATABASE_URL) that
// cannot be used: always a failure, never a skip, because whoever set the
// variable meant the tests to run.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// discover finds a PostgreSQL server on which it can act as superuser:
// $TENANCY_TEST_DATABASE_URL if set, else a server reachable with the libpq
// defaults, else a throwaway cluster it starts.
func discover(ctx context.Context) (*server, error) {
	if s := os.Getenv(envDatabaseURL); s != "" {
		u, err := parseAdminURL(s)
		if err != nil {
			return nil, &configError{fmt.Errorf("%s: %w", envDatabaseURL, err)}
		}
		if err := probe(ctx, u.String()); err != nil {
			return nil, &configError{fmt.Errorf("%s=%s: %w", envDatabaseURL, u.Redacted(), err)}
		}
		return &server{url: u}, nil
	}

	cands, err := defaultCandidates()
	if err != nil {
		return nil, fmt.Errorf("libpq defaults: %w", err)
	}
	var tried []string
	unreachable := map[string]bool{}
	for _, u := range cands {
		if unreachable[u.Host+u.Query().Get("host")] {
			continue
		}
		err := probe(ctx, u.String())
		if err == nil {
			return &server{url: u}, nil
		}
		tried = append(tried, fmt.Sprintf("%s: %v", u.Redacted(), err))
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) && !errors.Is(err, errNotUsable) {
			// Nothing answered there: other users or databases won't help.
			unreachable[u.Host+u.Query().Get("host")] = true
		}
	}

	c, err := startThrowawayCluster(ctx)
	if err != nil {
		return nil, fmt.Errorf("no server found with the libpq defaults (%s); no throwaway cluster either: %w",
			strings.Join(tried, "; "), err)
	}
	u, err := url.Parse(c.url)
	if err != nil {
		c.stop()
		return nil, err
	}
	if err := probe(ctx, c.url); err != nil {
		c.stop()
		return nil, fmt.Errorf("throwaway cluster: %w", err)
	}
	return &server{url: u, cluster: c}, nil
}

// parseAdminURL checks that s is a postgres:// URL pgx accepts.
func parseAdminURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, errors.New("want a URL of the form postgres://user:password@host:port/database")
	}
	if _, err := pgconn.ParseConfig(s); err != nil {
		return nil, err
	}
	return u, nil
}

// defaultCandidates lists the superuser URLs to try when nothing is
// configured: the libpq defaults as pgx understands them (PGHOST, PGPORT,
// PGUSER, PGPASSWORD, PGDATABASE, ~/.pgpass, then a local socket
// directory), each host also with user and database "postgres" where PGUSER
// and PGDATABASE leave the choice open, then 127.0.0.1 if PGHOST is unset.
func defaultCandidates() ([]*url.URL, error) {
	cfg, err := pgconn.ParseConfig("")
	if err != nil {
		return nil, err
	}
	type hostPort struct {
		host string
		port uint16
	}
	hosts := []hostPort{{cfg.Host, cfg.Port}}
	for _, fb := range cfg.Fallbacks {
		hosts = append(hosts, hostPort{fb.Host, fb.Port})
	}
	if os.Getenv("PGHOST") == "" && os.Getenv("PGHOSTADDR") == "" {
		hosts = append(hosts, hostPort{"127.0.0.1", cfg.Port})
	}
	users := []string{cfg.User}
	if os.Getenv("PGUSER") == "" && cfg.User != "postgres" {
		users = append(users, "postgres")
	}
	dbs := []string{cfg.Database}
	if os.Getenv("PGDATABASE") == "" && cfg.Database != "postgres" {
		dbs = append(dbs, "postgres")
	}

	seen := map[string]bool{}
	var out []*url.URL
	for _, hp := range hosts {
		for _, user := range users {
			for _, db := range dbs {
				password := ""
				if user == cfg.User {
					password = cfg.Password
				}
				u := buildURL(hp.host, hp.port, user, password, db)
				if !seen[u.String()] {
					seen[u.String()] = true
					out = append(out, u)
				}
			}
		}
	}
	return out, nil
}

// buildURL makes a postgres:// URL; a host starting with '/' is a socket
// directory and goes in the host query parameter.
func buildURL(host string, port uint16, user, password, database string) *url.URL {
	u := &url.URL{Scheme: "postgres", Path: "/" + database}
	if password != "" {
		u.User = url.UserPassword(user, password)
	} else {
		u.User = url.User(user)
	}
	if strings.HasPrefix(host, "/") {
		u.RawQuery = url.Values{"host": {host}, "port": {strconv.Itoa(int(port))}}.Encode()
	} else {
		u.Host = net.JoinHostPort(host, strconv.Itoa(int(port)))
	}
	return u
}

// errNotUsable marks a server that answered but cannot serve pgtest.
var errNotUsable = errors.New("server not usable")

// probe connects to connString within probeTimeout and checks that the role
// is a superuser on a recent enough server.
func probe(ctx context.Context, connString string) error {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return err
	}
	cfg.ConnectTimeout = probeTimeout
	ctx, cancel := context.WithTimeout(ctx, 2*probeTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var super bool
	var version int
	err = conn.QueryRow(ctx,
		`SELECT rolsuper, current_setting('server_version_num')::int FROM pg_roles WHERE rolname = current_user`,
	).Scan(&super, &version)
	switch {
	case err != nil:
		return err
	case !super:
		return fmt.Errorf("%w: role %q is not a superuser", errNotUsable, cfg.User)
	case version < minServerVersion:
		return fmt.Errorf("%w: server version %d is older than PostgreSQL 13", errNotUsable, version)
	}
	return nil
}
