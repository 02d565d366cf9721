//go:build cgo

package keys_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/rtmx-ai/tenancy/internal/softhsmtest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/pkcs11kms"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Keysets wrapped by a platform-managed key that is neither
// Config.PlatformKEK nor listed in RetiredKEKs (mid-rotation, another
// service's platform key): a module-copy alias of that key is refused as
// a tenant's own. (Regression test from a review.)
func TestProvisionRefusesAKeyOfOtherTenantsThatIsNotTheCurrentPlatformKey(t *testing.T) {
	e := newEnv(t)
	tok, p1, hsm := hsmKEK(t, "oldplatform")
	old := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{hsm, e.local}; c.PlatformKEK = p1 })
	_, victimCtx := provision(t, old, "r1victim")
	ct, err := old.Seal(victimCtx, []byte("victim"), field)
	require.NoError(t, err)

	// New platform key; Rewrap not run yet (or RetiredKEKs not set).
	p2, _ := e.keyURI(t, "platform2.key")
	m := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{hsm, e.local}; c.PlatformKEK = p2 })
	alias := viaModule(t, tok, p1, copyModule(t))
	err = m.Provision(ctxT(t), newID("r1attacker"), keys.ProvisionOptions{KEKURI: alias})
	require.ErrorIs(t, err, keys.ErrKEKInUse)
	old.PurgeAll()
	_, err = old.Open(victimCtx, ct, field)
	require.NoError(t, err, "the victim's (old platform) key was destroyed")
}

// flaky forwards to a KMS client but fails AEAD calls for URIs containing
// bad, as a slow or busy module would (timeouts); DestroyKey still works.
type flaky struct {
	registry.KMSClient
	bad string
}

func (f *flaky) CanonicalKeyURI(u string) (string, error) {
	return f.KMSClient.(keys.KeyIdentifier).CanonicalKeyURI(u)
}
func (f *flaky) KeyIdentity(u string) (string, error) {
	return f.KMSClient.(keys.KeyIdentifier).KeyIdentity(u)
}
func (f *flaky) DestroyKey(ctx context.Context, u string) error {
	return f.KMSClient.(keys.KeyDestroyer).DestroyKey(ctx, u)
}
func (f *flaky) KeyExists(ctx context.Context, u string) (bool, error) {
	return f.KMSClient.(keys.KeyChecker).KeyExists(ctx, u)
}
func (f *flaky) GetAEAD(u string) (tink.AEAD, error) {
	a, err := f.KMSClient.GetAEAD(u)
	if err != nil || !strings.Contains(u, f.bad) {
		return a, err
	}
	return failing{}, nil
}

type failing struct{}

func (failing) Encrypt(_, _ []byte) ([]byte, error) { return nil, context.DeadlineExceeded }
func (failing) Decrypt(_, _ []byte) ([]byte, error) { return nil, context.DeadlineExceeded }

// A tenant row naming the platform key through another module file
// (provisioned before the probe existed): if the alias's calls fail
// (timeout, busy HSM), Shred cannot compare it and keeps it, instead of
// treating it as another key and destroying the platform key.
func TestShredKeepsAnOwnKeyThatDoesNotAnswer(t *testing.T) {
	e := newEnv(t)
	tok, platform, hsm := hsmKEK(t, "platform")
	module := copyModule(t)
	fl := &flaky{KMSClient: hsm, bad: module}
	m := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{fl}; c.PlatformKEK = platform })
	pctx, ct, id := ownRowsOnPlatformKeyViaModule(t, e, m, tok, platform, hsm, module)
	res, err := m.Shred(ctxT(t), id)
	require.ErrorContains(t, err, "does not answer", "Shred says why it kept the key")
	require.Empty(t, res.DestroyedKEKs)
	require.Len(t, res.RetainedKEKs, 1)
	m.PurgeAll()
	_, err = m.Open(pctx, ct, field)
	require.NoError(t, err, "the platform key was destroyed")
}

