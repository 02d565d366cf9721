package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// defaultDevAdminURL is the local PostgreSQL superuser init --dev uses,
// as examples/quickstart does.
const defaultDevAdminURL = "postgres://postgres@127.0.0.1:5432/postgres"

// devOptions are init --dev's settings.
type devOptions struct {
	adminURL   string // a superuser on any database of the server
	database   string
	rolePrefix string
	dir        string
	configFile string
	reset      bool
}

var sqlName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

func (o devOptions) check() error {
	if !sqlName.MatchString(o.database) || len(o.database) > 40 || strings.HasPrefix(o.database, "pg_") {
		return usagef("--database %q: a lower-case SQL name of at most 40 bytes, not pg_*", o.database)
	}
	p := o.rolePrefix
	if !sqlName.MatchString(p) || len(p) < 3 || len(p) > 16 || !strings.HasSuffix(p, "_") || strings.HasPrefix(p, "pg_") {
		return usagef("--role-prefix %q: 3 to 16 bytes of [a-z0-9_], starting with a letter, ending in _, not pg_", p)
	}
	if strings.HasPrefix(o.database, p) {
		return usagef("--database %q must not start with the role prefix %q (its databases are dropped by --reset)", o.database, p)
	}
	return nil
}

func (a *app) initCommand() *cobra.Command {
	var o devOptions
	var dev bool
	cmd := &cobra.Command{
		Use:   "init --dev",
		Short: "Set up a local development deployment and write its tenantctl.yaml",
		Long: `init --dev sets up a development deployment on a local PostgreSQL server, as its
superuser (--admin-url, default ` + defaultDevAdminURL + `):
a database (--database), the platform login role and the backup role (NOLOGIN
BYPASSRLS, named with --role-prefix), and under --dir a local master key, the
login secret, the platform role's password and file:// object and backup
buckets; it provisions the keysets of the platform's audit trail and of the
backup key, and writes the configuration (--config, default ./tenantctl.yaml).

It is idempotent: run again, it keeps what exists. --reset drops the database,
every role and database named with the role prefix and the directory, and
starts over. The superuser also serves as store's admin role: for development
only.`,
		Annotations: map[string]string{"noconfig": "true"},
		Args:        args(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !dev {
				return usagef("init: only --dev is supported (a production deployment writes its configuration itself)")
			}
			if cmd.Flags().Changed("admin-url") {
				if err := checkConnFlag("admin-url", *a.flags["admin-url"], adminPasswordFrom); err != nil {
					return err
				}
			}
			o.adminURL = a.flagOrEnv(cmd, "admin-url", "ADMIN_URL", defaultDevAdminURL)
			o.configFile = a.configPath
			if o.configFile == "" {
				o.configFile = "tenantctl.yaml"
			}
			if err := o.check(); err != nil {
				return err
			}
			return a.initDev(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&dev, "dev", false, "a local development deployment")
	f.StringVar(&o.database, "database", "tenancy_dev", "the database to create")
	f.StringVar(&o.rolePrefix, "role-prefix", "tdev_", "prefix of the roles created")
	f.StringVar(&o.dir, "dir", ".tenantctl", "directory of the key, secrets and buckets")
	f.BoolVar(&o.reset, "reset", false, "drop everything init made and start over")
	return cmd
}

// flagOrEnv returns a global configuration flag if given, else its
// environment variable, else def.
func (a *app) flagOrEnv(cmd *cobra.Command, flag, env, def string) string {
	if cmd.Flags().Changed(flag) {
		return *a.flags[flag]
	}
	if v := a.getenv(envPrefix + env); v != "" {
		return v
	}
	return def
}

func (a *app) initDev(ctx context.Context, o devOptions) error {
	say := func(format string, args ...any) { fmt.Fprintf(a.stdout, format+"\n", args...) }
	server, err := pgx.ParseConfig(o.adminURL)
	if err != nil {
		return configErrorf("--admin-url: %w", err)
	}
	if server.Database == o.database {
		server.Database = "postgres" // never connected to the database it drops
	}
	conn, err := pgx.ConnectConfig(ctx, server)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL as superuser (%s): %w\n  start PostgreSQL, or pass --admin-url", connTarget(&server.Config), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var super bool
	if err := conn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
		return err
	}
	if !super {
		return configErrorf("--admin-url: %s is not a superuser", server.User)
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	if o.reset {
		if err := devCleanup(ctx, conn, o); err != nil {
			return err
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.Remove(o.configFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		say("reset: dropped database %s, roles and databases %s*, removed %s and %s", o.database, o.rolePrefix, dir, o.configFile)
	}

	// Files: the directory, secrets, buckets.
	for _, d := range []string{dir, filepath.Join(dir, "objects"), filepath.Join(dir, "backups"), filepath.Join(dir, "tenant-keys")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return err
		}
	}
	secretFile := filepath.Join(dir, "login.secret")
	if _, err := ensureFile(secretFile, func() string { return base64.StdEncoding.EncodeToString(randomBytes(32)) }); err != nil {
		return err
	}
	pwFile := filepath.Join(dir, "platform.password")
	password, err := ensureFile(pwFile, func() string { return hex.EncodeToString(randomBytes(24)) })
	if err != nil {
		return err
	}

	// PostgreSQL: the database, the platform role, the backup role.
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, o.database).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := conn.Exec(ctx, `CREATE DATABASE `+quoteIdent(o.database)); err != nil {
			return fmt.Errorf("create database %s: %w", o.database, err)
		}
		say("created database %s", o.database)
	}
	platformRole, backupRole := o.rolePrefix+"platform", o.rolePrefix+"backup"
	if !hexOnly(password) {
		return configErrorf("%s: not the hex password init writes (remove it, or --reset)", pwFile)
	}
	// The password reaches the server only as a SCRAM-SHA-256 verifier
	// (base64, no quote), which log_statement and pg_stat_statements may
	// keep; 192 random bits need no more than store's iterations.
	verifier, err := store.SCRAMVerifier(password, store.DefaultSCRAMIterations)
	if err != nil {
		return err
	}
	for _, sql := range []string{
		`DO $$ BEGIN CREATE ROLE ` + quoteIdent(platformRole) + ` LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
		// The password from the file (again, if the role existed).
		`ALTER ROLE ` + quoteIdent(platformRole) + ` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '` + verifier + `'`,
		`DO $$ BEGIN CREATE ROLE ` + quoteIdent(backupRole) + ` NOLOGIN BYPASSRLS; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("set up roles: %w", err)
		}
	}
	say("roles %s (login) and %s (NOLOGIN BYPASSRLS) ready", platformRole, backupRole)

	// The configuration.
	masterKey, err := localkms.KeyURI(filepath.Join(dir, "master.key"))
	if err != nil {
		return err
	}
	cfg := Config{
		AdminURL:             withDatabase(o.adminURL, o.database),
		PlatformURL:          platformURL(server, platformRole, o.database),
		PlatformPasswordFile: pwFile,
		LoginSecretFile:      secretFile,
		RolePrefix:           o.rolePrefix,
		PlatformRole:         platformRole,
		MasterKey:            masterKey,
		TenantKeyDir:         filepath.Join(dir, "tenant-keys"),
		ObjectsBucket:        "file://" + filepath.ToSlash(filepath.Join(dir, "objects")),
		Backup:               BackupConfig{Bucket: "file://" + filepath.ToSlash(filepath.Join(dir, "backups")), Role: backupRole, KeyID: "backupkey"},
		PlatformAuditKeyID:   "platformaudit",
		Routes:               RoutesConfig{Hosts: []string{"{{.DNSLabel}}.rtmx.localhost"}, Target: "svc/rtmx-api"},
		Migrations:           MigrationsConfig{AuditVersion: 1, SettingsVersion: 2},
		Actor:                "tenantctl",
	}
	data, err := devConfigYAML(cfg)
	if err != nil {
		return err
	}
	old, err := os.ReadFile(o.configFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.WriteFile(o.configFile, data, 0o600); err != nil {
			return err
		}
		say("wrote %s", o.configFile)
	case err != nil:
		return err
	case !bytes.Equal(old, data):
		return fmt.Errorf("%w: %s exists and differs from what init would write: remove it, or run init --dev --reset", errConflict, o.configFile)
	default:
		say("%s unchanged", o.configFile)
	}

	// Open the deployment as every command will (which reads the file
	// back strictly) and provision the platform's own keysets.
	written := &Config{}
	if err := readConfigFile(o.configFile, written); err != nil {
		return err
	}
	a.cfg = written
	p, err := a.open(ctx)
	if err != nil {
		return err
	}
	defer p.Close()
	for _, id := range []string{written.PlatformAuditKeyID, written.Backup.KeyID} {
		if err := p.prov.Provision(ctx, tenant.MustParseID(id), keys.ProvisionOptions{}); err != nil {
			return fmt.Errorf("provision the %s keyset: %w", id, err)
		}
	}
	if _, err := p.audit.Verify(ctx); err != nil {
		return err
	}
	say("keysets %s (platform audit trail) and %s (backups) ready, wrapped by %s", written.PlatformAuditKeyID, written.Backup.KeyID, keys.URI(masterKey))
	say("\nready. Try:\n  tenantctl provision -f examples/tenant.yaml\n  tenantctl show abc123\n  tenantctl deprovision abc123")
	return nil
}

