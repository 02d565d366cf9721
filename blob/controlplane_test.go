package blob_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// The tests of quotas and tenant buckets account in a real control plane
// (pgtest's PostgreSQL); the others need none.
func TestMain(m *testing.M) { pgtest.Main(m) }

// loginSecret is the login secret of the tests' store.
var loginSecret = store.LoginSecret{Version: 1, Key: []byte("tenancy blob test login secret, 32 bytes or more")}

var (
	platformOnce sync.Once
	platformURL  string
)

// controlPlane is an Admin and a DB (on the platform role, granted the
// blob tables) of the package's test database.
type controlPlane struct {
	admin       *store.Admin
	db          *store.DB
	platformURL string
}

// newControlPlane opens the control plane of the package's test database.
func newControlPlane(t testing.TB) *controlPlane {
	t.Helper()
	d := pgtest.DB(t)
	platformOnce.Do(func() { platformURL = d.CreateRole(t, "platform", "") })
	pcfg, err := pgx.ParseConfig(platformURL)
	if err != nil {
		t.Fatal(err)
	}
	acfg, err := store.ParseAdminConfig(d.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	acfg.RolePrefix, acfg.LoginSecrets, acfg.PlatformRole = d.Prefix(), []store.LoginSecret{loginSecret}, pcfg.User
	admin, err := store.OpenAdmin(context.Background(), acfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	cfg, err := store.ParseConfig(platformURL, loginSecret)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return &controlPlane{admin: admin, db: db, platformURL: platformURL}
}

// tenant creates a tenant of tier in the directory, provisions its keys
// in km, and returns it and a context carrying it.
func (cp *controlPlane) tenant(t testing.TB, km *keys.Manager, name string, tier tenant.Tier) (tenant.ID, context.Context) {
	t.Helper()
	id := newID(name)
	ctx := context.Background()
	if err := cp.admin.CreateTenant(ctx, tenant.Info{ID: id, Name: "Tenant " + name, Tier: tier}); err != nil {
		t.Fatal(err)
	}
	if km != nil {
		if err := km.Provision(ctx, id, keys.ProvisionOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return id, tenant.NewContext(ctx, id)
}

// quotas returns the default quotas over the DB's account, with a lease
// of lease.
func (cp *controlPlane) quotas(lease time.Duration) blob.Quotas {
	q := blob.DefaultQuotas(cp.db.Blobs())
	q.Lease = lease
	return q
}

// setQuota gives tenant id limits of its own.
func (cp *controlPlane) setQuota(t testing.TB, id tenant.ID, l store.BlobLimits) {
	t.Helper()
	if err := cp.admin.SetBlobQuota(context.Background(), id, l); err != nil {
		t.Fatal(err)
	}
}

// usage returns the account of the tenant of ctx.
func usage(t testing.TB, b *blob.Buckets, ctx context.Context) store.BlobAccount {
	t.Helper()
	a, err := b.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// managerOn returns a keys.Manager over ks with the master key in the
// local key file kekPath.
func managerOn(t testing.TB, ks keys.Store, kekPath string) *keys.Manager {
	t.Helper()
	kek, err := localkms.KeyURI(kekPath)
	if err != nil {
		t.Fatal(err)
	}
	local, err := localkms.NewClient(localkms.Scheme)
	if err != nil {
		t.Fatal(err)
	}
	cfg := keys.DefaultConfig()
	cfg.Store, cfg.KMS, cfg.PlatformKEK = ks, []registry.KMSClient{local}, keys.URI(kek)
	m, err := keys.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}
