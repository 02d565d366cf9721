package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// Outcome is how the audited action ended.
type Outcome string

const (
	// OutcomeSuccess: the action was done.
	OutcomeSuccess Outcome = "success"
	// OutcomeFailure: the action was tried and failed.
	OutcomeFailure Outcome = "failure"
	// OutcomeDenied: the action was refused (authentication, authorization,
	// quota).
	OutcomeDenied Outcome = "denied"
)

// Valid reports whether o is one of the outcomes above.
func (o Outcome) Valid() bool {
	return o == OutcomeSuccess || o == OutcomeFailure || o == OutcomeDenied
}

// Limits on the fields of an [Event]: sizes in bytes, and the nesting of
// Details.
const (
	MaxActor     = 256
	MaxAction    = 128
	MaxResource  = 1024
	MaxUserAgent = 512
	// MaxDetails bounds the canonical JSON of Details.
	MaxDetails = 16 << 10
	// MaxDetailsDepth bounds the nesting of objects and arrays in Details.
	MaxDetailsDepth = 32
)

// maxSeq is the largest sequence number: RFC 8785 writes numbers as
// IEEE 754 doubles, which hold integers exactly up to 2^53-1.
const maxSeq = 1<<53 - 1

// Event is what happened, as a caller records it. The log adds the
// sequence number, the tenant and the chain's MACs to make an [Entry].
type Event struct {
	// Time is when it happened; the zero time means now. It is kept to
	// the microsecond, in UTC, between the years 1970 and 9999.
	Time time.Time
	// Actor is who did it (a user, a service): 1 to MaxActor bytes.
	Actor string
	// Action is what was done ("requirement.update"): 1 to MaxAction
	// bytes.
	Action string
	// Resource is what it was done to (may be empty): at most MaxResource
	// bytes.
	Resource string
	// Outcome is how it ended: required.
	Outcome Outcome
	// Details is anything more, as a JSON object: nil (an empty object),
	// a json.RawMessage or []byte holding a JSON object, or a value that
	// encoding/json marshals to one (a map, a struct). It is kept in the
	// canonical form of RFC 8785, at most MaxDetails bytes and
	// MaxDetailsDepth levels deep; duplicate keys, lone surrogates, NUL
	// characters and numbers out of the range of a double are refused.
	Details any
	// SourceIP is the client's address; the zero Addr means unknown.
	// Zones (fe80::1%eth0) are refused.
	SourceIP netip.Addr
	// UserAgent is the client's user agent (may be empty): at most
	// MaxUserAgent bytes.
	UserAgent string
}

// Entry is one recorded entry of an audit log.
type Entry struct {
	// Log is the tenant's ID, or "platform" for the platform's trail.
	Log string `json:"log"`
	// Seq is the entry's sequence number: 1 for the first entry, and one
	// more for each entry after it, with no gaps.
	Seq      int64     `json:"seq"`
	Time     time.Time `json:"time"`
	Actor    string    `json:"actor"`
	Action   string    `json:"action"`
	Resource string    `json:"resource"`
	Outcome  Outcome   `json:"outcome"`
	// Details is the canonical JSON (RFC 8785) of the event's details.
	Details   json.RawMessage `json:"details"`
	SourceIP  netip.Addr      `json:"source_ip"`
	UserAgent string          `json:"user_agent"`
	// PrevMAC is the MAC of the entry before (empty for the first), and
	// MAC this entry's: the log's audit key over the entry's canonical
	// encoding, which includes PrevMAC.
	PrevMAC []byte `json:"prev_mac"`
	MAC     []byte `json:"mac"`
}

// prepared is a validated event with its canonical encoding, but for the
// sequence number and the previous MAC, which the batch that writes it
// fills in: canon[:i] + base64(prev MAC) + canon[i:j] + seq + canon[j:].
type prepared struct {
	log                                string
	at                                 time.Time
	actor, action, resource, userAgent string
	outcome                            Outcome
	details                            []byte // canonical
	ip                                 netip.Addr
	detailsText, ipText                string // as written to the database
	canon                              []byte
	prevAt, seqAt                      int
}

