package keys

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/rtmx-ai/tenancy/tenant"
)

// KeyDestroyer is implemented by KMS clients that can destroy a master key
// (localkms deletes the key file; an HSM client destroys the token object).
// [Manager.Shred] uses it, when the client has it, to destroy a tenant's
// own (customer-managed) master key. DestroyKey must be idempotent: a key
// that no longer exists is not an error.
type KeyDestroyer interface {
	DestroyKey(ctx context.Context, keyURI string) error
}

// DisplayURI returns keyURI for messages and logs, with secrets redacted: a
// PKCS#11 pin-value attribute, and the key that a Tink fake-kms:// URI
// carries inline (replaced by a short fingerprint).
func DisplayURI(keyURI string) string {
	const fake = "fake-kms://"
	if len(keyURI) > len(fake) && strings.EqualFold(keyURI[:len(fake)], fake) {
		sum := sha256.Sum256([]byte(keyURI))
		return keyURI[:len(fake)] + "redacted-" + hex.EncodeToString(sum[:4])
	}
	lower := strings.ToLower(keyURI)
	const pin = "pin-value="
	if i := strings.Index(lower, pin); i >= 0 {
		start := i + len(pin)
		end := strings.IndexAny(keyURI[start:], ";&?#")
		rest := ""
		if end >= 0 {
			rest = keyURI[start+end:]
		}
		return keyURI[:start] + "REDACTED" + DisplayURI(rest)
	}
	return keyURI
}

// client returns the first configured KMS client that supports uri.
func (m *Manager) client(uri string) registry.KMSClient {
	for _, c := range m.kms {
		if supported(c, uri) {
			return c
		}
	}
	return nil
}

// supported calls c.Supported, turning a panic into "no".
func supported(c registry.KMSClient, uri string) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return c.Supported(uri)
}

// checkKEK reports whether uri can be used as a master key URI, naming
// field in the error.
func (m *Manager) checkKEK(op, field, uri string) error {
	if uri == "" {
		return fmt.Errorf("keys: %s: %w: %s is empty", op, ErrInvalidArgument, field)
	}
	if m.client(uri) == nil {
		return fmt.Errorf("keys: %s: %w: %s %q (configure a KMS client for its scheme in Config.KMS)",
			op, ErrUnsupportedKEK, field, DisplayURI(uri))
	}
	return nil
}

// kek returns the master key named uri as an AEAD whose calls are counted
// in Stats.KEKCalls and cannot panic.
func (m *Manager) kek(uri string) (tink.AEAD, error) {
	c := m.client(uri)
	if c == nil {
		return nil, fmt.Errorf("%w: %q (configure a KMS client for its scheme in Config.KMS)", ErrUnsupportedKEK, DisplayURI(uri))
	}
	var a tink.AEAD
	err := protect(func() error {
		var err error
		a, err = c.GetAEAD(uri)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: master key %s: %w", ErrUnwrap, DisplayURI(uri), err)
	}
	if a == nil {
		return nil, fmt.Errorf("%w: master key %s: the KMS client returned no AEAD", ErrUnwrap, DisplayURI(uri))
	}
	return &countingAEAD{a: a, calls: &m.kekCalls}, nil
}

// kekErr returns the error of the master key's own last call, if any, so
// that callers can match its cause (Tink's keyset functions flatten it into
// text).
func kekErr(kek tink.AEAD, err error) error {
	if c, ok := kek.(*countingAEAD); ok && c.err != nil {
		return c.err
	}
	return err
}

// countingAEAD counts the master-key operations (one per wrap or unwrap),
// and turns a panicking client (some PKCS#11 stacks panic on device errors)
// into an error.
//
// A countingAEAD is made per wrap or unwrap and is not shared, so it can
// keep the error of its last call.
type countingAEAD struct {
	a     tink.AEAD
	calls *atomic.Uint64
	err   error
}

// Encrypt implements tink.AEAD.
func (c *countingAEAD) Encrypt(pt, ad []byte) (ct []byte, err error) {
	c.calls.Add(1)
	err = protect(func() error {
		ct, err = c.a.Encrypt(pt, ad)
		return err
	})
	c.err = err
	return ct, err
}

// Decrypt implements tink.AEAD.
func (c *countingAEAD) Decrypt(ct, ad []byte) (pt []byte, err error) {
	c.calls.Add(1)
	err = protect(func() error {
		pt, err = c.a.Decrypt(ct, ad)
		return err
	})
	c.err = err
	return pt, err
}

// String implements fmt.Stringer without printing the wrapped AEAD.
func (c *countingAEAD) String() string { return "keys.masterKey{}" }

// GoString implements fmt.GoStringer the same way.
func (c *countingAEAD) GoString() string { return c.String() }

// protect runs f and turns a panic into an error.
func protect(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("KMS client panicked: %v", r)
		}
	}()
	return f()
}

// wrap encrypts h with the master key at uri, binding tenant and purpose.
func (m *Manager) wrap(h *keyset.Handle, id tenant.ID, p Purpose, uri string) ([]byte, error) {
	kek, err := m.kek(uri)
	if err != nil {
		return nil, fmt.Errorf("keys: wrap %s keyset of tenant %s: %w", p, id, err)
	}
	var buf bytes.Buffer
	if err := h.WriteWithAssociatedData(keyset.NewBinaryWriter(&buf), kek, keysetAD(id, p)); err != nil {
		return nil, fmt.Errorf("keys: wrap %s keyset of tenant %s with master key %s: %w: %w", p, id, DisplayURI(uri), ErrUnwrap, kekErr(kek, err))
	}
	return buf.Bytes(), nil
}

// unwrap decrypts w with the master key it names.
func (m *Manager) unwrap(w WrappedKeyset) (*keyset.Handle, error) {
	kek, err := m.kek(w.KEKURI)
	if err != nil {
		return nil, fmt.Errorf("keys: unwrap %s keyset of tenant %s: %w", w.Purpose, w.Tenant, err)
	}
	h, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(w.Wrapped)), kek, keysetAD(w.Tenant, w.Purpose))
	if err != nil {
		return nil, fmt.Errorf("keys: unwrap %s keyset of tenant %s with master key %s: %w: %w", w.Purpose, w.Tenant, DisplayURI(w.KEKURI), ErrUnwrap, kekErr(kek, err))
	}
	want := w.Purpose.template().GetTypeUrl()
	for _, k := range h.KeysetInfo().GetKeyInfo() {
		if k.GetTypeUrl() != want {
			return nil, fmt.Errorf("keys: unwrap %s keyset of tenant %s: %w: it holds a key of type %s, want %s", w.Purpose, w.Tenant, ErrUnwrap, k.GetTypeUrl(), want)
		}
	}
	return h, nil
}
