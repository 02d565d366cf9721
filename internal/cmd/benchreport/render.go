package main

import (
	_ "embed"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"text/template"
	"time"
)

// row is one pair's figures.
type row struct {
	p          *pair
	ours, base []float64 // the pair's unit, sorted
	ratios     []float64 // baseline ÷ ours, sample by sample, sorted
	extras     []string  // other metrics, "unit ours / baseline" (medians)
	skipped    string
}

// unitOf returns the unit a pair's ratio is taken on.
func unitOf(p *pair) string {
	if p.Unit == "" {
		return "ns/op"
	}
	return p.Unit
}

// rowOf computes the figures of p from the samples of rep.
func rowOf(rep *report, p *pair) row {
	r := row{p: p}
	if why := rep.skipReason(p.Ours); why != "" {
		r.skipped = why
		return r
	}
	if why := rep.skipReason(p.Base); why != "" {
		r.skipped = why
		return r
	}
	unit := unitOf(p)
	so, sb := rep.samples[p.Ours], rep.samples[p.Base]
	for k, m := range so {
		o, ok := m[unit]
		if !ok {
			continue
		}
		r.ours = append(r.ours, o)
		if bm, ok := sb[k]; ok {
			if b, ok := bm[unit]; ok && o > 0 {
				r.ratios = append(r.ratios, b/o)
			}
		}
	}
	for _, m := range sb {
		if b, ok := m[unit]; ok {
			r.base = append(r.base, b)
		}
	}
	slices.Sort(r.ours)
	slices.Sort(r.base)
	slices.Sort(r.ratios)
	units := map[string]bool{}
	for _, set := range []map[int]map[string]float64{so, sb} {
		for _, m := range set {
			for u := range m {
				if u != unit && u != "MB/s" {
					units[u] = true
				}
			}
		}
	}
	for _, u := range slices.Sorted(maps.Keys(units)) {
		mo, mb := medianOf(so, u), medianOf(sb, u)
		label := u
		if u == "ns/op" {
			label = "mean"
		}
		if u == "ns/op" {
			r.extras = append(r.extras, fmt.Sprintf("%s %s / %s", label, formatIn(mo, u), formatIn(mb, u)))
		} else {
			r.extras = append(r.extras, fmt.Sprintf("%s %s / %s", label, count(mo), count(mb)))
		}
	}
	return r
}

// medianOf is the median of unit u over the samples, NaN without any.
func medianOf(set map[int]map[string]float64, u string) float64 {
	var v []float64
	for _, m := range set {
		if x, ok := m[u]; ok {
			v = append(v, x)
		}
	}
	slices.Sort(v)
	return median(v)
}

// median of sorted v, NaN when v is empty.
func median(v []float64) float64 {
	n := len(v)
	switch {
	case n == 0:
		return math.NaN()
	case n%2 == 1:
		return v[n/2]
	default:
		return (v[n/2-1] + v[n/2]) / 2
	}
}

// number formats v with three significant digits at most, no exponent.
func number(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v):
		return "–"
	case a >= 1000:
		s := fmt.Sprintf("%.0f", v)
		for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
			s = s[:i] + "," + s[i:]
		}
		return s
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// count formats v as number does, and a whole number without decimals.
func count(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1000 {
		return fmt.Sprintf("%.0f", v)
	}
	return number(v)
}

// timeScale returns the divisor and name of the unit in which ns reads
// best.
func timeScale(ns float64) (float64, string) {
	switch a := math.Abs(ns); {
	case a >= 1e9:
		return 1e9, "s"
	case a >= 1e6:
		return 1e6, "ms"
	case a >= 1e3:
		return 1e3, "µs"
	default:
		return 1, "ns"
	}
}

// formatIn formats one value of unit u.
func formatIn(v float64, u string) string {
	if math.IsNaN(v) {
		return "–"
	}
	if u == "ns/op" {
		d, name := timeScale(v)
		return number(v/d) + " " + name
	}
	return number(v) + " " + u
}

// cell formats the median and range of sorted values of unit u.
func cell(v []float64, u string) string {
	if len(v) == 0 {
		return "–"
	}
	med := median(v)
	if u != "ns/op" {
		return fmt.Sprintf("%s (%s–%s) %s", number(med), number(v[0]), number(v[len(v)-1]), u)
	}
	d, name := timeScale(med)
	return fmt.Sprintf("%s (%s–%s) %s", number(med/d), number(v[0]/d), number(v[len(v)-1]/d), name)
}

