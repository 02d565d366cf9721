package keys_test

// Master keys the platform makes for one tenant each (ProvisionOptions.
// TenantKEK, Config.TenantKEKs), on localkms's KeyMaker; hsm_test.go
// does the same in a SoftHSM2 token.

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/tenant"
)

// localMaker returns a KeyMaker over the env's local client, in a
// directory of the test's own, and that directory.
func (e *env) localMaker(t testing.TB) (*localkms.KeyMaker, string) {
	t.Helper()
	dir := filepath.Join(e.dir, "tenant-keks")
	mk, err := localkms.NewKeyMaker(e.local, dir)
	require.NoError(t, err)
	return mk, dir
}

// tenantKEKURI returns the URI of the key mk keeps for tenant id.
func tenantKEKURI(t testing.TB, mk keys.KeyMaker, id tenant.ID) keys.URI {
	t.Helper()
	u, err := mk.KeyURI(keys.TenantKEKLabel(id))
	require.NoError(t, err)
	return keys.URI(u)
}

func withTenantKEKs(mk keys.KeyMaker) func(*keys.Config) {
	return func(c *keys.Config) { c.TenantKEKs = mk }
}

// files lists the names in dir.
func files(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestTenantKEKIsMadeForTheTenantAndShredDestroysExactlyIt(t *testing.T) {
	e := newEnv(t)
	mk, dir := e.localMaker(t)
	m := e.manager(t, withTenantKEKs(mk))
	a, ctxA := provision(t, m, "gova", keys.ProvisionOptions{TenantKEK: true})
	b, ctxB := provision(t, m, "govb", keys.ProvisionOptions{TenantKEK: true})
	_, ctxP := provision(t, m, "std")
	uriA := tenantKEKURI(t, mk, a)
	for _, p := range keys.Purposes() {
		w, err := e.store.Get(ctxT(t), a, p)
		require.NoError(t, err)
		assert.Equal(t, uriA, w.KEKURI, "%s keyset of a is wrapped by a's own key", p)
		assert.Equal(t, keys.KEKTenant, w.KEKKind, p)
	}
	assert.NotEqual(t, e.kekOf(t, a)[keys.PurposeData], e.kekOf(t, b)[keys.PurposeData], "each tenant has its own key")
	sealedA, err := m.Seal(ctxA, []byte("a's secret"), field)
	require.NoError(t, err)
	sealedB, err := m.Seal(ctxB, []byte("b's secret"), field)
	require.NoError(t, err)
	sealedP, err := m.Seal(ctxP, []byte("std's secret"), field)
	require.NoError(t, err)
	before := files(t, dir)
	require.Len(t, before, 2)

	res, err := m.Shred(ctxT(t), a)
	require.NoError(t, err)
	assert.Equal(t, uriA, res.DestroyedKEK)
	assert.Equal(t, []keys.URI{uriA}, res.Tombstone.TenantKEKs, "the tombstone records the key it destroyed")
	assert.Empty(t, res.RetainedKEKs)
	after := files(t, dir)
	assert.Equal(t, slices.DeleteFunc(slices.Clone(before), func(n string) bool { return n == keys.TenantKEKLabel(a)+".key" }), after,
		"exactly a's key file went")
	_, err = os.Stat(e.platformPath)
	require.NoError(t, err, "the platform key stays")

	_, err = m.Open(ctxA, sealedA, field)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
	keys.PurgeAll(m)
	got, err := m.Open(ctxB, sealedB, field)
	require.NoError(t, err, "another tenant with its own key is unaffected")
	assert.Equal(t, "b's secret", string(got))
	got, err = m.Open(ctxP, sealedP, field)
	require.NoError(t, err, "a tenant on the platform key is unaffected")
	assert.Equal(t, "std's secret", string(got))

	// Shred again (a retry) is fine and destroys nothing more.
	res, err = m.Shred(ctxT(t), a)
	require.NoError(t, err)
	assert.Equal(t, uriA, res.DestroyedKEK)
	assert.Equal(t, after, files(t, dir))
}

// A saved copy of a shredded tenant's wrapped keysets, written back under
// its ID's row by a control-plane restore, does not open: the master key
// that wrapped them is destroyed.
func TestRestoredKeysetsOfAShreddedTenantKEKDoNotOpen(t *testing.T) {
	e := newEnv(t)
	mk, _ := e.localMaker(t)
	m := e.manager(t, withTenantKEKs(mk))
	a, ctxA := provision(t, m, "restored", keys.ProvisionOptions{TenantKEK: true})
	sealed, err := m.Seal(ctxA, []byte("x"), field)
	require.NoError(t, err)
	var saved []keys.WrappedKeyset
	for _, p := range keys.Purposes() {
		w, err := e.store.Get(ctxT(t), a, p)
		require.NoError(t, err)
		saved = append(saved, w)
	}
	_, err = m.Shred(ctxT(t), a)
	require.NoError(t, err)
	_, err = e.admin.Exec(ctxT(t), `DELETE FROM tenancy.tenant_keyset_tombstones WHERE tenant_id = $1`, a.String())
	require.NoError(t, err)
	for i := range saved {
		saved[i].Version = 0
	}
	require.NoError(t, e.store.Put(ctxT(t), saved...))
	keys.PurgeAll(m)
	_, err = m.Open(ctxA, sealed, field)
	require.ErrorIs(t, err, keys.ErrUnwrap, "the restored keysets need a key that no longer exists")
}

// A Provision that made the tenant's key and stopped before writing the
// keysets (a crash) is resumed with the same key; Shred of a tenant whose
// Provision never finished destroys the key it left.
func TestTenantKEKSurvivesAnInterruptedProvision(t *testing.T) {
	e := newEnv(t)
	mk, dir := e.localMaker(t)
	m := e.manager(t, withTenantKEKs(mk))

	id := newID("crashed")
	uri := tenantKEKURI(t, mk, id)
	require.NoError(t, mk.CreateKey(ctxT(t), string(uri))) // what the crashed Provision did
	keyFile := filepath.Join(dir, keys.TenantKEKLabel(id)+".key")
	made, err := os.ReadFile(keyFile)
	require.NoError(t, err)
	require.NoError(t, m.Provision(ctxT(t), id, keys.ProvisionOptions{TenantKEK: true}))
	again, err := os.ReadFile(keyFile)
	require.NoError(t, err)
	assert.Equal(t, made, again, "the resumed Provision used the key made before")
	assert.Equal(t, uri, e.kekOf(t, id)[keys.PurposeData])
	require.NoError(t, m.Provision(ctxT(t), id, keys.ProvisionOptions{TenantKEK: true}), "and a re-run is a no-op")

	orphan := newID("orphan")
	orphanURI := tenantKEKURI(t, mk, orphan)
	require.NoError(t, mk.CreateKey(ctxT(t), string(orphanURI)))
	res, err := m.Shred(ctxT(t), orphan)
	require.NoError(t, err)
	assert.Empty(t, res.Tombstone.TenantKEKs)
	assert.Equal(t, []string{keys.TenantKEKLabel(id) + ".key"}, files(t, dir), "the orphan key went, the live tenant's stayed")
}

// The platform re-wraps its own keysets only: a tenant's own key is
// neither moved nor a target.
func TestRewrapLeavesTenantKEKsAloneAndRefusesOneAsTarget(t *testing.T) {
	e := newEnv(t)
	mk, _ := e.localMaker(t)
	m := e.manager(t, withTenantKEKs(mk))
	gov, ctxGov := provision(t, m, "rwgov", keys.ProvisionOptions{TenantKEK: true})
	std, _ := provision(t, m, "rwstd")
	sealed, err := m.Seal(ctxGov, []byte("gov"), field)
	require.NoError(t, err)
	govURI := e.kekOf(t, gov)[keys.PurposeData]

	_, err = m.Rewrap(ctxT(t), e.platform, govURI)
	require.ErrorIs(t, err, keys.ErrKEKInUse, "re-wrapping platform keysets onto a tenant's key, which Shred destroys")
	require.ErrorIs(t, err, keys.ErrInvalidArgument)
	assert.Equal(t, e.platform, e.kekOf(t, std)[keys.PurposeData], "nothing moved")

	// A tenant's key that wraps nothing yet (its Provision was
	// interrupted) is refused as well, by its label.
	orphanURI := tenantKEKURI(t, mk, newID("rworphan"))
	_, err = m.Rewrap(ctxT(t), e.platform, orphanURI)
	require.ErrorIs(t, err, keys.ErrKEKInUse)
	assert.Equal(t, e.platform, e.kekOf(t, std)[keys.PurposeData], "nothing moved")

	newURI, _ := e.keyURI(t, "platform-2.key")
	res, err := m.Rewrap(ctxT(t), govURI, newURI)
	require.ErrorIs(t, err, keys.ErrInvalidArgument, "a tenant's own key is not the platform's to move")
	assert.Equal(t, keys.RewrapResult{Failed: 3}, res)
	for p, uri := range e.kekOf(t, gov) {
		assert.Equal(t, govURI, uri, p)
		w, err := e.store.Get(ctxT(t), gov, p)
		require.NoError(t, err)
		assert.Equal(t, keys.KEKTenant, w.KEKKind, p)
	}
	keys.PurgeAll(m)
	got, err := m.Open(ctxGov, sealed, field)
	require.NoError(t, err)
	assert.Equal(t, "gov", string(got))
}

// Config.TenantKEKs gives keys the Manager refuses to use: a maker
// misconfigured onto the platform key's own file.
func TestTenantKEKThatIsThePlatformKeyIsRefused(t *testing.T) {
	e := newEnv(t)
	mk, _ := e.localMaker(t)
	id := newID("clash")
	uri := tenantKEKURI(t, mk, id)
	m := e.manager(t, withTenantKEKs(mk), func(c *keys.Config) { c.PlatformKEK = uri })
	_, ctxP := provision(t, m, "onplatform")
	sealed, err := m.Seal(ctxP, []byte("p"), field)
	require.NoError(t, err)
	err = m.Provision(ctxT(t), id, keys.ProvisionOptions{TenantKEK: true})
	require.ErrorIs(t, err, keys.ErrKEKInUse)
	n, tombs := e.rows(t, id)
	require.Zero(t, n+tombs)
	// And Shred of that tenant does not destroy the platform key.
	_, err = m.Shred(ctxT(t), id)
	require.NoError(t, err)
	keys.PurgeAll(m)
	got, err := m.Open(ctxP, sealed, field)
	require.NoError(t, err, "the platform key is intact")
	assert.Equal(t, "p", string(got))
}
