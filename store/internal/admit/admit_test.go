package admit_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/rtmx-ai/tenancy/store/internal/admit"
)

func TestNewRejectsInvalidConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  admit.Config
		want string
	}{
		{admit.Config{}, "admit: Config.MaxConns must be > 0, got 0"},
		{admit.Config{MaxConns: -1}, "admit: Config.MaxConns must be > 0, got -1"},
		{admit.Config{MaxConns: 1, MinResidency: -time.Second}, "admit: Config.MinResidency must be >= 0, got -1s"},
		{admit.Config{MaxConns: 1, ConnectRate: -1}, "admit: Config.ConnectRate must be >= 0, got -1"},
		{admit.Config{MaxConns: 1, ConnectRate: rate.Limit(math.NaN())}, "admit: Config.ConnectRate must be >= 0, got NaN"},
		{admit.Config{MaxConns: 1, ConnectRate: 1, ConnectBurst: -1}, "admit: Config.ConnectBurst must be >= 0, got -1"},
		{admit.Config{MaxConns: 1, ConnectBurst: 3}, "admit: Config.ConnectBurst must be 0 when Config.ConnectRate is 0 (unlimited), got 3"},
		{admit.Config{MaxConns: 1, EvictRetry: -time.Millisecond}, "admit: Config.EvictRetry must be >= 0, got -1ms"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			c, err := admit.New(tc.cfg)
			require.EqualError(t, err, tc.want)
			require.Nil(t, c)
		})
	}
}

func TestNewAcceptsValidConfig(t *testing.T) {
	for _, cfg := range []admit.Config{
		{MaxConns: 1},
		{MaxConns: 1, ConnectRate: 5},
		{MaxConns: 1, ConnectRate: rate.Inf, ConnectBurst: 2},
		{MaxConns: 100, MinResidency: time.Minute, ConnectRate: 50, ConnectBurst: 10, EvictRetry: time.Second},
	} {
		_, err := admit.New(cfg)
		require.NoError(t, err, "%+v", cfg)
	}
}

// TestCapHolds dials from 64 goroutines over 4 keys with a cap of 5 and
// checks, on the server and in Stats, that no more than 5 are ever open.
func TestCapHolds(t *testing.T) {
	const (
		maxConns   = 5
		goroutines = 64
		keys       = 4
		rounds     = 20
	)
	srv := newServer(t, false)
	c := mustNew(t, admit.Config{MaxConns: maxConns})
	dials := make([]dialFunc, keys)
	for k := range dials {
		dials[k] = c.Dial(fmt.Sprint("tenant-", k), srv.dial)
	}

	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	var maxStats sync.Mutex
	seen := 0
	for g := range goroutines {
		wg.Go(func() {
			dial := dials[g%keys]
			for range rounds {
				conn, err := dial(t.Context(), "tcp", srv.addr())
				if err != nil {
					errs <- err
					return
				}
				open := c.Stats().Open
				maxStats.Lock()
				seen = max(seen, open)
				maxStats.Unlock()
				time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
				if err := hangUp(conn); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	_, serverMax, accepted := srv.stats()
	require.LessOrEqual(t, serverMax, maxConns, "connections open at the server at once")
	require.LessOrEqual(t, seen, maxConns, "Stats.Open")
	require.Equal(t, goroutines*rounds, accepted)
	s := c.Stats()
	require.Equal(t, int64(goroutines*rounds), s.Connects)
	require.Positive(t, s.Waits)
	requireIdle(t, c)
}

// TestPoolsShareCap runs pools that keep idle connections, so that only
// eviction lets a waiting key in, and checks that every request is
// served and the cap holds.
func TestPoolsShareCap(t *testing.T) {
	const (
		maxConns   = 5
		goroutines = 64
		keys       = 8
		rounds     = 20
	)
	srv := newServer(t, false)
	c := mustNew(t, admit.Config{MaxConns: maxConns, EvictRetry: time.Millisecond})
	pools := make([]*pool, keys)
	for k := range pools {
		pools[k] = newPool(t, c, fmt.Sprint("tenant-", k), srv.dial)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			p := pools[g%keys]
			for range rounds {
				ic, err := p.acquire(ctx)
				if err != nil {
					errs <- err
					return
				}
				time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
				p.release(ic)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	_, serverMax, _ := srv.stats()
	require.LessOrEqual(t, serverMax, maxConns)
	s := c.Stats()
	require.LessOrEqual(t, s.Open, maxConns)
	require.Zero(t, s.Waiting)
	require.Positive(t, s.Evictions, "eviction let waiting keys in")

	for _, p := range pools {
		p.closeIdle()
	}
	s = c.Stats()
	require.Zero(t, s.Open)
	require.Equal(t, keys, s.Keys, "keys with evictors")
}

func TestDialFailureReleasesSlot(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 1})
	errRefused := errors.New("connection refused")
	dial := c.Dial("a", func(context.Context, string, string) (net.Conn, error) { return nil, errRefused })
	for range 3 {
		_, err := dial(t.Context(), "tcp", "db:5432")
		require.ErrorIs(t, err, errRefused)
		requireIdle(t, c)
	}
	s := c.Stats()
	require.Equal(t, int64(3), s.ConnectFailures)
	require.Zero(t, s.Connects)
}

func TestDialReturningNothingReleasesSlot(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 1})
	dial := c.Dial("a", func(context.Context, string, string) (net.Conn, error) { return nil, nil })
	_, err := dial(t.Context(), "tcp", "db:5432")
	require.ErrorContains(t, err, "admit: dial tcp db:5432 returned neither a connection nor an error")
	requireIdle(t, c)
	require.Equal(t, int64(1), c.Stats().ConnectFailures)
}

func TestDialPanicReleasesSlot(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 1})
	dial := c.Dial("a", func(context.Context, string, string) (net.Conn, error) { panic("dialer bug") })
	require.PanicsWithValue(t, "dialer bug", func() { dial(t.Context(), "tcp", "db:5432") })
	requireIdle(t, c)
}

