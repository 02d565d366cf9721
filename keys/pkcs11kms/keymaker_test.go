package pkcs11kms_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/rtmx-ai/tenancy/internal/softhsmtest"
	"github.com/rtmx-ai/tenancy/keys/pkcs11kms"
)

// The interface keys.Manager takes (keys.KeyMaker), restated: this package
// does not import keys.
var _ interface {
	CreateKey(ctx context.Context, label string) (keyURI string, err error)
	DestroyKeys(ctx context.Context, label string) error
	Owns(keyURI, label string) bool
} = (*pkcs11kms.KeyMaker)(nil)

// baseURI returns the base URI of tok for NewKeyMaker: tok.URI without the
// object.
func baseURI(tok *softhsmtest.Token) string {
	return strings.Replace(tok.URI("x"), ";object=x", "", 1)
}

// newKeyMaker returns a KeyMaker for tok through c.
func newKeyMaker(tb testing.TB, c *pkcs11kms.Client, tok *softhsmtest.Token) *pkcs11kms.KeyMaker {
	tb.Helper()
	m, err := pkcs11kms.NewKeyMaker(c, baseURI(tok))
	if err != nil {
		tb.Fatalf("NewKeyMaker: %v", err)
	}
	return m
}

// makerKey creates a key labelled label with m and returns its URI.
func makerKey(tb testing.TB, m *pkcs11kms.KeyMaker, label string) string {
	tb.Helper()
	uri, err := m.CreateKey(tb.Context(), label)
	if err != nil {
		tb.Fatalf("CreateKey(%q): %v", label, err)
	}
	return uri
}

// keyID returns the CKA_ID in uri.
func keyID(tb testing.TB, uri string) []byte {
	tb.Helper()
	k, err := pkcs11kms.ParseKeyURI(uri)
	if err != nil {
		tb.Fatal(err)
	}
	return k.ID
}

// seal encrypts pt under the key uri names, through c.
func seal(tb testing.TB, c *pkcs11kms.Client, uri string, pt, ad []byte) []byte {
	tb.Helper()
	a, err := c.GetAEAD(uri)
	if err != nil {
		tb.Fatalf("GetAEAD(%s): %v", uri, err)
	}
	ct, err := a.Encrypt(pt, ad)
	if err != nil {
		tb.Fatalf("Encrypt: %v", err)
	}
	return ct
}

// opens fails unless the key uri names, through c, decrypts ct to pt.
func opens(tb testing.TB, c *pkcs11kms.Client, uri string, ct, pt, ad []byte) {
	tb.Helper()
	a, err := c.GetAEAD(uri)
	if err != nil {
		tb.Fatalf("GetAEAD(%s): %v", uri, err)
	}
	got, err := a.Decrypt(ct, ad)
	if err != nil || !bytes.Equal(got, pt) {
		tb.Fatalf("Decrypt under %s = %q, %v; want %q", uri, got, err, pt)
	}
}

// openHSM opens tok with crypto11 directly, to make objects pkcs11kms
// would not make. It names the module by its resolved path, as pkcs11kms
// does, so that the module is initialised once.
func openHSM(tb testing.TB, tok *softhsmtest.Token) *crypto11.Context {
	tb.Helper()
	module, err := filepath.EvalSymlinks(tok.Module)
	if err != nil {
		tb.Fatal(err)
	}
	hsm, err := crypto11.Configure(&crypto11.Config{Path: module, TokenLabel: tok.Label, Pin: tok.PIN})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = hsm.Close() })
	return hsm
}

// withSession runs f in a read-write PKCS#11 session on tok, through
// miekg/pkcs11, for what crypto11 cannot do: list every object of the
// token, make a data object. hsm keeps the module initialised and the user
// logged in meanwhile: the session shares both.
func withSession(tb testing.TB, tok *softhsmtest.Token, hsm *crypto11.Context, f func(p *pkcs11.Ctx, s pkcs11.SessionHandle)) {
	tb.Helper()
	_ = hsm // held open by the caller
	module, err := filepath.EvalSymlinks(tok.Module)
	if err != nil {
		tb.Fatal(err)
	}
	p := pkcs11.New(module)
	if p == nil {
		tb.Fatalf("pkcs11.New(%s) failed", module)
	}
	defer p.Destroy() // unloads this handle only; crypto11's stays initialised
	if err := p.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		tb.Fatalf("C_Initialize: %v", err)
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		tb.Fatal(err)
	}
	for _, slot := range slots {
		info, err := p.GetTokenInfo(slot)
		if err != nil || info.Label != tok.Label {
			continue
		}
		s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			tb.Fatal(err)
		}
		defer p.CloseSession(s)
		f(p, s)
		return
	}
	tb.Fatalf("token %s not found", tok.Label)
}

