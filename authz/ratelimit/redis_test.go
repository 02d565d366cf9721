package ratelimit_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/internal/testenv"
	"github.com/rtmx-ai/tenancy/tenant"
)

// redisAddr is the Redis server the tests use: $TENANCY_TEST_REDIS, or
// 127.0.0.1:6379.
func redisAddr() string {
	if a := os.Getenv("TENANCY_TEST_REDIS"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// missing fails the test in CI and skips it elsewhere, naming what is
// missing.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if testenv.InCI() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// redisClient returns a client of the test Redis server, closed when the
// test ends.
func redisClient(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr()})
	t.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.Ping(t.Context()).Err(); err != nil {
		missing(t, "no Redis at %s (set TENANCY_TEST_REDIS): %v", redisAddr(), err)
	}
	return rdb
}

// testPrefix returns a key prefix of this process and test alone, and
// deletes the keys under it when the test ends.
func testPrefix(t testing.TB, rdb *redis.Client) string {
	t.Helper()
	name := regexp.MustCompile(`[^A-Za-z0-9_]`).ReplaceAllString(t.Name(), "_")
	prefix := fmt.Sprintf("tenancytest:%.20s:%d:%d:", name, os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() { deleteKeys(t, rdb, "rate:"+prefix+"*") })
	return prefix
}

func deleteKeys(t testing.TB, rdb *redis.Client, match string) {
	t.Helper()
	ctx := context.Background() // t.Context is done in Cleanup
	iter := rdb.Scan(ctx, 0, match, 100).Iterator()
	for iter.Next(ctx) {
		require.NoError(t, rdb.Del(ctx, iter.Val()).Err())
	}
	require.NoError(t, iter.Err())
}

func keys(t testing.TB, rdb *redis.Client, match string) []string {
	t.Helper()
	var out []string
	iter := rdb.Scan(t.Context(), 0, match, 100).Iterator()
	for iter.Next(t.Context()) {
		out = append(out, iter.Val())
	}
	require.NoError(t, iter.Err())
	return out
}

func redisConfig(q ratelimit.Quota, prefix string, fb ratelimit.Fallback) ratelimit.RedisConfig {
	cfg := ratelimit.DefaultRedisConfig()
	cfg.Config = config(q, nil)
	cfg.Prefix = prefix
	cfg.Fallback = fb
	return cfg
}

func newRedis(t testing.TB, rdb redis.UniversalClient, cfg ratelimit.RedisConfig) *ratelimit.Redis {
	t.Helper()
	l, err := ratelimit.NewRedis(rdb, cfg)
	require.NoError(t, err)
	return l
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestNewRedisRefusesBadConfig(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: freeAddr(t)})
	defer rdb.Close()
	for _, tc := range badConfigs() {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ratelimit.DefaultRedisConfig()
			cfg.Config = tc.cfg
			_, err := ratelimit.NewRedis(rdb, cfg)
			require.ErrorIs(t, err, ratelimit.ErrInvalidConfig)
			require.ErrorContains(t, err, tc.field)
			require.Equal(t, 1, strings.Count(err.Error(), "ratelimit:"), "one prefix: %v", err)
		})
	}
	for _, tc := range []struct {
		name, field string
		change      func(*ratelimit.RedisConfig)
	}{
		{"empty prefix", "RedisConfig.Prefix", func(c *ratelimit.RedisConfig) { c.Prefix = "" }},
		{"prefix without a colon", "RedisConfig.Prefix", func(c *ratelimit.RedisConfig) { c.Prefix = "app" }},
		{"prefix with a glob", "RedisConfig.Prefix", func(c *ratelimit.RedisConfig) { c.Prefix = "app*:" }},
		{"prefix with a space", "RedisConfig.Prefix", func(c *ratelimit.RedisConfig) { c.Prefix = "a b:" }},
		{"prefix with a newline", "RedisConfig.Prefix", func(c *ratelimit.RedisConfig) { c.Prefix = "a\r\n:" }},
		{"long prefix", "RedisConfig.Prefix", func(c *ratelimit.RedisConfig) { c.Prefix = strings.Repeat("a", 64) + ":" }},
		{"zero fallback", "RedisConfig.Fallback", func(c *ratelimit.RedisConfig) { c.Fallback = "" }},
		{"unknown fallback", "RedisConfig.Fallback", func(c *ratelimit.RedisConfig) { c.Fallback = "open" }},
		{"zero timeout", "RedisConfig.Timeout", func(c *ratelimit.RedisConfig) { c.Timeout = 0 }},
		{"negative retry", "RedisConfig.Retry", func(c *ratelimit.RedisConfig) { c.Retry = -time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ratelimit.DefaultRedisConfig()
			tc.change(&cfg)
			_, err := ratelimit.NewRedis(rdb, cfg)
			require.ErrorIs(t, err, ratelimit.ErrInvalidConfig)
			require.ErrorContains(t, err, tc.field)
		})
	}
	_, err := ratelimit.NewRedis(nil, ratelimit.DefaultRedisConfig())
	require.ErrorIs(t, err, ratelimit.ErrInvalidConfig)
	_, err = ratelimit.NewRedis(rdb, ratelimit.DefaultRedisConfig())
	require.NoError(t, err, "DefaultRedisConfig is valid")
}

