// Package ratelimittest is a conformance suite for implementations of
// [ratelimit.Limiter]: [TestLimiter] checks every clause of the Limiter
// contract, as testing/fstest does for file systems. ratelimit.Local and
// ratelimit.Redis run it; run it on your own Limiter too.
package ratelimittest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestLimiter runs the conformance suite on the Limiters that newLimiter
// returns, one subtest per clause of the contract, named after it (for
// example TestMyLimiter/RefusalTakesNothing): a failure names the clause
// that broke.
//
// newLimiter is called once per subtest, with the subtest's t, and must
// return a Limiter that gives every tenant quota q and in which no tenant
// has spent any of its budget yet (for a limiter kept in a shared store,
// one with keys of its own). The suite sleeps for short times (at most
// 200 ms per clause): a limiter's clock must be the real one.
//
// For example, for a Limiter kept in some store:
//
//	func TestMyLimiter(t *testing.T) {
//		ratelimittest.TestLimiter(t, func(t *testing.T, q ratelimit.Quota) ratelimit.Limiter {
//			return mylimiter.New(testStore(t), q)
//		})
//	}
func TestLimiter(t *testing.T, newLimiter func(t *testing.T, q ratelimit.Quota) ratelimit.Limiter) {
	t.Helper()
	for _, c := range clauses {
		t.Run(c.name, func(t *testing.T) {
			c.check(t, func(q ratelimit.Quota) ratelimit.Limiter { return newLimiter(t, q) })
		})
	}
}

type newFunc func(q ratelimit.Quota) ratelimit.Limiter

// clauses are the checks of TestLimiter, one per clause of the contract.
var clauses = []struct {
	name  string
	check func(t *testing.T, newLimiter newFunc)
}{
	{"BurstAllowedThenRefused", burstAllowedThenRefused},
	{"RefusalTakesNothing", refusalTakesNothing},
	{"RefillsAtTheRate", refillsAtTheRate},
	{"TenantsHaveBudgetsApart", tenantsApart},
	{"ZeroIDIsRefused", zeroIDIsRefused},
	{"CancelledContextTakesNothing", cancelledContextTakesNothing},
	{"ConcurrentCallsTakeFromOneBudget", concurrentCalls},
}

// slow is a rate that adds nothing within a test.
const slow = 0.001

var (
	tenantA = tenant.MustParseID("acme")
	tenantB = tenant.MustParseID("globex")
)

func allow(t *testing.T, l ratelimit.Limiter, id tenant.ID) ratelimit.Decision {
	t.Helper()
	d, err := l.Allow(t.Context(), id)
	if err != nil {
		t.Fatalf("Allow(%s): %v", id, err)
	}
	if d.Allowed && d.RetryAfter != 0 {
		t.Fatalf("Allow(%s) = %+v: allowed with a RetryAfter", id, d)
	}
	return d
}

func burstAllowedThenRefused(t *testing.T, newLimiter newFunc) {
	q := ratelimit.Quota{Rate: slow, Burst: 3, Concurrent: 1}
	l := newLimiter(q)
	for i := range q.Burst {
		d := allow(t, l, tenantA)
		want := ratelimit.Decision{Allowed: true, Limit: q.Rate, Burst: q.Burst, Remaining: q.Burst - 1 - i}
		if d != want {
			t.Fatalf("request %d of a burst of %d: %+v, want %+v", i+1, q.Burst, d, want)
		}
	}
	d := allow(t, l, tenantA)
	if d.Allowed || d.Remaining != 0 || d.Limit != q.Rate || d.Burst != q.Burst {
		t.Fatalf("the request after the burst: %+v, want refused with Limit %v, Burst %d, Remaining 0", d, q.Rate, q.Burst)
	}
	if most := time.Duration(float64(time.Second)/q.Rate) + time.Second; d.RetryAfter <= 0 || d.RetryAfter > most {
		t.Fatalf("RetryAfter %v: want more than 0, at most one token's time (%v)", d.RetryAfter, most)
	}
}

func refusalTakesNothing(t *testing.T, newLimiter newFunc) {
	q := ratelimit.Quota{Rate: 10, Burst: 1, Concurrent: 1}
	l := newLimiter(q)
	if !allow(t, l, tenantA).Allowed {
		t.Fatal("the first request was refused")
	}
	first := allow(t, l, tenantA)
	if first.Allowed {
		t.Fatal("the second request of a burst of 1 was allowed")
	}
	start := time.Now()
	for range 10 {
		if d := allow(t, l, tenantA); d.Allowed || d.RetryAfter > first.RetryAfter {
			t.Fatalf("a refusal after a refusal: %+v, want refused with RetryAfter at most %v: refusals must take nothing", d, first.RetryAfter)
		}
	}
	time.Sleep(first.RetryAfter - time.Since(start) + 20*time.Millisecond)
	if d := allow(t, l, tenantA); !d.Allowed {
		t.Fatalf("after the first refusal's RetryAfter (%v): %+v, want allowed: the refusals in between took tokens", first.RetryAfter, d)
	}
}

