package ratelimit_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/tenant"
)

func newConcurrency(t testing.TB, cfg ratelimit.Config) *ratelimit.Concurrency {
	t.Helper()
	c, err := ratelimit.NewConcurrency(cfg)
	require.NoError(t, err)
	return c
}

func acquire(t testing.TB, c *ratelimit.Concurrency, id tenant.ID) *ratelimit.Slot {
	t.Helper()
	s, err := c.Acquire(t.Context(), id)
	require.NoError(t, err)
	return s
}

// requireRefused requires Acquire to be refused for the quota, naming
// inFlight and limit.
func requireRefused(t testing.TB, c *ratelimit.Concurrency, id tenant.ID, inFlight, limit int) {
	t.Helper()
	s, err := c.Acquire(t.Context(), id)
	require.Nil(t, s)
	require.ErrorIs(t, err, ratelimit.ErrQuotaExceeded)
	require.ErrorIs(t, err, tenant.ErrQuotaExceeded, "the sentinel blob and store share too")
	var qe *ratelimit.QuotaError
	require.ErrorAs(t, err, &qe)
	require.Equal(t, ratelimit.QuotaError{Tenant: id, InFlight: inFlight, Limit: limit}, *qe)
	require.ErrorContains(t, err, "tenant "+id.String())
}

func TestConcurrencyCap(t *testing.T) {
	c := newConcurrency(t, config(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 3}, newClock()))
	var held []*ratelimit.Slot
	for range 3 {
		held = append(held, acquire(t, c, tenantA))
	}
	requireRefused(t, c, tenantA, 3, 3)
	requireRefused(t, c, tenantA, 3, 3) // refusals change nothing

	// B is not affected by A at its cap, and has its own.
	var heldB []*ratelimit.Slot
	for range 3 {
		heldB = append(heldB, acquire(t, c, tenantB))
	}
	requireRefused(t, c, tenantB, 3, 3)

	held[0].Release()
	held[0].Release() // a second Release frees nothing more
	held[0] = acquire(t, c, tenantA)
	requireRefused(t, c, tenantA, 3, 3)
	for _, s := range append(held, heldB...) {
		s.Release()
	}
	(*ratelimit.Slot)(nil).Release()
	for range 3 {
		acquire(t, c, tenantA)
	}
}

func TestConcurrencyZeroIDAndCancelled(t *testing.T) {
	c := newConcurrency(t, config(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 1}, newClock()))
	_, err := c.Acquire(t.Context(), tenant.ID{})
	require.ErrorIs(t, err, tenant.ErrNoTenant)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = c.Acquire(ctx, tenantA)
	require.ErrorIs(t, err, context.Canceled)
	acquire(t, c, tenantA) // the cancelled call held nothing
}

func TestConcurrencyWait(t *testing.T) {
	cfg := config(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 1}, nil)
	cfg.Wait = 2 * time.Second
	c := newConcurrency(t, cfg)

	t.Run("a slot frees", func(t *testing.T) {
		s := acquire(t, c, tenantA)
		time.AfterFunc(50*time.Millisecond, s.Release)
		acquire(t, c, tenantA).Release()
	})
	t.Run("none frees", func(t *testing.T) {
		cfg.Wait = 100 * time.Millisecond
		c := newConcurrency(t, cfg)
		s := acquire(t, c, tenantA)
		defer s.Release()
		start := time.Now()
		requireRefused(t, c, tenantA, 1, 1)
		require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)
		acquire(t, c, tenantB).Release() // B does not wait behind A
	})
	t.Run("context ends", func(t *testing.T) {
		s := acquire(t, c, tenantA)
		defer s.Release()
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := c.Acquire(ctx, tenantA)
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

// TestConcurrencyMemoryBounded churns through 200,000 tenants with a few
// requests of one held all along: at most MaxTenants are kept, and the one
// with requests in flight keeps its count.
func TestConcurrencyMemoryBounded(t *testing.T) {
	cfg := config(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 2}, newClock())
	cfg.MaxTenants = 500
	c := newConcurrency(t, cfg)
	s1, s2 := acquire(t, c, tenantA), acquire(t, c, tenantA)
	for i := range 200_000 {
		acquire(t, c, tenant.MustParseID(fmt.Sprintf("t%d", i))).Release()
	}
	require.LessOrEqual(t, c.Tenants(), 500)
	requireRefused(t, c, tenantA, 2, 2)
	s1.Release()
	s2.Release()
}

// TestConcurrencyConcurrentUse runs many goroutines through the limiter:
// no more than the cap is ever in flight, and the cap is reached.
func TestConcurrencyConcurrentUse(t *testing.T) {
	c := newConcurrency(t, config(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 4}, nil))
	var inFlight, most, refused atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 200 {
				s, err := c.Acquire(context.Background(), tenantA)
				if err != nil {
					refused.Add(1)
					continue
				}
				n := inFlight.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(10 * time.Microsecond)
				inFlight.Add(-1)
				s.Release()
			}
		})
	}
	wg.Wait()
	require.LessOrEqual(t, most.Load(), int32(4))
	require.Positive(t, refused.Load())
	for range 4 {
		acquire(t, c, tenantA) // every slot was given back
	}
}

func TestConcurrencyOverride(t *testing.T) {
	var m ratelimit.Map
	cfg := config(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 1}, newClock())
	cfg.Overrides = &m
	cfg.Refresh = 0
	c := newConcurrency(t, cfg)
	acquire(t, c, tenantA)
	requireRefused(t, c, tenantA, 1, 1)
	require.NoError(t, m.Set(tenantA, ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 2}))
	acquire(t, c, tenantA)
	requireRefused(t, c, tenantA, 2, 2)
}
