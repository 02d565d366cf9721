package settings_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// secret is the login secret of every test store.
var secret = store.LoginSecret{Version: 1, Key: []byte("tenancy settings test login secret, 32 bytes or more")}

// govCluster names the dedicated cluster of government tenants.
const govCluster = "gov"

var (
	platformOnce sync.Once
	platformURL  string
	tenantSeq    atomic.Int64
)

// env is a world of tenants of one tier: an Admin and a DB over the
// package's database with the settings migration, a platform master key,
// keys.Managers for provisioning and requests, and a Settings.
type env struct {
	tier   tenant.Tier
	d      *pgtest.Database
	second *pgtest.Database
	admin  *store.Admin
	db     *store.DB
	prov   *keys.Manager
	km     *keys.Manager
	s      *settings.Settings
}

// newEnv makes an env whose tenants are of tier, on the package's
// database with the settings migration (version 1).
func newEnv(t testing.TB, tier tenant.Tier) *env {
	t.Helper()
	return newEnvOn(t, pgtest.DB(t), tier, nil)
}

// newEnvOn makes an env on database d (nil: the package's) with the
// migrations of migrations (nil: the settings migration at version 1),
// after adjust has changed the AdminConfig (nil: nothing).
func newEnvOn(t testing.TB, d *pgtest.Database, tier tenant.Tier, adjust func(*store.AdminConfig)) *env {
	t.Helper()
	platformOnce.Do(func() { platformURL = pgtest.DB(t).CreateRole(t, "platform", "") })
	pcfg, err := pgx.ParseConfig(platformURL)
	require.NoError(t, err)
	e := &env{tier: tier, d: d}
	acfg, err := store.ParseAdminConfig(d.AdminURL())
	require.NoError(t, err)
	acfg.RolePrefix, acfg.PlatformRole = d.Prefix(), pcfg.User
	acfg.LoginSecrets = []store.LoginSecret{secret}
	acfg.Migrations, err = settings.WithMigration(nil, 1)
	require.NoError(t, err)
	if adjust != nil {
		adjust(acfg)
	}
	cfg, err := store.ParseConfig(d.URL(pcfg.User, pcfg.Password), secret)
	require.NoError(t, err)
	if tier == tenant.TierGovernment {
		e.second = pgtest.SecondCluster(t)
		require.NoError(t, acfg.AddCluster(govCluster, e.second.AdminURL()))
		require.NoError(t, cfg.AddCluster(govCluster, e.second.AdminURL()))
	}
	e.admin, err = store.OpenAdmin(t.Context(), acfg)
	require.NoError(t, err)
	t.Cleanup(e.admin.Close)
	if tier == tenant.TierGovernment {
		require.NoError(t, e.admin.RegisterCluster(t.Context(), govCluster))
	}
	e.db, err = store.Open(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(e.db.Close)
	kekPath := filepath.Join(t.TempDir(), "platform.key")
	e.prov = newManager(t, kekPath, e.admin.Keysets())
	e.km = newManager(t, kekPath, e.db.Keysets())
	e.s, err = settings.New(e.db, e.km)
	require.NoError(t, err)
	return e
}

// newManager returns a keys.Manager over ks with the local master key in
// file kekPath (created on first use).
func newManager(t testing.TB, kekPath string, ks keys.Store) *keys.Manager {
	t.Helper()
	local, err := localkms.NewClient(localkms.Scheme)
	require.NoError(t, err)
	uri, err := localkms.KeyURI(kekPath)
	require.NoError(t, err)
	kc := keys.DefaultConfig()
	kc.Store, kc.KMS, kc.PlatformKEK = ks, []registry.KMSClient{local}, keys.URI(uri)
	m, err := keys.New(kc)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// newTenant creates and provisions a tenant of the env's tier whose ID
// starts with name, and returns it and a context carrying it.
func (e *env) newTenant(t testing.TB, name string) (tenant.ID, context.Context) {
	t.Helper()
	id := tenant.MustParseID(fmt.Sprintf("%s%d", name, tenantSeq.Add(1)))
	var opts []store.CreateOption
	if e.tier == tenant.TierGovernment {
		opts = append(opts, store.OnCluster(govCluster))
	}
	require.NoError(t, e.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Tenant " + name, Tier: e.tier}, opts...))
	require.NoError(t, e.prov.Provision(t.Context(), id, keys.ProvisionOptions{}))
	return id, tenant.NewContext(t.Context(), id)
}

// superuser returns a superuser connection to the database that holds
// tenant id's settings, and the qualified name of its settings table.
func (e *env) superuser(t testing.TB, id tenant.ID) (*pgx.Conn, string) {
	t.Helper()
	d := e.d
	if e.tier == tenant.TierGovernment {
		d = e.second
	}
	cfg, err := pgx.ParseConfig(d.AdminURL())
	require.NoError(t, err)
	if e.tier != tenant.TierStandard {
		cfg.Database = e.d.Prefix() + id.SchemaName()
	}
	c, err := pgx.ConnectConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(context.Background()) })
	return c, pgx.Identifier{id.SchemaName(), "tenant_settings"}.Sanitize()
}

// rows returns the number of settings rows of tenant id, read as
// superuser.
func (e *env) rows(t testing.TB, id tenant.ID) int64 {
	t.Helper()
	c, tbl := e.superuser(t, id)
	var n int64
	require.NoError(t, c.QueryRow(t.Context(), `SELECT count(*) FROM `+tbl).Scan(&n))
	return n
}

func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// problemPaths returns the paths of the problems of err, an *Error.
func problemPaths(t testing.TB, err error) []string {
	t.Helper()
	var se *settings.Error
	require.ErrorAs(t, err, &se)
	out := make([]string, len(se.Problems))
	for i, p := range se.Problems {
		out[i] = p.Path
	}
	return out
}

// sampleIntegrations returns integrations with a Jira token and a
// GitHub token, made of tok.
func sampleIntegrations(tok string) settings.Integrations {
	return settings.Integrations{
		Jira: &settings.Jira{BaseURL: "https://acme.atlassian.net", Project: "RTM", User: "bot@acme.example",
			APIToken: settings.NewSecret("jira-" + tok)},
		GitHub: &settings.GitHub{Owner: "acme", Repo: "requirements", Token: settings.NewSecret("ghp_" + tok)},
	}
}

func sampleUsers() settings.Users {
	return settings.Users{Users: []settings.User{
		{Email: "alice@acme.example", Name: "Alice", Roles: []string{"owner"}},
		{Email: "bob@acme.example", Roles: []string{"viewer"}},
	}}
}

// printed returns v as fmt's verbs and slog's handlers print it.
func printed(t testing.TB, v any) []string {
	t.Helper()
	var js, txt bytes.Buffer
	slog.New(slog.NewJSONHandler(&js, nil)).Info("x", "v", v)
	slog.New(slog.NewTextHandler(&txt, nil)).Info("x", "v", v)
	return []string{fmt.Sprintf("%v", v), fmt.Sprintf("%+v", v), fmt.Sprintf("%#v", v), fmt.Sprintf("%s", v), js.String(), txt.String()}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
