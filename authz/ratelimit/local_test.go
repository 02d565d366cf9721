package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/tenant"
)

// clock is a Config.Clock the test moves by hand.
type clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// config returns DefaultConfig with every tier at quota q and clock c.
func config(q ratelimit.Quota, c *clock) ratelimit.Config {
	cfg := ratelimit.DefaultConfig()
	for t := range cfg.Tiers {
		cfg.Tiers[t] = q
	}
	if c != nil {
		cfg.Clock = c.Now
	}
	return cfg
}

func newLocal(t testing.TB, cfg ratelimit.Config) *ratelimit.Local {
	t.Helper()
	l, err := ratelimit.NewLocal(cfg)
	require.NoError(t, err)
	return l
}

// allow calls l.Allow and requires no error.
func allow(t testing.TB, l ratelimit.Limiter, id tenant.ID) ratelimit.Decision {
	t.Helper()
	d, err := l.Allow(t.Context(), id)
	require.NoError(t, err)
	return d
}

var (
	tenantA = tenant.MustParseID("acme")
	tenantB = tenant.MustParseID("globex")
)

// badConfigs are configurations every constructor refuses, each with the
// field its error must name.
func badConfigs() []struct {
	name, field string
	cfg         ratelimit.Config
} {
	q := ratelimit.Quota{Rate: 10, Burst: 10, Concurrent: 10}
	with := func(f func(*ratelimit.Config)) ratelimit.Config {
		c := config(q, nil)
		f(&c)
		return c
	}
	tier := func(q ratelimit.Quota) ratelimit.Config {
		return with(func(c *ratelimit.Config) { c.Tiers[tenant.TierEnterprise] = q })
	}
	return []struct {
		name, field string
		cfg         ratelimit.Config
	}{
		{"negative rate", "Config.Tiers[enterprise].Rate", tier(ratelimit.Quota{Rate: -1, Burst: 1, Concurrent: 1})},
		{"zero rate", "Config.Tiers[enterprise].Rate", tier(ratelimit.Quota{Rate: 0, Burst: 0, Concurrent: 1})},
		{"NaN rate", "Config.Tiers[enterprise].Rate", tier(ratelimit.Quota{Rate: math.NaN(), Burst: 1, Concurrent: 1})},
		{"infinite rate", "Config.Tiers[enterprise].Rate", tier(ratelimit.Quota{Rate: math.Inf(1), Burst: 1, Concurrent: 1})},
		{"rate above MaxRate", "Config.Tiers[enterprise].Rate", tier(ratelimit.Quota{Rate: ratelimit.MaxRate * 2, Burst: 1, Concurrent: 1})},
		{"rate below MinRate", "Config.Tiers[enterprise].Rate", tier(ratelimit.Quota{Rate: 1e-12, Burst: 1, Concurrent: 1})},
		{"burst above MaxBurst", "Config.Tiers[enterprise].Burst", tier(ratelimit.Quota{Rate: 5, Burst: ratelimit.MaxBurst + 1, Concurrent: 1})},
		{"zero burst with a rate", "Config.Tiers[enterprise].Burst", tier(ratelimit.Quota{Rate: 5, Burst: 0, Concurrent: 1})},
		{"negative burst", "Config.Tiers[enterprise].Burst", tier(ratelimit.Quota{Rate: 5, Burst: -3, Concurrent: 1})},
		{"zero concurrent", "Config.Tiers[enterprise].Concurrent", tier(ratelimit.Quota{Rate: 5, Burst: 5, Concurrent: 0})},
		{"missing tier", "Config.Tiers", with(func(c *ratelimit.Config) { delete(c.Tiers, tenant.TierGovernment) })},
		{"unknown tier", "Config.Tiers", with(func(c *ratelimit.Config) { c.Tiers["platinum"] = q })},
		{"zero Config", "Config.Tiers", ratelimit.Config{}},
		{"negative Refresh", "Config.Refresh", with(func(c *ratelimit.Config) { c.Refresh = -time.Second })},
		{"zero MaxTenants", "Config.MaxTenants", with(func(c *ratelimit.Config) { c.MaxTenants = 0 })},
		{"zero Idle", "Config.Idle", with(func(c *ratelimit.Config) { c.Idle = 0 })},
		{"negative Wait", "Config.Wait", with(func(c *ratelimit.Config) { c.Wait = -1 })},
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range badConfigs() {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ratelimit.NewLocal(tc.cfg)
			require.ErrorIs(t, err, ratelimit.ErrInvalidConfig)
			require.ErrorContains(t, err, tc.field)
			_, err = ratelimit.NewConcurrency(tc.cfg)
			require.ErrorIs(t, err, ratelimit.ErrInvalidConfig)
			require.ErrorContains(t, err, tc.field)
		})
	}
	_, err := ratelimit.NewLocal(ratelimit.DefaultConfig())
	require.NoError(t, err, "DefaultConfig is valid")
}

