package keys_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/testing/fakekms"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestSealOpenRoundTrip(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	_, ctx := provision(t, m, "acme")
	for _, pt := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte("secret "), 1000)} {
		ct, err := m.Seal(ctx, pt, field)
		require.NoError(t, err)
		require.Len(t, ct, len(pt)+5+12+16)
		got, err := m.Open(ctx, ct, field)
		require.NoError(t, err)
		require.Equal(t, len(pt), len(got))
		require.True(t, bytes.Equal(pt, got))
	}
}

// REQ-DEPLOY-004 test case 5: "Encryption keys are tenant-specific".
// rtmx:req REQ-TEN-002 REQ-TEN-016
func TestKeysAreTenantSpecificCiphertextOfADoesNotOpenAsB(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	_, ctxA := provision(t, m, "alpha")
	_, ctxB := provision(t, m, "bravo")
	ct, err := m.Seal(ctxA, []byte("A's secret"), field)
	require.NoError(t, err)

	_, err = m.Open(ctxB, ct, field)
	requireVagueDecrypt(t, err, "B opening A's ciphertext must get exactly the vague ErrDecrypt")

	// Even the same plaintext under the same binding seals to unrelated
	// ciphertexts with different keys (different Tink key prefixes).
	ctB, err := m.Seal(ctxB, []byte("A's secret"), field)
	require.NoError(t, err)
	require.NotEqual(t, ct[:5], ctB[:5], "A and B share a key ID")
}

func TestWrappedKeysetOfACopiedIntoBsRowDoesNotOpen(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	a, ctxA := provision(t, m, "alpha")
	b, ctxB := provision(t, m, "bravo")
	ctA, err := m.Seal(ctxA, []byte("A's secret"), field)
	require.NoError(t, err)

	// An attacker with write access to the control plane (but not the
	// master key) copies A's wrapped data keyset into B's row.
	tag, err := e.admin.Exec(ctxT(t), `UPDATE tenancy.tenant_keysets dst SET wrapped = src.wrapped
		FROM tenancy.tenant_keysets src
		WHERE src.tenant_id = $1 AND src.purpose = 'data' AND dst.tenant_id = $2 AND dst.purpose = 'data'`, a.String(), b.String())
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())
	keys.PurgeAll(m)

	_, err = m.Open(ctxB, ctA, field)
	require.ErrorIs(t, err, keys.ErrUnwrap)
	require.Contains(t, err.Error(), e.platform, "the error names the master key")
	_, err = m.Seal(ctxB, []byte("x"), field)
	require.ErrorIs(t, err, keys.ErrUnwrap)

	// Nor does A's data keyset open as A's audit keyset (purpose is bound).
	_, err = e.admin.Exec(ctxT(t), `UPDATE tenancy.tenant_keysets dst SET wrapped = src.wrapped
		FROM tenancy.tenant_keysets src
		WHERE src.tenant_id = $1 AND src.purpose = 'data' AND dst.tenant_id = $1 AND dst.purpose = 'audit'`, a.String())
	require.NoError(t, err)
	_, err = m.MAC(ctxA)
	require.ErrorIs(t, err, keys.ErrUnwrap)
	// A's data keyset itself is untouched.
	got, err := m.Open(ctxA, ctA, field)
	require.NoError(t, err)
	require.Equal(t, "A's secret", string(got))
}

func TestOpenWithAnotherBindingFails(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	_, ctx := provision(t, m, "acme")
	b := keys.Binding{Table: "ab", Column: "c", RowKey: "42"}
	ct, err := m.Seal(ctx, []byte("v"), b)
	require.NoError(t, err)
	for name, other := range map[string]keys.Binding{
		"table":                 {Table: "ax", Column: "c", RowKey: "42"},
		"column":                {Table: "ab", Column: "d", RowKey: "42"},
		"row key":               {Table: "ab", Column: "c", RowKey: "43"},
		"shifted boundary":      {Table: "a", Column: "bc", RowKey: "42"},
		"shifted into row key":  {Table: "ab", Column: "c4", RowKey: "2"},
		"fields swapped":        {Table: "c", Column: "ab", RowKey: "42"},
		"row key with suffix":   {Table: "ab", Column: "c", RowKey: "42\x00"},
		"table with row prefix": {Table: "ab\x00\x00\x00\x01c", Column: "c", RowKey: "42"},
	} {
		_, err := m.Open(ctx, ct, other)
		requireVagueDecrypt(t, err, name)
	}
}

func TestTamperedCiphertextFails(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	_, ctx := provision(t, m, "acme")
	ct, err := m.Seal(ctx, []byte("short"), field)
	require.NoError(t, err)
	for i := range ct {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(ct)
			bad[i] ^= mask
			_, err := m.Open(ctx, bad, field)
			requireVagueDecrypt(t, err, "byte %d ^ %#x", i, mask)
		}
	}
	for n := range len(ct) {
		_, err := m.Open(ctx, ct[:n], field)
		requireVagueDecrypt(t, err, "truncated to %d bytes", n)
	}
	for _, ext := range [][]byte{{0}, {0xff}, ct} {
		_, err := m.Open(ctx, append(bytes.Clone(ct), ext...), field)
		requireVagueDecrypt(t, err, "extended by %d bytes", len(ext))
	}
	_, err = m.Open(ctx, append([]byte{0}, ct...), field)
	requireVagueDecrypt(t, err, "prepended byte")
}