// The same rows, no failure injected: the probe before DestroyKey is what
// keeps the platform key (localkms's hard-link check would mask it).
func TestHSMShredKeepsAnOwnKeyThatIsThePlatformKeyThroughAnotherModule(t *testing.T) {
	e := newEnv(t)
	tok, platform, hsm := hsmKEK(t, "platform")
	module := copyModule(t)
	m := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{hsm}; c.PlatformKEK = platform })
	pctx, ct, id := ownRowsOnPlatformKeyViaModule(t, e, m, tok, platform, hsm, module)
	res, err := m.Shred(ctxT(t), id)
	require.NoError(t, err)
	require.Empty(t, res.DestroyedKEKs)
	require.Len(t, res.RetainedKEKs, 1)
	m.PurgeAll()
	_, err = m.Open(pctx, ct, field)
	require.NoError(t, err)
}

// ownRowsOnPlatformKeyViaModule provisions a tenant on the platform key and
// seals a value for it, then a tenant with its own key whose keyset rows
// are made to name the platform key through another module file, as if it
// had been provisioned before the probe existed. It returns the platform
// tenant's context and ciphertext, and the other tenant.
func ownRowsOnPlatformKeyViaModule(t *testing.T, e *env, m *keys.Manager, tok *softhsmtest.Token, platform string, hsm *pkcs11kms.Client, module string) (context.Context, []byte, tenant.ID) {
	t.Helper()
	_, pctx := provision(t, m, "viaplatform")
	ct, err := m.Seal(pctx, []byte("p"), field)
	require.NoError(t, err)
	own := tok.URI("own")
	require.NoError(t, hsm.GenerateKey(ctxT(t), own))
	id, _ := provision(t, m, "viaattacker", keys.ProvisionOptions{KEKURI: own})
	_, err = e.admin.Exec(ctxT(t), `UPDATE tenancy.tenant_keysets SET kek_uri = $2 WHERE tenant_id = $1`, id.String(), viaModule(t, tok, platform, module))
	require.NoError(t, err)
	return pctx, ct, id
}

// One MAC / StreamingAEAD kept for several items (an audit-chain
// verifier) follows a rotation on another replica for every item, not only
// the first within RefreshInterval.
func TestKeptMACAndStreamFollowARotationForEveryItem(t *testing.T) {
	e := newEnv(t)
	a := e.manager(t)
	b := e.manager(t, withMaxAge(time.Hour))
	id, ctx := provision(t, a, "r3")
	mb, err := b.MAC(ctx)
	require.NoError(t, err)
	sb, err := b.StreamingAEAD(ctx)
	require.NoError(t, err)
	require.NoError(t, a.Rotate(ctxT(t), id, keys.PurposeAudit))
	require.NoError(t, a.Rotate(ctxT(t), id, keys.PurposeBlob))
	ma, err := a.MAC(ctx)
	require.NoError(t, err)
	sa, err := a.StreamingAEAD(ctx)
	require.NoError(t, err)
	var macErrs, blobErrs []error
	for i := range 2 {
		entry := []byte{byte('a' + i)}
		tag, err := ma.ComputeMAC(entry)
		require.NoError(t, err)
		macErrs = append(macErrs, mb.VerifyMAC(tag, entry))
		var blob bytes.Buffer
		w, err := sa.NewEncryptingWriter(&blob, entry)
		require.NoError(t, err)
		_, err = w.Write([]byte("x"))
		require.NoError(t, err)
		require.NoError(t, w.Close())
		r, err := sb.NewDecryptingReader(bytes.NewReader(blob.Bytes()), entry)
		require.NoError(t, err)
		_, err = io.ReadAll(r)
		blobErrs = append(blobErrs, err)
	}
	require.NoError(t, errors.Join(append(macErrs, blobErrs...)...))
}

// The context the MAC was made with has ended (the request that made the
// verifier returned): the kept MAC still refreshes, and so does a new one.
func TestKeptMACRefreshesAfterItsContextEnded(t *testing.T) {
	e := newEnv(t)
	a := e.manager(t)
	b := e.manager(t, withMaxAge(time.Hour))
	id, ctx := provision(t, a, "r3b")
	cctx, cancel := context.WithCancel(ctx)
	mb, err := b.MAC(cctx)
	require.NoError(t, err)
	cancel()
	require.NoError(t, a.Rotate(ctxT(t), id, keys.PurposeAudit))
	ma, err := a.MAC(ctx)
	require.NoError(t, err)
	tag, err := ma.ComputeMAC([]byte("e"))
	require.NoError(t, err)
	require.NoError(t, mb.VerifyMAC(tag, []byte("e")), "the kept MAC refreshes though its context ended")
	fresh, err := b.MAC(ctx)
	require.NoError(t, err)
	require.NoError(t, fresh.VerifyMAC(tag, []byte("e")), "a fresh MAC with a live ctx right after")
}

