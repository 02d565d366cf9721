package main

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	gcblob "gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file:// buckets

	"github.com/rtmx-ai/tenancy/audit"
	tblob "github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/internal/scratchdb"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// migrations are the service's tenant migrations: its tables, in every
// tenant's schema.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// auditMigration is the version of the audit log's migration, after the
// service's own.
const auditMigration = 100

// options say where the service keeps its data and which cluster-wide
// names it makes. Everything so named is dropped when it stops.
type options struct {
	// AdminURL is the connection string of a PostgreSQL superuser: setup,
	// cleanup, and store's admin role on the scratch database.
	AdminURL string
	// Database is the scratch database, created and dropped.
	Database string
	// RolePrefix is store's AdminConfig.RolePrefix and the prefix of the
	// platform role: [a-z][a-z0-9_]*, 3 to 16 bytes, ending in "_".
	// Every role whose name starts with it is dropped.
	RolePrefix string
	// Tenants are the demo tenants made, each a standard-tier tenant.
	Tenants []string
	// DirPattern names the temporary directory of the master key and the
	// objects (os.MkdirTemp's pattern), removed when the run stops.
	DirPattern string
}

// The names of a run of `go run`: a database and a role prefix of its
// own (runID is 8 hexadecimal digits), so that two runs on one server
// keep apart, and a run that was killed is cleaned up by the next one
// (runs hold an advisory lock named after their ID while they live).
const (
	databasePrefix = "tenancy_rtmxapi_"
	runLockClass   = 0x72746d78 // "rtmx"
)

func runOptions(adminURL, runID string) options {
	return options{
		AdminURL:   adminURL,
		Database:   databasePrefix + runID,
		RolePrefix: "rx" + runID + "_",
		Tenants:    []string{"acme", "globex"},
		DirPattern: "rtmxapi-" + runID + "-*",
	}
}

func newRunID() string { return randomHex(4) }

// runLockKey is the second key of the advisory lock of run id.
func runLockKey(id string) (int32, bool) {
	n, err := strconv.ParseUint(id, 16, 32)
	return int32(uint32(n)), err == nil && len(id) == 8
}

func (o options) platformRole() string { return o.RolePrefix + "platform" }

// createPlatformRole is the statement that creates the platform role with
// password. The password goes as a SCRAM-SHA-256 verifier computed in Go,
// never in clear text, which the server's log_statement and
// pg_stat_statements would keep.
func (o options) createPlatformRole(password string) (string, error) {
	return scratchdb.LoginRole(o.platformRole(), password)
}

func (o options) validate() error {
	if err := scratchdb.CheckNames(o.Database, o.RolePrefix); err != nil {
		return err
	}
	if len(o.Tenants) < 1 {
		return errors.New("no tenants")
	}
	return nil
}

// environment is what the service runs on: the scratch database with its
// control plane and tenants, the request path, keys, the audit log and the
// object storage. close drops all of it.
type environment struct {
	o         options
	server    *pgx.Conn // superuser, for cleanup
	admin     *store.Admin
	db        *store.DB
	provision *keys.Manager // writes keysets: provisioning only
	keys      *keys.Manager // reads keysets: the request path
	audit     *audit.Log
	raw       *gcblob.Bucket // the platform's bucket, under buckets
	buckets   *tblob.Buckets
	dir       string // the master key and the bucket's directory
	tenants   []tenant.ID
}

