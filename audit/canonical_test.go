package audit_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gowebpki/jcs"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
)

// reference is the canonical encoding of an entry as RFC 8785 defines it,
// made with github.com/gowebpki/jcs from encoding/json's output.
func reference(t testing.TB, log string, ev audit.Event, at time.Time, seq int64, prev []byte) []byte {
	t.Helper()
	details, err := audit.CanonicalDetails(ev.Details)
	require.NoError(t, err)
	ip := ""
	if ev.SourceIP.IsValid() {
		ip = ev.SourceIP.String()
	}
	m := map[string]any{
		"v": 1, "type": "entry", "log": log, "seq": seq, "time": at.UTC().Format("2006-01-02T15:04:05.000000Z"),
		"actor": ev.Actor, "action": ev.Action, "resource": ev.Resource, "outcome": string(ev.Outcome),
		"details": json.RawMessage(details), "source_ip": ip, "user_agent": ev.UserAgent,
		"prev_mac": base64.StdEncoding.EncodeToString(prev),
	}
	b, err := json.Marshal(m)
	require.NoError(t, err)
	c, err := jcs.Transform(b)
	require.NoError(t, err)
	return c
}

func checkCanonical(t testing.TB, log string, ev audit.Event, seq int64, prev []byte) {
	t.Helper()
	got, at, err := audit.CanonicalEntry(log, ev, seq, prev)
	if err != nil {
		require.ErrorIs(t, err, audit.ErrInvalidEvent)
		return
	}
	require.Equal(t, string(reference(t, log, ev, at, seq, prev)), string(got))
}

// TestCanonicalEncodingIsRFC8785 checks the package's encoding of entries
// against jcs, byte for byte, on awkward fields.
func TestCanonicalEncodingIsRFC8785(t *testing.T) {
	prev := []byte("\x01\x02previous mac with + and / in base64 \xfb\xff")
	for _, ev := range []audit.Event{
		{Actor: "alice", Action: "login", Outcome: audit.OutcomeSuccess},
		{Actor: `quote " and \ backslash`, Action: "a/b<c>&d", Resource: "é 日本 \u2028 \U0001F600 \x7e", Outcome: audit.OutcomeDenied,
			SourceIP: netip.MustParseAddr("::ffff:192.0.2.1"), UserAgent: "Mozilla/5.0 (X11; Linux)"},
		{Actor: "x", Action: "y", Outcome: audit.OutcomeFailure, Time: time.Date(2001, 2, 3, 4, 5, 6, 789, time.FixedZone("x", 3600)),
			Details: map[string]any{"z": []any{1, 2.5, math.Copysign(0, -1), 1e21, 1e-7, "\x00\x1f\b\t\n\f\r\"\\", nil, true}, "a": map[string]any{"é": "\u20ac", "e": 1}, "\u0080": 1}},
		{Actor: "x", Action: "y", Outcome: audit.OutcomeSuccess, Details: json.RawMessage(` {"b" : 1.000, "a":[ ], "c":"\ud83d\ude00\u00e9\/"} `)},
		{Actor: "x", Action: "y", Outcome: audit.OutcomeSuccess, SourceIP: netip.MustParseAddr("2001:db8:0:0:1:0:0:1")},
	} {
		for _, seq := range []int64{1, 9, 10, 123456789, 1<<53 - 1} {
			checkCanonical(t, "acme", ev, seq, prev)
			checkCanonical(t, "platform", ev, seq, nil)
		}
	}
}

func FuzzCanonicalEntry(f *testing.F) {
	f.Add("alice", "login", "REQ-1", "curl/8", []byte(`{"a":1}`), int64(1), []byte("mac"))
	f.Add("é\"\\", "a\u2028", "", "", []byte(`{"x":[1,2,{"y":"\u0001"}],"b":1e400}`), int64(99), []byte{})
	f.Add("a", "b", "c", "d", []byte(`{"a":"\ud800"}`), int64(7), []byte{0xff})
	f.Fuzz(func(t *testing.T, actor, action, resource, ua string, details []byte, seq int64, prev []byte) {
		if seq < 1 || seq > 1<<53-1 {
			return
		}
		ev := audit.Event{Actor: actor, Action: action, Resource: resource, UserAgent: ua, Outcome: audit.OutcomeSuccess, Details: json.RawMessage(details)}
		checkCanonical(t, "acme", ev, seq, prev)
	})
}