func TestCloseReleasesSlotOnce(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 2})
	dial := c.Dial("a", pipeDial)
	first, err := dial(t.Context(), "tcp", "pipe")
	require.NoError(t, err)
	second, err := dial(t.Context(), "tcp", "pipe")
	require.NoError(t, err)
	require.Equal(t, 2, c.Stats().Open)

	require.NoError(t, first.Close())
	first.Close()
	first.Close()
	require.Equal(t, 1, c.Stats().Open, "closing one connection three times frees one slot")

	third, err := dial(t.Context(), "tcp", "pipe")
	require.NoError(t, err)
	require.Equal(t, 2, c.Stats().Open)
	second.Close()
	third.Close()
	requireIdle(t, c)
}

func TestServerCloseReleasesSlot(t *testing.T) {
	srv := newServer(t, true)
	c := mustNew(t, admit.Config{MaxConns: 1})
	dial := c.Dial("a", srv.dial)
	for range 3 {
		conn, err := dial(t.Context(), "tcp", "")
		require.NoError(t, err)
		_, err = conn.Read(make([]byte, 1))
		require.Error(t, err, "the server hung up")
		require.Equal(t, 1, c.Stats().Open, "the slot is held until the client closes")
		conn.Close()
		requireIdle(t, c)
	}
}

// TestPgconnFailedConnectReleasesSlots connects pgconn through the
// Controller to a server that hangs up at once, as one refusing
// authentication does. pgconn closes the connection in the background after
// dialing a cancel request through the same DialFunc, so each attempt costs
// two dials; every slot comes back.
func TestPgconnFailedConnectReleasesSlots(t *testing.T) {
	const attempts = 3
	srv := newServer(t, true)
	c := mustNew(t, admit.Config{MaxConns: 1})
	cfg, err := pgconn.ParseConfig("postgres://tenant@" + srv.addr() + "/db?sslmode=disable&connect_timeout=5")
	require.NoError(t, err)
	cfg.DialFunc = c.Dial("a", cfg.DialFunc)
	for range attempts {
		_, err := pgconn.ConnectConfig(t.Context(), cfg)
		require.Error(t, err)
	}
	eventually(t, func() bool {
		s := c.Stats()
		_, _, accepted := srv.stats()
		return s.Connects == 2*attempts && accepted == 2*attempts && s.Open == 0
	}, "connections and cancel requests done")
	requireIdle(t, c)
}