// setup makes the environment: after it, o's database holds a control
// plane and o.Tenants, each with its schema (the service's tables and an
// audit log), its login role and its keys. On error it undoes what it
// made.
func setup(ctx context.Context, o options, log *slog.Logger) (env *environment, err error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	server, err := pgx.Connect(ctx, o.AdminURL)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL as superuser (%s): %w\n  start PostgreSQL or pass -admin-url", scratchdb.Target(o.AdminURL), err)
	}
	e := &environment{o: o, server: server}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.close(context.WithoutCancel(ctx)))
		}
	}()
	if err := e.drop(ctx); err != nil {
		return nil, err
	}
	password := randomHex(16)
	createRole, err := o.createPlatformRole(password)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	for _, sql := range []string{
		`CREATE DATABASE ` + o.Database,
		createRole,
	} {
		if _, err := server.Exec(ctx, sql); err != nil {
			return nil, fmt.Errorf("setup: %w", err)
		}
	}
	secret := store.LoginSecret{Version: 1, Key: randomBytes(32)}

	acfg, err := store.ParseAdminConfig(o.AdminURL)
	if err != nil {
		return nil, err
	}
	acfg.Pool.ConnConfig.Database = o.Database
	acfg.PlatformRole = o.platformRole()
	acfg.RolePrefix = o.RolePrefix
	acfg.LoginSecrets = []store.LoginSecret{secret}
	acfg.Logger = log
	own, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	if acfg.Migrations, err = audit.WithMigration(own, auditMigration); err != nil {
		return nil, err
	}
	if e.admin, err = store.OpenAdmin(ctx, acfg); err != nil {
		return nil, err
	}
	if err := audit.Install(ctx, e.admin); err != nil {
		return nil, err
	}
	cfg, err := store.ParseConfig(o.AdminURL, secret)
	if err != nil {
		return nil, err
	}
	cfg.Platform.ConnConfig.Database = o.Database
	cfg.Platform.ConnConfig.User, cfg.Platform.ConnConfig.Password = o.platformRole(), password
	cfg.Logger = log
	if e.db, err = store.Open(ctx, cfg); err != nil {
		return nil, err
	}

	if e.dir, err = os.MkdirTemp("", o.DirPattern); err != nil {
		return nil, err
	}
	kek, err := localkms.KeyURI(filepath.Join(e.dir, "master.key"))
	if err != nil {
		return nil, err
	}
	local, err := localkms.NewClient(localkms.Scheme)
	if err != nil {
		return nil, err
	}
	newKeys := func(ks keys.Store) (*keys.Manager, error) {
		kc := keys.DefaultConfig()
		kc.Store, kc.KMS, kc.PlatformKEK = ks, []registry.KMSClient{local}, keys.URI(kek)
		return keys.New(kc)
	}
	if e.provision, err = newKeys(e.admin.Keysets()); err != nil {
		return nil, err
	}
	if e.keys, err = newKeys(e.db.Keysets()); err != nil {
		return nil, err
	}
	acf := audit.DefaultConfig()
	acf.DB, acf.Keys, acf.Logger = e.db, e.keys, log
	if e.audit, err = audit.New(acf); err != nil {
		return nil, err
	}
	objects := filepath.Join(e.dir, "objects")
	if err := os.Mkdir(objects, 0o700); err != nil {
		return nil, err
	}
	if e.raw, err = gcblob.OpenBucket(ctx, "file://"+filepath.ToSlash(objects)); err != nil {
		return nil, err
	}
	if e.buckets, err = tblob.New(e.raw, e.keys, tblob.WithQuotas(tblob.DefaultQuotas(e.db.Blobs()))); err != nil {
		_ = e.raw.Close()
		e.raw = nil
		return nil, err
	}

	for _, s := range o.Tenants {
		id, err := tenant.ParseID(s)
		if err != nil {
			return nil, err
		}
		info := tenant.Info{ID: id, Name: "Demo tenant " + s, Tier: tenant.TierStandard, Region: "local"}
		if err := e.admin.CreateTenant(ctx, info); err != nil {
			return nil, err
		}
		if err := e.provision.Provision(ctx, id, keys.ProvisionOptions{}); err != nil {
			return nil, err
		}
		e.tenants = append(e.tenants, id)
	}
	return e, nil
}

// close closes what the environment opened and drops what it made: the
// database (with every tenant's schema, rows and audit log), the roles,
// the master key and the objects.
func (e *environment) close(ctx context.Context) error {
	var errs []error
	if e.audit != nil {
		errs = append(errs, e.audit.Close(ctx))
	}
	if e.buckets != nil {
		errs = append(errs, e.buckets.Close())
	}
	if e.db != nil {
		e.db.Close()
	}
	if e.admin != nil {
		e.admin.Close()
	}
	if e.dir != "" {
		errs = append(errs, os.RemoveAll(e.dir))
	}
	if e.server != nil {
		errs = append(errs, e.drop(ctx))
		errs = append(errs, e.server.Close(ctx))
	}
	return errors.Join(errs...)
}

