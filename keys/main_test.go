package keys_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/testing/fakekms"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/internal/softhsmtest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestMain(m *testing.M) { pgtest.Main(m, softhsmtest.Cleanup) }

var (
	schemaOnce sync.Once
	schemaErr  error
	idSeq      atomic.Int64
)

// env is one test's world: the package's PostgreSQL database with the
// keyset tables, and a platform master key in a local key file of the
// test's own (so that re-wrapping it touches only the test's tenants).
type env struct {
	admin        *pgxpool.Pool
	store        *store.Keysets
	dir          string
	local        *localkms.Client
	platform     keys.URI // local:// URI of the platform KEK
	platformPath string
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newEnv(t testing.TB) *env {
	t.Helper()
	d := pgtest.DB(t)
	admin, err := pgxpool.New(ctxT(t), d.AdminURL())
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	schemaOnce.Do(func() { schemaErr = store.EnsureKeysetsSchema(ctxT(t), admin) })
	require.NoError(t, schemaErr)
	e := &env{admin: admin, store: store.NewKeysets(admin), dir: t.TempDir()}
	e.local, err = localkms.NewClient(localkms.Scheme)
	require.NoError(t, err)
	e.platform, e.platformPath = e.keyURI(t, "platform.key")
	return e
}

// keyURI returns the URI and path of a local key file in the test's
// directory (created on first use).
func (e *env) keyURI(t testing.TB, name string) (uri keys.URI, path string) {
	t.Helper()
	path = filepath.Join(e.dir, "kek", name)
	u, err := localkms.KeyURI(path)
	require.NoError(t, err)
	return keys.URI(u), path
}

// manager returns a Manager over the env's store with the local KMS client
// and the platform KEK, adjusted by the given functions.
func (e *env) manager(t testing.TB, adjust ...func(*keys.Config)) *keys.Manager {
	t.Helper()
	cfg := keys.DefaultConfig()
	cfg.Store = e.store
	cfg.KMS = []registry.KMSClient{e.local}
	cfg.PlatformKEK = e.platform
	for _, a := range adjust {
		a(&cfg)
	}
	m, err := keys.New(cfg)
	require.NoError(t, err)
	return m
}

func withKMS(c ...registry.KMSClient) func(*keys.Config) {
	return func(cfg *keys.Config) { cfg.KMS = append(cfg.KMS, c...) }
}

func withCustomerKMS(c ...registry.KMSClient) func(*keys.Config) {
	return func(cfg *keys.Config) { cfg.CustomerKMS = append(cfg.CustomerKMS, c...) }
}

// customerKey returns a Tink fake KMS client standing in for a customer's
// cloud KMS (awskmstest is the real one, slower to start) and the URI of a
// new key in it.
func customerKey(t testing.TB) (registry.KMSClient, keys.URI) {
	t.Helper()
	c, err := fakekms.NewClient("fake-kms://")
	require.NoError(t, err)
	uri, err := fakekms.NewKeyURI()
	require.NoError(t, err)
	return c, keys.URI(uri)
}

func withMaxAge(d time.Duration) func(*keys.Config) {
	return func(cfg *keys.Config) { cfg.CacheMaxAge = d }
}

// newID returns a tenant ID no other test uses.
func newID(name string) tenant.ID {
	return tenant.MustParseID(fmt.Sprintf("%s%d", name, idSeq.Add(1)))
}

// provision provisions a new tenant and returns it with a context that
// carries it.
func provision(t testing.TB, m *keys.Manager, name string, opts ...keys.ProvisionOptions) (tenant.ID, context.Context) {
	t.Helper()
	id := newID(name)
	var o keys.ProvisionOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	require.NoError(t, m.Provision(ctxT(t), id, o))
	return id, tenant.NewContext(ctxT(t), id)
}

// rows returns the number of keyset rows and tombstones of the tenant.
func (e *env) rows(t testing.TB, id tenant.ID) (keysets, tombstones int) {
	t.Helper()
	require.NoError(t, e.admin.QueryRow(ctxT(t), `SELECT
		(SELECT count(*) FROM tenancy.tenant_keysets WHERE tenant_id = $1),
		(SELECT count(*) FROM tenancy.tenant_keyset_tombstones WHERE tenant_id = $1)`, id.String()).Scan(&keysets, &tombstones))
	return keysets, tombstones
}

// kekOf returns the KEK URIs recorded on the tenant's rows, by purpose.
func (e *env) kekOf(t testing.TB, id tenant.ID) map[keys.Purpose]keys.URI {
	t.Helper()
	out := map[keys.Purpose]keys.URI{}
	for _, p := range keys.Purposes() {
		w, err := e.store.Get(ctxT(t), id, p)
		require.NoError(t, err)
		out[p] = w.KEKURI
	}
	return out
}

func removeFile(t testing.TB, path string) {
	t.Helper()
	require.NoError(t, os.Rename(path, path+".gone"))
}

var field = keys.Binding{Table: "integrations", Column: "jira_token", RowKey: "row-1"}

// hookClient wraps a KMS client. Every AEAD operation calls hook (if set)
// first with the operation ("encrypt", "decrypt") and its sequence number
// (from 1, per operation kind); a non-nil error fails the operation, as an
// unreachable HSM or a KMS refusing would.
type hookClient struct {
	registry.KMSClient
	encrypts, decrypts atomic.Int64
	hook               atomic.Pointer[func(op string, n int64) error]
}

func (c *hookClient) setHook(f func(op string, n int64) error) { c.hook.Store(&f) }

func (c *hookClient) GetAEAD(uri string) (tink.AEAD, error) {
	a, err := c.KMSClient.GetAEAD(uri)
	if err != nil {
		return nil, err
	}
	return &hookAEAD{a: a, c: c}, nil
}

type hookAEAD struct {
	a tink.AEAD
	c *hookClient
}

func (h *hookAEAD) run(op string, n int64) error {
	if f := h.c.hook.Load(); f != nil && *f != nil {
		return (*f)(op, n)
	}
	return nil
}

func (h *hookAEAD) Encrypt(pt, ad []byte) ([]byte, error) {
	if err := h.run("encrypt", h.c.encrypts.Add(1)); err != nil {
		return nil, err
	}
	return h.a.Encrypt(pt, ad)
}

func (h *hookAEAD) Decrypt(ct, ad []byte) ([]byte, error) {
	if err := h.run("decrypt", h.c.decrypts.Add(1)); err != nil {
		return nil, err
	}
	return h.a.Decrypt(ct, ad)
}
