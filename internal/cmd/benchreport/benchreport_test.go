package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// labelPairs are two small pairs of one package that needs no service.
var labelPairs = []pair{
	{Section: "telemetry", Pkg: "telemetry", Label: "label, admitted tenant", Ours: "BenchmarkLabel/tenant=admitted/mode=guard", Base: "BenchmarkLabel/tenant=admitted/mode=map", Target: 0.5, What: "admitted"},
	{Section: "telemetry", Pkg: "telemetry", Label: "label, tenant past the bound", Ours: "BenchmarkLabel/tenant=other/mode=guard", Base: "BenchmarkLabel/tenant=other/mode=map", What: "other"},
}

func quickOptions(t *testing.T, table []pair, count int) (options, *bytes.Buffer) {
	t.Helper()
	root, err := filepath.Abs("../../..")
	require.NoError(t, err)
	var progress bytes.Buffer
	return options{root: root, count: count, benchtime: "1x", timeout: 5 * time.Minute, progress: &progress, table: table}, &progress
}

// tableRow returns the cells of the row of the table whose first cell is
// label.
func tableRow(t *testing.T, table, label string) []string {
	t.Helper()
	for line := range strings.SplitSeq(table, "\n") {
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) > 1 && strings.TrimSpace(cells[0]) == label {
			for i := range cells {
				cells[i] = strings.TrimSpace(cells[i])
			}
			return cells
		}
	}
	t.Fatalf("no row %q in\n%s", label, table)
	return nil
}

var (
	timePattern  = regexp.MustCompile(`^[0-9.,]+ \([0-9.,]+–[0-9.,]+\) (ns|µs|ms|s)$`)
	ratioPattern = regexp.MustCompile(`^\*\*[0-9]+\.[0-9]{2}\*\* \([0-9]+\.[0-9]{2}–[0-9]+\.[0-9]{2}\)$`)
)

// Two rounds of two pairs give a row per pair with ours, the baseline,
// the paired ratio over two samples, the target's verdict and the
// allocations, and the document holds the same table under its section.
func TestReportTablesEveryPairWithPairedRatios(t *testing.T) {
	o, progress := quickOptions(t, labelPairs, 2)
	o.out = filepath.Join(t.TempDir(), "benchmarks.md")
	o.raw = filepath.Join(t.TempDir(), "raw.txt")
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), o, &out), progress.String())

	for _, p := range labelPairs {
		row := tableRow(t, out.String(), "telemetry: "+p.Label)
		require.Len(t, row, 7, "row %q", row)
		assert.Regexp(t, timePattern, row[1], "ours")
		assert.Regexp(t, timePattern, row[2], "baseline")
		assert.Regexp(t, ratioPattern, row[3], "ratio")
		assert.Equal(t, "2", row[5], "paired samples")
		assert.Contains(t, row[6], "allocs/op 0 / 0", "extra metrics")
	}
	assert.Regexp(t, `^≥ 0\.50: (met|\*\*not met\*\*)$`, tableRow(t, out.String(), "telemetry: label, admitted tenant")[4])
	assert.Empty(t, tableRow(t, out.String(), "telemetry: label, tenant past the bound")[4], "no target, no verdict")
	assert.Contains(t, progress.String(), "BenchmarkLabel/tenant=admitted/mode=guard/parallel ran but is in no pair")

	raw, err := os.ReadFile(o.raw)
	require.NoError(t, err)
	assert.Equal(t, 2, strings.Count(string(raw), "BenchmarkLabel/tenant=admitted/mode=guard-"), "one sample per round:\n%s", raw)

	again := o
	again.from, again.raw, again.out = o.raw, "", ""
	var fromRaw bytes.Buffer
	require.NoError(t, run(context.Background(), again, &fromRaw), progress.String())
	table, _, _ := strings.Cut(out.String(), "\nMeasured ")
	tableAgain, _, _ := strings.Cut(fromRaw.String(), "\nMeasured ")
	assert.Equal(t, table, tableAgain, "-from the raw output gives the same table")
	assert.Equal(t, 1, strings.Count(progress.String(), "build ./telemetry"), "-from builds and runs nothing")

	doc, err := os.ReadFile(o.out)
	require.NoError(t, err)
	assert.Contains(t, string(doc), "## telemetry: the label guard")
	assert.Regexp(t, ratioPattern, tableRow(t, string(doc), "label, admitted tenant")[3])
	assert.Contains(t, string(doc), "go run ./internal/cmd/benchreport -count 2 -benchtime 1x -o "+o.out)
	assert.NotContains(t, string(doc), "## store:", "a section without a pair in the run has no heading")
}

// A pair naming a sub-benchmark that no longer exists fails the run and
// names it; a pair naming a top-level benchmark that no package declares
// fails before anything runs.
func TestReportFailsOnAMissingBenchmark(t *testing.T) {
	gone := append([]pair{}, labelPairs[0], pair{Section: "telemetry", Pkg: "telemetry", Label: "renamed",
		Ours: "BenchmarkLabel/tenant=nobody/mode=guard", Base: "BenchmarkLabel/tenant=admitted/mode=map"})
	o, _ := quickOptions(t, gone, 1)
	var out bytes.Buffer
	err := run(context.Background(), o, &out)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `BenchmarkLabel/tenant=nobody/mode=guard (pair "renamed")`)
	assert.Empty(t, out.String(), "no table")

	undeclared := append([]pair{}, labelPairs[0], pair{Section: "telemetry", Pkg: "telemetry", Label: "undeclared",
		Ours: "BenchmarkNoSuchThing/mode=ours", Base: "BenchmarkLabel/tenant=admitted/mode=map"})
	o, progress := quickOptions(t, undeclared, 1)
	err = run(context.Background(), o, &out)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "./telemetry declares no BenchmarkNoSuchThing")
	assert.NotContains(t, progress.String(), "build ./telemetry", "nothing built or run")
}