// tokenObjects lists every object of tok that the logged-in user sees,
// by handle: class, key type, label and ID.
func tokenObjects(tb testing.TB, tok *softhsmtest.Token, hsm *crypto11.Context) map[pkcs11.ObjectHandle]string {
	tb.Helper()
	objs := map[pkcs11.ObjectHandle]string{}
	withSession(tb, tok, hsm, func(p *pkcs11.Ctx, s pkcs11.SessionHandle) {
		if err := p.FindObjectsInit(s, nil); err != nil {
			tb.Fatal(err)
		}
		var handles []pkcs11.ObjectHandle
		for {
			hs, _, err := p.FindObjects(s, 100)
			if err != nil {
				tb.Fatal(err)
			}
			if len(hs) == 0 {
				break
			}
			handles = append(handles, hs...)
		}
		if err := p.FindObjectsFinal(s); err != nil {
			tb.Fatal(err)
		}
		for _, h := range handles {
			attrs, err := p.GetAttributeValue(s, h, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, nil),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
			})
			if err != nil {
				tb.Fatal(err)
			}
			class := ulongOf(attrs[0].Value)
			desc := fmt.Sprintf("class=%d label=%q", class, attrs[1].Value)
			if class == pkcs11.CKO_SECRET_KEY {
				ka, err := p.GetAttributeValue(s, h, []*pkcs11.Attribute{
					pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
					pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
				})
				if err != nil {
					tb.Fatal(err)
				}
				desc += fmt.Sprintf(" id=%x key-type=%d", ka[0].Value, ulongOf(ka[1].Value))
			}
			objs[h] = desc
		}
	})
	return objs
}

// ulongOf decodes a CK_ULONG attribute value (native byte order).
func ulongOf(b []byte) uint {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b))
	case 4:
		return uint(binary.NativeEndian.Uint32(b))
	}
	return 0
}

// aesKeysLabelled returns the descriptions of the AES keys labelled label
// in objs.
func aesKeysLabelled(objs map[pkcs11.ObjectHandle]string, label string) []string {
	var keys []string
	for _, d := range objs {
		if strings.Contains(d, fmt.Sprintf("class=%d label=%q ", pkcs11.CKO_SECRET_KEY, label)) &&
			strings.HasSuffix(d, fmt.Sprintf(" key-type=%d", pkcs11.CKK_AES)) {
			keys = append(keys, d)
		}
	}
	return keys
}

// notOpens fails unless the key uri names, through c, refuses ct.
func notOpens(tb testing.TB, c *pkcs11kms.Client, uri string, ct []byte) {
	tb.Helper()
	a, err := c.GetAEAD(uri)
	if err != nil {
		tb.Fatalf("GetAEAD(%s): %v", uri, err)
	}
	if _, err := a.Decrypt(ct, nil); !errors.Is(err, pkcs11kms.ErrDecrypt) {
		tb.Fatalf("Decrypt under %s of another key's ciphertext: %v, want ErrDecrypt", uri, err)
	}
}

// distinctKeys fails unless the URIs are distinct, each names a working
// key of m with label, and a ciphertext of one opens under it alone.
func distinctKeys(tb testing.TB, c *pkcs11kms.Client, m *pkcs11kms.KeyMaker, label string, uris []string) {
	tb.Helper()
	seen := map[string]bool{}
	cts := make([][]byte, len(uris))
	for i, uri := range uris {
		if seen[uri] {
			tb.Fatalf("URI %s given twice", uri)
		}
		seen[uri] = true
		if !m.Owns(uri, label) {
			tb.Fatalf("Owns(%s, %q) = false", uri, label)
		}
		cts[i] = seal(tb, c, uri, []byte(uri), nil)
	}
	for i, uri := range uris {
		for j, ct := range cts {
			if i == j {
				opens(tb, c, uri, ct, []byte(uri), nil)
			} else {
				notOpens(tb, c, uri, ct)
			}
		}
	}
}

