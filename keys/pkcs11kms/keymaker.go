package pkcs11kms

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
)

// maxLabelLen is the longest label, in bytes, that a KeyMaker accepts.
const maxLabelLen = 64

// keyIDLen is the length of the CKA_ID of every key a KeyMaker makes:
// 16 random bytes, so that no two keys share one.
const keyIDLen = 16

// KeyMaker creates and destroys the master keys the platform keeps in one
// token: AES-256 keys labelled by the caller, one label per tenant
// ("tenancy-tenant-acme"), created when the tenant is provisioned and
// destroyed when it is crypto-shredded. Every key it makes has a random
// CKA_ID of its own and is named by a URI with that id
// ([KeyMaker.CreateKey]), so each of its URIs names one key and no other,
// however many keys share the label. It works only in its own token and
// holds no PIN and no key material. It is safe for concurrent use. Make
// one with [NewKeyMaker].
type KeyMaker struct {
	c    *Client
	base KeyURI // token, module path (links resolved), pin-source; no object, no id
}

// NewKeyMaker returns a KeyMaker for the keys of the token that baseURI
// names, through c. baseURI is a key URI without the object and id
// attributes (the maker adds both to the URI of each key it makes), for
// example
//
//	pkcs11:token=gov?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/tenancy/hsm-pin
//
// Its module path is resolved here, once, as [Client.CanonicalKeyURI]
// resolves it. NewKeyMaker opens nothing.
//
// It fails with [ErrInvalidURI] (a [*URIError] naming the attribute) for a
// base URI that does not follow the grammar or has an object or id
// attribute, like CanonicalKeyURI for a module that does not resolve
// ([ErrHSM]) or is not allowed ([ErrModuleNotAllowed]), with
// [ErrUnsupportedURI] when c's prefix does not accept every key of the
// token (the prefix may end at "token=...;" or "object=", not later), and
// with [ErrClosed] for a closed client.
func NewKeyMaker(c *Client, baseURI string) (*KeyMaker, error) {
	if c == nil {
		return nil, errors.New("pkcs11kms: NewKeyMaker: nil *Client")
	}
	if c.closed.Load() {
		return nil, ErrClosed
	}
	k, err := parseURI(baseURI, true)
	if err != nil {
		return nil, err
	}
	if err := c.resolve(k); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(k.objectPrefix(), c.prefix) {
		return nil, fmt.Errorf("%w: base URI: the client's prefix %s does not accept every key of token %s: a KeyMaker chooses the object of its keys, so the prefix may end at %s, not later",
			ErrUnsupportedURI, quote(c.prefix), quote(k.Token), quote(k.objectPrefix()))
	}
	return &KeyMaker{c: c, base: *k}, nil
}

// objectPrefix returns the canonical URI of k up to its object value.
func (k *KeyURI) objectPrefix() string {
	return Scheme + "token=" + escape(k.Token, false) + ";object="
}

// checkLabel reports which rule of a label label breaks, if any: a label
// is 1 to 64 bytes of lower-case ASCII letters, digits, '_' and '-',
// starting with a letter or a digit ([a-z0-9][a-z0-9_-]*).
func checkLabel(label string) error {
	bad := func(reason string) error { return &URIError{Attr: "object", Reason: reason} }
	if label == "" {
		return bad("label must not be empty")
	}
	if len(label) > maxLabelLen {
		return bad(fmt.Sprintf("label %s is %d bytes, longer than %d", quote(label), len(label), maxLabelLen))
	}
	if b := label[0]; !lowerOrDigit(b) {
		return bad(fmt.Sprintf("label %s must start with a lower-case letter or a digit ([a-z0-9]), not %s", quote(label), quote(string(rune(b)))))
	}
	for i := 1; i < len(label); i++ {
		if b := label[i]; !lowerOrDigit(b) && b != '_' && b != '-' {
			return bad(fmt.Sprintf("label %s has %s at byte %d: only lower-case letters, digits, '_' and '-' are allowed ([a-z0-9_-])", quote(label), quote(string(rune(b))), i))
		}
	}
	return nil
}

func lowerOrDigit(b byte) bool { return 'a' <= b && b <= 'z' || '0' <= b && b <= '9' }

// key returns the KeyURI of the maker's key labelled label with CKA_ID id
// (nil: every key with the label).
func (m *KeyMaker) key(label string, id []byte) *KeyURI {
	k := m.base
	k.Object, k.ID = label, id
	return &k
}