func TestDroppedConnReleasesSlot(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 1})
	func() {
		conn, err := c.Dial("a", pipeDial)(t.Context(), "tcp", "pipe")
		require.NoError(t, err)
		_ = conn // dropped without Close
	}()
	eventually(t, func() bool {
		runtime.GC()
		return c.Stats().Open == 0
	}, "slot of an unreachable connection")
	requireIdle(t, c)
}

func TestNilDialUsesNetDialer(t *testing.T) {
	srv := newServer(t, false)
	c := mustNew(t, admit.Config{MaxConns: 1})
	conn, err := c.Dial("a", nil)(t.Context(), "tcp", srv.addr())
	require.NoError(t, err)
	require.Equal(t, 1, c.Stats().Open)
	require.NoError(t, hangUp(conn))
	requireIdle(t, c)
}

// TestQueueIsFIFO queues dials of several keys behind a cap of 1 and checks
// that they are served in arrival order.
func TestQueueIsFIFO(t *testing.T) {
	const n = 10
	c := mustNew(t, admit.Config{MaxConns: 1})
	held, err := c.Dial("held", pipeDial)(t.Context(), "tcp", "pipe")
	require.NoError(t, err)

	served := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		dial := c.Dial(fmt.Sprint("tenant-", i%3), pipeDial)
		wg.Go(func() {
			conn, err := dial(t.Context(), "tcp", "pipe")
			if err != nil {
				served <- -1
				return
			}
			served <- i
			conn.Close()
		})
		waitingIs(t, c, i+1)
	}
	held.Close()
	wg.Wait()
	close(served)
	var order []int
	for i := range served {
		order = append(order, i)
	}
	require.Equal(t, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, order)
	s := c.Stats()
	require.Equal(t, int64(n), s.Waits)
	require.Positive(t, s.WaitTime)
	requireIdle(t, c)
}

// TestReleaseHandsSlotToWaiter checks that a freed slot goes to the queued
// dial and cannot be taken by a dial that arrives after it.
func TestReleaseHandsSlotToWaiter(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 1})
	held, err := c.Dial("a", pipeDial)(t.Context(), "tcp", "pipe")
	require.NoError(t, err)
	queued := goDial(t.Context(), c.Dial("b", pipeDial))
	waitingIs(t, c, 1)

	held.Close()
	s := c.Stats()
	require.Equal(t, 1, s.Open, "the slot went straight to the waiter")
	require.Zero(t, s.Waiting)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err = c.Dial("c", pipeDial)(ctx, "tcp", "pipe")
	require.ErrorIs(t, err, context.DeadlineExceeded)

	r := <-queued
	require.NoError(t, r.err)
	r.conn.Close()
	requireIdle(t, c)
}

func TestOwnContextStopsWait(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 1})
	held, err := c.Dial("a", pipeDial)(t.Context(), "tcp", "pipe")
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err = c.Dial("b", pipeDial)(ctx, "tcp", "pipe")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.EqualError(t, err, "admit: waiting for a connection slot: context deadline exceeded")
	s := c.Stats()
	require.Equal(t, 1, s.Open)
	require.Zero(t, s.Waiting)
	require.Equal(t, 1, s.Keys, "the key that gave up is forgotten")

	held.Close()
	requireIdle(t, c)
}

