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
	"strings"
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
	KeyURI(label string) (string, error)
	CreateKey(ctx context.Context, keyURI string) error
	DestroyKey(ctx context.Context, keyURI string) error
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

// makerKey returns the URI of m's key labelled label, created.
func makerKey(tb testing.TB, m *pkcs11kms.KeyMaker, label string) string {
	tb.Helper()
	uri, err := m.KeyURI(label)
	if err != nil {
		tb.Fatalf("KeyURI(%q): %v", label, err)
	}
	if err := m.CreateKey(tb.Context(), uri); err != nil {
		tb.Fatalf("CreateKey(%s): %v", uri, err)
	}
	return uri
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

// handMadeKey makes an AES key labelled label in hsm with GenerateKey's
// template changed by set, of bits bits.
func handMadeKey(tb testing.TB, hsm *crypto11.Context, label string, bits int, cipher *crypto11.SymmetricCipher, set map[crypto11.AttributeType]bool) {
	tb.Helper()
	tmpl, err := crypto11.NewAttributeSetWithIDAndLabel([]byte("hand-made"), []byte(label))
	if err != nil {
		tb.Fatal(err)
	}
	attrs := map[crypto11.AttributeType]bool{
		crypto11.CkaToken: true, crypto11.CkaPrivate: true, crypto11.CkaSensitive: true,
		crypto11.CkaExtractable: false, crypto11.CkaEncrypt: true, crypto11.CkaDecrypt: true,
		crypto11.CkaWrap: false, crypto11.CkaUnwrap: false, crypto11.CkaSign: false,
		crypto11.CkaVerify: false, crypto11.CkaDerive: false,
	}
	maps.Copy(attrs, set)
	for t, v := range attrs {
		if err := tmpl.Set(t, v); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := hsm.GenerateSecretKeyWithAttributes(tmpl, bits, cipher); err != nil {
		tb.Fatalf("making %s by hand: %v", label, err)
	}
}

func TestKeyURIRefusesBadLabelsNamingTheRule(t *testing.T) {
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
		uri, err := m.KeyURI(tc.label)
		var ue *pkcs11kms.URIError
		if !errors.Is(err, pkcs11kms.ErrInvalidURI) || !errors.As(err, &ue) || ue.Attr != "object" {
			t.Errorf("KeyURI(%q) = %q, %v; want a URIError for the object", tc.label, uri, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.rule) {
			t.Errorf("KeyURI(%q): %q does not name the rule (%q)", tc.label, err, tc.rule)
		}
		if strings.ContainsAny(err.Error(), "\x00\n") {
			t.Errorf("KeyURI(%q): the error carries the raw label: %q", tc.label, err)
		}
	}
	for _, label := range []string{"a", "0", "tenancy-tenant-acme", "tenancy-tenant-a_b", "0-_", strings.Repeat("z", 64)} {
		uri, err := m.KeyURI(label)
		if err != nil || !strings.Contains(uri, ";object="+label+"?") {
			t.Errorf("KeyURI(%q) = %q, %v; want a URI with object=%s", label, uri, err, label)
		}
	}
}

// KeyURI gives the canonical URI, whatever spelling of the base URI the
// maker was made with, and creates nothing.
func TestKeyURIIsTheClientsCanonicalURI(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	links := moduleLinks(t, tok.Module)
	t.Setenv("PKCS11KMS_TEST_MAKER_PIN", tok.PIN)
	label := "tenancy-tenant-acme"
	want, err := c.CanonicalKeyURI(tok.URI(label))
	if err != nil {
		t.Fatal(err)
	}
	tokenAttr := "token=" + softhsmtest.Escape(tok.Label)
	for _, base := range []string{
		baseURI(tok),
		"pkcs11:type=secret-key;" + tokenAttr + "?pin-source=file:" + tok.PINFile + "&module-path=" + tok.Module,
		"pkcs11:" + tokenAttr + "?module-path=" + links[2] + "&pin-source=file:" + strings.ReplaceAll(tok.PINFile, "/", "%2F"),
	} {
		m, err := pkcs11kms.NewKeyMaker(c, base)
		if err != nil {
			t.Fatalf("NewKeyMaker(%s): %v", base, err)
		}
		uri, err := m.KeyURI(label)
		if err != nil || uri != want {
			t.Errorf("maker of %s: KeyURI = %q, %v; want %q", base, uri, err, want)
		}
	}
	// Another pin-source gives another URI of the same key.
	m, err := pkcs11kms.NewKeyMaker(c, "pkcs11:"+tokenAttr+"?module-path="+tok.Module+"&pin-source=env:PKCS11KMS_TEST_MAKER_PIN")
	if err != nil {
		t.Fatal(err)
	}
	uri, err := m.KeyURI(label)
	if err != nil {
		t.Fatal(err)
	}
	if canon, err := c.CanonicalKeyURI(uri); err != nil || canon != uri {
		t.Errorf("CanonicalKeyURI(%s) = %q, %v: KeyURI is not canonical", uri, canon, err)
	}
	if id, _ := c.KeyIdentity(uri); id != strings.TrimSuffix(want, "file:"+tok.PINFile) {
		t.Errorf("KeyIdentity(%s) = %q: not the identity of %s", uri, id, want)
	}
	if _, err := c.GetAEAD(uri); !errors.Is(err, pkcs11kms.ErrKeyNotFound) {
		t.Errorf("GetAEAD after KeyURI: %v, want ErrKeyNotFound (KeyURI creates nothing)", err)
	}
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

	// The key is made as GenerateKey makes its keys.
	hsm := openHSM(t, tok)
	key, err := hsm.FindKey(nil, []byte("tenancy-tenant-acme"))
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := hsm.GetAttributes(key, []crypto11.AttributeType{
		crypto11.CkaToken, crypto11.CkaPrivate, crypto11.CkaSensitive, crypto11.CkaExtractable,
		crypto11.CkaWrap, crypto11.CkaUnwrap, crypto11.CkaNeverExtractable,
	})
	if err != nil {
		t.Fatal(err)
	}
	for typ, want := range map[crypto11.AttributeType]bool{
		crypto11.CkaToken: true, crypto11.CkaPrivate: true, crypto11.CkaSensitive: true,
		crypto11.CkaExtractable: false, crypto11.CkaWrap: false, crypto11.CkaUnwrap: false,
		crypto11.CkaNeverExtractable: true,
	} {
		if a := attrs[typ]; a == nil || len(a.Value) != 1 || (a.Value[0] == 1) != want {
			t.Errorf("attribute %#x = %v, want %v", typ, a, want)
		}
	}
}

// CreateKey of a key that exists (a Provision resumed) adopts it: the
// ciphertexts made under it still open, and there is still one key.
func TestCreateKeyTwiceKeepsTheKey(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	m := newKeyMaker(t, c, tok)
	uri := makerKey(t, m, "tenancy-tenant-acme")
	ct := seal(t, c, uri, []byte("before"), nil)
	if err := m.CreateKey(t.Context(), uri); err != nil {
		t.Fatalf("second CreateKey: %v", err)
	}
	// A maker of another client, as after a restart.
	if err := newKeyMaker(t, newClient(t), tok).CreateKey(t.Context(), uri); err != nil {
		t.Fatalf("CreateKey in a new client: %v", err)
	}
	opens(t, c, uri, ct, []byte("before"), nil)
	// A key made by GenerateKey is adopted too.
	generated, err := m.KeyURI("tenancy-tenant-beta")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.GenerateKey(t.Context(), generated); err != nil {
		t.Fatal(err)
	}
	if err := m.CreateKey(t.Context(), generated); err != nil {
		t.Fatalf("CreateKey of a key GenerateKey made: %v", err)
	}
	objs := tokenObjects(t, tok, openHSM(t, tok))
	for _, label := range []string{"tenancy-tenant-acme", "tenancy-tenant-beta"} {
		if keys := aesKeysLabelled(objs, label); len(keys) != 1 {
			t.Errorf("%d keys labelled %s, want 1: %v", len(keys), label, keys)
		}
	}
}

// CreateKey adopts nothing but one key it could have made, and leaves what
// it refuses alone.
func TestCreateKeyRefusesObjectsItWouldNotMake(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	m := newKeyMaker(t, c, tok)
	hsm := openHSM(t, tok)
	for _, tc := range []struct {
		label  string
		make   func(label string)
		saying string
	}{
		{"extractable", func(l string) {
			handMadeKey(t, hsm, l, 256, crypto11.CipherAES, map[crypto11.AttributeType]bool{crypto11.CkaExtractable: true})
		}, "CKA_EXTRACTABLE is true"},
		{"not-sensitive", func(l string) {
			handMadeKey(t, hsm, l, 256, crypto11.CipherAES, map[crypto11.AttributeType]bool{crypto11.CkaSensitive: false})
		}, "CKA_SENSITIVE is false"},
		{"not-private", func(l string) {
			handMadeKey(t, hsm, l, 256, crypto11.CipherAES, map[crypto11.AttributeType]bool{crypto11.CkaPrivate: false})
		}, "CKA_PRIVATE is false"},
		{"session-object", func(l string) {
			handMadeKey(t, hsm, l, 256, crypto11.CipherAES, map[crypto11.AttributeType]bool{crypto11.CkaToken: false})
		}, "CKA_TOKEN is false"},
		{"can-wrap", func(l string) {
			handMadeKey(t, hsm, l, 256, crypto11.CipherAES, map[crypto11.AttributeType]bool{crypto11.CkaWrap: true})
		}, "CKA_WRAP is true"},
		{"aes-128", func(l string) {
			handMadeKey(t, hsm, l, 128, crypto11.CipherAES, nil)
		}, "not a 256-bit key"},
		{"des3", func(l string) {
			if _, err := hsm.GenerateSecretKeyWithLabel([]byte("des3"), []byte(l), 0, crypto11.CipherDES3); err != nil {
				t.Fatal(err)
			}
		}, "not an AES key"},
		{"two-keys", func(l string) {
			handMadeKey(t, hsm, l, 256, crypto11.CipherAES, nil)
			handMadeKey(t, hsm, l, 256, crypto11.CipherAES, nil)
		}, "2 keys have that label"},
	} {
		t.Run(tc.label, func(t *testing.T) {
			tc.make(tc.label)
			uri, err := m.KeyURI(tc.label)
			if err != nil {
				t.Fatal(err)
			}
			before := tokenObjects(t, tok, hsm)
			err = m.CreateKey(t.Context(), uri)
			if !errors.Is(err, pkcs11kms.ErrKeyExists) || !strings.Contains(err.Error(), tc.saying) {
				t.Fatalf("CreateKey = %v, want ErrKeyExists saying %q", err, tc.saying)
			}
			noPIN(t, tok, err)
			if after := tokenObjects(t, tok, hsm); !maps.Equal(before, after) {
				t.Fatalf("CreateKey changed the token's objects:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// DestroyKey destroys the one key and nothing else: the token's objects
// afterwards are those before less that key, whatever else shares its
// label or its token.
func TestDestroyKeyDestroysOnlyThatKey(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	tokB := softhsmtest.NewToken(t)
	c := newClient(t)
	ctx := t.Context()
	m, mB := newKeyMaker(t, c, tok), newKeyMaker(t, c, tokB)
	platform, _ := newKey(t, c, tok, "platform-kek")
	acme := makerKey(t, m, "tenancy-tenant-acme")
	acme2 := makerKey(t, m, "tenancy-tenant-acme2")
	beta := makerKey(t, m, "tenancy-tenant-beta")
	acmeB := makerKey(t, mB, "tenancy-tenant-acme") // same label, other token
	cts := map[string][]byte{}
	for _, uri := range []string{platform, acme, acme2, beta, acmeB} {
		cts[uri] = seal(t, c, uri, []byte(uri), nil)
	}
	acmeAEAD, err := c.GetAEAD(acme)
	if err != nil {
		t.Fatal(err)
	}

	hsm := openHSM(t, tok)
	// Objects of other kinds with the key's label: a DES3 key, a data
	// object.
	if _, err := hsm.GenerateSecretKeyWithLabel([]byte("des3"), []byte("tenancy-tenant-acme"), 0, crypto11.CipherDES3); err != nil {
		t.Fatal(err)
	}
	withSession(t, tok, hsm, func(p *pkcs11.Ctx, s pkcs11.SessionHandle) {
		if _, err := p.CreateObject(s, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, "tenancy-tenant-acme"),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, []byte("data")),
		}); err != nil {
			t.Fatal(err)
		}
	})
	before := tokenObjects(t, tok, hsm)
	if err := m.DestroyKey(ctx, acme); err != nil {
		t.Fatal(err)
	}
	after := tokenObjects(t, tok, hsm)
	var gone []string
	for h, d := range before {
		if after[h] != d {
			gone = append(gone, d)
		}
	}
	want := fmt.Sprintf("class=%d label=%q ", pkcs11.CKO_SECRET_KEY, "tenancy-tenant-acme")
	if len(gone) != 1 || !strings.HasPrefix(gone[0], want) || !strings.HasSuffix(gone[0], fmt.Sprintf("key-type=%d", pkcs11.CKK_AES)) {
		t.Fatalf("DestroyKey removed %v; want exactly the AES key labelled tenancy-tenant-acme", gone)
	}
	if len(after) != len(before)-1 {
		t.Fatalf("%d objects before, %d after: DestroyKey made objects", len(before), len(after))
	}
	if _, err := acmeAEAD.Decrypt(cts[acme], nil); !errors.Is(err, pkcs11kms.ErrKeyNotFound) {
		t.Fatalf("Decrypt under the destroyed key: %v, want ErrKeyNotFound", err)
	}
	for _, uri := range []string{platform, acme2, beta, acmeB} {
		opens(t, c, uri, cts[uri], []byte(uri), nil)
	}

	// Again: nothing to destroy, nothing destroyed.
	if err := m.DestroyKey(ctx, acme); err != nil {
		t.Fatalf("second DestroyKey: %v", err)
	}
	never, err := m.KeyURI("tenancy-tenant-never-made")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.DestroyKey(ctx, never); err != nil {
		t.Fatalf("DestroyKey of a key never made: %v", err)
	}
	if again := tokenObjects(t, tok, hsm); !maps.Equal(after, again) {
		t.Fatalf("DestroyKey of keys that do not exist changed the token:\nbefore %v\nafter  %v", after, again)
	}
}

// A KeyMaker serves only the URIs its KeyURI gives: any other is refused
// by CreateKey and DestroyKey before the token is touched.
func TestKeyMakerRefusesURIsItDidNotGive(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	tokB := softhsmtest.NewToken(t)
	c := newClient(t)
	m := newKeyMaker(t, c, tok)
	label := "tenancy-tenant-acme"
	mine := makerKey(t, m, label)
	newKey(t, c, tokB, label)
	ct := seal(t, c, mine, []byte("x"), nil)
	real, err := filepath.EvalSymlinks(tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	link := moduleLinks(t, tok.Module)[0]
	otherModule := filepath.Join(t.TempDir(), "other.so")
	if err := os.Symlink(filepath.Join(t.TempDir(), "missing.so"), otherModule); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PKCS11KMS_TEST_OTHER_PIN", tok.PIN)
	tokenAttr := "token=" + softhsmtest.Escape(tok.Label)
	spell := func(path, query string) string { return "pkcs11:" + path + "?" + query }
	q := func(module, pin string) string { return "module-path=" + module + "&pin-source=" + pin }
	file := "file:" + tok.PINFile
	for _, tc := range []struct {
		name, uri string
		want      error
		saying    string
	}{
		{"another token", spell("token="+softhsmtest.Escape(tokB.Label)+";object="+label, q(real, file)), pkcs11kms.ErrUnsupportedURI, "token"},
		{"the module through a link", spell(tokenAttr+";object="+label, q(link, file)), pkcs11kms.ErrUnsupportedURI, "module-path " + link},
		{"another module", spell(tokenAttr+";object="+label, q(otherModule, file)), pkcs11kms.ErrUnsupportedURI, "module-path " + otherModule},
		{"another pin-source", spell(tokenAttr+";object="+label, q(real, "env:PKCS11KMS_TEST_OTHER_PIN")), pkcs11kms.ErrUnsupportedURI, "pin-source"},
		{"a label KeyURI refuses", spell(tokenAttr+";object=platform.kek", q(real, file)), pkcs11kms.ErrUnsupportedURI, "not a label KeyURI accepts"},
		{"an upper-case label", spell(tokenAttr+";object=Tenancy-tenant-acme", q(real, file)), pkcs11kms.ErrUnsupportedURI, "not a label KeyURI accepts"},
		{"another spelling", spell("object="+label+";"+tokenAttr, q(real, file)), pkcs11kms.ErrUnsupportedURI, "canonical form"},
		{"type=secret-key", spell(tokenAttr+";object="+label+";type=secret-key", q(real, file)), pkcs11kms.ErrUnsupportedURI, "canonical form"},
		{"percent-encoded", strings.Replace(mine, "object=t", "object=%74", 1), pkcs11kms.ErrUnsupportedURI, "canonical form"},
		{"a pin-value", spell(tokenAttr+";object="+label, "module-path="+real+"&pin-value="+tok.PIN), pkcs11kms.ErrInvalidURI, "pin-value"},
		{"another scheme", "local:///keys/tenancy-tenant-acme.key", pkcs11kms.ErrInvalidURI, "scheme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for name, f := range map[string]func(context.Context, string) error{"CreateKey": m.CreateKey, "DestroyKey": m.DestroyKey} {
				err := f(t.Context(), tc.uri)
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.saying) {
					t.Errorf("%s = %v, want %v saying %q", name, err, tc.want, tc.saying)
				}
				noPIN(t, tok, err)
			}
		})
	}
	// Nothing was made, in either token, and nothing destroyed.
	opens(t, c, mine, ct, []byte("x"), nil)
	if _, err := c.GetAEAD(tokB.URI(label)); err != nil {
		t.Fatalf("the other token's key: %v", err)
	}
	for _, o := range []string{"platform.kek", "Tenancy-tenant-acme"} {
		if _, err := c.GetAEAD(tok.URI(o)); !errors.Is(err, pkcs11kms.ErrKeyNotFound) {
			t.Errorf("GetAEAD(%s) = %v, want ErrKeyNotFound", o, err)
		}
	}
}

func TestCreateKeyHonoursContext(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	m := newKeyMaker(t, newClient(t), tok)
	uri, err := m.KeyURI("tenancy-tenant-acme")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := m.CreateKey(ctx, uri); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateKey(cancelled) = %v", err)
	}
	if err := m.DestroyKey(ctx, uri); !errors.Is(err, context.Canceled) {
		t.Fatalf("DestroyKey(cancelled) = %v", err)
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
// TestCreateKeyInConcurrentProcessesMakesOneKey runs the test binary with
// it to race other processes. It opens the token, writes a ready file,
// waits for a start file, creates the key and prints a ciphertext made
// under it.
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
	uri, err := m.KeyURI(os.Getenv(envHelperLabel))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetAEAD(uri); !errors.Is(err, pkcs11kms.ErrKeyNotFound) { // opens the token
		t.Fatalf("GetAEAD before CreateKey: %v", err)
	}
	if err := os.WriteFile(os.Getenv(envHelperReady), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitForFile(t, os.Getenv(envHelperStart))
	if err := m.CreateKey(t.Context(), uri); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	fmt.Printf("CT=%s\n", base64.StdEncoding.EncodeToString(seal(t, c, uri, []byte("p"), nil)))
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

// Processes that create one key at once end up with one key, which each
// of them uses. They open the token one after the other (SoftHSM2 fails
// logins made at the same moment by several processes, with
// CKR_GENERAL_ERROR), then all create the key at once.
func TestCreateKeyInConcurrentProcessesMakesOneKey(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	tok := softhsmtest.NewToken(t)
	const procs, rounds = 4, 3
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
		uri, err := m.KeyURI(label)
		if err != nil {
			t.Fatal(err)
		}
		var cts [][]byte
		for i, cmd := range cmds {
			if err := cmd.Wait(); err != nil {
				t.Fatalf("round %d process %d: %v\n%s", round, i, err, outs[i])
			}
			_, line, ok := strings.Cut(outs[i].String(), "CT=")
			if !ok {
				t.Fatalf("round %d process %d printed no ciphertext:\n%s", round, i, outs[i])
			}
			line, _, _ = strings.Cut(line, "\n")
			ct, err := base64.StdEncoding.DecodeString(line)
			if err != nil {
				t.Fatal(err)
			}
			cts = append(cts, ct)
		}
		keys := aesKeysLabelled(tokenObjects(t, tok, openHSM(t, tok)), label)
		if len(keys) != 1 {
			t.Fatalf("round %d: %d keys labelled %s, want 1: %v", round, len(keys), label, keys)
		}
		for _, ct := range cts {
			opens(t, c, uri, ct, []byte("p"), nil)
		}
	}
}
