package invite

import (
	"github.com/rtmx-ai/tenancy/internal/mailaddr"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	maxNameLen = 200 // as lifecycle's request
)

// checkEmail returns "" if s is an address Send takes, else the rule it
// breaks: lifecycle's rules for admin_email (internal/mailaddr), checked
// again here because this is where the address goes into a mail header.
func checkEmail(s string) string { return mailaddr.Check(s) }

// checkDomain returns "" if d is a DNS name (internal/mailaddr).
func checkDomain(d string) string { return mailaddr.CheckDomain(d) }

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
