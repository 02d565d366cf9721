package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

// The bounds of a Quota.
const (
	// MinRate and MaxRate are the lowest and highest Quota.Rate, in
	// requests per second (MinRate is one request in about 11.6 days).
	MinRate = 1e-6
	MaxRate = 1e6
	// MaxBurst is the highest Quota.Burst.
	MaxBurst = 1 << 30
)

// Quota is what one tenant may use: a request rate with a burst, and a
// number of requests in flight at once.
type Quota struct {
	// Rate is the sustained rate, in requests per second: MinRate to
	// MaxRate. (A tenant that may send nothing is suspended in the tenant
	// directory, not rate limited.)
	Rate float64
	// Burst is the most requests the tenant may send at once, the size
	// of its token bucket: 1 to MaxBurst.
	Burst int
	// Concurrent is the most requests of the tenant in flight at once
	// (see [Concurrency]): at least 1.
	Concurrent int
}

// validate checks q, naming field in its error.
func (q Quota) validate(field string) error {
	switch {
	case math.IsNaN(q.Rate) || q.Rate < MinRate || q.Rate > MaxRate:
		return fmt.Errorf("%w: %s.Rate %v: must be %g to %g requests per second", ErrInvalidConfig, field, q.Rate, MinRate, MaxRate)
	case q.Burst < 1 || q.Burst > MaxBurst:
		return fmt.Errorf("%w: %s.Burst %d: must be 1 to %d with a rate above 0", ErrInvalidConfig, field, q.Burst, MaxBurst)
	case q.Concurrent < 1:
		return fmt.Errorf("%w: %s.Concurrent %d: must be at least 1", ErrInvalidConfig, field, q.Concurrent)
	}
	return nil
}

// Overrides gives the tenants whose quota is not their tier's.
// Implementations are safe for concurrent use. [Map] is one in memory.
type Overrides interface {
	// Quota returns tenant id's own quota and true, or false when the
	// tenant has none and takes its tier's. An error means the override
	// could not be read; the limiter then keeps the quota it had for the
	// tenant, or, having none, reports ErrUnavailable.
	Quota(ctx context.Context, id tenant.ID) (Quota, bool, error)
}

