package audit

import (
	"encoding/base64"
	"strconv"
	"time"
)

// canonicalString appends s to dst as RFC 8785 (section 3.2.2.2) writes a
// string: quoted, with \" and \\, the short escapes \b \t \n \f \r, \u00xx
// (lower-case hex) for the other control characters, and every other
// character as itself. s is valid UTF-8 (prepare checks).
func canonicalString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c >= 0x20:
			dst = append(dst, c)
		case c == '\b':
			dst = append(dst, '\\', 'b')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\f':
			dst = append(dst, '\\', 'f')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
	}
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
