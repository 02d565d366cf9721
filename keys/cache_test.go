package keys_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"

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

// blockFirstDecrypt returns a Manager over e whose master key's first
// unwrap blocks until release is closed, and the client, whose decrypts
// counter shows when the load is blocked in the master key.
func blockFirstDecrypt(t *testing.T, e *env, adjust ...func(*keys.Config)) (*keys.Manager, *hookClient, chan struct{}) {
	t.Helper()
	slow := &hookClient{KMSClient: e.local}
	release := make(chan struct{})
	slow.setHook(func(op string, n int64) error {
		if op == "decrypt" && n == 1 {
			<-release
		}
		return nil
	})
	m := e.manager(t, append([]func(*keys.Config){func(c *keys.Config) { c.KMS = []registry.KMSClient{slow} }}, adjust...)...)
	return m, slow, release
}

// Callers that wait for a load share it within CacheMaxUses like everyone
// else: a load serves at most CacheMaxUses operations, waiters included.
func TestWaitersOfALoadRespectCacheMaxUses(t *testing.T) {
	const callers, maxUses = 10, 3
	e := newEnv(t)
	id, _ := provision(t, e.manager(t), "waiters")
	m, slow, release := blockFirstDecrypt(t, e, func(c *keys.Config) { c.CacheMaxUses = maxUses })
	ctx := tenant.NewContext(ctxT(t), id)
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Seal(ctx, []byte("x"), field)
			require.NoError(t, err)
		}()
	}
	// All of them miss and join the one load, blocked in the master key.
	require.Eventually(t, func() bool { return m.Stats().Misses == callers && slow.decrypts.Load() == 1 }, 5*time.Second, time.Millisecond)
	time.Sleep(20 * time.Millisecond) // let the last one reach the wait
	close(release)
	wg.Wait()
	s := m.Stats()
	t.Logf("stats: %+v", s)
	require.GreaterOrEqual(t, s.Loads, uint64((callers+maxUses-1)/maxUses), "one unwrap served more than CacheMaxUses operations")
}

// A load that was in progress when the tenant was shredded must not hand
// the keyset it read before the shred to the callers waiting for it.
func TestWaitersOfALoadStartedBeforeShredGetErrKeyDestroyed(t *testing.T) {
	e := newEnv(t)
	id, _ := provision(t, e.manager(t), "shredwait")
	m, slow, release := blockFirstDecrypt(t, e)
	ctx := tenant.NewContext(ctxT(t), id)
	errc := make(chan error, 1)
	go func() {
		_, err := m.Seal(ctx, []byte("x"), field)
		errc <- err
	}()
	require.Eventually(t, func() bool { return slow.decrypts.Load() == 1 }, 5*time.Second, time.Millisecond)
	_, err := m.Shred(ctxT(t), id) // the keyset was read; its unwrap is in progress
	require.NoError(t, err)
	close(release)
	require.ErrorIs(t, <-errc, keys.ErrKeyDestroyed, "a waiter was handed a keyset loaded before the shred")
	_, err = m.Seal(ctx, []byte("x"), field)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
}

// Likewise after a rotation: the waiters get the rotated keyset.
func TestWaitersOfALoadStartedBeforeRotateGetTheNewKeyset(t *testing.T) {
	e := newEnv(t)
	id, _ := provision(t, e.manager(t), "rotwait")
	m, slow, release := blockFirstDecrypt(t, e)
	ctx := tenant.NewContext(ctxT(t), id)
	type result struct {
		ct  []byte
		err error
	}
	resc := make(chan result, 1)
	go func() {
		ct, err := m.Seal(ctx, []byte("x"), field)
		resc <- result{ct, err}
	}()
	require.Eventually(t, func() bool { return slow.decrypts.Load() == 1 }, 5*time.Second, time.Millisecond)
	require.NoError(t, m.Rotate(ctxT(t), id, keys.PurposeData)) // its own unwrap is not blocked
	close(release)
	r := <-resc
	require.NoError(t, r.err)
	after, err := m.Seal(ctx, []byte("y"), field)
	require.NoError(t, err)
	require.Equal(t, after[:5], r.ct[:5], "a waiter sealed with the keyset read before the rotation")
}

// Eviction keeps the keysets in use: an entry used since the last sweep
// gets a second chance (CLOCK), and eviction costs O(1), not a scan.
func TestCacheEvictionKeepsKeysetsInUse(t *testing.T) {
	e := newEnv(t)
	const maxEntries = 4
	m := e.manager(t, func(c *keys.Config) { c.CacheMaxEntries = maxEntries })
	hot := make([]context.Context, 2)
	for i := range hot {
		_, hot[i] = provision(t, m, "hot")
	}
	seal := func(ctx context.Context) {
		t.Helper()
		_, err := m.Seal(ctx, []byte("x"), field)
		require.NoError(t, err)
	}
	for _, ctx := range hot {
		seal(ctx)
	}
	for range 20 { // a stream of one-off tenants
		_, cold := provision(t, m, "cold")
		seal(cold)
		for _, ctx := range hot {
			seal(ctx)
		}
	}
	s := m.Stats()
	t.Logf("stats: %+v", s)
	require.Equal(t, maxEntries, s.Entries)
	require.EqualValues(t, 2+20, s.Loads, "a keyset in use was evicted in favour of one-off tenants")
	require.GreaterOrEqual(t, s.Evictions, uint64(20+2-maxEntries))
}

// Close drops the unwrapped keys at once and keeps them out: a closed
// Manager calls no master key again.
func TestCloseDropsTheKeysAndRefusesToUnwrapAgain(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	_, ctx := provision(t, m, "closed")
	ct, err := m.Seal(ctx, []byte("x"), field)
	require.NoError(t, err)
	mac, err := m.MAC(ctx)
	require.NoError(t, err)
	require.NotZero(t, m.Stats().Entries)

	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "idempotent")
	require.Zero(t, m.Stats().Entries, "the unwrapped keys are gone")
	calls := m.Stats().KEKCalls
	_, err = m.Open(ctx, ct, field)
	require.ErrorIs(t, err, keys.ErrClosed)
	_, err = m.Seal(ctx, []byte("x"), field)
	require.ErrorIs(t, err, keys.ErrClosed)
	_, err = m.StreamingAEAD(ctx)
	require.ErrorIs(t, err, keys.ErrClosed)
	_, err = m.MAC(ctx)
	require.ErrorIs(t, err, keys.ErrClosed)
	require.Equal(t, calls, m.Stats().KEKCalls, "no master key call after Close")
	_, err = mac.ComputeMAC([]byte("entry"))
	require.NoError(t, err, "a MAC obtained before keeps working")
}
