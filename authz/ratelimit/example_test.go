package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/tenant"
)

// A Local limiter gives each tenant its tier's quota, or its own.
func ExampleLocal() {
	cfg := ratelimit.DefaultConfig()
	cfg.Tiers[tenant.TierStandard] = ratelimit.Quota{Rate: 2, Burst: 2, Concurrent: 10}
	overrides := new(ratelimit.Map)
	cfg.Overrides = overrides
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg.Clock = func() time.Time { return now } // a clock that stands still
	l, err := ratelimit.NewLocal(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	acme, globex := tenant.MustParseID("acme"), tenant.MustParseID("globex")
	if err := overrides.Set(globex, ratelimit.Quota{Rate: 100, Burst: 3, Concurrent: 10}); err != nil {
		fmt.Println(err)
		return
	}

	ctx := context.Background()
	for _, id := range []tenant.ID{acme, acme, acme, globex, globex, globex, globex} {
		d, err := l.Allow(ctx, id)
		if err != nil {
			fmt.Println(err)
			return
		}
		if d.Allowed {
			fmt.Printf("%s: allowed, %d left\n", id, d.Remaining)
		} else {
			fmt.Printf("%s: refused, retry after %v\n", id, d.RetryAfter)
		}
	}
	// Output:
	// acme: allowed, 1 left
	// acme: allowed, 0 left
	// acme: refused, retry after 500ms
	// globex: allowed, 2 left
	// globex: allowed, 1 left
	// globex: allowed, 0 left
	// globex: refused, retry after 10ms
}

// A Concurrency limiter refuses a tenant's request over its requests in
// flight at once.
func ExampleConcurrency() {
	cfg := ratelimit.DefaultConfig()
	cfg.Tiers[tenant.TierStandard] = ratelimit.Quota{Rate: 50, Burst: 100, Concurrent: 1}
	c, err := ratelimit.NewConcurrency(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	acme := tenant.MustParseID("acme")
	slot, err := c.Acquire(ctx, acme)
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = c.Acquire(ctx, acme)
	fmt.Println(errors.Is(err, ratelimit.ErrQuotaExceeded), err)
	slot.Release()
	slot, err = c.Acquire(ctx, acme)
	fmt.Println(err)
	slot.Release()
	// Output:
	// true ratelimit: quota exceeded: tenant acme has 1 requests in flight, its limit
	// <nil>
}
