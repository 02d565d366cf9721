package ratelimit

import (
	"context"
	"fmt"
	"math"
	"time"

	"golang.org/x/time/rate"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Local is a [Limiter] in memory, for a service with one replica (or with
// a budget per replica): a token bucket (golang.org/x/time/rate) per
// tenant, filled at the tenant's Quota.Rate up to its Quota.Burst.
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
	s, e, now, err := l.lookup(ctx, id)
	if err != nil {
		return Decision{}, err
	}
	d := take(e, now)
	s.mu.Unlock()
	return d, nil
}

// take takes one token from e's bucket. The caller holds the lock of e's
// shard.
func take(e *entry, now time.Time) Decision {
	if now.Before(e.limAt) {
		now = e.limAt
	}
	e.limAt = now
	d := Decision{Limit: e.quota.Rate, Burst: e.quota.Burst}
	// The caller's lock makes the two calls one step; a refusal takes
	// one call, and nothing from the bucket.
	tokens := e.lim.TokensAt(now)
	if tokens >= 1 && e.lim.AllowN(now, 1) {
		d.Allowed = true
		d.Remaining = int(tokens - 1)
		return d
	}
	missing := 1 - tokens
	d.RetryAfter = time.Duration(math.Ceil(missing / e.quota.Rate * float64(time.Second)))
	if d.RetryAfter <= 0 {
		d.RetryAfter = 1
	}
	return d
}

// quotas is the per-tenant state shared by the limiters: the Config, and
// a table of tenants with their quotas.
type quotas struct {
	cfg Config
	t   *table
}

func newQuotas(cfg Config) (quotas, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return quotas{}, err
	}
	return quotas{cfg: cfg, t: newTable(cfg.MaxTenants, cfg.Idle)}, nil
}

// lookup returns the entry of tenant id, with its quota looked up within
// Config.Refresh, and the time, with the lock of its shard s held: the
// caller unlocks it. On error, nothing is held.
func (q *quotas) lookup(ctx context.Context, id tenant.ID) (*shard, *entry, time.Time, error) {
	if id.IsZero() {
		return nil, nil, time.Time{}, fmt.Errorf("ratelimit: %w", tenant.ErrNoTenant)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("ratelimit: tenant %s: %w", id, err)
	}
	now := q.cfg.Clock()
	s := q.t.shard(id)
	s.mu.Lock()
	q.t.sweep(s, now)
	e := s.get(id, now)
	if e != nil {
		if age := now.Sub(e.checked); age >= 0 && age < q.cfg.Refresh {
			return s, e, now, nil
		}
	}
	s.mu.Unlock()

	quota, err := q.cfg.resolve(ctx, id)
	if cerr := ctx.Err(); cerr != nil {
		return nil, nil, time.Time{}, fmt.Errorf("ratelimit: tenant %s: %w", id, cerr)
	}
	s.mu.Lock()
	e = s.get(id, now)
	switch {
	case err != nil && e == nil:
		s.mu.Unlock()
		q.cfg.Logger.WarnContext(ctx, "ratelimit: quota lookup failed", "tenant_id", id, "err", err)
		return nil, nil, time.Time{}, fmt.Errorf("ratelimit: %w: %w", ErrUnavailable, err)
	case err != nil:
		// Keep the quota known; look up again after Refresh.
		q.cfg.Logger.WarnContext(ctx, "ratelimit: quota lookup failed; keeping the tenant's last quota", "tenant_id", id, "err", err)
	case e == nil:
		e = newEntry(id, quota, now)
		q.t.add(s, e, now)
	case e.quota != quota:
		e.quota = quota
		at := now
		if at.Before(e.limAt) {
			at = e.limAt
		}
		e.limAt = at
		e.lim.SetLimitAt(at, rate.Limit(quota.Rate))
		e.lim.SetBurstAt(at, quota.Burst)
	}
	e.checked = now
	return s, e, now, nil
}
