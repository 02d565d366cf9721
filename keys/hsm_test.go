//go:build cgo

package keys_test

import (
	"context"
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
