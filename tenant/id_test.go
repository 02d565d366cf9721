package tenant_test

import (
	"encoding"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"unicode"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Compile-time checks of the interfaces ID promises.
var (
	_ encoding.TextMarshaler   = tenant.ID{}
	_ encoding.TextUnmarshaler = (*tenant.ID)(nil)
	_ slog.LogValuer           = tenant.ID{}
)

// Rule fragments of the grammar, as the IDError names them.
const (
	ruleEmpty      = "must not be empty"
	ruleTooLong    = "at most 40 bytes"
	ruleStart      = "must start with a lower-case ASCII letter"
	ruleTrailing   = "must not end with an underscore"
	ruleDoubleUnd  = "two underscores in a row"
	ruleCharacters = "may contain only lower-case ASCII letters, digits and underscores"
)

func TestParseIDValid(t *testing.T) {
	for _, s := range []string{
		"abc123",
		"a",
		"z",
		"a_b_c",
		"a1",
		"a_1",
		"acme_defense_corp",
		"a" + strings.Repeat("b", tenant.MaxIDLen-1), // exactly MaxIDLen
		"a" + strings.Repeat("_1", (tenant.MaxIDLen-1)/2),
	} {
		t.Run(s, func(t *testing.T) {
			id, err := tenant.ParseID(s)
			if err != nil {
				t.Fatalf("ParseID(%q): unexpected error %v", s, err)
			}
			if got := id.String(); got != s {
				t.Errorf("String() = %q, want %q", got, s)
			}
			if id.IsZero() {
				t.Error("IsZero() = true for a parsed ID")
			}
			if got, want := id.SchemaName(), "tenant_"+s; got != want {
				t.Errorf("SchemaName() = %q, want %q", got, want)
			}
		})
	}
}

func TestParseIDMaxLen(t *testing.T) {
	if tenant.MaxIDLen != 40 {
		t.Fatalf("MaxIDLen = %d; the grammar, the docs and this test assume 40", tenant.MaxIDLen)
	}
	if _, err := tenant.ParseID(strings.Repeat("a", 40)); err != nil {
		t.Errorf("40 bytes: %v", err)
	}
	if _, err := tenant.ParseID(strings.Repeat("a", 41)); err == nil {
		t.Error("41 bytes: accepted")
	}
	// "tenant_" + the longest ID must be a valid PostgreSQL identifier.
	if n := len(tenant.MustParseID(strings.Repeat("a", 40)).SchemaName()); n > 63 {
		t.Errorf("SchemaName of the longest ID is %d bytes, PostgreSQL allows 63", n)
	}
}

func TestParseIDHostile(t *testing.T) {
	tests := []struct {
		name string
		in   string
		rule string
	}{
		{"empty", "", ruleEmpty},
		{"over-long", strings.Repeat("a", 41), ruleTooLong},
		{"very long", strings.Repeat("a", 10000), ruleTooLong},
		{"upper case first", "Abc", ruleStart},
		{"upper case inside", "aBc", ruleCharacters},
		{"all upper case", "ABC123", ruleStart},
		{"leading digit", "1abc", ruleStart},
		{"leading underscore", "_abc", ruleStart},
		{"only underscore", "_", ruleStart},
		{"trailing underscore", "abc_", ruleTrailing},
		{"double underscore", "a__b", ruleDoubleUnd},
		{"hyphen", "a-b", ruleCharacters},
		{"dot", "a.b", ruleCharacters},
		{"slash", "a/b", ruleCharacters},
		{"backslash", `a\b`, ruleCharacters},
		{"dot dot slash", "../x", ruleStart},
		{"embedded dot dot", "a/../b", ruleCharacters},
		{"sql drop", "a'; drop table x;--", ruleCharacters},
		{"double quote", `a"b`, ruleCharacters},
		{"single quote", "a'b", ruleCharacters},
		{"backquote", "a`b", ruleCharacters},
		{"semicolon", "a;b", ruleCharacters},
		{"space", "a b", ruleCharacters},
		{"leading space", " ab", ruleStart},
		{"trailing space", "ab ", ruleCharacters},
		{"tab", "a\tb", ruleCharacters},
		{"NUL", "a\x00b", ruleCharacters},
		{"trailing NUL", "ab\x00", ruleCharacters},
		{"newline", "a\nb", ruleCharacters},
		{"log injection", "a\ntime=x level=ERROR msg=forged", ruleCharacters},
		{"carriage return", "a\rb", ruleCharacters},
		{"DEL", "a\x7fb", ruleCharacters},
		{"escape sequence", "a\x1b[31mb", ruleCharacters},
		{"cyrillic a first", "\u0430bc", ruleStart},
		{"cyrillic a inside", "b\u0430c", ruleCharacters},
		{"fullwidth letters", "\uff41\uff42\uff43", ruleStart},
		{"fullwidth inside", "a\uff42c", ruleCharacters},
		{"turkish dotless i", "\u0131d", ruleStart},
		{"turkish dotless i inside", "tenant\u0131d", ruleCharacters},
		{"kelvin sign", "\u212a", ruleStart},
		{"kelvin sign inside", "a\u212a", ruleCharacters},
		{"combining accent", "e\u0301", ruleCharacters},
		{"zero width space", "a\u200bb", ruleCharacters},
		{"invalid utf8", "a\xff", ruleCharacters},
		{"invalid utf8 first", "\xc3", ruleStart},
		{"truncated utf8", "a\xe2\x84", ruleCharacters},
		{"percent encoding", "a%2e", ruleCharacters},
		{"percent encoded slash", "a%2fb", ruleCharacters},
		{"plus", "a+b", ruleCharacters},
		{"colon", "a:b", ruleCharacters},
		{"at", "a@b", ruleCharacters},
		{"star", "a*", ruleCharacters},
		{"dollar", "a$1", ruleCharacters},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := tenant.ParseID(tt.in)
			if err == nil {
				t.Fatalf("ParseID(%q) = %q, want an error", tt.in, id)
			}
			if !id.IsZero() {
				t.Errorf("ParseID(%q) returned a non-zero ID %q with its error", tt.in, id)
			}
			if !errors.Is(err, tenant.ErrInvalidID) {
				t.Errorf("ParseID(%q) error %v does not wrap ErrInvalidID", tt.in, err)
			}
			var ie *tenant.IDError
			if !errors.As(err, &ie) {
				t.Fatalf("ParseID(%q) error %T is not an *IDError", tt.in, err)
			}
			if !strings.Contains(ie.Rule, tt.rule) {
				t.Errorf("ParseID(%q) rule = %q, want it to contain %q", tt.in, ie.Rule, tt.rule)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "tenant: ") {
				t.Errorf("message %q does not start with the package name", msg)
			}
			if !strings.Contains(msg, ie.Rule) {
				t.Errorf("message %q does not contain the rule %q", msg, ie.Rule)
			}
			assertPrintableASCII(t, msg)
			assertPrintableASCII(t, ie.Input)
			if len(msg) > 300 {
				t.Errorf("message is %d bytes long; hostile input must be truncated: %q", len(msg), msg)
			}
		})
	}
}

