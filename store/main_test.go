package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// requirements is RTMX's requirement table (columns from RTMX's database.csv).
var requirements = store.Table{
	Name: "requirements",
	Columns: `req_id text PRIMARY KEY,
		category text NOT NULL,
		subcategory text NOT NULL DEFAULT '',
		requirement_text text NOT NULL,
		status text NOT NULL DEFAULT 'MISSING',
		priority text NOT NULL DEFAULT 'MEDIUM',
		phase int NOT NULL DEFAULT 1,
		custom jsonb NOT NULL DEFAULT '{}'`,
}

// secret is the login secret of every test store.
var secret = store.LoginSecret{Version: 1, Key: []byte("tenancy test login secret, 32 bytes or more")}

// modes are the connection modes every isolation test runs in.
var modes = []store.Mode{store.ModeTenantLogin, store.ModeSharedPool}

var (
	platformOnce sync.Once
	platformURL  string
	dbsMu        sync.Mutex
	dbs          = map[store.Mode]*pgtest.Database{}
)

// platform returns the connection string of the package's platform role
// (no privileges of its own) on database d.
func platform(t testing.TB, d *pgtest.Database) string {
	t.Helper()
	platformOnce.Do(func() { platformURL = pgtest.DB(t).CreateRole(t, "platform", "") })
	cfg, err := pgx.ParseConfig(platformURL)
	require.NoError(t, err)
	return d.URL(cfg.User, cfg.Password)
}

// databaseFor returns the package's database for mode m: the mode is fixed
// per database, so each has its own.
func databaseFor(t testing.TB, m store.Mode) *pgtest.Database {
	t.Helper()
	dbsMu.Lock()
	defer dbsMu.Unlock()
	if d, ok := dbs[m]; ok {
		return d
	}
	d := pgtest.DB(t)
	if len(dbs) > 0 {
		d = d.NewDatabase(t)
	}
	dbs[m] = d
	return d
}

// env is an Admin and a DB over one database.
type env struct {
	mode  store.Mode
	tier  tenant.Tier // of the tenants newTenant makes; standard if ""
	d     *pgtest.Database
	admin *store.Admin
	db    *store.DB
}

// govCluster is the name of the dedicated cluster of government tenants
// in tests: pgtest.SecondCluster.
const govCluster = "gov"

// logins reports whether the env's tenants have login roles of their
// own: in ModeTenantLogin, and every tenant with a database of its own.
func (e *env) logins() bool { return e.mode == store.ModeTenantLogin || e.ownDB() }

// ownDB reports whether the env's tenants have a database of their own.
func (e *env) ownDB() bool { return e.tier == tenant.TierEnterprise || e.tier == tenant.TierGovernment }

// foreignSchemaCode is the SQLSTATE of naming another tenant's schema in
// a statement, for tenants with logins: no privilege on it (42501) in the
// shared database, no such relation (42P01) in a database of one's own.
func (e *env) foreignSchemaCode() string {
	if e.ownDB() {
		return "42P01"
	}
	return "42501"
}

// placementCase is one connection mode and tier of the isolation tests.
type placementCase struct {
	mode store.Mode
	tier tenant.Tier
}

// placements are the modes and tiers every isolation test runs on:
// standard tenants in both modes, enterprise tenants (a database of their
// own) in both (they have logins of their own either way), and
// government tenants (a database of their own on a second cluster).
var placements = []placementCase{
	{store.ModeTenantLogin, tenant.TierStandard},
	{store.ModeSharedPool, tenant.TierStandard},
	{store.ModeTenantLogin, tenant.TierEnterprise},
	{store.ModeSharedPool, tenant.TierEnterprise},
	{store.ModeTenantLogin, tenant.TierGovernment},
}

// forPlacements runs fn as a subtest per placement case, on a new env
// adjusted by adjust whose newTenant makes tenants of that tier.
func forPlacements(t *testing.T, fn func(t *testing.T, e *env), adjust ...func(*store.AdminConfig, *store.Config)) {
	for _, pc := range placements {
		t.Run(string(pc.mode)+"/"+string(pc.tier), func(t *testing.T) {
			fn(t, newPlacedEnv(t, pc, adjust...))
		})
	}
}

