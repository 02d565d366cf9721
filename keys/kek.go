package keys

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/rtmx-ai/tenancy/tenant"
)

// KeyMaker makes and destroys the master keys the platform keeps for one
// tenant each (ProvisionOptions.TenantKEK; one HSM key per government
// tenant, say): keys/pkcs11kms's KeyMaker in an HSM token, keys/localkms's
// in a directory for development. The [Manager] chooses the label
// ([TenantKEKLabel]); the maker places the key, and its URIs must be served
// by a client in Config.KMS.
//
// Every key a maker creates is a new key with a URI of its own, so nothing
// ever has to decide whether a key found under a label is the one meant: a
// Provision that ran twice at once, or was resumed after a crash, leaves an
// unused key under the tenant's label, and Shred destroys it with the
// others. A Manager asks a maker to destroy the keys of a tenant's label,
// never a key named by a caller or read from the Store.
//
// A label names a tenant ID, not a deployment: give each deployment
// (production, staging) a token or directory of its own, or one
// deployment's Shred of a tenant destroys another's keys of that ID.
type KeyMaker interface {
	// CreateKey creates a new master key labelled label and returns the URI
	// that names that key and no other. Every call makes another key.
	CreateKey(ctx context.Context, label string) (keyURI string, err error)
	// DestroyKeys destroys every key the maker made with label, and
	// nothing else. None is not an error.
	DestroyKeys(ctx context.Context, label string) error
	// Owns reports whether keyURI names a key the maker makes with label,
	// in the spelling CreateKey gives. It opens nothing.
	Owns(keyURI, label string) bool
}

// TenantKEKLabel returns the label of the master key a [KeyMaker] makes
// for tenant id: "tenancy-tenant-" followed by the ID.
func TenantKEKLabel(id tenant.ID) string { return tenantKEKLabelPrefix + id.String() }

const tenantKEKLabelPrefix = "tenancy-tenant-"

// clients returns the KMS clients that serve master keys of kind k:
// Config.CustomerKMS for customer keys, Config.KMS for the others.
func (m *Manager) clients(k KEKKind) []registry.KMSClient {
	if k == KEKCustomer {
		return m.customer
	}
	return m.kms
}

// client returns the first KMS client for keys of kind k that supports uri.
func (m *Manager) client(k KEKKind, uri URI) registry.KMSClient {
	for _, c := range m.clients(k) {
		if supported(c, string(uri)) {
			return c
		}
	}
	return nil
}