func TestLabelsRefusedNamingTheRule(t *testing.T) {
	// No such token: a label is refused before the token is opened.
	m, err := pkcs11kms.NewKeyMaker(newClient(t), "pkcs11:token=gov?module-path="+softhsmtest.ModulePath(t)+"&pin-source=file:/run/pin")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ label, rule string }{
		{"", "must not be empty"},
		{strings.Repeat("a", 65), "65 bytes, longer than 64"},
		{"Acme", "must start with a lower-case letter or a digit"},
		{"_acme", "must start with a lower-case letter or a digit"},
		{"-acme", "must start with a lower-case letter or a digit"},
		{".acme", "must start with a lower-case letter or a digit"},
		{"tenancy-tenant-Acme", `"A" at byte 15`},
		{"tenant.acme", `"." at byte 6`},
		{"tenant/acme", `"/" at byte 6`},
		{"tenant acme", `" " at byte 6`},
		{"tenant;token=x", `";" at byte 6`},
		{"tenant%41", `"%" at byte 6`},
		{"tenant\x00", `"\x00" at byte 6`},
		{"tenant\n", `"\n" at byte 6`},
		{"acmé", "only lower-case letters, digits, '_' and '-' are allowed"},
	} {
		uri, err := m.CreateKey(t.Context(), tc.label)
		derr := m.DestroyKeys(t.Context(), tc.label)
		for name, err := range map[string]error{"CreateKey": err, "DestroyKeys": derr} {
			var ue *pkcs11kms.URIError
			if !errors.Is(err, pkcs11kms.ErrInvalidURI) || !errors.As(err, &ue) || ue.Attr != "object" {
				t.Errorf("%s(%q) = %v; want a URIError for the object", name, tc.label, err)
				continue
			}
			if !strings.Contains(err.Error(), tc.rule) {
				t.Errorf("%s(%q): %q does not name the rule (%q)", name, tc.label, err, tc.rule)
			}
			if strings.ContainsAny(err.Error(), "\x00\n") {
				t.Errorf("%s(%q): the error carries the raw label: %q", name, tc.label, err)
			}
		}
		if uri != "" {
			t.Errorf("CreateKey(%q) gave a URI with its error: %q", tc.label, uri)
		}
	}
	// The labels of the rule, on a real token.
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	m = newKeyMaker(t, c, tok)
	for _, label := range []string{"a", "0", "tenancy-tenant-acme", "tenancy-tenant-a_b", "0-_", strings.Repeat("z", 64)} {
		uri := makerKey(t, m, label)
		if !strings.Contains(uri, ";object="+label+";id=") || !m.Owns(uri, label) {
			t.Errorf("CreateKey(%q) = %q; want a URI with object=%s and an id", label, uri, label)
		}
		opens(t, c, uri, seal(t, c, uri, []byte(label), nil), []byte(label), nil)
		if err := m.DestroyKeys(t.Context(), label); err != nil {
			t.Errorf("DestroyKeys(%q): %v", label, err)
		}
	}
}

// CreateKey gives the canonical URI of the key it made, with its 16-byte
// id, whatever spelling of the base URI the maker was made with.
func TestCreateKeyGivesTheCanonicalURI(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	links := moduleLinks(t, tok.Module)
	t.Setenv("PKCS11KMS_TEST_MAKER_PIN", tok.PIN)
	label := "tenancy-tenant-acme"
	labelURI, err := c.CanonicalKeyURI(tok.URI(label)) // without an id
	if err != nil {
		t.Fatal(err)
	}
	before, _, _ := strings.Cut(labelURI, "?")
	tokenAttr := "token=" + softhsmtest.Escape(tok.Label)
	for _, base := range []string{
		baseURI(tok),
		"pkcs11:type=secret-key;" + tokenAttr + "?pin-source=file:" + tok.PINFile + "&module-path=" + tok.Module,
		"pkcs11:" + tokenAttr + "?module-path=" + links[2] + "&pin-source=file:" + strings.ReplaceAll(tok.PINFile, "/", "%2F"),
		"pkcs11:" + tokenAttr + "?module-path=" + tok.Module + "&pin-source=env:PKCS11KMS_TEST_MAKER_PIN",
	} {
		m, err := pkcs11kms.NewKeyMaker(c, base)
		if err != nil {
			t.Fatalf("NewKeyMaker(%s): %v", base, err)
		}
		uri := makerKey(t, m, label)
		if canon, err := c.CanonicalKeyURI(uri); err != nil || canon != uri {
			t.Errorf("maker of %s: CreateKey gave %q, not canonical (%q, %v)", base, uri, canon, err)
		}
		if id := keyID(t, uri); len(id) != 16 || !strings.HasPrefix(uri, before+";id="+fmt.Sprintf("%%%02X", id[0])) {
			t.Errorf("maker of %s: CreateKey gave %q; want %s;id=<16 bytes>?...", base, uri, before)
		}
		if !strings.HasSuffix(uri, "?module-path="+strings.TrimPrefix(labelURI, before+"?module-path=")) &&
			!strings.HasSuffix(uri, "&pin-source=env:PKCS11KMS_TEST_MAKER_PIN") {
			t.Errorf("maker of %s: CreateKey gave %q; want the query of %s", base, uri, labelURI)
		}
	}
	m := newKeyMaker(t, c, tok)
	if s := m.String(); !strings.Contains(s, tok.Label) || strings.Contains(s, tok.PIN) {
		t.Errorf("String() = %q", s)
	}
}

