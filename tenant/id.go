package tenant

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxIDLen is the longest tenant ID, in bytes. It keeps "tenant_<id>" (47
// bytes) well inside PostgreSQL's 63-byte identifier limit, leaving room for
// a deployment prefix on cluster-wide role names, and inside the 63-byte
// limit of a Kubernetes namespace or DNS label.
const MaxIDLen = 40

// ID identifies one tenant. The only way to make a non-zero ID is [ParseID]
// (or [MustParseID]); an ID is immutable once made. The zero ID is not a
// tenant: it is what FromContext returns when there is none.
type ID struct {
	s string
}

// IDError reports why a string is not a tenant ID. It wraps [ErrInvalidID].
type IDError struct {
	// Input is the rejected input, escaped and truncated for display.
	Input string
	// Rule is the grammar rule the input breaks.
	Rule string
}

// Error returns "tenant: invalid tenant ID <Input>: <Rule>". [ParseID]
// sets Input to the rejected string quoted with strconv.QuoteToASCII (and
// truncated), so its errors are one printable ASCII line whatever the input
// held.
func (e *IDError) Error() string {
	return fmt.Sprintf("tenant: invalid tenant ID %s: %s", e.Input, e.Rule)
}

// Unwrap makes errors.Is(err, ErrInvalidID) true.
func (e *IDError) Unwrap() error { return ErrInvalidID }

// displayInput quotes s for an error message: escaped (so control bytes and
// invalid UTF-8 cannot reach a log line raw) and truncated.
func displayInput(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.QuoteToASCII(s[:max]) + "..."
	}
	return strconv.QuoteToASCII(s)
}

// ParseID parses s as a tenant ID. The grammar: 1 to MaxIDLen bytes of
// lower-case ASCII letters a-z, digits 0-9 and underscores; the first byte a
// letter; no underscore at the end and no two underscores in a row. Reserved
// names are refused too: public, information_schema, postgres, template0,
// template1, tenancy, tenant, tenants, platform, admin, root, system, and
// what a missing value prints as (null, nil, none, undefined, nan, true,
// false, default), and names starting with pg_, tenant_ or tenancy_.
// Anything else is rejected with an [*IDError] that wraps [ErrInvalidID];
// nothing is cleaned or lower-cased on the caller's behalf.
func ParseID(s string) (ID, error) {
	if err := checkID(s); err != "" {
		return ID{}, &IDError{Input: displayInput(s), Rule: err}
	}
	return ID{s: s}, nil
}

// reservedIDs are names that collide with PostgreSQL's or the platform's
// own (schemas, databases, roles), or that signal a bug upstream (a
// stringified nil or empty value), refused as tenant IDs.
var reservedIDs = map[string]bool{
	"public": true, "information_schema": true, "postgres": true, "template0": true, "template1": true,
	"tenancy": true, "tenant": true, "tenants": true, "platform": true, "admin": true, "root": true, "system": true,
	"null": true, "nil": true, "none": true, "undefined": true, "nan": true, "true": true, "false": true, "default": true,
}

// reservedPrefixes start names of PostgreSQL's (pg_), of tenant schemas
// and databases (tenant_: tenant_tenant_x would be confusable), and of the
// platform's roles (tenancy_).
var reservedPrefixes = []string{"pg_", "tenant_", "tenancy_"}

func checkID(s string) string {
	if err := checkGrammar(s); err != "" {
		return err
	}
	if reservedIDs[s] {
		return "is reserved (it names a PostgreSQL or platform object, or is what a missing value prints as): choose another ID"
	}
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(s, p) {
			return "must not start with " + strconv.Quote(p) + " (reserved for PostgreSQL and the platform)"
		}
	}
	return ""
}

func checkGrammar(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > MaxIDLen:
		return "must be at most " + strconv.Itoa(MaxIDLen) + " bytes long"
	case s[0] < 'a' || s[0] > 'z':
		return "must start with a lower-case ASCII letter (a-z)"
	case s[len(s)-1] == '_':
		return "must not end with an underscore"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '_':
			if s[i-1] == '_' {
				return "must not contain two underscores in a row"
			}
		default:
			return "may contain only lower-case ASCII letters, digits and underscores (byte " +
				strconv.Itoa(i) + " is " + describeByte(c) + ")"
		}
	}
	return ""
}

// describeByte names one byte of rejected input for an error message: an
// ASCII byte quoted and escaped ('-', '\n'), any other byte in hex, since on
// its own it is part of a UTF-8 sequence (or of none), not a character.
func describeByte(c byte) string {
	if c < utf8.RuneSelf {
		return strconv.QuoteRuneToASCII(rune(c))
	}
	return fmt.Sprintf("%#02x (not ASCII)", c)
}

// MustParseID is like [ParseID] but panics if s is not a valid ID. It is
// meant for constants in tests and examples, like regexp.MustCompile; code
// that handles input must use ParseID.
func MustParseID(s string) ID {
	id, err := ParseID(s)
	if err != nil {
		panic(err)
	}
	return id
}

// String returns the ID as parsed ("" for the zero ID).
func (id ID) String() string { return id.s }

// IsZero reports whether id is the zero ID, which names no tenant.
func (id ID) IsZero() bool { return id.s == "" }

// SchemaName returns "tenant_<id>": the PostgreSQL schema (standard tier) or
// database (enterprise tier) name of the tenant. It is a valid unquoted
// PostgreSQL identifier. It returns "" for the zero ID.
func (id ID) SchemaName() string {
	if id.s == "" {
		return ""
	}
	return "tenant_" + id.s
}

// DNSLabel returns the ID as an RFC 1123 label, for Kubernetes namespace
// names and hostnames: each '_' becomes '-'. The mapping is one-to-one
// (an ID has no '-'), the label is at most MaxIDLen bytes, starts with a
// letter and does not end with '-'. [ParseDNSLabel] reverses it. It
// returns "" for the zero ID.
func (id ID) DNSLabel() string { return strings.ReplaceAll(id.s, "_", "-") }

// ParseDNSLabel parses a label made by [ID.DNSLabel] (a sub-domain, a
// namespace suffix) back into an ID: each '-' becomes '_', then [ParseID]
// applies. A label with '_' or upper-case letters is not one DNSLabel
// makes, and is rejected. DNS is case-insensitive: lower-case a
// hostname's label before parsing it, if it may arrive otherwise.
func ParseDNSLabel(label string) (ID, error) {
	if strings.Contains(label, "_") {
		return ID{}, &IDError{Input: displayInput(label), Rule: "a DNS label of a tenant has '-' where the ID has '_', never '_'"}
	}
	id, err := ParseID(strings.ReplaceAll(label, "-", "_"))
	if err != nil {
		var ie *IDError
		if errors.As(err, &ie) {
			ie.Input = displayInput(label)
			ie.Rule = strings.ReplaceAll(ie.Rule, "underscore", "'-'")
		}
		return ID{}, err
	}
	return id, nil
}

// MarshalText implements [encoding.TextMarshaler]. The zero ID marshals to
// an error, so that no record is ever written without its tenant.
func (id ID) MarshalText() ([]byte, error) {
	if id.s == "" {
		return nil, errors.New("tenant: cannot marshal the zero tenant ID")
	}
	return []byte(id.s), nil
}

// UnmarshalText implements [encoding.TextUnmarshaler] by calling [ParseID],
// so JSON, YAML and flag input is validated at the boundary.
func (id *ID) UnmarshalText(b []byte) error {
	p, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

// LogValue implements [slog.LogValuer].
func (id ID) LogValue() slog.Value { return slog.StringValue(id.s) }
