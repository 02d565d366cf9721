package pkcs11kms

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"time"

	"github.com/ThalesGroup/crypto11"
)

// maxLabelLen is the longest label, in bytes, that KeyMaker.KeyURI accepts.
const maxLabelLen = 64

// KeyMaker creates and destroys the master keys the platform keeps in one
// token, one AES-256 key per label: a key per tenant, labelled by the
// caller ("tenancy-tenant-acme"), created when the tenant is provisioned
// and destroyed when it is crypto-shredded. It serves only the URIs
// [KeyMaker.KeyURI] gives, so it cannot create or destroy any other object
// of the token. It holds no PIN and no key material and is safe for
// concurrent use. Make one with [NewKeyMaker].
type KeyMaker struct {
	c    *Client
	base KeyURI // token, module path (links resolved), pin-source; Object empty
}

// NewKeyMaker returns a KeyMaker for the keys of the token that baseURI
// names, through c. baseURI is a key URI without the object attribute (the
// maker adds one per key), for example
//
//	pkcs11:token=gov?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/tenancy/hsm-pin
//
// Its module path is resolved here, once, as [Client.CanonicalKeyURI]
// resolves it. NewKeyMaker opens nothing.
//
// It fails with [ErrInvalidURI] (a [*URIError] naming the attribute) for a
// base URI that does not follow the grammar or has an object attribute,
// like CanonicalKeyURI for a module that does not resolve ([ErrHSM]) or is
// not allowed ([ErrModuleNotAllowed]), with [ErrUnsupportedURI] when c's
// prefix does not accept every key of the token (the prefix may end at
// "token=...;" or "object=", not later), and with [ErrClosed] for a closed
// client.
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

// KeyURI returns the URI of the master key labelled label: the base URI
// with object=label, in canonical form (the form [Client.CanonicalKeyURI]
// gives while the module path resolves as it did at [NewKeyMaker]). It
// creates nothing and opens nothing.
//
// A label is 1 to 64 bytes of lower-case ASCII letters, digits, '_' and
// '-', starting with a letter or a digit ([a-z0-9][a-z0-9_-]*). Another
// label fails with a [*URIError] for the object attribute, matching
// [ErrInvalidURI], that names the rule it breaks.
func (m *KeyMaker) KeyURI(label string) (string, error) {
	if err := checkLabel(label); err != nil {
		return "", err
	}
	return m.uri(label), nil
}

func (m *KeyMaker) uri(label string) string {
	k := m.base
	k.Object = label
	return k.String()
}

// checkLabel reports which rule of KeyURI label breaks, if any.
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

// check fails unless keyURI is a URI KeyURI gives, spelled exactly so. The
// error says what differs.
func (m *KeyMaker) check(keyURI string) error {
	k, err := ParseKeyURI(keyURI)
	if err != nil {
		return err
	}
	if checkLabel(k.Object) == nil && m.uri(k.Object) == keyURI {
		return nil
	}
	var why string
	switch {
	case k.Token != m.base.Token:
		why = "token " + quote(k.Token) + " is not the KeyMaker's, " + quote(m.base.Token)
	case k.ModulePath != m.base.ModulePath:
		why = "module-path " + k.ModulePath + " is not the KeyMaker's, " + m.base.ModulePath + " (symbolic links resolved)"
	case k.PINSource != m.base.PINSource:
		why = "pin-source " + k.PINSource + " is not the KeyMaker's, " + m.base.PINSource
	case checkLabel(k.Object) != nil:
		why = "its object is not a label KeyURI accepts: " + checkLabel(k.Object).(*URIError).Reason
	default:
		why = "it is not spelled in canonical form, as KeyURI gives it"
	}
	return fmt.Errorf("%w: not a key of this KeyMaker, which serves only the URIs its KeyURI gives: %s", ErrUnsupportedURI, why)
}