// configField names the Config field of the KMS clients for keys of kind k.
func configField(k KEKKind) string {
	if k == KEKCustomer {
		return "Config.CustomerKMS"
	}
	return "Config.KMS"
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

// KeyIdentifier is implemented by KMS clients whose master keys can be
// named by more than one URI: a PKCS#11 URI's attributes in any order,
// percent-encoded or not, with the PIN read from one source or another, its
// module named through a symbolic link; a local path spelled with "./" or
// "//", or through a symbolic link. keys/localkms and keys/pkcs11kms
// implement it (both resolve symbolic links).
//
// A [Manager] compares master keys by identity, not by spelling: a
// customer key (ProvisionOptions.CustomerKEK) that is the platform master
// key, or a retired one, under another spelling is refused. It
// canonicalises every master key URI it is given (Config.PlatformKEK,
// Config.RetiredKEKs, the customer's key, the arguments of
// [Manager.Rewrap]) and stores keysets under the canonical URI.
//
// For clients without it (Tink's AWS, GCP, Vault and fake KMS clients),
// URIs are compared exactly as written: give those keys in the one form the
// KMS documents (a key ARN, a resource name), never an alias.
type KeyIdentifier interface {
	// CanonicalKeyURI returns the canonical URI of the key keyURI names:
	// one spelling for all URIs of that key that reach it the same way. The
	// Manager stores and uses it in place of keyURI, so the client must
	// support it and serve the same key with it. It fails for a URI the
	// client does not serve.
	CanonicalKeyURI(keyURI string) (string, error)

	// KeyIdentity returns the identity of the key keyURI names: equal for
	// every URI of the key, however spelled and whatever the credentials it
	// reaches the key with, and different for different keys. It is either
	// CanonicalKeyURI(keyURI) itself or a prefix of it (without the part
	// that says how to reach the key, such as a PKCS#11 pin-source) that no
	// canonical URI of another key starts with: the Manager finds the
	// keysets of a key in the [Store] by that prefix.
	KeyIdentity(keyURI string) (string, error)
}

// kekRef is a master key URI resolved against the configured KMS clients.
type kekRef struct {
	kind     KEKKind
	uri      URI // canonical URI: stored in keysets and used
	identity URI // equal for every URI of the key: uri or a prefix of it
}

// filter returns the ListOptions that select the keysets wrapped by the key.
func (r kekRef) filter() ListOptions {
	if r.identity == r.uri {
		return ListOptions{KEKURI: r.uri}
	}
	return ListOptions{KEKURIPrefix: r.identity}
}

// resolve canonicalises uri, a master key of kind k, with the KMS client
// that serves it. Its errors wrap ErrUnsupportedKEK (no client) or
// ErrInvalidArgument (the client refuses the URI, or breaks the
// KeyIdentifier contract).
func (m *Manager) resolve(k KEKKind, uri URI) (kekRef, error) {
	ref := kekRef{kind: k, uri: uri, identity: uri}
	// The canonical URI is canonicalised again, by the client that serves
	// it (a client's prefix matches the URI text, so it may be another one),
	// until it no longer changes: the URI stored is one its client keeps.
	for range 3 {
		c := m.client(k, ref.uri)
		if c == nil {
			return kekRef{}, fmt.Errorf("%w: %q (configure a KMS client for its scheme in %s)", ErrUnsupportedKEK, URI(ref.uri), configField(k))
		}
		ki, ok := c.(KeyIdentifier)
		if !ok {
			ref.identity = ref.uri
			return ref, nil
		}
		var canon, id string
		err := protect(func() error {
			var err error
			if canon, err = ki.CanonicalKeyURI(string(ref.uri)); err != nil {
				return err
			}
			id, err = ki.KeyIdentity(string(ref.uri))
			return err
		})
		if err != nil {
			return kekRef{}, fmt.Errorf("%w: master key %s: %w", ErrInvalidArgument, URI(ref.uri), err)
		}
		if canon == "" || id == "" || !strings.HasPrefix(canon, id) {
			return kekRef{}, fmt.Errorf("%w: master key %s: the KMS client %T gives a key identity that is not a prefix of its canonical URI", ErrInvalidArgument, URI(ref.uri), c)
		}
		if URI(canon) == ref.uri {
			ref.identity = URI(id)
			return ref, nil
		}
		ref.uri = URI(canon)
	}
	return kekRef{}, fmt.Errorf("%w: master key %s: the KMS clients do not agree on its canonical URI", ErrInvalidArgument, URI(uri))
}

// resolveArg is resolve for a master key URI given as an argument, naming
// field in the error.
func (m *Manager) resolveArg(op, field string, k KEKKind, uri URI) (kekRef, error) {
	if uri == "" {
		return kekRef{}, fmt.Errorf("keys: %s: %w: %s is empty", op, ErrInvalidArgument, field)
	}
	ref, err := m.resolve(k, uri)
	if err != nil {
		return kekRef{}, fmt.Errorf("keys: %s: %s: %w", op, field, err)
	}
	return ref, nil
}

// isPlatformOrRetired reports whether r is the platform master key or one
// of Config.RetiredKEKs, compared by identity.
func (m *Manager) isPlatformOrRetired(r kekRef) bool {
	if m.platform.identity != "" && r.identity == m.platform.identity {
		return true
	}
	for _, o := range m.retired {
		if r.identity == o.identity {
			return true
		}
	}
	return false
}

// checkCustomerURI refuses, with an error wrapping ErrInvalidArgument, a
// customer master key URI that the platform must not serve for a caller: a
// local key file (any path on this machine), or a PKCS#11 URI with a query
// (its module-path or module-name would load a library of the caller's
// choosing into this process; its pin-source would read a file of its
// choosing).
func checkCustomerURI(field string, uri URI) error {
	lower := strings.ToLower(string(uri))
	switch {
	case strings.HasPrefix(lower, "local:"):
		return fmt.Errorf("%w: %s %s is a local key file: a customer-managed key must be held in the customer's KMS (aws-kms://, gcp-kms://, hcvault://...)",
			ErrInvalidArgument, field, URI(uri))
	case strings.HasPrefix(lower, "pkcs11:") && strings.ContainsAny(string(uri), "?%"):
		return fmt.Errorf("%w: %s %s is a PKCS#11 URI with a query or an escape: its module-path, module-name and pin-source are the platform's configuration, never a customer's",
			ErrInvalidArgument, field, URI(uri))
	}
	return nil
}

// kek returns the master key named uri, of kind k, as an AEAD whose calls
// are counted in Stats.KEKCalls, cannot panic, and give up when their
// context ends.
func (m *Manager) kek(k KEKKind, uri URI) (*countingAEAD, error) {
	if !k.Valid() {
		return nil, fmt.Errorf("%w: master key %s: the keyset records an unknown kind of master key %q", ErrUnwrap, URI(uri), string(k))
	}
	if k == KEKCustomer {
		if err := checkCustomerURI("customer master key", uri); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnwrap, err)
		}
	}
	c := m.client(k, uri)
	if c == nil {
		return nil, fmt.Errorf("%w: %q (configure a KMS client for its scheme in %s)", ErrUnsupportedKEK, URI(uri), configField(k))
	}
	var a tink.AEAD
	err := protect(func() error {
		var err error
		a, err = c.GetAEAD(string(uri))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: master key %s: %w", ErrUnwrap, URI(uri), err)
	}
	if a == nil {
		return nil, fmt.Errorf("%w: master key %s: the KMS client returned no AEAD", ErrUnwrap, URI(uri))
	}
	return &countingAEAD{a: a, calls: &m.kekCalls}, nil
}

