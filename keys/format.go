package keys

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/tink-crypto/tink-go/v2/core/registry"
)

// URI is a master key URI ("local:///path", "pkcs11:token=...",
// "aws-kms://arn:aws:kms:..."). A URI can carry a secret: the key itself in
// a Tink fake-kms:// URI, a PIN in a PKCS#11 pin-value attribute. So a URI
// prints redacted, whatever the fmt verb, in slog and in JSON: the PIN is
// replaced by REDACTED, a fake-kms:// key by a short fingerprint, and the
// rest shown as is. The types that hold master key URIs hold URIs, and so
// print safely without printers of their own. string(u) is the URI itself.
type URI string

// String returns the URI redacted.
func (u URI) String() string { return redact(string(u)) }

// Format implements fmt.Formatter: every verb prints the redacted URI
// (quoted for %q; as a Go expression for %#v).
func (u URI) Format(f fmt.State, verb rune) {
	s := u.String()
	switch {
	case verb == 'v' && f.Flag('#'):
		_, _ = io.WriteString(f, "keys.URI("+strconv.Quote(s)+")")
	case verb == 'q':
		_, _ = io.WriteString(f, strconv.Quote(s))
	default:
		_, _ = io.WriteString(f, s)
	}
}

// MarshalText implements encoding.TextMarshaler with the redacted URI, so
// that JSON encoders and slog's handlers show no secret either. Marshal
// string(u) to keep a URI.
func (u URI) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// redact returns keyURI with its secrets redacted: a PKCS#11 pin-value
// attribute, and the key that a Tink fake-kms:// URI carries inline
// (replaced by a short fingerprint).
func redact(keyURI string) string {
	const fake = "fake-kms://"
	if len(keyURI) > len(fake) && strings.EqualFold(keyURI[:len(fake)], fake) {
		sum := sha256.Sum256([]byte(keyURI))
		return keyURI[:len(fake)] + "redacted-" + hex.EncodeToString(sum[:4])
	}
	const pin = "pin-value="
	if i := indexASCIIFold(keyURI, pin); i >= 0 {
		start := i + len(pin)
		end := strings.IndexAny(keyURI[start:], ";&?#")
		rest := ""
		if end >= 0 {
			rest = keyURI[start+end:]
		}
		return keyURI[:start] + "REDACTED" + redact(rest)
	}
	return keyURI
}

// indexASCIIFold is strings.Index ignoring ASCII case, on the bytes of s
// as they are: unlike searching strings.ToLower(s), whose offsets shift
// where lowering changes a character's length, the index is one into s.
func indexASCIIFold(s, sub string) int {
	lower := func(b byte) byte {
		if 'A' <= b && b <= 'Z' {
			return b + 'a' - 'A'
		}
		return b
	}
outer:
	for i := 0; i+len(sub) <= len(s); i++ {
		for j := 0; j < len(sub); j++ {
			if lower(s[i+j]) != lower(sub[j]) {
				continue outer
			}
		}
		return i
	}
	return -1
}

// String implements fmt.Stringer. It prints no key material.
func (m *Manager) String() string {
	return fmt.Sprintf("keys.Manager{platformKEK=%s cached=%d}", m.platform.uri, m.Stats().Entries)
}

// Format implements fmt.Formatter: every verb prints String, so no verb
// reaches the keys and master-key URIs the Manager holds.
func (m *Manager) Format(f fmt.State, verb rune) { formatString(f, verb, m.String()) }

// String describes the configuration: master key URIs redacted, the
// types of the Store and KMS clients (not their contents: a KMS client may
// hold a key, as Tink's fakekms does), and the cache limits.
func (c Config) String() string {
	return fmt.Sprintf("keys.Config{store=%T kms=%s customer_kms=%s tenant_keks=%T platform_kek=%s retired_keks=%s cache_max_age=%v cache_max_uses=%d cache_max_entries=%d load_timeout=%v refresh_interval=%v}",
		c.Store, kmsTypes(c.KMS), kmsTypes(c.CustomerKMS), c.TenantKEKs, c.PlatformKEK, c.RetiredKEKs,
		c.CacheMaxAge, c.CacheMaxUses, c.CacheMaxEntries, c.LoadTimeout, c.RefreshInterval)
}

// Format implements fmt.Formatter: every verb prints String, so no verb
// reaches the KMS clients and the Store.
func (c Config) Format(f fmt.State, verb rune) { formatString(f, verb, c.String()) }

func kmsTypes(kms []registry.KMSClient) string {
	out := make([]string, len(kms))
	for i, k := range kms {
		out[i] = fmt.Sprintf("%T", k)
	}
	return "[" + strings.Join(out, " ") + "]"
}

// formatString writes s whatever the verb, quoted for %q.
func formatString(f fmt.State, verb rune, s string) {
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = io.WriteString(f, s)
}