func TestNewCopiesTiers(t *testing.T) {
	c := newClock()
	cfg := config(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 1}, c)
	l := newLocal(t, cfg)
	cfg.Tiers[tenant.TierStandard] = ratelimit.Quota{Rate: 100, Burst: 100, Concurrent: 1}
	require.Equal(t, 1, allow(t, l, tenantA).Burst, "changing the Config after New changes nothing")
}

func TestLocalBurstThenRate(t *testing.T) {
	c := newClock()
	l := newLocal(t, config(ratelimit.Quota{Rate: 4, Burst: 3, Concurrent: 1}, c))
	for i := range 3 {
		d := allow(t, l, tenantA)
		require.Equal(t, ratelimit.Decision{Allowed: true, Limit: 4, Burst: 3, Remaining: 2 - i}, d, "request %d", i)
	}
	d := allow(t, l, tenantA)
	require.Equal(t, ratelimit.Decision{Allowed: false, Limit: 4, Burst: 3, RetryAfter: 250 * time.Millisecond}, d)

	c.Add(100 * time.Millisecond)
	d = allow(t, l, tenantA)
	require.False(t, d.Allowed)
	require.Equal(t, 150*time.Millisecond, d.RetryAfter, "a refusal took nothing: the token still comes at 250 ms")

	c.Add(150 * time.Millisecond)
	require.True(t, allow(t, l, tenantA).Allowed)
	require.False(t, allow(t, l, tenantA).Allowed)
}

// TestLocalTenantsIndependent hammers tenant A at ten times its rate,
// interleaved with B at exactly its rate: A is refused beyond its budget,
// B is never refused.
func TestLocalTenantsIndependent(t *testing.T) {
	c := newClock()
	l := newLocal(t, config(ratelimit.Quota{Rate: 10, Burst: 5, Concurrent: 1}, c))
	var allowedA, refusedA int
	for step := range 1000 { // 10 s in steps of 10 ms
		c.Add(10 * time.Millisecond)
		if step%10 == 0 {
			require.True(t, allow(t, l, tenantB).Allowed, "B at its rate, step %d", step)
		}
		if allow(t, l, tenantA).Allowed {
			allowedA++
		} else {
			refusedA++
		}
	}
	// Over 10 s, A may have its burst and 10 per second.
	require.LessOrEqual(t, allowedA, 5+10*10)
	require.GreaterOrEqual(t, allowedA, 10*10)
	require.Equal(t, 1000, allowedA+refusedA)
}

func TestLocalTierOf(t *testing.T) {
	c := newClock()
	cfg := config(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 1}, c)
	cfg.Tiers[tenant.TierEnterprise] = ratelimit.Quota{Rate: 1, Burst: 7, Concurrent: 1}
	odd := tenant.MustParseID("odd")
	cfg.TierOf = func(_ context.Context, id tenant.ID) (tenant.Tier, error) {
		switch id {
		case tenantB:
			return tenant.TierEnterprise, nil
		case odd:
			return "platinum", nil
		}
		return tenant.TierStandard, nil
	}
	l := newLocal(t, cfg)
	require.Equal(t, 1, allow(t, l, tenantA).Burst)
	require.Equal(t, 7, allow(t, l, tenantB).Burst)

	d, err := l.Allow(t.Context(), odd)
	require.ErrorIs(t, err, ratelimit.ErrUnavailable)
	require.ErrorIs(t, err, ratelimit.ErrInvalidConfig)
	require.ErrorContains(t, err, "platinum")
	require.False(t, d.Allowed)
}

func TestLocalNilTierOfIsStandard(t *testing.T) {
	cfg := config(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 1}, newClock())
	cfg.Tiers[tenant.TierStandard] = ratelimit.Quota{Rate: 1, Burst: 3, Concurrent: 1}
	require.Equal(t, 3, allow(t, newLocal(t, cfg), tenantA).Burst)
}