func TestRedisBurstThenRate(t *testing.T) {
	rdb := redisClient(t)
	l := newRedis(t, rdb, redisConfig(ratelimit.Quota{Rate: 2, Burst: 3, Concurrent: 1}, testPrefix(t, rdb), ratelimit.FallbackRefuse))
	for i := range 3 {
		d := allow(t, l, tenantA)
		require.True(t, d.Allowed, "request %d", i)
		require.Equal(t, 2-i, d.Remaining)
		require.Equal(t, 2.0, d.Limit)
		require.Equal(t, 3, d.Burst)
	}
	d := allow(t, l, tenantA)
	require.False(t, d.Allowed)
	require.InDelta(t, 500*time.Millisecond, d.RetryAfter, float64(50*time.Millisecond))
	time.Sleep(d.RetryAfter + 20*time.Millisecond)
	require.True(t, allow(t, l, tenantA).Allowed)
	require.False(t, allow(t, l, tenantA).Allowed)
}

// TestRedisTenantsApart exhausts tenant a_b, whose key could be confused
// with those of "a" and "b", "ab", "a_bc" by a careless key scheme: every
// other tenant keeps its whole budget, and each has one key of its own.
func TestRedisTenantsApart(t *testing.T) {
	rdb := redisClient(t)
	prefix := testPrefix(t, rdb)
	l := newRedis(t, rdb, redisConfig(ratelimit.Quota{Rate: 0.01, Burst: 5, Concurrent: 1}, prefix, ratelimit.FallbackRefuse))
	hammered := tenant.MustParseID("a_b")
	others := []tenant.ID{tenant.MustParseID("a"), tenant.MustParseID("b"), tenant.MustParseID("ab"),
		tenant.MustParseID("a_bc"), tenant.MustParseID("a_b_c"), tenant.MustParseID("b_a")}
	refused := 0
	for i := range 50 {
		if !allow(t, l, hammered).Allowed {
			refused++
		}
		if i < 5 {
			for _, id := range others {
				require.True(t, allow(t, l, id).Allowed, "%s, request %d", id, i)
			}
		}
	}
	require.Equal(t, 45, refused)
	for _, id := range others {
		require.False(t, allow(t, l, id).Allowed, "%s has had its burst", id)
	}
	got := keys(t, rdb, "rate:"+prefix+"*")
	want := []string{"rate:" + prefix + hammered.String()}
	for _, id := range others {
		want = append(want, "rate:"+prefix+id.String())
	}
	require.ElementsMatch(t, want, got)
}

func TestRedisOverride(t *testing.T) {
	rdb := redisClient(t)
	var m ratelimit.Map
	cfg := redisConfig(ratelimit.Quota{Rate: 0.01, Burst: 1, Concurrent: 1}, testPrefix(t, rdb), ratelimit.FallbackRefuse)
	cfg.Overrides = &m
	cfg.Refresh = 0
	l := newRedis(t, rdb, cfg)
	require.True(t, allow(t, l, tenantA).Allowed)
	require.False(t, allow(t, l, tenantA).Allowed)
	require.NoError(t, m.Set(tenantA, ratelimit.Quota{Rate: 0.01, Burst: 3, Concurrent: 1}))
	d := allow(t, l, tenantA)
	require.True(t, d.Allowed, "the larger burst takes effect on the next request")
	require.Equal(t, 3, d.Burst)
}

func TestRedisCancelledContextTakesNothing(t *testing.T) {
	rdb := redisClient(t)
	prefix := testPrefix(t, rdb)
	l := newRedis(t, rdb, redisConfig(ratelimit.Quota{Rate: 0.01, Burst: 1, Concurrent: 1}, prefix, ratelimit.FallbackLocal))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := l.Allow(ctx, tenantA)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, ratelimit.ErrUnavailable)
	require.Empty(t, keys(t, rdb, "rate:"+prefix+"*"), "nothing was sent")
	require.True(t, allow(t, l, tenantA).Allowed)
}

