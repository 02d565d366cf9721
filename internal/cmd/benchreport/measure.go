package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A group is the benchmarks of one package, -benchtime and depth that
// one process per round runs. Names of one depth only: go test runs a
// benchmark only if the pattern has no more levels than its name.
type group struct {
	pkg, benchtime string
	heavy          bool
	depth          int
	names          []string // the benchmarks the process must report
	pairs          []*pair
}

// report is what the runs produced.
type report struct {
	// samples holds, by benchmark name, the metrics of each sample by its
	// index (the round, or the repetition within a heavy process).
	samples map[string]map[int]map[string]float64
	skipped map[string]string // benchmark name -> the reason go test gave
	ran     map[string]bool   // every benchmark name the processes reported
	paired  map[string]bool   // every name a pair names
	notRun  []string          // heavy pairs not run
	machine machine
	runs    []procRun
}

// procRun is one test process.
type procRun struct {
	pkg, bench, benchtime string
	round, count          int
	wall                  time.Duration
}

// newReport returns an empty report of the pairs of o.
func newReport(o options) *report {
	rep := &report{
		samples: map[string]map[int]map[string]float64{},
		skipped: map[string]string{},
		ran:     map[string]bool{},
		paired:  map[string]bool{},
	}
	for _, p := range o.table {
		rep.paired[p.Ours], rep.paired[p.Base] = true, true
	}
	return rep
}

// groups splits the selected pairs into one group per package and
// -benchtime, in the order the pairs come.
func groups(sel []*pair, o options) []*group {
	var gs []*group
	for _, p := range sel {
		bt := o.benchtime
		if bt == "" {
			bt = p.Benchtime
		}
		if bt == "" {
			bt = "1s"
		}
		for _, n := range []string{p.Base, p.Ours} {
			depth := strings.Count(n, "/") + 1
			var g *group
			for _, h := range gs {
				if h.pkg == p.Pkg && h.benchtime == bt && h.heavy == p.Heavy && h.depth == depth {
					g = h
				}
			}
			if g == nil {
				g = &group{pkg: p.Pkg, benchtime: bt, heavy: p.Heavy, depth: depth}
				gs = append(gs, g)
			}
			if !slices.Contains(g.pairs, p) {
				g.pairs = append(g.pairs, p)
			}
			if !slices.Contains(g.names, n) {
				g.names = append(g.names, n)
			}
		}
	}
	return gs
}

// benchPattern returns a -test.bench pattern that matches every one of
// names, level by level (it may match more: the product of the levels).
// The names must have the same number of levels.
func benchPattern(names []string) string {
	var levels [][]string
	for _, n := range names {
		for i, part := range strings.Split(n, "/") {
			if i == len(levels) {
				levels = append(levels, nil)
			}
			q := regexp.QuoteMeta(part)
			if !slices.Contains(levels[i], q) {
				levels[i] = append(levels[i], q)
			}
		}
	}
	parts := make([]string, len(levels))
	for i, alts := range levels {
		parts[i] = "^(" + strings.Join(alts, "|") + ")$"
	}
	return strings.Join(parts, "/")
}

