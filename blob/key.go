package blob

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// MaxKeyLen is the longest object key, in bytes, that a tenant bucket
// takes. Object stores allow 1024 bytes (S3, GCS) or characters (Azure) for
// the whole name; the tenant prefix ("tenants/" and a tenant ID of up to 40
// bytes) and any prefix of the deployment's own take part of it, and
// gocloud's drivers escape some characters into several bytes.
const MaxKeyLen = 512

// MaxSegmentLen is the longest segment (the text between two slashes) of an
// object key, in bytes: the longest file name most file systems take
// (NAME_MAX), which file:// buckets store each segment as.
const MaxSegmentLen = 255

// ErrInvalidKey is wrapped by every error for an object key (or list
// prefix) that a tenant bucket refuses. The error is a [*KeyError], which
// names the rule the key breaks.
var ErrInvalidKey = errors.New("invalid object key")

// Rule names a rule of object keys; [KeyError.Rule] is the one a refused
// key breaks. The rules are documented with [ValidateKey].
type Rule string

// The rules of [ValidateKey].
const (
	RuleEmpty          Rule = "empty key"
	RuleTooLong        Rule = "longer than 512 bytes"
	RuleInvalidUTF8    Rule = "not valid UTF-8"
	RuleControl        Rule = "control character (C0, DEL or C1)"
	RuleBackslash      Rule = "backslash"
	RuleAbsolute       Rule = "leading slash (absolute path)"
	RuleEmptySegment   Rule = "empty segment (// or a trailing slash)"
	RuleDotSegment     Rule = ". or .. segment"
	RuleSegmentTooLong Rule = "segment longer than 255 bytes"
	RuleSegmentSpace   Rule = "segment begins or ends with a space"
	RuleTrailingDot    Rule = "segment ends with a dot"
	RulePercent        Rule = "percent-encoded octet (%XX)"
	RuleLookalike      Rule = "look-alike of / . \\ or %"
	RuleCharacter      Rule = "non-ASCII character that is not a letter, mark or number"
	RuleMark           Rule = "combining mark not after a letter, mark or number"
	RuleNotNFC         Rule = "not in Unicode normalization form C"
)

// KeyError reports an object key that a tenant bucket refuses and the rule
// it breaks. It wraps [ErrInvalidKey].
type KeyError struct {
	// Key is the refused key, quoted with strconv.QuoteToASCII and
	// truncated, so that the error is one printable ASCII line whatever the
	// key held.
	Key string
	// Rule is the rule the key breaks.
	Rule Rule
	// Prefix is true if the refused string was a list prefix, not a key.
	Prefix bool
}

// Error returns "invalid object key <Key>: <Rule>" (or "invalid list
// prefix ...").
func (e *KeyError) Error() string {
	what := "object key"
	if e.Prefix {
		what = "list prefix"
	}
	return fmt.Sprintf("invalid %s %s: %s", what, e.Key, e.Rule)
}

// Unwrap makes errors.Is(err, ErrInvalidKey) true.
func (e *KeyError) Unwrap() error { return ErrInvalidKey }

// displayKey quotes s for an error message: escaped, so that control bytes,
// invalid UTF-8 and bidirectional controls cannot reach a log line raw, and
// truncated.
func displayKey(s string) string {
	const max = 96
	if len(s) > max {
		return strconv.QuoteToASCII(s[:max]) + "..."
	}
	return strconv.QuoteToASCII(s)
}

