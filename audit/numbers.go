package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/gowebpki/jcs"
)

// exactNumbers checks that every number of the stored (or exported)
// details raw has exactly the value of the double its canonical form
// writes. The canonical form (RFC 8785) keeps numbers as doubles, jsonb
// keeps them exactly (numeric): without this check, a stored number
// changed to another that rounds to the same double (12345678901234567000
// to 12345678901234567890, 1 to 1.0000000000000000001) would verify, while
// every query of the table reads the changed value. Numbers jsonb writes
// in a form of its own (1e+21 as 1000000000000000000000) are the same
// value, and pass.
func exactNumbers(raw []byte) error {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return nil // not JSON: canonicalDetails says why
		}
		n, ok := tok.(json.Number)
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil {
			return nil // out of a double's range: canonicalDetails refuses it
		}
		c, err := jcs.NumberToJSON(f)
		if err != nil || !sameDecimal(string(n), c) {
			return errors.New("a number (" + truncate(string(n), 40) + ") is not the value its MAC covers (" + c + ")")
		}
	}
}

// sameDecimal reports whether the JSON numbers a and b are the same
// decimal value, without arithmetic on big numbers (an exponent may be
// huge).
func sameDecimal(a, b string) bool {
	na, da, ea, oka := decimal(a)
	nb, db, eb, okb := decimal(b)
	return oka && okb && na == nb && da == db && ea == eb
}

// decimal returns JSON number s as sign, significant digits (no leading
// or trailing zeros) and exponent: s = ±digits × 10^exp.
// Zero is ("", 0, not negative).
func decimal(s string) (neg bool, digits string, exp int64, ok bool) {
	neg = strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	mant, e, hasExp := strings.Cut(strings.ToLower(s), "e")
	if hasExp {
		var err error
		if exp, err = strconv.ParseInt(strings.TrimPrefix(e, "+"), 10, 64); err != nil || exp > 1<<40 || exp < -(1<<40) {
			return false, "", 0, false
		}
	}
	ip, fp, _ := strings.Cut(mant, ".")
	digits = strings.TrimLeft(ip+fp, "0")
	exp -= int64(len(fp))
	trimmed := strings.TrimRight(digits, "0")
	exp += int64(len(digits) - len(trimmed))
	digits = trimmed
	if digits == "" {
		return false, "", 0, true
	}
	return neg, digits, exp, true
}
