package audit_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/internal/tcpproxy"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// throughProxy returns an env option that sends the request path's
// connections (the platform's and every tenant login's) through a proxy
// that can cut them, and the proxy.
func throughProxy(t *testing.T) (envOption, **tcpproxy.Proxy) {
	t.Helper()
	var p *tcpproxy.Proxy
	return func(_ *store.AdminConfig, cfg *store.Config, _ *audit.Config) {
		if cfg.Platform == nil {
			return
		}
		cc := cfg.Platform.ConnConfig
		host := cc.Host
		if strings.HasPrefix(host, "/") {
			host = "127.0.0.1"
		}
		p = tcpproxy.New(t, net.JoinHostPort(host, strconv.Itoa(int(cc.Port))))
		cc.Host, cc.Port, cc.Fallbacks = "127.0.0.1", p.Port(), nil
	}, &p
}

// entriesOf returns the details "i" of the entries of the tenant's log
// whose actor is actor, in sequence order.
func entriesOf(t *testing.T, c *pgx.Conn, table, actor string) []int {
	t.Helper()
	rows, err := c.Query(t.Context(), `SELECT details FROM `+table+` WHERE actor = $1 ORDER BY seq`, actor)
	require.NoError(t, err)
	var is []int
	for rows.Next() {
		var d map[string]json.Number
		require.NoError(t, rows.Scan(&d))
		i, err := d["i"].Int64()
		require.NoError(t, err)
		is = append(is, int(i))
	}
	require.NoError(t, rows.Err())
	return is
}

// requireEachOnceInOrder fails unless is is 0, 1, ..., n-1.
func requireEachOnceInOrder(t *testing.T, is []int, n int) {
	t.Helper()
	require.Len(t, is, n, "every entry once")
	for k, i := range is {
		require.Equal(t, k, i, "the entries in order, none missing, none twice")
	}
}

// holdBatches returns a hook for audit.SetBeforeEverySend that holds the
// first batch sent until queued is closed (so that every entry waits in
// the Writer, which then has batches to send ahead), and holds the batches
// whose first entries are firsts, the first time each is sent, until word
// is closed, after saying so on held.
func holdBatches(queued, word <-chan struct{}, held chan<- int64, firsts ...int64) func(first int64, n int) {
	var mu sync.Mutex // guards calls and done
	calls, done := 0, map[int64]bool{}
	return func(first int64, _ int) {
		mu.Lock()
		calls++
		hold := !done[first] && slices.Contains(firsts, first)
		done[first] = true
		k := calls
		mu.Unlock()
		if k == 1 {
			<-queued
		}
		if hold {
			held <- first
			<-word
		}
	}
}