// devConfigYAML writes cfg as the YAML file, with a header.
func devConfigYAML(cfg Config) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("# tenantctl configuration written by `tenantctl init --dev`: a local\n# development deployment (a master key in a file, the superuser as admin).\n# Not for production.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(devFile(cfg)); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

// devFile is the subset of Config that init writes (empty sections left out).
func devFile(c Config) map[string]any {
	return map[string]any{
		"admin_url": c.AdminURL, "platform_url": c.PlatformURL, "platform_password_file": c.PlatformPasswordFile,
		"login_secret_file": c.LoginSecretFile, "role_prefix": c.RolePrefix, "platform_role": c.PlatformRole,
		"master_key": c.MasterKey, "tenant_key_dir": c.TenantKeyDir, "objects_bucket": c.ObjectsBucket,
		"backup":                map[string]any{"bucket": c.Backup.Bucket, "role": c.Backup.Role, "key_id": c.Backup.KeyID},
		"platform_audit_key_id": c.PlatformAuditKeyID,
		"routes":                map[string]any{"hosts": c.Routes.Hosts, "target": c.Routes.Target},
		"migrations":            map[string]any{"audit_version": c.Migrations.AuditVersion, "settings_version": c.Migrations.SettingsVersion},
		"actor":                 c.Actor,
	}
}

// ensureFile returns the content of a secret file, creating it (0600)
// with make() if it does not exist.
func ensureFile(path string, make func() string) (string, error) {
	s, err := readSecretFile(path)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", configErrorf("%w", err)
	}
	v := make()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(v + "\n"); err != nil {
		f.Close()
		return "", err
	}
	return v, f.Close()
}