func TestNewKeyMakerRefusesBaseURIs(t *testing.T) {
	module := softhsmtest.ModulePath(t)
	q := "?module-path=" + module + "&pin-source=env:PIN"
	other := filepath.Join(t.TempDir(), "other.so")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	anyModule := newClient(t)
	allowOnlyOther := newClient(t, pkcs11kms.WithModulePaths(other))
	closed, err := pkcs11kms.NewClient("pkcs11:")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	prefixed := func(prefix string) *pkcs11kms.Client {
		c, err := pkcs11kms.NewClient(prefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	for _, tc := range []struct {
		name   string
		c      *pkcs11kms.Client
		base   string
		want   error
		attr   string // for ErrInvalidURI: the attribute named
		saying string
	}{
		{"an object", anyModule, "pkcs11:token=gov;object=kek" + q, pkcs11kms.ErrInvalidURI, "object", "not allowed in a base URI"},
		{"an id", anyModule, "pkcs11:token=gov;id=%01" + q, pkcs11kms.ErrInvalidURI, "id", "not allowed in a base URI"},
		{"a pin-value", anyModule, "pkcs11:token=gov?module-path=" + module + "&pin-value=1234", pkcs11kms.ErrInvalidURI, "pin-value", "refused"},
		{"no token", anyModule, "pkcs11:type=secret-key" + q, pkcs11kms.ErrInvalidURI, "token", "missing"},
		{"an empty path", anyModule, "pkcs11:" + q, pkcs11kms.ErrInvalidURI, "", "token is required"},
		{"no module-path", anyModule, "pkcs11:token=gov?pin-source=env:PIN", pkcs11kms.ErrInvalidURI, "module-path", "missing"},
		{"no pin-source", anyModule, "pkcs11:token=gov?module-path=" + module, pkcs11kms.ErrInvalidURI, "pin-source", "missing"},
		{"another scheme", anyModule, "local:///keys", pkcs11kms.ErrInvalidURI, "", "scheme"},
		{"a module that is not installed", anyModule, "pkcs11:token=gov?module-path=/opt/not-installed/hsm.so&pin-source=env:PIN", pkcs11kms.ErrHSM, "", "resolving its path"},
		{"a module not allowed", allowOnlyOther, "pkcs11:token=gov" + q, pkcs11kms.ErrModuleNotAllowed, "", module},
		{"a token outside the prefix", prefixed("pkcs11:token=beta;"), "pkcs11:token=gov" + q, pkcs11kms.ErrUnsupportedURI, "", "does not accept every key of token"},
		{"a prefix naming objects", prefixed("pkcs11:token=gov;object=tenancy-"), "pkcs11:token=gov" + q, pkcs11kms.ErrUnsupportedURI, "", `may end at "pkcs11:token=gov;object="`},
		{"a closed client", closed, "pkcs11:token=gov" + q, pkcs11kms.ErrClosed, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := pkcs11kms.NewKeyMaker(tc.c, tc.base)
			if !errors.Is(err, tc.want) {
				t.Fatalf("NewKeyMaker = %v, %v; want %v", m, err, tc.want)
			}
			var ue *pkcs11kms.URIError
			if tc.want == pkcs11kms.ErrInvalidURI && (!errors.As(err, &ue) || ue.Attr != tc.attr) {
				t.Fatalf("error %v does not name attribute %q", err, tc.attr)
			}
			if !strings.Contains(err.Error(), tc.saying) {
				t.Fatalf("error %q does not say %q", err, tc.saying)
			}
		})
	}
	if _, err := pkcs11kms.NewKeyMaker(nil, "pkcs11:token=gov"+q); err == nil {
		t.Error("NewKeyMaker(nil) succeeded")
	}
	for _, prefix := range []string{"pkcs11:", "pkcs11:token=gov;", "pkcs11:token=gov", "pkcs11:token=gov;object="} {
		if _, err := pkcs11kms.NewKeyMaker(prefixed(prefix), "pkcs11:token=gov"+q); err != nil {
			t.Errorf("NewKeyMaker with a client for %q: %v", prefix, err)
		}
	}
}

func TestCreateKeyMakesAKeyGetAEADUses(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	uri := makerKey(t, newKeyMaker(t, c, tok), "tenancy-tenant-acme")
	ad := []byte("tenant=acme")
	ct := seal(t, c, uri, []byte("acme keyset"), ad)
	opens(t, c, uri, ct, []byte("acme keyset"), ad)
	// Through another client (a restarted process, in effect).
	opens(t, newClient(t), uri, ct, []byte("acme keyset"), ad)

	// The key has the label and the id of its URI, and is made as
	// GenerateKey makes its keys.
	hsm := openHSM(t, tok)
	key, err := hsm.FindKey(keyID(t, uri), []byte("tenancy-tenant-acme"))
	if err != nil || key == nil {
		t.Fatalf("FindKey by the URI's id and label: %v, %v", key, err)
	}
	attrs, err := hsm.GetAttributes(key, []crypto11.AttributeType{
		crypto11.CkaToken, crypto11.CkaPrivate, crypto11.CkaSensitive, crypto11.CkaExtractable,
		crypto11.CkaWrap, crypto11.CkaUnwrap, crypto11.CkaSign, crypto11.CkaVerify, crypto11.CkaDerive,
		crypto11.CkaEncrypt, crypto11.CkaDecrypt, crypto11.CkaAlwaysSensitive, crypto11.CkaNeverExtractable,
	})
	if err != nil {
		t.Fatal(err)
	}
	for typ, want := range map[crypto11.AttributeType]bool{
		crypto11.CkaToken: true, crypto11.CkaPrivate: true, crypto11.CkaSensitive: true,
		crypto11.CkaExtractable: false, crypto11.CkaWrap: false, crypto11.CkaUnwrap: false,
		crypto11.CkaSign: false, crypto11.CkaVerify: false, crypto11.CkaDerive: false,
		crypto11.CkaEncrypt: true, crypto11.CkaDecrypt: true,
		crypto11.CkaAlwaysSensitive: true, crypto11.CkaNeverExtractable: true,
	} {
		if a := attrs[typ]; a == nil || len(a.Value) != 1 || (a.Value[0] == 1) != want {
			t.Errorf("attribute %#x = %v, want %v", typ, a, want)
		}
	}
}

// Every CreateKey makes another key, even for a label that has keys: two
// URIs, two keys, each opening its own ciphertexts only. A key with the
// label made otherwise (GenerateKey) is no obstacle either.
func TestCreateKeyTwiceMakesTwoKeys(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	m := newKeyMaker(t, c, tok)
	const label = "tenancy-tenant-acme"
	if err := c.GenerateKey(t.Context(), tok.URI(label)); err != nil {
		t.Fatal(err)
	}
	one := makerKey(t, m, label)
	two := makerKey(t, m, label)
	if one == two || bytes.Equal(keyID(t, one), keyID(t, two)) {
		t.Fatalf("two CreateKey calls gave %s and %s", one, two)
	}
	// A maker of another client, as after a restart.
	three := makerKey(t, newKeyMaker(t, newClient(t), tok), label)
	distinctKeys(t, c, m, label, []string{one, two, three})
	if keys := aesKeysLabelled(tokenObjects(t, tok, openHSM(t, tok)), label); len(keys) != 4 {
		t.Fatalf("%d AES keys labelled %s, want 4 (3 made by CreateKey, 1 by GenerateKey): %v", len(keys), label, keys)
	}
	// The label alone names no one key now.
	if _, err := c.GetAEAD(tok.URI(label)); !errors.Is(err, pkcs11kms.ErrHSM) || !strings.Contains(err.Error(), "4 keys have that label") {
		t.Fatalf("GetAEAD of the label alone: %v, want ErrHSM saying there are 4 keys", err)
	}
}

// CreateKey from many goroutines at once, with one label: as many keys,
// all distinct, no error.
func TestCreateKeyConcurrentGoroutinesMakeDistinctKeys(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	m := newKeyMaker(t, c, tok)
	const label, n = "tenancy-tenant-acme", 12
	uris := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { uris[i], errs[i] = m.CreateKey(t.Context(), label) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	distinctKeys(t, c, m, label, uris)
	if keys := aesKeysLabelled(tokenObjects(t, tok, openHSM(t, tok)), label); len(keys) != n {
		t.Fatalf("%d AES keys labelled %s, want %d: %v", len(keys), label, n, keys)
	}
}

// DestroyKeys destroys every AES key with the label and nothing else: the
// token's objects afterwards are those before less those keys, whatever
// else shares the label or the token.
func TestDestroyKeysDestroysExactlyTheLabelsKeys(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	tokB := softhsmtest.NewToken(t)
	c := newClient(t)
	ctx := t.Context()
	m, mB := newKeyMaker(t, c, tok), newKeyMaker(t, c, tokB)
	const label = "tenancy-tenant-acme"
	platform, _ := newKey(t, c, tok, "platform-kek")
	acme := []string{makerKey(t, m, label), makerKey(t, m, label)} // one left by a resumed Provision
	acme2 := makerKey(t, m, "tenancy-tenant-acme2")
	acm := makerKey(t, m, "tenancy-tenant-acm")
	beta := makerKey(t, m, "tenancy-tenant-beta")
	acmeB := makerKey(t, mB, label) // same label, other token
	kept := []string{platform, acme2, acm, beta, acmeB}
	cts := map[string][]byte{}
	for _, uri := range append(slices.Clone(kept), acme...) {
		cts[uri] = seal(t, c, uri, []byte(uri), nil)
	}
	acmeAEAD, err := c.GetAEAD(acme[0])
	if err != nil {
		t.Fatal(err)
	}

	hsm := openHSM(t, tok)
	// Objects of other kinds with the label, which the maker never makes:
	// a DES3 key, a data object. They stay.
	if _, err := hsm.GenerateSecretKeyWithLabel([]byte("des3"), []byte(label), 0, crypto11.CipherDES3); err != nil {
		t.Fatal(err)
	}
	withSession(t, tok, hsm, func(p *pkcs11.Ctx, s pkcs11.SessionHandle) {
		if _, err := p.CreateObject(s, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, []byte("data")),
		}); err != nil {
			t.Fatal(err)
		}
	})
	before := tokenObjects(t, tok, hsm)
	beforeB := tokenObjects(t, tokB, openHSM(t, tokB))
	if err := m.DestroyKeys(ctx, label); err != nil {
		t.Fatal(err)
	}
	after := tokenObjects(t, tok, hsm)
	var gone []string
	for h, d := range before {
		if after[h] != d {
			gone = append(gone, d)
		}
	}
	slices.Sort(gone)
	var want []string
	for _, uri := range acme {
		want = append(want, fmt.Sprintf("class=%d label=%q id=%x key-type=%d", pkcs11.CKO_SECRET_KEY, label, keyID(t, uri), pkcs11.CKK_AES))
	}
	slices.Sort(want)
	if !slices.Equal(gone, want) {
		t.Fatalf("DestroyKeys removed %v; want exactly the AES keys labelled %s: %v", gone, label, want)
	}
	if len(after) != len(before)-len(acme) {
		t.Fatalf("%d objects before, %d after: DestroyKeys made objects", len(before), len(after))
	}
	if afterB := tokenObjects(t, tokB, openHSM(t, tokB)); !maps.Equal(beforeB, afterB) {
		t.Fatalf("DestroyKeys changed the other token:\nbefore %v\nafter  %v", beforeB, afterB)
	}
	if _, err := acmeAEAD.Decrypt(cts[acme[0]], nil); !errors.Is(err, pkcs11kms.ErrKeyNotFound) {
		t.Fatalf("Decrypt under a destroyed key: %v, want ErrKeyNotFound", err)
	}
	for _, uri := range acme {
		if _, err := c.GetAEAD(uri); !errors.Is(err, pkcs11kms.ErrKeyNotFound) {
			t.Fatalf("GetAEAD(%s) after DestroyKeys: %v, want ErrKeyNotFound", uri, err)
		}
	}
	for _, uri := range kept {
		opens(t, c, uri, cts[uri], []byte(uri), nil)
	}

	// Again, and a label never used: nothing to destroy, nothing destroyed.
	for _, l := range []string{label, "tenancy-tenant-never-made"} {
		if err := m.DestroyKeys(ctx, l); err != nil {
			t.Fatalf("DestroyKeys(%q) with no keys: %v", l, err)
		}
	}
	if again := tokenObjects(t, tok, hsm); !maps.Equal(after, again) {
		t.Fatalf("DestroyKeys of keys that do not exist changed the token:\nbefore %v\nafter  %v", after, again)
	}
	// A key with the label made otherwise (GenerateKey) is destroyed too:
	// the labels of the maker's token are the maker's. (With an id, since
	// the DES3 key has the label.) A key made after is a new key: the old
	// ciphertexts stay dead.
	if err := c.GenerateKey(ctx, withID(tok.URI(label), "%01")); err != nil {
		t.Fatal(err)
	}
	fresh := makerKey(t, m, label)
	notOpens(t, c, fresh, cts[acme[0]])
	if err := m.DestroyKeys(ctx, label); err != nil {
		t.Fatal(err)
	}
	if keys := aesKeysLabelled(tokenObjects(t, tok, hsm), label); len(keys) != 0 {
		t.Fatalf("AES keys labelled %s after DestroyKeys: %v", label, keys)
	}
}

