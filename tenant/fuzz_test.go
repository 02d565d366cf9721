package tenant_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/rtmx-ai/tenancy/tenant"
)

// idGrammar is the tenant ID grammar written independently of the parser.
var idGrammar = regexp.MustCompile(`^[a-z](?:_?[a-z0-9])*$`)

// dnsLabel is RFC 1123's label, written independently of DNSLabel.
var dnsLabel = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`)

// reserved reports whether s is a reserved tenant ID, by ParseID's
// documented list, written independently of it.
func reserved(s string) bool {
	for _, r := range strings.Fields(`public information_schema postgres template0 template1 tenancy tenant tenants
		platform admin root system null nil none undefined nan true false default`) {
		if s == r {
			return true
		}
	}
	return strings.HasPrefix(s, "pg_") || strings.HasPrefix(s, "tenant_") || strings.HasPrefix(s, "tenancy_")
}

// FuzzParseID checks that ParseID accepts exactly the strings of the
// grammar, never changes them, and rejects everything else with an error
// that is safe to log.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{
		"abc123", "a", "a_b_c", "acme_defense_corp",
		strings.Repeat("a", 40), strings.Repeat("a", 41),
		"", "A", "Abc", "aBc", "1abc", "_abc", "abc_", "a__b", "_",
		"a-b", "a.b", "a/b", `a\b`, "../x", "a/../b",
		"a'; drop table x;--", `a"b`, "a'b", "a;b", "a b", "a\tb",
		"a\x00b", "a\nb", "a\rb", "a\x1b[31m", "a\x7f",
		"\u0430bc", "b\u0430c", "\uff41\uff42", "\u0131d", "\u212a", "a\u212a",
		"a\xff", "\xc3", "a\xe2\x84", "a%2e", "a%2fb",
		"public", "pg_catalog", "tenant_x", "tenancy", "tenancy_g_x", "null", "nil", "none", "undefined", "nullx", "pgx",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := tenant.ParseID(s)
		if err == nil {
			if !idGrammar.MatchString(s) {
				t.Fatalf("ParseID accepted %q, which is outside the grammar", s)
			}
			if len(s) > tenant.MaxIDLen {
				t.Fatalf("ParseID accepted %q of %d bytes (max %d)", s, len(s), tenant.MaxIDLen)
			}
			if id.String() != s {
				t.Fatalf("ParseID(%q).String() = %q", s, id.String())
			}
			if id.IsZero() {
				t.Fatalf("ParseID(%q) returned the zero ID without an error", s)
			}
			if reserved(s) {
				t.Fatalf("ParseID accepted the reserved %q", s)
			}
			back, err := tenant.ParseDNSLabel(id.DNSLabel())
			if err != nil || back != id {
				t.Fatalf("ParseDNSLabel(%q) = %q, %v: DNSLabel is not one-to-one", id.DNSLabel(), back, err)
			}
			if !dnsLabel.MatchString(id.DNSLabel()) {
				t.Fatalf("DNSLabel(%q) = %q is not an RFC 1123 label", s, id.DNSLabel())
			}
			if n := len("tenant_" + s); n > 63 || id.SchemaName() != "tenant_"+s {
				t.Fatalf("SchemaName(%q) = %q (%d bytes): not a PostgreSQL identifier", s, id.SchemaName(), n)
			}
			return
		}
		if idGrammar.MatchString(s) && len(s) <= tenant.MaxIDLen && !reserved(s) {
			t.Fatalf("ParseID rejected %q, which is in the grammar: %v", s, err)
		}
		if !errors.Is(err, tenant.ErrInvalidID) {
			t.Fatalf("ParseID(%q) error %v does not wrap ErrInvalidID", s, err)
		}
		if !id.IsZero() {
			t.Fatalf("ParseID(%q) returned %q together with an error", s, id)
		}
		msg := err.Error()
		for i := 0; i < len(msg); i++ {
			if c := msg[i]; c < 0x20 || c == 0x7f {
				t.Fatalf("ParseID(%q) error message has control byte %#02x: %q", s, c, msg)
			}
		}
	})
}
