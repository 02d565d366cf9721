//go:build cgo

package keys_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
func hsmKEK(tb testing.TB, object string) (*softhsmtest.Token, string, *pkcs11kms.Client) {
	tb.Helper()
	tok := softhsmtest.NewToken(tb)
	c, err := pkcs11kms.NewClient("pkcs11:")
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = c.Close() })
	uri := tok.URI(object)
	require.NoError(tb, c.GenerateKey(context.Background(), uri))
	return tok, uri, c
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

func TestHSMTenantOwnKEKIsDestroyedByShred(t *testing.T) {
	e := newEnv(t)
	_, uri, hsm := hsmKEK(t, "tenant-kek")
	m := e.manager(t, withKMS(hsm))
	id, ctx := provision(t, m, "hsmbyok", keys.ProvisionOptions{KEKURI: uri})
	ct, err := m.Seal(ctx, []byte("x"), field)
	require.NoError(t, err)
	res, err := m.Shred(ctxT(t), id)
	require.NoError(t, err)
	require.Equal(t, []string{canonicalHSM(t, hsm, uri)}, res.DestroyedKEKs)
	_, err = hsm.GetAEAD(uri)
	require.ErrorIs(t, err, pkcs11kms.ErrKeyNotFound)
	_, err = m.Open(ctx, ct, field)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
}

// canonicalHSM returns the canonical URI of the HSM key uri, as the Manager
// stores it (module path with links resolved).
func canonicalHSM(t testing.TB, c *pkcs11kms.Client, uri string) string {
	t.Helper()
	canon, err := c.CanonicalKeyURI(uri)
	require.NoError(t, err)
	return canon
}

// The reviewer's reproduction of a Shred run twice: the second run (a
// retry) succeeds and reports the key destroyed, not retained, because
// DestroyKey of a key already gone is not an error (KeyDestroyer).
func TestHSMShredTwiceReportsTheKeyDestroyed(t *testing.T) {
	e := newEnv(t)
	_, uri, hsm := hsmKEK(t, "k1")
	m := e.manager(t, withKMS(hsm))
	id, _ := provision(t, m, "shredtwice", keys.ProvisionOptions{KEKURI: uri})
	canon := canonicalHSM(t, hsm, uri)
	for i := range 2 {
		res, err := m.Shred(ctxT(t), id)
		require.NoError(t, err, "Shred #%d", i+1)
		require.Equal(t, []string{canon}, res.DestroyedKEKs, "Shred #%d", i+1)
		require.Empty(t, res.RetainedKEKs, "Shred #%d", i+1)
	}
	_, err := hsm.GetAEAD(uri)
	require.ErrorIs(t, err, pkcs11kms.ErrKeyNotFound)
}

// hsmAliases returns other spellings of the PKCS#11 key URI uri (made by
// softhsmtest), all naming the same key: attributes reordered,
// percent-encoded, type=secret-key added, the PIN read from elsewhere.
func hsmAliases(t testing.TB, tok *softhsmtest.Token, uri string) []string {
	t.Helper()
	k, err := pkcs11kms.ParseKeyURI(uri)
	require.NoError(t, err)
	const env = "KEYS_TEST_HSM_ALIAS_PIN"
	t.Setenv(env, tok.PIN)
	var pct string
	for i := 0; i < len(k.Object); i++ {
		pct += fmt.Sprintf("%%%02x", k.Object[i])
	}
	token := softhsmtest.Escape(k.Token)
	aliases := []string{
		"pkcs11:object=" + softhsmtest.Escape(k.Object) + ";token=" + token + "?pin-source=" + k.PINSource + "&module-path=" + k.ModulePath,
		"pkcs11:token=" + token + ";object=" + pct + "?module-path=" + k.ModulePath + "&pin-source=" + k.PINSource,
		"pkcs11:type=secret-key;token=" + token + ";object=" + softhsmtest.Escape(k.Object) + "?module-path=" + k.ModulePath + "&pin-source=" + k.PINSource,
		"pkcs11:token=" + token + ";object=" + softhsmtest.Escape(k.Object) + "?module-path=" + k.ModulePath + "&pin-source=env:" + env,
	}
	for _, module := range moduleLinks(t, k.ModulePath) {
		aliases = append(aliases, "pkcs11:token="+token+";object="+softhsmtest.Escape(k.Object)+"?module-path="+module+"&pin-source="+k.PINSource)
	}
	return aliases
}