// TestRedisUnreachable points the limiter at a closed port.
func TestRedisUnreachable(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: freeAddr(t), MaxRetries: -1})
	defer rdb.Close()
	q := ratelimit.Quota{Rate: 0.01, Burst: 2, Concurrent: 1}

	t.Run("fallback=local", func(t *testing.T) {
		l := newRedis(t, rdb, redisConfig(q, "tenancytest:unreachable:", ratelimit.FallbackLocal))
		require.True(t, allow(t, l, tenantA).Allowed)
		require.True(t, allow(t, l, tenantA).Allowed)
		d := allow(t, l, tenantA)
		require.False(t, d.Allowed, "the local budget limits")
		require.Positive(t, d.RetryAfter)
		require.True(t, allow(t, l, tenantB).Allowed, "per tenant")
	})
	t.Run("fallback=refuse", func(t *testing.T) {
		l := newRedis(t, rdb, redisConfig(q, "tenancytest:unreachable:", ratelimit.FallbackRefuse))
		for range 3 {
			d, err := l.Allow(t.Context(), tenantA)
			require.ErrorIs(t, err, ratelimit.ErrUnavailable)
			require.False(t, d.Allowed)
			require.Positive(t, d.RetryAfter)
		}
	})
}

// TestRedisReplyError makes Redis reply an error (the tenant's key holds a
// hash, so the script's GET fails with WRONGTYPE): the Fallback decides
// for that request, and other tenants still go to Redis.
func TestRedisReplyError(t *testing.T) {
	rdb := redisClient(t)
	prefix := testPrefix(t, rdb)
	require.NoError(t, rdb.HSet(t.Context(), "rate:"+prefix+tenantA.String(), "x", "y").Err())
	q := ratelimit.Quota{Rate: 0.01, Burst: 1, Concurrent: 1}

	l := newRedis(t, rdb, redisConfig(q, prefix, ratelimit.FallbackRefuse))
	d, err := l.Allow(t.Context(), tenantA)
	require.ErrorIs(t, err, ratelimit.ErrUnavailable)
	require.ErrorContains(t, err, "WRONGTYPE")
	require.False(t, d.Allowed)
	require.True(t, allow(t, l, tenantB).Allowed, "B's request went to Redis")
	require.False(t, allow(t, l, tenantB).Allowed, "and Redis keeps B's budget")

	l = newRedis(t, rdb, redisConfig(q, prefix, ratelimit.FallbackLocal))
	require.True(t, allow(t, l, tenantA).Allowed, "the local budget decides")
	require.False(t, allow(t, l, tenantA).Allowed)
}

// redisServer is a redis-server of the test's own, on a free port,
// without persistence.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
}

