package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Concurrency limits the requests of each tenant in flight at once to its
// Quota.Concurrent, in memory, for one replica.
type Concurrency struct {
	quotas
}

// NewConcurrency returns a Concurrency limiter configured by cfg (see
// [Config]; its Wait says whether Acquire waits).
func NewConcurrency(cfg Config) (*Concurrency, error) {
	q, err := newQuotas(cfg)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: NewConcurrency: %w", err)
	}
	return &Concurrency{q}, nil
}

// Acquire takes one of tenant id's slots for a request in flight; the
// caller releases it with [Slot.Release] when the request ends (defer it:
// a slot never released is lost to the tenant until the process ends). A
// tenant
// with Quota.Concurrent requests in flight is refused with a
// [*QuotaError] (errors.Is [ErrQuotaExceeded]), at once or, with
// Config.Wait, when no slot has freed within it; the refusal changes
// nothing. Waiters are not served in order. Acquire fails, holding
// nothing, with an error wrapping tenant.ErrNoTenant for the zero ID, the
// context's error if ctx is done (while it waits too), and one wrapping
// [ErrUnavailable] if the tenant's quota is not known and cannot be
// looked up.
func (c *Concurrency) Acquire(ctx context.Context, id tenant.ID) (*Slot, error) {
	var timer *time.Timer
	for {
		s, e, _, err := c.lookup(ctx, id)
		if err != nil {
			return nil, err
		}
		if e.inFlight < e.quota.Concurrent {
			e.inFlight++
			s.mu.Unlock()
			return &Slot{s: s, e: e}, nil
		}
		if c.cfg.Wait == 0 {
			n, limit := e.inFlight, e.quota.Concurrent
			s.mu.Unlock()
			return nil, &QuotaError{Tenant: id, InFlight: n, Limit: limit}
		}
		if e.wake == nil {
			e.wake = make(chan struct{})
		}
		wake, n, limit := e.wake, e.inFlight, e.quota.Concurrent
		s.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(c.cfg.Wait)
			defer timer.Stop()
		}
		select {
		case <-wake:
		case <-timer.C:
			return nil, &QuotaError{Tenant: id, InFlight: n, Limit: limit}
		case <-ctx.Done():
			return nil, fmt.Errorf("ratelimit: tenant %s: %w", id, ctx.Err())
		}
	}
}

// Slot is one request in flight of a tenant, taken by
// [Concurrency.Acquire].
type Slot struct {
	once sync.Once
	s    *shard
	e    *entry // never forgotten by its table while it has requests in flight
}

// Release gives the slot back. Only the first call of a Slot does; later
// ones, and a call on nil, do nothing.
func (sl *Slot) Release() {
	if sl == nil {
		return
	}
	sl.once.Do(func() {
		sl.s.mu.Lock()
		defer sl.s.mu.Unlock()
		sl.e.inFlight--
		if sl.e.wake != nil {
			close(sl.e.wake)
			sl.e.wake = nil
		}
	})
}
