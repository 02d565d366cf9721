package pkcs11kms

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
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
	modules map[string]bool // allowed module paths, as given and resolved; nil: any module path

	closed atomic.Bool
	mu     sync.Mutex
	held   map[tokenKey]*tokenConn // one reference per token this client used
}

// An Option configures a Client.
type Option func(*Client) error

// WithModulePaths restricts the PKCS#11 modules the client will load to
// the given absolute paths. A URI naming another module fails with
// [ErrModuleNotAllowed]. Use it whenever key URIs can come from outside the
// operator's own configuration (customer-managed keys): loading a module
// runs its code in this process. A module is allowed when its path, as
// written or with symbolic links resolved, is one of the given paths or
// resolves to the same file as one: the file loaded is the resolved one.
// With no paths, no module is allowed.
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
			if real, err := filepath.EvalSymlinks(p); err == nil {
				c.modules[real] = true
			}
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
	return c, nil
}

// Supported reports whether keyURI is under the client's prefix. It does
// not parse the URI; GetAEAD does.
func (c *Client) Supported(keyURI string) bool {
	return strings.HasPrefix(keyURI, c.prefix)
}

// CanonicalKeyURI returns the canonical form of keyURI ([KeyURI.String])
// with the symbolic links in its module-path resolved: the same key, token,
// module and pin-source, spelled one way. keys.Manager stores master keys
// by this URI and compares them by [Client.KeyIdentity], so that a URI
// cannot pass for another key, or another key for it, by a different
// spelling, including a module path through a link (/lib -> usr/lib).
// It fails like GetAEAD for a URI that is invalid, names a module path that
// does not resolve (not installed: [ErrHSM]) or a module not allowed
// ([WithModulePaths]), or whose canonical form is not under the client's
// prefix (write prefixes in canonical order, token first). It resolves the
// module path but opens nothing.
func (c *Client) CanonicalKeyURI(keyURI string) (string, error) {
	k, err := c.parse(keyURI)
	if err != nil {
		return "", err
	}
	return k.String(), nil
}

// KeyIdentity returns the identity of the key keyURI names
// ([KeyURI.Identity] of the URI with its module path resolved): its
// canonical URI without the pin-source, which says how to log in, not which
// key it is. Every URI of one key, whatever the path it names the module
// by, has one identity. It fails like [Client.CanonicalKeyURI].
func (c *Client) KeyIdentity(keyURI string) (string, error) {
	k, err := c.parse(keyURI)
	if err != nil {
		return "", err
	}
	return k.Identity(), nil
}

// parse parses keyURI, resolves the symbolic links in its module path
// (the returned KeyURI holds the resolved path), and checks that the module
// is allowed and that the canonical form is under the client's prefix.
func (c *Client) parse(keyURI string) (*KeyURI, error) {
	k, err := ParseKeyURI(keyURI)
	if err != nil {
		return nil, err
	}
	if err := c.resolve(k); err != nil {
		return nil, err
	}
	if !c.Supported(k.String()) {
		return nil, fmt.Errorf("%w (prefix %s)", ErrUnsupportedURI, quote(c.prefix))
	}
	return k, nil
}

// resolve replaces k's module path by the path with its symbolic links
// resolved, and checks that the module is allowed ([WithModulePaths]).
func (c *Client) resolve(k *KeyURI) error {
	written := k.ModulePath
	real, err := resolveModule(written)
	if err != nil {
		return err
	}
	if c.modules != nil && !c.allowed(written, real) {
		return fmt.Errorf("%w: %s", ErrModuleNotAllowed, written)
	}
	k.ModulePath = real
	return nil
}

// resolveModule resolves the symbolic links in a module path: the module's
// identity is the file the dynamic linker loads, whatever link names it.
// A path that does not resolve (not installed) is refused: its identity
// could not be told.
func resolveModule(p string) (string, error) {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("%w: cannot load PKCS#11 module %s: resolving its path: %w", ErrHSM, p, err)
	}
	if !cleanAbs(real) || len(real) > maxPathLen {
		return "", fmt.Errorf("%w: PKCS#11 module %s: its resolved path %s is not a clean absolute path of at most %d bytes", ErrHSM, p, real, maxPathLen)
	}
	return real, nil
}

// allowed reports whether the module at written, which resolves to real,
// may be loaded ([WithModulePaths]).
func (c *Client) allowed(written, real string) bool {
	if c.modules[written] || c.modules[real] {
		return true
	}
	// An allowed path that did not resolve when the client was made (the
	// module was installed later).
	for p := range c.modules {
		if r, err := filepath.EvalSymlinks(p); err == nil && r == real {
			return true
		}
	}
	return false
}

