package audit_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// The environment of the helper processes.
const (
	envHelper   = "TENANCY_AUDIT_HELPER" // "append" or "kill"
	envPlatform = "TENANCY_AUDIT_PLATFORM_URL"
	envKEK      = "TENANCY_AUDIT_KEK"
	envTenant   = "TENANCY_AUDIT_TENANT"
	envProc     = "TENANCY_AUDIT_PROC"
	envEach     = "TENANCY_AUDIT_EACH"
	envClusters = "TENANCY_AUDIT_GOV_URL"
)

// helperLog opens, in a helper process, the Log the parent describes in
// the environment, and returns it with a context carrying the tenant.
func helperLog(t *testing.T) (*audit.Log, context.Context) {
	t.Helper()
	cfg, err := store.ParseConfig(os.Getenv(envPlatform), secret)
	require.NoError(t, err)
	if u := os.Getenv(envClusters); u != "" {
		require.NoError(t, cfg.AddCluster(govCluster, u))
	}
	db, err := store.Open(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	km := newManager(t, os.Getenv(envKEK), db.Keysets())
	lcfg := audit.DefaultConfig()
	lcfg.DB, lcfg.Keys, lcfg.CheckpointEvery = db, km, 100
	l, err := audit.New(lcfg)
	require.NoError(t, err)
	return l, tenant.NewContext(t.Context(), tenant.MustParseID(os.Getenv(envTenant)))
}

// helperCmd is a helper process of this test binary running test, for
// tenant id of e.
func (e *env) helperCmd(t *testing.T, test, kind string, id tenant.ID, extra ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), envHelper+"="+kind, envPlatform+"="+e.platformURL, envKEK+"="+e.kekPath, envTenant+"="+id.String())
	if e.second != nil {
		cmd.Env = append(cmd.Env, envClusters+"="+e.second.AdminURL())
	}
	cmd.Env = append(cmd.Env, extra...)
	return cmd
}