// assertPrintableASCII fails unless s is printable ASCII only: no newline,
// carriage return, NUL, escape or other control byte and no raw non-ASCII
// byte can reach a log line through an error message.
func assertPrintableASCII(t *testing.T, s string) {
	t.Helper()
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			t.Errorf("byte %d of %q is %#02x: not printable ASCII", i, s, c)
			return
		}
	}
}

func TestParseIDDoesNotNormalise(t *testing.T) {
	// Each input becomes a valid ID once lower-cased and trimmed (the
	// Kelvin sign U+212A lower-cases to ASCII 'k'); ParseID must still
	// reject it as it is, never clean it on the caller's behalf.
	for _, s := range []string{"ABC", "Abc", " abc", "abc ", "\u212abc", "a\u212a"} {
		norm := strings.ToLower(strings.TrimSpace(s))
		if _, err := tenant.ParseID(norm); err != nil {
			t.Fatalf("test premise: normalised %q -> %q is not valid: %v", s, norm, err)
		}
		if id, err := tenant.ParseID(s); err == nil {
			t.Errorf("ParseID(%q) = %q: accepted input that is only valid after normalisation", s, id)
		}
	}
	if unicode.ToLower('\u212a') != 'k' {
		t.Fatal("test premise: ToLower(U+212A) != 'k'")
	}
}

