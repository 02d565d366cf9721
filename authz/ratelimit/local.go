package ratelimit

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Local is a [Limiter] in memory, for a service with one replica (or with
// a budget per replica): a token bucket per tenant, filled at the
// tenant's Quota.Rate up to its Quota.Burst, that decides as a
// golang.org/x/time/rate Limiter would. A check takes one lock and no
// allocation.
type Local struct {
	quotas
}

var _ Limiter = (*Local)(nil)

// NewLocal returns a Local limiter configured by cfg (see [Config]).
func NewLocal(cfg Config) (*Local, error) {
	q, err := newQuotas(cfg)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: NewLocal: %w", err)
	}
	return &Local{q}, nil
}

// Allow implements [Limiter]: it takes one token from tenant id's bucket
// if there is one. It fails, taking nothing, with an error wrapping
// tenant.ErrNoTenant for the zero ID, the context's error if ctx is done,
// and one wrapping [ErrUnavailable] if the tenant's quota is not known and
// cannot be looked up.
func (l *Local) Allow(ctx context.Context, id tenant.ID) (Decision, error) {
	s, e, _, err := l.lookup(ctx, id)
	if err != nil {
		return Decision{}, err
	}
	d := l.take(e)
	s.mu.Unlock()
	return d, nil
}

// take takes one token from e's bucket at e.seen, the latest time of the
// tenant (after a clock set back, the time it had reached). The caller
// holds the lock of e's shard.
func (q *quotas) take(e *entry) Decision {
	d := Decision{Limit: e.quota.Rate, Burst: e.quota.Burst}
	ok, tokens := e.b.take(e.seen, &e.quota)
	if ok {
		d.Allowed = true
		d.Remaining = max(0, int(tokens-1))
		return d
	}
	missing := 1 - tokens
	d.RetryAfter = time.Duration(math.Ceil(missing / e.quota.Rate * float64(time.Second)))
	if d.RetryAfter <= 0 {
		d.RetryAfter = 1
	}
	return d
}

// quotas is the per-tenant state shared by the limiters: the Config, its
// clock, and a table of tenants with their quotas.
type quotas struct {
	cfg     Config
	clock   clock
	refresh int64 // cfg.Refresh
	t       *table
}

func newQuotas(cfg Config) (quotas, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return quotas{}, err
	}
	return quotas{
		cfg:     cfg,
		clock:   newClock(cfg.Clock),
		refresh: int64(cfg.Refresh),
		t:       newTable(cfg.MaxTenants, cfg.Idle),
	}, nil
}

// lookup returns the entry of tenant id, with its quota looked up within
// Config.Refresh, and the time, with the lock of its shard s held: the
// caller unlocks it. On error, nothing is held.
func (q *quotas) lookup(ctx context.Context, id tenant.ID) (*shard, *entry, int64, error) {
	if id.IsZero() {
		return nil, nil, 0, fmt.Errorf("ratelimit: %w", tenant.ErrNoTenant)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, 0, fmt.Errorf("ratelimit: tenant %s: %w", id, err)
	}
	now := q.clock.read()
	h := q.t.hash(id)
	s := q.t.shard(h)
	s.mu.Lock()
	q.t.sweep(s, now)
	e := s.get(h, id, now)
	if e != nil {
		// age wraps below 0 only for readings 292 years apart: stale.
		if age := now - e.checked; age >= 0 && age < q.refresh {
			return s, e, now, nil
		}
	}
	s.mu.Unlock()

	quota, err := q.cfg.resolve(ctx, id)
	if cerr := ctx.Err(); cerr != nil {
		return nil, nil, 0, fmt.Errorf("ratelimit: tenant %s: %w", id, cerr)
	}
	s.mu.Lock()
	e = s.get(h, id, now)
	switch {
	case err != nil && e == nil:
		s.mu.Unlock()
		q.cfg.Logger.WarnContext(ctx, "ratelimit: quota lookup failed", "tenant_id", id, "err", err)
		return nil, nil, 0, fmt.Errorf("ratelimit: %w: %w", ErrUnavailable, err)
	case err != nil:
		// Keep the quota known; look up again after Refresh.
		q.cfg.Logger.WarnContext(ctx, "ratelimit: quota lookup failed; keeping the tenant's last quota", "tenant_id", id, "err", err)
	case e == nil:
		e = newEntry(id, quota, now)
		q.t.add(s, h, e, now)
	case e.quota != quota:
		e.b.setQuota(e.seen, &e.quota)
		e.quota = quota
	}
	e.checked = now
	return s, e, now, nil
}