// kekErr returns the error of the master key's own last call, if any, so
// that callers can match its cause (Tink's keyset functions flatten it into
// text).
func kekErr(kek *countingAEAD, err error) error {
	if kek.err != nil {
		return kek.err
	}
	return err
}

// countingAEAD counts the master-key operations (one per wrap or unwrap),
// turns a panicking client (some PKCS#11 stacks panic on device errors)
// into an error, and bounds each call by its context: an AEAD that takes a
// context (tink.AEADWithContext, as pkcs11kms's does) gets it, so the KMS
// call itself can give up; any AEAD runs on its own goroutine, abandoned
// (and left to finish in the background) when the context ends first, so
// that a hung KMS or HSM cannot hold the caller.
//
// A countingAEAD is made per wrap or unwrap and is not shared, so it can
// keep the error of its last call.
type countingAEAD struct {
	a     tink.AEAD
	calls *atomic.Uint64
	err   error
}

var _ tink.AEADWithContext = (*countingAEAD)(nil)

// Encrypt implements tink.AEAD, without a bound.
func (c *countingAEAD) Encrypt(pt, ad []byte) ([]byte, error) {
	return c.EncryptWithContext(context.Background(), pt, ad)
}

// Decrypt implements tink.AEAD, without a bound.
func (c *countingAEAD) Decrypt(ct, ad []byte) ([]byte, error) {
	return c.DecryptWithContext(context.Background(), ct, ad)
}

// EncryptWithContext implements tink.AEADWithContext.
func (c *countingAEAD) EncryptWithContext(ctx context.Context, pt, ad []byte) ([]byte, error) {
	return c.call(ctx, func(ctx context.Context) ([]byte, error) {
		if a, ok := c.a.(tink.AEADWithContext); ok {
			return a.EncryptWithContext(ctx, pt, ad)
		}
		return c.a.Encrypt(pt, ad)
	})
}