// newPlacedEnv is newEnv for tenants of pc's tier: for the government
// tier with the second cluster registered as govCluster.
func newPlacedEnv(t testing.TB, pc placementCase, adjust ...func(*store.AdminConfig, *store.Config)) *env {
	t.Helper()
	if pc.tier == tenant.TierGovernment {
		second := pgtest.SecondCluster(t)
		adjust = append([]func(*store.AdminConfig, *store.Config){func(a *store.AdminConfig, c *store.Config) {
			require.NoError(t, a.AddCluster(govCluster, second.AdminURL()))
			require.NoError(t, c.AddCluster(govCluster, second.AdminURL()))
		}}, adjust...)
	}
	e := newEnv(t, pc.mode, adjust...)
	e.tier = pc.tier
	if pc.tier == tenant.TierGovernment {
		require.NoError(t, e.admin.RegisterCluster(t.Context(), govCluster))
	}
	return e
}

// newEnv opens an Admin and a DB of mode m over the package's database for
// m, with the requirements table; adjust changes the configs first.
func newEnv(t testing.TB, m store.Mode, adjust ...func(*store.AdminConfig, *store.Config)) *env {
	t.Helper()
	return newEnvOn(t, databaseFor(t, m), m, adjust...)
}

// newEnvOn is newEnv on database d, with the package's platform role.
func newEnvOn(t testing.TB, d *pgtest.Database, m store.Mode, adjust ...func(*store.AdminConfig, *store.Config)) *env {
	t.Helper()
	return envWith(t, d, platform(t, d), m, adjust...)
}

// adminConfig is the AdminConfig of the tests' Admins of mode m on d: the
// package's role prefix and login secret, the requirements table, and the
// platform role of platformURL.
func adminConfig(t testing.TB, d *pgtest.Database, platformURL string, m store.Mode) *store.AdminConfig {
	t.Helper()
	acfg, err := store.ParseAdminConfig(d.AdminURL())
	require.NoError(t, err)
	acfg.Mode, acfg.RolePrefix = m, d.Prefix()
	acfg.LoginSecrets = []store.LoginSecret{secret}
	acfg.Tables = []store.Table{requirements}
	acfg.PlatformRole = roleOf(t, platformURL)
	return acfg
}

// roleOf is the user of connection string url.
func roleOf(t testing.TB, url string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	return cfg.User
}

// envWith opens an Admin of mode m and a DB on d, whose platform role
// connects with platformURL.
func envWith(t testing.TB, d *pgtest.Database, platformURL string, m store.Mode, adjust ...func(*store.AdminConfig, *store.Config)) *env {
	t.Helper()
	acfg := adminConfig(t, d, platformURL, m)
	cfg, err := store.ParseConfig(platformURL, secret)
	require.NoError(t, err)
	for _, a := range adjust {
		a(acfg, cfg)
	}
	admin, err := store.OpenAdmin(t.Context(), acfg)
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	db, err := store.Open(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	return &env{mode: m, d: d, admin: admin, db: db}
}

var tenantSeq atomic.Int64

// newTenant creates a tenant of the env's tier (standard by default) with
// a unique ID starting with name, and returns its ID and a context
// carrying it.
func (e *env) newTenant(t testing.TB, name string) (tenant.ID, context.Context) {
	t.Helper()
	id := tenant.MustParseID(fmt.Sprintf("%s%d", name, tenantSeq.Add(1)))
	tier := e.tier
	if tier == "" {
		tier = tenant.TierStandard
	}
	var opts []store.CreateOption
	if tier == tenant.TierGovernment {
		opts = append(opts, store.OnCluster(govCluster))
	}
	require.NoError(t, e.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Tenant " + name, Tier: tier}, opts...))
	return id, tenant.NewContext(t.Context(), id)
}

// insertReq writes one requirement row as the tenant of ctx.
func (e *env) insertReq(t testing.TB, ctx context.Context, reqID, text string) {
	t.Helper()
	_, err := e.db.Exec(ctx, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ($1, 'DEPLOY', $2)`, reqID, text)
	require.NoError(t, err)
}

// forModes runs fn as a subtest per mode, on a new env adjusted by adjust.
func forModes(t *testing.T, fn func(t *testing.T, e *env), adjust ...func(*store.AdminConfig, *store.Config)) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) { fn(t, newEnv(t, m, adjust...)) })
	}
}

// oneConn makes a DB hold one connection in all, closed for another
// tenant at once: every call reuses the connection of the last, in the
// shared-pool mode, and evicts it, in the tenant-login mode.
func oneConn(_ *store.AdminConfig, c *store.Config) { c.MaxConns, c.MinResidency = 1, 0 }

func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func reqIDs(t testing.TB, db *store.DB, ctx context.Context, sql string, args ...any) ([]string, error) {
	t.Helper()
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
