package audit

import (
	"cmp"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// canonicalString appends s to dst as RFC 8785 (section 3.2.2.2) writes a
// string: quoted, with \" and \\, the short escapes \b \t \n \f \r, \u00xx
// (lower-case hex) for the other control characters, and every other
// character as itself. s is valid UTF-8 (prepare checks).
func canonicalString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	run := 0 // s[run:i] is to be copied as it is
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[run:i]...)
		run = i + 1
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\r':
			dst = append(dst, '\\', 'r')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
	}
	dst = append(dst, s[run:]...)
	return append(dst, '"')
}

func appendBase64(dst, b []byte) []byte { return base64.StdEncoding.AppendEncode(dst, b) }

// appendInt appends n as RFC 8785 writes a number that is an integer below
// 2^53: its decimal digits.
func appendInt(dst []byte, n int64) []byte { return strconv.AppendInt(dst, n, 10) }

// checkpointInput is the canonical JSON over which a checkpoint's MAC is
// computed:
//
//	{"head_mac":"<base64>","log":"<log>","seq":<seq>,"time":"<time>","type":"checkpoint","v":1}
func checkpointInput(log string, seq int64, head []byte, at time.Time) []byte {
	b := make([]byte, 0, 160)
	b = append(b, `{"head_mac":"`...)
	b = appendBase64(b, head)
	b = append(b, `","log":`...)
	b = canonicalString(b, log)
	b = append(b, `,"seq":`...)
	b = appendInt(b, seq)
	b = append(b, `,"time":`...)
	b = canonicalString(b, formatTime(at))
	return append(b, `,"type":"checkpoint","v":1}`...)
}

// trailerInput is the canonical JSON over which the MAC of an export's
// trailer is computed:
//
//	{"entries":<n>,"exported_at":"<time>","head_mac":"<base64>","head_seq":<seq>,"log":"<log>","type":"export","v":1}
func trailerInput(log string, entries, headSeq int64, head []byte, at time.Time) []byte {
	b := make([]byte, 0, 192)
	b = append(b, `{"entries":`...)
	b = appendInt(b, entries)
	b = append(b, `,"exported_at":`...)
	b = canonicalString(b, formatTime(at))
	b = append(b, `,"head_mac":"`...)
	b = appendBase64(b, head)
	b = append(b, `","head_seq":`...)
	b = appendInt(b, headSeq)
	b = append(b, `,"log":`...)
	b = canonicalString(b, log)
	return append(b, `,"type":"export","v":1}`...)
}

// detailsEncoder writes the RFC 8785 form of the Go values callers
// usually give as details (maps, slices, strings, numbers, booleans, nil)
// without encoding/json and a second parse by jcs: the same bytes as
// jcs.Transform(json.Marshal(v)), which the test suite checks. Any other
// type makes it give up (ok false), and the caller takes that slower way.
type detailsEncoder struct {
	buf   []byte
	start int // where the details begin in buf
	depth int
	ms    []member // the members of the objects being written, innermost last
}

// member is a member of an object: its key, and its value (v, or s if
// str).
type member struct {
	k   string
	v   any
	s   string
	str bool
}

// errDetails is why details cannot be kept; prepare names the field.
type errDetails string

func (e errDetails) Error() string { return string(e) }

// fastDetails returns the canonical form of details, or ok false if
// details holds a type detailsEncoder does not write.
func fastDetails(details any) (b []byte, ok bool, err error) {
	b, ok, err = appendFastDetails(nil, details, nil)
	if !ok || err != nil {
		return nil, ok, err
	}
	return b, true, nil
}

// appendFastDetails appends the canonical form of details to dst, or
// returns ok false if details holds a type detailsEncoder does not write.
// s, if not nil, is scratch space.
func appendFastDetails(dst []byte, details any, s *scratch) (b []byte, ok bool, err error) {
	switch m := details.(type) {
	case map[string]any:
		if m == nil {
			return dst, false, nil
		}
	case map[string]string:
		if m == nil {
			return dst, false, nil
		}
	default:
		return dst, false, nil
	}
	e := detailsEncoder{buf: dst, start: len(dst)}
	if s != nil {
		e.ms = s.ms[:0]
		defer func() { s.ms = e.ms[:0] }()
	}
	ok, err = e.value(details)
	switch {
	case !ok || err != nil:
		return dst, ok, err
	case len(e.buf)-e.start > MaxDetails:
		return dst, true, fmt.Errorf("must be at most %d bytes in canonical JSON, not %d", MaxDetails, len(e.buf)-e.start)
	}
	return e.buf, true, nil
}

