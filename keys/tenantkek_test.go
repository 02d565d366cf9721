package keys_test

// Master keys the platform makes for one tenant each (ProvisionOptions.
// TenantKEK, Config.TenantKEKs), on localkms's KeyMaker; hsm_test.go
// does the same in a SoftHSM2 token.

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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

// keyFiles lists the key files of tenant id in dir.
func keyFiles(t testing.TB, dir string, id tenant.ID) []string {
	t.Helper()
	return slices.DeleteFunc(files(t, dir), func(n string) bool { return !strings.HasPrefix(n, keys.TenantKEKLabel(id)+".") })
}

func TestTenantKEKIsMadeForTheTenantAndShredDestroysExactlyIt(t *testing.T) {
	e := newEnv(t)
	mk, dir := e.localMaker(t)
	m := e.manager(t, withTenantKEKs(mk))
	a, ctxA := provision(t, m, "gova", keys.ProvisionOptions{TenantKEK: true})
	b, ctxB := provision(t, m, "govb", keys.ProvisionOptions{TenantKEK: true})
	_, ctxP := provision(t, m, "std")
	uriA := e.kekOf(t, a)[keys.PurposeData]
	assert.True(t, mk.Owns(string(uriA), keys.TenantKEKLabel(a)), "a's keysets are wrapped by a key made under a's label: %s", uriA)
	for _, p := range keys.Purposes() {
		w, err := e.store.Get(ctxT(t), a, p)
		require.NoError(t, err)
		assert.Equal(t, uriA, w.KEKURI, "all of a's keysets are wrapped by one key (%s)", p)
		assert.Equal(t, keys.KEKTenant, w.KEKKind, p)
	}
	assert.NotEqual(t, uriA, e.kekOf(t, b)[keys.PurposeData], "each tenant has its own key")
	require.NoError(t, m.Provision(ctxT(t), a, keys.ProvisionOptions{TenantKEK: true}), "a re-run is a no-op ...")
	assert.Len(t, keyFiles(t, dir, a), 1, "... that makes no key")
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
	assert.Equal(t, []keys.URI{uriA}, res.DestroyedKEKs)
	assert.Equal(t, []keys.URI{uriA}, res.Tombstone.TenantKEKs, "the tombstone records the key it destroyed")
	assert.Empty(t, res.RetainedKEKs)
	after := files(t, dir)
	assert.Equal(t, slices.DeleteFunc(slices.Clone(before), func(n string) bool { return strings.HasPrefix(n, keys.TenantKEKLabel(a)+".") }), after,
		"exactly a's key file went")
	assert.Empty(t, keyFiles(t, dir, a))
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
	assert.Equal(t, []keys.URI{uriA}, res.DestroyedKEKs)
	assert.Equal(t, after, files(t, dir))
}

// A saved copy of a shredded tenant's wrapped keysets, written back by a
// control-plane restore, does not open: the master key that wrapped them
// is destroyed.
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
// keysets (a crash), or that raced another, leaves an unused key under the
// tenant's label: the tenant is served by the key its keysets record, and
// Shred destroys every key of the label, the unused ones too. A tenant
// whose Provision never finished has its key destroyed as well.
func TestUnusedTenantKEKsOfInterruptedOrRacingProvisionsAreDestroyedByShred(t *testing.T) {
	e := newEnv(t)
	mk, dir := e.localMaker(t)
	m := e.manager(t, withTenantKEKs(mk))

	id := newID("crashed")
	_, err := mk.CreateKey(ctxT(t), keys.TenantKEKLabel(id)) // what the crashed Provision did
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		other := e.manager(t, withTenantKEKs(mk))
		wg.Go(func() { errs[i] = other.Provision(ctxT(t), id, keys.ProvisionOptions{TenantKEK: true}) })
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "Provision #%d at the same time as the others", i)
	}
	made := keyFiles(t, dir, id)
	require.GreaterOrEqual(t, len(made), 2, "the crashed Provision's key and at least one more")
	ctx := tenant.NewContext(ctxT(t), id)
	sealed, err := m.Seal(ctx, []byte("x"), field)
	require.NoError(t, err)
	got, err := e.manager(t, withTenantKEKs(mk)).Open(ctx, sealed, field)
	require.NoError(t, err)
	assert.Equal(t, "x", string(got))

	res, err := m.Shred(ctxT(t), id)
	require.NoError(t, err)
	assert.Len(t, res.DestroyedKEKs, 1, "the key in use is reported")
	assert.Empty(t, keyFiles(t, dir, id), "every key of the label went, the unused ones too")

	orphan := newID("orphan")
	_, err = mk.CreateKey(ctxT(t), keys.TenantKEKLabel(orphan))
	require.NoError(t, err)
	live, _ := provision(t, m, "live", keys.ProvisionOptions{TenantKEK: true})
	res, err = m.Shred(ctxT(t), orphan)
	require.NoError(t, err)
	assert.Empty(t, res.Tombstone.TenantKEKs)
	assert.Empty(t, keyFiles(t, dir, orphan), "the never-provisioned tenant's key went")
	assert.Len(t, keyFiles(t, dir, live), 1, "another tenant's stayed")
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

	// A tenant's key that wraps nothing (its Provision was interrupted) is
	// refused as well, by its label.
	orphanURI, err := mk.CreateKey(ctxT(t), keys.TenantKEKLabel(newID("rworphan")))
	require.NoError(t, err)
	_, err = m.Rewrap(ctxT(t), e.platform, keys.URI(orphanURI))
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

// hostileMaker is a KeyMaker that hands out one URI as every new key and
// claims to own it: a misconfigured or hostile maker.
type hostileMaker struct {
	keys.KeyMaker
	uri  keys.URI
	owns bool
}

func (h hostileMaker) CreateKey(context.Context, string) (string, error) { return string(h.uri), nil }
func (h hostileMaker) Owns(string, string) bool                          { return h.owns }

// The Manager checks what a KeyMaker gives it: a key that is the platform
// key, or that the maker does not own under the tenant's label, is
// refused, and nothing is written.
func TestTenantKEKsAMakerShouldNotGiveAreRefused(t *testing.T) {
	e := newEnv(t)
	mk, _ := e.localMaker(t)
	for name, tc := range map[string]struct {
		mk   hostileMaker
		want error
	}{
		"the platform key":         {hostileMaker{mk, e.platform, true}, keys.ErrKEKInUse},
		"a key it does not own":    {hostileMaker{mk, e.platform, false}, keys.ErrInvalidArgument},
		"a URI no client serves":   {hostileMaker{mk, "gcp-kms://projects/p/keys/k", true}, keys.ErrUnsupportedKEK},
		"a non-canonical spelling": {hostileMaker{mk, keys.URI(strings.Replace(string(e.platform), "/kek/", "/kek/./", 1)), true}, keys.ErrInvalidArgument},
	} {
		t.Run(name, func(t *testing.T) {
			m := e.manager(t, withTenantKEKs(tc.mk))
			_, ctxP := provision(t, m, "onplatform")
			sealed, err := m.Seal(ctxP, []byte("p"), field)
			require.NoError(t, err)
			id := newID("clash")
			err = m.Provision(ctxT(t), id, keys.ProvisionOptions{TenantKEK: true})
			require.ErrorIs(t, err, tc.want)
			n, tombs := e.rows(t, id)
			require.Zero(t, n+tombs)
			_, err = m.Shred(ctxT(t), id)
			require.NoError(t, err)
			keys.PurgeAll(m)
			got, err := m.Open(ctxP, sealed, field)
			require.NoError(t, err, "the platform key is intact")
			assert.Equal(t, "p", string(got))
		})
	}
}