// ValidateKey reports whether key is an object key that a tenant bucket
// takes, and if not, returns a [*KeyError] naming the first rule it breaks.
// Keys are validated, never cleaned: a key is stored exactly as given, or
// refused.
//
// A key is 1 to [MaxKeyLen] bytes of valid UTF-8, a sequence of segments
// separated by single slashes. Refused:
//
//   - control characters: C0 (U+0000-U+001F), DEL (U+007F) and C1
//     (U+0080-U+009F);
//   - backslashes, which some file systems and tools take as separators;
//   - a leading slash, empty segments ("a//b", a trailing slash), and the
//     segments "." and "..";
//   - a segment longer than [MaxSegmentLen] bytes, one that begins or ends
//     with a space, or one that ends with a dot (Windows file systems drop
//     trailing dots and spaces, so "a.", "a " and "a" would name one file and
//     "..." would name its directory);
//   - a percent sign followed by two hexadecimal digits: a percent-encoded
//     octet, which a URL, proxy or signed URL downstream may decode into a
//     slash, a dot or a backslash (%2e, %2F, %5c; %252e double-encoded);
//     keys are Unicode already and need no encoding;
//   - outside ASCII, anything but letters, marks and numbers (Unicode
//     categories L, M and N): non-ASCII punctuation, symbols, spaces, format
//     characters (zero-width and bidirectional controls), private-use,
//     unassigned and non-characters. This class holds every look-alike of /
//     . \ and % (U+2215 DIVISION SLASH, U+2044 FRACTION SLASH, U+29F8 BIG
//     SOLIDUS, U+FF0F FULLWIDTH SOLIDUS, U+FF0E FULLWIDTH FULL STOP, U+2024
//     ONE DOT LEADER, U+FE68 SMALL REVERSE SOLIDUS, ...) in every Unicode
//     version, which no shorter list does; the error names the rule
//     [RuleLookalike] for the known ones and [RuleCharacter] for the rest.
//     Letters, marks and numbers whose compatibility form (NFKC) holds a /
//     . \ or % (U+2488 DIGIT ONE FULL STOP folds to "1.") are refused as
//     look-alikes too, and a combining mark must follow a letter, mark or
//     number, so that it cannot dress up a slash or a dot;
//   - a key not in Unicode normalization form C: "é" written as e and a
//     combining accent is refused rather than stored beside its composed
//     twin (file systems that normalize would make the two one file).
//
// Everything else is taken, including spaces inside a segment, ASCII
// punctuation other than the backslash (quotes, :, *, ?, #, ...) and
// letters of every script.
func ValidateKey(key string) error {
	if r := checkKey(key); r != "" {
		return &KeyError{Key: displayKey(key), Rule: r}
	}
	return nil
}

// validatePrefix checks a list prefix: empty, or a valid key, or a valid key
// followed by one slash. A prefix names no object, but it is joined under
// the tenant's prefix like a key, so it obeys the same rules.
func validatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if r := checkKey(strings.TrimSuffix(prefix, "/")); r != "" {
		if r == RuleEmpty {
			r = RuleAbsolute // the prefix was "/"
		}
		return &KeyError{Key: displayKey(prefix), Rule: r, Prefix: true}
	}
	return nil
}

// checkKey returns the first rule key breaks, or "".
func checkKey(key string) Rule {
	if key == "" {
		return RuleEmpty
	}
	if len(key) > MaxKeyLen {
		return RuleTooLong
	}
	if !utf8.ValidString(key) {
		return RuleInvalidUTF8
	}
	ascii := true
	for _, r := range key {
		switch {
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f):
			return RuleControl
		case r == '\\':
			return RuleBackslash
		case r >= utf8.RuneSelf:
			ascii = false
		}
	}
	if key[0] == '/' {
		return RuleAbsolute
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return RuleEmptySegment
		case seg == "." || seg == "..":
			return RuleDotSegment
		case len(seg) > MaxSegmentLen:
			return RuleSegmentTooLong
		case seg[0] == ' ' || seg[len(seg)-1] == ' ':
			return RuleSegmentSpace
		case seg[len(seg)-1] == '.':
			return RuleTrailingDot
		}
	}
	if hasPercentOctet(key) {
		return RulePercent
	}
	if ascii {
		return ""
	}
	prev := rune('/')
	for _, r := range key {
		if r < utf8.RuneSelf {
			prev = r
			continue
		}
		if lookalikes[r] {
			return RuleLookalike
		}
		switch {
		case unicode.In(r, unicode.L, unicode.N):
		case unicode.Is(unicode.M, r):
			if prev < utf8.RuneSelf && !isASCIIAlnum(prev) {
				return RuleMark
			}
		default:
			return RuleCharacter
		}
		if strings.ContainsAny(norm.NFKC.String(string(r)), `/.\%`) {
			return RuleLookalike
		}
		prev = r
	}
	if !norm.NFC.IsNormalString(key) {
		return RuleNotNFC
	}
	return ""
}

