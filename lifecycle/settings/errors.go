package settings

import (
	"errors"
	"strconv"
	"strings"
)

// The sentinel errors carry no package prefix: the errors the package
// returns wrap them behind one "settings: " prefix.

var (
	// ErrInvalid is wrapped by the error of a value that breaks a rule of
	// its section: a [*Error] listing every problem at once.
	ErrInvalid = errors.New("invalid settings")

	// ErrConflict is wrapped by the error of a [Settings.Put] whose
	// expected version is not the section's current one: someone else
	// changed it since it was read. Read it again and retry.
	ErrConflict = errors.New("settings changed since they were read")

	// ErrNotFound is wrapped by errors for a section, version or secret
	// the tenant has not set.
	ErrNotFound = errors.New("not set")

	// ErrTier is wrapped by the error of a section the tenant's tier does
	// not include: branding, for the standard tier.
	ErrTier = errors.New("not available on the tenant's tier")

	// ErrNotEmpty is wrapped by the error of an [Settings.Import] into a
	// tenant that has settings already.
	ErrNotEmpty = errors.New("the tenant has settings already")

	// ErrInvalidCustomFields is wrapped by the error of
	// [Settings.ValidateCustomFields] for a record's custom fields that do
	// not match the tenant's schema: an [*Error] listing every problem,
	// each at the JSON pointer of the value ("/severity").
	ErrInvalidCustomFields = errors.New("custom fields do not match the tenant's schema")

	// ErrNotInstalled is wrapped by errors for a tenant whose placement
	// lacks the settings table: [WithMigration] was not given to store.
	ErrNotInstalled = errors.New("the settings table is missing (tenant migrations lack settings.WithMigration)")

	// ErrInvalidConfig is wrapped by errors for arguments of [New] or
	// [WithMigration] that cannot be used.
	ErrInvalidConfig = errors.New("invalid configuration")
)

// Error lists every problem found in a value of one section (or in the
// records given to [Settings.Import], or in a record's custom fields). It
// wraps ErrInvalid (ErrInvalidCustomFields for custom fields).
type Error struct {
	// Section is the section of the value ("" when the section itself is
	// unknown).
	Section Section
	// Version, if not 0, is the stored revision that breaks the rules,
	// found by a read (a revision written around Put, by SQL).
	Version int64
	// Problems are the problems, in the order they were found.
	Problems []Problem

	kind error // ErrInvalid if nil
}

// Problem is one problem of a value.
type Problem struct {
	// Path names the field inside the section's JSON document
	// ("jira.base_url", "users[2].email"); "" is the whole value. Keys
	// that are not plain lower-case names are quoted and escaped
	// (fields["Bad\n"]).
	Path string
	// Rule is the rule broken, in printable ASCII. It repeats no value
	// of the input, except where it passes on a parser's message (JSON
	// syntax, a regular expression, the JSON Schema library), which may
	// quote a piece of it, escaped; never a secret field's value.
	Rule string
}

// String returns "path: rule".
func (p Problem) String() string {
	if p.Path == "" {
		return p.Rule
	}
	return p.Path + ": " + p.Rule
}

// maxShownProblems bounds the problems Error.Error shows.
const maxShownProblems = 10

func (e *Error) sentinel() error {
	if e.kind == nil {
		return ErrInvalid
	}
	return e.kind
}

// Error returns "settings: invalid settings (<section>): " (with
// "version N as stored" after the section for a stored revision, and the
// message of ErrInvalidCustomFields for custom fields) and the problems
// separated by "; ": the first ten, then how many more there are
// (Problems has them all).
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("settings: ")
	b.WriteString(e.sentinel().Error())
	if e.Section != "" {
		b.WriteString(" (")
		b.WriteString(string(e.Section))
		if e.Version != 0 {
			b.WriteString(" version " + strconv.FormatInt(e.Version, 10) + " as stored")
		}
		b.WriteString(")")
	}
	b.WriteString(": ")
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		if i == maxShownProblems {
			b.WriteString("and " + strconv.Itoa(len(e.Problems)-i) + " more")
			break
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInvalid) (or ErrInvalidCustomFields)
// true.
func (e *Error) Unwrap() error { return e.sentinel() }

// problems collects the problems of one value.
type problems struct {
	list []Problem
	// typed is set by a problem of JSON type or shape, after which a
	// document cannot be decoded into its Go type.
	typed bool
}

// add adds a problem; a rule that quotes input (a parser's message) is
// escaped to printable ASCII.
func (p *problems) add(path, rule string) {
	p.list = append(p.list, Problem{Path: path, Rule: printable(rule)})
}

// printable returns s, or s escaped as strconv.QuoteToASCII does (without
// the quotes) if it holds anything but printable ASCII.
func printable(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			q := strconv.QuoteToASCII(s)
			return q[1 : len(q)-1]
		}
	}
	return s
}

func (p *problems) err(s Section) error {
	if len(p.list) == 0 {
		return nil
	}
	return &Error{Section: s, Problems: p.list}
}

// field joins a path and a key: "a" + "b" = "a.b"; a key that is not a
// plain name is quoted: a["B c"].
func field(path, key string) string {
	plain := key != ""
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			plain = false
			break
		}
	}
	if !plain {
		return path + "[" + quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// index is path[i].
func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// quote quotes s for a message: printable ASCII, at most 64 bytes of it.
func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.QuoteToASCII(s)
}
