package invite

import (
	"net/mail"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	maxEmailLen = 254 // RFC 5321 path limit less the angle brackets
	maxLocalLen = 64  // RFC 5321 local-part limit
	maxNameLen  = 200 // as lifecycle's request
)

const emailRule = "must be a bare e-mail address (local@example.com: ASCII, no display name, comment, quotes or IP literal, at most 254 bytes)"

// atext is the set of characters of an RFC 5322 dot-atom, besides the dot.
const atext = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"

// checkEmail returns "" if s is an address Send takes, else the rule it
// breaks. The rules are lifecycle's for admin_email, checked again here
// because this is where the address goes into a mail header: a bare
// dot-atom address, ASCII only, so nothing in it can end a header line,
// start another, or name a second recipient.
func checkEmail(s string) string {
	if len(s) > maxEmailLen {
		return emailRule + ": it is longer than 254 bytes"
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' {
			return emailRule + ": it holds a line break (CR or LF)"
		}
		if s[i] <= ' ' || s[i] >= 0x7f {
			return emailRule + ": it holds white space, a control character or non-ASCII"
		}
	}
	if strings.ContainsAny(s, "<>") {
		return emailRule + ": give the address alone, without a display name or angle brackets"
	}
	if strings.ContainsAny(s, ",;") {
		return emailRule + ": give one address only"
	}
	if strings.Count(s, "@") != 1 {
		return emailRule + ": it must have exactly one @"
	}
	local, domain, _ := strings.Cut(s, "@")
	switch {
	case local == "" || len(local) > maxLocalLen:
		return emailRule + ": the part before @ must be 1 to 64 bytes"
	case strings.Trim(local, atext+".") != "":
		return emailRule + ": the part before @ holds a character not allowed unquoted"
	case local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, ".."):
		return emailRule + ": the part before @ has a misplaced dot"
	}
	if rule := checkDomain(domain); rule != "" {
		return emailRule + ": " + rule
	}
	// The rules above admit only what net/mail reads back unchanged as
	// one bare address; check that too.
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return emailRule
	}
	return ""
}

func checkDomain(d string) string {
	if d == "" || len(d) > 253 {
		return "the domain must be 1 to 253 bytes"
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "the domain must have a dot"
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' ||
			strings.Trim(l, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
			return "each label of the domain must be 1 to 63 letters, digits or inner hyphens"
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "the domain's last label must not be all digits"
	}
	return ""
}

// checkName returns "" if s can be a tenant's name in an invitation, else
// the rule it breaks. The name goes MIME-encoded into the Subject and
// quoted-printable into the body; refusing line breaks and control
// characters keeps it from ever shaping the message, encoded or not.
func checkName(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > maxNameLen:
		return "must be at most " + strconv.Itoa(maxNameLen) + " bytes long"
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	case strings.TrimSpace(s) != s:
		return "must not start or end with white space"
	}
	for _, r := range s {
		if r == '\r' || r == '\n' {
			return "must not contain a line break (CR or LF)"
		}
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			return "must not contain control or format characters (found " + strconv.QuoteRuneToASCII(r) + ")"
		}
	}
	return ""
}
