package blob_test

import (
	"errors"
	"net/url"
	"path"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	gcblob "gocloud.dev/blob"
	"gocloud.dev/gcerrors"
	"golang.org/x/text/unicode/norm"

	"github.com/rtmx-ai/tenancy/blob"
)

// hostileKeys are keys a tenant bucket must refuse, each with the rule it
// breaks first.
var hostileKeys = []struct {
	key  string
	rule blob.Rule
}{
	// Empty, absolute, over-long.
	{"", blob.RuleEmpty},
	{"/", blob.RuleAbsolute},
	{"/etc/passwd", blob.RuleAbsolute},
	{"/tenants/globex/a", blob.RuleAbsolute},
	{strings.Repeat("a", blob.MaxKeyLen+1), blob.RuleTooLong},
	{strings.Repeat("ab/", 200), blob.RuleTooLong},
	{strings.Repeat("a", blob.MaxSegmentLen+1), blob.RuleSegmentTooLong},
	{"x/" + strings.Repeat("é", 128), blob.RuleSegmentTooLong},
	// Dot segments and empty segments.
	{".", blob.RuleDotSegment},
	{"..", blob.RuleDotSegment},
	{"../globex/a", blob.RuleDotSegment},
	{"a/../../globex/a", blob.RuleDotSegment},
	{"a/..", blob.RuleDotSegment},
	{"./a", blob.RuleDotSegment},
	{"a/./b", blob.RuleDotSegment},
	{"a/.", blob.RuleDotSegment},
	{"a//b", blob.RuleEmptySegment},
	{"a/", blob.RuleEmptySegment},
	{"a///", blob.RuleEmptySegment},
	{"a/b//", blob.RuleEmptySegment},
	// Backslashes.
	{`a\b`, blob.RuleBackslash},
	{`..\globex\a`, blob.RuleBackslash},
	{`\\server\share`, blob.RuleBackslash},
	{`a/..\..\b`, blob.RuleBackslash},
	{`C:\Windows`, blob.RuleBackslash},
	// Control characters: C0, DEL, C1.
	{"a\x00b", blob.RuleControl},
	{"a\x00", blob.RuleControl},
	{"\x00", blob.RuleControl},
	{"a\tb", blob.RuleControl},
	{"a\nb", blob.RuleControl},
	{"a\rb", blob.RuleControl},
	{"a\x1b[31mred", blob.RuleControl},
	{"a\x1fb", blob.RuleControl},
	{"a\x7fb", blob.RuleControl},
	{"a\u0085b", blob.RuleControl},
	{"a\u009bb", blob.RuleControl},
	{"a\u0080", blob.RuleControl},
	// Invalid UTF-8.
	{"a\xffb", blob.RuleInvalidUTF8},
	{"\xc0\xaf", blob.RuleInvalidUTF8},           // overlong "/"
	{"\xc0\xae\xc0\xae/x", blob.RuleInvalidUTF8}, // overlong ".."
	{"\xe0\x80\xaf", blob.RuleInvalidUTF8},       // overlong "/" in 3 bytes
	{"a\xed\xa0\x80b", blob.RuleInvalidUTF8},     // a surrogate
	{"a\xf4\x90\x80\x80", blob.RuleInvalidUTF8},  // above U+10FFFF
	{"\xc3", blob.RuleInvalidUTF8},               // truncated
	// Percent-encoded traversal, any case, double-encoded.
	{"%2e%2e/a", blob.RulePercent},
	{"%2E%2E/a", blob.RulePercent},
	{"a/%2e%2e%2fglobex", blob.RulePercent},
	{"a%2Fb", blob.RulePercent},
	{"a%2fb", blob.RulePercent},
	{"a%5cb", blob.RulePercent},
	{"a%5Cb", blob.RulePercent},
	{"%252e%252e/a", blob.RulePercent},
	{"%25252e", blob.RulePercent},
	{"a%00b", blob.RulePercent},
	{"..%2f", blob.RulePercent},
	{"%c0%ae%c0%ae/a", blob.RulePercent},
	{"%u2215%2f", blob.RulePercent}, // IIS-style %u beside an octet
	// Whitespace and trailing dots at segment edges.
	{" a", blob.RuleSegmentSpace},
	{"a ", blob.RuleSegmentSpace},
	{"a/ b", blob.RuleSegmentSpace},
	{"a /b", blob.RuleSegmentSpace},
	{" ", blob.RuleSegmentSpace},
	{"a.", blob.RuleTrailingDot},
	{"...", blob.RuleTrailingDot},
	{"a/.../b", blob.RuleTrailingDot},
	{"a/b./c", blob.RuleTrailingDot},
	// Unicode look-alikes of / . \ %.
	{"a\u2215b", blob.RuleLookalike},            // DIVISION SLASH
	{"a\u2044b", blob.RuleLookalike},            // FRACTION SLASH
	{"a\uff0fb", blob.RuleLookalike},            // FULLWIDTH SOLIDUS
	{"a\u29f8b", blob.RuleLookalike},            // BIG SOLIDUS
	{"\uff0e\uff0e/a", blob.RuleLookalike},      // FULLWIDTH FULL STOP
	{"\u2024\u2024\u2215a", blob.RuleLookalike}, // ONE DOT LEADER
	{"\u2025/a", blob.RuleLookalike},            // TWO DOT LEADER
	{"a\u2026", blob.RuleLookalike},             // HORIZONTAL ELLIPSIS
	{"a\ufe52b", blob.RuleLookalike},            // SMALL FULL STOP
	{"a\u3002b", blob.RuleLookalike},            // IDEOGRAPHIC FULL STOP
	{"a\uff3cb", blob.RuleLookalike},            // FULLWIDTH REVERSE SOLIDUS
	{"a\ufe68b", blob.RuleLookalike},            // SMALL REVERSE SOLIDUS
	{"a\u2216b", blob.RuleLookalike},            // SET MINUS
	{"a\u00a5b", blob.RuleLookalike},            // YEN SIGN
	{"a\uff05" + "2e", blob.RuleLookalike},      // FULLWIDTH PERCENT SIGN
	{"a\u2571b", blob.RuleLookalike},            // BOX DRAWINGS diagonal
	{"a\u1735b", blob.RuleLookalike},            // PHILIPPINE SINGLE PUNCTUATION
	{"\u2488", blob.RuleLookalike},              // DIGIT ONE FULL STOP (a number that folds to "1.")
	{"a\U0001F100", blob.RuleLookalike},         // DIGIT ZERO FULL STOP (folds to "0.")
	// Other non-ASCII that is not a letter, mark or number.
	{"a\u202eb", blob.RuleCharacter},    // RIGHT-TO-LEFT OVERRIDE
	{"a\u200bb", blob.RuleCharacter},    // ZERO WIDTH SPACE
	{"a\u00a0b", blob.RuleCharacter},    // NO-BREAK SPACE
	{"a\u3000b", blob.RuleCharacter},    // IDEOGRAPHIC SPACE
	{"a\u2028b", blob.RuleCharacter},    // LINE SEPARATOR
	{"a\ufeffb", blob.RuleCharacter},    // BYTE ORDER MARK
	{"a\ue000b", blob.RuleCharacter},    // private use
	{"a\uffffb", blob.RuleCharacter},    // non-character
	{"a\U000e0001", blob.RuleCharacter}, // LANGUAGE TAG
	{"☺☺☺", blob.RuleCharacter},         // a symbol
	{"a\u0378", blob.RuleCharacter},     // unassigned
	// Marks that attach to nothing, or to punctuation.
	{"\u0301a", blob.RuleMark},
	{"a/\u0338b", blob.RuleMark}, // COMBINING LONG SOLIDUS OVERLAY
	{"a-\u0307", blob.RuleMark},
	// Not NFC.
	{"cafe\u0301", blob.RuleNotNFC},
	{"A\u030a", blob.RuleNotNFC},
	{"\u212b", blob.RuleNotNFC}, // ANGSTROM SIGN (NFC is U+00C5)
}