// CreateKey creates the key keyURI names, a URI [KeyMaker.KeyURI] gave,
// unless it exists already, so that CreateKey is idempotent: a
// provisioning resumed after a crash finds the key it made. The key is made
// as [Client.GenerateKey] makes it: AES-256, a token object, sensitive,
// never extractable, private, allowed to encrypt and decrypt only. A key
// already there is adopted only if it is exactly one AES key with those
// attributes, one that has always been sensitive and never extractable;
// anything else with the label (an extractable key, a key of another size
// or type, several keys) fails with [ErrKeyExists], and CreateKey leaves it
// alone.
//
// Within a process, CreateKey calls on one token are serialised. Across
// processes, PKCS#11 has no "create unless it exists": two processes can
// both find no key and both make one. CreateKey settles that race so:
//
//   - After making its key (whose CKA_ID holds its creation time and a
//     random part) it looks again. If its key is the only one with the
//     label, it keeps it and returns. Otherwise it destroys its own key,
//     never the other (which may be in use already), and starts over after
//     a random pause: it adopts the other key, or makes one again if the
//     other's maker gave way too.
//   - A CreateKey that finds a key another process made less than
//     2 seconds ago waits until the key is that old (or has been the only
//     one for 2 seconds) before adopting it, so that the key's maker has
//     long decided to keep it. While more than one key has the label and
//     one of them is that young, it waits for the race to settle.
//   - [Client.GetAEAD] that finds two keys with the label, one of them
//     that young, looks again for up to 2 seconds.
//
// A CreateKey that returns nil has seen exactly one key with the label,
// and it stays the only one, unless a process stalls for seconds between
// making its key and looking again, or the clocks of the processes
// sharing the token differ by more than a second. A label that keeps
// several keys fails with [ErrKeyExists]; CreateKey chooses none.
//
// It fails with [ErrUnsupportedURI] for a URI KeyURI did not give (another
// token, module, pin-source or spelling, or an object that is not a label),
// and otherwise as GenerateKey does. PKCS#11 calls cannot be interrupted:
// when ctx ends first, CreateKey returns ctx's error and the call it was
// waiting for completes in the background (it may still create the key;
// the next CreateKey adopts it).
func (m *KeyMaker) CreateKey(ctx context.Context, keyURI string) error {
	if err := m.check(keyURI); err != nil {
		return err
	}
	k, conn, err := m.c.open(keyURI)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(3 * settleTime)
	firstSeen := map[string]time.Time{} // when this call first saw each key alone
	for attempt := 1; ; attempt++ {
		r, err := call(ctx, func() (createResult, error) { return createOnce(conn, k, firstSeen) })
		if err != nil || r.done {
			return m.c.opError(conn, err, "creating key", k)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s: %d keys have that label, one made moments ago by another process, and they did not settle to one", ErrKeyExists, k, r.keys)
		}
		if err := createBackoff(ctx, attempt); err != nil {
			return err
		}
	}
}

// settleTime is how old a key another process made must be, or how long
// it must have been the only one with its label, before CreateKey adopts
// it. Its maker decides whether to keep it within milliseconds.
var settleTime = 2 * time.Second

// createResult is what one look of CreateKey found.
type createResult struct {
	done bool // exactly one key has the label, and it may be adopted
	keys int  // keys with the label at the last look
}

// createOnce makes the key labelled k.Object if there is none, or adopts
// the one there is. When the key is another process's and young, or there
// are several keys (another process is creating the key too), it reports
// not done, and the caller looks again later. firstSeen records, by
// CKA_ID, when a key was first seen alone by this CreateKey call.
func createOnce(conn *tokenConn, k *KeyURI, firstSeen map[string]time.Time) (createResult, error) {
	conn.genMu.Lock()
	defer conn.genMu.Unlock()
	keys, err := findNamed(conn, k)
	if err != nil {
		return createResult{}, fmt.Errorf("%w: looking up key %s: %w", ErrHSM, k, err)
	}
	if len(keys) == 0 {
		id := newKeyID(time.Now())
		own, err := generate(conn, k, id)
		if err != nil {
			return createResult{}, err
		}
		if testHookGenerated != nil {
			testHookGenerated(conn, k)
		}
		if keys, err = findNamed(conn, k); err != nil {
			// The key was made; the next CreateKey adopts it.
			return createResult{}, fmt.Errorf("%w: looking up key %s after creating it: %w", ErrHSM, k, err)
		}
		if len(keys) == 1 {
			conn.made[string(id)] = true
			return createResult{done: true, keys: 1}, nil
		}
		// Another process made one too: give way.
		if err := own.Delete(); err != nil {
			return createResult{}, fmt.Errorf("%w: destroying key %s, made at the same time as another: %w", ErrHSM, k, err)
		}
		return createResult{keys: len(keys)}, nil
	}
	now := time.Now()
	young := false // a key made moments ago by another process
	var id string
	for _, key := range keys {
		err := checkKeyAttributes(conn.ctx, key)
		var b []byte
		if err == nil {
			b, err = keyID(conn, key)
		}
		var ae attrError
		switch {
		case errors.As(err, &ae):
			return createResult{}, fmt.Errorf("%w: %s: a key with that label is not one CreateKey makes (%s); CreateKey does not adopt it", ErrKeyExists, k, ae)
		case keyGone(ckr(err)):
			// Destroyed since the search: its maker gave way.
			return createResult{keys: len(keys)}, nil
		case err != nil:
			return createResult{}, fmt.Errorf("%w: reading the attributes of key %s: %w", ErrHSM, k, err)
		}
		id = string(b)
		if !conn.made[id] && isYoung(b, now) {
			young = true
		}
	}
	switch {
	case len(keys) > 1 && young:
		return createResult{keys: len(keys)}, nil // a race in progress
	case len(keys) > 1:
		return createResult{}, fmt.Errorf("%w: %s: %d keys have that label; CreateKey does not choose between them", ErrKeyExists, k, len(keys))
	case young:
		first, ok := firstSeen[id]
		if !ok {
			firstSeen[id] = now
			return createResult{keys: 1}, nil
		}
		if now.Sub(first) < settleTime {
			return createResult{keys: 1}, nil
		}
	}
	return createResult{done: true, keys: 1}, nil
}