// prepare validates ev and makes its canonical encoding for log. now is
// the time of an event without one.
func prepare(log string, ev Event, now time.Time) (*prepared, error) {
	var errs []error
	bad := func(field, rule string) { errs = append(errs, &FieldError{Field: field, Rule: rule}) }
	text := func(field, s string, min, max int) {
		switch {
		case len(s) < min || len(s) > max:
			if min > 0 {
				bad(field, fmt.Sprintf("must be %d to %d bytes, not %d", min, max, len(s)))
			} else {
				bad(field, fmt.Sprintf("must be at most %d bytes, not %d", max, len(s)))
			}
		case !utf8.ValidString(s):
			bad(field, "must be valid UTF-8")
		case hasControl(s):
			bad(field, "must not contain control characters")
		}
	}
	text("Actor", ev.Actor, 1, MaxActor)
	text("Action", ev.Action, 1, MaxAction)
	text("Resource", ev.Resource, 0, MaxResource)
	text("UserAgent", ev.UserAgent, 0, MaxUserAgent)
	if !ev.Outcome.Valid() {
		bad("Outcome", fmt.Sprintf("must be %q, %q or %q", OutcomeSuccess, OutcomeFailure, OutcomeDenied))
	}
	at := ev.Time
	if at.IsZero() {
		at = now
	}
	at = at.UTC().Truncate(time.Microsecond)
	if y := at.Year(); y < 1970 || y > 9999 {
		bad("Time", "must be between the years 1970 and 9999")
	}
	if ev.SourceIP.IsValid() && ev.SourceIP.Zone() != "" {
		bad("SourceIP", "must not have a zone")
	}
	details, err := canonicalDetails(ev.Details)
	if err != nil {
		bad("Details", err.Error())
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	p := &prepared{
		log: log, at: at, actor: ev.Actor, action: ev.Action, resource: ev.Resource, userAgent: ev.UserAgent,
		outcome: ev.Outcome, details: details, ip: ev.SourceIP,
	}
	p.encode()
	return p, nil
}

// encode makes p.canon: the canonical JSON (RFC 8785) of the entry, in
// three pieces around the previous MAC and the sequence number. The keys
// are ASCII, so their order is byte order; strings are written as RFC
// 8785 writes them (canonicalString), and the test suite checks the
// result against github.com/gowebpki/jcs byte for byte.
func (p *prepared) encode() {
	p.detailsText, p.ipText = string(p.details), ipString(p.ip)
	b := make([]byte, 0, 192+len(p.actor)+len(p.action)+len(p.resource)+len(p.userAgent)+len(p.details)+len(p.log))
	b = append(b, `{"action":`...)
	b = canonicalString(b, p.action)
	b = append(b, `,"actor":`...)
	b = canonicalString(b, p.actor)
	b = append(b, `,"details":`...)
	b = append(b, p.details...)
	b = append(b, `,"log":`...)
	b = canonicalString(b, p.log)
	b = append(b, `,"outcome":`...)
	b = canonicalString(b, string(p.outcome))
	b = append(b, `,"prev_mac":"`...)
	p.prevAt = len(b)
	b = append(b, `","resource":`...)
	b = canonicalString(b, p.resource)
	b = append(b, `,"seq":`...)
	p.seqAt = len(b)
	b = append(b, `,"source_ip":`...)
	b = canonicalString(b, p.ipText)
	b = append(b, `,"time":`...)
	b = canonicalString(b, formatTime(p.at))
	b = append(b, `,"type":"entry","user_agent":`...)
	b = canonicalString(b, p.userAgent)
	b = append(b, `,"v":1}`...)
	p.canon = b
}

// macInput appends to dst the canonical encoding of p as entry seq after
// an entry whose MAC is prev.
func (p *prepared) macInput(dst []byte, seq int64, prev []byte) []byte {
	dst = append(dst, p.canon[:p.prevAt]...)
	dst = appendBase64(dst, prev)
	dst = append(dst, p.canon[p.prevAt:p.seqAt]...)
	dst = appendInt(dst, seq)
	return append(dst, p.canon[p.seqAt:]...)
}

// entry returns p as entry seq of log.
func (p *prepared) entry(log string, seq int64, prev, mac []byte) Entry {
	return Entry{
		Log: log, Seq: seq, Time: p.at, Actor: p.actor, Action: p.action, Resource: p.resource,
		Outcome: p.outcome, Details: json.RawMessage(p.details), SourceIP: p.ip, UserAgent: p.userAgent,
		PrevMAC: prev, MAC: mac,
	}
}

// prepareStored rebuilds the canonical encoding of a stored (or exported)
// entry, to verify its MAC. Its details are canonicalized again (jsonb
// keeps them in a form of its own).
func prepareStored(e *Entry) (*prepared, error) {
	if err := exactNumbers(e.Details); err != nil {
		return nil, fmt.Errorf("details: %w", err)
	}
	details, err := canonicalDetails(json.RawMessage(e.Details))
	if err != nil {
		return nil, fmt.Errorf("details: %w", err)
	}
	e.Details = details
	p := &prepared{
		log: e.Log, at: e.Time.UTC(), actor: e.Actor, action: e.Action, resource: e.Resource, userAgent: e.UserAgent,
		outcome: e.Outcome, details: details, ip: e.SourceIP,
	}
	p.encode()
	return p, nil
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// canonicalDetails returns the RFC 8785 form of details (see
// Event.Details), or why it cannot be kept.
func canonicalDetails(details any) ([]byte, error) {
	var raw []byte
	switch d := details.(type) {
	case nil:
		return []byte("{}"), nil
	case json.RawMessage:
		raw = d
	case []byte:
		raw = d
	default:
		if c, ok, err := fastDetails(d); ok {
			if err != nil {
				return nil, err
			}
			if err := checkDetails(c); err != nil {
				return nil, err
			}
			return c, nil
		}
		var err error
		if raw, err = json.Marshal(d); err != nil {
			return nil, fmt.Errorf("must marshal to a JSON object: %v", err)
		}
	}
	if len(raw) > 4*MaxDetails {
		return nil, fmt.Errorf("must be at most %d bytes in canonical JSON", MaxDetails)
	}
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 || raw[0] != '{' {
		return nil, errors.New("must be a JSON object")
	}
	c, err := jcs.Transform(raw)
	if err != nil {
		return nil, fmt.Errorf("must be valid JSON (RFC 8785 canonical form: %s)", truncate(err.Error(), 80))
	}
	if len(c) > MaxDetails {
		return nil, fmt.Errorf("must be at most %d bytes in canonical JSON, not %d", MaxDetails, len(c))
	}
	if err := checkDetails(c); err != nil {
		return nil, err
	}
	return c, nil
}

// checkDetails checks canonical JSON for what PostgreSQL's jsonb or the
// limits refuse: nesting deeper than MaxDetailsDepth, and the NUL
// character (\u0000), which jsonb cannot hold.
func checkDetails(c []byte) error {
	depth := 0
	for i := 0; i < len(c); i++ {
		switch c[i] {
		case '{', '[':
			if depth++; depth > MaxDetailsDepth {
				return fmt.Errorf("must be at most %d levels deep", MaxDetailsDepth)
			}
		case '}', ']':
			depth--
		case '"':
			for i++; i < len(c) && c[i] != '"'; i++ {
				if c[i] == '\\' {
					i++
					if c[i] == 'u' && string(c[i+1:i+5]) == "0000" {
						return errors.New(`must not contain the NUL character (\u0000)`)
					}
				}
			}
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// timeLayout is the form of every time in the canonical encoding: UTC,
// microseconds, always six digits.
const timeLayout = "2006-01-02T15:04:05.000000Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func ipString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