// validKeys are keys a tenant bucket takes.
var validKeys = []string{
	"a", "a/b/c", "docs/REQ-DEPLOY-004.md", ".hidden", "a/.b", "a..b", "..a", "a.b.c",
	"with space", "a b/c d", "quote\"s", "it's", "#hash", "q?x=1", "a:b", "*", "~user", "a+b=c&d",
	"50% off", "100%", "%zz", "%2", "%g0", "日本語/ファイル", "Ελληνικά", "Москва", "عربي", "हिन्दी", "한국어",
	"café", "Ａｂｃ", "x①", "aé", "ノ", "ñ", "a\u0338",
	strings.Repeat("a", blob.MaxSegmentLen), strings.Repeat("abcd/", 102) + "ab",
	"-", "_", "0", "a-b_c.d",
}

// TestValidateKeyRefusesHostileKeys: each hostile key is refused with the
// rule it breaks, as a *KeyError that wraps ErrInvalidKey and prints as
// one line of printable ASCII.
func TestValidateKeyRefusesHostileKeys(t *testing.T) {
	if len(hostileKeys) < 80 {
		t.Fatalf("only %d hostile keys", len(hostileKeys))
	}
	for _, tc := range hostileKeys {
		err := blob.ValidateKey(tc.key)
		var ke *blob.KeyError
		if !errors.As(err, &ke) || !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("ValidateKey(%+q) = %v, want a *KeyError", tc.key, err)
			continue
		}
		if ke.Rule != tc.rule {
			t.Errorf("ValidateKey(%+q): rule %q, want %q", tc.key, ke.Rule, tc.rule)
		}
		if msg := err.Error(); !printableASCII(msg) || !strings.Contains(msg, string(tc.rule)) {
			t.Errorf("ValidateKey(%+q): message %q is not printable ASCII naming the rule", tc.key, msg)
		}
	}
}