// Owns is true of the URIs CreateKey gives for the label, in the spelling
// it gives them, and of no other URI.
func TestOwns(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	tokB := softhsmtest.NewToken(t)
	c := newClient(t)
	m, mB := newKeyMaker(t, c, tok), newKeyMaker(t, c, tokB)
	const label = "tenancy-tenant-acme"
	mine := []string{makerKey(t, m, label), makerKey(t, m, label)}
	for _, uri := range mine {
		if !m.Owns(uri, label) {
			t.Errorf("Owns(%s, %q) = false", uri, label)
		}
	}
	uri := mine[0]
	k, err := pkcs11kms.ParseKeyURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	link := moduleLinks(t, tok.Module)[0]
	spell := func(edit func(k *pkcs11kms.KeyURI)) string {
		k2 := *k
		edit(&k2)
		return k2.String()
	}
	path, query, _ := strings.Cut(uri, "?")
	attrs := strings.Split(strings.TrimPrefix(path, "pkcs11:"), ";")
	for _, tc := range []struct{ name, uri, label string }{
		{"another label", uri, "tenancy-tenant-beta"},
		{"a label that is a prefix", uri, "tenancy-tenant-acm"},
		{"a label that extends it", uri, "tenancy-tenant-acme2"},
		{"a label the rule refuses", spell(func(k *pkcs11kms.KeyURI) { k.Object = "Acme" }), "Acme"},
		{"another token's key", makerKey(t, mB, label), label},
		{"another token", spell(func(k *pkcs11kms.KeyURI) { k.Token = tokB.Label }), label},
		{"the module through a link", spell(func(k *pkcs11kms.KeyURI) { k.ModulePath = link }), label},
		{"another module", spell(func(k *pkcs11kms.KeyURI) { k.ModulePath = "/opt/other/libp11.so" }), label},
		{"another pin-source", spell(func(k *pkcs11kms.KeyURI) { k.PINSource = "env:PKCS11KMS_TEST_PIN" }), label},
		{"no id", spell(func(k *pkcs11kms.KeyURI) { k.ID = nil }), label},
		{"a short id", spell(func(k *pkcs11kms.KeyURI) { k.ID = k.ID[:3] }), label},
		{"a long id", spell(func(k *pkcs11kms.KeyURI) { k.ID = append(slices.Clone(k.ID), 0) }), label},
		{"attributes in another order", "pkcs11:" + attrs[2] + ";" + attrs[0] + ";" + attrs[1] + "?" + query, label},
		{"type=secret-key", path + ";type=secret-key?" + query, label},
		{"a percent-encoded object", strings.Replace(uri, "object=t", "object=%74", 1), label},
		{"another scheme", "local:///keys/tenancy-tenant-acme.key", label},
		{"not a URI", "", label},
		{"lower-case hex", path[:strings.Index(path, ";id=")] + strings.ToLower(path[strings.Index(path, ";id="):]) + "?" + query, label},
	} {
		if tc.name == "lower-case hex" && !strings.ContainsAny(path[strings.Index(path, ";id="):], "ABCDEF") {
			continue // an id without a hex letter (p = 1e-6): no other case
		}
		if got := m.Owns(tc.uri, tc.label); got {
			t.Errorf("%s: Owns(%q, %q) = true", tc.name, tc.uri, tc.label)
		}
	}
	if m.Owns(uri, "") || mB.Owns(uri, label) {
		t.Error("Owns of an empty label, or by another token's maker, = true")
	}
	// A raw id byte: a URI whose id has a byte that may be written raw (a
	// letter or a digit) names the same key, but not in CreateKey's
	// spelling.
	for range 100 {
		u := makerKey(t, m, "tenancy-tenant-raw")
		for _, b := range keyID(t, u) {
			if 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' {
				raw := strings.Replace(u, fmt.Sprintf("%%%02X", b), string(rune(b)), 1)
				if m.Owns(raw, "tenancy-tenant-raw") {
					t.Fatalf("Owns(%s) = true", raw)
				}
				if canon, err := c.CanonicalKeyURI(raw); err != nil || canon != u {
					t.Fatalf("CanonicalKeyURI(%s) = %q, %v; want %s", raw, canon, err, u)
				}
				return
			}
		}
	}
	t.Fatal("no id of 100 had a letter or a digit")
}