// GetAEAD returns an AEAD whose Encrypt and Decrypt run AES-256-GCM inside
// the token, with the key named by keyURI. The AEAD also implements
// [tink.AEADWithContext]. Its ciphertexts are a random 12-byte nonce
// followed by the GCM ciphertext and 16-byte tag.
//
// GetAEAD opens the token on first use (reading the PIN from the URI's
// pin-source) and looks the key up: the AES key with the URI's object
// label and, if the URI has an id, that CKA_ID. A missing key fails with
// [ErrKeyNotFound], and several keys the URI names (a URI without an id,
// and several keys with the label) with [ErrHSM]. The returned AEAD stops
// working when the client is closed or the key destroyed.
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
// labelled with the URI's object, its CKA_ID the URI's id (without an id,
// the label). The key is a token object, sensitive, not extractable,
// private (usable only after login) and allowed to encrypt and decrypt
// only; GenerateKey checks that the token applied those attributes and
// destroys the key and fails if it did not. It fails with [ErrKeyExists]
// if the token already holds a secret key the URI names: one with that
// label and, if the URI has an id, that CKA_ID.
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
		existing, err := findNamed(conn, k)
		if err != nil {
			return struct{}{}, fmt.Errorf("%w: looking up key %s: %w", ErrHSM, k, err)
		}
		if len(existing) > 0 {
			return struct{}{}, fmt.Errorf("%w: %s", ErrKeyExists, k)
		}
		id := k.ID
		if id == nil {
			id = []byte(k.Object)
		}
		_, err = generate(conn, k, id)
		return struct{}{}, err
	})
	return c.opError(conn, err, "generating key", k)
}

// keyAttributes are the attributes GenerateKey sets on every key it makes,
// and checkKeyAttributes checks.
var keyAttributes = []struct {
	t    crypto11.AttributeType
	name string
	v    bool
}{
	{crypto11.CkaToken, "CKA_TOKEN", true},
	{crypto11.CkaPrivate, "CKA_PRIVATE", true},
	{crypto11.CkaSensitive, "CKA_SENSITIVE", true},
	{crypto11.CkaExtractable, "CKA_EXTRACTABLE", false},
	{crypto11.CkaEncrypt, "CKA_ENCRYPT", true},
	{crypto11.CkaDecrypt, "CKA_DECRYPT", true},
	{crypto11.CkaWrap, "CKA_WRAP", false},
	{crypto11.CkaUnwrap, "CKA_UNWRAP", false},
	{crypto11.CkaSign, "CKA_SIGN", false},
	{crypto11.CkaVerify, "CKA_VERIFY", false},
	{crypto11.CkaDerive, "CKA_DERIVE", false},
}

// generate makes an AES-256 key labelled k.Object with CKA_ID id and the
// attributes of keyAttributes, checks that the token applied them, and
// destroys the key and fails if it did not. The caller holds conn.genMu.
func generate(conn *tokenConn, k *KeyURI, id []byte) (*crypto11.SecretKey, error) {
	tmpl, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(k.Object))
	if err != nil {
		return nil, err
	}
	for _, a := range keyAttributes {
		if err := tmpl.Set(a.t, a.v); err != nil {
			return nil, err
		}
	}
	key, err := conn.ctx.GenerateSecretKeyWithAttributes(tmpl, 256, crypto11.CipherAES)
	if err != nil {
		return nil, err
	}
	if err := checkKeyAttributes(conn.ctx, key); err != nil {
		_ = key.Delete()
		return nil, fmt.Errorf("%w: %s: the token did not make the key as asked: %w", ErrHSM, k, err)
	}
	return key, nil
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