// TestValidateKeyTakesValidKeys: letters of every script, inner spaces,
// ASCII punctuation, a '%' that starts no octet, keys at the length limits.
func TestValidateKeyTakesValidKeys(t *testing.T) {
	for _, k := range validKeys {
		if err := blob.ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%+q) = %v, want nil", k, err)
		}
	}
}

// TestViewRefusesHostileKeys: every call of a tenant's view that takes a
// key refuses each hostile key with the same rule, on every backend, and
// stores nothing; list prefixes are checked the same way.
func TestViewRefusesHostileKeys(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			_, ctx := provision(t, km, "acme")
			v := view(t, be.open(t, km), ctx)
			if err := v.WriteAll(ctx, "ok", []byte("x"), nil); err != nil {
				t.Fatal(err)
			}
			check := func(op, key string, rule blob.Rule, err error) {
				t.Helper()
				var ke *blob.KeyError
				switch {
				case rule == blob.RuleInvalidUTF8:
					// gocloud's portable bucket refuses it before the view.
					if gcerrors.Code(err) != gcerrors.InvalidArgument {
						t.Errorf("%s(%+q) = %v, want InvalidArgument", op, key, err)
					}
				case !errors.As(err, &ke) || ke.Rule != rule || gcerrors.Code(err) != gcerrors.InvalidArgument:
					t.Errorf("%s(%+q) = %v, want rule %q, code InvalidArgument", op, key, err, rule)
				}
			}
			for _, tc := range hostileKeys {
				check("WriteAll", tc.key, tc.rule, v.WriteAll(ctx, tc.key, []byte("x"), nil))
				_, err := v.ReadAll(ctx, tc.key)
				check("ReadAll", tc.key, tc.rule, err)
				_, err = v.Attributes(ctx, tc.key)
				check("Attributes", tc.key, tc.rule, err)
				check("Delete", tc.key, tc.rule, v.Delete(ctx, tc.key))
				check("Copy to", tc.key, tc.rule, v.Copy(ctx, tc.key, "ok", nil))
				check("Copy from", tc.key, tc.rule, v.Copy(ctx, "ok2", tc.key, nil))
				if tc.rule != blob.RuleEmpty && tc.rule != blob.RuleEmptySegment {
					_, _, err = v.ListPage(ctx, gcblob.FirstPageToken, 10, &gcblob.ListOptions{Prefix: tc.key})
					check("ListPage", tc.key, tc.rule, err)
				}
			}
			if got := listKeys(t, ctx, be.raw, ""); len(got) != 1 {
				t.Errorf("stored keys %q, want the one valid object", got)
			}
		})
	}
}

