package pkcs11kms

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ThalesGroup/crypto11"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/tink"
)

var _ registry.KMSClient = (*Client)(nil)

// Client is a Tink [registry.KMSClient] for AES-256 master keys held in
// PKCS#11 tokens. It is safe for concurrent use. Make one with [NewClient]
// and Close it when done.
type Client struct {
	prefix  string
	modules map[string]bool // nil: any module path

	closed atomic.Bool
	mu     sync.Mutex
	held   map[tokenKey]*tokenConn // one reference per token this client used
}

// An Option configures a Client.
type Option func(*Client) error

// WithModulePaths restricts the PKCS#11 modules the client will load to
// the given absolute paths. A URI naming another module-path fails with
// [ErrModuleNotAllowed]. Use it whenever key URIs can come from outside the
// operator's own configuration (customer-managed keys): loading a module
// runs its code in this process. Paths are compared as written, before
// symlinks are resolved, and a key's identity ([KeyURI.Identity]) holds its
// module path as written, so [NewClient] refuses two allowed paths that are
// one module. With no paths, no module is allowed.
func WithModulePaths(paths ...string) Option {
	return func(c *Client) error {
		if c.modules == nil {
			c.modules = map[string]bool{}
		}
		for _, p := range paths {
			if !cleanAbs(p) {
				return &URIError{Attr: "module-path", Reason: "WithModulePaths: must be a clean absolute path"}
			}
			c.modules[p] = true
		}
		return nil
	}
}

// NewClient returns a client for the key URIs that start with uriPrefix,
// which must itself start with "pkcs11:" (the prefix "pkcs11:" alone
// accepts every PKCS#11 key URI). As with Tink's own KMS clients, the match
// is on the URI text: end a prefix at an attribute boundary
// ("pkcs11:token=acme;"), or "pkcs11:token=acme" will also match the token
// "acme2".
//
// NewClient opens nothing: tokens are opened, and their PINs read, by the
// first call that needs them.
func NewClient(uriPrefix string, opts ...Option) (*Client, error) {
	if !strings.HasPrefix(uriPrefix, Scheme) {
		return nil, &URIError{Reason: `URI prefix must start with "pkcs11:"`}
	}
	c := &Client{prefix: uriPrefix, held: map[tokenKey]*tokenConn{}}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if err := c.checkModuleAliases(); err != nil {
		return nil, err
	}
	return c, nil
}

// checkModuleAliases refuses an allow-list naming one module by two paths
// (one a symbolic link to the other): a key would then have two URIs of
// different identities. Paths that do not resolve (not installed) are not
// checked.
func (c *Client) checkModuleAliases() error {
	seen := map[string]string{}
	paths := make([]string, 0, len(c.modules))
	for p := range c.modules {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			continue
		}
		if other, ok := seen[real]; ok {
			return &URIError{Attr: "module-path", Reason: "WithModulePaths: " + other + " and " + p +
				" are one module (a symbolic link): allow one path per module, so that each key has one identity"}
		}
		seen[real] = p
	}
	return nil
}

// Supported reports whether keyURI is under the client's prefix. It does
// not parse the URI; GetAEAD does.
func (c *Client) Supported(keyURI string) bool {
	return strings.HasPrefix(keyURI, c.prefix)
}

// CanonicalKeyURI returns the canonical form of keyURI ([KeyURI.String]):
// the same key, token, module and pin-source, spelled one way. keys.Manager
// stores master keys by this URI and compares them by [Client.KeyIdentity],
// so that a URI cannot pass for another key, or another key for it, by a
// different spelling. It fails like GetAEAD for a URI that is invalid,
// names a module not allowed ([WithModulePaths]), or whose canonical form
// is not under the client's prefix (write prefixes in canonical order,
// token first). It opens nothing.
func (c *Client) CanonicalKeyURI(keyURI string) (string, error) {
	k, err := c.parse(keyURI)
	if err != nil {
		return "", err
	}
	return k.String(), nil
}