// TestRequestContextStopsWait dials as pgxpool does, with a context that
// keeps the request's values but not its cancellation.
func TestRequestContextStopsWait(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 1})
	held, err := c.Dial("a", pipeDial)(t.Context(), "tcp", "pipe")
	require.NoError(t, err)

	req, cancel := context.WithCancel(t.Context())
	result := goDial(context.WithoutCancel(admit.WithRequest(req)), c.Dial("b", pipeDial))
	waitingIs(t, c, 1)
	cancel()
	r := <-result
	require.ErrorIs(t, r.err, context.Canceled)
	require.EqualError(t, r.err, "admit: waiting for a connection slot: request: context canceled")
	require.Equal(t, 1, c.Stats().Open)

	// Without WithRequest, only the dial's own context counts.
	req, cancel = context.WithCancel(t.Context())
	own, cancelOwn := context.WithCancel(context.WithoutCancel(req))
	result = goDial(own, c.Dial("b", pipeDial))
	waitingIs(t, c, 1)
	cancel()
	select {
	case r := <-result:
		t.Fatalf("dial stopped when a context it does not carry was cancelled: %v", r.err)
	case <-time.After(20 * time.Millisecond):
	}
	cancelOwn()
	require.ErrorIs(t, (<-result).err, context.Canceled)

	held.Close()
	requireIdle(t, c)
}

func TestDoneContextTakesNoSlot(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 1})
	called := false
	dial := c.Dial("a", func(context.Context, string, string) (net.Conn, error) { called = true; return nil, nil })
	req, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := dial(admit.WithRequest(req), "tcp", "pipe")
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, called)
	requireIdle(t, c)
}

// TestCancelDuringHandoffLeaksNothing cancels a waiter's request at the
// moment the slot it waits for is freed, many times.
func TestCancelDuringHandoffLeaksNothing(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 1})
	dial := c.Dial("a", pipeDial)
	var got, gaveUp int
	for range 1000 {
		held, err := dial(t.Context(), "tcp", "pipe")
		require.NoError(t, err)
		req, cancel := context.WithCancel(t.Context())
		result := goDial(context.WithoutCancel(admit.WithRequest(req)), c.Dial("b", pipeDial))
		waitingIs(t, c, 1)

		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { <-start; cancel() })
		wg.Go(func() { <-start; held.Close() })
		close(start)
		wg.Wait()

		r := <-result
		if r.err == nil {
			got++
			r.conn.Close()
		} else {
			gaveUp++
			require.ErrorIs(t, r.err, context.Canceled)
		}
		requireIdle(t, c)
	}
	t.Logf("served %d, gave up %d", got, gaveUp)
}

// TestCancellingWaitersLeakNothing has waiters give up at random moments
// while others come and go.
func TestCancellingWaitersLeakNothing(t *testing.T) {
	const goroutines, rounds = 32, 50
	c := mustNew(t, admit.Config{MaxConns: 2, EvictRetry: time.Millisecond})
	var wg sync.WaitGroup
	for g := range goroutines {
		dial := c.Dial(fmt.Sprint("tenant-", g%4), pipeDial)
		wg.Go(func() {
			for range rounds {
				req, cancel := context.WithTimeout(t.Context(), time.Duration(rand.IntN(500))*time.Microsecond)
				conn, err := dial(context.WithoutCancel(admit.WithRequest(req)), "tcp", "pipe")
				cancel()
				if err == nil {
					time.Sleep(time.Duration(rand.IntN(100)) * time.Microsecond)
					conn.Close()
				}
			}
		})
	}
	wg.Wait()
	requireIdle(t, c)
}