func (e *detailsEncoder) value(v any) (bool, error) {
	if len(e.buf)-e.start > MaxDetails {
		return true, fmt.Errorf("must be at most %d bytes in canonical JSON", MaxDetails)
	}
	switch x := v.(type) {
	case nil:
		e.buf = append(e.buf, "null"...)
	case bool:
		e.buf = strconv.AppendBool(e.buf, x)
	case string:
		e.buf = canonicalString(e.buf, coerceUTF8(x))
	case float64:
		return true, e.number(x)
	case int:
		return true, e.number(float64(x))
	case int64:
		return true, e.number(float64(x))
	case int32:
		return true, e.number(float64(x))
	case uint:
		return true, e.number(float64(x))
	case uint64:
		return true, e.number(float64(x))
	case uint32:
		return true, e.number(float64(x))
	case map[string]any:
		if x == nil {
			e.buf = append(e.buf, "null"...)
			return true, nil
		}
		base := len(e.ms)
		for k, v := range x {
			e.ms = append(e.ms, member{k: coerceUTF8(k), v: v})
		}
		return e.object(base)
	case map[string]string:
		if x == nil {
			e.buf = append(e.buf, "null"...)
			return true, nil
		}
		base := len(e.ms)
		for k, v := range x {
			e.ms = append(e.ms, member{k: coerceUTF8(k), s: v, str: true})
		}
		return e.object(base)
	case []any:
		if x == nil {
			e.buf = append(e.buf, "null"...)
			return true, nil
		}
		if err := e.nest(); err != nil {
			return true, err
		}
		e.buf = append(e.buf, '[')
		for i, v := range x {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			if ok, err := e.value(v); !ok || err != nil {
				return ok, err
			}
		}
		e.buf = append(e.buf, ']')
		e.depth--
	case []string:
		if x == nil {
			e.buf = append(e.buf, "null"...)
			return true, nil
		}
		if err := e.nest(); err != nil {
			return true, err
		}
		e.buf = append(e.buf, '[')
		for i, v := range x {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			if len(e.buf)-e.start > MaxDetails {
				return true, fmt.Errorf("must be at most %d bytes in canonical JSON", MaxDetails)
			}
			e.buf = canonicalString(e.buf, coerceUTF8(v))
		}
		e.buf = append(e.buf, ']')
		e.depth--
	default:
		return false, nil
	}
	return true, nil
}

func (e *detailsEncoder) number(f float64) error {
	s, err := jcs.NumberToJSON(f)
	if err != nil {
		return errDetails("must hold finite numbers only")
	}
	e.buf = append(e.buf, s...)
	return nil
}

func (e *detailsEncoder) nest() error {
	if e.depth++; e.depth > MaxDetailsDepth {
		return fmt.Errorf("must be at most %d levels deep", MaxDetailsDepth)
	}
	return nil
}

// object writes the object whose members are e.ms[base:], and drops them
// from e.ms.
func (e *detailsEncoder) object(base int) (bool, error) {
	if err := e.nest(); err != nil {
		return true, err
	}
	ms := e.ms[base:] // stays valid while the members' values append to e.ms
	slices.SortFunc(ms, compareMembers)
	e.buf = append(e.buf, '{')
	for i := range ms {
		m := &ms[i]
		if i > 0 {
			if ms[i-1].k == m.k {
				return true, errDetails("must not have duplicate keys")
			}
			e.buf = append(e.buf, ',')
		}
		e.buf = canonicalString(e.buf, m.k)
		e.buf = append(e.buf, ':')
		if m.str {
			if len(e.buf)-e.start > MaxDetails {
				return true, fmt.Errorf("must be at most %d bytes in canonical JSON", MaxDetails)
			}
			e.buf = canonicalString(e.buf, coerceUTF8(m.s))
		} else if ok, err := e.value(m.v); !ok || err != nil {
			return ok, err
		}
	}
	e.buf = append(e.buf, '}')
	e.depth--
	clear(e.ms[base:])
	e.ms = e.ms[:base]
	return true, nil
}

func compareMembers(a, b member) int { return compareUTF16(a.k, b.k) }

// coerceUTF8 replaces each byte of s that is not part of valid UTF-8 with
// U+FFFD, as encoding/json does.
func coerceUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// compareUTF16 orders strings (valid UTF-8) as RFC 8785 orders keys: by
// their UTF-16 code units. That is byte order but where a character
// beyond U+FFFF (a surrogate pair in UTF-16) meets one in U+E000-U+FFFF.
func compareUTF16(a, b string) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	switch {
	case i == len(a) || i == len(b):
		return cmp.Compare(len(a), len(b))
	case a[i] < utf8.RuneSelf && b[i] < utf8.RuneSelf:
		return cmp.Compare(a[i], b[i]) // the first characters that differ, both ASCII
	}
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			return cmp.Compare(utf16Key(ra), utf16Key(rb))
		}
		a, b = a[na:], b[nb:]
	}
	return cmp.Compare(len(a), len(b))
}

// utf16Key maps a rune to a number that orders as its UTF-16 encoding.
func utf16Key(r rune) uint32 {
	if r < 0x10000 {
		return uint32(r) << 10
	}
	r -= 0x10000
	return (0xD800+uint32(r>>10))<<10 | uint32(r&0x3FF)
}
