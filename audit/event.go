package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"
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
// The canonical details and the source IP as written to the database are
// parts of canon.
type prepared struct {
	log                                string
	at                                 time.Time
	actor, action, resource, userAgent string
	outcome                            Outcome
	ip                                 netip.Addr
	canon                              []byte
	prevAt, seqAt                      int
	detailsAt, detailsEnd              int // canon[detailsAt:detailsEnd] is the canonical details
	ipAt, ipEnd                        int // canon[ipAt:ipEnd] is ipString(ip), but for an IP with a zone
}

// details returns the canonical JSON of p's details (a part of p.canon).
func (p *prepared) details() []byte { return p.canon[p.detailsAt:p.detailsEnd:p.detailsEnd] }

// ipText returns p's source IP as written to the database (a part of
// p.canon but for an address with a zone, which only a stored entry can
// have).
func (p *prepared) ipText() []byte {
	if p.ip.Zone() != "" {
		return []byte(ipString(p.ip))
	}
	return p.canon[p.ipAt:p.ipEnd:p.ipEnd]
}

// prepare validates ev and makes its canonical encoding for log. now is
// the time of an event without one.
func prepare(log string, ev Event, now time.Time) (*prepared, error) {
	p := new(prepared)
	if err := p.prepare(log, ev, now); err != nil {
		return nil, err
	}
	return p, nil
}

// prepare is prepare into p.
func (p *prepared) prepare(log string, ev Event, now time.Time) error {
	var errs []error
	bad := func(field, rule string) { errs = append(errs, &FieldError{Field: field, Rule: rule}) }
	text := func(field, s string, min, max int) {
		switch {
		case len(s) >= min && len(s) <= max && plainText(s):
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
	*p = prepared{
		log: log, at: at, actor: ev.Actor, action: ev.Action, resource: ev.Resource, userAgent: ev.UserAgent,
		outcome: ev.Outcome, ip: ev.SourceIP,
	}
	// The encoding is made in a scratch buffer, and copied once to one of
	// its exact size.
	s := scratchPool.Get().(*scratch)
	defer s.put()
	b := p.encodeHead(s.buf[:0])
	p.detailsAt = len(b)
	b, err := appendDetails(b, ev.Details, s)
	s.buf = b
	if err != nil {
		bad("Details", err.Error())
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	p.detailsEnd = len(b)
	b = p.encodeTail(b)
	s.buf = b
	p.canon = bytes.Clone(b)
	return nil
}

// scratch is the buffers prepare encodes with.
type scratch struct {
	buf []byte
	ms  []member // of detailsEncoder
}

var scratchPool = sync.Pool{New: func() any { return &scratch{buf: make([]byte, 0, 1024), ms: make([]member, 0, 16)} }}

// put returns s to scratchPool, unless it grew large.
func (s *scratch) put() {
	if cap(s.buf) > 64<<10 || cap(s.ms) > 1024 {
		return
	}
	clear(s.ms[:cap(s.ms)]) // holds no values of the caller's
	s.buf, s.ms = s.buf[:0], s.ms[:0]
	scratchPool.Put(s)
}

// plainText reports whether s is printable ASCII only: valid UTF-8
// without control characters, and nothing RFC 8785 escapes but " and \.
func plainText(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// encodeHead and encodeTail make p.canon around the canonical details:
// the canonical JSON (RFC 8785) of the entry, in three pieces around the
// previous MAC and the sequence number. The keys are ASCII, so their
// order is byte order; strings are written as RFC 8785 writes them
// (canonicalString), and the test suite checks the result against
// github.com/gowebpki/jcs byte for byte.
func (p *prepared) encodeHead(b []byte) []byte {
	b = append(b, `{"action":`...)
	b = canonicalString(b, p.action)
	b = append(b, `,"actor":`...)
	b = canonicalString(b, p.actor)
	return append(b, `,"details":`...)
}

func (p *prepared) encodeTail(b []byte) []byte {
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
	if p.ip.Zone() == "" {
		// An address without a zone is digits, hex digits, '.' and ':'.
		b = append(b, '"')
		p.ipAt = len(b)
		b = p.ip.AppendTo(b)
		p.ipEnd = len(b)
		b = append(b, '"')
	} else {
		b = canonicalString(b, ipString(p.ip))
	}
	b = append(b, `,"time":"`...)
	b = appendTime(b, p.at)
	b = append(b, `","type":"entry","user_agent":`...)
	b = canonicalString(b, p.userAgent)
	return append(b, `,"v":1}`...)
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
		Outcome: p.outcome, Details: json.RawMessage(p.details()), SourceIP: p.ip, UserAgent: p.userAgent,
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
		outcome: e.Outcome, ip: e.SourceIP,
	}
	b := p.encodeHead(make([]byte, 0, 256+len(p.actor)+len(p.action)+len(p.resource)+len(p.userAgent)+len(details)+len(p.log)))
	p.detailsAt = len(b)
	b = append(b, details...)
	p.detailsEnd = len(b)
	p.canon = p.encodeTail(b)
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
func canonicalDetails(details any) ([]byte, error) { return appendDetails(nil, details, nil) }

// appendDetails appends the RFC 8785 form of details (see Event.Details)
// to dst, or returns why it cannot be kept. s, if not nil, is scratch
// space for the encoder.
func appendDetails(dst []byte, details any, s *scratch) ([]byte, error) {
	var raw []byte
	switch d := details.(type) {
	case nil:
		return append(dst, "{}"...), nil
	case json.RawMessage:
		raw = d
	case []byte:
		raw = d
	default:
		if c, ok, err := appendFastDetails(dst, d, s); ok {
			if err != nil {
				return dst, err
			}
			if err := checkDetails(c[len(dst):]); err != nil {
				return dst, err
			}
			return c, nil
		}
		var err error
		if raw, err = json.Marshal(d); err != nil {
			return dst, fmt.Errorf("must marshal to a JSON object: %v", err)
		}
	}
	if len(raw) > 4*MaxDetails {
		return dst, fmt.Errorf("must be at most %d bytes in canonical JSON", MaxDetails)
	}
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 || raw[0] != '{' {
		return dst, errors.New("must be a JSON object")
	}
	c, err := jcs.Transform(raw)
	if err != nil {
		return dst, fmt.Errorf("must be valid JSON (RFC 8785 canonical form: %s)", truncate(err.Error(), 80))
	}
	if len(c) > MaxDetails {
		return dst, fmt.Errorf("must be at most %d bytes in canonical JSON, not %d", MaxDetails, len(c))
	}
	if err := checkDetails(c); err != nil {
		return dst, err
	}
	if dst == nil {
		return c, nil
	}
	return append(dst, c...), nil
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

func formatTime(t time.Time) string {
	var b [len(timeLayout)]byte
	return string(appendTime(b[:0], t))
}

// appendTime appends t in UTC as timeLayout writes it (with a shortcut for
// the years 0 to 9999).
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	y, mo, d := t.Date()
	if y < 0 || y > 9999 {
		return t.AppendFormat(b, timeLayout)
	}
	h, mi, s := t.Clock()
	us := t.Nanosecond() / 1000
	b = append(b, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+mo/10), byte('0'+mo%10), '-', byte('0'+d/10), byte('0'+d%10), 'T',
		byte('0'+h/10), byte('0'+h%10), ':', byte('0'+mi/10), byte('0'+mi%10), ':', byte('0'+s/10), byte('0'+s%10), '.')
	return append(b, byte('0'+us/100000), byte('0'+us/10000%10), byte('0'+us/1000%10), byte('0'+us/100%10), byte('0'+us/10%10), byte('0'+us%10), 'Z')
}

func ipString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
