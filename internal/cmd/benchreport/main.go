// Command benchreport runs every benchmark of the module that has a
// baseline beside it (the pairs of pairs.go), interleaved and repeated,
// and prints one table of ours against the baseline with the ratio of
// each pair; with -o it writes docs/benchmarks.md from that table.
//
//	go run ./internal/cmd/benchreport                      # every pair, 5 rounds
//	go run ./internal/cmd/benchreport -o docs/benchmarks.md
//	go run ./internal/cmd/benchreport -benchtime 1x -count 1 -pkg telemetry
//
// Each package's test binary is built once; every round then runs one
// process per package (and -benchtime), in which each benchmark of a pair
// runs once, the baseline and ours one after the other in the order of
// the code. Rounds repeat that, so the samples of ours and of the
// baseline alternate on a noisy machine, and a ratio is taken within a
// round (sample k of ours against sample k of the baseline). Heavy pairs
// (-heavy) take minutes to set up and run in one process of -count
// samples instead. The benchmarks need the services of the tests
// (PostgreSQL, Redis, SoftHSM2, local-kms, ...).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"time"
)

// options are the command's flags.
type options struct {
	root      string         // the module's root directory
	count     int            // rounds (samples per benchmark)
	benchtime string         // overrides every pair's own -benchtime when set
	pkgs      []string       // only pairs of these packages, when set
	only      *regexp.Regexp // only pairs whose label or names match, when set
	heavy     bool           // run the heavy pairs too
	out       string         // the document to write, when set
	raw       string         // a file for the benchmarks' raw output, when set
	from      string         // a -raw file to report from instead of running, when set
	timeout   time.Duration  // -test.timeout of each process
	progress  io.Writer      // where progress and warnings go
	table     []pair         // the pairs to choose from (pairs)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opts, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(2)
	}
	if err := run(ctx, opts, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

// parseFlags reads the command line into options.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("benchreport", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var pkgs, only string
	var write bool
	fs.IntVar(&o.count, "count", 5, "rounds: samples of each benchmark")
	fs.StringVar(&o.benchtime, "benchtime", "", "-benchtime of every benchmark (default: each pair's own, or 1s)")
	fs.StringVar(&pkgs, "pkg", "", "comma-separated packages (store, keys, authz/ratelimit, ...): only their pairs")
	fs.StringVar(&only, "only", "", "regular expression: only the pairs whose label or benchmark names match")
	fs.BoolVar(&o.heavy, "heavy", false, "also run the heavy pairs (minutes of setup each: fleet migrations)")
	fs.StringVar(&o.out, "o", "", "write the report as Markdown to this file (docs/benchmarks.md)")
	fs.BoolVar(&write, "write", false, "same as -o docs/benchmarks.md")
	fs.StringVar(&o.raw, "raw", "", "append the benchmarks' raw output to this file")
	fs.StringVar(&o.from, "from", "", "report from this -raw file of an earlier run instead of running (give the run's -count and -heavy)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "-test.timeout of each test process (heavy ones get 4 times as long)")
	fs.StringVar(&o.root, "root", "", "the module's root directory (default: found from the working directory)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q: benchreport takes flags only", fs.Args())
	}
	if o.count < 1 {
		return o, fmt.Errorf("-count %d: must be at least 1", o.count)
	}
	if write && o.out == "" {
		o.out = "docs/benchmarks.md"
	}
	if pkgs != "" {
		for p := range strings.SplitSeq(pkgs, ",") {
			if p = strings.Trim(strings.TrimSpace(p), "./"); p != "" {
				o.pkgs = append(o.pkgs, p)
			}
		}
	}
	if only != "" {
		re, err := regexp.Compile(only)
		if err != nil {
			return o, fmt.Errorf("-only %q: %w", only, err)
		}
		o.only = re
	}
	if o.root == "" {
		root, err := moduleRoot()
		if err != nil {
			return o, err
		}
		o.root = root
	}
	o.progress = stderr
	o.table = pairs
	return o, nil
}

// run selects the pairs, runs them and prints (and writes) the report.
func run(ctx context.Context, o options, stdout io.Writer) error {
	sel, notRun, err := selectPairs(o.table, o)
	if err != nil {
		return err
	}
	if err := checkDeclared(o.root, o.table); err != nil {
		return err
	}
	unpaired, err := unpairedBenchmarks(o.root, o.table)
	if err != nil {
		return err
	}
	for _, u := range unpaired {
		fmt.Fprintf(o.progress, "warning: %s is in no pair (internal/cmd/benchreport/pairs.go)\n", u)
	}
	var rep *report
	if o.from != "" {
		rep, err = fromRaw(o, o.from)
	} else {
		rep, err = measure(ctx, o, sel)
	}
	if err != nil {
		return err
	}
	for _, p := range sel {
		for _, n := range []string{p.Ours, p.Base} {
			if len(rep.samples[n]) == 0 && rep.skipReason(n) == "" {
				fmt.Fprintf(o.progress, "warning: no result of %s (pair %q)\n", n, p.Label)
			}
		}
	}
	rep.notRun = notRun
	for _, u := range rep.unpairedSubs() {
		fmt.Fprintf(o.progress, "warning: %s ran but is in no pair\n", u)
	}
	fmt.Fprint(stdout, renderTable(rep, sel, "", true))
	fmt.Fprint(stdout, "\n"+rep.machine.summary()+"\n")
	if o.out == "" {
		return nil
	}
	doc, err := renderDoc(rep, sel, unpaired, o)
	if err != nil {
		return err
	}
	path := o.out
	if !strings.HasPrefix(path, "/") {
		path = o.root + "/" + path
	}
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	fmt.Fprintf(o.progress, "wrote %s\n", o.out)
	return nil
}

// selectPairs returns the pairs the options select, and the labels of
// heavy pairs left out for want of -heavy.
func selectPairs(all []pair, o options) ([]*pair, []string, error) {
	var sel []*pair
	var notRun []string
	for i := range all {
		p := &all[i]
		if len(o.pkgs) > 0 && !containsString(o.pkgs, p.Pkg) {
			continue
		}
		if o.only != nil && !o.only.MatchString(p.Label) && !o.only.MatchString(p.Ours) && !o.only.MatchString(p.Base) {
			continue
		}
		if p.Heavy && !o.heavy {
			notRun = append(notRun, p.Label)
			continue
		}
		sel = append(sel, p)
	}
	if len(sel) == 0 {
		return nil, nil, errors.New("no pair selected: check -pkg, -only and -heavy")
	}
	return sel, notRun, nil
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// moduleRoot finds the directory of go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find the module root: %w", err)
	}
	for {
		if _, err := os.Stat(dir + "/go.mod"); err == nil {
			return dir, nil
		}
		i := strings.LastIndex(dir, "/")
		if i <= 0 {
			return "", errors.New("find the module root: no go.mod in the working directory or above it; pass -root")
		}
		dir = dir[:i]
	}
}
