package audit_test

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
)

// TestExportVerifiesOffline exports a log, closes every connection, and
// verifies the export with the tenant's audit key alone; then each way of
// changing the export is found.
func TestExportVerifiesOffline(t *testing.T) {
	e := newEnv(t, "standard")
	_, ctx := e.newTenant(t, "exp")
	e.appendN(t, ctx, 10, 4)
	_, err := e.log.Checkpoint(ctx)
	require.NoError(t, err)
	e.appendN(t, ctx, 2, 2)
	var buf bytes.Buffer
	_, err = e.log.Export(ctx, &buf)
	require.NoError(t, err)
	mac, err := e.km.MAC(ctx) // the key, cached in memory
	require.NoError(t, err)
	require.NoError(t, e.log.Close(t.Context()))
	e.db.Close()
	e.admin.Close()

	rep, err := audit.VerifyExport(bytes.NewReader(buf.Bytes()), mac)
	require.NoError(t, err)
	require.Equal(t, int64(12), rep.Entries)
	require.Equal(t, 1, rep.Checkpoints)
	require.Equal(t, int64(10), rep.LastCheckpoint)

	lines := strings.SplitAfter(buf.String(), "\n")
	lines = lines[:len(lines)-1] // the empty string after the last newline
	require.Len(t, lines, 1+1+12+1)
	edit := func(i int, f func(map[string]any)) []string {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(lines[i]), &m))
		f(m)
		b, err := json.Marshal(m)
		require.NoError(t, err)
		out := append([]string(nil), lines...)
		out[i] = string(b) + "\n"
		return out
	}
	drop := func(i ...int) []string {
		var out []string
		for k, l := range lines {
			if !containsInt(i, k) {
				out = append(out, l)
			}
		}
		return out
	}
	for _, c := range []struct {
		name    string
		lines   []string
		seq     int64
		problem audit.Problem
	}{
		{"edited entry", edit(5, func(m map[string]any) { m["actor"] = "mallory" }), 4, audit.ProblemChanged},
		{"edited details", edit(6, func(m map[string]any) { m["details"] = map[string]any{"i": 1} }), 5, audit.ProblemChanged},
		{"dropped entry", drop(7), 6, audit.ProblemMissing},
		{"dropped tail and trailer", drop(12, 13, 14), 11, audit.ProblemExport},
		{"dropped tail, trailer kept", drop(12, 13), 11, audit.ProblemExport},
		{"dropped checkpoint and tail", drop(1, 13), 12, audit.ProblemExport},
		{"forged checkpoint", edit(1, func(m map[string]any) { m["seq"] = 40 }), 40, audit.ProblemCheckpoint},
		{"edited trailer", edit(14, func(m map[string]any) { m["entries"] = 11 }), 13, audit.ProblemExport},
		{"swapped lines", swap(lines, 3, 4), 2, audit.ProblemMissing},
		{"swapped entries", swapEntries(t, lines, 3, 4), 2, audit.ProblemReordered},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := audit.VerifyExport(strings.NewReader(strings.Join(c.lines, "")), mac)
			var ce *audit.ChainError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, c.problem, ce.Problem, "%v", err)
			require.Equal(t, c.seq, ce.Seq, "%v", err)
		})
	}
	for _, bad := range []string{"", "not json\n", `{"type":"entry"}` + "\n", lines[0] + `{"type":"what"}` + "\n", buf.String() + lines[2]} {
		_, err := audit.VerifyExport(strings.NewReader(bad), mac)
		require.ErrorIs(t, err, audit.ErrBadExport, "%q", bad)
	}
}

func swap(lines []string, i, j int) []string {
	out := append([]string(nil), lines...)
	out[i], out[j] = out[j], out[i]
	return out
}

// swapEntries swaps the contents of two entry lines but keeps their
// sequence numbers in place, as a reorder of rows would.
func swapEntries(t *testing.T, lines []string, i, j int) []string {
	out := swap(lines, i, j)
	for _, k := range []int{i, j} {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(out[k]), &m))
		m["seq"] = k - 1
		b, err := json.Marshal(m)
		require.NoError(t, err)
		out[k] = string(b) + "\n"
	}
	return out
}

func containsInt(xs []int, x int) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// TestDetailsSurviveJSONB: details that jsonb stores in a form of its own
// (numbers written otherwise, keys reordered, escapes) verify after the
// round trip, and read back in canonical form.
func TestDetailsSurviveJSONB(t *testing.T) {
	e := newEnv(t, "standard")
	_, ctx := e.newTenant(t, "jsonb")
	for _, d := range []any{
		json.RawMessage(`{"big":12345678901234567890,"exp":1e21,"tiny":5e-324,"neg":-0,"frac":0.1,"pi":3.141592653589793}`),
		json.RawMessage(`{"z":1,"a":2,"aa":3,"\u00e9":4,"\ud83d\ude00":5,"":6}`),
		json.RawMessage(`{"ctl":"\u0001\u001f\b\f\n\r\t","quote":"\"\\\/","line":"\u2028\u2029","del":"\u007f"}`),
		json.RawMessage(`{"nested":{"a":[{"b":[[],{}]},null,true,false]},"empty":{}}`),
		map[string]any{"max": math.MaxFloat64, "min": -math.MaxFloat64, "small": math.SmallestNonzeroFloat64, "i": 1 << 53},
	} {
		_, err := e.log.Append(ctx, audit.Event{Actor: "a", Action: "b", Outcome: audit.OutcomeSuccess, Details: d})
		require.NoError(t, err, "%v", d)
	}
	_, err := e.log.Verify(ctx)
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = e.log.Export(ctx, &buf)
	require.NoError(t, err)
	require.Contains(t, buf.String(), `"details":{"big":12345678901234567000,"exp":1e+21,"frac":0.1,"neg":0,"pi":3.141592653589793,"tiny":5e-324}`)
}
