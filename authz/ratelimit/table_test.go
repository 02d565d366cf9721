package ratelimit_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/authz/ratelimit/ratelimittest"
	"github.com/rtmx-ai/tenancy/tenant"
)

// hashMasks are the hash masks the table tests run with: every ID of one
// hash (one probe sequence, told apart by ID only), four homes (clusters
// that deletions must close without losing an entry), and the real hash.
var hashMasks = []struct {
	name string
	mask uint64
}{{"one-hash", 0}, {"four-homes", 0x300}, {"full", ^uint64(0)}}

// collidingLocal returns a Local whose tenants' hashes keep mask only.
func collidingLocal(t testing.TB, cfg ratelimit.Config, mask uint64) *ratelimit.Local {
	t.Helper()
	l := newLocal(t, cfg)
	ratelimit.SetHashMask(l, mask)
	return l
}

func manyIDs(n int) []tenant.ID {
	ids := make([]tenant.ID, n)
	for i := range ids {
		ids[i] = tenant.MustParseID(fmt.Sprintf("t%d", i))
	}
	return ids
}

// TestLocalMatchesRateLimiter drives a Local and, beside it, a bare
// rate.Limiter per tenant given the same times: every Decision (Allowed,
// Remaining, RetryAfter) is the one the bare limiter gives, float for
// float, through quotas changed by overrides (fast rates where a
// nanosecond's rounding decides, slow ones, bursts of 1 and of 1000), a
// clock that steps back now and then, and tenants whose hashes collide.
func TestLocalMatchesRateLimiter(t *testing.T) {
	quotas := []ratelimit.Quota{
		{Rate: 7, Burst: 5, Concurrent: 1},
		{Rate: 3e5, Burst: 3, Concurrent: 1},
		{Rate: 0.5, Burst: 1, Concurrent: 1},
		{Rate: 1000, Burst: 1000, Concurrent: 1},
		{Rate: 33.3, Burst: 2, Concurrent: 1},
	}
	for _, hm := range hashMasks {
		t.Run(hm.name, func(t *testing.T) {
			c := newClock()
			var overrides ratelimit.Map
			cfg := config(quotas[0], c)
			cfg.Overrides = &overrides
			cfg.Refresh = 0             // a changed override counts at the next request, as for the bare limiters
			cfg.Idle = 1000 * time.Hour // nothing forgotten: the bare limiters forget nothing
			l := collidingLocal(t, cfg, hm.mask)
			ids := manyIDs(60)
			type model struct {
				lim  *rate.Limiter
				q    ratelimit.Quota
				seen time.Time // the latest time given: the Local's never moves back either
			}
			bare := map[tenant.ID]*model{}
			rng := rand.New(rand.NewPCG(7, hm.mask))
			refused, changed := 0, 0
			for step := range 30_000 {
				switch k := rng.IntN(100); {
				case k < 2:
					c.Add(-time.Duration(rng.IntN(500)) * time.Millisecond)
				case k < 60:
					c.Add(time.Duration(rng.IntN(30)) * time.Millisecond)
				case k < 90:
					c.Add(time.Duration(rng.IntN(3000)) * time.Nanosecond)
				}
				id := ids[rng.IntN(len(ids))]
				if rng.IntN(5) > 0 {
					id = ids[rng.IntN(5)] // hot tenants, often refused
				}
				if rng.IntN(200) == 0 {
					require.NoError(t, overrides.Set(id, quotas[rng.IntN(len(quotas))]))
				}
				q, ok, err := overrides.Quota(t.Context(), id)
				require.NoError(t, err)
				if !ok {
					q = quotas[0]
				}
				now := c.Now()
				m := bare[id]
				if m == nil {
					m = &model{lim: rate.NewLimiter(rate.Limit(q.Rate), q.Burst), q: q, seen: now}
					bare[id] = m
				}
				if now.After(m.seen) {
					m.seen = now
				}
				if m.q != q {
					changed++
					m.lim.SetLimitAt(m.seen, rate.Limit(q.Rate))
					m.lim.SetBurstAt(m.seen, q.Burst)
					m.q = q
				}
				tokens := m.lim.TokensAt(m.seen)
				want := ratelimit.Decision{Limit: q.Rate, Burst: q.Burst}
				if m.lim.AllowN(m.seen, 1) {
					want.Allowed, want.Remaining = true, max(0, int(tokens-1))
				} else {
					refused++
					want.RetryAfter = max(1, time.Duration(math.Ceil((1-tokens)/q.Rate*float64(time.Second))))
				}
				require.Equal(t, want, allow(t, l, id), "step %d, tenant %s, quota %+v, tokens %v", step, id, q, tokens)
			}
			require.Equal(t, len(bare), l.Tenants())
			require.Greater(t, refused, 3000, "the steps are fast enough to refuse")
			require.Greater(t, changed, 30, "quotas change")
		})
	}
}

// spent reports whether tenant id's budget is spent (its bucket kept)
// rather than full (its bucket forgotten), for a quota of Burst 1 and a
// rate too slow to refill within a test.
func spent(t testing.TB, l *ratelimit.Local, id tenant.ID) bool {
	t.Helper()
	return !allow(t, l, id).Allowed
}