// A token that is not there: CreateKey and DestroyKeys fail, naming it.
func TestKeyMakerTokenNotFound(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	m, err := pkcs11kms.NewKeyMaker(newClient(t), strings.Replace(baseURI(tok), "token="+softhsmtest.Escape(tok.Label), "token=no-such-token", 1))
	if err != nil {
		t.Fatal(err)
	}
	if uri, err := m.CreateKey(t.Context(), "tenancy-tenant-acme"); !errors.Is(err, pkcs11kms.ErrTokenNotFound) || uri != "" {
		t.Fatalf("CreateKey = %q, %v; want ErrTokenNotFound", uri, err)
	}
	if err := m.DestroyKeys(t.Context(), "tenancy-tenant-acme"); !errors.Is(err, pkcs11kms.ErrTokenNotFound) {
		t.Fatalf("DestroyKeys = %v; want ErrTokenNotFound", err)
	}
}

func TestKeyMakerHonoursContext(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	m := newKeyMaker(t, newClient(t), tok)
	makerKey(t, m, "tenancy-tenant-acme") // opens the token
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if uri, err := m.CreateKey(ctx, "tenancy-tenant-acme"); !errors.Is(err, context.Canceled) || uri != "" {
		t.Fatalf("CreateKey(cancelled) = %q, %v", uri, err)
	}
	if err := m.DestroyKeys(ctx, "tenancy-tenant-acme"); !errors.Is(err, context.Canceled) {
		t.Fatalf("DestroyKeys(cancelled) = %v", err)
	}
}

