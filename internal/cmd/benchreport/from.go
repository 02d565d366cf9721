package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var (
	rawStart   = regexp.MustCompile(`^# benchreport start (\S+) cores (\d+) go (\S+) postgres (\S+) commit (\S+) cpu (.*)$`)
	rawEnd     = regexp.MustCompile(`^# benchreport end (\S+)$`)
	rawProcess = regexp.MustCompile(`^# \./(\S+) round (\d+) count (\d+) start (\S+) wall (\S+) load ([0-9.]+): `)
)

// fromRaw rebuilds a report from the -raw output of earlier runs: the
// machine from its start and end lines, the samples from each process's
// output. A process that did not finish left no output in the file; a
// pair without samples reads "–".
func fromRaw(o options, path string) (*report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read -from %s: %w", path, err)
	}
	rep := newReport(o)
	m := &rep.machine
	var out strings.Builder
	round, count := -1, 1
	flush := func() {
		if round >= 0 {
			rep.record(out.String(), round, count)
		}
		out.Reset()
		round = -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := rawStart.FindStringSubmatch(line); f != nil {
			flush()
			if t, err := time.Parse(time.RFC3339, f[1]); err == nil && (m.began.IsZero() || t.Before(m.began)) {
				m.began = t
			}
			m.cores, _ = strconv.Atoi(f[2])
			m.goVersion, m.postgres, m.commit, m.cpu = f[3], f[4], strings.ReplaceAll(f[5], "_", " "), f[6]
			m.goos, m.goarch = "linux", "amd64"
			continue
		}
		if f := rawEnd.FindStringSubmatch(line); f != nil {
			flush()
			if t, err := time.Parse(time.RFC3339, f[1]); err == nil && t.After(m.ended) {
				m.ended = t
			}
			continue
		}
		if f := rawProcess.FindStringSubmatch(line); f != nil {
			flush()
			r, _ := strconv.Atoi(f[2])
			round, count = r-1, 1
			count, _ = strconv.Atoi(f[3])
			start, err := time.Parse(time.RFC3339, f[4])
			if err != nil {
				return nil, fmt.Errorf("-from %s: a process line with a bad start %q", path, f[4])
			}
			wall, err := time.ParseDuration(f[5])
			if err != nil {
				return nil, fmt.Errorf("-from %s: a process line with a bad wall time %q", path, f[5])
			}
			if load, err := strconv.ParseFloat(f[6], 64); err == nil {
				m.loads = append(m.loads, load)
			}
			if end := start.Add(wall); end.After(m.ended) {
				m.ended = end
			}
			rep.runs = append(rep.runs, procRun{pkg: f[1], round: round, count: count, wall: wall, benchtime: argValue(line, "-test.benchtime")})
			continue
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	flush()
	if m.began.IsZero() {
		return nil, fmt.Errorf("-from %s: no '# benchreport start' line: not the -raw output of benchreport", path)
	}
	return rep, nil
}

// argValue returns the word after flag in line, or "".
func argValue(line, flag string) string {
	f := strings.Fields(line)
	for i := range len(f) - 1 {
		if f[i] == flag {
			return f[i+1]
		}
	}
	return ""
}