func TestIDErrorInputEscaped(t *testing.T) {
	_, err := tenant.ParseID("a\nb\x00c\u0430")
	var ie *tenant.IDError
	if !errors.As(err, &ie) {
		t.Fatalf("error %v is not an *IDError", err)
	}
	if want := `"a\nb\x00c\u0430"`; ie.Input != want {
		t.Errorf("Input = %s, want %s", ie.Input, want)
	}

	_, err = tenant.ParseID(strings.Repeat("x", 1000))
	if !errors.As(err, &ie) {
		t.Fatalf("error %v is not an *IDError", err)
	}
	if !strings.HasSuffix(ie.Input, "...") || len(ie.Input) > 80 {
		t.Errorf("Input of a 1000-byte string is not truncated: %d bytes", len(ie.Input))
	}
}

func TestIDErrorNamesOffendingByte(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ab-c", `byte 2 is '-'`},
		{"a\nb", `byte 1 is '\n'`},
		// A non-ASCII byte is reported as a byte, not as the Latin-1
		// character it would be on its own ('Ð' for 0xd0).
		{"a\u0430", "byte 1 is 0xd0"},
		{"ab\xff", "byte 2 is 0xff"},
	}
	for _, tt := range tests {
		_, err := tenant.ParseID(tt.in)
		var ie *tenant.IDError
		if !errors.As(err, &ie) {
			t.Fatalf("ParseID(%q): error %v is not an *IDError", tt.in, err)
		}
		if !strings.Contains(ie.Rule, tt.want) {
			t.Errorf("ParseID(%q): rule %q does not contain %q", tt.in, ie.Rule, tt.want)
		}
	}
}

func TestMustParseID(t *testing.T) {
	if got := tenant.MustParseID("abc123").String(); got != "abc123" {
		t.Errorf("MustParseID(abc123) = %q", got)
	}
	for _, s := range []string{"", "Bad", "a-b", "a\n"} {
		t.Run(s, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatalf("MustParseID(%q) did not panic", s)
				}
				err, ok := r.(error)
				if !ok || !errors.Is(err, tenant.ErrInvalidID) {
					t.Errorf("MustParseID(%q) panicked with %v, want an error wrapping ErrInvalidID", s, r)
				}
			}()
			tenant.MustParseID(s)
		})
	}
}

func TestIDZero(t *testing.T) {
	var zero tenant.ID
	if !zero.IsZero() {
		t.Error("zero ID: IsZero() = false")
	}
	if zero.String() != "" {
		t.Errorf("zero ID: String() = %q", zero.String())
	}
	if zero.SchemaName() != "" {
		t.Errorf("zero ID: SchemaName() = %q, want empty", zero.SchemaName())
	}
	if b, err := zero.MarshalText(); err == nil {
		t.Errorf("zero ID: MarshalText() = %q, want an error", b)
	}
	if b, err := json.Marshal(struct{ Tenant tenant.ID }{}); err == nil {
		t.Errorf("json.Marshal of a record with the zero ID = %s, want an error", b)
	}
	if zero != (tenant.ID{}) || tenant.MustParseID("a") == zero {
		t.Error("ID equality is broken")
	}
}

func TestIDTextRoundTrip(t *testing.T) {
	id := tenant.MustParseID("acme_1")
	b, err := id.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "acme_1" {
		t.Errorf("MarshalText = %q", b)
	}
	var back tenant.ID
	if err := back.UnmarshalText(b); err != nil {
		t.Fatal(err)
	}
	if back != id {
		t.Errorf("round trip: got %q, want %q", back, id)
	}

	// Through JSON, as a field and as a map key.
	type rec struct {
		Tenant tenant.ID         `json:"tenant"`
		Seen   map[tenant.ID]int `json:"seen"`
	}
	in := rec{Tenant: id, Seen: map[tenant.ID]int{tenant.MustParseID("b2"): 2}}
	j, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"tenant":"acme_1","seen":{"b2":2}}`; string(j) != want {
		t.Errorf("json = %s, want %s", j, want)
	}
	var out rec
	if err := json.Unmarshal(j, &out); err != nil {
		t.Fatal(err)
	}
	if out.Tenant != id || out.Seen[tenant.MustParseID("b2")] != 2 {
		t.Errorf("json round trip = %+v", out)
	}
}

func TestIDUnmarshalHostile(t *testing.T) {
	for _, s := range []string{``, `A`, `a-b`, `../x`, `a\nb`, `a\u0000`, `\u0430`, `a'; drop table x;--`} {
		t.Run(s, func(t *testing.T) {
			var v struct {
				Tenant tenant.ID `json:"tenant"`
			}
			err := json.Unmarshal([]byte(`{"tenant":"`+s+`"}`), &v)
			if err == nil {
				t.Fatalf("json accepted tenant %q as %q", s, v.Tenant)
			}
			if !errors.Is(err, tenant.ErrInvalidID) {
				t.Errorf("json error %v does not wrap ErrInvalidID", err)
			}
			if !v.Tenant.IsZero() {
				t.Errorf("tenant is %q after a failed unmarshal", v.Tenant)
			}
		})
	}

	// A failed UnmarshalText leaves the ID as it was.
	id := tenant.MustParseID("keep")
	if err := id.UnmarshalText([]byte("Bad")); !errors.Is(err, tenant.ErrInvalidID) {
		t.Errorf("UnmarshalText(Bad) = %v, want ErrInvalidID", err)
	}
	if id.String() != "keep" {
		t.Errorf("failed UnmarshalText changed the ID to %q", id)
	}
}