func startRedisServer(t *testing.T, addr string) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		missing(t, "no redis-server on PATH: %v", err)
	}
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	require.NoError(t, cmd.Start())
	s := &redisServer{addr: addr, cmd: cmd}
	t.Cleanup(s.stop)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if rdb.Ping(t.Context()).Err() == nil {
			return s
		}
		require.True(t, time.Now().Before(deadline), "redis-server on %s did not answer", addr)
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *redisServer) stop() {
	if s.cmd.ProcessState == nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// TestRedisServerKilled kills the Redis server under a running limiter,
// then starts it again: while it is down the Fallback decides; after
// Retry, Redis decides again.
func TestRedisServerKilled(t *testing.T) {
	for _, fb := range []ratelimit.Fallback{ratelimit.FallbackLocal, ratelimit.FallbackRefuse} {
		t.Run("fallback="+string(fb), func(t *testing.T) {
			addr := freeAddr(t)
			srv := startRedisServer(t, addr)
			rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
			defer rdb.Close()
			cfg := redisConfig(ratelimit.Quota{Rate: 0.01, Burst: 2, Concurrent: 1}, "tenancytest:killed:", fb)
			cfg.Retry = 200 * time.Millisecond
			l := newRedis(t, rdb, cfg)
			require.True(t, allow(t, l, tenantA).Allowed)
			require.True(t, allow(t, l, tenantA).Allowed)
			require.False(t, allow(t, l, tenantA).Allowed, "Redis's budget")

			srv.stop()
			d, err := l.Allow(t.Context(), tenantA)
			switch fb {
			case ratelimit.FallbackLocal:
				require.NoError(t, err)
				require.True(t, d.Allowed, "the local bucket, unused so far, decides")
				require.True(t, allow(t, l, tenantA).Allowed)
				require.False(t, allow(t, l, tenantA).Allowed, "and limits")
			case ratelimit.FallbackRefuse:
				require.ErrorIs(t, err, ratelimit.ErrUnavailable)
				require.False(t, d.Allowed)
				_, err = l.Allow(t.Context(), tenantB)
				require.ErrorIs(t, err, ratelimit.ErrUnavailable, "every tenant is refused")
			}

			startRedisServer(t, addr) // empty: no persistence
			time.Sleep(cfg.Retry)
			var d2 ratelimit.Decision
			require.Eventually(t, func() bool {
				d2, err = l.Allow(t.Context(), tenantB)
				return err == nil && d2.Allowed
			}, 5*time.Second, 50*time.Millisecond, "Redis decides again")
			n, err := rdb.Exists(t.Context(), "rate:tenancytest:killed:"+tenantB.String()).Result()
			require.NoError(t, err)
			require.Equal(t, int64(1), n, "the decision was Redis's")
		})
	}
}

// TestRedisConnectionKilled kills the limiter's connections on the shared
// Redis (CLIENT KILL) while it runs: it goes on deciding, and the budget
// holds.
func TestRedisConnectionKilled(t *testing.T) {
	admin := redisClient(t)
	prefix := testPrefix(t, admin)
	name := fmt.Sprintf("tenancytest-%d-%d", os.Getpid(), time.Now().UnixNano())
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr(), ClientName: name, MaxRetries: -1})
	defer rdb.Close()
	cfg := redisConfig(ratelimit.Quota{Rate: 0.01, Burst: 20, Concurrent: 1}, prefix, ratelimit.FallbackRefuse)
	cfg.Retry = 0
	l := newRedis(t, rdb, cfg)
	allowed, failed, killed := 0, 0, 0
	for i := range 100 {
		if i%10 == 5 {
			killed += killClients(t, admin, name)
		}
		d, err := l.Allow(t.Context(), tenantA)
		switch {
		case err != nil:
			require.ErrorIs(t, err, ratelimit.ErrUnavailable)
			failed++
		case d.Allowed:
			allowed++
		}
	}
	t.Logf("%d connections killed, %d calls failed, %d allowed", killed, failed, allowed)
	require.Positive(t, killed)
	require.Equal(t, 20, allowed, "the budget held across the kills")
}

// killClients kills the connections of the clients named name.
func killClients(t testing.TB, admin *redis.Client, name string) int {
	t.Helper()
	list, err := admin.ClientList(t.Context()).Result()
	require.NoError(t, err)
	n := 0
	sc := bufio.NewScanner(strings.NewReader(list))
	for sc.Scan() {
		var id string
		for _, f := range strings.Fields(sc.Text()) {
			if v, ok := strings.CutPrefix(f, "id="); ok {
				id = v
			}
			if f == "name="+name && id != "" {
				require.NoError(t, admin.Do(t.Context(), "CLIENT", "KILL", "ID", id).Err())
				n++
			}
		}
	}
	return n
}

// Environment of TestRedisSharedBudgetChild, set by TestRedisSharedBudget.
const (
	childPrefix = "TENANCY_RATELIMIT_CHILD_PREFIX"
	childStart  = "TENANCY_RATELIMIT_CHILD_START"
	childEnd    = "TENANCY_RATELIMIT_CHILD_END"
)

// sharedQuota is the quota of TestRedisSharedBudget: over its window of
// 2 s, one budget allows at most 10 + 2*25 = 60 requests.
var sharedQuota = ratelimit.Quota{Rate: 25, Burst: 10, Concurrent: 1}

// hammer calls l.Allow for tenantA as fast as it can from start to end,
// and returns how many were allowed.
func hammer(t testing.TB, l ratelimit.Limiter, start, end time.Time) (allowed int) {
	t.Helper()
	time.Sleep(time.Until(start))
	for time.Now().Before(end) {
		if allow(t, l, tenantA).Allowed {
			allowed++
		}
	}
	return allowed
}

// TestRedisSharedBudgetChild is the second process of
// TestRedisSharedBudget.
func TestRedisSharedBudgetChild(t *testing.T) {
	prefix := os.Getenv(childPrefix)
	if prefix == "" {
		t.Skip("runs only as the child of TestRedisSharedBudget")
	}
	start, err := strconv.ParseInt(os.Getenv(childStart), 10, 64)
	require.NoError(t, err)
	end, err := strconv.ParseInt(os.Getenv(childEnd), 10, 64)
	require.NoError(t, err)
	require.Less(t, time.Now().UnixNano(), start, "the child started after the window opened")
	rdb := redisClient(t)
	l := newRedis(t, rdb, redisConfig(sharedQuota, prefix, ratelimit.FallbackRefuse))
	n := hammer(t, l, time.Unix(0, start), time.Unix(0, end))
	fmt.Printf("child allowed=%d\n", n)
}