// Environment of TestHelperProcessCreateKey.
const (
	envHelperBase  = "PKCS11KMS_HELPER_BASE"
	envHelperLabel = "PKCS11KMS_HELPER_LABEL"
	envHelperReady = "PKCS11KMS_HELPER_READY"
	envHelperStart = "PKCS11KMS_HELPER_START"
)

// TestHelperProcessCreateKey is not a test:
// TestCreateKeyInConcurrentProcessesMakesDistinctKeys runs the test binary
// with it to race other processes. It opens the token, writes a ready
// file, waits for a start file, creates a key and prints its URI and a
// ciphertext made under it.
func TestHelperProcessCreateKey(t *testing.T) {
	base := os.Getenv(envHelperBase)
	if base == "" {
		t.Skip("helper process only")
	}
	c := newClient(t)
	m, err := pkcs11kms.NewKeyMaker(c, base)
	if err != nil {
		t.Fatal(err)
	}
	label := os.Getenv(envHelperLabel)
	// Opens the token: the label has no key yet.
	if _, err := c.GetAEAD(strings.Replace(base, "?", ";object="+label+"?", 1)); !errors.Is(err, pkcs11kms.ErrKeyNotFound) {
		t.Fatalf("GetAEAD before CreateKey: %v", err)
	}
	if err := os.WriteFile(os.Getenv(envHelperReady), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitForFile(t, os.Getenv(envHelperStart))
	uri, err := m.CreateKey(t.Context(), label)
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	fmt.Printf("URI=%s\nCT=%s\n", uri, base64.StdEncoding.EncodeToString(seal(t, c, uri, []byte(uri), nil)))
}

// waitForFile waits up to 30 seconds for the file name to exist.
func waitForFile(tb testing.TB, name string) {
	tb.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, err := os.Stat(name); err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not appear within 30s", name)
		}
	}
}