// measure builds each package's test binary once and runs the rounds.
func measure(ctx context.Context, o options, sel []*pair) (*report, error) {
	rep := newReport(o)
	rep.machine.start(o.root)
	tmp, err := os.MkdirTemp("", "benchreport")
	if err != nil {
		return nil, fmt.Errorf("make a directory for the test binaries: %w", err)
	}
	defer os.RemoveAll(tmp)
	var raw io.Writer = io.Discard
	if o.raw != "" {
		f, err := os.OpenFile(o.raw, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open -raw %s: %w", o.raw, err)
		}
		defer f.Close()
		raw = f
	}

	m := &rep.machine
	fmt.Fprintf(raw, "# benchreport start %s cores %d go %s postgres %s commit %s cpu %s\n",
		m.began.Format(time.RFC3339), m.cores, m.goVersion, m.postgres, strings.ReplaceAll(orUnknown(m.commit), " ", "_"), m.cpu)
	gs := groups(sel, o)
	bins := map[string]string{}
	for _, g := range gs {
		if _, ok := bins[g.pkg]; ok {
			continue
		}
		bin := filepath.Join(tmp, strings.ReplaceAll(g.pkg, "/", "_")+".test")
		fmt.Fprintf(o.progress, "build ./%s\n", g.pkg)
		cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, "./"+g.pkg)
		cmd.Dir = o.root
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build the tests of ./%s: %w\n%s", g.pkg, err, out)
		}
		bins[g.pkg] = bin
	}

	for r := range o.count {
		for _, g := range gs {
			if g.heavy {
				continue
			}
			if err := runGroup(ctx, o, rep, g, bins[g.pkg], r, 1, raw); err != nil {
				return nil, err
			}
		}
	}
	for _, g := range gs {
		if g.heavy {
			if err := runGroup(ctx, o, rep, g, bins[g.pkg], 0, o.count, raw); err != nil {
				return nil, err
			}
		}
	}
	rep.machine.finish()
	fmt.Fprintf(raw, "# benchreport end %s\n", rep.machine.ended.Format(time.RFC3339))
	return rep, nil
}