// TestEvictionServesWaiter fills the cap with idle connections of two keys
// and checks that a dial of a third key gets in by eviction of the least
// recently active key, which is given MinResidency.
func TestEvictionServesWaiter(t *testing.T) {
	srv := newServer(t, false)
	c := mustNew(t, admit.Config{MaxConns: 2, MinResidency: 10 * time.Minute, EvictRetry: time.Millisecond})
	old := time.Now().Add(-time.Hour)

	var mu sync.Mutex // guards asked
	var asked []string
	pools := map[string]*pool{}
	for _, key := range []string{"a", "b"} {
		p := &pool{key: key, c: c, dial: c.Dial(key, srv.dial)}
		pools[key] = p
		conn, err := p.dial(t.Context(), "tcp", "")
		require.NoError(t, err)
		p.put(idleConn{conn, old})
		unregister := c.Register(key, func(minAge time.Duration) bool {
			mu.Lock()
			asked = append(asked, fmt.Sprintf("%s %v", key, minAge))
			mu.Unlock()
			return p.evict(minAge)
		})
		t.Cleanup(func() { unregister(); p.closeIdle() })
	}
	unregister := c.Register("w", func(time.Duration) bool {
		t.Error("evictor of the waiting key was called")
		return false
	})
	defer unregister()

	conn, err := c.Dial("w", srv.dial)(t.Context(), "tcp", "")
	require.NoError(t, err)
	mu.Lock()
	require.Equal(t, []string{"a 10m0s"}, asked, "a is least recently active; b is not asked once a evicts")
	mu.Unlock()
	require.Zero(t, pools["a"].idleCount())
	require.Equal(t, 1, pools["b"].idleCount())
	s := c.Stats()
	require.Equal(t, int64(1), s.Evictions)
	require.Equal(t, 2, s.Open)
	require.NoError(t, hangUp(conn))
}

// TestEvictionRespectsMinResidency checks that a waiter gets no slot from
// connections younger than MinResidency.
func TestEvictionRespectsMinResidency(t *testing.T) {
	srv := newServer(t, false)
	c := mustNew(t, admit.Config{MaxConns: 1, MinResidency: time.Hour, EvictRetry: time.Millisecond})
	a := newPool(t, c, "a", srv.dial)
	ic, err := a.acquire(t.Context())
	require.NoError(t, err)
	a.release(ic)
	require.Equal(t, 1, a.idleCount())

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	_, err = c.Dial("b", srv.dial)(ctx, "tcp", "")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, 1, a.idleCount())
	require.Zero(t, c.Stats().Evictions)
}

// TestEvictionOrderIsLRU records the order in which a waiter asks the
// evictors, none of which evicts.
func TestEvictionOrderIsLRU(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 3, EvictRetry: time.Millisecond})
	var mu sync.Mutex // guards asked
	var asked []string
	for _, key := range []string{"a", "b", "c"} {
		conn, err := c.Dial(key, pipeDial)(t.Context(), "tcp", "pipe")
		require.NoError(t, err)
		defer conn.Close()
		defer c.Register(key, func(time.Duration) bool {
			mu.Lock()
			defer mu.Unlock()
			asked = append(asked, key)
			return false
		})()
	}
	// firstRound queues a dial of key, waits for one round of eviction over
	// n keys and gives up.
	firstRound := func(key string, n int) []string {
		t.Helper()
		mu.Lock()
		asked = nil
		mu.Unlock()
		ctx, cancel := context.WithCancel(t.Context())
		result := goDial(ctx, c.Dial(key, pipeDial))
		eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(asked) >= n
		}, "evictors asked")
		cancel()
		require.ErrorIs(t, (<-result).err, context.Canceled)
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), asked[:n]...)
	}

	require.Equal(t, []string{"a", "b", "c"}, firstRound("c", 3), "slots taken a, b, c; the waiter's own key is asked last")
	c.Touch("a")
	require.Equal(t, []string{"b", "c", "a"}, firstRound("w", 3))
	c.Touch("b")
	require.Equal(t, []string{"c", "a", "b"}, firstRound("b", 3))
	c.Touch("unknown")
	require.Equal(t, []string{"c", "a", "b"}, firstRound("w", 3))
}

func TestUnregister(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 1, EvictRetry: time.Millisecond})
	held, err := c.Dial("a", pipeDial)(t.Context(), "tcp", "pipe")
	require.NoError(t, err)
	var mu sync.Mutex // guards calls
	calls := map[string]int{}
	register := func(name string) func() {
		return c.Register("a", func(time.Duration) bool {
			mu.Lock()
			defer mu.Unlock()
			calls[name]++
			return false
		})
	}
	unregisterOld := register("old")
	unregisterNew := register("new")
	unregisterOld()
	unregisterOld()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	_, err = c.Dial("b", pipeDial)(ctx, "tcp", "pipe")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	mu.Lock()
	require.Zero(t, calls["old"])
	require.Positive(t, calls["new"])
	mu.Unlock()

	held.Close()
	require.Equal(t, 1, c.Stats().Keys, "a key with an evictor is tracked")
	unregisterNew()
	requireIdle(t, c)

	noop := c.Register("a", nil)
	noop()
	requireIdle(t, c)
}