// drop drops o's database and every role named with o's prefix; it is
// safe to run repeatedly.
func (e *environment) drop(ctx context.Context) error {
	return scratchdb.Drop(ctx, e.server, e.o.Database, e.o.RolePrefix)
}

// lockRun takes the advisory lock of run id on a connection of its own,
// held until unlock: it tells later runs that this one is alive.
func lockRun(ctx context.Context, adminURL, id string) (unlock func(), err error) {
	key, ok := runLockKey(id)
	if !ok {
		return nil, fmt.Errorf("run ID %q is not 8 hexadecimal digits", id)
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL as superuser (%s): %w", scratchdb.Target(adminURL), err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1, $2)`, int32(runLockClass), key); err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	return func() { _ = conn.Close(context.WithoutCancel(ctx)) }, nil
}

// cleanLeftovers drops the databases named prefix+<run ID>, the roles and
// the temporary directories of runs (names gives a run's names) whose
// advisory lock no session of the server holds: runs killed before they
// could clean up.
// It returns the run IDs dropped.
func cleanLeftovers(ctx context.Context, adminURL, prefix string, names func(adminURL, id string) options) ([]string, error) {
	server, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL as superuser (%s): %w\n  start PostgreSQL or pass -admin-url", scratchdb.Target(adminURL), err)
	}
	defer server.Close(context.WithoutCancel(ctx))
	rows, err := server.Query(ctx, `SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1`, prefix)
	if err != nil {
		return nil, err
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	var dropped []string
	for _, name := range dbs {
		id := strings.TrimPrefix(name, prefix)
		key, ok := runLockKey(id)
		if !ok {
			continue
		}
		// pg_locks lists the advisory locks of every database, so a run
		// holding its lock in another database than ours counts as alive.
		var alive bool
		if err := server.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory'
			AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 2)`,
			int64(runLockClass), int64(uint32(key))).Scan(&alive); err != nil {
			return dropped, err
		}
		if alive {
			continue
		}
		o := names(adminURL, id)
		err := scratchdb.Drop(ctx, server, o.Database, o.RolePrefix)
		if o.DirPattern != "" {
			dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), o.DirPattern))
			for _, d := range dirs {
				err = errors.Join(err, os.RemoveAll(d))
			}
		}
		if err != nil {
			return dropped, err
		}
		dropped = append(dropped, id)
	}
	return dropped, nil
}

// findPostgres returns the first of the candidate connection strings on
// which a superuser connects: the one given (flag or environment) if
// any, else PostgreSQL on 127.0.0.1:5432 and on the usual socket
// directories, as user postgres.
func findPostgres(ctx context.Context, given string) (string, error) {
	candidates := []string{given}
	if given == "" {
		candidates = []string{
			"postgres://postgres@127.0.0.1:5432/postgres",
			"postgres://postgres@localhost:5432/postgres",
			"postgres:///postgres?host=/var/run/postgresql&user=postgres",
			"postgres:///postgres?host=/tmp&user=postgres",
		}
	}
	var errs []error
	for _, c := range candidates {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		conn, err := pgx.Connect(cctx, c)
		if err == nil {
			var super bool
			err = conn.QueryRow(cctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super)
			if err == nil && !super {
				err = errors.New("the role is not a superuser")
			}
			_ = conn.Close(cctx)
		}
		cancel()
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", scratchdb.Target(c), err))
	}
	return "", fmt.Errorf("no PostgreSQL superuser found (start PostgreSQL, or pass -admin-url / RTMXAPI_ADMIN_URL):\n  %w", errors.Join(errs...))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return b
}

func randomHex(n int) string { return hex.EncodeToString(randomBytes(n)) }