// KeyIdentity returns the identity of the key keyURI names
// ([KeyURI.Identity]): its canonical URI without the pin-source, which says
// how to log in, not which key it is. It fails like [Client.CanonicalKeyURI].
func (c *Client) KeyIdentity(keyURI string) (string, error) {
	k, err := c.parse(keyURI)
	if err != nil {
		return "", err
	}
	return k.Identity(), nil
}

// parse parses keyURI and checks that its module is allowed and that its
// canonical form is under the client's prefix.
func (c *Client) parse(keyURI string) (*KeyURI, error) {
	k, err := ParseKeyURI(keyURI)
	if err != nil {
		return nil, err
	}
	if c.modules != nil && !c.modules[k.ModulePath] {
		return nil, fmt.Errorf("%w: %s", ErrModuleNotAllowed, k.ModulePath)
	}
	if !c.Supported(k.String()) {
		return nil, fmt.Errorf("%w (prefix %s)", ErrUnsupportedURI, quote(c.prefix))
	}
	return k, nil
}

// GetAEAD returns an AEAD whose Encrypt and Decrypt run AES-256-GCM inside
// the token, with the key named by keyURI. The AEAD also implements
// [tink.AEADWithContext]. Its ciphertexts are a random 12-byte nonce
// followed by the GCM ciphertext and 16-byte tag.
//
// GetAEAD opens the token on first use (reading the PIN from the URI's
// pin-source) and looks the key up; a missing key fails with
// [ErrKeyNotFound]. The returned AEAD stops working when the client is
// closed or the key destroyed.
func (c *Client) GetAEAD(keyURI string) (tink.AEAD, error) {
	k, conn, err := c.open(keyURI)
	if err != nil {
		return nil, err
	}
	key, err := c.findKey(context.Background(), conn, k)
	if err != nil {
		return nil, err
	}
	size, err := protect(func() (uint64, error) {
		a, err := conn.ctx.GetAttribute(key, crypto11.CkaValueLen)
		if err != nil {
			return 0, err
		}
		return ulong(a.Value), nil
	})
	if err != nil {
		conn.noteError(err)
		return nil, fmt.Errorf("%w: reading the size of key %s: %w", ErrHSM, k, err)
	}
	if size != 32 {
		return nil, fmt.Errorf("%w: %s: not an AES-256 key (%d bytes)", ErrHSM, k, size)
	}
	gcm, err := protect(key.NewGCM)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrHSM, k, err)
	}
	return &hsmAEAD{client: c, conn: conn, uri: k.String(), gcm: gcm}, nil
}

// GenerateKey creates a new AES-256 key inside the token named by keyURI,
// labelled with the URI's object. The key is a token object, sensitive,
// not extractable, private (usable only after login) and allowed to
// encrypt and decrypt only; GenerateKey checks that the token applied those
// attributes and destroys the key and fails if it did not. It fails with
// [ErrKeyExists] if the token already holds a key with that label.
//
// PKCS#11 calls cannot be interrupted: when ctx ends first, GenerateKey
// returns ctx's error and the call it was waiting for completes in the
// background (it may still create the key).
func (c *Client) GenerateKey(ctx context.Context, keyURI string) error {
	k, conn, err := c.open(keyURI)
	if err != nil {
		return err
	}
	// Lookup and generation run as one call under the token's lock, so
	// that a caller giving up (ctx) does not release the lock while the
	// module is still generating.
	_, err = call(ctx, func() (struct{}, error) {
		conn.genMu.Lock()
		defer conn.genMu.Unlock()
		existing, err := conn.ctx.FindKeys(nil, []byte(k.Object))
		if err != nil {
			return struct{}{}, fmt.Errorf("%w: looking up key %s: %w", ErrHSM, k, err)
		}
		if len(existing) > 0 {
			return struct{}{}, fmt.Errorf("%w: %s", ErrKeyExists, k)
		}
		tmpl, err := crypto11.NewAttributeSetWithIDAndLabel([]byte(k.Object), []byte(k.Object))
		if err != nil {
			return struct{}{}, err
		}
		for _, a := range []struct {
			t crypto11.AttributeType
			v bool
		}{
			{crypto11.CkaToken, true},
			{crypto11.CkaPrivate, true},
			{crypto11.CkaSensitive, true},
			{crypto11.CkaExtractable, false},
			{crypto11.CkaEncrypt, true},
			{crypto11.CkaDecrypt, true},
			{crypto11.CkaWrap, false},
			{crypto11.CkaUnwrap, false},
			{crypto11.CkaSign, false},
			{crypto11.CkaVerify, false},
			{crypto11.CkaDerive, false},
		} {
			if err := tmpl.Set(a.t, a.v); err != nil {
				return struct{}{}, err
			}
		}
		key, err := conn.ctx.GenerateSecretKeyWithAttributes(tmpl, 256, crypto11.CipherAES)
		if err != nil {
			return struct{}{}, err
		}
		if err := checkKeyAttributes(conn.ctx, key); err != nil {
			_ = key.Delete()
			return struct{}{}, err
		}
		return struct{}{}, nil
	})
	return c.opError(conn, err, "generating key", k)
}