// TestAppendHelperProcess is the child of TestConcurrentProcessesKeepOneChain:
// 8 goroutines, 4 through a Writer and 4 through Log.Append, each appending
// TENANCY_AUDIT_EACH events, once the parent says go. It does nothing in a
// normal run.
func TestAppendHelperProcess(t *testing.T) {
	if os.Getenv(envHelper) != "append" {
		return
	}
	l, ctx := helperLog(t)
	proc := os.Getenv(envProc)
	each, err := strconv.Atoi(os.Getenv(envEach))
	require.NoError(t, err)
	w, err := l.NewWriter(writerConfig(func(c *audit.WriterConfig) { c.MaxBatch, c.FlushDelay = 20, time.Millisecond }))
	require.NoError(t, err)
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range each {
				ev := audit.Event{Actor: "proc" + proc, Action: "concurrent.append", Outcome: audit.OutcomeSuccess,
					Details: map[string]any{"p": proc, "g": g, "i": i}}
				var err error
				if g%2 == 0 {
					_, err = w.Append(ctx, ev)
				} else {
					_, err = l.Append(ctx, ev)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, w.Close(ctx))
	require.NoError(t, l.Close(ctx))
	fmt.Println("appended")
}

// TestConcurrentProcessesKeepOneChain: 16 goroutines in 2 processes append
// to one tenant's log at once, through Writers and Log.Append; the log is
// one chain, 1 to N with no gaps and no forks, that verifies, holding
// every event exactly once.
func TestConcurrentProcessesKeepOneChain(t *testing.T) {
	for _, tier := range []tenant.Tier{tenant.TierStandard, tenant.TierEnterprise} {
		t.Run(string(tier), func(t *testing.T) {
			e := newEnv(t, tier)
			id, ctx := e.newTenant(t, "procs")
			const each = 150
			var cmds []*exec.Cmd
			var stdins []io.WriteCloser
			var outs []*strings.Builder
			var ready sync.WaitGroup
			for p := range 2 {
				cmd := e.helperCmd(t, "TestAppendHelperProcess", "append", id, envProc+"="+strconv.Itoa(p), envEach+"="+strconv.Itoa(each))
				in, err := cmd.StdinPipe()
				require.NoError(t, err)
				out, err := cmd.StdoutPipe()
				require.NoError(t, err)
				var buf strings.Builder
				cmd.Stderr = &buf
				require.NoError(t, cmd.Start())
				ready.Add(1)
				go func() {
					sc := bufio.NewScanner(out)
					signalled := false
					for sc.Scan() {
						buf.WriteString(sc.Text() + "\n")
						if sc.Text() == "ready" && !signalled {
							signalled = true
							ready.Done()
						}
					}
					if !signalled {
						ready.Done()
					}
				}()
				cmds, stdins, outs = append(cmds, cmd), append(stdins, in), append(outs, &buf)
			}
			ready.Wait()
			for _, in := range stdins {
				_, err := io.WriteString(in, "go\n")
				require.NoError(t, err)
			}
			for i, cmd := range cmds {
				require.NoError(t, cmd.Wait(), outs[i].String())
				require.Contains(t, outs[i].String(), "appended")
			}

			const n = 2 * 8 * each
			rep, err := e.log.Verify(ctx)
			require.NoError(t, err)
			require.Equal(t, int64(n), rep.Entries)
			require.Equal(t, int64(n), rep.HeadSeq)
			c, table := e.superuser(t, id)
			var count, distinct, lo, hi int64
			require.NoError(t, c.QueryRow(t.Context(), `SELECT count(*), count(DISTINCT details), min(seq), max(seq) FROM `+table).Scan(&count, &distinct, &lo, &hi))
			require.Equal(t, [4]int64{n, n, 1, n}, [4]int64{count, distinct, lo, hi}, "every event once, sequence numbers 1 to N")
			// The processes' entries interleave: they did append at once.
			var switches int64
			require.NoError(t, c.QueryRow(t.Context(), `SELECT count(*) FROM (SELECT actor, lag(actor) OVER (ORDER BY seq) AS prev FROM `+table+`) s
				WHERE actor <> prev`).Scan(&switches))
			require.Greater(t, switches, int64(2))
			cps, err := e.log.Checkpoints(ctx)
			require.NoError(t, err)
			require.NotEmpty(t, cps)
			t.Logf("%d entries, %d switches between the processes, %d checkpoints", n, switches, len(cps))
		})
	}
}

// TestKillHelperProcess is the child of TestKillMidBatchLeavesNoHalfBatch:
// a Writer writes batches of 100. In mode "kill" it sends them one after
// the other; before it sends the third, it says so and waits for the
// parent's word, then sends it, and is killed while the database holds
// it. In mode "kill2" it sends them as a Writer does, a batch ahead while
// the one before is on its way; the third and the fourth each say so and
// wait, then go at once. It does nothing in a normal run.
func TestKillHelperProcess(t *testing.T) {
	mode := os.Getenv(envHelper)
	if mode != "kill" && mode != "kill2" {
		return
	}
	l, ctx := helperLog(t)
	queued, word := make(chan struct{}), make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(word)
	}()
	held := make(chan int64, 2)
	firsts := []int64{201}
	if mode == "kill" {
		// One after the other: the hook holds the third batch, in turn.
		close(queued)
		var batches atomic.Int64
		defer audit.SetBeforeSend(func(n int) {
			if batches.Add(1) == 3 {
				held <- 201
				<-word
			}
		})()
	} else {
		firsts = append(firsts, 301)
		defer audit.SetBeforeEverySend(holdBatches(queued, word, held, firsts...))()
	}
	go func() {
		for first := range held {
			fmt.Printf("sending the batch from %d\n", first)
			_ = os.Stdout.Sync()
		}
	}()
	w, err := l.NewWriter(writerConfig(func(c *audit.WriterConfig) { c.MaxBatch, c.MaxPending, c.FlushDelay = 100, 1000, time.Second }))
	require.NoError(t, err)
	for i := range 1000 {
		_, err := w.Append(ctx, audit.Event{Actor: "killed", Action: "append", Outcome: audit.OutcomeSuccess, Details: map[string]any{"i": i}})
		require.NoError(t, err)
	}
	if mode == "kill2" {
		close(queued)
	}
	require.NoError(t, w.Flush(ctx))
	fmt.Println("flushed") // the parent kills it before this
}