// moduleLinks returns other paths of the PKCS#11 module at module: the
// file itself (links resolved) when module is a link, a link to it, and the
// module reached through a linked directory (as /lib/softhsm/... is
// through /lib -> usr/lib).
func moduleLinks(t testing.TB, module string) []string {
	t.Helper()
	real, err := filepath.EvalSymlinks(module)
	require.NoError(t, err)
	dir := t.TempDir()
	link, libDir := filepath.Join(dir, "libsofthsm2-link.so"), filepath.Join(dir, "lib")
	require.NoError(t, os.Symlink(real, link))
	require.NoError(t, os.Symlink(filepath.Dir(real), libDir))
	paths := []string{link, filepath.Join(libDir, filepath.Base(real))}
	if real != module {
		paths = append(paths, real)
	}
	return paths
}

// The reviewer's reproduction with the module path spelled through a
// symbolic link: with and without an allow-list naming the module, a
// "customer-managed" URI that reaches the platform key through a link to
// its module is refused as the platform key, and no Shred destroys it.
func TestHSMModulePathLinkToThePlatformKEKIsRefused(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprintf("allowlist=%v", allow), func(t *testing.T) {
			e := newEnv(t)
			tok := softhsmtest.NewToken(t)
			platform := tok.URI("platform")
			var opts []pkcs11kms.Option
			if allow {
				opts = append(opts, pkcs11kms.WithModulePaths(tok.Module))
			}
			hsm, err := pkcs11kms.NewClient("pkcs11:", opts...)
			require.NoError(t, err)
			t.Cleanup(func() { _ = hsm.Close() })
			require.NoError(t, hsm.GenerateKey(ctxT(t), platform))
			m := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{hsm}; c.PlatformKEK = platform })
			_, victimCtx := provision(t, m, "victim")
			ct, err := m.Seal(victimCtx, []byte("secret"), field)
			require.NoError(t, err)
			for _, module := range moduleLinks(t, tok.Module) {
				alias := strings.Replace(platform, "module-path="+softhsmtest.Escape(tok.Module), "module-path="+module, 1)
				alias = strings.Replace(alias, "module-path="+tok.Module, "module-path="+module, 1)
				require.Contains(t, alias, "module-path="+module)
				attacker := newID("attacker")
				err := m.Provision(ctxT(t), attacker, keys.ProvisionOptions{KEKURI: alias})
				require.ErrorIs(t, err, keys.ErrKEKInUse, alias)
				require.ErrorIs(t, err, keys.ErrInvalidArgument, alias)
				require.Contains(t, err.Error(), "platform master key")
				n, tombs := e.rows(t, attacker)
				require.Zero(t, n+tombs, "nothing may be written for a refused tenant")
				res, err := m.Shred(ctxT(t), attacker)
				require.NoError(t, err)
				require.Empty(t, res.DestroyedKEKs)
			}
			_, err = hsm.GetAEAD(platform)
			require.NoError(t, err, "the platform key was destroyed")
			m.PurgeAll()
			got, err := m.Open(victimCtx, ct, field)
			require.NoError(t, err)
			require.Equal(t, "secret", string(got))
		})
	}
}