func TestLocalOverrides(t *testing.T) {
	for _, refresh := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprintf("refresh=%v", refresh), func(t *testing.T) {
			c := newClock()
			var m ratelimit.Map
			cfg := config(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 1}, c)
			cfg.Overrides = &m
			cfg.Refresh = refresh
			l := newLocal(t, cfg)
			require.Equal(t, 1, allow(t, l, tenantA).Burst)

			require.NoError(t, m.Set(tenantA, ratelimit.Quota{Rate: 100, Burst: 50, Concurrent: 1}))
			if refresh > 0 {
				c.Add(refresh - time.Millisecond)
				require.Equal(t, 1, allow(t, l, tenantA).Burst, "before Refresh has passed")
				c.Add(time.Millisecond)
			}
			d := allow(t, l, tenantA)
			require.Equal(t, 50, d.Burst, "the override takes effect")
			require.Equal(t, 100.0, d.Limit)
			require.Equal(t, 1, allow(t, l, tenantB).Burst, "another tenant keeps its tier's quota")

			m.Delete(tenantA)
			c.Add(refresh)
			require.Equal(t, 1, allow(t, l, tenantA).Burst, "deleted: the tier's quota again")
		})
	}
}

func TestMapSetRefusesBadQuota(t *testing.T) {
	var m ratelimit.Map
	err := m.Set(tenantA, ratelimit.Quota{Rate: 5, Burst: 0, Concurrent: 1})
	require.ErrorIs(t, err, ratelimit.ErrInvalidConfig)
	require.ErrorContains(t, err, "Quota.Burst")
	require.ErrorIs(t, m.Set(tenant.ID{}, ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 1}), tenant.ErrNoTenant)
	_, ok, err := m.Quota(t.Context(), tenantA)
	require.NoError(t, err)
	require.False(t, ok, "a refused Set stores nothing")
}

// overridesFunc is an Overrides made of a function.
type overridesFunc func(ctx context.Context, id tenant.ID) (ratelimit.Quota, bool, error)

func (f overridesFunc) Quota(ctx context.Context, id tenant.ID) (ratelimit.Quota, bool, error) {
	return f(ctx, id)
}

func TestLocalOverrideInvalidQuota(t *testing.T) {
	cfg := config(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 1}, newClock())
	cfg.Overrides = overridesFunc(func(context.Context, tenant.ID) (ratelimit.Quota, bool, error) {
		return ratelimit.Quota{Rate: -1, Burst: 1, Concurrent: 1}, true, nil
	})
	_, err := newLocal(t, cfg).Allow(t.Context(), tenantA)
	require.ErrorIs(t, err, ratelimit.ErrUnavailable)
	require.ErrorContains(t, err, "override.Rate")
}

func TestLocalLookupFailure(t *testing.T) {
	c := newClock()
	var failing atomic.Bool
	var calls atomic.Int32
	boom := errors.New("directory down")
	cfg := config(ratelimit.Quota{Rate: 1, Burst: 2, Concurrent: 1}, c)
	cfg.Refresh = time.Second
	cfg.Overrides = overridesFunc(func(context.Context, tenant.ID) (ratelimit.Quota, bool, error) {
		calls.Add(1)
		if failing.Load() {
			return ratelimit.Quota{}, false, boom
		}
		return ratelimit.Quota{}, false, nil
	})
	l := newLocal(t, cfg)

	failing.Store(true)
	d, err := l.Allow(t.Context(), tenantA)
	require.ErrorIs(t, err, ratelimit.ErrUnavailable)
	require.ErrorIs(t, err, boom)
	require.False(t, d.Allowed)

	failing.Store(false)
	require.True(t, allow(t, l, tenantA).Allowed)
	failing.Store(true)
	c.Add(2 * time.Second) // the quota is stale; the lookup fails
	n := calls.Load()
	require.True(t, allow(t, l, tenantA).Allowed, "the last quota known is kept")
	require.True(t, allow(t, l, tenantA).Allowed)
	require.False(t, allow(t, l, tenantA).Allowed, "and still limits")
	require.Equal(t, n+1, calls.Load(), "a failed lookup is retried after Refresh, not on every request")
}

func TestLocalCancelledContextTakesNothing(t *testing.T) {
	c := newClock()
	cfg := config(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 1}, c)
	l := newLocal(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := l.Allow(ctx, tenantA)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, ratelimit.ErrUnavailable)
	require.True(t, allow(t, l, tenantA).Allowed, "the cancelled call took no token")

	// Cancelled while the quota is looked up: no token, nothing kept.
	ctx, cancel = context.WithCancel(t.Context())
	cfg.Overrides = overridesFunc(func(context.Context, tenant.ID) (ratelimit.Quota, bool, error) {
		cancel()
		return ratelimit.Quota{}, false, nil
	})
	l = newLocal(t, cfg)
	_, err = l.Allow(ctx, tenantA)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 0, l.Tenants())
	require.True(t, allow(t, l, tenantA).Allowed)
}

