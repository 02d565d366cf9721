package store_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// cpuMeter measures the CPU time spent per benchmark operation by this
// process (the client: pgx and our layer) and by the PostgreSQL backends
// that serve the pool (the server), so that a benchmark reports what each
// side costs, not only the wall-clock time that both sides and the noise of
// a shared machine make together. Server CPU is read from /proc, so it is
// reported only when PostgreSQL runs on this machine and /proc shows its
// processes; both are in clock ticks (10 ms), which over a run of a second
// or more is well below the noise.
type cpuMeter struct {
	pids     []int
	client0  time.Duration
	server0  time.Duration
	serverOK bool
}

// startCPU holds every connection the pool can have at once (so that all of
// them exist and none is created during the run), records their backends'
// process IDs, and resets the benchmark timer. Call it after any warm-up
// and just before b.RunParallel; call report right after.
func startCPU(b *testing.B, pool *pgxpool.Pool) *cpuMeter {
	b.Helper()
	m := &cpuMeter{serverOK: true}
	conns := make([]*pgxpool.Conn, 0, pool.Config().MaxConns)
	for range pool.Config().MaxConns {
		c, err := pool.Acquire(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		m.pids = append(m.pids, int(c.Conn().PgConn().PID()))
	}
	for _, c := range conns {
		c.Release()
	}
	m.client0 = clientCPU()
	m.server0, m.serverOK = serverCPU(m.pids)
	b.ResetTimer()
	return m
}

// report adds client-cpu-µs/op and server-cpu-µs/op to the benchmark's
// results.
func (m *cpuMeter) report(b *testing.B) {
	b.Helper()
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(clientCPU()-m.client0)/float64(time.Microsecond)/n, "client-cpu-µs/op")
	if s, ok := serverCPU(m.pids); ok && m.serverOK {
		b.ReportMetric(float64(s-m.server0)/float64(time.Microsecond)/n, "server-cpu-µs/op")
	}
}

func clientCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPU sums user and system time of the given processes from
// /proc/PID/stat (fields 14 and 15, in USER_HZ = 100 ticks per second on
// Linux). ok is false when any of them cannot be read.
func serverCPU(pids []int) (total time.Duration, ok bool) {
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, false
		}
		// The command name (field 2) may hold spaces; fields are counted
		// from the closing parenthesis.
		s := string(raw)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			return 0, false
		}
		f := strings.Fields(s[i+1:]) // f[0] is field 3
		if len(f) < 13 {
			return 0, false
		}
		utime, err1 := strconv.ParseInt(f[11], 10, 64)
		stime, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		total += time.Duration(utime+stime) * 10 * time.Millisecond
	}
	return total, true
}