// hasPercentOctet reports whether s holds a '%' followed by two hexadecimal
// digits.
func hasPercentOctet(s string) bool {
	for i := 0; i+2 < len(s); i++ {
		if s[i] == '%' && isHex(s[i+1]) && isHex(s[i+2]) {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isASCIIAlnum(r rune) bool {
	return '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
}

// lookalikes are non-ASCII characters that look like, or fold (NFKC, or
// Windows' "best fit" code page mapping) to, a slash, a dot, a backslash or
// a percent sign, from Unicode's confusables (UTS #39). They are refused by
// the character class rule in any case; this list only makes the error name
// [RuleLookalike] for them.
var lookalikes = map[rune]bool{
	// Slashes.
	0x2044:  true, // FRACTION SLASH
	0x2215:  true, // DIVISION SLASH
	0x2571:  true, // BOX DRAWINGS LIGHT DIAGONAL UPPER RIGHT TO LOWER LEFT
	0x27CB:  true, // MATHEMATICAL RISING DIAGONAL
	0x29F8:  true, // BIG SOLIDUS
	0x1735:  true, // PHILIPPINE SINGLE PUNCTUATION
	0xFF0F:  true, // FULLWIDTH SOLIDUS
	0x1D23A: true, // GREEK INSTRUMENTAL NOTATION SYMBOL-47
	// Dots.
	0x00B7:  true, // MIDDLE DOT
	0x0701:  true, // SYRIAC SUPRALINEAR FULL STOP
	0x0702:  true, // SYRIAC SUBLINEAR FULL STOP
	0x2024:  true, // ONE DOT LEADER
	0x2025:  true, // TWO DOT LEADER
	0x2026:  true, // HORIZONTAL ELLIPSIS
	0x2027:  true, // HYPHENATION POINT
	0x2219:  true, // BULLET OPERATOR
	0x22C5:  true, // DOT OPERATOR
	0x3002:  true, // IDEOGRAPHIC FULL STOP
	0xFE52:  true, // SMALL FULL STOP
	0xFF0E:  true, // FULLWIDTH FULL STOP
	0xFF61:  true, // HALFWIDTH IDEOGRAPHIC FULL STOP
	0x10A50: true, // KHAROSHTHI PUNCTUATION DOT
	// Backslashes.
	0x2216: true, // SET MINUS
	0x27CD: true, // MATHEMATICAL FALLING DIAGONAL
	0x29F5: true, // REVERSE SOLIDUS OPERATOR
	0x29F9: true, // BIG REVERSE SOLIDUS
	0x2572: true, // BOX DRAWINGS LIGHT DIAGONAL UPPER LEFT TO LOWER RIGHT
	0xFE68: true, // SMALL REVERSE SOLIDUS
	0xFF3C: true, // FULLWIDTH REVERSE SOLIDUS
	0x00A5: true, // YEN SIGN (the backslash of Japanese code pages)
	0x20A9: true, // WON SIGN (the backslash of Korean code pages)
	// Percent signs.
	0x066A: true, // ARABIC PERCENT SIGN
	0x2052: true, // COMMERCIAL MINUS SIGN
	0xFE6A: true, // SMALL PERCENT SIGN
	0xFF05: true, // FULLWIDTH PERCENT SIGN
}
