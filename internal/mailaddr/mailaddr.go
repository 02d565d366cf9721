// Package mailaddr holds the one set of rules tenancy applies to e-mail
// addresses it takes (a provisioning request's admin_email) and puts into
// mail headers (lifecycle/invite).
package mailaddr

import (
	"net/mail"
	"strings"
)

const (
	// MaxLen is the longest address: RFC 5321's path limit less the
	// angle brackets.
	MaxLen      = 254
	maxLocalLen = 64 // RFC 5321 local-part limit
)

// Rule is the rule every address meets; Check's answers start with it.
const Rule = "must be a bare e-mail address (local@example.com: ASCII, no display name, comment, quotes or IP literal, at most 254 bytes)"

// atext is the set of characters of an RFC 5322 dot-atom, besides the dot.
const atext = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"

// Check returns "" if s is a bare e-mail address, else Rule followed by
// the part of it s breaks: a dot-atom address, ASCII only, one @, a
// domain of LDH labels, so that nothing in it can end a header line,
// start another, or name a second recipient, and net/mail reads it back
// unchanged.
func Check(s string) string {
	if len(s) > MaxLen {
		return Rule + ": it is longer than 254 bytes"
	}
	if strings.ContainsAny(s, "\r\n") {
		return Rule + ": it holds a line break (CR or LF)"
	}
	if strings.ContainsAny(s, "<>") {
		return Rule + ": give the address alone, without a display name or angle brackets"
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return Rule + ": it holds white space, a control character or non-ASCII"
		}
	}
	if strings.ContainsAny(s, ",;") {
		return Rule + ": give one address only"
	}
	if strings.Count(s, "@") != 1 {
		return Rule + ": it must have exactly one @"
	}
	local, domain, _ := strings.Cut(s, "@")
	switch {
	case local == "" || len(local) > maxLocalLen:
		return Rule + ": the part before @ must be 1 to 64 bytes"
	case strings.Trim(local, atext+".") != "":
		return Rule + ": the part before @ holds a character not allowed unquoted"
	case local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, ".."):
		return Rule + ": the part before @ has a misplaced dot"
	}
	if rule := CheckDomain(domain); rule != "" {
		return Rule + ": " + rule
	}
	// The rules above admit only what net/mail reads back unchanged as
	// one bare address; check that too.
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return Rule
	}
	return ""
}

// CheckDomain returns "" if d is a DNS name of letters, digits and inner
// hyphens with at least one dot and a last label that is not all digits,
// else the rule it breaks.
func CheckDomain(d string) string {
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
