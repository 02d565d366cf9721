package keys_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	gcmpb "github.com/tink-crypto/tink-go/v2/proto/aes_gcm_go_proto"
	gcmhkdfpb "github.com/tink-crypto/tink-go/v2/proto/aes_gcm_hkdf_streaming_go_proto"
	hmacpb "github.com/tink-crypto/tink-go/v2/proto/hmac_go_proto"
	"github.com/tink-crypto/tink-go/v2/testing/fakekms"
	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/protobuf/proto"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

// unwrapWith unwraps w with kek the way keys does, for tests that play the
// attacker or need the oracle of the key bytes.
func unwrapWith(w keys.WrappedKeyset, kek tink.AEAD) (*keyset.Handle, error) {
	ad := []byte("tenancy/v1/keyset/" + w.Tenant.String() + "/" + string(w.Purpose))
	return keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(w.Wrapped)), kek, ad)
}

// keyBytes returns the raw key bytes of every key in h.
func keyBytes(t testing.TB, h *keyset.Handle) [][]byte {
	t.Helper()
	var out [][]byte
	for _, k := range insecurecleartextkeyset.KeysetMaterial(h).GetKey() {
		v := k.GetKeyData().GetValue()
		var raw []byte
		switch {
		case strings.HasSuffix(k.GetKeyData().GetTypeUrl(), "AesGcmKey"):
			var pk gcmpb.AesGcmKey
			require.NoError(t, proto.Unmarshal(v, &pk))
			raw = pk.GetKeyValue()
		case strings.HasSuffix(k.GetKeyData().GetTypeUrl(), "AesGcmHkdfStreamingKey"):
			var pk gcmhkdfpb.AesGcmHkdfStreamingKey
			require.NoError(t, proto.Unmarshal(v, &pk))
			raw = pk.GetKeyValue()
		case strings.HasSuffix(k.GetKeyData().GetTypeUrl(), "HmacKey"):
			var pk hmacpb.HmacKey
			require.NoError(t, proto.Unmarshal(v, &pk))
			raw = pk.GetKeyValue()
		default:
			t.Fatalf("unexpected key type %s", k.GetKeyData().GetTypeUrl())
		}
		require.Len(t, raw, 32)
		out = append(out, raw, v)
	}
	return out
}

func TestNothingPrintsKeyMaterial(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	id, ctx := provision(t, m, "acme")

	// The oracle: the tenant's actual key bytes, unwrapped the hard way.
	kek, err := e.local.GetAEAD(string(e.platform))
	require.NoError(t, err)
	var secrets [][]byte
	var wrapped []keys.WrappedKeyset
	for _, p := range keys.Purposes() {
		w, err := e.store.Get(ctxT(t), id, p)
		require.NoError(t, err)
		wrapped = append(wrapped, w)
		h, err := unwrapWith(w, kek)
		require.NoError(t, err)
		secrets = append(secrets, keyBytes(t, h)...)
	}

	// Everything that holds keys, warm.
	ct, err := m.Seal(ctx, []byte("x"), field)
	require.NoError(t, err)
	_, err = m.Open(ctx, ct, field)
	require.NoError(t, err)
	stream, err := m.StreamingAEAD(ctx)
	require.NoError(t, err)
	mac, err := m.MAC(ctx)
	require.NoError(t, err)
	_, err = m.Open(ctx, []byte("garbage"), field)
	values := []any{m, stream, *stream, mac, *mac, m.Stats(), wrapped[0], err, e.local}

	var out strings.Builder
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
			fmt.Fprintf(&out, verb+"\n", v)
		}
	}
	for _, h := range []slog.Handler{slog.NewJSONHandler(&out, nil), slog.NewTextHandler(&out, nil)} {
		slog.New(h).Info("dump", "manager", m, "stream", stream, "mac", mac, "keyset", wrapped[0], "values", values)
	}
	dump := out.String()
	require.Contains(t, dump, "keys.Manager{", "the dump should show the types' own String output")
	for i, s := range secrets {
		for _, enc := range []string{
			string(s), hex.EncodeToString(s), strings.ToUpper(hex.EncodeToString(s)),
			base64.StdEncoding.EncodeToString(s), base64.RawStdEncoding.EncodeToString(s),
			base64.URLEncoding.EncodeToString(s), base64.RawURLEncoding.EncodeToString(s),
			fmt.Sprint(s), fmt.Sprintf("%#v", s), fmt.Sprintf("%q", s),
		} {
			require.NotContains(t, dump, enc, "key material %d printed", i)
		}
		// Any 8-byte window of the key, hex-encoded, would be a partial leak.
		for j := 0; j+8 <= len(s); j += 4 {
			require.NotContains(t, dump, hex.EncodeToString(s[j:j+8]), "key material %d partially printed", i)
		}
	}
}

