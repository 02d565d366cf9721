package keys_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestRotationKeepsOldDataReadableAndNewSealsUseTheNewKey(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	replica := e.manager(t) // another process with the keyset cached
	id, ctx := provision(t, m, "acme")

	old, err := m.Seal(ctx, []byte("before"), field)
	require.NoError(t, err)
	_, err = replica.Open(ctx, old, field)
	require.NoError(t, err)
	w1, err := e.store.Get(ctxT(t), id, keys.PurposeData)
	require.NoError(t, err)

	require.NoError(t, m.Rotate(ctxT(t), id, keys.PurposeData))
	w2, err := e.store.Get(ctxT(t), id, keys.PurposeData)
	require.NoError(t, err)
	require.Equal(t, w1.Version+1, w2.Version)
	require.Equal(t, w1.KEKURI, w2.KEKURI, "rotation keeps the master key")

	nu, err := m.Seal(ctx, []byte("after"), field)
	require.NoError(t, err)
	require.NotEqual(t, old[:5], nu[:5], "new seals must use the new primary key")
	for ct, want := range map[*[]byte]string{&old: "before", &nu: "after"} {
		got, err := m.Open(ctx, *ct, field)
		require.NoError(t, err)
		require.Equal(t, want, string(got))
	}
	// The replica still has the old keyset cached; a ciphertext under the
	// new key makes it re-read the keyset instead of failing.
	got, err := replica.Open(ctx, nu, field)
	require.NoError(t, err)
	require.Equal(t, "after", string(got))

	// Rotating again keeps both older keys.
	require.NoError(t, m.Rotate(ctxT(t), id, keys.PurposeData))
	for _, ct := range [][]byte{old, nu} {
		_, err := m.Open(ctx, ct, field)
		require.NoError(t, err)
	}
}

func TestGarbageKeyPrefixesDoNotCallTheMasterKey(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	_, ctx := provision(t, m, "acme")
	ct, err := m.Seal(ctx, []byte("x"), field)
	require.NoError(t, err)
	before := m.Stats().KEKCalls
	for i := range 100 {
		bad := bytes.Clone(ct)
		bad[1], bad[2] = byte(i), byte(i>>8) // unknown key IDs
		if bytes.Equal(bad[:5], ct[:5]) {
			bad[3] ^= 0xff // the random key ID happened to start with these bytes
		}
		_, err := m.Open(ctx, bad, field)
		requireVagueDecrypt(t, err)
	}
	require.Equal(t, before, m.Stats().KEKCalls, "unknown key IDs must cost at most a Store read, never a master-key call, while the version is unchanged")
}

func TestRotationOfBlobAndAuditKeysetsKeepsOldStreamsAndTagsValid(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	id, ctx := provision(t, m, "acme")

	s, err := m.StreamingAEAD(ctx)
	require.NoError(t, err)
	var old bytes.Buffer
	w, err := s.NewEncryptingWriter(&old, []byte("obj"))
	require.NoError(t, err)
	_, err = w.Write([]byte("old object"))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	mac, err := m.MAC(ctx)
	require.NoError(t, err)
	oldTag, err := mac.ComputeMAC([]byte("entry 1"))
	require.NoError(t, err)

	require.NoError(t, m.Rotate(ctxT(t), id, keys.PurposeBlob))
	require.NoError(t, m.Rotate(ctxT(t), id, keys.PurposeAudit))

	s, err = m.StreamingAEAD(ctx)
	require.NoError(t, err)
	r, err := s.NewDecryptingReader(bytes.NewReader(old.Bytes()), []byte("obj"))
	require.NoError(t, err)
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, "old object", string(got))

	mac, err = m.MAC(ctx)
	require.NoError(t, err)
	require.NoError(t, mac.VerifyMAC(oldTag, []byte("entry 1")), "a tag made before rotation must verify")
	newTag, err := mac.ComputeMAC([]byte("entry 1"))
	require.NoError(t, err)
	require.NotEqual(t, oldTag[:5], newTag[:5], "new tags must use the new key")
	require.NoError(t, mac.VerifyMAC(newTag, []byte("entry 1")))
}

