package audit_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// secret is the login secret of every test store.
var secret = store.LoginSecret{Version: 1, Key: []byte("tenancy audit test login secret, 32 bytes or more")}

// migrationVersion is the version the tests give the audit migration.
const migrationVersion = 1

// govCluster is the name of the dedicated cluster of government tenants:
// pgtest.SecondCluster.
const govCluster = "gov"

// tiers are the placements every isolation test runs on.
var tiers = []tenant.Tier{tenant.TierStandard, tenant.TierEnterprise, tenant.TierGovernment}

var (
	platformOnce sync.Once
	platformURL  string
	tenantSeq    atomic.Int64
)

// env is one test's world: an Admin and a DB over the package's database
// (tenant logins), the audit migration and control-plane tables, a
// platform master key in a key file of the test's own, a keys.Manager for
// provisioning and one for the request path, and a Log.
type env struct {
	tier        tenant.Tier
	d           *pgtest.Database
	second      *pgtest.Database // the government tier's cluster, if used
	admin       *store.Admin
	db          *store.DB
	prov        *keys.Manager
	km          *keys.Manager
	log         *audit.Log
	kekPath     string
	platformURL string
}

type envOption func(*store.AdminConfig, *store.Config, *audit.Config)

var (
	sharedOnce sync.Once
	sharedDB   *pgtest.Database
)

// sharedPool makes the env's database one in store.ModeSharedPool (the
// mode is fixed per database: this is a database of its own).
func sharedPool(acfg *store.AdminConfig, _ *store.Config, _ *audit.Config) {
	acfg.Mode = store.ModeSharedPool
}

// newEnv makes an env whose tenants are of tier.
func newEnv(t testing.TB, tier tenant.Tier, opts ...envOption) *env {
	t.Helper()
	d := pgtest.DB(t)
	probe, _ := store.ParseAdminConfig(d.AdminURL())
	for _, o := range opts {
		o(probe, &store.Config{}, &audit.Config{})
	}
	if probe.Mode == store.ModeSharedPool {
		sharedOnce.Do(func() { sharedDB = d.NewDatabase(t) })
		d = sharedDB
	}
	platformOnce.Do(func() { platformURL = d.CreateRole(t, "platform", "") })
	pcfg, err := pgx.ParseConfig(platformURL)
	require.NoError(t, err)
	e := &env{tier: tier, d: d, platformURL: d.URL(pcfg.User, pcfg.Password)}

	acfg, err := store.ParseAdminConfig(d.AdminURL())
	require.NoError(t, err)
	acfg.RolePrefix, acfg.PlatformRole = d.Prefix(), pcfg.User
	acfg.LoginSecrets = []store.LoginSecret{secret}
	acfg.ConnLimit = 20
	acfg.Migrations, err = audit.WithMigration(nil, migrationVersion)
	require.NoError(t, err)
	cfg, err := store.ParseConfig(e.platformURL, secret)
	require.NoError(t, err)
	if tier == tenant.TierGovernment {
		e.second = pgtest.SecondCluster(t)
		require.NoError(t, acfg.AddCluster(govCluster, e.second.AdminURL()))
		require.NoError(t, cfg.AddCluster(govCluster, e.second.AdminURL()))
	}
	lcfg := audit.DefaultConfig()
	for _, o := range opts {
		o(acfg, cfg, &lcfg)
	}
	e.admin, err = store.OpenAdmin(t.Context(), acfg)
	require.NoError(t, err)
	t.Cleanup(e.admin.Close)
	if tier == tenant.TierGovernment {
		require.NoError(t, e.admin.RegisterCluster(t.Context(), govCluster))
	}
	require.NoError(t, audit.Install(t.Context(), e.admin))
	e.db, err = store.Open(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(e.db.Close)

	e.kekPath = filepath.Join(t.TempDir(), "platform.key")
	e.prov = newManager(t, e.kekPath, e.admin.Keysets())
	e.km = newManager(t, e.kekPath, e.db.Keysets())
	lcfg.DB, lcfg.Keys = e.db, e.km
	e.log, err = audit.New(lcfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, e.log.Close(context.Background())) })
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

// superuser returns a superuser connection to the database that holds the
// log of tenant id, and the qualified name of its audit table.
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
	return c, pgx.Identifier{id.SchemaName(), "audit_log"}.Sanitize()
}

// controlPlane returns a superuser connection to the control-plane
// database.
func (e *env) controlPlane(t testing.TB) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(t.Context(), e.d.AdminURL())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// events returns n events numbered from 1, with details naming i.
func events(n int, who string) []audit.Event {
	evs := make([]audit.Event, n)
	for i := range evs {
		evs[i] = audit.Event{
			Actor: who, Action: "requirement.update", Resource: fmt.Sprintf("REQ-%d", i+1), Outcome: audit.OutcomeSuccess,
			Details: map[string]any{"i": i + 1, "who": who}, UserAgent: "audit-test/1",
		}
	}
	return evs
}

// appendN appends n events to the log of the tenant of ctx in batches of
// batch.
func (e *env) appendN(t testing.TB, ctx context.Context, n, batch int) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	evs := events(n, "alice")
	for len(evs) > 0 {
		k := min(batch, len(evs))
		got, err := e.log.Append(ctx, evs[:k]...)
		require.NoError(t, err)
		out = append(out, got...)
		evs = evs[k:]
	}
	return out
}

// count returns the number of rows of the tenant's log, read as superuser.
func (e *env) count(t testing.TB, id tenant.ID) int64 {
	t.Helper()
	c, table := e.superuser(t, id)
	var n int64
	require.NoError(t, c.QueryRow(t.Context(), `SELECT count(*) FROM `+table).Scan(&n))
	return n
}

// waitFor polls cond for up to d.
func waitFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