// Config configures the limiters of this package. A Config comes from
// [DefaultConfig] and is then changed field by field; zero is never a
// default: the constructors refuse a Config whose fields break the rules
// documented on them, with an error naming the field. Nil functions and
// interfaces mean what their fields say.
type Config struct {
	// Tiers holds the default quota of each tier: one for every tier of
	// tenant.Tiers and no other.
	Tiers map[tenant.Tier]Quota
	// Overrides gives per-tenant quotas. Nil: none.
	Overrides Overrides
	// TierOf returns a tenant's tier (say, from the tenant directory the
	// authz middleware reads). An error is handled as for Overrides. Nil:
	// every tenant is tenant.TierStandard.
	TierOf func(ctx context.Context, id tenant.ID) (tenant.Tier, error)
	// Refresh is how long a tenant's quota, once looked up (TierOf and
	// Overrides), is used before it is looked up again: a changed
	// override or tier takes effect on the tenant's first request after
	// Refresh has passed. 0 looks up on every request. At least 0.
	Refresh time.Duration
	// MaxTenants is the most tenants a limiter keeps state for: at least
	// 1. Past it, the tenant seen least recently is forgotten. See the
	// package documentation (Memory).
	MaxTenants int
	// Idle is how long a tenant unseen is kept: more than 0. A tenant's
	// budget refills in Burst/Rate seconds; one forgotten before that
	// comes back with a full budget, so Idle should be longer than that.
	Idle time.Duration
	// Wait is how long [Concurrency.Acquire] waits for one of the
	// tenant's requests in flight to end when it has its most: 0 refuses
	// at once. At least 0.
	Wait time.Duration
	// Clock tells the time. Nil: the monotonic clock (time.Since the
	// limiter was made), which makes the limiters immune to changes of
	// the wall clock and costs half a time.Now.
	Clock func() time.Time
	// Logger receives warnings (an override or tier that could not be
	// read, Redis unreachable), as key/value pairs with no secrets. Nil:
	// discard.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults: per tier, standard 50 requests per
// second (burst 100, 20 in flight), enterprise 200 (burst 400, 100 in
// flight), government 200 (burst 400, 100 in flight); no overrides; every
// tenant standard; Refresh 1 s; MaxTenants 250,000; Idle 10 minutes; Wait 0
// (a request over its tenant's Concurrent is refused at once).
func DefaultConfig() Config {
	return Config{
		Tiers: map[tenant.Tier]Quota{
			tenant.TierStandard:   {Rate: 50, Burst: 100, Concurrent: 20},
			tenant.TierEnterprise: {Rate: 200, Burst: 400, Concurrent: 100},
			tenant.TierGovernment: {Rate: 200, Burst: 400, Concurrent: 100},
		},
		Refresh:    time.Second,
		MaxTenants: 250_000,
		Idle:       10 * time.Minute,
	}
}

// validate checks c and returns a copy with its own Tiers map.
func (c Config) validate() (Config, error) {
	for _, t := range tenant.Tiers() {
		q, ok := c.Tiers[t]
		if !ok {
			return Config{}, fmt.Errorf("%w: Config.Tiers: no quota for tier %q", ErrInvalidConfig, t)
		}
		if err := q.validate(fmt.Sprintf("Config.Tiers[%s]", t)); err != nil {
			return Config{}, err
		}
	}
	for t := range c.Tiers {
		if !slices.Contains(tenant.Tiers(), t) {
			return Config{}, fmt.Errorf("%w: Config.Tiers: unknown tier %q (tiers: %v)", ErrInvalidConfig, string(t), tenant.Tiers())
		}
	}
	switch {
	case c.Refresh < 0:
		return Config{}, fmt.Errorf("%w: Config.Refresh %v: must be at least 0", ErrInvalidConfig, c.Refresh)
	case c.MaxTenants < 1:
		return Config{}, fmt.Errorf("%w: Config.MaxTenants %d: must be at least 1", ErrInvalidConfig, c.MaxTenants)
	case c.Wait < 0:
		return Config{}, fmt.Errorf("%w: Config.Wait %v: must be at least 0", ErrInvalidConfig, c.Wait)
	case c.Idle <= 0:
		return Config{}, fmt.Errorf("%w: Config.Idle %v: must be more than 0", ErrInvalidConfig, c.Idle)
	}
	tiers := make(map[tenant.Tier]Quota, len(c.Tiers))
	for t, q := range c.Tiers {
		tiers[t] = q
	}
	c.Tiers = tiers
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// resolve looks up tenant id's quota: its override, or its tier's.
func (c *Config) resolve(ctx context.Context, id tenant.ID) (Quota, error) {
	if c.Overrides != nil {
		q, ok, err := c.Overrides.Quota(ctx, id)
		if err != nil {
			return Quota{}, fmt.Errorf("override of tenant %s: %w", id, err)
		}
		if ok {
			if err := q.validate("override"); err != nil {
				return Quota{}, fmt.Errorf("tenant %s: %w", id, err)
			}
			return q, nil
		}
	}
	tier := tenant.TierStandard
	if c.TierOf != nil {
		t, err := c.TierOf(ctx, id)
		if err != nil {
			return Quota{}, fmt.Errorf("tier of tenant %s: %w", id, err)
		}
		tier = t
	}
	q, ok := c.Tiers[tier]
	if !ok {
		return Quota{}, fmt.Errorf("tenant %s: %w: unknown tier %q", id, ErrInvalidConfig, string(tier))
	}
	return q, nil
}

// Map is an [Overrides] in memory, safe for concurrent use. Its zero value
// is empty and ready to use.
type Map struct {
	mu sync.RWMutex // guards m
	m  map[tenant.ID]Quota
}

var _ Overrides = (*Map)(nil)

// Set gives tenant id quota q, which must follow the rules of [Quota]. It
// takes effect within the limiters' Config.Refresh.
func (m *Map) Set(id tenant.ID, q Quota) error {
	if id.IsZero() {
		return fmt.Errorf("ratelimit: Map.Set: %w", tenant.ErrNoTenant)
	}
	if err := q.validate("Quota"); err != nil {
		return fmt.Errorf("ratelimit: Map.Set tenant %s: %w", id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = make(map[tenant.ID]Quota)
	}
	m.m[id] = q
	return nil
}

// Delete removes tenant id's override: it takes its tier's quota again,
// within the limiters' Config.Refresh.
func (m *Map) Delete(id tenant.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, id)
}

// Quota implements [Overrides].
func (m *Map) Quota(_ context.Context, id tenant.ID) (Quota, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	q, ok := m.m[id]
	return q, ok, nil
}
