package store_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/store"
)

// cpuMeter measures the CPU time spent per benchmark operation by this
// process (the client: pgx and our layer) and by the PostgreSQL backends
// that serve the benchmark (the server), so that a benchmark reports what
// each side costs, not only the wall-clock time that both sides and the
// noise of a shared machine make together. Server CPU is read from /proc,
// so it is reported only when PostgreSQL runs on this machine and /proc
// shows its processes; both are in clock ticks (10 ms), which over a run of
// a second or more is well below the noise.
type cpuMeter struct {
	procs    []backendProc
	client0  time.Duration
	server0  time.Duration
	serverOK bool
}

// backendProc identifies a PostgreSQL backend process by its PID and start
// time, so that a PID reused by another process is not counted.
type backendProc struct {
	pid   int
	start string // field 22 of /proc/PID/stat
}

// startCPU records the backends' processes (PIDs from poolBackends or
// dbBackends) and this process's CPU time, and resets the benchmark timer.
// Call it after any warm-up and just before b.RunParallel; call report
// right after.
func startCPU(b *testing.B, pids []int) *cpuMeter {
	b.Helper()
	m := &cpuMeter{}
	m.procs, m.serverOK = backendProcs(pids)
	if !m.serverOK {
		b.Logf("server-cpu-µs/op left out: the backends' processes are not visible in /proc here (PostgreSQL on another host or in a container?)")
	}
	m.client0 = clientCPU()
	m.server0, _ = m.serverCPU()
	b.ResetTimer()
	return m
}

// report adds client-cpu-µs/op and server-cpu-µs/op to the benchmark's
// results. Server CPU counts the recorded backends, not PostgreSQL's
// background processes (WAL writer, checkpointer).
func (m *cpuMeter) report(b *testing.B) {
	b.Helper()
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(clientCPU()-m.client0)/float64(time.Microsecond)/n, "client-cpu-µs/op")
	if !m.serverOK {
		return
	}
	s, ok := m.serverCPU()
	if !ok {
		b.Logf("server-cpu-µs/op left out: a backend ended during the run")
		return
	}
	b.ReportMetric(float64(s-m.server0)/float64(time.Microsecond)/n, "server-cpu-µs/op")
}

// poolBackends holds every connection pool can have at once, so that all
// of them exist and none is created during the run, and returns their
// backends' PIDs.
func poolBackends(b *testing.B, pool *pgxpool.Pool) []int {
	b.Helper()
	n := int(pool.Config().MaxConns)
	conns := make([]*pgxpool.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	pids := make([]int, 0, n)
	for range n {
		c, err := pool.Acquire(b.Context())
		require.NoError(b, err)
		conns = append(conns, c)
		pids = append(pids, int(c.Conn().PgConn().PID()))
	}
	return pids
}

// dbBackends holds n connections of db for the tenant of ctx at once, each
// in a transaction, so that n exist, and returns their backends' PIDs. n
// must not exceed what db may open for the tenant.
func dbBackends(b *testing.B, db *store.DB, ctx context.Context, n int) []int {
	b.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var got, wg sync.WaitGroup
	release := make(chan struct{})
	pids := make([]int, n)
	errs := make([]error, n)
	got.Add(n)
	for i := range n {
		wg.Go(func() {
			reported := false
			errs[i] = db.Tx(ctx, func(tx *store.Tx) error {
				err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pids[i])
				reported = true
				got.Done()
				if err != nil {
					return err
				}
				select {
				case <-release:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			if !reported {
				got.Done()
			}
		})
	}
	got.Wait()
	close(release)
	wg.Wait()
	for _, err := range errs {
		require.NoError(b, err)
	}
	return pids
}

func clientCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// statFields returns the fields of /proc/PID/stat from field 3 on (the
// command name, field 2, may hold spaces and is skipped) and the command
// name.
func statFields(pid int) (comm string, f []string, ok bool) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", nil, false
	}
	s := string(raw)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return "", nil, false
	}
	f = strings.Fields(s[j+1:]) // f[0] is field 3
	if len(f) < 20 {
		return "", nil, false
	}
	return s[i+1 : j], f, true
}

// backendProcs checks that every PID is a local postgres process and
// records its start time.
func backendProcs(pids []int) ([]backendProc, bool) {
	procs := make([]backendProc, 0, len(pids))
	for _, pid := range pids {
		comm, f, ok := statFields(pid)
		if !ok || comm != "postgres" {
			return nil, false
		}
		procs = append(procs, backendProc{pid: pid, start: f[19]})
	}
	return procs, len(procs) > 0
}

// serverCPU sums user and system time (fields 14 and 15, in USER_HZ = 100
// ticks per second on Linux) of the recorded backends. ok is false when
// any of them has ended or its PID now names another process.
func (m *cpuMeter) serverCPU() (total time.Duration, ok bool) {
	for _, p := range m.procs {
		_, f, ok := statFields(p.pid)
		if !ok || f[19] != p.start {
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