// The table in pairs.go names only benchmarks that the module declares.
func TestEveryPairNamesADeclaredBenchmark(t *testing.T) {
	o, _ := quickOptions(t, pairs, 1)
	require.NoError(t, checkDeclared(o.root, pairs))
}

// Results split by a benchmark's own output are joined, the -N suffix is
// dropped, and a skipped benchmark keeps its reason.
func TestParseOutputReadsResultsAndSkips(t *testing.T) {
	res, skips, cfg := parseOutput(`goos: linux
cpu: Some CPU @ 2.0GHz
BenchmarkA/mode=raw-2         	     100	      1500 ns/op	      32 B/op	       1 allocs/op
BenchmarkA/mode=ours-2        	some log line
     200	      2500 ns/op	   9.5 p50-µs
--- SKIP: BenchmarkB/auth=scram-2
    bench_test.go:12: no initdb
PASS
`)
	require.Len(t, res, 2)
	assert.Equal(t, "BenchmarkA/mode=raw", res[0].name)
	assert.Equal(t, map[string]float64{"ns/op": 1500, "B/op": 32, "allocs/op": 1}, res[0].metrics)
	assert.Equal(t, "BenchmarkA/mode=ours", res[1].name)
	assert.Equal(t, map[string]float64{"ns/op": 2500, "p50-µs": 9.5}, res[1].metrics)
	assert.Equal(t, map[string]string{"BenchmarkB/auth=scram": "bench_test.go:12: no initdb"}, skips)
	assert.Equal(t, "Some CPU @ 2.0GHz", cfg["cpu"])

	rep := &report{skipped: skips}
	assert.Equal(t, "bench_test.go:12: no initdb", rep.skipReason("BenchmarkB/auth=scram/iterations=16/mode=raw"))
	assert.Empty(t, rep.skipReason("BenchmarkB/auth=trust/mode=raw"))
}

// The -bench pattern matches each name level by level.
func TestBenchPatternMatchesEveryName(t *testing.T) {
	assert.Equal(t, `^(BenchmarkA|BenchmarkB)$/^(x=1|y)$/^(m=raw|m=ours)$`,
		benchPattern([]string{"BenchmarkA/x=1/m=raw", "BenchmarkA/y/m=raw", "BenchmarkB/y/m=ours"}))
}

// Names of different depths go to different processes (go test runs a
// benchmark only if the pattern has no more levels than its name), and
// each process checks only the names it runs.
func TestGroupsSplitByPackageBenchtimeAndDepth(t *testing.T) {
	sel := []*pair{
		{Pkg: "keys", Ours: "BenchmarkColdUnwrapAWSKMS", Base: "BenchmarkColdUnwrapLocalKMS/memstore"},
		{Pkg: "keys", Ours: "BenchmarkColdUnwrapPKCS11/memstore", Base: "BenchmarkColdUnwrapLocalKMS/memstore"},
		{Pkg: "keys", Ours: "BenchmarkSealOpen/keys/64B", Base: "BenchmarkSealOpen/raw/64B", Benchtime: "100x"},
	}
	gs := groups(sel, options{})
	require.Len(t, gs, 3)
	assert.Equal(t, []string{"BenchmarkColdUnwrapLocalKMS/memstore", "BenchmarkColdUnwrapPKCS11/memstore"}, gs[0].names)
	assert.Equal(t, "1s", gs[0].benchtime)
	assert.Equal(t, []string{"BenchmarkColdUnwrapAWSKMS"}, gs[1].names)
	assert.Equal(t, []string{"BenchmarkSealOpen/raw/64B", "BenchmarkSealOpen/keys/64B"}, gs[2].names)
	assert.Equal(t, "100x", gs[2].benchtime)
	for _, g := range groups(sel, options{benchtime: "1x"}) {
		assert.Equal(t, "1x", g.benchtime, "-benchtime overrides the pair's own")
	}
}

// A ratio is the baseline's time over ours, sample by sample of the same
// round, and the cells read median (min–max).
func TestRowPairsSamplesByRound(t *testing.T) {
	p := &pair{Label: "x", Ours: "BenchmarkX/mode=ours", Base: "BenchmarkX/mode=raw", Target: 0.9}
	rep := &report{samples: map[string]map[int]map[string]float64{
		p.Ours: {0: {"ns/op": 2000, "allocs/op": 3}, 1: {"ns/op": 1000, "allocs/op": 3}, 2: {"ns/op": 4000, "allocs/op": 3}},
		p.Base: {0: {"ns/op": 1000, "allocs/op": 1}, 1: {"ns/op": 1000, "allocs/op": 1}, 2: {"ns/op": 1000, "allocs/op": 1}},
	}}
	r := rowOf(rep, p)
	assert.Equal(t, []float64{0.25, 0.5, 1}, r.ratios)
	assert.Equal(t, "2.00 (1.00–4.00) µs", cell(r.ours, "ns/op"))
	assert.Equal(t, "**0.50** (0.25–1.00)", ratioCell(r.ratios))
	assert.Equal(t, "≥ 0.90: **not met**", targetCell(r))
	assert.Equal(t, []string{"allocs/op 3 / 1"}, r.extras)
}
