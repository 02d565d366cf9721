package keys_test

import (
	"bytes"
	"errors"
	"io/fs"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/testing/fakekms"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestShredMakesSavedCiphertextsFailWithErrKeyDestroyed(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	id, ctx := provision(t, m, "gone")
	other, otherCtx := provision(t, m, "stays")

	// Copies saved before the shred (a backup, a log, an attacker's copy),
	// made while this Manager had the keys cached.
	saved, err := m.Seal(ctx, []byte("secret"), field)
	require.NoError(t, err)
	_, err = m.Open(ctx, saved, field)
	require.NoError(t, err)
	_, err = m.MAC(ctx)
	require.NoError(t, err)
	otherCT, err := m.Seal(otherCtx, []byte("other"), field)
	require.NoError(t, err)

	res, err := m.Shred(ctxT(t), id)
	require.NoError(t, err)
	require.Equal(t, id, res.Tombstone.Tenant)
	require.Empty(t, res.DestroyedKEKs, "the platform key is shared: never destroyed")
	n, tombs := e.rows(t, id)
	require.Zero(t, n)
	require.Equal(t, 1, tombs)

	_, err = m.Open(ctx, saved, field)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed, "the shredding process's own cache must not serve the tenant")
	_, err = m.Seal(ctx, []byte("x"), field)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
	_, err = m.StreamingAEAD(ctx)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
	_, err = m.MAC(ctx)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
	// A fresh process fails the same way.
	_, err = e.manager(t).Open(ctx, saved, field)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
	// The tenant cannot come back with new keys under the same ID.
	require.ErrorIs(t, m.Provision(ctxT(t), id, keys.ProvisionOptions{}), keys.ErrKeyDestroyed)
	for _, p := range keys.Purposes() {
		require.ErrorIs(t, m.Rotate(ctxT(t), id, p), keys.ErrKeyDestroyed)
	}
	// Shred is idempotent.
	res2, err := m.Shred(ctxT(t), id)
	require.NoError(t, err)
	require.True(t, res.Tombstone.DestroyedAt.Equal(res2.Tombstone.DestroyedAt))

	// Other tenants are untouched.
	got, err := m.Open(otherCtx, otherCT, field)
	require.NoError(t, err)
	require.Equal(t, "other", string(got))
	n, _ = e.rows(t, other)
	require.Equal(t, 3, n)
}

func TestShredReachesOtherReplicasWithinCacheMaxAge(t *testing.T) {
	e := newEnv(t)
	const maxAge = 600 * time.Millisecond
	m := e.manager(t)
	replica := e.manager(t, withMaxAge(maxAge))
	id, ctx := provision(t, m, "gone")
	saved, err := m.Seal(ctx, []byte("secret"), field)
	require.NoError(t, err)
	loadStart := time.Now()
	_, err = replica.Open(ctx, saved, field) // cached in the replica
	require.NoError(t, err)
	loaded := time.Now() // the entry expires in [loadStart+maxAge, loaded+maxAge]

	_, err = m.Shred(ctxT(t), id)
	require.NoError(t, err)
	// Documented staleness: a replica that did not shred still serves the
	// tenant from its cache until the entry's age reaches CacheMaxAge ...
	if time.Since(loadStart) < maxAge/2 {
		_, err = replica.Open(ctx, saved, field)
		require.NoError(t, err, "expected the replica's cache to serve until max age")
	}
	// ... and not a moment longer.
	time.Sleep(time.Until(loaded.Add(maxAge + timerSlack)))
	_, err = replica.Open(ctx, saved, field)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
}

func TestMasterKeyUnavailableCachedTenantsWorkUntilMaxAgeUncachedGetErrorNamingURI(t *testing.T) {
	e := newEnv(t)
	const maxAge = 800 * time.Millisecond
	m := e.manager(t)
	_, ctxCached := provision(t, m, "cached")
	_, ctxCold := provision(t, m, "cold")
	ctCold, err := m.Seal(ctxCold, []byte("cold"), field)
	require.NoError(t, err)

	srv := e.manager(t, withMaxAge(maxAge)) // the serving process
	ct, err := srv.Seal(ctxCached, []byte("warm"), field)
	require.NoError(t, err)
	loaded := time.Now()

	removeFile(t, e.platformPath) // the master key becomes unavailable

	got, err := srv.Open(ctxCached, ct, field)
	require.NoError(t, err, "a cached tenant must keep working")
	require.Equal(t, "warm", string(got))
	_, err = srv.Seal(ctxCached, []byte("more"), field)
	require.NoError(t, err)

	_, err = srv.Open(ctxCold, ctCold, field)
	require.ErrorIs(t, err, keys.ErrUnwrap)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.Contains(t, err.Error(), e.platform, "the error must name the master key")

	time.Sleep(time.Until(loaded.Add(maxAge + timerSlack)))
	_, err = srv.Open(ctxCached, ct, field)
	require.ErrorIs(t, err, keys.ErrUnwrap, "after max age the cached tenant must need the master key again")
	require.Contains(t, err.Error(), e.platform)
}