// Processes that create keys with one label at once make as many keys,
// distinct, each of them working. They open the token one after the other
// (SoftHSM2 fails logins made at the same moment by several processes,
// with CKR_GENERAL_ERROR), then all create a key at once.
func TestCreateKeyInConcurrentProcessesMakesDistinctKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	tok := softhsmtest.NewToken(t)
	const procs, rounds = 4, 2
	c := newClient(t)
	m := newKeyMaker(t, c, tok)
	for round := range rounds {
		label := fmt.Sprintf("tenancy-tenant-race%d", round)
		dir := t.TempDir()
		start := filepath.Join(dir, "start")
		cmds := make([]*exec.Cmd, procs)
		outs := make([]*bytes.Buffer, procs)
		for i := range procs {
			ready := filepath.Join(dir, fmt.Sprintf("ready%d", i))
			cmds[i] = exec.Command(os.Args[0], "-test.run=^TestHelperProcessCreateKey$", "-test.count=1", "-test.v", "-test.timeout=60s")
			cmds[i].Env = append(os.Environ(), envHelperBase+"="+baseURI(tok), envHelperLabel+"="+label,
				envHelperReady+"="+ready, envHelperStart+"="+start)
			outs[i] = new(bytes.Buffer)
			cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
			if err := cmds[i].Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmds[i].Process.Kill(); _ = cmds[i].Wait() }) // if the test fails first
			waitForFile(t, ready)
		}
		if err := os.WriteFile(start, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		var uris []string
		for i, cmd := range cmds {
			if err := cmd.Wait(); err != nil {
				t.Fatalf("round %d process %d: %v\n%s", round, i, err, outs[i])
			}
			out := outs[i].String()
			uri, ct := printed(t, out, "URI="), printed(t, out, "CT=")
			b, err := base64.StdEncoding.DecodeString(ct)
			if err != nil {
				t.Fatal(err)
			}
			opens(t, c, uri, b, []byte(uri), nil)
			uris = append(uris, uri)
		}
		distinctKeys(t, c, m, label, uris)
		if keys := aesKeysLabelled(tokenObjects(t, tok, openHSM(t, tok)), label); len(keys) != procs {
			t.Fatalf("round %d: %d keys labelled %s, want %d: %v", round, len(keys), label, procs, keys)
		}
	}
}

// printed returns what a helper process printed after prefix, to the end
// of the line.
func printed(tb testing.TB, out, prefix string) string {
	tb.Helper()
	_, line, ok := strings.Cut(out, "\n"+prefix)
	if !ok {
		tb.Fatalf("the process printed no %s:\n%s", prefix, out)
	}
	line, _, _ = strings.Cut(line, "\n")
	return line
}