// FuzzValidateKey checks ValidateKey against its rules, written
// independently: an accepted key joined under a tenant prefix stays under
// it (as a path, after cleaning, and after percent-decoding), is joined
// with exactly the prefix, and holds none of the refused patterns; a
// refused key gives a *KeyError that names a rule and prints safely.
func FuzzValidateKey(f *testing.F) {
	for _, tc := range hostileKeys {
		f.Add(tc.key)
	}
	for _, k := range validKeys {
		f.Add(k)
	}
	const prefix = "tenants/acme/"
	f.Fuzz(func(t *testing.T, key string) {
		err := blob.ValidateKey(key)
		if err != nil {
			var ke *blob.KeyError
			if !errors.As(err, &ke) || !errors.Is(err, blob.ErrInvalidKey) || ke.Rule == "" {
				t.Fatalf("ValidateKey(%+q) = %v, want a *KeyError with a rule", key, err)
			}
			if !printableASCII(err.Error()) {
				t.Fatalf("ValidateKey(%+q): message %q is not printable ASCII", key, err)
			}
			return
		}
		joined := prefix + key
		if !strings.HasPrefix(joined, prefix) || joined[len(prefix):] != key {
			t.Fatalf("joined %q does not have exactly the prefix", joined)
		}
		if c := path.Clean("/" + joined); c != "/"+joined {
			t.Fatalf("accepted %+q: joined key is not clean (%q)", key, c)
		}
		if u, err := url.PathUnescape(joined); err == nil && u != joined {
			t.Fatalf("accepted %+q: percent-decodes to %q", key, u)
		}
		if nfkc := norm.NFKC.String(key); countSyntax(nfkc) != countSyntax(key) {
			t.Fatalf("accepted %+q: NFKC %+q adds a / . \\ or %%", key, nfkc)
		}
		switch {
		case key == "" || len(key) > blob.MaxKeyLen:
			t.Fatalf("accepted %+q: length %d", key, len(key))
		case !utf8.ValidString(key):
			t.Fatalf("accepted invalid UTF-8 %+q", key)
		case strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") || strings.Contains(key, "//"):
			t.Fatalf("accepted %+q: absolute or empty segment", key)
		case strings.ContainsRune(key, '\\'):
			t.Fatalf("accepted a backslash in %+q", key)
		case !norm.NFC.IsNormalString(key):
			t.Fatalf("accepted %+q, not NFC", key)
		}
		for _, seg := range strings.Split(key, "/") {
			if seg == "." || seg == ".." || len(seg) > blob.MaxSegmentLen ||
				strings.HasPrefix(seg, " ") || strings.HasSuffix(seg, " ") || strings.HasSuffix(seg, ".") {
				t.Fatalf("accepted %+q: segment %+q", key, seg)
			}
		}
		for i, r := range key {
			if unicode.IsControl(r) || (r > unicode.MaxASCII && !unicode.In(r, unicode.L, unicode.M, unicode.N)) {
				t.Fatalf("accepted %+q: %U", key, r)
			}
			if r == '%' && i+2 < len(key) && isHex(key[i+1]) && isHex(key[i+2]) {
				t.Fatalf("accepted %+q: percent-encoded octet", key)
			}
		}
	})
}

func countSyntax(s string) int {
	n := 0
	for _, r := range s {
		if strings.ContainsRune(`/.\%`, r) {
			n++
		}
	}
	return n
}

func isHex(c byte) bool { return strings.IndexByte("0123456789abcdefABCDEF", c) >= 0 }

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