func TestMasterKeyUnavailableWithFakeKMSUnknownKey(t *testing.T) {
	e := newEnv(t)
	kekURI, err := fakekms.NewKeyURI()
	require.NoError(t, err)
	fake, err := fakekms.NewClient(kekURI) // serves this one key only
	require.NoError(t, err)
	m := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{fake}; c.PlatformKEK = keys.URI(kekURI) })
	_, ctx := provision(t, m, "acme")
	ct, err := m.Seal(ctx, []byte("x"), field)
	require.NoError(t, err)

	// Another process whose KMS does not know that key.
	otherURI, err := fakekms.NewKeyURI()
	require.NoError(t, err)
	otherFake, err := fakekms.NewClient(otherURI)
	require.NoError(t, err)
	other := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{otherFake}; c.PlatformKEK = keys.URI(otherURI) })
	_, err = other.Open(ctx, ct, field)
	require.ErrorIs(t, err, keys.ErrUnsupportedKEK)
	require.Contains(t, err.Error(), keys.URI(kekURI).String())
	require.NotContains(t, err.Error(), kekURI, "a fake-kms URI carries its key and must be redacted")

	// A KMS that knows the URI prefix but whose key is gone (wrong key).
	wrong, err := fakekms.NewClient("fake-kms://")
	require.NoError(t, err)
	stolen := &hookClient{KMSClient: wrong}
	stolen.setHook(func(op string, n int64) error { return errors.New("KMS: key is disabled") })
	third := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{stolen}; c.PlatformKEK = "" })
	_, err = third.Open(ctx, ct, field)
	require.ErrorIs(t, err, keys.ErrUnwrap)
	require.Contains(t, err.Error(), "key is disabled")
}

func TestCustomerManagedKEKWrapsTheTenantsKeysetsWithItsOwnKeyOnly(t *testing.T) {
	e := newEnv(t)
	fake, err := fakekms.NewClient("fake-kms://")
	require.NoError(t, err)
	m := e.manager(t, withCustomerKMS(fake))
	custURI, err := fakekms.NewKeyURI() // stands in for the customer's aws-kms:// ARN
	require.NoError(t, err)
	id, ctx := provision(t, m, "byok", keys.ProvisionOptions{CustomerKEK: keys.URI(custURI)})
	ct, err := m.Seal(ctx, []byte("theirs"), field)
	require.NoError(t, err)

	for _, p := range keys.Purposes() {
		w, err := e.store.Get(ctxT(t), id, p)
		require.NoError(t, err)
		require.Equal(t, keys.URI(custURI), w.KEKURI, p)
		require.Equal(t, keys.KEKCustomer, w.KEKKind, p)
		// The platform master key cannot unwrap it ...
		platformAEAD, err := e.local.GetAEAD(string(e.platform))
		require.NoError(t, err)
		_, err = unwrapWith(w, platformAEAD)
		require.Error(t, err, "the platform master key unwrapped a customer-managed %s keyset", p)
		// ... and the customer's key can.
		custAEAD, err := fake.GetAEAD(custURI)
		require.NoError(t, err)
		_, err = unwrapWith(w, custAEAD)
		require.NoError(t, err)
	}
	// Pointing the rows at the platform key (a control-plane edit) does not
	// help: as a customer key, a local file is refused before any key is
	// called; as the platform's key, it does not open them.
	_, err = e.admin.Exec(ctxT(t), `UPDATE tenancy.tenant_keysets SET kek_uri = $2 WHERE tenant_id = $1`, id.String(), e.platform)
	require.NoError(t, err)
	keys.PurgeAll(m)
	_, err = m.Open(ctx, ct, field)
	require.ErrorIs(t, err, keys.ErrUnwrap)
	require.ErrorContains(t, err, "local key file")
	_, err = e.admin.Exec(ctxT(t), `UPDATE tenancy.tenant_keysets SET kek_kind = 'platform' WHERE tenant_id = $1`, id.String())
	require.NoError(t, err)
	keys.PurgeAll(m)
	_, err = m.Open(ctx, ct, field)
	require.ErrorIs(t, err, keys.ErrUnwrap)
	_, err = e.admin.Exec(ctxT(t), `UPDATE tenancy.tenant_keysets SET kek_kind = 'customer' WHERE tenant_id = $1`, id.String())
	require.NoError(t, err)
	_, err = e.admin.Exec(ctxT(t), `UPDATE tenancy.tenant_keysets SET kek_uri = $2 WHERE tenant_id = $1`, id.String(), custURI)
	require.NoError(t, err)
	got, err := m.Open(ctx, ct, field)
	require.NoError(t, err)
	require.Equal(t, "theirs", string(got))

	// Without the customer's key the platform cannot serve the tenant.
	platformOnly := e.manager(t)
	_, err = platformOnly.Open(ctx, ct, field)
	require.ErrorIs(t, err, keys.ErrUnsupportedKEK)
}

func TestAnyTinkKMSClientPlugsInFakeKMS(t *testing.T) {
	e := newEnv(t)
	fake, err := fakekms.NewClient("fake-kms://")
	require.NoError(t, err)
	kek1, err := fakekms.NewKeyURI()
	require.NoError(t, err)
	kek2, err := fakekms.NewKeyURI()
	require.NoError(t, err)
	m := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{fake}; c.PlatformKEK = keys.URI(kek1) })
	id, ctx := provision(t, m, "cloud")
	ct, err := m.Seal(ctx, []byte("via a cloud KMS"), field)
	require.NoError(t, err)
	require.NoError(t, m.Rotate(ctxT(t), id, keys.PurposeData))
	res, err := m.Rewrap(ctxT(t), keys.URI(kek1), keys.URI(kek2))
	require.NoError(t, err)
	require.Equal(t, 3, res.Rewrapped)
	m2 := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{fake}; c.PlatformKEK = keys.URI(kek2) })
	got, err := m2.Open(ctx, ct, field)
	require.NoError(t, err)
	require.True(t, bytes.Equal([]byte("via a cloud KMS"), got))
	_, err = m2.Shred(ctxT(t), id)
	require.NoError(t, err)
	_, err = m2.Open(tenant.NewContext(ctxT(t), id), ct, field)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
}

// timerSlack is how late, at most, the tests accept a cache entry's expiry
// timer to run after CacheMaxAge (it normally runs well within a
// millisecond; the slack covers a loaded machine under -race).
const timerSlack = 100 * time.Millisecond