// TestKillMidBatchLeavesNoHalfBatch kills a writing process (SIGKILL)
// while the database is in the middle of its third batch (waiting for the
// log's lock, which the test holds), or, with two batches in flight, of
// its third and fourth: the log then holds whole batches only, never part
// of one, and no gap (the fourth only after the third); the next writer
// continues the chain, which verifies.
func TestKillMidBatchLeavesNoHalfBatch(t *testing.T) {
	for _, c := range []struct {
		mode     string
		inFlight int
	}{{"kill", 1}, {"kill2", 2}} {
		for _, tier := range []tenant.Tier{tenant.TierStandard, tenant.TierEnterprise} {
			t.Run(fmt.Sprintf("%s/inFlight=%d", tier, c.inFlight), func(t *testing.T) {
				killMidBatch(t, tier, c.mode, c.inFlight)
			})
		}
	}
}

func killMidBatch(t *testing.T, tier tenant.Tier, mode string, inFlight int) {
	e := newEnv(t, tier)
	id, ctx := e.newTenant(t, "kill")
	var role string
	require.NoError(t, e.controlPlane(t).QueryRow(t.Context(), `SELECT role_name FROM tenancy.tenant_logins WHERE tenant_id = $1`, id.String()).Scan(&role))
	cmd := e.helperCmd(t, "TestKillHelperProcess", mode, id)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(out)
	var log strings.Builder
	sending := 0
	for sending < inFlight && sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "sending ") {
			sending++
		}
	}
	if sending != inFlight {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the child never reached its held batches:\n%s\n%s", log.String(), stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	// The first two batches were not held.
	waitFor(t, 30*time.Second, func() bool { return e.count(t, id) == 200 })

	// Hold the log's lock, let the child send its batch, and kill
	// it while its statement waits for the lock.
	c, table := e.superuser(t, id)
	lockTx, err := c.Begin(t.Context())
	require.NoError(t, err)
	_, err = lockTx.Exec(t.Context(), `LOCK TABLE `+strings.TrimSuffix(table, `"audit_log"`)+`"audit_log_writer" IN EXCLUSIVE MODE`)
	require.NoError(t, err)
	_, err = io.WriteString(stdin, "go\n")
	require.NoError(t, err)
	cp := e.controlPlane(t)
	waitFor(t, 30*time.Second, func() bool {
		var waiting int
		require.NoError(t, cp.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
					WHERE usename = $1 AND wait_event_type = 'Lock' AND query LIKE '%audit_log_append%'`, role).Scan(&waiting))
		return waiting == inFlight
	})
	require.NoError(t, cmd.Process.Kill())
	require.Error(t, cmd.Wait(), "killed")
	require.NoError(t, lockTx.Rollback(t.Context()))
	// The dead client's backend finishes or abandons the batch.
	waitFor(t, 30*time.Second, func() bool {
		var busy bool
		require.NoError(t, cp.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE usename = $1 AND state = 'active')`, role).Scan(&busy))
		return !busy
	})
	n := e.count(t, id)
	whole := []int64{200, 300}
	if inFlight == 2 {
		whole = append(whole, 400)
	}
	require.Contains(t, whole, n, "whole batches only")
	t.Logf("%d batches held and killed: %d of their entries written", inFlight, n-200)

	got := e.appendN(t, ctx, 50, 25)
	require.Equal(t, n+1, got[0].Seq, "no gap")
	rep, err := e.log.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, n+50, rep.HeadSeq)
	// The killed writer's events, in order, none missing.
	requireEachOnceInOrder(t, entriesOf(t, c, table, "killed"), int(n))
}