// The reviewer's reproduction on an HSM: a "customer-managed" URI that is
// the platform key spelled another way is refused, and no Shred destroys
// the platform key.
func TestHSMAliasOfThePlatformKEKIsRefused(t *testing.T) {
	e := newEnv(t)
	tok, platform, hsm := hsmKEK(t, "platform")
	m := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{hsm}; c.PlatformKEK = platform })
	_, victimCtx := provision(t, m, "victim")
	ct, err := m.Seal(victimCtx, []byte("secret"), field)
	require.NoError(t, err)
	for _, alias := range append(hsmAliases(t, tok, platform), platform) {
		attacker := newID("attacker")
		err := m.Provision(ctxT(t), attacker, keys.ProvisionOptions{KEKURI: alias})
		require.ErrorIs(t, err, keys.ErrKEKInUse, alias)
		require.ErrorIs(t, err, keys.ErrInvalidArgument, alias)
		require.Contains(t, err.Error(), "ProvisionOptions.KEKURI")
		_, err = m.Shred(ctxT(t), attacker)
		require.NoError(t, err)
	}
	_, err = hsm.GetAEAD(platform)
	require.NoError(t, err, "the platform key was destroyed")
	m.PurgeAll()
	got, err := m.Open(victimCtx, ct, field)
	require.NoError(t, err)
	require.Equal(t, "secret", string(got))
}

// Another tenant's HSM key is refused under any spelling, including with
// the PIN read from another source (a different stored URI, the same key).
func TestHSMAliasOfAnotherTenantsKEKIsRefused(t *testing.T) {
	e := newEnv(t)
	tok, own, hsm := hsmKEK(t, "acme-kek")
	m := e.manager(t, withKMS(hsm))
	owner, ownerCtx := provision(t, m, "hsmowner", keys.ProvisionOptions{KEKURI: own})
	ct, err := m.Seal(ownerCtx, []byte("x"), field)
	require.NoError(t, err)
	for _, alias := range append(hsmAliases(t, tok, own), own) {
		err := m.Provision(ctxT(t), newID("hsmother"), keys.ProvisionOptions{KEKURI: alias})
		require.ErrorIs(t, err, keys.ErrKEKInUse, alias)
	}
	// The owner's own re-run with another spelling is a no-op.
	for _, alias := range hsmAliases(t, tok, own) {
		require.NoError(t, m.Provision(ctxT(t), owner, keys.ProvisionOptions{KEKURI: alias}))
	}
	got, err := m.Open(ownerCtx, ct, field)
	require.NoError(t, err)
	require.Equal(t, "x", string(got))
}

// Keysets of another tenant that reach the tenant's key through another
// pin-source (rows written before keys were compared by identity) keep
// Shred from destroying it.
func TestHSMShredKeepsAKEKThatAnotherTenantReachesByAnotherPINSource(t *testing.T) {
	e := newEnv(t)
	tok, own, hsm := hsmKEK(t, "shared-kek")
	m := e.manager(t, withKMS(hsm))
	owner, ownerCtx := provision(t, m, "hsmowner", keys.ProvisionOptions{KEKURI: own})
	_, err := m.Seal(ownerCtx, []byte("x"), field)
	require.NoError(t, err)
	viaEnv := hsmAliases(t, tok, own)[3]
	canonical, err := hsm.CanonicalKeyURI(viaEnv)
	require.NoError(t, err)
	require.NotEqual(t, own, canonical)
	other := newID("hsmlegacy")
	var sets []keys.WrappedKeyset
	for _, p := range keys.Purposes() {
		w, err := e.store.Get(ctxT(t), owner, p)
		require.NoError(t, err)
		sets = append(sets, keys.WrappedKeyset{Tenant: other, Purpose: p, KEKURI: canonical, TenantKEK: true, Wrapped: w.Wrapped})
	}
	require.NoError(t, e.store.Put(ctxT(t), sets...))

	res, err := m.Shred(ctxT(t), owner)
	require.NoError(t, err)
	require.Empty(t, res.DestroyedKEKs)
	require.Equal(t, []string{canonicalHSM(t, hsm, own)}, res.RetainedKEKs)
	_, err = hsm.GetAEAD(own)
	require.NoError(t, err, "a key another tenant's keysets use was destroyed")
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