// ratioCell formats the paired ratios: the median, then the range.
func ratioCell(v []float64) string {
	if len(v) == 0 {
		return "–"
	}
	return fmt.Sprintf("**%.2f** (%.2f–%.2f)", median(v), v[0], v[len(v)-1])
}

// targetCell says whether the median ratio meets the pair's target.
func targetCell(r row) string {
	if r.p.Target == 0 {
		return ""
	}
	if len(r.ratios) == 0 {
		return fmt.Sprintf("≥ %.2f", r.p.Target)
	}
	verdict := "met"
	if median(r.ratios) < r.p.Target {
		verdict = "**not met**"
	}
	return fmt.Sprintf("≥ %.2f: %s", r.p.Target, verdict)
}

// renderTable renders the rows of the pairs of sel in section (all of them
// when section is ""), as a Markdown table; withSection adds the section
// to each pair's name.
func renderTable(rep *report, sel []*pair, section string, withSection bool) string {
	var b strings.Builder
	b.WriteString("| pair | ours: median (min–max) | baseline: median (min–max) | baseline ÷ ours: median (min–max) | target | samples | other metrics, medians: ours / baseline |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- |\n")
	n := 0
	for _, p := range sel {
		if section != "" && p.Section != section {
			continue
		}
		n++
		r := rowOf(rep, p)
		label := p.Label
		if withSection {
			label = p.Section + ": " + label
		}
		if r.skipped != "" {
			fmt.Fprintf(&b, "| %s | skipped: %s | | | | | |\n", escape(label), escape(r.skipped))
			continue
		}
		u := unitOf(p)
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d | %s |\n", escape(label), cell(r.ours, u), cell(r.base, u),
			ratioCell(r.ratios), targetCell(r), len(r.ratios), escape(strings.Join(r.extras, "; ")))
	}
	if n == 0 {
		return ""
	}
	return b.String()
}

// escape keeps a table cell in its cell.
func escape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

//go:embed benchmarks.md.tmpl
var docTemplate string

// docData is what the document's template reads.
type docData struct {
	Summary  string
	Cores    int
	Command  string
	Count    int
	Heavy    bool
	Wall     string
	Sections []docSection
	NotRun   []string
	Unpaired []string
	Subs     []string
	Runs     []string
}

// docSection is one section's table and the list of what its pairs do.
type docSection struct {
	ID, Title, Table string
	Pairs            []*pair
}

// renderDoc renders docs/benchmarks.md.
func renderDoc(rep *report, sel []*pair, unpaired []string, o options) (string, error) {
	d := docData{
		Cores:    rep.machine.cores,
		Summary:  rep.machine.summary(),
		Command:  commandLine(o),
		Count:    o.count,
		Heavy:    o.heavy,
		Wall:     rep.machine.ended.Sub(rep.machine.began).Round(time.Second).String(),
		NotRun:   rep.notRun,
		Unpaired: unpaired,
		Subs:     rep.unpairedSubs(),
	}
	for _, s := range sections {
		ds := docSection{ID: s.ID, Title: s.Title, Table: renderTable(rep, sel, s.ID, false)}
		for _, p := range sel {
			if p.Section == s.ID {
				ds.Pairs = append(ds.Pairs, p)
			}
		}
		d.Sections = append(d.Sections, ds)
	}
	for _, r := range rep.runs {
		if r.round == 0 {
			d.Runs = append(d.Runs, fmt.Sprintf("./%s, -benchtime %s, -count %d: %s", r.pkg, r.benchtime, r.count, r.wall.Round(time.Second)))
		}
	}
	t, err := template.New("benchmarks.md").Funcs(template.FuncMap{
		"section": func(id string) docSection {
			for _, s := range d.Sections {
				if s.ID == id {
					return s
				}
			}
			return docSection{ID: id}
		},
		"unit": unitOf,
	}).Parse(docTemplate)
	if err != nil {
		return "", fmt.Errorf("parse the document's template: %w", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("render the document: %w", err)
	}
	return b.String(), nil
}

// commandLine is the command that reproduces the report.
func commandLine(o options) string {
	args := []string{"go", "run", "./internal/cmd/benchreport", fmt.Sprintf("-count %d", o.count)}
	if o.benchtime != "" {
		args = append(args, "-benchtime "+o.benchtime)
	}
	if len(o.pkgs) > 0 {
		args = append(args, "-pkg "+strings.Join(o.pkgs, ","))
	}
	if o.only != nil {
		args = append(args, "-only '"+o.only.String()+"'")
	}
	if o.heavy {
		args = append(args, "-heavy")
	}
	if o.out != "" {
		args = append(args, "-o "+o.out)
	}
	return strings.Join(args, " ")
}