// TestWriterLosesNoAnswerWithTwoBatchesInFlight cuts the network between a
// Writer and PostgreSQL (a real TCP cut, by a proxy between them, which
// then lets no connection through for a while) while two of its batches
// wait in the database for the log's lock, which the test holds: the
// database goes on and writes them, but their answers never reach the
// Writer. The Writer sends them again, and each entry is
// written exactly once, in order; the chain verifies.
func TestWriterLosesNoAnswerWithTwoBatchesInFlight(t *testing.T) {
	for _, tier := range []tenant.Tier{tenant.TierStandard, tenant.TierEnterprise} {
		t.Run(string(tier), func(t *testing.T) {
			opt, proxy := throughProxy(t)
			e := newEnv(t, tier, opt)
			id, ctx := e.newTenant(t, "cut")
			var role string
			require.NoError(t, e.controlPlane(t).QueryRow(t.Context(), `SELECT role_name FROM tenancy.tenant_logins WHERE tenant_id = $1`, id.String()).Scan(&role))

			queued, word := make(chan struct{}), make(chan struct{})
			held := make(chan int64, 2)
			defer audit.SetBeforeEverySend(holdBatches(queued, word, held, 201, 301))()
			const n = 1000
			w, err := e.log.NewWriter(writerConfig(func(c *audit.WriterConfig) {
				c.MaxBatch, c.MaxPending, c.FlushDelay = 100, n, time.Second
				c.RetryMin, c.RetryMax = 200*time.Millisecond, 400*time.Millisecond
			}))
			require.NoError(t, err)
			for i := range n {
				_, err := w.Append(ctx, audit.Event{Actor: "cut", Action: "append", Outcome: audit.OutcomeSuccess, Details: map[string]any{"i": i}})
				require.NoError(t, err)
			}
			close(queued)
			<-held
			<-held
			waitFor(t, 30*time.Second, func() bool { return e.count(t, id) == 200 })

			c, table := e.superuser(t, id)
			lockTx, err := c.Begin(t.Context())
			require.NoError(t, err)
			_, err = lockTx.Exec(t.Context(), `LOCK TABLE `+strings.TrimSuffix(table, `"audit_log"`)+`"audit_log_writer" IN EXCLUSIVE MODE`)
			require.NoError(t, err)
			close(word)
			cp := e.controlPlane(t)
			waiting := func() int {
				var k int
				require.NoError(t, cp.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
					WHERE usename = $1 AND wait_event_type = 'Lock' AND query LIKE '%audit_log_append%'`, role).Scan(&k))
				return k
			}
			waitFor(t, 30*time.Second, func() bool { return waiting() == 2 })
			// The network goes down: the Writer cannot even cancel its
			// statements (pgx sends a cancel request on a new connection
			// when one fails), so the database goes on with them.
			require.Positive(t, (*proxy).Partition(), "connections cut")
			var cutPIDs []int32
			rows, err := cp.Query(t.Context(), `SELECT pid FROM pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock'`, role)
			require.NoError(t, err)
			cutPIDs, err = pgx.CollectRows(rows, pgx.RowTo[int32])
			require.NoError(t, err)
			require.NoError(t, lockTx.Rollback(t.Context()))
			// The backends whose clients are gone finish their batches.
			waitFor(t, 30*time.Second, func() bool {
				var left bool
				require.NoError(t, cp.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = ANY($1))`, cutPIDs).Scan(&left))
				return !left
			})
			got := e.count(t, id)
			t.Logf("after the cut, the database wrote %d of the two held batches' entries with no one to answer", got-200)
			require.Contains(t, []int64{300, 400}, got, "the database wrote a held batch whole although its client was gone")
			(*proxy).Heal()

			require.NoError(t, w.Flush(ctx))
			require.NoError(t, w.Close(ctx))
			requireEachOnceInOrder(t, entriesOf(t, c, table, "cut"), n)
			rep, err := e.log.Verify(ctx)
			require.NoError(t, err)
			require.Equal(t, int64(n), rep.HeadSeq)
		})
	}
}

// TestWriterLosesNothingWhileItsConnectionsAreCut writes entries through a
// Writer (batches of 50, two in flight) while a proxy between it and
// PostgreSQL cuts every connection every few milliseconds ("cuts"), or
// every few tens of milliseconds, half the time with a short partition
// after ("partitions"): batches are cut before they are sent, while the
// database writes them, and after, before their answers arrive. Flush
// succeeds, every entry is written exactly once and in order, and the
// chain verifies.
func TestWriterLosesNothingWhileItsConnectionsAreCut(t *testing.T) {
	for _, c := range []struct {
		name       string
		n          int
		every      [2]int // milliseconds between cuts: at least, plus up to
		partitions bool
	}{
		{"cuts", 2000, [2]int{2, 15}, false},
		{"partitions", 4000, [2]int{15, 45}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			writeWhileCut(t, c.n, c.every, c.partitions)
		})
	}
}

func writeWhileCut(t *testing.T, n int, every [2]int, partitions bool) {
	opt, proxy := throughProxy(t)
	e := newEnv(t, tenant.TierStandard, opt)
	_, ctx := e.newTenant(t, "chaos")
	w, err := e.log.NewWriter(writerConfig(func(c *audit.WriterConfig) {
		c.MaxBatch, c.FlushDelay = 50, time.Millisecond
		c.RetryMin, c.RetryMax = 5*time.Millisecond, 20*time.Millisecond
	}))
	require.NoError(t, err)
	stop := make(chan struct{})
	var cuts, cutConns atomic.Int64
	var cutter sync.WaitGroup
	cutter.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(every[0]+rand.IntN(every[1])) * time.Millisecond):
			}
			cuts.Add(1)
			if !partitions || rand.IntN(2) == 0 {
				cutConns.Add(int64((*proxy).Cut()))
				continue
			}
			// A short partition: not even a cancel request gets through.
			cutConns.Add(int64((*proxy).Partition()))
			time.Sleep(time.Duration(1+rand.IntN(10)) * time.Millisecond)
			(*proxy).Heal()
		}
	})
	for i := range n {
		_, err := w.Append(ctx, audit.Event{Actor: "chaos", Action: "append", Outcome: audit.OutcomeSuccess, Details: map[string]any{"i": i}})
		require.NoError(t, err)
	}
	flushCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	err = w.Flush(flushCtx)
	close(stop)
	cutter.Wait()
	require.NoError(t, err)
	require.NoError(t, w.Close(ctx))
	t.Logf("%d cuts closed %d connections", cuts.Load(), cutConns.Load())
	require.Greater(t, cutConns.Load(), int64(10), "the cuts hit connections")

	id, _ := tenant.FromContext(ctx)
	c, table := e.superuser(t, id)
	requireEachOnceInOrder(t, entriesOf(t, c, table, "chaos"), n)
	// The pools recover: a connection cut while idle fails its next use,
	// and pgxpool checks one idle for more than a second before it hands
	// it out.
	var rep audit.Report
	require.Eventually(t, func() bool {
		rep, err = e.log.Verify(ctx)
		return err == nil
	}, 10*time.Second, 100*time.Millisecond, "Verify after the cuts stop: %v", err)
	require.Equal(t, int64(n), rep.HeadSeq)
}