func TestLocalClockJumps(t *testing.T) {
	c := newClock()
	l := newLocal(t, config(ratelimit.Quota{Rate: 1, Burst: 3, Concurrent: 1}, c))
	for range 3 {
		require.True(t, allow(t, l, tenantA).Allowed)
	}
	c.Add(-time.Hour)
	require.False(t, allow(t, l, tenantA).Allowed, "a clock set back gives no tokens")
	c.Add(time.Hour)
	require.False(t, allow(t, l, tenantA).Allowed, "nor does it coming back to where it was")
	c.Add(time.Second)
	require.True(t, allow(t, l, tenantA).Allowed)
	c.Add(1000 * time.Hour)
	for range 3 {
		require.True(t, allow(t, l, tenantA).Allowed)
	}
	require.False(t, allow(t, l, tenantA).Allowed, "a jump forward fills the bucket to its burst, no more")
}

// TestLocalMemoryBounded makes a million distinct tenants (200,000 under
// the race detector), as a service that limits by an unauthenticated
// tenant ID could see: the limiter keeps at most MaxTenants, and its
// memory stays far below what they all would take.
func TestLocalMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("a million tenants")
	}
	cfg := config(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 1}, newClock())
	cfg.MaxTenants = 10_000
	l := newLocal(t, cfg)
	ctx := t.Context()
	before := heap()
	for i := range manyTenants {
		if _, err := l.Allow(ctx, tenant.MustParseID("t"+strconv.Itoa(i))); err != nil {
			require.NoError(t, err)
		}
	}
	require.LessOrEqual(t, l.Tenants(), 10_000)
	grown := heap() - before
	t.Logf("heap grew by %d kB for 10,000 tenants kept of %d seen", grown/1024, manyTenants)
	// 10,000 tenants take ~3 MB; 200,000 would take ~50, a million ~250.
	require.Less(t, grown, int64(20<<20))
	runtime.KeepAlive(l)

	// The most recent tenants are kept; the first ones were forgotten and
	// start with a full budget.
	require.False(t, allow(t, l, tenant.MustParseID("t"+strconv.Itoa(manyTenants-1))).Allowed)
	require.True(t, allow(t, l, tenant.MustParseID("t0")).Allowed)
}

func heap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func TestLocalForgetsIdleTenants(t *testing.T) {
	c := newClock()
	cfg := config(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 1}, c)
	cfg.Idle = time.Minute
	cfg.MaxTenants = 1000 // one shard: idle tenants are forgotten by requests to their shard
	l := newLocal(t, cfg)
	for i := range 10 {
		_ = allow(t, l, tenant.MustParseID(fmt.Sprintf("t%d", i)))
	}
	require.Equal(t, 10, l.Tenants())
	c.Add(time.Minute + time.Second)
	for range 10 {
		_ = allow(t, l, tenantA)
	}
	require.Equal(t, 1, l.Tenants(), "idle tenants are forgotten")
}

// FuzzLocal drives one limiter with tenants and clock steps taken from
// the input: no tenant is ever allowed more than its burst plus its rate
// times the time passed, every decision is the one a bare rate.Limiter
// gives at the same times, and a limiter whose tenants all have one hash
// decides the same.
func FuzzLocal(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 1, 1, 1})
	f.Add([]byte{0, 255, 0, 255, 3, 128, 2, 7})
	f.Add([]byte{9, 9, 9, 9, 9, 9, 200, 200, 1, 0})
	ids := []tenant.ID{tenantA, tenantB, tenant.MustParseID("a_b"), tenant.MustParseID("ab")}
	f.Fuzz(func(t *testing.T, ops []byte) {
		c := newClock()
		start := c.Now()
		q := ratelimit.Quota{Rate: 10, Burst: 3, Concurrent: 1}
		cfg := config(q, c)
		cfg.MaxTenants = 100
		l := newLocal(t, cfg)
		colliding := newLocal(t, cfg)
		ratelimit.SetHashMask(colliding, 0)
		bare := map[tenant.ID]*rate.Limiter{}
		allowed := map[tenant.ID]int{}
		for i := 0; i+1 < len(ops); i += 2 {
			id := ids[int(ops[i])%len(ids)]
			c.Add(time.Duration(ops[i+1]) * time.Millisecond)
			if bare[id] == nil {
				bare[id] = rate.NewLimiter(rate.Limit(q.Rate), q.Burst)
			}
			d := allow(t, l, id)
			require.Equal(t, bare[id].AllowN(c.Now(), 1), d.Allowed, "op %d, tenant %s", i/2, id)
			require.Equal(t, d, allow(t, colliding, id), "op %d, tenant %s, IDs of one hash", i/2, id)
			if d.Allowed {
				allowed[id]++
			}
		}
		most := float64(q.Burst) + q.Rate*c.Now().Sub(start).Seconds()
		for id, n := range allowed {
			require.LessOrEqual(t, float64(n), most+1e-9, id.String())
		}
	})
}