// The types that hold master key URIs print and log them redacted: a Tink
// fake-kms:// URI carries its key inline, and a PKCS#11 URI may carry a
// pin-value. No verb, and neither slog handler, shows the raw URI.
func TestNothingPrintsRawMasterKeyURIs(t *testing.T) {
	raw, err := fakekms.NewKeyURI()
	require.NoError(t, err)
	kek := keys.URI(raw)
	inline := strings.TrimPrefix(raw, "fake-kms://")
	const pin keys.URI = "pkcs11:token=t;object=k?module-path=/m&pin-value=s3cr3t-pin"
	fake, err := fakekms.NewClient(raw) // holds the key URI
	require.NoError(t, err)
	id := tenant.MustParseID("acme")
	w := keys.WrappedKeyset{Tenant: id, Purpose: keys.PurposeData, KEKURI: kek, KEKKind: keys.KEKTenant, Wrapped: []byte("wrapped-bytes-not-shown"), Version: 3}
	tomb := keys.Tombstone{Tenant: id, DestroyedAt: time.Now(), TenantKEKs: []keys.URI{kek, pin}}
	res := keys.ShredResult{Tombstone: tomb, DestroyedKEKs: []keys.URI{kek}, RetainedKEKs: []keys.URI{pin}}
	cfg := keys.DefaultConfig()
	cfg.Store, cfg.KMS, cfg.CustomerKMS, cfg.PlatformKEK = keys.NewMemStore(), []registry.KMSClient{fake}, []registry.KMSClient{fake}, kek
	cfg.RetiredKEKs = []keys.URI{kek}
	m, err := keys.New(cfg)
	require.NoError(t, err)
	values := []any{m,
		w, &w, []keys.WrappedKeyset{w}, tomb, &tomb, res, &res, cfg, &cfg,
		keys.ListOptions{KEKURI: kek, KEKURIPrefix: pin, Limit: 1},
		keys.ProvisionOptions{CustomerKEK: kek}, &keys.ProvisionOptions{CustomerKEK: pin},
		struct{ R keys.ShredResult }{res},
	}
	var out strings.Builder
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
			fmt.Fprintf(&out, verb+"\n", v)
		}
	}
	for _, h := range []slog.Handler{slog.NewJSONHandler(&out, nil), slog.NewTextHandler(&out, nil)} {
		slog.New(h).Info("dump", "keyset", w, "tombstone", tomb, "result", res, "config", cfg,
			"list", keys.ListOptions{KEKURI: kek}, "provision", keys.ProvisionOptions{CustomerKEK: kek}, "values", values)
	}
	dump := out.String()
	require.Contains(t, dump, kek.String(), "the dump should show the redacted URI")
	// The wrapped keysets (ciphertext under the master key, as the Store
	// holds them) may print; the master key URIs' secrets may not.
	for _, secret := range []string{inline, "s3cr3t-pin", hex.EncodeToString([]byte(inline)), hex.EncodeToString([]byte("s3cr3t-pin"))} {
		require.NotContains(t, dump, secret)
	}
}