// TestConnectRateCountsTokens uses a rate so slow that no token is added
// during the test: the burst is all there is, shared by all keys.
func TestConnectRateCountsTokens(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 10, ConnectRate: rate.Every(time.Hour), ConnectBurst: 2})
	a, err := c.Dial("a", pipeDial)(t.Context(), "tcp", "pipe")
	require.NoError(t, err)
	defer a.Close()
	b, err := c.Dial("b", pipeDial)(t.Context(), "tcp", "pipe")
	require.NoError(t, err)
	defer b.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err = c.Dial("c", pipeDial)(ctx, "tcp", "pipe")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.EqualError(t, err, "admit: waiting for the connect rate limit: context deadline exceeded")

	req, cancelReq := context.WithCancel(t.Context())
	result := goDial(context.WithoutCancel(admit.WithRequest(req)), c.Dial("a", pipeDial))
	time.Sleep(10 * time.Millisecond)
	cancelReq()
	require.ErrorIs(t, (<-result).err, context.Canceled)

	s := c.Stats()
	require.Equal(t, 2, s.Open, "slots of dials that gave up on the rate limit are free")
	require.Equal(t, int64(2), s.Connects)
	require.Zero(t, s.ConnectFailures)
	require.Zero(t, s.Waits, "the rate limit is not a wait for a slot")
}

func TestConnectBurstDefaultsToOne(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 10, ConnectRate: rate.Every(time.Hour)})
	conn, err := c.Dial("a", pipeDial)(t.Context(), "tcp", "pipe")
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err = c.Dial("a", pipeDial)(ctx, "tcp", "pipe")
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

// TestConnectRateSpacesDials checks only a lower bound on time: at 10/s
// with a burst of 1, the 4 dials after the first wait 100ms each.
func TestConnectRateSpacesDials(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 10, ConnectRate: 10})
	dial := c.Dial("a", pipeDial)
	start := time.Now()
	for range 5 {
		conn, err := dial(t.Context(), "tcp", "pipe")
		require.NoError(t, err)
		conn.Close()
	}
	require.GreaterOrEqual(t, time.Since(start), 350*time.Millisecond)
}

func TestUnlimitedRate(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 10, ConnectRate: rate.Inf, ConnectBurst: 1})
	dial := c.Dial("a", pipeDial)
	for range 100 {
		conn, err := dial(t.Context(), "tcp", "pipe")
		require.NoError(t, err)
		conn.Close()
	}
	require.Equal(t, int64(100), c.Stats().Connects)
}

// TestKickServesAWaiterAtOnce: with an EvictRetry far longer than the
// test, a waiting dial of key b is served as soon as a's connection goes
// back idle and Kick is called, not at its next retry.
func TestKickServesAWaiterAtOnce(t *testing.T) {
	c := mustNew(t, admit.Config{MaxConns: 1, EvictRetry: time.Hour})
	srv := newServer(t, false)
	a := newPool(t, c, "a", srv.dial)
	b := newPool(t, c, "b", srv.dial)
	held, err := a.acquire(t.Context())
	require.NoError(t, err)
	// Called after a's own evictor in each round: tells when the waiter's
	// first round is over.
	rounds := make(chan struct{}, 8)
	defer c.Register("a", func(time.Duration) bool { rounds <- struct{}{}; return false })()
	got := make(chan error, 1)
	go func() {
		ic, err := b.acquire(t.Context())
		if err == nil {
			b.release(ic)
		}
		got <- err
	}()
	waitingIs(t, c, 1)
	<-rounds // its first eviction found nothing idle
	a.release(held)
	select {
	case err := <-got:
		t.Fatalf("served before Kick: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	c.Kick()
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Kick did not make the waiter evict")
	}
	c.Kick() // nobody waits: nothing happens
}