// opError classifies the error of a key-management call: context errors
// and this package's errors pass through, anything else (a module error
// or a recovered panic) is wrapped in ErrHSM.
func (c *Client) opError(conn *tokenConn, err error, what string, k *KeyURI) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	conn.noteError(err)
	switch {
	case errors.Is(err, ErrKeyExists), errors.Is(err, ErrKeyNotFound), errors.Is(err, ErrHSM):
		return err
	}
	return fmt.Errorf("%w: %s %s: %w", ErrHSM, what, k, err)
}

// checkKeyAttributes verifies that a generated key really is a sensitive,
// non-extractable AES-256 key: some tokens silently ignore template
// attributes.
func checkKeyAttributes(ctx *crypto11.Context, key *crypto11.SecretKey) error {
	attrs, err := ctx.GetAttributes(key, []crypto11.AttributeType{
		crypto11.CkaSensitive, crypto11.CkaExtractable, crypto11.CkaValueLen,
	})
	if err != nil {
		return err
	}
	isTrue := func(t crypto11.AttributeType) bool {
		a := attrs[t]
		return a != nil && len(a.Value) == 1 && a.Value[0] == 1
	}
	switch {
	case !isTrue(crypto11.CkaSensitive):
		return errors.New("token did not make the key sensitive")
	case attrs[crypto11.CkaExtractable] == nil || isTrue(crypto11.CkaExtractable):
		return errors.New("token made the key extractable")
	case attrs[crypto11.CkaValueLen] == nil || ulong(attrs[crypto11.CkaValueLen].Value) != 32:
		return errors.New("token did not make a 256-bit key")
	}
	return nil
}

// ulong decodes a CK_ULONG attribute value, which miekg/pkcs11 returns in
// native byte order; it returns 0 for a value of unexpected size.
func ulong(b []byte) uint64 {
	switch len(b) {
	case 8:
		return binary.NativeEndian.Uint64(b)
	case 4:
		return uint64(binary.NativeEndian.Uint32(b))
	}
	return 0
}

// onlyAES filters keys to AES keys.
func onlyAES(keys []*crypto11.SecretKey) []*crypto11.SecretKey {
	var aes []*crypto11.SecretKey
	for _, k := range keys {
		if k.Cipher == crypto11.CipherAES {
			aes = append(aes, k)
		}
	}
	return aes
}

