package pkcs11kms

import (
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// Scheme is the URI scheme of PKCS#11 key URIs (RFC 7512), including the
// colon.
const Scheme = "pkcs11:"

const (
	maxURILen      = 4096
	maxTokenLen    = 32 // CK_TOKEN_INFO.label is 32 bytes
	maxObjectLen   = 128
	maxIDLen       = 128
	maxPathLen     = 1024
	maxPINFileSize = 1024
)

// KeyURI is a parsed key URI. Make one with [ParseKeyURI]; its fields are
// percent-decoded.
type KeyURI struct {
	// Token is the label of the token holding the key.
	Token string
	// Object is the label (CKA_LABEL) of the AES key in that token.
	Object string
	// ID is the key's CKA_ID (RFC 7512's id attribute: bytes of any
	// value), or nil. With an ID the URI names the AES key with that label
	// and that ID; without one, the AES key with that label.
	ID []byte
	// ModulePath is the absolute path of the PKCS#11 module to load.
	ModulePath string
	// PINSource says where the user PIN is read from: "env:NAME" or
	// "file:/absolute/path". It is a reference, never the PIN.
	PINSource string
}

// ParseKeyURI parses a key URI strictly; see the package documentation for
// the grammar. Errors are [*URIError]s, matching [ErrInvalidURI], and do not
// quote the URI.
func ParseKeyURI(s string) (*KeyURI, error) { return parseURI(s, false) }

// parseURI parses a key URI, or with base a base URI ([NewKeyMaker]): one
// without an object or id attribute, which the returned KeyURI leaves
// empty.
func parseURI(s string, base bool) (*KeyURI, error) {
	if len(s) > maxURILen {
		return nil, &URIError{Reason: "longer than 4096 bytes"}
	}
	if !strings.HasPrefix(s, Scheme) {
		return nil, &URIError{Reason: `scheme must be "pkcs11:" (lower case)`}
	}
	rest := s[len(Scheme):]
	if strings.ContainsRune(rest, '#') {
		return nil, &URIError{Reason: "a fragment ('#') is not allowed"}
	}
	path, query, hasQuery := strings.Cut(rest, "?")

	var k KeyURI
	seen := map[string]bool{}
	if path == "" {
		if base {
			return nil, &URIError{Reason: "empty path: token is required"}
		}
		return nil, &URIError{Reason: "empty path: token and object are required"}
	}
	for _, pattr := range strings.Split(path, ";") {
		name, val, err := splitAttr(pattr, "path", isPChar)
		if err != nil {
			return nil, err
		}
		if seen[name] {
			return nil, &URIError{Attr: name, Reason: "given more than once"}
		}
		seen[name] = true
		switch name {
		case "token":
			k.Token = val
		case "object":
			if base {
				return nil, &URIError{Attr: name, Reason: "not allowed in a base URI: the KeyMaker adds the object of each key it makes"}
			}
			k.Object = val
		case "id":
			if base {
				return nil, &URIError{Attr: name, Reason: "not allowed in a base URI, which names a token, not a key"}
			}
			if val == "" {
				return nil, &URIError{Attr: name, Reason: "empty: give the key's CKA_ID, or leave the id out"}
			}
			k.ID = []byte(val)
		case "type":
			if val != "secret-key" {
				return nil, &URIError{Attr: name, Reason: `must be "secret-key" if given`}
			}
		case "manufacturer", "model", "serial", "library-manufacturer",
			"library-description", "library-version", "slot-description",
			"slot-manufacturer", "slot-id":
			return nil, &URIError{Attr: name, Reason: "not supported: name the key by token, object and id only"}
		default:
			return nil, &URIError{Attr: name, Reason: "unknown path attribute"}
		}
	}
	if hasQuery {
		if query == "" {
			return nil, &URIError{Reason: "empty query after '?'"}
		}
		for _, qattr := range strings.Split(query, "&") {
			name, val, err := splitAttr(qattr, "query", isQChar)
			if err != nil {
				return nil, err
			}
			if seen[name] {
				return nil, &URIError{Attr: name, Reason: "given more than once"}
			}
			seen[name] = true
			switch name {
			case "module-path":
				k.ModulePath = val
			case "pin-source":
				k.PINSource = val
			case "pin-value":
				return nil, &URIError{Attr: name, Reason: "refused: a PIN must not be written in a URI, which ends up in configs and logs; use pin-source=env:NAME or pin-source=file:/path"}
			case "module-name":
				return nil, &URIError{Attr: name, Reason: "not supported: give the absolute module-path"}
			default:
				return nil, &URIError{Attr: name, Reason: "unknown query attribute"}
			}
		}
	}
	if err := k.validate(base); err != nil {
		return nil, err
	}
	return &k, nil
}

// validate checks the attribute values; with base, the object is absent.
func (k *KeyURI) validate(base bool) error {
	for _, f := range []struct {
		name, val string
		max       int
	}{
		{"token", k.Token, maxTokenLen},
		{"object", k.Object, maxObjectLen},
		{"module-path", k.ModulePath, maxPathLen},
		{"pin-source", k.PINSource, maxPathLen},
	} {
		if base && f.name == "object" {
			continue
		}
		if f.val == "" {
			return &URIError{Attr: f.name, Reason: "missing (required)"}
		}
		if len(f.val) > f.max {
			return &URIError{Attr: f.name, Reason: "too long"}
		}
		if !utf8.ValidString(f.val) {
			return &URIError{Attr: f.name, Reason: "not valid UTF-8"}
		}
		for _, r := range f.val {
			if r < 0x20 || r == 0x7f {
				return &URIError{Attr: f.name, Reason: "contains a control character"}
			}
		}
	}
	if len(k.ID) > maxIDLen {
		return &URIError{Attr: "id", Reason: "too long"}
	}
	if !cleanAbs(k.ModulePath) {
		return &URIError{Attr: "module-path", Reason: "must be a clean absolute path"}
	}
	switch src, arg, _ := strings.Cut(k.PINSource, ":"); src {
	case "env":
		if !isEnvName(arg) {
			return &URIError{Attr: "pin-source", Reason: "env: must be followed by an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"}
		}
	case "file":
		if !cleanAbs(arg) {
			return &URIError{Attr: "pin-source", Reason: "file: must be followed by a clean absolute path"}
		}
	default:
		return &URIError{Attr: "pin-source", Reason: "must be env:NAME or file:/absolute/path"}
	}
	return nil
}

// String returns the URI in canonical form: token, object, id (if the URI
// has one), module-path, pin-source, in that order, percent-encoded (every
// byte of the id, and every byte of the other values but the unreserved
// characters, and '/' and ':' in the query, as %XX with upper-case hex),
// without type=secret-key. Every URI that ParseKeyURI
// accepts for the same attribute values has this one canonical form. It
// contains no PIN (a KeyURI cannot hold one).
func (k *KeyURI) String() string {
	return k.Identity() + escape(k.PINSource, true)
}

// Identity returns the part of the canonical URI ([KeyURI.String]) that
// says which key it names, as opposed to how to log in to its token: the
// canonical URI up to and including "&pin-source=". Two URIs name the same
// key exactly when their identities are equal, whatever their attribute
// order, percent-encoding, optional type=secret-key or pin-source. Since
// every value is percent-encoded, no canonical URI of another key starts
// with it.
//
// The module is compared by its path as held in k: ParseKeyURI keeps it as
// written (clean, absolute), so one module reached by two paths (a
// symbolic link) gives two identities here. [Client.KeyIdentity] and
// [Client.CanonicalKeyURI] resolve the links first, so that they give one.
func (k *KeyURI) Identity() string {
	id := ""
	if len(k.ID) > 0 {
		id = ";id=" + escapeAll(k.ID)
	}
	return Scheme + "token=" + escape(k.Token, false) + ";object=" + escape(k.Object, false) + id +
		"?module-path=" + escape(k.ModulePath, true) + "&pin-source="
}

// splitAttr splits one name=value attribute and percent-decodes its value;
// raw characters of the value must satisfy allowed.
func splitAttr(attr, part string, allowed func(byte) bool) (name, val string, err error) {
	if attr == "" {
		return "", "", &URIError{Reason: "empty " + part + " attribute (stray separator)"}
	}
	name, raw, ok := strings.Cut(attr, "=")
	if !ok {
		return "", "", &URIError{Attr: name, Reason: "has no '=' value"}
	}
	if name == "" {
		return "", "", &URIError{Reason: "attribute with an empty name in the " + part}
	}
	val, err = unescape(name, raw, allowed)
	return name, val, err
}

func unescape(name, raw string, allowed func(byte) bool) (string, error) {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '%':
			if i+2 >= len(raw) {
				return "", &URIError{Attr: name, Reason: "truncated percent-encoding"}
			}
			hi, ok1 := unhex(raw[i+1])
			lo, ok2 := unhex(raw[i+2])
			if !ok1 || !ok2 {
				return "", &URIError{Attr: name, Reason: "invalid percent-encoding"}
			}
			b.WriteByte(hi<<4 | lo)
			i += 2
		case allowed(c):
			b.WriteByte(c)
		default:
			return "", &URIError{Attr: name, Reason: "character " + quote(string(rune(c))) + " must be percent-encoded"}
		}
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// isPChar: RFC 7512 pk11-pchar, less pct-encoded.
func isPChar(c byte) bool {
	return isUnreserved(c) || strings.IndexByte(":[]@!$'()*+,=", c) >= 0
}

// isQChar: RFC 7512 pk11-qchar, less pct-encoded.
func isQChar(c byte) bool {
	return isUnreserved(c) || strings.IndexByte(":[]@!$'()*+,=/?|", c) >= 0
}

func isEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func cleanAbs(p string) bool {
	return filepath.IsAbs(p) && filepath.Clean(p) == p
}

const upperHex = "0123456789ABCDEF"

// escapeAll percent-encodes every byte of b: the one spelling of an id,
// whose bytes are binary more often than text.
func escapeAll(b []byte) string {
	out := make([]byte, 0, 3*len(b))
	for _, c := range b {
		out = append(out, '%', upperHex[c>>4], upperHex[c&15])
	}
	return string(out)
}

// escape percent-encodes everything but unreserved characters, and, in a
// query value, '/' and ':'.
func escape(s string, query bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) || query && (c == '/' || c == ':') {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&15])
	}
	return b.String()
}