func TestStreamingAEADIsTenantAndKeyBound(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	_, ctxA := provision(t, m, "alpha")
	_, ctxB := provision(t, m, "bravo")
	plain := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16 KB: several 4 KiB segments
	sA, err := m.StreamingAEAD(ctxA)
	require.NoError(t, err)
	var ct bytes.Buffer
	w, err := sA.NewEncryptingWriter(&ct, []byte("reports/q1.pdf"))
	require.NoError(t, err)
	_, err = w.Write(plain)
	require.NoError(t, err)
	require.NoError(t, w.Close())

	read := func(s *keys.StreamingAEAD, ciphertext []byte, ad string) ([]byte, error) {
		r, err := s.NewDecryptingReader(bytes.NewReader(ciphertext), []byte(ad))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(r)
	}
	got, err := read(sA, ct.Bytes(), "reports/q1.pdf")
	require.NoError(t, err)
	require.True(t, bytes.Equal(plain, got))

	sB, err := m.StreamingAEAD(ctxB)
	require.NoError(t, err)
	_, err = read(sB, ct.Bytes(), "reports/q1.pdf")
	require.ErrorIs(t, err, keys.ErrDecrypt, "another tenant")
	_, err = read(sA, ct.Bytes(), "reports/q2.pdf")
	require.ErrorIs(t, err, keys.ErrDecrypt, "another object key")
	bad := bytes.Clone(ct.Bytes())
	bad[len(bad)/2] ^= 1
	_, err = read(sA, bad, "reports/q1.pdf")
	require.ErrorIs(t, err, keys.ErrDecrypt, "tampered")
	_, err = read(sA, ct.Bytes()[:ct.Len()-1], "reports/q1.pdf")
	require.ErrorIs(t, err, keys.ErrDecrypt, "truncated")
}

func TestMACIsTenantBound(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	_, ctxA := provision(t, m, "alpha")
	_, ctxB := provision(t, m, "bravo")
	macA, err := m.MAC(ctxA)
	require.NoError(t, err)
	entry := []byte(`{"seq":1,"action":"login"}`)
	tag, err := macA.ComputeMAC(entry)
	require.NoError(t, err)
	require.NoError(t, macA.VerifyMAC(tag, entry))
	requireInvalidMAC(t, macA.VerifyMAC(tag, []byte(`{"seq":2,"action":"login"}`)))
	macB, err := m.MAC(ctxB)
	require.NoError(t, err)
	requireInvalidMAC(t, macB.VerifyMAC(tag, entry))
	tag[len(tag)-1] ^= 1
	requireInvalidMAC(t, macA.VerifyMAC(tag, entry))
}

func TestDataCallsWithoutTenantFailWithErrNoTenant(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	ctx := ctxT(t)
	_, err := m.Seal(ctx, []byte("x"), field)
	require.ErrorIs(t, err, tenant.ErrNoTenant)
	_, err = m.Open(ctx, []byte("x"), field)
	require.ErrorIs(t, err, tenant.ErrNoTenant)
	_, err = m.StreamingAEAD(ctx)
	require.ErrorIs(t, err, tenant.ErrNoTenant)
	_, err = m.MAC(ctx)
	require.ErrorIs(t, err, tenant.ErrNoTenant)
	// A zero ID in the context is no tenant either.
	_, err = m.Seal(tenant.NewContext(ctx, tenant.ID{}), []byte("x"), field)
	require.ErrorIs(t, err, tenant.ErrNoTenant)
}

// A StreamingAEAD or MAC not made by a Manager belongs to no tenant: it
// fails with ErrNoTenant rather than panicking.
func TestZeroStreamingAEADAndMACFailWithErrNoTenant(t *testing.T) {
	var s keys.StreamingAEAD
	_, err := s.NewEncryptingWriter(io.Discard, nil)
	require.ErrorIs(t, err, tenant.ErrNoTenant)
	_, err = s.NewDecryptingReader(strings.NewReader("x"), nil)
	require.ErrorIs(t, err, tenant.ErrNoTenant)
	var mac keys.MAC
	_, err = mac.ComputeMAC([]byte("x"))
	require.ErrorIs(t, err, tenant.ErrNoTenant)
	require.ErrorIs(t, mac.VerifyMAC([]byte("t"), []byte("x")), tenant.ErrNoTenant)
	var nilMAC *keys.MAC
	_, err = nilMAC.ComputeMAC([]byte("x"))
	require.ErrorIs(t, err, tenant.ErrNoTenant)
}

