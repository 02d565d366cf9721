package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// machine describes where and when the report ran.
type machine struct {
	goVersion, goos, goarch string
	cpu                     string
	cores                   int
	postgres                string
	commit                  string
	began, ended            time.Time
	loads                   []float64 // 1-minute load averages, one before each process and at both ends
}

// start records what is known before the runs.
func (m *machine) start(root string) {
	m.goVersion, m.goos, m.goarch = runtime.Version(), runtime.GOOS, runtime.GOARCH
	m.cores = runtime.NumCPU()
	m.began = time.Now().UTC()
	m.cpu = cpuModel()
	m.postgres = postgresVersion()
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			m.commit += " with local changes"
		}
	}
	m.sampleLoad()
}

// finish records the end of the runs.
func (m *machine) finish() {
	m.sampleLoad()
	m.ended = time.Now().UTC()
}

// sampleLoad appends the current 1-minute load average.
func (m *machine) sampleLoad() {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return
	}
	if v, err := strconv.ParseFloat(f[0], 64); err == nil {
		m.loads = append(m.loads, v)
	}
}

// lastLoad is the latest 1-minute load average read, 0 without any.
func (m *machine) lastLoad() float64 {
	if len(m.loads) == 0 {
		return 0
	}
	return m.loads[len(m.loads)-1]
}

// loadRange is the 1-minute load average's range over the run.
func (m *machine) loadRange() string {
	if len(m.loads) == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.2f–%.2f (%d readings, one before each process)", slices.Min(m.loads), slices.Max(m.loads), len(m.loads))
}

// summary is the machine in one paragraph.
func (m *machine) summary() string {
	wall := m.ended.Sub(m.began).Round(time.Second)
	return fmt.Sprintf("Measured %s UTC (%s wall) on %s/%s, %d CPUs (%s), %s, PostgreSQL %s, commit %s; 1-minute load average %s.",
		m.began.Format("2006-01-02 15:04"), wall, m.goos, m.goarch, m.cores, m.cpu, m.goVersion, m.postgres, orUnknown(m.commit), m.loadRange())
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// cpuModel reads the CPU's model name from /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// postgresVersion asks the server the tests use for its version, with
// psql (TENANCY_TEST_DATABASE_URL, or the superuser on 127.0.0.1:5432).
func postgresVersion() string {
	target := os.Getenv("TENANCY_TEST_DATABASE_URL")
	if target == "" {
		target = "postgres://postgres@127.0.0.1:5432/postgres"
	}
	out, err := exec.Command("psql", "-X", "-A", "-t", "-c", "SHOW server_version", target).Output()
	if err != nil {
		return "unknown"
	}
	v, _, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	return v
}