// DestroyKey destroys every AES key labelled with the URI's object in the
// token (crypto-shredding a KEK): from then on nothing encrypted under it
// can be decrypted, through this process or any other. AEADs already
// obtained for it fail with [ErrKeyNotFound]. It fails with
// [ErrKeyNotFound] if there is no such key, and with [ErrHSM] if the key is
// still found after deletion.
func (c *Client) DestroyKey(ctx context.Context, keyURI string) error {
	k, conn, err := c.open(keyURI)
	if err != nil {
		return err
	}
	_, err = call(ctx, func() (struct{}, error) {
		conn.genMu.Lock()
		defer conn.genMu.Unlock()
		keys, err := conn.ctx.FindKeys(nil, []byte(k.Object))
		if err != nil {
			return struct{}{}, fmt.Errorf("%w: looking up key %s: %w", ErrHSM, k, err)
		}
		keys = onlyAES(keys)
		if len(keys) == 0 {
			return struct{}{}, fmt.Errorf("%w: %s", ErrKeyNotFound, k)
		}
		for _, key := range keys {
			if err := key.Delete(); err != nil {
				return struct{}{}, fmt.Errorf("%w: destroying key %s: %w", ErrHSM, k, err)
			}
		}
		left, err := conn.ctx.FindKeys(nil, []byte(k.Object))
		if err != nil {
			return struct{}{}, fmt.Errorf("%w: checking that key %s is gone: %w", ErrHSM, k, err)
		}
		if len(onlyAES(left)) > 0 {
			return struct{}{}, fmt.Errorf("%w: key %s still present after destroy", ErrHSM, k)
		}
		return struct{}{}, nil
	})
	return c.opError(conn, err, "destroying key", k)
}

// Close releases the client's tokens; a token's connection is closed when
// the last client using it in the process closes. AEADs obtained from the
// client fail with [ErrClosed] afterwards. Close is idempotent.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.mu.Lock()
	held := c.held
	c.held = nil
	c.mu.Unlock()
	var errs []error
	for _, conn := range held {
		errs = append(errs, conn.release())
	}
	return errors.Join(errs...)
}

// open parses and checks keyURI, reads its PIN and returns the shared
// connection to its token, held by this client.
func (c *Client) open(keyURI string) (*KeyURI, *tokenConn, error) {
	if c.closed.Load() {
		return nil, nil, ErrClosed
	}
	if !c.Supported(keyURI) {
		return nil, nil, fmt.Errorf("%w (prefix %s)", ErrUnsupportedURI, quote(c.prefix))
	}
	k, err := c.parse(keyURI)
	if err != nil {
		return nil, nil, err
	}
	pin, err := readPIN(k.PINSource)
	if err != nil {
		return nil, nil, err
	}
	defer clear(pin)

	key, err := moduleKey(k)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held == nil {
		return nil, nil, ErrClosed
	}
	if conn := c.held[key]; conn != nil {
		if !conn.broken.Load() {
			if err := conn.checkPIN(pinDigest(pin)); err != nil {
				return nil, nil, err
			}
			return k, conn, nil
		}
		delete(c.held, key)
		_ = conn.release() // broken anyway
	}
	conn, err := acquire(key, k, pin)
	if err != nil {
		return nil, nil, err
	}
	c.held[key] = conn
	return k, conn, nil
}

// findKeys returns the AES keys labelled k.Object.
func (c *Client) findKeys(ctx context.Context, conn *tokenConn, k *KeyURI) ([]*crypto11.SecretKey, error) {
	keys, err := call(ctx, func() ([]*crypto11.SecretKey, error) {
		return conn.ctx.FindKeys(nil, []byte(k.Object))
	})
	if err != nil {
		conn.noteError(err)
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: looking up key %s: %w", ErrHSM, k, err)
	}
	for _, key := range keys {
		if key.Cipher != crypto11.CipherAES {
			return nil, fmt.Errorf("%w: %s: an object with that label is not an AES key", ErrHSM, k)
		}
	}
	return keys, nil
}

// findKey returns the one AES key labelled k.Object.
func (c *Client) findKey(ctx context.Context, conn *tokenConn, k *KeyURI) (*crypto11.SecretKey, error) {
	keys, err := c.findKeys(ctx, conn, k)
	switch {
	case err != nil:
		return nil, err
	case len(keys) == 0:
		return nil, fmt.Errorf("%w: %s", ErrKeyNotFound, k)
	case len(keys) > 1:
		return nil, fmt.Errorf("%w: %s: %d keys have that label", ErrHSM, k, len(keys))
	}
	return keys[0], nil
}