// runGroup runs one process of g's benchmarks, -test.count count, and
// records its samples as round*count+k for the k-th result of a name.
func runGroup(ctx context.Context, o options, rep *report, g *group, bin string, round, count int, raw io.Writer) error {
	pattern := benchPattern(g.names)
	timeout := o.timeout
	if g.heavy {
		timeout *= 4
	}
	args := []string{"-test.run", "^$", "-test.bench", pattern, "-test.count", strconv.Itoa(count),
		"-test.benchtime", g.benchtime, "-test.benchmem", "-test.timeout", timeout.String()}
	rep.machine.sampleLoad()
	if g.heavy {
		fmt.Fprintf(o.progress, "heavy: ./%s -benchtime %s -count %d (%d benchmarks)\n", g.pkg, g.benchtime, count, len(g.names))
	} else {
		fmt.Fprintf(o.progress, "round %d/%d: ./%s -benchtime %s (%d benchmarks)\n", round+1, o.count, g.pkg, g.benchtime, len(g.names))
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = filepath.Join(o.root, g.pkg)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	fmt.Fprintf(raw, "# ./%s round %d count %d start %s wall %s load %.2f: %s %s\n%s", g.pkg, round+1, count,
		start.UTC().Format(time.RFC3339), wall.Round(time.Millisecond), rep.machine.lastLoad(), filepath.Base(bin), strings.Join(quoteArgs(args), " "), out.Bytes())
	if err != nil {
		return fmt.Errorf("./%s (round %d): %w\n%s", g.pkg, round+1, err, tail(out.String(), 40))
	}
	rep.runs = append(rep.runs, procRun{pkg: g.pkg, bench: pattern, benchtime: g.benchtime, round: round, count: count, wall: wall})
	seen := rep.record(out.String(), round, count)
	var missing []string
	for _, p := range g.pairs {
		for _, n := range []string{p.Ours, p.Base} {
			if slices.Contains(g.names, n) && seen[n] == 0 && rep.skipReason(n) == "" {
				missing = append(missing, fmt.Sprintf("%s (pair %q)", n, p.Label))
			}
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		missing = slices.Compact(missing)
		return fmt.Errorf("./%s reported no result for:\n  %s\nthe benchmark was renamed or removed, or no longer has that sub-benchmark: update internal/cmd/benchreport/pairs.go", g.pkg, strings.Join(missing, "\n  "))
	}
	return nil
}

// record adds the results of one process's output, -test.count count, to
// rep as samples round*count+k (the k-th result of a name), and returns
// how many results of each name it had.
func (rep *report) record(out string, round, count int) map[string]int {
	res, skips, cfg := parseOutput(out)
	if cfg["cpu"] != "" && rep.machine.cpu == "" {
		rep.machine.cpu = cfg["cpu"]
	}
	seen := map[string]int{}
	for _, r := range res {
		rep.ran[r.name] = true
		k := seen[r.name]
		seen[r.name]++
		byIdx := rep.samples[r.name]
		if byIdx == nil {
			byIdx = map[int]map[string]float64{}
			rep.samples[r.name] = byIdx
		}
		byIdx[round*count+k] = r.metrics
	}
	for n, why := range skips {
		rep.skipped[n] = why
	}
	return seen
}

// skipReason returns why name, or a benchmark above it, was skipped, or "".
func (r *report) skipReason(name string) string {
	for n := name; ; {
		if why, ok := r.skipped[n]; ok {
			if why == "" {
				why = "skipped"
			}
			return why
		}
		i := strings.LastIndex(n, "/")
		if i < 0 {
			return ""
		}
		n = n[:i]
	}
}

// unpairedSubs returns the benchmarks that ran but are in no pair.
func (r *report) unpairedSubs() []string {
	var out []string
	for n := range r.ran {
		if !r.paired[n] {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// result is one benchmark result line.
type result struct {
	name    string
	metrics map[string]float64 // by unit, ns/op included
}

var (
	procSuffix = regexp.MustCompile(`-\d+$`)
	resultLine = regexp.MustCompile(`^(Benchmark\S*)\s+(\d+)\s+(.+)$`)
	nameFirst  = regexp.MustCompile(`^(Benchmark\S*)(\s|$)`)
	figures    = regexp.MustCompile(`^\s*(\d+)\s+(\S+ \S+/op.*)$`)
	skipLine   = regexp.MustCompile(`^\s*--- SKIP: (Benchmark\S*)`)
	configLine = regexp.MustCompile(`^([a-z]+): (.+)$`)
)

// parseOutput reads go test -bench output: the results (in the Go
// benchmark data format), the benchmarks skipped with the first line of
// their reason, and the configuration lines (cpu, goos, pkg, ...). A
// benchmark whose name and figures were split by output in between is
// joined again.
func parseOutput(s string) ([]result, map[string]string, map[string]string) {
	var res []result
	skips := map[string]string{}
	cfg := map[string]string{}
	pending, skipping := "", ""
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := skipLine.FindStringSubmatch(line); m != nil {
			skipping = procSuffix.ReplaceAllString(m[1], "")
			skips[skipping] = ""
			continue
		}
		if skipping != "" {
			if t := strings.TrimSpace(line); t != "" && strings.HasPrefix(line, " ") && skips[skipping] == "" {
				skips[skipping] = t
				continue
			}
			skipping = ""
		}
		if m := resultLine.FindStringSubmatch(line); m != nil {
			if r, ok := parseFigures(m[1], m[3]); ok {
				res = append(res, r)
				pending = ""
				continue
			}
		}
		if m := nameFirst.FindStringSubmatch(line); m != nil {
			pending = m[1]
			continue
		}
		if m := figures.FindStringSubmatch(line); m != nil && pending != "" {
			if r, ok := parseFigures(pending, m[2]); ok {
				res = append(res, r)
				pending = ""
			}
			continue
		}
		if m := configLine.FindStringSubmatch(line); m != nil {
			if _, ok := cfg[m[1]]; !ok {
				cfg[m[1]] = m[2]
			}
		}
	}
	return res, skips, cfg
}

// parseFigures reads the value-unit pairs after a benchmark's iteration
// count.
func parseFigures(name, rest string) (result, bool) {
	f := strings.Fields(rest)
	if len(f) < 2 || len(f)%2 != 0 {
		return result{}, false
	}
	r := result{name: procSuffix.ReplaceAllString(name, ""), metrics: map[string]float64{}}
	for i := 0; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return result{}, false
		}
		r.metrics[f[i+1]] = v
	}
	if _, ok := r.metrics["ns/op"]; !ok {
		return result{}, false
	}
	return r, true
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// quoteArgs quotes the arguments that a shell would split or expand.
func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " $^|()*?[]\\'\"") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return out
}