func TestIDLogValue(t *testing.T) {
	v := tenant.MustParseID("abc123").LogValue()
	if v.Kind() != slog.KindString || v.String() != "abc123" {
		t.Errorf("LogValue = %v (%v), want string abc123", v, v.Kind())
	}
	if v := (tenant.ID{}).LogValue(); v.String() != "" {
		t.Errorf("zero LogValue = %q", v.String())
	}
	// slog resolves it: a logged ID is its string, not a struct dump.
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{ReplaceAttr: dropTime})).
		Info("m", "t", tenant.MustParseID("abc123"))
	if want := "level=INFO msg=m t=abc123\n"; b.String() != want {
		t.Errorf("logged %q, want %q", b.String(), want)
	}
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

func TestParseIDRefusesReservedNames(t *testing.T) {
	for _, s := range []string{
		"public", "information_schema", "postgres", "template0", "template1", "tenancy", "tenant", "tenants",
		"platform", "admin", "root", "system", "null", "nil", "none", "undefined", "nan", "true", "false", "default",
		"pg_catalog", "pg_toast", "pg_x", "tenant_acme", "tenancy_g_abc",
	} {
		_, err := tenant.ParseID(s)
		if !errors.Is(err, tenant.ErrInvalidID) {
			t.Errorf("ParseID(%q) = %v, want ErrInvalidID", s, err)
			continue
		}
		if !strings.Contains(err.Error(), "reserved") {
			t.Errorf("ParseID(%q): error %q does not say the name is reserved", s, err)
		}
	}
	// Names that merely contain or extend a reserved word are tenants.
	for _, s := range []string{"publicis", "nullable", "admin2", "pgx", "tenantx", "my_tenant", "acme_pg_x", "none1"} {
		if _, err := tenant.ParseID(s); err != nil {
			t.Errorf("ParseID(%q) = %v, want a tenant", s, err)
		}
	}
}

func TestDNSLabel(t *testing.T) {
	for s, want := range map[string]string{"acme": "acme", "acme_defense_corp": "acme-defense-corp", "a1_b2": "a1-b2"} {
		id := tenant.MustParseID(s)
		if got := id.DNSLabel(); got != want {
			t.Errorf("DNSLabel(%q) = %q, want %q", s, got, want)
		}
		back, err := tenant.ParseDNSLabel(want)
		if err != nil || back != id {
			t.Errorf("ParseDNSLabel(%q) = %q, %v, want %q", want, back, err, id)
		}
	}
	if got := (tenant.ID{}).DNSLabel(); got != "" {
		t.Errorf("zero ID: DNSLabel() = %q", got)
	}
	for _, label := range []string{"acme_corp", "Acme", "-acme", "acme-", "acme--corp", "", "pg-catalog", "tenant-x", "a.b", strings.Repeat("a", 41)} {
		if _, err := tenant.ParseDNSLabel(label); !errors.Is(err, tenant.ErrInvalidID) {
			t.Errorf("ParseDNSLabel(%q) = %v, want ErrInvalidID", label, err)
		}
	}
	_, err := tenant.ParseDNSLabel("acme--corp")
	if err == nil || strings.Contains(err.Error(), "underscore") || !strings.Contains(err.Error(), `"acme--corp"`) {
		t.Errorf("ParseDNSLabel's error speaks of the label, not the ID: %v", err)
	}
}
