package ratelimit_test

import (
	"fmt"
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
// rate.Limiter per tenant with the same times: every Decision (Allowed,
// Remaining, RetryAfter) is the one the bare limiter gives, for tenants
// whose hashes collide too.
func TestLocalMatchesRateLimiter(t *testing.T) {
	for _, hm := range hashMasks {
		t.Run(hm.name, func(t *testing.T) {
			c := newClock()
			q := ratelimit.Quota{Rate: 7, Burst: 5, Concurrent: 1}
			cfg := config(q, c)
			cfg.Idle = 1000 * time.Hour // nothing forgotten: the bare limiters forget nothing
			l := collidingLocal(t, cfg, hm.mask)
			ids := manyIDs(60)
			bare := map[tenant.ID]*rate.Limiter{}
			rng := rand.New(rand.NewPCG(7, uint64(hm.mask)))
			refused := 0
			for step := range 20_000 {
				c.Add(time.Duration(rng.IntN(30)) * time.Millisecond)
				id := ids[rng.IntN(len(ids))]
				if rng.IntN(5) > 0 {
					id = ids[rng.IntN(5)] // hot tenants, often refused
				}
				b := bare[id]
				if b == nil {
					b = rate.NewLimiter(rate.Limit(q.Rate), q.Burst)
					bare[id] = b
				}
				now := c.Now()
				tokens := b.TokensAt(now)
				want := ratelimit.Decision{Limit: q.Rate, Burst: q.Burst}
				if b.AllowN(now, 1) {
					want.Allowed, want.Remaining = true, int(tokens-1)
				}
				got := allow(t, l, id)
				require.Equal(t, want.Allowed, got.Allowed, "step %d, tenant %s, tokens %v, got %+v", step, id, tokens, got)
				require.Equal(t, want.Remaining, got.Remaining, "step %d, tenant %s", step, id)
				if !got.Allowed {
					refused++
					// What the bare limiter would make a request wait, up
					// to the nanosecond it rounds down where we round up.
					missing := time.Duration(float64(time.Second) * (1 - tokens) / q.Rate)
					require.InDelta(t, missing, got.RetryAfter, 1, "step %d, tenant %s", step, id)
				}
			}
			require.Equal(t, len(bare), l.Tenants())
			require.Greater(t, refused, 2000, "the steps are fast enough to refuse")
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