// checkKeyAttributes verifies that key is an AES-256 key with the
// attributes GenerateKey sets (keyAttributes) and that it has always been
// sensitive and never extractable: a key whose value was never outside the
// token. Some tokens silently ignore template attributes. A key that is
// not so fails with an [attrError]; any other error is the module's.
func checkKeyAttributes(ctx *crypto11.Context, key *crypto11.SecretKey) error {
	if key.Cipher != crypto11.CipherAES {
		return attrError("not an AES key")
	}
	types := []crypto11.AttributeType{crypto11.CkaValueLen, crypto11.CkaAlwaysSensitive, crypto11.CkaNeverExtractable}
	for _, a := range keyAttributes {
		types = append(types, a.t)
	}
	attrs, err := ctx.GetAttributes(key, types)
	if err != nil {
		return err
	}
	check := func(t crypto11.AttributeType, name string, want bool) error {
		a := attrs[t]
		if a == nil || len(a.Value) != 1 {
			return attrError(name + " is missing")
		}
		if got := a.Value[0] != 0; got != want {
			return attrError(fmt.Sprintf("%s is %v, want %v", name, got, want))
		}
		return nil
	}
	for _, a := range keyAttributes {
		if err := check(a.t, a.name, a.v); err != nil {
			return err
		}
	}
	if err := check(crypto11.CkaAlwaysSensitive, "CKA_ALWAYS_SENSITIVE", true); err != nil {
		return err
	}
	if err := check(crypto11.CkaNeverExtractable, "CKA_NEVER_EXTRACTABLE", true); err != nil {
		return err
	}
	if v := attrs[crypto11.CkaValueLen]; v == nil || ulong(v.Value) != 32 {
		return attrError("not a 256-bit key")
	}
	return nil
}

// An attrError says how a key differs from one GenerateKey makes.
type attrError string

func (e attrError) Error() string { return string(e) }

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

// DestroyKey destroys every AES key the URI names in the token: labelled
// with its object and, if it has an id, with that CKA_ID
// (crypto-shredding a KEK): from then on nothing encrypted under it can be
// decrypted, through this process or any other. It destroys no object of
// another class or key type with that label. AEADs already
// obtained for it fail with [ErrKeyNotFound]. DestroyKey is idempotent: a
// key that does not exist (destroyed already, or never made) is not an
// error. It fails with [ErrHSM] if the key
// is still found after deletion, and like GetAEAD if the token cannot be
// opened (a missing token is an error: the key may be in it).
func (c *Client) DestroyKey(ctx context.Context, keyURI string) error {
	k, conn, err := c.open(keyURI)
	if err != nil {
		return err
	}
	_, err = call(ctx, func() (struct{}, error) {
		conn.genMu.Lock()
		defer conn.genMu.Unlock()
		keys, err := findNamed(conn, k)
		if err != nil {
			return struct{}{}, fmt.Errorf("%w: looking up key %s: %w", ErrHSM, k, err)
		}
		keys = onlyAES(keys)
		if len(keys) == 0 {
			return struct{}{}, nil // gone already
		}
		for _, key := range keys {
			if err := key.Delete(); err != nil {
				return struct{}{}, fmt.Errorf("%w: destroying key %s: %w", ErrHSM, k, err)
			}
		}
		left, err := findNamed(conn, k)
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

// findKeys returns the AES keys k names: labelled k.Object, with CKA_ID
// k.ID if it has one. Another secret key with that label (and id) fails.
func (c *Client) findKeys(ctx context.Context, conn *tokenConn, k *KeyURI) ([]*crypto11.SecretKey, error) {
	keys, err := call(ctx, func() ([]*crypto11.SecretKey, error) {
		return findNamed(conn, k)
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
			return nil, fmt.Errorf("%w: %s: a key it names is not an AES key", ErrHSM, k)
		}
	}
	return keys, nil
}

// findNamed returns the secret keys k names: labelled k.Object and, if k
// has an id, with CKA_ID k.ID. A key that another process destroys while
// crypto11 reads the keys found fails the search
// (CKR_OBJECT_HANDLE_INVALID): it searches again, a few times.
func findNamed(conn *tokenConn, k *KeyURI) ([]*crypto11.SecretKey, error) {
	for i := 0; ; i++ {
		keys, err := conn.ctx.FindKeys(k.ID, []byte(k.Object))
		if err == nil || !keyGone(ckr(err)) || i == 10 {
			return keys, err
		}
	}
}

// findKey returns the one AES key k names.
func (c *Client) findKey(ctx context.Context, conn *tokenConn, k *KeyURI) (*crypto11.SecretKey, error) {
	keys, err := c.findKeys(ctx, conn, k)
	switch {
	case err != nil:
		return nil, err
	case len(keys) == 0:
		return nil, fmt.Errorf("%w: %s", ErrKeyNotFound, k)
	case len(keys) > 1:
		return nil, fmt.Errorf("%w: %s: %d keys have %s", ErrHSM, k, len(keys), what(k))
	}
	return keys[0], nil
}

// what says what the keys k names have in common, for errors.
func what(k *KeyURI) string {
	if k.ID != nil {
		return "that label and id"
	}
	return "that label"
}