// TestEventValidation names the field of every rule an event breaks.
func TestEventValidation(t *testing.T) {
	ok := audit.Event{Actor: "alice", Action: "login", Outcome: audit.OutcomeSuccess}
	for _, c := range []struct {
		field string
		edit  func(*audit.Event)
	}{
		{"Actor", func(e *audit.Event) { e.Actor = "" }},
		{"Actor", func(e *audit.Event) { e.Actor = strings.Repeat("a", audit.MaxActor+1) }},
		{"Actor", func(e *audit.Event) { e.Actor = "a\nb" }},
		{"Actor", func(e *audit.Event) { e.Actor = "a\x00" }},
		{"Actor", func(e *audit.Event) { e.Actor = "\xff" }},
		{"Action", func(e *audit.Event) { e.Action = "" }},
		{"Action", func(e *audit.Event) { e.Action = strings.Repeat("a", audit.MaxAction+1) }},
		{"Resource", func(e *audit.Event) { e.Resource = strings.Repeat("r", audit.MaxResource+1) }},
		{"Resource", func(e *audit.Event) { e.Resource = "\x1b[31m" }},
		{"UserAgent", func(e *audit.Event) { e.UserAgent = strings.Repeat("u", audit.MaxUserAgent+1) }},
		{"UserAgent", func(e *audit.Event) { e.UserAgent = "x\x7f" }},
		{"Outcome", func(e *audit.Event) { e.Outcome = "" }},
		{"Outcome", func(e *audit.Event) { e.Outcome = "ok" }},
		{"Time", func(e *audit.Event) { e.Time = time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC) }},
		{"Time", func(e *audit.Event) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"SourceIP", func(e *audit.Event) { e.SourceIP = netip.MustParseAddr("fe80::1%eth0") }},
		{"Details", func(e *audit.Event) { e.Details = []int{1} }},
		{"Details", func(e *audit.Event) { e.Details = json.RawMessage(`"a string"`) }},
		{"Details", func(e *audit.Event) { e.Details = json.RawMessage(`{"a":1,"a":2}`) }},
		{"Details", func(e *audit.Event) { e.Details = json.RawMessage(`{"a":"\ud800"}`) }},
		{"Details", func(e *audit.Event) { e.Details = json.RawMessage(`{"a":"\u0000"}`) }},
		{"Details", func(e *audit.Event) { e.Details = json.RawMessage(`{"a":1e400}`) }},
		{"Details", func(e *audit.Event) { e.Details = json.RawMessage(`{"a":1} x`) }},
		{"Details", func(e *audit.Event) {
			e.Details = json.RawMessage(`{"a":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`)
		}},
		{"Details", func(e *audit.Event) { e.Details = map[string]string{"a": strings.Repeat("x", audit.MaxDetails)} }},
		{"Details", func(e *audit.Event) { e.Details = map[string]any{"f": func() {}} }},
	} {
		ev := ok
		c.edit(&ev)
		_, _, err := audit.CanonicalEntry("acme", ev, 1, nil)
		require.ErrorIs(t, err, audit.ErrInvalidEvent, c.field)
		var fe *audit.FieldError
		require.True(t, errors.As(err, &fe), "%v", err)
		require.Equal(t, c.field, fe.Field, "%v", err)
		require.True(t, strings.HasPrefix(err.Error(), "audit: invalid event: field "+c.field+": "), err.Error())
	}
	// Several fields at once: each is named.
	_, _, err := audit.CanonicalEntry("acme", audit.Event{}, 1, nil)
	for _, f := range []string{"Actor", "Action", "Outcome"} {
		require.Contains(t, err.Error(), "field "+f+":")
	}
	// What stays valid: an escaped NUL-looking text, a string "\\u0000".
	_, _, err = audit.CanonicalEntry("acme", audit.Event{Actor: "a", Action: "b", Outcome: audit.OutcomeSuccess,
		Details: json.RawMessage(`{"a":"\\u0000","b":"\u0001"}`)}, 1, nil)
	require.NoError(t, err)
}