func TestNeverProvisionedTenantGetsErrNoKeys(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	ctx := tenant.NewContext(ctxT(t), newID("ghost"))
	_, err := m.Seal(ctx, []byte("x"), field)
	require.ErrorIs(t, err, keys.ErrNoKeys)
	require.NotErrorIs(t, err, keys.ErrKeyDestroyed)
}

func TestProvisionIsIdempotentAndWritesAllThreeKeysets(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	id, ctx := provision(t, m, "acme")
	n, _ := e.rows(t, id)
	require.Equal(t, 3, n)
	ct, err := m.Seal(ctx, []byte("x"), field)
	require.NoError(t, err)
	require.NoError(t, m.Provision(ctxT(t), id, keys.ProvisionOptions{}), "a re-run (crashed lifecycle step) is a no-op")
	got, err := m.Open(ctx, ct, field)
	require.NoError(t, err, "a re-run must not replace the keys")
	require.Equal(t, "x", string(got))

	fake, err := fakekms.NewClient("fake-kms://")
	require.NoError(t, err)
	cust, err := fakekms.NewKeyURI()
	require.NoError(t, err)
	err = e.manager(t, withCustomerKMS(fake)).Provision(ctxT(t), id, keys.ProvisionOptions{CustomerKEK: keys.URI(cust)})
	require.ErrorIs(t, err, keys.ErrExists, "a tenant on the platform key is not moved to a customer key by Provision")
}

func TestMasterKeyUnavailableDuringProvisioningWritesNothing(t *testing.T) {
	e := newEnv(t)
	// The HSM goes away after the first keyset is wrapped.
	flaky := &hookClient{KMSClient: e.local}
	flaky.setHook(func(op string, n int64) error {
		if op == "encrypt" && n >= 2 {
			return errors.New("CKR_DEVICE_REMOVED")
		}
		return nil
	})
	uri, _ := e.keyURI(t, "hsm.key")
	m := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{flaky}; c.PlatformKEK = uri })
	id := newID("halfway")
	err := m.Provision(ctxT(t), id, keys.ProvisionOptions{})
	require.ErrorIs(t, err, keys.ErrUnwrap)
	require.Contains(t, err.Error(), uri)
	require.Contains(t, err.Error(), "CKR_DEVICE_REMOVED")
	n, tombs := e.rows(t, id)
	require.Zero(t, n, "provisioning wrote keysets half-way")
	require.Zero(t, tombs)
	// Once the HSM is back, provisioning succeeds.
	flaky.setHook(nil)
	require.NoError(t, m.Provision(ctxT(t), id, keys.ProvisionOptions{}))
	n, _ = e.rows(t, id)
	require.Equal(t, 3, n)
}

func TestMasterKeyMissingFileGivesErrorNamingTheURI(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	_, ctx := provision(t, m, "acme")
	removeFile(t, e.platformPath)
	keys.PurgeAll(m)
	_, err := m.Seal(ctx, []byte("x"), field)
	require.ErrorIs(t, err, keys.ErrUnwrap)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.Contains(t, err.Error(), e.platform)
	require.True(t, strings.HasPrefix(err.Error(), "keys: "), err.Error())
}

// swappingStore answers Get for one tenant with another tenant's keyset,
// as a broken or hostile Store might.
type swappingStore struct {
	keys.Store
	from, to tenant.ID
}

func (s swappingStore) Get(ctx context.Context, id tenant.ID, p keys.Purpose) (keys.WrappedKeyset, error) {
	if id == s.from {
		id = s.to
	}
	return s.Store.Get(ctx, id, p)
}

// A Store that hands back another tenant's keyset is caught before the
// keyset is unwrapped or used: no call of tenant A runs on B's keys.
func TestStoreReturningAnotherTenantsKeysetIsRefused(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	a, ctxA := provision(t, m, "swapa")
	b, _ := provision(t, m, "swapb")
	calls := m.Stats().KEKCalls
	swapped := e.manager(t, func(c *keys.Config) { c.Store = swappingStore{Store: e.store, from: a, to: b} })
	_, err := swapped.Seal(ctxA, []byte("x"), field)
	require.ErrorContains(t, err, "the store returned")
	require.ErrorContains(t, err, b.String())
	require.Equal(t, calls, m.Stats().KEKCalls)
	require.Zero(t, swapped.Stats().KEKCalls, "the wrong keyset was not even unwrapped")
}

// requireVagueDecrypt checks that err is Open's one error for a ciphertext
// that does not open, and says nothing more.
func requireVagueDecrypt(t *testing.T, err error, msgAndArgs ...any) {
	t.Helper()
	require.ErrorIs(t, err, keys.ErrDecrypt, msgAndArgs...)
	require.Equal(t, "keys: Open: decryption failed", err.Error(), msgAndArgs...)
}

// requireInvalidMAC is requireVagueDecrypt for VerifyMAC.
func requireInvalidMAC(t *testing.T, err error, msgAndArgs ...any) {
	t.Helper()
	require.ErrorIs(t, err, keys.ErrInvalidMAC, msgAndArgs...)
	require.Equal(t, "keys: VerifyMAC: invalid MAC", err.Error(), msgAndArgs...)
}
