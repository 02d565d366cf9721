//go:build cgo

package keys_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/internal/softhsmtest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/pkcs11kms"
	"github.com/rtmx-ai/tenancy/tenant"
)

// hsmKEK makes a token with an AES-256 key in it and returns its URI and a
// client for it (closed when the test ends, before the token is deleted).
// Per softhsmtest, make every token before any client of the test.
func hsmKEK(tb testing.TB, object string) (*softhsmtest.Token, keys.URI, *pkcs11kms.Client) {
	tb.Helper()
	tok := softhsmtest.NewToken(tb)
	c, err := pkcs11kms.NewClient("pkcs11:")
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = c.Close() })
	uri := tok.URI(object)
	require.NoError(tb, c.GenerateKey(context.Background(), uri))
	return tok, keys.URI(uri), c
}

func TestHSMTokenRemovedCachedTenantsWorkUntilMaxAgeUncachedGetErrorNamingURI(t *testing.T) {
	e := newEnv(t)
	tok, uri, hsm := hsmKEK(t, "platform-kek")
	const maxAge = 800 * time.Millisecond
	setup := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{hsm}; c.PlatformKEK = uri })
	_, ctxCached := provision(t, setup, "hsmwarm")
	_, ctxCold := provision(t, setup, "hsmcold")
	ctCold, err := setup.Seal(ctxCold, []byte("cold"), field)
	require.NoError(t, err)

	srv := e.manager(t, withMaxAge(maxAge), func(c *keys.Config) { c.KMS = []registry.KMSClient{hsm}; c.PlatformKEK = uri })
	ct, err := srv.Seal(ctxCached, []byte("warm"), field)
	require.NoError(t, err)
	loaded := time.Now()

	require.NoError(t, tok.Delete()) // the HSM token goes away

	got, err := srv.Open(ctxCached, ct, field)
	require.NoError(t, err, "a cached tenant must keep working without the HSM")
	require.Equal(t, "warm", string(got))

	_, err = srv.Open(ctxCold, ctCold, field)
	require.ErrorIs(t, err, keys.ErrUnwrap)
	require.Contains(t, err.Error(), canonicalHSM(t, hsm, uri), "the error must name the master key")
	t.Logf("uncached tenant: %v", err)

	id := newID("hsmnew")
	err = srv.Provision(ctxT(t), id, keys.ProvisionOptions{})
	require.ErrorIs(t, err, keys.ErrUnwrap)
	n, tombs := e.rows(t, id)
	require.Zero(t, n+tombs, "nothing may be written half-way")

	time.Sleep(time.Until(loaded.Add(maxAge + timerSlack)))
	_, err = srv.Open(ctxCached, ct, field)
	require.ErrorIs(t, err, keys.ErrUnwrap)
}

// canonicalHSM returns the canonical URI of the HSM key uri, as the Manager
// stores it (module path with links resolved).
func canonicalHSM(t testing.TB, c *pkcs11kms.Client, uri keys.URI) string {
	t.Helper()
	canon, err := c.CanonicalKeyURI(string(uri))
	require.NoError(t, err)
	return canon
}

// BenchmarkColdUnwrapPKCS11 is BenchmarkColdUnwrapLocalKMS with the master
// key in a SoftHSM2 token: AES-GCM unwrap inside the HSM over PKCS#11.
func BenchmarkColdUnwrapPKCS11(b *testing.B) {
	for _, tc := range []struct {
		name  string
		store func(b *testing.B) keys.Store
	}{
		{"memstore", func(*testing.B) keys.Store { return keys.NewMemStore() }},
		{"postgres", func(b *testing.B) keys.Store { return newEnv(b).store }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			_, uri, hsm := hsmKEK(b, "bench-kek")
			cfg := keys.DefaultConfig()
			cfg.Store, cfg.KMS, cfg.PlatformKEK = tc.store(b), []registry.KMSClient{hsm}, uri
			m, err := keys.New(cfg)
			require.NoError(b, err)
			id := newID("hsmbench")
			require.NoError(b, m.Provision(context.Background(), id, keys.ProvisionOptions{}))
			benchColdSeal(b, m, tenant.NewContext(context.Background(), id), id)
		})
	}
}

// A government tenant's master key of its own in the platform's HSM token
// (pkcs11kms.KeyMaker): made at provisioning under the tenant's label,
// recorded in its keysets, and destroyed by Shred, which leaves every
// other object of the token as it was: the platform key, another tenant's
// key.
func TestHSMShredDestroysExactlyTheTenantsKeyInTheToken(t *testing.T) {
	e := newEnv(t)
	tok, platform, hsm := hsmKEK(t, "platform-kek")
	base := strings.Replace(tok.URI("x"), ";object=x", "", 1)
	mk, err := pkcs11kms.NewKeyMaker(hsm, base)
	require.NoError(t, err)
	m := e.manager(t, withTenantKEKs(mk), func(c *keys.Config) { c.KMS = []registry.KMSClient{hsm}; c.PlatformKEK = platform })
	gov, ctxGov := provision(t, m, "hsmgov", keys.ProvisionOptions{TenantKEK: true})
	other, ctxOther := provision(t, m, "hsmother", keys.ProvisionOptions{TenantKEK: true})
	_, ctxStd := provision(t, m, "hsmstd")
	govURI := e.kekOf(t, gov)[keys.PurposeData]
	require.True(t, mk.Owns(string(govURI), keys.TenantKEKLabel(gov)), "gov's keysets are wrapped by a key the maker made under gov's label: %s", govURI)
	require.NotEqual(t, govURI, e.kekOf(t, other)[keys.PurposeData])
	sealedGov, err := m.Seal(ctxGov, []byte("gov"), field)
	require.NoError(t, err)
	sealedOther, err := m.Seal(ctxOther, []byte("other"), field)
	require.NoError(t, err)
	sealedStd, err := m.Seal(ctxStd, []byte("std"), field)
	require.NoError(t, err)

	before := tok.Objects(t)
	res, err := m.Shred(ctxT(t), gov)
	require.NoError(t, err)
	require.Equal(t, []keys.URI{govURI}, res.DestroyedKEKs)
	after := tok.Objects(t)
	var gone []string
	for _, o := range before {
		if !slices.Contains(after, o) {
			gone = append(gone, o)
		}
	}
	require.Len(t, gone, 1, "one object went: %q", gone)
	require.Contains(t, gone[0], fmt.Sprintf("label=%q", keys.TenantKEKLabel(gov)))
	require.Len(t, after, len(before)-1, "and nothing was added")

	_, err = hsm.GetAEAD(string(govURI))
	require.ErrorIs(t, err, pkcs11kms.ErrKeyNotFound)
	_, err = m.Open(ctxGov, sealedGov, field)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
	keys.PurgeAll(m)
	for ctx, want := range map[context.Context][]byte{ctxOther: sealedOther, ctxStd: sealedStd} {
		_, err := m.Open(ctx, want, field)
		require.NoError(t, err, "the other tenant's key and the platform key still work")
	}
	res, err = m.Shred(ctxT(t), gov)
	require.NoError(t, err, "a retry")
	require.Equal(t, after, tok.Objects(t), "destroys nothing more")
}