func TestMasterRewrapKeepsDataReadableAndOldKEKIsNoLongerNeeded(t *testing.T) {
	e := newEnv(t)
	custKMS, custURI := customerKey(t)
	m := e.manager(t, withCustomerKMS(custKMS))
	type sealed struct {
		ctx context.Context
		ct  []byte
	}
	var all []sealed
	var ids []tenant.ID
	for range 5 {
		id, ctx := provision(t, m, "rw")
		ct, err := m.Seal(ctx, []byte(id.String()), field)
		require.NoError(t, err)
		all, ids = append(all, sealed{ctx, ct}), append(ids, id)
	}
	cust, custCtx := provision(t, m, "byok", keys.ProvisionOptions{CustomerKEK: custURI})
	custCT, err := m.Seal(custCtx, []byte("byok"), field)
	require.NoError(t, err)

	newURI, _ := e.keyURI(t, "platform-2025.key")
	before := m.Stats().KEKCalls
	res, err := m.Rewrap(ctxT(t), e.platform, newURI)
	require.NoError(t, err)
	require.Equal(t, keys.RewrapResult{Rewrapped: 15}, res)
	require.EqualValues(t, 30, m.Stats().KEKCalls-before, "one unwrap and one wrap per keyset")
	for _, id := range ids {
		for p, uri := range e.kekOf(t, id) {
			require.Equal(t, newURI, uri, "%s/%s", id, p)
		}
	}
	for p, uri := range e.kekOf(t, cust) {
		require.Equal(t, custURI, uri, "the platform re-wrap touched a customer-managed keyset (%s)", p)
	}

	// The old master key is gone: with a cold cache, everything still opens.
	removeFile(t, e.platformPath)
	for _, mgr := range []*keys.Manager{m, e.manager(t, withCustomerKMS(custKMS), func(c *keys.Config) { c.PlatformKEK = newURI })} {
		keys.PurgeAll(mgr)
		for _, s := range all {
			id, _ := tenant.FromContext(s.ctx)
			got, err := mgr.Open(s.ctx, s.ct, field)
			require.NoError(t, err)
			require.Equal(t, id.String(), string(got))
		}
		got, err := mgr.Open(custCtx, custCT, field)
		require.NoError(t, err)
		require.Equal(t, "byok", string(got))
	}

	// A second run has nothing left to do.
	res, err = m.Rewrap(ctxT(t), e.platform, newURI)
	require.NoError(t, err)
	require.Equal(t, keys.RewrapResult{}, res)
}

func TestRewrapResumesAfterInterruption(t *testing.T) {
	e := newEnv(t)
	newURI, _ := e.keyURI(t, "new.key")
	target := &hookClient{KMSClient: e.local}
	// The new key's client is listed first, so it serves newURI (and, being
	// a wrapper of the same local client, every other local URI too).
	m := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{target} })
	var ids []tenant.ID
	var cts [][]byte
	for range 10 {
		id, ctx := provision(t, m, "resume")
		ct, err := m.Seal(ctx, []byte("v"), field)
		require.NoError(t, err)
		ids, cts = append(ids, id), append(cts, ct)
	}
	count := func(uri keys.URI) int {
		n := 0
		for _, id := range ids {
			for _, u := range e.kekOf(t, id) {
				if u == uri {
					n++
				}
			}
		}
		return n
	}

	// The process is stopped after the 7th keyset is wrapped by the new key.
	ctx, cancel := context.WithCancel(ctxT(t))
	encryptsBefore := target.encrypts.Load()
	target.setHook(func(op string, n int64) error {
		if op == "encrypt" && n-encryptsBefore == 7 {
			cancel() // the 7th wrap
		}
		return nil
	})
	res1, err := m.Rewrap(ctx, e.platform, newURI)
	require.ErrorIs(t, err, context.Canceled)
	done := count(newURI)
	require.Equal(t, res1.Rewrapped, done)
	require.Greater(t, done, 0)
	require.Less(t, done, 30)
	require.Equal(t, 30, done+count(e.platform), "a keyset is on neither master key")

	target.setHook(nil)
	encryptsBefore = target.encrypts.Load()
	res2, err := m.Rewrap(ctxT(t), e.platform, newURI)
	require.NoError(t, err)
	require.Equal(t, 30-done, res2.Rewrapped, "the second run redoes or skips keysets")
	wraps := target.encrypts.Load() - encryptsBefore
	require.EqualValues(t, 30-done, wraps, "keysets already re-wrapped were wrapped again")
	require.Equal(t, 30, count(newURI))

	removeFile(t, e.platformPath)
	keys.PurgeAll(m)
	for i, id := range ids {
		_, err := m.Open(tenant.NewContext(ctxT(t), id), cts[i], field)
		require.NoError(t, err)
	}
}

func TestRewrapContinuesPastAFailingKeysetAndReportsIt(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	a, _ := provision(t, m, "ok")
	b, _ := provision(t, m, "corrupt")
	_, err := e.admin.Exec(ctxT(t), `UPDATE tenancy.tenant_keysets SET wrapped = '\x00' WHERE tenant_id = $1 AND purpose = 'blob'`, b.String())
	require.NoError(t, err)
	newURI, _ := e.keyURI(t, "new.key")
	res, err := m.Rewrap(ctxT(t), e.platform, newURI)
	require.ErrorIs(t, err, keys.ErrUnwrap)
	require.Contains(t, err.Error(), b.String())
	require.Equal(t, keys.RewrapResult{Rewrapped: 5, Failed: 1}, res)
	for _, uri := range e.kekOf(t, a) {
		require.Equal(t, newURI, uri)
	}
}

func TestRewrapToAMissingMasterKeyClientFailsBeforeTouchingAnything(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	id, _ := provision(t, m, "acme")
	_, err := m.Rewrap(ctxT(t), e.platform, "aws-kms://arn:aws:kms:us-east-1:1:key/x")
	require.ErrorIs(t, err, keys.ErrUnsupportedKEK)
	require.Contains(t, err.Error(), "to")
	for _, uri := range e.kekOf(t, id) {
		require.Equal(t, e.platform, uri)
	}
	_, err = os.Stat(e.platformPath)
	require.NoError(t, err)
}