// CreateKey creates a new master key labelled label and returns the URI
// that names it and no other: the maker's base URI with object=label and
// id=the key's CKA_ID, in canonical form (the form [Client.CanonicalKeyURI]
// gives while the module path resolves as it did at [NewKeyMaker]). The
// CKA_ID is 16 bytes from crypto/rand.
//
// Every call makes another key, even for a label that has keys already:
// CreateKey never looks for, adopts or chooses between keys, and calls at
// once, in this process or others, make distinct keys. A Provision resumed
// after a crash, or two at once, leaves a key nobody uses, which
// [KeyMaker.DestroyKeys] of the label destroys with the others.
//
// The key is made as [Client.GenerateKey] makes its keys: AES-256, a token
// object, sensitive, never extractable, private, allowed to encrypt and
// decrypt only; CreateKey checks that the token applied those attributes,
// and destroys the key and fails with [ErrHSM] if it did not.
//
// A label is 1 to 64 bytes of lower-case ASCII letters, digits, '_' and
// '-', starting with a letter or a digit ([a-z0-9][a-z0-9_-]*). Another
// label fails with a [*URIError] for the object attribute, matching
// [ErrInvalidURI], that names the rule it breaks, before the token is
// opened. CreateKey fails like [Client.GetAEAD] when the token cannot be
// opened. PKCS#11 calls cannot be interrupted: when ctx ends first,
// CreateKey returns ctx's error and the call it was waiting for completes
// in the background (it may still make the key, which DestroyKeys of the
// label destroys).
func (m *KeyMaker) CreateKey(ctx context.Context, label string) (string, error) {
	if err := checkLabel(label); err != nil {
		return "", err
	}
	id := make([]byte, keyIDLen)
	_, _ = rand.Read(id) // never fails (crypto/rand, Go 1.24+)
	k := m.key(label, id)
	uri := k.String()
	_, conn, err := m.c.open(uri)
	if err != nil {
		return "", err
	}
	_, err = call(ctx, func() (struct{}, error) {
		conn.genMu.Lock()
		defer conn.genMu.Unlock()
		_, err := generate(conn, k, id)
		return struct{}{}, err
	})
	if err := m.c.opError(conn, err, "creating key", k); err != nil {
		return "", err
	}
	return uri, nil
}

// DestroyKeys destroys every key the maker made with label in its token:
// every AES secret key labelled label there, whatever its CKA_ID, with
// [Client.DestroyKey] of the label's URI without an id. It then checks that
// none is left, and fails with [ErrHSM] if one is. Keys with another label,
// objects with that label that are not AES secret keys (a data object, a
// DES3 key: the maker makes none), and other tokens are left alone. An
// AES key labelled label that the maker did not make (by hand, or
// [Client.GenerateKey]) is destroyed too: the labels of the maker's token
// are the maker's. No key is not an error, so DestroyKeys may be repeated.
//
// Within a process, CreateKey and DestroyKeys on one token are serialised.
// A CreateKey of the label in another process while DestroyKeys runs may
// leave its key, which the check then finds ([ErrHSM]): run DestroyKeys
// again once that CreateKey has returned.
//
// It fails like CreateKey for a label that breaks the rule, and like
// Client.DestroyKey otherwise (a token that cannot be opened is an error:
// the keys may be in it).
func (m *KeyMaker) DestroyKeys(ctx context.Context, label string) error {
	if err := checkLabel(label); err != nil {
		return err
	}
	return m.c.DestroyKey(ctx, m.key(label, nil).String())
}

// Owns reports whether keyURI names a key this maker makes with label: a
// URI in the form CreateKey gives, of the maker's token, module (by the
// path CreateKey writes, links resolved) and pin-source, with object=label
// and an id of the length CreateKey gives (16 bytes), spelled in canonical
// form. Any other spelling, even of the same key, is not the maker's. Owns
// is a pure check on the URI: it opens nothing, and says nothing of
// whether the key exists.
func (m *KeyMaker) Owns(keyURI, label string) bool {
	if checkLabel(label) != nil {
		return false
	}
	k, err := ParseKeyURI(keyURI)
	if err != nil || len(k.ID) != keyIDLen {
		return false
	}
	return m.key(label, k.ID).String() == keyURI
}

// String describes the maker: its token and module. It holds no secret.
func (m *KeyMaker) String() string {
	return "pkcs11kms.KeyMaker{token=" + quote(m.base.Token) + " module-path=" + m.base.ModulePath + "}"
}