// TestLocalForgetsIdleTenantsAmongCollisions: a sweep that forgets every
// other tenant of one probe sequence (or of four) keeps every tenant it
// does not forget: each still has its budget spent.
func TestLocalForgetsIdleTenantsAmongCollisions(t *testing.T) {
	for _, hm := range hashMasks {
		t.Run(hm.name, func(t *testing.T) {
			c := newClock()
			cfg := config(ratelimit.Quota{Rate: ratelimit.MinRate, Burst: 1, Concurrent: 1}, c)
			cfg.Idle = time.Minute
			cfg.MaxTenants = 1000 // one shard
			l := collidingLocal(t, cfg, hm.mask)
			ids := manyIDs(101)
			for _, id := range ids {
				require.True(t, allow(t, l, id).Allowed)
			}
			c.Add(30 * time.Second)
			for i, id := range ids {
				if i%2 == 0 {
					require.True(t, spent(t, l, id), "tenant %s, seen 30 s ago", id)
				}
			}
			c.Add(31 * time.Second) // the odd ones unseen for 61 s
			require.True(t, spent(t, l, ids[0]))
			require.Equal(t, 51, l.Tenants(), "the odd tenants are forgotten")
			// The kept first: a forgotten tenant coming back would
			// fill a hole that a lost entry's probe would pass.
			for i := 0; i < len(ids); i += 2 {
				require.True(t, spent(t, l, ids[i]), "tenant %s, kept", ids[i])
			}
			for i := 1; i < len(ids); i += 2 {
				require.False(t, spent(t, l, ids[i]), "tenant %s, forgotten", ids[i])
			}
			require.Equal(t, 101, l.Tenants())
		})
	}
}

// TestLocalEvictsAmongCollisions: past MaxTenants, among tenants of one
// probe sequence (or of four), the table holds at most MaxTenants, and
// the tenants it holds keep their state.
func TestLocalEvictsAmongCollisions(t *testing.T) {
	for _, hm := range hashMasks {
		t.Run(hm.name, func(t *testing.T) {
			c := newClock()
			cfg := config(ratelimit.Quota{Rate: ratelimit.MinRate, Burst: 1, Concurrent: 1}, c)
			cfg.MaxTenants = 16
			l := collidingLocal(t, cfg, hm.mask)
			ids := manyIDs(500)
			for i, id := range ids {
				c.Add(time.Millisecond)
				require.True(t, allow(t, l, id).Allowed, "tenant %s: new, or forgotten", id)
				require.LessOrEqual(t, l.Tenants(), 16)
				require.True(t, spent(t, l, id), "tenant %s: just added", id)
				if i > 0 {
					// The tenant before was seen more recently than
					// any other: never the one forgotten.
					require.True(t, spent(t, l, ids[i-1]), "tenant %s, seen last", ids[i-1])
				}
			}
			require.Equal(t, 16, l.Tenants())
			require.True(t, spent(t, l, ids[len(ids)-1]), "the last tenant is kept")
			require.True(t, spent(t, l, ids[len(ids)-2]), "and the one before it")
			require.Equal(t, 16, l.Tenants())
		})
	}
}

// TestLocalConformanceWithCollisions runs the Limiter suite on a Local
// whose tenants all have one hash: the tenants a_b, a, ab, ... are told
// apart by their IDs alone.
func TestLocalConformanceWithCollisions(t *testing.T) {
	ratelimittest.TestLimiter(t, func(t *testing.T, q ratelimit.Quota) ratelimit.Limiter {
		return collidingLocal(t, config(q, nil), 0)
	})
}

// TestLocalRoundsAsRateLimiter: a token less than a nanosecond's refill
// short of whole is allowed, one more than that refused, as by
// rate.Limiter (whose wait rounds down to whole nanoseconds). At 7 per
// second, 142,857,142 ns after a bucket of 1 was emptied it holds
// 0.999999994 tokens (0.86 ns short), 1 ns earlier 0.999999987 (1.86 ns).
func TestLocalRoundsAsRateLimiter(t *testing.T) {
	q := ratelimit.Quota{Rate: 7, Burst: 1, Concurrent: 1}
	for _, tc := range []struct {
		after   time.Duration
		allowed bool
	}{{142_857_142, true}, {142_857_141, false}} {
		c := newClock()
		l := newLocal(t, config(q, c))
		bare := rate.NewLimiter(rate.Limit(q.Rate), q.Burst)
		require.True(t, allow(t, l, tenantA).Allowed)
		require.True(t, bare.AllowN(c.Now(), 1))
		c.Add(tc.after)
		require.Equal(t, tc.allowed, bare.AllowN(c.Now(), 1), "rate.Limiter after %v", tc.after)
		d := allow(t, l, tenantA)
		require.Equal(t, tc.allowed, d.Allowed, "after %v: %+v", tc.after, d)
		if !d.Allowed {
			require.Equal(t, 2*time.Nanosecond, d.RetryAfter, "1.86 ns, rounded up")
		}
	}
}
