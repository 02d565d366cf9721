package store

import (
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/time/rate"
)

// Mode is how tenant-scoped work reaches PostgreSQL. It is chosen once per
// database, by the [Admin] that sets up its control plane, and every [DB]
// of that database uses it.
type Mode string

const (
	// ModeTenantLogin, the default: every tenant has a LOGIN role of its
	// own, and tenant-scoped work runs on connections logged in as it, from
	// a pool per tenant. Row-level security derives the tenant from
	// session_user, which SQL cannot change, so neither a bug nor injected
	// SQL can reach another tenant. No setup statement runs per call.
	ModeTenantLogin Mode = "tenant-login"
	// ModeSharedPool: one login role for the work of all tenants, and a
	// transaction-local setting naming the tenant (SET LOCAL, its own
	// protocol message). For deployments that cannot afford a connection
	// per active tenant. Isolation by convention: against bugs, and
	// against the injection of a value into one statement, not against
	// SQL the application runs on a tenant's behalf. See the package
	// documentation.
	ModeSharedPool Mode = "shared-pool"
)

func (m Mode) valid() bool { return m == ModeTenantLogin || m == ModeSharedPool }

// AdminConfig configures an [Admin]. Make it with [ParseAdminConfig] and
// then adjust it; a zero AdminConfig is not usable, and zero fields mean
// the defaults ParseAdminConfig fills in only where said.
type AdminConfig struct {
	// Pool is the admin role's pool: DDL, provisioning, control-plane
	// writes. The role needs CREATEROLE (and CREATEDB, for tenants with a
	// database of their own) and must own (or be superuser over) the
	// database; it is never used for tenant-scoped work.
	Pool *pgxpool.Config
	// Mode is the database's connection mode, fixed when its control
	// plane is first set up. ParseAdminConfig sets ModeTenantLogin.
	Mode Mode
	// PlatformRole is the login role every [DB] of this database connects
	// as for control-plane reads (tenant directory, logins, wrapped
	// keysets). The Admin grants it exactly that, and CONNECT. It must
	// exist; it must not be the admin role. When it changes, the Admin
	// revokes those grants from the previous one.
	PlatformRole string
	// RolePrefix is prepended to the cluster-wide role names store
	// creates, so that several deployments can share a PostgreSQL
	// cluster. It must match [a-z][a-z0-9_]* and be at most 16 bytes;
	// "" is allowed. Fixed per database once chosen.
	RolePrefix string
	// LoginSecrets derive the tenant login passwords and role names; the
	// newest version is used for new logins and by RotateLogins.
	LoginSecrets []LoginSecret
	// Tables are the tenant tables created in every new tenant's schema.
	Tables []Table
	// Migrations are the tenant migrations: SQL files named NNNN_name.sql
	// (version, name) at the root of the FS, and nothing else there. Every
	// new tenant gets all of them ([Admin.CreateTenant]);
	// [Admin.Migrate] applies the ones a tenant lacks. OpenAdmin records
	// them in the control plane and fails with [ErrMigrationChanged] if a
	// recorded one changed or is missing, so every Admin of a database
	// carries every migration recorded there, unchanged (nil means none).
	// It fails with [ErrInvalidConfig] on a file that controls its
	// transaction (COMMIT, ROLLBACK, SAVEPOINT, ...: see [Admin.Migrate]).
	Migrations fs.FS
	// Clusters are the admin connections of the dedicated clusters of
	// government tenants, by the name they are registered under
	// ([Admin.RegisterCluster]). Add them with AddCluster.
	Clusters map[string]*pgxpool.Config
	// ConnLimit is the connection quota of a new tenant: the CONNECTION
	// LIMIT of its login role (enforced by PostgreSQL; the tenant cannot
	// raise it) and the size of its pool in every DB. ParseAdminConfig
	// sets DefaultConnLimit.
	ConnLimit int
	// SCRAMIterations is the PBKDF2 iteration count of the verifiers.
	// ParseAdminConfig sets DefaultSCRAMIterations.
	SCRAMIterations int
	// Logger receives store's logs; nil discards them. Logs carry tenant
	// IDs and role names, never row data or secrets.
	Logger *slog.Logger
}