// slowDetails is the reference form of details: encoding/json, then jcs.
func slowDetails(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jcs.Transform(b)
}

// TestFastDetailsIsJCS checks the encoder of Go values against
// encoding/json and jcs on random nested values with awkward keys,
// strings and numbers.
func TestFastDetailsIsJCS(t *testing.T) {
	keys := []string{"", "a", "b", "aa", "A", "é", "\u00e9", "\ue000", "\uffff", "\U0001F600", "\U00010000", "\xff", "a\xffb", "\xfe", "€", "\x00", "\n", `"`, "\\", "\u2028", "z"}
	strs := append([]string{"plain", "\x7f", "\x01\x1f", "\xed\xa0\x80", "日本語", strings.Repeat("x", 100)}, keys...)
	nums := []any{0.0, math.Copysign(0, -1), 1.0, -1.5, 0.1, 1e21, 1e20, 1e-6, 1e-7, 5e-324, math.MaxFloat64, 123456789.123456789,
		int(1 << 53), int64(1<<53 + 1), int64(-1 << 62), uint64(1<<64 - 1), int32(-7), uint(3), uint32(9)}
	r := rand.New(rand.NewPCG(1, 2))
	var gen func(depth int) any
	gen = func(depth int) any {
		switch k := r.IntN(10); {
		case k < 2 && depth < 4:
			m := map[string]any{}
			for range r.IntN(6) {
				m[keys[r.IntN(len(keys))]] = gen(depth + 1)
			}
			return m
		case k < 3 && depth < 4:
			a := make([]any, r.IntN(4))
			for i := range a {
				a[i] = gen(depth + 1)
			}
			return a
		case k < 4:
			return map[string]string{keys[r.IntN(len(keys))]: strs[r.IntN(len(strs))], "k": "v"}
		case k < 5:
			return []string{strs[r.IntN(len(strs))]}
		case k < 6:
			return nums[r.IntN(len(nums))]
		case k < 7:
			return r.IntN(2) == 0
		case k < 8:
			return nil
		default:
			return strs[r.IntN(len(strs))]
		}
	}
	fast := 0
	for range 20000 {
		m := map[string]any{}
		for range r.IntN(8) {
			m[keys[r.IntN(len(keys))]] = gen(0)
		}
		got, ok, err := audit.FastDetails(m)
		want, werr := slowDetails(m)
		if !ok {
			continue
		}
		fast++
		if werr != nil {
			require.Error(t, err, "%#v", m)
			continue
		}
		require.NoError(t, err, "%#v", m)
		require.Equal(t, string(want), string(got), "%#v", m)
		if fast%16 == 0 {
			// The same details in an entry (encoded in prepare's scratch
			// buffers).
			checkCanonical(t, "acme", audit.Event{Actor: "a", Action: "b", Outcome: audit.OutcomeSuccess, Details: m}, 1, nil)
		}
	}
	require.Greater(t, fast, 19000, "the fast path took the usual types")
	// Duplicates after the coercion of invalid UTF-8, as jcs refuses them.
	_, ok, err := audit.FastDetails(map[string]any{"\xff": 1, "\xfe": 2})
	require.True(t, ok)
	require.Error(t, err)
	// NaN and infinities.
	_, _, err = audit.FastDetails(map[string]any{"x": math.NaN()})
	require.Error(t, err)
	// Other types are left to encoding/json and jcs.
	for _, v := range []any{map[string]any{"s": struct{ A int }{1}}, map[string]any{"f": float32(0.1)}, map[string]any{"n": json.Number("1")}, map[string]int{"a": 1}} {
		_, ok, _ := audit.FastDetails(v)
		require.False(t, ok, "%#v", v)
	}
}
