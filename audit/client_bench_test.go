package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
)

// hmacMacer is a macer of HMAC-SHA256 made afresh for each tag, as a
// keys.MAC does: for benchmarks of the client's work alone.
type hmacMacer []byte

func (k hmacMacer) ComputeMAC(data []byte) ([]byte, error) {
	m := hmac.New(sha256.New, k)
	m.Write(data)
	return m.Sum(nil), nil
}

func (k hmacMacer) VerifyMAC(tag, data []byte) error { return nil }

// BenchmarkClient measures the client's work per entry of a batch of
// 1000, without a database: prepare (validation, canonical JSON), the
// chain's MACs (HMAC-SHA256 made afresh per tag, as keys.MAC does) and
// the packed arguments.
func BenchmarkClient(b *testing.B) {
	const n = 1000
	evs := make([]Event, n)
	for i := range evs {
		evs[i] = Event{
			Actor: "user:alice@acme.example", Action: "requirement.update", Resource: fmt.Sprintf("requirements/REQ-DEPLOY-%03d", i%1000),
			Outcome: OutcomeSuccess, Details: map[string]any{"field": "status", "from": "MISSING", "to": "COMPLETE", "request_id": fmt.Sprintf("%016x", i)},
			SourceIP: netip.MustParseAddr("198.51.100.7"), UserAgent: "rtmx-cli/0.9 (linux; amd64)",
		}
	}
	mac := hmacMacer("0123456789abcdef0123456789abcdef")
	b.Run("prepare", func(b *testing.B) {
		b.ReportAllocs()
		t := time.Now()
		for i := range b.N {
			if _, err := prepare("tenant-1", evs[i%n], t); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("batch", func(b *testing.B) {
		b.ReportAllocs()
		t := time.Now()
		items := make([]*prepared, n)
		head, headMAC := int64(0), []byte(nil)
		for done := 0; done < b.N; done += n {
			k := min(n, b.N-done)
			for i := range k {
				var err error
				if items[i], err = prepare("tenant-1", evs[i], t); err != nil {
					b.Fatal(err)
				}
			}
			bt, err := chain(items[:k], head, headMAC, mac)
			if err != nil {
				b.Fatal(err)
			}
			_ = bt.appendArgs()
			head, headMAC = bt.last()
		}
	})
}

// TestAppendTime checks the shortcut of appendTime against time.Format.
func TestAppendTime(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	lo, hi := time.Date(-2, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), time.Date(10002, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	for i := range 100000 {
		at := time.Unix(lo+r.Int64N(hi-lo), r.Int64N(1e9))
		if i%3 == 0 {
			at = at.In(time.FixedZone("x", 3600*r.IntN(24)-12*3600))
		}
		if got, want := formatTime(at), at.UTC().Format(timeLayout); got != want {
			t.Fatalf("formatTime(%v) = %q, want %q", at, got, want)
		}
	}
}

// TestCompareUTF16 checks the shortcut of compareUTF16 against the order
// of UTF-16 code units.
func TestCompareUTF16(t *testing.T) {
	alphabet := []string{"a", "b", "A", "é", "\ue000", "\uffff", "\U0001F600", "\U00010000", "€", "\x00", "z", "\u0080"}
	r := rand.New(rand.NewPCG(5, 6))
	word := func() string {
		var sb strings.Builder
		for range r.IntN(4) {
			sb.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		return sb.String()
	}
	for range 100000 {
		a, b := word(), word()
		want := slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
		if got := compareUTF16(a, b); got != want {
			t.Fatalf("compareUTF16(%q, %q) = %d, want %d", a, b, got, want)
		}
	}
}