// keyIDPrefix starts the CKA_ID of the keys CreateKey makes, before their
// creation time (8 bytes, big-endian Unix nanoseconds) and 8 random bytes.
const keyIDPrefix = "pkcs11kms:"

// newKeyID returns a CKA_ID for a key CreateKey makes at now: a random
// part tells it from a key another process makes at the same moment.
func newKeyID(now time.Time) []byte {
	random := make([]byte, 8)
	_, _ = rand.Read(random)
	id := binary.BigEndian.AppendUint64([]byte(keyIDPrefix), uint64(now.UnixNano()))
	return append(id, random...)
}

// isYoung reports whether id is the CKA_ID of a key CreateKey made less
// than settleTime before now (or, by its maker's clock, after now).
func isYoung(id []byte, now time.Time) bool {
	rest, ok := bytes.CutPrefix(id, []byte(keyIDPrefix))
	if !ok || len(rest) != 16 {
		return false // made by GenerateKey, or by hand
	}
	made := time.Unix(0, int64(binary.BigEndian.Uint64(rest)))
	return now.Sub(made) < settleTime
}

// keyID returns the CKA_ID of key.
func keyID(conn *tokenConn, key *crypto11.SecretKey) ([]byte, error) {
	a, err := conn.ctx.GetAttribute(key, crypto11.CkaId)
	if err != nil {
		return nil, err
	}
	if a == nil {
		return nil, nil
	}
	return a.Value, nil
}

// testHookGenerated, if set, runs in createOnce after its key is made and
// before it looks again: tests make "another process's" key there.
var testHookGenerated func(conn *tokenConn, k *KeyURI)

// createBackoff waits before CreateKey's next look: a random pause, longer
// with each attempt, so that two processes that gave way to each other do
// not collide again. Tests replace it.
var createBackoff = func(ctx context.Context, attempt int) error {
	pause := 10 * time.Millisecond << min(attempt-1, 4) // 10 ms ... 160 ms
	pause = pause/2 + mrand.N(pause/2+1)
	t := time.NewTimer(pause)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// DestroyKey destroys the key keyURI names, a URI [KeyMaker.KeyURI] gave,
// with [Client.DestroyKey]: every AES key with that label in the token,
// and no other object. A key that does not exist is not an error. It fails
// with [ErrUnsupportedURI] for a URI KeyURI did not give, and otherwise as
// Client.DestroyKey does.
func (m *KeyMaker) DestroyKey(ctx context.Context, keyURI string) error {
	if err := m.check(keyURI); err != nil {
		return err
	}
	return m.c.DestroyKey(ctx, keyURI)
}

// String describes the maker: its token and module. It holds no secret.
func (m *KeyMaker) String() string {
	return "pkcs11kms.KeyMaker{token=" + quote(m.base.Token) + " module-path=" + m.base.ModulePath + "}"
}