// devCleanup drops the database and every role and database named with
// the prefix.
func devCleanup(ctx context.Context, conn *pgx.Conn, o devOptions) error {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname = $1 OR starts_with(datname, $2)`, o.database, o.rolePrefix)
	if err != nil {
		return err
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, d := range dbs {
		if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS `+quoteIdent(d)+` WITH (FORCE)`); err != nil {
			return fmt.Errorf("reset: %w", err)
		}
	}
	rows, err = conn.Query(ctx, `SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY rolname`, o.rolePrefix)
	if err != nil {
		return err
	}
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(roles) == 0 {
		return err
	}
	list := make([]string, len(roles))
	for i, r := range roles {
		list[i] = quoteIdent(r)
	}
	if _, err := conn.Exec(ctx, `DROP OWNED BY `+strings.Join(list, ", ")); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	if _, err := conn.Exec(ctx, `DROP ROLE `+strings.Join(list, ", ")); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	return nil
}

// withDatabase returns the connection string s naming database db.
func withDatabase(s, db string) string {
	if u, err := url.Parse(s); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + db
		u.RawPath = ""
		return u.String()
	}
	return s + " dbname=" + db
}

// platformURL is the platform role's connection string: the server's
// host, over TCP (a password login; a local socket may allow peer only).
func platformURL(server *pgx.ConnConfig, role, db string) string {
	host := server.Host
	if host == "" || strings.HasPrefix(host, "/") {
		host = "127.0.0.1"
	}
	u := url.URL{Scheme: "postgres", User: url.User(role), Host: net.JoinHostPort(host, strconv.Itoa(int(server.Port))), Path: "/" + db}
	return u.String()
}

func hexOnly(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && s != ""
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return b
}

// connTarget names the server, the user and the database of a
// connection, for messages. It holds no password, whichever form the
// connection string gave one in (URL user info, ?password=, password=).
func connTarget(c *pgconn.Config) string {
	return fmt.Sprintf("user=%s host=%s port=%d database=%s", c.User, c.Host, c.Port, c.Database)
}
