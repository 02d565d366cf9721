package pkcs11kms_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/rtmx-ai/tenancy/internal/softhsmtest"
	"github.com/rtmx-ai/tenancy/keys/pkcs11kms"
)

func TestMain(m *testing.M) { softhsmtest.Main(m) }

// newClient returns a client for every pkcs11: URI, closed when the test
// ends (before the test's tokens are deleted, since cleanups run last
// first and tokens are made before clients).
func newClient(tb testing.TB, opts ...pkcs11kms.Option) *pkcs11kms.Client {
	tb.Helper()
	c, err := pkcs11kms.NewClient("pkcs11:", opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return c
}

// newKey generates a key labelled object in tok and returns its URI and AEAD.
func newKey(tb testing.TB, c *pkcs11kms.Client, tok *softhsmtest.Token, object string) (string, tink.AEAD) {
	tb.Helper()
	uri := tok.URI(object)
	if err := c.GenerateKey(context.Background(), uri); err != nil {
		tb.Fatalf("GenerateKey: %v", err)
	}
	a, err := c.GetAEAD(uri)
	if err != nil {
		tb.Fatalf("GetAEAD: %v", err)
	}
	return uri, a
}

// noPIN fails if err's message contains the token's PIN.
func noPIN(t *testing.T, tok *softhsmtest.Token, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), tok.PIN) {
		t.Fatalf("error contains the PIN: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	_, a := newKey(t, c, tok, "master-kek")

	for _, tc := range []struct{ pt, ad []byte }{
		{[]byte("tenant keyset bytes"), []byte("tenant=acme;purpose=data")},
		{[]byte{}, []byte("empty plaintext")},
		{[]byte("no associated data"), nil},
		{bytes.Repeat([]byte{0xAB}, 64<<10), []byte("64 KiB")},
	} {
		ct, err := a.Encrypt(tc.pt, tc.ad)
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		if want := 12 + len(tc.pt) + 16; len(ct) != want {
			t.Fatalf("ciphertext length %d, want nonce+pt+tag = %d", len(ct), want)
		}
		if len(tc.pt) > 8 && bytes.Contains(ct, tc.pt) {
			t.Fatal("ciphertext contains the plaintext")
		}
		pt, err := a.Decrypt(ct, tc.ad)
		if err != nil {
			t.Fatalf("Decrypt: %v", err)
		}
		if !bytes.Equal(pt, tc.pt) {
			t.Fatalf("round trip: got %d bytes, want %d", len(pt), len(tc.pt))
		}
	}

	// Fresh nonce per call: same input, different ciphertexts.
	c1, _ := a.Encrypt([]byte("x"), nil)
	c2, _ := a.Encrypt([]byte("x"), nil)
	if bytes.Equal(c1[:12], c2[:12]) || bytes.Equal(c1, c2) {
		t.Fatal("two encryptions reused a nonce")
	}

	// The AEAD with context behaves the same.
	ac := a.(tink.AEADWithContext)
	ct, err := ac.EncryptWithContext(context.Background(), []byte("ctx"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := ac.DecryptWithContext(context.Background(), ct, []byte("ad")); err != nil || string(pt) != "ctx" {
		t.Fatalf("DecryptWithContext: %q, %v", pt, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ac.EncryptWithContext(ctx, []byte("x"), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("EncryptWithContext(cancelled) = %v, want context.Canceled", err)
	}
}

func TestDecryptRejects(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	_, a := newKey(t, c, tok, "kek")
	ad := []byte("tenant=acme;purpose=data")
	ct, err := a.Encrypt([]byte("secret keyset"), ad)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(ct)
		b[i] ^= 1
		return b
	}
	for _, tc := range []struct {
		name   string
		ct, ad []byte
	}{
		{"wrong associated data", ct, []byte("tenant=evil;purpose=data")},
		{"missing associated data", ct, nil},
		{"tampered nonce", flip(0), ad},
		{"tampered body", flip(12), ad},
		{"tampered tag", flip(len(ct) - 1), ad},
		{"truncated", ct[:len(ct)-1], ad},
		{"extended", append(bytes.Clone(ct), 0), ad},
		{"shorter than nonce+tag", ct[:27], ad},
		{"empty", nil, ad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := a.Decrypt(tc.ct, tc.ad)
			if err == nil {
				t.Fatalf("decrypted to %q", pt)
			}
			if !errors.Is(err, pkcs11kms.ErrDecrypt) {
				t.Fatalf("error %v, want ErrDecrypt", err)
			}
		})
	}
}

func TestKeysDoNotCross(t *testing.T) {
	// Both tokens exist before the module is first initialised (see
	// softhsmtest: SoftHSM2 scans tokens at C_Initialize).
	tokA := softhsmtest.NewToken(t)
	tokB := softhsmtest.NewToken(t)
	c := newClient(t)
	_, a := newKey(t, c, tokA, "master-kek")
	_, b := newKey(t, c, tokB, "master-kek") // same label, other token
	_, a2 := newKey(t, c, tokA, "other-kek") // other label, same token

	ct, err := b.Encrypt([]byte("B's keyset"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Decrypt(ct, []byte("ad")); !errors.Is(err, pkcs11kms.ErrDecrypt) {
		t.Fatalf("token A's key on token B's ciphertext: %v, want ErrDecrypt", err)
	}
	if _, err := a2.Decrypt(ct, []byte("ad")); !errors.Is(err, pkcs11kms.ErrDecrypt) {
		t.Fatalf("another key of token A on token B's ciphertext: %v, want ErrDecrypt", err)
	}
	if pt, err := b.Decrypt(ct, []byte("ad")); err != nil || string(pt) != "B's keyset" {
		t.Fatalf("B's own key: %q, %v", pt, err)
	}
}

func TestGenerateKey(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	uri := tok.URI("kek")
	ctx := context.Background()

	if _, err := c.GetAEAD(uri); !errors.Is(err, pkcs11kms.ErrKeyNotFound) {
		t.Fatalf("GetAEAD before GenerateKey: %v, want ErrKeyNotFound", err)
	} else if !strings.Contains(err.Error(), "object=kek") {
		t.Fatalf("error does not name the URI: %v", err)
	} else {
		noPIN(t, tok, err)
	}
	if err := c.GenerateKey(ctx, uri); err != nil {
		t.Fatal(err)
	}
	err := c.GenerateKey(ctx, uri)
	if !errors.Is(err, pkcs11kms.ErrKeyExists) {
		t.Fatalf("second GenerateKey: %v, want ErrKeyExists", err)
	}
	noPIN(t, tok, err)

	// Concurrent generation of one label: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = c.GenerateKey(ctx, tok.URI("race")) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, pkcs11kms.ErrKeyExists):
			t.Fatalf("concurrent GenerateKey: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d concurrent GenerateKey calls succeeded, want 1", won)
	}
	if _, err := c.GetAEAD(tok.URI("race")); err != nil {
		t.Fatalf("GetAEAD after concurrent generation: %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.GenerateKey(cctx, tok.URI("cancelled")); !errors.Is(err, context.Canceled) {
		t.Fatalf("GenerateKey(cancelled ctx) = %v", err)
	}
}

func TestDestroyKey(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	ctx := context.Background()
	uri, a := newKey(t, c, tok, "tenant-acme-kek")
	_, other := newKey(t, c, tok, "tenant-beta-kek")
	ct, err := a.Encrypt([]byte("acme keyset"), []byte("acme"))
	if err != nil {
		t.Fatal(err)
	}
	otherCT, err := other.Encrypt([]byte("beta keyset"), []byte("beta"))
	if err != nil {
		t.Fatal(err)
	}

	if err := c.DestroyKey(ctx, uri); err != nil {
		t.Fatal(err)
	}
	// Idempotent (keys.KeyDestroyer): a key already gone is not an error.
	if err := c.DestroyKey(ctx, uri); err != nil {
		t.Fatalf("DestroyKey of a key destroyed already: %v, want nil", err)
	}
	// Crypto-shredded: the AEAD in hand and any new one fail.
	if _, err := a.Decrypt(ct, []byte("acme")); !errors.Is(err, pkcs11kms.ErrKeyNotFound) {
		t.Fatalf("Decrypt after DestroyKey: %v, want ErrKeyNotFound", err)
	}
	if _, err := a.Encrypt([]byte("x"), nil); !errors.Is(err, pkcs11kms.ErrKeyNotFound) {
		t.Fatalf("Encrypt after DestroyKey: %v, want ErrKeyNotFound", err)
	}
	if _, err := c.GetAEAD(uri); !errors.Is(err, pkcs11kms.ErrKeyNotFound) {
		t.Fatalf("GetAEAD after DestroyKey: %v, want ErrKeyNotFound", err)
	}
	// A fresh client (another process, in effect) cannot open it either.
	c2 := newClient(t)
	if _, err := c2.GetAEAD(uri); !errors.Is(err, pkcs11kms.ErrKeyNotFound) {
		t.Fatalf("new client GetAEAD after DestroyKey: %v, want ErrKeyNotFound", err)
	}
	// Regenerating the label gives a different key: old ciphertexts stay dead.
	if err := c.GenerateKey(ctx, uri); err != nil {
		t.Fatal(err)
	}
	a3, err := c.GetAEAD(uri)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a3.Decrypt(ct, []byte("acme")); !errors.Is(err, pkcs11kms.ErrDecrypt) {
		t.Fatalf("new key with the old label decrypted the old ciphertext: %v", err)
	}
	// Other tenants' keys are untouched.
	if pt, err := other.Decrypt(otherCT, []byte("beta")); err != nil || string(pt) != "beta keyset" {
		t.Fatalf("other key after DestroyKey: %q, %v", pt, err)
	}
	if err := c.DestroyKey(ctx, tok.URI("never-made")); err != nil {
		t.Fatalf("DestroyKey of a key that never existed: %v, want nil", err)
	}
	// A missing token is still an error: the key may be in it.
	missing := strings.Replace(tok.URI("kek"), "token="+softhsmtest.Escape(tok.Label), "token=no-such-token", 1)
	if err := c.DestroyKey(ctx, missing); !errors.Is(err, pkcs11kms.ErrTokenNotFound) {
		t.Fatalf("DestroyKey in a missing token: %v, want ErrTokenNotFound", err)
	}
}

func TestPINFromEnvAndFile(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	const env = "PKCS11KMS_TEST_PIN"
	t.Setenv(env, " "+tok.PIN+"\n") // trimmed
	envURI := fmt.Sprintf("pkcs11:token=%s;object=kek?module-path=%s&pin-source=env:%s", tok.Label, tok.Module, env)
	fileURI := tok.URI("kek") // pin-source=file:

	c := newClient(t)
	if err := c.GenerateKey(context.Background(), envURI); err != nil {
		t.Fatalf("GenerateKey with env PIN: %v", err)
	}
	aEnv, err := c.GetAEAD(envURI)
	if err != nil {
		t.Fatal(err)
	}
	// A second client reading the PIN from the file shares the open token.
	aFile, err := newClient(t).GetAEAD(fileURI)
	if err != nil {
		t.Fatalf("GetAEAD with file PIN: %v", err)
	}
	ct, err := aEnv.Encrypt([]byte("x"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := aFile.Decrypt(ct, []byte("ad")); err != nil || string(pt) != "x" {
		t.Fatalf("cross-source decrypt: %q, %v", pt, err)
	}

	dir := t.TempDir()
	for _, tc := range []struct {
		name, src, says string
	}{
		{"unset env", "env:PKCS11KMS_TEST_UNSET_PIN", "not set"},
		{"missing file", "file:" + filepath.Join(dir, "nope"), "no such file"},
		{"directory", "file:" + dir, "not a regular file"},
		{"empty file", "file:" + writeFile(t, dir, "empty", ""), "empty PIN"},
		{"blank file", "file:" + writeFile(t, dir, "blank", " \n\t\n"), "empty PIN"},
		{"huge file", "file:" + writeFile(t, dir, "huge", strings.Repeat("1", 2000)), "1 KiB"},
		{"device", "file:/dev/zero", "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uri := fmt.Sprintf("pkcs11:token=%s;object=kek?module-path=%s&pin-source=%s", tok.Label, tok.Module, tc.src)
			_, err := newClient(t).GetAEAD(uri)
			if !errors.Is(err, pkcs11kms.ErrPIN) {
				t.Fatalf("GetAEAD: %v, want ErrPIN", err)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %q does not say %q", err, tc.says)
			}
		})
	}
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWrongPIN(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	wrong := writeFile(t, t.TempDir(), "pin", "0000-wrong-"+tok.PIN[:4])
	wrongURI := fmt.Sprintf("pkcs11:token=%s;object=kek?module-path=%s&pin-source=file:%s", tok.Label, tok.Module, wrong)

	// Token not yet open in the process: the token refuses the PIN.
	_, err := newClient(t).GetAEAD(wrongURI)
	if !errors.Is(err, pkcs11kms.ErrPIN) || !strings.Contains(err.Error(), "CKR_PIN_INCORRECT") {
		t.Fatalf("wrong PIN: %v, want ErrPIN naming CKR_PIN_INCORRECT", err)
	}
	noPIN(t, tok, err)

	// Token open with the right PIN: a wrong PIN must still be refused,
	// although the token itself would accept any (already logged in).
	c := newClient(t)
	newKey(t, c, tok, "kek")
	for _, cl := range []*pkcs11kms.Client{c, newClient(t)} {
		_, err = cl.GetAEAD(wrongURI)
		if !errors.Is(err, pkcs11kms.ErrPIN) || !strings.Contains(err.Error(), "different PIN") {
			t.Fatalf("wrong PIN on an open token: %v, want ErrPIN", err)
		}
		noPIN(t, tok, err)
		if err := cl.GenerateKey(context.Background(), strings.Replace(wrongURI, "object=kek", "object=kek2", 1)); !errors.Is(err, pkcs11kms.ErrPIN) {
			t.Fatalf("GenerateKey with wrong PIN on an open token: %v", err)
		}
		if err := cl.DestroyKey(context.Background(), wrongURI); !errors.Is(err, pkcs11kms.ErrPIN) {
			t.Fatalf("DestroyKey with wrong PIN on an open token: %v", err)
		}
	}
	if _, err := c.GetAEAD(tok.URI("kek")); err != nil {
		t.Fatalf("right PIN after wrong ones: %v", err)
	}
}

func TestTokenAndModuleErrors(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	missing := fmt.Sprintf("pkcs11:token=no-such-token;object=kek?module-path=%s&pin-source=file:%s", tok.Module, tok.PINFile)
	if _, err := c.GetAEAD(missing); !errors.Is(err, pkcs11kms.ErrTokenNotFound) {
		t.Fatalf("missing token: %v, want ErrTokenNotFound", err)
	}
	badModule := fmt.Sprintf("pkcs11:token=%s;object=kek?module-path=/nonexistent/lib.so&pin-source=file:%s", tok.Label, tok.PINFile)
	if _, err := c.GetAEAD(badModule); !errors.Is(err, pkcs11kms.ErrHSM) || !strings.Contains(err.Error(), "/nonexistent/lib.so") {
		t.Fatalf("missing module: %v, want ErrHSM naming the module", err)
	}
}

func TestSupportedAndPrefix(t *testing.T) {
	c, err := pkcs11kms.NewClient("pkcs11:token=acme;")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for uri, want := range map[string]bool{
		"pkcs11:token=acme;object=k" + q:  true,
		"pkcs11:token=acme2;object=k" + q: false,
		"pkcs11:object=k;token=acme" + q:  false, // textual prefix, as in Tink
		"aws-kms://arn:aws:kms:...":       false,
		"":                                false,
	} {
		if got := c.Supported(uri); got != want {
			t.Errorf("Supported(%q) = %v, want %v", uri, got, want)
		}
	}
	if _, err := c.GetAEAD("pkcs11:token=beta;object=k" + q); !errors.Is(err, pkcs11kms.ErrUnsupportedURI) {
		t.Fatalf("GetAEAD outside prefix: %v, want ErrUnsupportedURI", err)
	}
	if err := c.GenerateKey(context.Background(), "pkcs11:token=beta;object=k"+q); !errors.Is(err, pkcs11kms.ErrUnsupportedURI) {
		t.Fatalf("GenerateKey outside prefix: %v", err)
	}
	if _, err := c.GetAEAD("pkcs11:token=acme;object=k?module-path=" + mod + "&pin-value=1234"); !errors.Is(err, pkcs11kms.ErrInvalidURI) {
		t.Fatalf("GetAEAD with pin-value: %v, want ErrInvalidURI", err)
	}
	for _, p := range []string{"", "pkcs11", "PKCS11:", "local://"} {
		if _, err := pkcs11kms.NewClient(p); !errors.Is(err, pkcs11kms.ErrInvalidURI) {
			t.Errorf("NewClient(%q): %v, want ErrInvalidURI", p, err)
		}
	}
}

func TestWithModulePaths(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t, pkcs11kms.WithModulePaths("/opt/vendor/hsm.so"))
	if _, err := c.GetAEAD(tok.URI("kek")); !errors.Is(err, pkcs11kms.ErrModuleNotAllowed) {
		t.Fatalf("GetAEAD with a module not allowed: %v", err)
	}
	c2 := newClient(t, pkcs11kms.WithModulePaths(tok.Module))
	newKey(t, c2, tok, "kek")
	if _, err := pkcs11kms.NewClient("pkcs11:", pkcs11kms.WithModulePaths("relative.so")); !errors.Is(err, pkcs11kms.ErrInvalidURI) {
		t.Fatalf("WithModulePaths(relative): %v", err)
	}
}

func TestClose(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	keep := newClient(t) // keeps the shared token connection open
	_, a := newKey(t, c, tok, "kek")
	if _, err := keep.GetAEAD(tok.URI("kek")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := a.Encrypt([]byte("x"), nil); !errors.Is(err, pkcs11kms.ErrClosed) {
		t.Fatalf("Encrypt after Close: %v, want ErrClosed", err)
	}
	if _, err := c.GetAEAD(tok.URI("kek")); !errors.Is(err, pkcs11kms.ErrClosed) {
		t.Fatalf("GetAEAD after Close: %v, want ErrClosed", err)
	}
	if err := c.GenerateKey(context.Background(), tok.URI("k2")); !errors.Is(err, pkcs11kms.ErrClosed) {
		t.Fatalf("GenerateKey after Close: %v, want ErrClosed", err)
	}
	b, err := keep.GetAEAD(tok.URI("kek"))
	if err != nil {
		t.Fatalf("other client after Close: %v", err)
	}
	if _, err := b.Encrypt([]byte("x"), nil); err != nil {
		t.Fatalf("other client's AEAD after Close: %v", err)
	}
}

// TestTokenDeleted: the token is deleted (as an operator or a failing HSM
// would) after successful use; every operation must then return an error,
// promptly, without panicking.
func TestTokenDeleted(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	uri, a := newKey(t, c, tok, "kek")
	ct, err := a.Encrypt([]byte("before"), nil)
	if err != nil {
		t.Fatal(err)
	}
	fresh := newClient(t)
	if err := tok.Delete(); err != nil {
		t.Fatal(err)
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := a.Encrypt([]byte("after"), nil); err == nil {
			t.Error("Encrypt succeeded on a deleted token")
		} else if !errors.Is(err, pkcs11kms.ErrKeyNotFound) && !errors.Is(err, pkcs11kms.ErrHSM) {
			t.Errorf("Encrypt on a deleted token: %v, want ErrKeyNotFound or ErrHSM", err)
		} else {
			t.Logf("Encrypt: %v", err)
		}
		if _, err := a.Decrypt(ct, nil); err == nil {
			t.Error("Decrypt succeeded on a deleted token")
		} else if errors.Is(err, pkcs11kms.ErrDecrypt) {
			t.Errorf("Decrypt on a deleted token says the ciphertext is bad: %v", err)
		}
		if _, err := c.GetAEAD(uri); err == nil {
			t.Error("GetAEAD succeeded on a deleted token")
		} else {
			t.Logf("GetAEAD: %v", err)
		}
		if err := c.GenerateKey(context.Background(), tok.URI("new")); err == nil {
			t.Error("GenerateKey succeeded on a deleted token")
		} else {
			t.Logf("GenerateKey: %v", err)
		}
		if _, err := fresh.GetAEAD(uri); err == nil {
			t.Error("a new client opened a deleted token")
		} else {
			t.Logf("new client GetAEAD: %v", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("operations on a deleted token did not return within 30s")
	}
}

func TestConcurrent(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	uri, _ := newKey(t, c, tok, "kek")
	const goroutines, rounds = 16, 200
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			a, err := c.GetAEAD(uri) // also exercises the shared connection
			if err != nil {
				errs <- err
				return
			}
			for i := range rounds {
				pt := fmt.Appendf(nil, "goroutine %d round %d", g, i)
				ad := fmt.Appendf(nil, "ad %d", g)
				ct, err := a.Encrypt(pt, ad)
				if err != nil {
					errs <- err
					return
				}
				got, err := a.Decrypt(ct, ad)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, pt) {
					errs <- fmt.Errorf("goroutine %d round %d: got %q", g, i, got)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestTinkKeysetWrapping uses the HSM key as a Tink master key: a keyset
// is written encrypted with associated data naming its tenant and read
// back, and a KMS envelope AEAD works over it.
func TestTinkKeysetWrapping(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	uri, master := newKey(t, c, tok, "master-kek")

	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	adAcme := []byte("tenant=acme;purpose=data")
	buf := new(bytes.Buffer)
	if err := h.WriteWithAssociatedData(keyset.NewBinaryWriter(buf), master, adAcme); err != nil {
		t.Fatalf("WriteWithAssociatedData: %v", err)
	}
	wrapped := buf.Bytes()

	// Read back through a separate client, as a restarted process would.
	master2, err := newClient(t).GetAEAD(uri)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(wrapped)), master2, adAcme)
	if err != nil {
		t.Fatalf("ReadWithAssociatedData: %v", err)
	}
	p1, err := aead.New(h)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := aead.New(h2)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := p1.Encrypt([]byte("row"), []byte("acme/users/1/email"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := p2.Decrypt(ct, []byte("acme/users/1/email")); err != nil || string(pt) != "row" {
		t.Fatalf("keyset read back does not decrypt: %q, %v", pt, err)
	}
	// The wrapped keyset copied to another tenant's row does not open.
	if _, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(wrapped)), master2, []byte("tenant=beta;purpose=data")); err == nil {
		t.Fatal("keyset opened with another tenant's associated data")
	}

	// KMS envelope encryption with the HSM key as KEK.
	env := aead.NewKMSEnvelopeAEAD2(aead.AES256GCMKeyTemplate(), master)
	ect, err := env.Encrypt([]byte("blob"), []byte("acme"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := aead.NewKMSEnvelopeAEAD2(aead.AES256GCMKeyTemplate(), master2).Decrypt(ect, []byte("acme")); err != nil || string(pt) != "blob" {
		t.Fatalf("envelope decrypt: %q, %v", pt, err)
	}
	if _, err := env.Decrypt(ect, []byte("beta")); err == nil {
		t.Fatal("envelope decrypted with another tenant's associated data")
	}
}

// TestKeyAttributes looks at a generated key with crypto11 directly: it
// must be a sensitive, non-extractable, private AES-256 token object whose
// value cannot be read; and GetAEAD must refuse an AES key of another size.
func TestKeyAttributes(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	newKey(t, c, tok, "kek")

	// Same resolved module path as pkcs11kms, or crypto11 would initialise
	// the library a second time.
	module, err := filepath.EvalSymlinks(tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	hsm, err := crypto11.Configure(&crypto11.Config{Path: module, TokenLabel: tok.Label, Pin: tok.PIN})
	if err != nil {
		t.Fatal(err)
	}
	defer hsm.Close()
	key, err := hsm.FindKey(nil, []byte("kek"))
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := hsm.GetAttributes(key, []crypto11.AttributeType{
		crypto11.CkaToken, crypto11.CkaPrivate, crypto11.CkaSensitive, crypto11.CkaExtractable,
		crypto11.CkaEncrypt, crypto11.CkaDecrypt, crypto11.CkaWrap, crypto11.CkaUnwrap,
		crypto11.CkaAlwaysSensitive, crypto11.CkaNeverExtractable, crypto11.CkaValueLen,
	})
	if err != nil {
		t.Fatal(err)
	}
	for typ, want := range map[crypto11.AttributeType]bool{
		crypto11.CkaToken: true, crypto11.CkaPrivate: true, crypto11.CkaSensitive: true,
		crypto11.CkaExtractable: false, crypto11.CkaEncrypt: true, crypto11.CkaDecrypt: true,
		crypto11.CkaWrap: false, crypto11.CkaUnwrap: false,
		crypto11.CkaAlwaysSensitive: true, crypto11.CkaNeverExtractable: true,
	} {
		a := attrs[typ]
		if a == nil || len(a.Value) != 1 || (a.Value[0] == 1) != want {
			t.Errorf("attribute %#x = %v, want %v", typ, a, want)
		}
	}
	if v := attrs[crypto11.CkaValueLen]; v == nil || binary.NativeEndian.Uint64(v.Value) != 32 {
		t.Errorf("CKA_VALUE_LEN = %v, want 32", v)
	}
	if _, err := hsm.GetAttribute(key, crypto11.CkaValue); err == nil {
		t.Error("the key's value could be read")
	}

	// An AES-128 key made outside pkcs11kms is not accepted as a KEK.
	if _, err := hsm.GenerateSecretKeyWithLabel([]byte("k128"), []byte("kek128"), 128, crypto11.CipherAES); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetAEAD(tok.URI("kek128")); !errors.Is(err, pkcs11kms.ErrHSM) || !strings.Contains(err.Error(), "not an AES-256 key") {
		t.Fatalf("GetAEAD of an AES-128 key: %v", err)
	}
	// Two keys with one label are ambiguous.
	if _, err := hsm.GenerateSecretKeyWithLabel([]byte("dup"), []byte("kek"), 256, crypto11.CipherAES); err != nil {
		t.Fatal(err)
	}
	if _, err := newClient(t).GetAEAD(tok.URI("kek")); !errors.Is(err, pkcs11kms.ErrHSM) || !strings.Contains(err.Error(), "2 keys") {
		t.Fatalf("GetAEAD with two keys under one label: %v", err)
	}
}

// TestModuleSymlink: one module named by two paths (Debian installs
// /usr/lib/softhsm/libsofthsm2.so as a symlink) is loaded once.
func TestModuleSymlink(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	real, err := filepath.EvalSymlinks(tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "libsofthsm2-link.so")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	c := newClient(t)
	_, a := newKey(t, c, tok, "kek")
	viaLink := fmt.Sprintf("pkcs11:token=%s;object=kek?module-path=%s&pin-source=file:%s", tok.Label, link, tok.PINFile)
	viaReal := fmt.Sprintf("pkcs11:token=%s;object=kek?module-path=%s&pin-source=file:%s", tok.Label, real, tok.PINFile)
	ct, err := a.Encrypt([]byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, uri := range []string{viaLink, viaReal} {
		b, err := newClient(t).GetAEAD(uri)
		if err != nil {
			t.Fatalf("GetAEAD(%s): %v", uri, err)
		}
		if pt, err := b.Decrypt(ct, nil); err != nil || string(pt) != "x" {
			t.Fatalf("Decrypt via %s: %q, %v", uri, pt, err)
		}
	}
}

// CanonicalKeyURI and KeyIdentity give one URI and one identity for every
// spelling of a key, and the canonical URI reaches the same key.
func TestClientCanonicalKeyURI(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t, pkcs11kms.WithModulePaths(tok.Module))
	uri, a := newKey(t, c, tok, "kek")
	ct, err := a.Encrypt([]byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := pkcs11kms.ParseKeyURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	// The canonical URI holds the module path with links resolved.
	if k.ModulePath, err = filepath.EvalSymlinks(k.ModulePath); err != nil {
		t.Fatal(err)
	}
	links := moduleLinks(t, tok.Module)
	t.Setenv("PKCS11KMS_TEST_ALIAS_PIN", tok.PIN)
	aliases := []string{
		uri,
		"pkcs11:object=kek;type=secret-key;token=" + softhsmtest.Escape(tok.Label) + "?pin-source=file:" + tok.PINFile + "&module-path=" + tok.Module,
		"pkcs11:token=" + softhsmtest.Escape(tok.Label) + ";object=%6b%65%6B?module-path=" + tok.Module + "&pin-source=env:PKCS11KMS_TEST_ALIAS_PIN",
	}
	for _, l := range links {
		aliases = append(aliases, "pkcs11:token="+softhsmtest.Escape(tok.Label)+";object=kek?module-path="+l+"&pin-source=file:"+tok.PINFile)
	}
	for _, alias := range aliases {
		id, err := c.KeyIdentity(alias)
		if err != nil || id != k.Identity() {
			t.Errorf("KeyIdentity(%q) = %q, %v; want %q", alias, id, err, k.Identity())
		}
		canon, err := c.CanonicalKeyURI(alias)
		if err != nil || !strings.HasPrefix(canon, k.Identity()) {
			t.Fatalf("CanonicalKeyURI(%q) = %q, %v", alias, canon, err)
		}
		again, err := c.CanonicalKeyURI(canon)
		if err != nil || again != canon {
			t.Errorf("CanonicalKeyURI is not idempotent: %q -> %q, %v", canon, again, err)
		}
		b, err := c.GetAEAD(canon)
		if err != nil {
			t.Fatalf("GetAEAD(%q): %v", canon, err)
		}
		if pt, err := b.Decrypt(ct, nil); err != nil || string(pt) != "x" {
			t.Fatalf("the canonical URI %q reaches another key: %q, %v", canon, pt, err)
		}
	}
	for _, alias := range append([]string{aliases[1]}, aliases[3:]...) {
		if canon, _ := c.CanonicalKeyURI(alias); canon != k.String() {
			t.Errorf("CanonicalKeyURI(%q) = %q, want %q", alias, canon, k.String())
		}
	}
	// Refused like GetAEAD: an invalid URI, a module not allowed, a URI
	// outside the prefix.
	if _, err := c.CanonicalKeyURI("pkcs11:token=t;object=k?module-path=" + tok.Module + "&pin-value=1"); !errors.Is(err, pkcs11kms.ErrInvalidURI) {
		t.Errorf("pin-value: %v", err)
	}
	other := filepath.Join(t.TempDir(), "other.so")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.KeyIdentity("pkcs11:token=t;object=k?module-path=" + other + "&pin-source=env:P"); !errors.Is(err, pkcs11kms.ErrModuleNotAllowed) {
		t.Errorf("module not allowed: %v", err)
	}
	acme, err := pkcs11kms.NewClient("pkcs11:token=acme;", pkcs11kms.WithModulePaths(tok.Module))
	if err != nil {
		t.Fatal(err)
	}
	defer acme.Close()
	if _, err := acme.CanonicalKeyURI("pkcs11:token=beta;object=k?module-path=" + tok.Module + "&pin-source=env:P"); !errors.Is(err, pkcs11kms.ErrUnsupportedURI) {
		t.Errorf("outside the prefix: %v", err)
	}
}

// moduleLinks returns other paths of the module file at module, made in a
// temporary directory: a link to it, a link to that link, and the module
// reached through a linked directory (as /lib/... is through /lib ->
// usr/lib).
func moduleLinks(t *testing.T, module string) []string {
	t.Helper()
	real, err := filepath.EvalSymlinks(module)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	link := filepath.Join(dir, "libsofthsm2-link.so")
	linkToLink := filepath.Join(dir, "libsofthsm2-link2.so")
	libDir := filepath.Join(dir, "lib")
	for _, l := range []struct{ target, name string }{
		{real, link}, {link, linkToLink}, {filepath.Dir(real), libDir},
	} {
		if err := os.Symlink(l.target, l.name); err != nil {
			t.Fatal(err)
		}
	}
	return []string{link, linkToLink, filepath.Join(libDir, filepath.Base(real))}
}

// A key's identity holds its module path with links resolved: a URI naming
// the module through a link is the same key, not another one (which a
// tenant could otherwise provision as its own and then have destroyed).
func TestModulePathLinksGiveOneIdentity(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	real, err := filepath.EvalSymlinks(tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	withReal := func(p string) string {
		return fmt.Sprintf("pkcs11:token=%s;object=kek?module-path=%s&pin-source=file:%s", softhsmtest.Escape(tok.Label), p, tok.PINFile)
	}
	c := newClient(t)
	newKey(t, c, tok, "kek")
	wantID, err := c.KeyIdentity(withReal(real))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(wantID, "module-path="+real+"&") {
		t.Fatalf("identity %q does not hold the resolved module path %s", wantID, real)
	}
	for _, p := range append(moduleLinks(t, tok.Module), tok.Module) {
		id, err := c.KeyIdentity(withReal(p))
		if err != nil || id != wantID {
			t.Errorf("KeyIdentity via %s = %q, %v; want %q", p, id, err, wantID)
		}
		canon, err := c.CanonicalKeyURI(withReal(p))
		if err != nil || canon != withReal(real) {
			t.Errorf("CanonicalKeyURI via %s = %q, %v; want %q", p, canon, err, withReal(real))
		}
	}
	// A module path that does not resolve is refused, with a clear error.
	for _, p := range []string{"/opt/not-installed/hsm.so", filepath.Join(t.TempDir(), "dangling.so")} {
		if strings.HasSuffix(p, "dangling.so") {
			if err := os.Symlink("/opt/not-installed/hsm.so", p); err != nil {
				t.Fatal(err)
			}
		}
		for name, f := range map[string]func(string) (string, error){"CanonicalKeyURI": c.CanonicalKeyURI, "KeyIdentity": c.KeyIdentity} {
			if _, err := f(withReal(p)); !errors.Is(err, pkcs11kms.ErrHSM) || !strings.Contains(err.Error(), "resolving its path") {
				t.Errorf("%s with module %s: %v, want ErrHSM saying the path does not resolve", name, p, err)
			}
		}
	}
}

// The allow-list compares modules with links resolved: a module allowed by
// one path is allowed by any path to the same file (the file loaded is the
// same), and one module allowed by two paths is fine; another module is
// refused however it is reached.
func TestWithModulePathsComparesResolvedModules(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	real, err := filepath.EvalSymlinks(tok.Module)
	if err != nil {
		t.Fatal(err)
	}
	links := moduleLinks(t, tok.Module)
	uriVia := func(p string) string {
		return fmt.Sprintf("pkcs11:token=%s;object=kek?module-path=%s&pin-source=file:%s", softhsmtest.Escape(tok.Label), p, tok.PINFile)
	}
	both := newClient(t, pkcs11kms.WithModulePaths(real, links[0], "/opt/not-installed/hsm.so"))
	newKey(t, both, tok, "kek")
	onlyLink := newClient(t, pkcs11kms.WithModulePaths(links[0]))
	for _, c := range []*pkcs11kms.Client{both, onlyLink} {
		for _, p := range append(links, real, tok.Module) {
			canon, err := c.CanonicalKeyURI(uriVia(p))
			if err != nil || canon != uriVia(real) {
				t.Errorf("CanonicalKeyURI via %s = %q, %v; want %q", p, canon, err, uriVia(real))
			}
		}
		if _, err := c.GetAEAD(uriVia(links[2])); err != nil {
			t.Errorf("GetAEAD via %s: %v", links[2], err)
		}
	}
	other := filepath.Join(t.TempDir(), "other.so")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	otherLink := filepath.Join(t.TempDir(), "libsofthsm2.so")
	if err := os.Symlink(other, otherLink); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{other, otherLink} {
		if _, err := onlyLink.CanonicalKeyURI(uriVia(p)); !errors.Is(err, pkcs11kms.ErrModuleNotAllowed) {
			t.Errorf("CanonicalKeyURI via %s (another module): %v, want ErrModuleNotAllowed", p, err)
		}
	}
}

// withID returns uri (from softhsmtest.Token.URI) with the id attribute
// id, spelled as given.
func withID(uri, id string) string { return strings.Replace(uri, "?", ";id="+id+"?", 1) }

// A URI with an id names exactly the AES key with that label and CKA_ID:
// GenerateKey makes it, GetAEAD uses it and DestroyKey destroys it, and
// none of them touches another key with the label.
func TestKeysByID(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c := newClient(t)
	ctx := t.Context()
	one, two := withID(tok.URI("kek"), "%01%ab"), withID(tok.URI("kek"), "%02")
	for _, u := range []string{one, two} {
		if err := c.GenerateKey(ctx, u); err != nil {
			t.Fatalf("GenerateKey(%s): %v", u, err)
		}
	}
	if err := c.GenerateKey(ctx, withID(tok.URI("kek"), "%01%AB")); !errors.Is(err, pkcs11kms.ErrKeyExists) {
		t.Fatalf("GenerateKey of an id and label taken: %v, want ErrKeyExists", err)
	}
	hsm := openHSM(t, tok)
	// A DES3 key with the label and an id of its own.
	if _, err := hsm.GenerateSecretKeyWithLabel([]byte{3}, []byte("kek"), 0, crypto11.CipherDES3); err != nil {
		t.Fatal(err)
	}
	objs := tokenObjects(t, tok, hsm)
	var ids []string
	for _, d := range aesKeysLabelled(objs, "kek") {
		_, id, _ := strings.Cut(d, " id=")
		id, _, _ = strings.Cut(id, " ")
		ids = append(ids, id)
	}
	if slices.Sort(ids); !slices.Equal(ids, []string{"01ab", "02"}) {
		t.Fatalf("CKA_IDs of the AES keys labelled kek: %v, want 01ab and 02", ids)
	}

	// Each URI reaches its own key, whichever way its id is spelled.
	ct1 := seal(t, c, one, []byte("one"), nil)
	ct2 := seal(t, c, two, []byte("two"), nil)
	opens(t, c, withID(tok.URI("kek"), "%01%AB"), ct1, []byte("one"), nil)
	opens(t, c, two, ct2, []byte("two"), nil)
	a2, err := c.GetAEAD(two)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a2.Decrypt(ct1, nil); !errors.Is(err, pkcs11kms.ErrDecrypt) {
		t.Fatalf("key 02 decrypted key 01's ciphertext: %v", err)
	}
	for _, tc := range []struct {
		uri    string
		want   error
		saying string
	}{
		{withID(tok.URI("kek"), "%01"), pkcs11kms.ErrKeyNotFound, "id=%01?"},            // a prefix of an id
		{withID(tok.URI("kek"), "%01%ab%00"), pkcs11kms.ErrKeyNotFound, "id=%01%AB%00"}, // more than one
		{withID(tok.URI("other"), "%02"), pkcs11kms.ErrKeyNotFound, "object=other"},     // another label
		{withID(tok.URI("kek"), "%03"), pkcs11kms.ErrHSM, "not an AES key"},             // the DES3 key
		{tok.URI("kek"), pkcs11kms.ErrHSM, "not an AES key"},                            // the label alone
	} {
		_, err := c.GetAEAD(tc.uri)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.saying) {
			t.Errorf("GetAEAD(%s) = %v, want %v saying %q", tc.uri, err, tc.want, tc.saying)
		}
	}

	// The canonical URI spells the id in upper case; the spellings have one
	// identity, another id another.
	canon, err := c.CanonicalKeyURI(one)
	if err != nil || !strings.Contains(canon, ";object=kek;id=%01%AB?") {
		t.Fatalf("CanonicalKeyURI(%s) = %q, %v", one, canon, err)
	}
	id1, _ := c.KeyIdentity(one)
	id1b, _ := c.KeyIdentity(withID(tok.URI("kek"), "%01%AB"))
	id2, _ := c.KeyIdentity(two)
	idNone, _ := c.KeyIdentity(tok.URI("kek"))
	if id1 != id1b || id1 == id2 || id1 == idNone || id1 == "" {
		t.Fatalf("identities: %q, %q, %q, %q", id1, id1b, id2, idNone)
	}

	// DestroyKey of one id destroys that key alone.
	before := tokenObjects(t, tok, hsm)
	if err := c.DestroyKey(ctx, one); err != nil {
		t.Fatal(err)
	}
	after := tokenObjects(t, tok, hsm)
	var gone []string
	for h, d := range before {
		if after[h] != d {
			gone = append(gone, d)
		}
	}
	if len(gone) != 1 || !strings.Contains(gone[0], `label="kek" id=01ab `) || len(after) != len(before)-1 {
		t.Fatalf("DestroyKey(%s) removed %v", one, gone)
	}
	opens(t, c, two, ct2, []byte("two"), nil)
	if _, err := c.GetAEAD(one); !errors.Is(err, pkcs11kms.ErrKeyNotFound) {
		t.Fatalf("GetAEAD after DestroyKey: %v", err)
	}
	if err := c.DestroyKey(ctx, one); err != nil {
		t.Fatalf("DestroyKey again: %v", err)
	}
	// An id-less DestroyKey destroys every AES key with the label, and not
	// the DES3 key.
	if err := c.DestroyKey(ctx, tok.URI("kek")); err != nil {
		t.Fatal(err)
	}
	left := tokenObjects(t, tok, hsm)
	if keys := aesKeysLabelled(left, "kek"); len(keys) != 0 || len(left) != len(after)-1 {
		t.Fatalf("after DestroyKey of the label: %v", left)
	}
}