// DecryptWithContext implements tink.AEADWithContext.
func (c *countingAEAD) DecryptWithContext(ctx context.Context, ct, ad []byte) ([]byte, error) {
	return c.call(ctx, func(ctx context.Context) ([]byte, error) {
		if a, ok := c.a.(tink.AEADWithContext); ok {
			return a.DecryptWithContext(ctx, ct, ad)
		}
		return c.a.Decrypt(ct, ad)
	})
}

// call counts and runs one master-key operation, giving up when ctx ends.
func (c *countingAEAD) call(ctx context.Context, f func(context.Context) ([]byte, error)) ([]byte, error) {
	c.calls.Add(1)
	type result struct {
		b   []byte
		err error
	}
	run := func() (r result) {
		r.err = protect(func() error {
			var err error
			r.b, err = f(ctx)
			return err
		})
		return r
	}
	var r result
	if err := ctx.Err(); err != nil {
		r.err = fmt.Errorf("the master key was not called: %w", context.Cause(ctx))
	} else if ctx.Done() == nil {
		r = run()
	} else {
		ch := make(chan result, 1)
		go func() { ch <- run() }()
		select {
		case r = <-ch:
		case <-ctx.Done():
			r.err = fmt.Errorf("the master key did not answer in time: %w", context.Cause(ctx))
		}
	}
	c.err = r.err
	return r.b, r.err
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

// wrap encrypts h with the master key at uri, of kind k, binding tenant
// and purpose. The master-key call is bounded by ctx and by
// Config.LoadTimeout.
func (m *Manager) wrap(ctx context.Context, h *keyset.Handle, id tenant.ID, p Purpose, k KEKKind, uri URI) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, m.loadTimeout)
	defer cancel()
	kek, err := m.kek(k, uri)
	if err != nil {
		return nil, fmt.Errorf("wrap %s keyset: %w", p, err)
	}
	var buf bytes.Buffer
	if err := h.WriteWithContext(ctx, keyset.NewBinaryWriter(&buf), kek, keysetAD(id, p)); err != nil {
		return nil, fmt.Errorf("wrap %s keyset with %s: %w: %w", p, kekName(k, uri), ErrUnwrap, kekErr(kek, err))
	}
	return buf.Bytes(), nil
}

// unwrap decrypts w with the master key it names. The master-key call is
// bounded by ctx and by Config.LoadTimeout.
func (m *Manager) unwrap(ctx context.Context, w WrappedKeyset) (*keyset.Handle, error) {
	ctx, cancel := context.WithTimeout(ctx, m.loadTimeout)
	defer cancel()
	kek, err := m.kek(w.KEKKind, w.KEKURI)
	if err != nil {
		return nil, fmt.Errorf("unwrap %s keyset: %w", w.Purpose, err)
	}
	h, err := keyset.ReadWithContext(ctx, keyset.NewBinaryReader(bytes.NewReader(w.Wrapped)), kek, keysetAD(w.Tenant, w.Purpose))
	if err != nil {
		return nil, fmt.Errorf("unwrap %s keyset with %s: %w: %w", w.Purpose, kekName(w.KEKKind, w.KEKURI), ErrUnwrap, kekErr(kek, err))
	}
	want := w.Purpose.template().GetTypeUrl()
	for _, k := range h.KeysetInfo().GetKeyInfo() {
		if k.GetTypeUrl() != want {
			return nil, fmt.Errorf("unwrap %s keyset: %w: it holds a key of type %s, want %s", w.Purpose, ErrUnwrap, k.GetTypeUrl(), want)
		}
	}
	return h, nil
}

// kekName names the master key uri of kind k in messages: a customer's key
// says so, since only the customer can make it answer again.
func kekName(k KEKKind, uri URI) string {
	if k == KEKCustomer {
		return "customer master key " + uri.String() + " (held in the customer's KMS: the customer may have disabled it or revoked the grant)"
	}
	return "master key " + uri.String()
}
