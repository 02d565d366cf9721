package keys_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

// 32 goroutines x 20 tenants x 1,000 seal/open each, under -race: the master
// key is called at most once per tenant per cache period.
func TestConcurrentSealOpenCallsMasterKeyAtMostOncePerTenantPerCachePeriod(t *testing.T) {
	const goroutines, tenants, ops = 32, 20, 1000
	e := newEnv(t)
	admin := e.manager(t)
	ctxs := make([]context.Context, tenants)
	for i := range ctxs {
		_, ctxs[i] = provision(t, admin, "load")
	}
	m := e.manager(t, withMaxAge(time.Hour)) // one cache period for the whole test

	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			pt := []byte(fmt.Sprintf("goroutine %d", g))
			for i := range tenants {
				ctx := ctxs[(i+g)%tenants] // every goroutine starts on another tenant
				b := keys.Binding{Table: "t", Column: "c", RowKey: fmt.Sprint(g)}
				for range ops {
					ct, err := m.Seal(ctx, pt, b)
					if err != nil {
						t.Error(err)
						return
					}
					got, err := m.Open(ctx, ct, b)
					if err != nil || !bytes.Equal(got, pt) {
						t.Errorf("Open = %q, %v", got, err)
						return
					}
				}
			}
		}()
	}
	close(start)
	wg.Wait()

	s := m.Stats()
	t.Logf("stats: %+v", s)
	require.EqualValues(t, tenants, s.Loads, "one load per tenant (singleflight)")
	require.LessOrEqual(t, s.KEKCalls, uint64(tenants), "master-key calls must be <= 1 per tenant per cache period")
	require.EqualValues(t, goroutines*tenants*ops*2, s.Hits+s.Misses)
	require.Equal(t, tenants, s.Entries)
}

func TestCacheMaxAgeBoundsMasterKeyCallsOverTime(t *testing.T) {
	const tenants, maxAge = 5, 150 * time.Millisecond
	e := newEnv(t)
	admin := e.manager(t)
	ctxs := make([]context.Context, tenants)
	for i := range ctxs {
		_, ctxs[i] = provision(t, admin, "age")
	}
	m := e.manager(t, withMaxAge(maxAge))
	begin := time.Now()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(begin) < 5*maxAge {
				if _, err := m.Seal(ctxs[g%tenants], []byte("x"), field); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	periods := uint64(time.Since(begin)/maxAge) + 1
	s := m.Stats()
	t.Logf("stats after %d periods: %+v", periods, s)
	require.LessOrEqual(t, s.KEKCalls, tenants*periods)
	require.Greater(t, s.KEKCalls, uint64(tenants), "entries must expire and be reloaded after max age")
}

func TestCacheMaxUsesForcesReload(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, func(c *keys.Config) { c.CacheMaxUses = 10 })
	_, ctx := provision(t, m, "uses")
	before := m.Stats()
	for range 100 {
		_, err := m.Seal(ctx, []byte("x"), field)
		require.NoError(t, err)
	}
	s := m.Stats()
	require.EqualValues(t, 10, s.Loads-before.Loads, "100 uses at 10 per unwrap")
	require.EqualValues(t, 10, s.KEKCalls-before.KEKCalls)
}

func TestCacheMaxEntriesEvicts(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, func(c *keys.Config) { c.CacheMaxEntries = 3 })
	for range 5 {
		_, ctx := provision(t, m, "evict")
		_, err := m.Seal(ctx, []byte("x"), field)
		require.NoError(t, err)
	}
	s := m.Stats()
	require.Equal(t, 3, s.Entries)
	require.EqualValues(t, 2, s.Evictions)
}

func TestPurgeDropsOnlyThatTenant(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	a, ctxA := provision(t, m, "a")
	_, ctxB := provision(t, m, "b")
	for _, ctx := range []context.Context{ctxA, ctxB} {
		_, err := m.Seal(ctx, []byte("x"), field)
		require.NoError(t, err)
	}
	require.Equal(t, 2, m.Stats().Entries)
	m.Purge(a)
	require.Equal(t, 1, m.Stats().Entries)
	loads := m.Stats().Loads
	_, err := m.Seal(ctxB, []byte("x"), field)
	require.NoError(t, err)
	require.Equal(t, loads, m.Stats().Loads)
}

func TestWaitingCallerReturnsWhenItsContextEnds(t *testing.T) {
	e := newEnv(t)
	slow := &hookClient{KMSClient: e.local}
	m := e.manager(t)
	id, _ := provision(t, m, "slow")
	release := make(chan struct{})
	slow.setHook(func(op string, n int64) error { <-release; return nil })
	defer close(release)
	m2 := e.manager(t, func(c *keys.Config) { c.KMS[0] = slow })
	ctx, cancel := context.WithTimeout(tenant.NewContext(ctxT(t), id), 50*time.Millisecond)
	defer cancel()
	_, err := m2.Seal(ctx, []byte("x"), field)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}