func refillsAtTheRate(t *testing.T, newLimiter newFunc) {
	q := ratelimit.Quota{Rate: 20, Burst: 1, Concurrent: 1}
	l := newLimiter(q)
	if !allow(t, l, tenantA).Allowed {
		t.Fatal("the first request was refused")
	}
	d := allow(t, l, tenantA)
	if token := time.Second / 20; d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > token+10*time.Millisecond {
		t.Fatalf("the second request at 20 per second, burst 1: %+v, want refused with RetryAfter in (0, %v]", d, token)
	}
	time.Sleep(d.RetryAfter + 20*time.Millisecond)
	if d := allow(t, l, tenantA); !d.Allowed {
		t.Fatalf("after RetryAfter: %+v, want allowed", d)
	}
	if d := allow(t, l, tenantA); d.Allowed {
		t.Fatalf("a second request after one token's time: %+v, want refused", d)
	}
}

// tenantsApart exhausts tenant a_b, whose budget a careless key scheme
// could share with a, b, ab, a_bc or b_a: they keep theirs.
func tenantsApart(t *testing.T, newLimiter newFunc) {
	q := ratelimit.Quota{Rate: slow, Burst: 2, Concurrent: 1}
	l := newLimiter(q)
	hammered := tenant.MustParseID("a_b")
	for range 10 {
		allow(t, l, hammered)
	}
	if d := allow(t, l, hammered); d.Allowed {
		t.Fatalf("%s after its burst: %+v, want refused", hammered, d)
	}
	for _, s := range []string{"a", "b", "ab", "a_bc", "a_b_c", "b_a", "ba"} {
		id := tenant.MustParseID(s)
		for i := range q.Burst {
			if d := allow(t, l, id); !d.Allowed {
				t.Fatalf("request %d of tenant %s, after tenant %s spent its budget: %+v, want allowed", i+1, id, hammered, d)
			}
		}
		if d := allow(t, l, id); d.Allowed {
			t.Fatalf("tenant %s after its burst: %+v, want refused", id, d)
		}
	}
}

func zeroIDIsRefused(t *testing.T, newLimiter newFunc) {
	l := newLimiter(ratelimit.Quota{Rate: 1, Burst: 1, Concurrent: 1})
	d, err := l.Allow(t.Context(), tenant.ID{})
	if !errors.Is(err, tenant.ErrNoTenant) || d.Allowed {
		t.Fatalf("Allow of the zero ID: %+v, %v; want refused with an error wrapping tenant.ErrNoTenant", d, err)
	}
}

func cancelledContextTakesNothing(t *testing.T, newLimiter newFunc) {
	l := newLimiter(ratelimit.Quota{Rate: slow, Burst: 1, Concurrent: 1})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	d, err := l.Allow(ctx, tenantA)
	if !errors.Is(err, context.Canceled) || d.Allowed {
		t.Fatalf("Allow with a cancelled context: %+v, %v; want refused with an error wrapping context.Canceled", d, err)
	}
	if d := allow(t, l, tenantA); !d.Allowed {
		t.Fatalf("after a call with a cancelled context: %+v, want allowed: the call took a token", d)
	}
}

// concurrentCalls takes two tenants' budgets from many goroutines at
// once: each is allowed its burst, exactly.
func concurrentCalls(t *testing.T, newLimiter newFunc) {
	q := ratelimit.Quota{Rate: slow, Burst: 25, Concurrent: 1}
	l := newLimiter(q)
	ids := []tenant.ID{tenantA, tenantB}
	var mu sync.Mutex // guards allowed and errs
	allowed := map[tenant.ID]int{}
	var errs []error
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				id := ids[(g+i)%2]
				d, err := l.Allow(context.Background(), id)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if d.Allowed {
					allowed[id]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d calls failed, the first: %v", len(errs), errs[0])
	}
	for _, id := range ids {
		if allowed[id] != q.Burst {
			t.Errorf("tenant %s: %d of 80 concurrent requests allowed, want its burst, %d", id, allowed[id], q.Burst)
		}
	}
}