// DefaultConnLimit is the connection quota of a new tenant.
const DefaultConnLimit = 4

// ParseAdminConfig builds an AdminConfig from the admin role's connection
// string (URL or keyword/value form, as pgxpool accepts).
func ParseAdminConfig(adminConnString string) (*AdminConfig, error) {
	p, err := pgxpool.ParseConfig(adminConnString)
	if err != nil {
		return nil, fmt.Errorf("store: %w: admin connection string: %w", ErrInvalidConfig, err)
	}
	p.MaxConns = 4
	return &AdminConfig{Pool: p, Mode: ModeTenantLogin, ConnLimit: DefaultConnLimit, SCRAMIterations: DefaultSCRAMIterations}, nil
}

var rolePrefixRE = regexp.MustCompile(`^(?:[a-z][a-z0-9_]*)?$`)

func validRolePrefix(p string) error {
	if len(p) > 16 || !rolePrefixRE.MatchString(p) {
		return fmt.Errorf("store: %w: RolePrefix %q must match [a-z][a-z0-9_]* and be at most 16 bytes", ErrInvalidConfig, p)
	}
	return nil
}

// Config configures a [DB], the request path. Make it with [ParseConfig]
// and then adjust it; a zero Config is not usable.
type Config struct {
	// Platform is the pool of the platform role (AdminConfig.PlatformRole):
	// control-plane reads only. Tenant logins connect with the same host,
	// port, database, TLS and runtime settings, as their own role with
	// their derived password. Use sslmode=verify-full in production.
	Platform *pgxpool.Config
	// LoginSecrets are the secrets the Admin derives logins from: every
	// version the directory still records.
	LoginSecrets []LoginSecret
	// MaxConns caps the connections open at once across every tenant's
	// pool (PostgreSQL's max_connections is per server, pgxpool's cap per
	// pool). When it is reached, a tenant that needs a connection waits
	// its turn (first come, first served) while idle connections of other
	// tenants that have been open at least MinResidency are closed for it.
	// ParseConfig sets 4 × the number of CPUs, at least 8.
	MaxConns int
	// MinResidency is how long a tenant keeps a connection before it may
	// be closed for another tenant. ParseConfig sets 1 s.
	MinResidency time.Duration
	// ConnectRate limits new connections per second across all tenants
	// (ConnectBurst at once); 0 means no limit. ParseConfig sets 200/s,
	// burst 20.
	ConnectRate  rate.Limit
	ConnectBurst int
	// IdleTimeout closes a connection idle this long, and a tenant's pool
	// when its last connection closes. ParseConfig sets 1 minute.
	IdleTimeout time.Duration
	// Clusters are the dedicated clusters of government tenants, by
	// registered name: host, port, TLS and runtime settings (each tenant
	// login brings its own user, password and database). Add them with
	// AddCluster.
	Clusters map[string]*pgxpool.Config
	// Logger receives store's logs; nil discards them.
	Logger *slog.Logger
	// Telemetry, if set with a provider, traces the statements of
	// tenant-scoped work and measures each tenant's connection waits
	// (see [Telemetry]); nil installs nothing.
	Telemetry *Telemetry
}

// ParseConfig builds a Config from the platform role's connection string.
func ParseConfig(platformConnString string, secrets ...LoginSecret) (*Config, error) {
	p, err := pgxpool.ParseConfig(platformConnString)
	if err != nil {
		return nil, fmt.Errorf("store: %w: platform connection string: %w", ErrInvalidConfig, err)
	}
	p.MaxConns = 4 // directory reads, and one lookup per new tenant connection
	return &Config{
		Platform:     p,
		LoginSecrets: secrets,
		MaxConns:     max(8, 4*int(defaultCPUs())),
		MinResidency: time.Second,
		ConnectRate:  200,
		ConnectBurst: 20,
		IdleTimeout:  time.Minute,
	}, nil
}