// TestRedisSharedBudget runs two processes, this one and a child (the test
// binary again), against one tenant's budget in Redis at once: together
// they are allowed no more than one budget over the window, give or take
// one request at each edge of it (the processes' clocks open and close the
// window; Redis's clock fills the bucket). Two budgets would be twice as
// many. That they have nearly all of it (5 less at most) shows they ran at
// once.
func TestRedisSharedBudget(t *testing.T) {
	rdb := redisClient(t)
	prefix := testPrefix(t, rdb)
	l := newRedis(t, rdb, redisConfig(sharedQuota, prefix, ratelimit.FallbackRefuse))
	window := 2 * time.Second
	start := time.Now().Add(3 * time.Second) // the child's start-up
	end := start.Add(window)

	var parent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(time.Until(start))
		for time.Now().Before(end) {
			d, err := l.Allow(context.Background(), tenantA)
			if err == nil && d.Allowed {
				parent.Add(1)
			}
		}
	}()
	out, code := testenv.RunTest(t, "TestRedisSharedBudgetChild", nil,
		childPrefix+"="+prefix,
		childStart+"="+strconv.FormatInt(start.UnixNano(), 10),
		childEnd+"="+strconv.FormatInt(end.UnixNano(), 10),
		"TENANCY_TEST_REDIS="+redisAddr())
	<-done
	require.Equal(t, 0, code, out)
	m := regexp.MustCompile(`child allowed=(\d+)`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	child, _ := strconv.Atoi(m[1])
	total := int(parent.Load()) + child
	budget := sharedQuota.Burst + int(sharedQuota.Rate*window.Seconds())
	t.Logf("allowed over %v: parent %d, child %d, total %d; one budget %d", window, parent.Load(), child, total, budget)
	require.Positive(t, parent.Load(), "both processes were allowed some")
	require.Positive(t, child, "both processes were allowed some")
	require.LessOrEqual(t, total, budget+2, "the two processes share one budget")
	require.GreaterOrEqual(t, total, budget-5, "and have nearly all of it")
}

// TestRedisHung points the limiter at a server that accepts connections
// and never answers: each call gives up after Timeout, and for Retry after
// that calls go to the Fallback without waiting.
func TestRedisHung(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()
	for _, heeds := range []bool{true, false} {
		t.Run(fmt.Sprintf("ContextTimeoutEnabled=%v", heeds), func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), MaxRetries: -1, ContextTimeoutEnabled: heeds})
			defer rdb.Close()
			testHung(t, rdb)
		})
	}
}

func testHung(t *testing.T, rdb *redis.Client) {
	cfg := redisConfig(ratelimit.Quota{Rate: 0.01, Burst: 1, Concurrent: 1}, "tenancytest:hung:", ratelimit.FallbackRefuse)
	cfg.Timeout = 50 * time.Millisecond
	cfg.Retry = time.Minute
	l := newRedis(t, rdb, cfg)

	start := time.Now()
	d, err := l.Allow(t.Context(), tenantA)
	took := time.Since(start)
	require.ErrorIs(t, err, ratelimit.ErrUnavailable)
	require.False(t, d.Allowed)
	require.GreaterOrEqual(t, took, cfg.Timeout)
	require.Less(t, took, 2*time.Second, "bounded by Timeout, not by the client's own timeouts")

	start = time.Now()
	_, err = l.Allow(t.Context(), tenantB)
	require.ErrorIs(t, err, ratelimit.ErrUnavailable)
	require.Less(t, time.Since(start), cfg.Timeout, "within Retry, Redis is not tried")

	cfg.Fallback = ratelimit.FallbackLocal
	l = newRedis(t, rdb, cfg)
	require.True(t, allow(t, l, tenantA).Allowed)
	require.False(t, allow(t, l, tenantA).Allowed, "the local budget")
}

// TestRedisClockSetBack sets Config.Clock back after the limiter was made:
// Redis still decides (the limiter's own clock does not make it think
// Redis failed).
func TestRedisClockSetBack(t *testing.T) {
	rdb := redisClient(t)
	prefix := testPrefix(t, rdb)
	c := newClock()
	cfg := redisConfig(ratelimit.Quota{Rate: 0.01, Burst: 1, Concurrent: 1}, prefix, ratelimit.FallbackRefuse)
	cfg.Clock = c.Now
	l := newRedis(t, rdb, cfg)
	c.Add(-time.Hour)
	require.True(t, allow(t, l, tenantA).Allowed)
	require.False(t, allow(t, l, tenantA).Allowed)
	require.Len(t, keys(t, rdb, "rate:"+prefix+"*"), 1)
}