// The customer rotating its own key (Rewrap from own to own'): running it
// again (it is resumable and idempotent) is not refused because to is now
// that tenant's own key.
func TestCustomerRewrapCanBeRunAgain(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	a, _ := e.keyURI(t, "custA.key")
	a2, _ := e.keyURI(t, "custA2.key")
	provision(t, m, "r4", keys.ProvisionOptions{KEKURI: a})
	_, err := m.Rewrap(ctxT(t), a, a2)
	require.NoError(t, err)
	res, err := m.Rewrap(ctxT(t), a, a2)
	require.NoError(t, err, "re-run of a finished customer rotation: %+v", res)
}

// Probing must not create local key files: Shred of an own-key tenant with
// the platform key file missing leaves it missing.
func TestShredDoesNotCreateAMissingPlatformKeyFile(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	own, _ := e.keyURI(t, "own5.key")
	other, _ := e.keyURI(t, "other5.key")
	provision(t, m, "r5other", keys.ProvisionOptions{KEKURI: other})
	id, _ := provision(t, m, "r5", keys.ProvisionOptions{KEKURI: own})
	provision(t, m, "r5platform")                                         // the platform key file exists ...
	require.NoError(t, os.Rename(e.platformPath, e.platformPath+".away")) // ... then is gone: a volume not mounted
	res, err := m.Shred(ctxT(t), id)
	require.NoError(t, err)
	require.Len(t, res.DestroyedKEKs, 1, "a platform key that does not exist is not the tenant's key")
	_, err = os.Stat(e.platformPath)
	require.ErrorIs(t, err, os.ErrNotExist, "Shred created a new platform key file")
}

// An interrupted customer rotation (own A -> own A') resumes.
func TestCustomerRewrapResumesAfterInterruption(t *testing.T) {
	e := newEnv(t)
	hc := &hookClient{KMSClient: e.local}
	m := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{hc} })
	a, _ := e.keyURI(t, "custA.key")
	a2, _ := e.keyURI(t, "custA2.key")
	id, _ := provision(t, m, "r4b", keys.ProvisionOptions{KEKURI: a})
	ctx, cancel := context.WithCancel(ctxT(t))
	before, probesBefore := hc.encrypts.Load(), hc.probes.Load()
	hc.setHook(func(op string, n int64) error {
		if op == "encrypt" && n-before-(hc.probes.Load()-probesBefore) == 2 {
			cancel() // the 2nd wrap, not counting the probes that compare keys
		}
		return nil
	})
	res, err := m.Rewrap(ctx, a, a2)
	require.ErrorIs(t, err, context.Canceled)
	require.Greater(t, res.Rewrapped, 0, "the first run did some of the work")
	require.Less(t, res.Rewrapped, len(keys.Purposes()), "the first run was interrupted")
	hc.setHook(nil)
	res2, err := m.Rewrap(ctxT(t), a, a2)
	require.NoError(t, err)
	require.Equal(t, len(keys.Purposes()), res.Rewrapped+res2.Rewrapped)
	for p, uri := range e.kekOf(t, id) {
		require.Equal(t, a2, uri, "%s keyset", p)
	}
}

type noDestroy struct{ flaky }

func (n *noDestroy) DestroyKey(context.Context, string) error { return nil }

// A re-run Shred (the key file is gone already) does not create the
// tenant's key file again through a probe.
func TestShredRerunDoesNotCreateTheDestroyedKeyFile(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	own, ownPath := e.keyURI(t, "own5b.key")
	other, _ := e.keyURI(t, "other5b.key")
	provision(t, m, "r5bother", keys.ProvisionOptions{KEKURI: other})
	id, _ := provision(t, m, "r5b", keys.ProvisionOptions{KEKURI: own})
	_, err := m.Shred(ctxT(t), id)
	require.NoError(t, err)
	_, err = os.Stat(ownPath)
	require.ErrorIs(t, err, os.ErrNotExist)
	m2 := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{&noDestroy{flaky{KMSClient: e.local, bad: "\x00"}}} })
	_, err = m2.Shred(ctxT(t), id)
	require.NoError(t, err)
	_, err = os.Stat(ownPath)
	require.ErrorIs(t, err, os.ErrNotExist, "the re-run Shred created the destroyed key file again")
}
