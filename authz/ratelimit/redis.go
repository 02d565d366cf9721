package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Fallback is what a [Redis] limiter does when Redis cannot answer.
type Fallback string

const (
	// FallbackLocal, the default, decides with a [Local] limiter of the
	// same quotas in the replica's memory, and reports no error: the
	// service stays up, and each replica enforces a tenant's whole budget
	// on its own while Redis is away (with N replicas, up to N times the
	// budget).
	FallbackLocal Fallback = "local"
	// FallbackRefuse refuses every request while Redis is away: a
	// Decision with Allowed false and an error wrapping [ErrUnavailable].
	// No tenant can pass its budget, and a Redis outage stops the service.
	FallbackRefuse Fallback = "refuse"
)

// RedisConfig configures a [Redis] limiter. It comes from
// [DefaultRedisConfig], under the rule of [Config].
type RedisConfig struct {
	// Config holds the quotas, their lookup, and the bounds of the
	// state kept in memory (tenants' quotas, and the buckets of
	// FallbackLocal).
	Config
	// Prefix starts every key: a tenant's key is "rate:" + Prefix + its
	// ID. 1 to 64 bytes of ASCII letters, digits and "_-.:", ending in
	// ":". Tenant IDs hold no ":", so no two (Prefix, tenant) pairs make
	// the same key.
	Prefix string
	// Fallback is what happens when Redis cannot answer:
	// FallbackLocal or FallbackRefuse.
	Fallback Fallback
	// Timeout bounds each call to Redis: more than 0. A *redis.Client or
	// *redis.ClusterClient whose Options have ContextTimeoutEnabled heeds
	// it by itself. Other clients (go-redis otherwise heeds only its own
	// dial and read timeouts, seconds) are called in a goroutine of their
	// own, which costs a hand-over per call, and Allow returns within
	// Timeout while the call goes on until the client's timeouts end it.
	Timeout time.Duration
	// Retry is how long, after Redis failed to answer (a network error
	// or timeout), requests go straight to the Fallback before Redis is
	// tried again: at least 0 (0 tries Redis on every request). An error
	// Redis itself replies is handled by the Fallback for that request
	// only.
	Retry time.Duration
}

// DefaultRedisConfig returns DefaultConfig with Prefix
// "tenancy:ratelimit:", FallbackLocal, Timeout 100 ms and Retry 1 s.
func DefaultRedisConfig() RedisConfig {
	return RedisConfig{
		Config:   DefaultConfig(),
		Prefix:   "tenancy:ratelimit:",
		Fallback: FallbackLocal,
		Timeout:  100 * time.Millisecond,
		Retry:    time.Second,
	}
}

func (c RedisConfig) validate() error {
	if n := len(c.Prefix); n < 1 || n > 64 || c.Prefix[n-1] != ':' {
		return fmt.Errorf("%w: RedisConfig.Prefix %q: must be 1 to 64 bytes ending in \":\"", ErrInvalidConfig, c.Prefix)
	}
	for _, r := range c.Prefix {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_' || r == '-' || r == '.' || r == ':') {
			return fmt.Errorf("%w: RedisConfig.Prefix %q: only ASCII letters, digits and \"_-.:\"", ErrInvalidConfig, c.Prefix)
		}
	}
	switch {
	case c.Fallback != FallbackLocal && c.Fallback != FallbackRefuse:
		return fmt.Errorf("%w: RedisConfig.Fallback %q: must be %q or %q", ErrInvalidConfig, string(c.Fallback), FallbackLocal, FallbackRefuse)
	case c.Timeout <= 0:
		return fmt.Errorf("%w: RedisConfig.Timeout %v: must be more than 0", ErrInvalidConfig, c.Timeout)
	case c.Retry < 0:
		return fmt.Errorf("%w: RedisConfig.Retry %v: must be at least 0", ErrInvalidConfig, c.Retry)
	}
	return nil
}

// Redis is a [Limiter] whose buckets live in Redis (go-redis v9 and
// redis_rate v10, a GCRA bucket on the Redis server's clock): every
// replica of a service that uses the same Redis and Prefix shares one
// budget per tenant. Each Allow is one round trip (EVALSHA).
type Redis struct {
	local    *Local // the quotas, and the buckets of FallbackLocal
	rl       *redis_rate.Limiter
	prefix   string
	fallback Fallback
	timeout  time.Duration
	retry    time.Duration
	// direct: the client heeds its context's deadline, so calls need no
	// goroutine of their own to end within timeout.
	direct bool
	// downUntil is when, as a reading of local's clock, Redis is tried
	// again after it failed to answer; 0 if it has not failed.
	downUntil atomic.Int64
}

var _ Limiter = (*Redis)(nil)

// NewRedis returns a Redis limiter over client rdb (a *redis.Client or
// *redis.ClusterClient, best with ContextTimeoutEnabled: see
// RedisConfig.Timeout; the limiter does not close it).
func NewRedis(rdb redis.UniversalClient, cfg RedisConfig) (*Redis, error) {
	if rdb == nil {
		return nil, fmt.Errorf("ratelimit: NewRedis: %w: no Redis client", ErrInvalidConfig)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("ratelimit: NewRedis: %w", err)
	}
	local, err := NewLocal(cfg.Config)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: NewRedis: %w", errors.Unwrap(err))
	}
	direct := false
	switch c := rdb.(type) {
	case *redis.Client:
		direct = c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		direct = c.Options().ContextTimeoutEnabled
	}
	return &Redis{
		direct:   direct,
		local:    local,
		rl:       redis_rate.NewLimiter(rdb),
		prefix:   cfg.Prefix,
		fallback: cfg.Fallback,
		timeout:  cfg.Timeout,
		retry:    cfg.Retry,
	}, nil
}

// Allow implements [Limiter]: it takes one token from tenant id's bucket
// in Redis if there is one. When Redis cannot answer, the Fallback
// decides. It fails, taking nothing, as [Local.Allow] does (the zero ID, a
// context done before the call, a quota that cannot be looked up). A
// context that ends while the call is on its way fails it with the
// context's error, and Redis may have taken a token for it.
func (r *Redis) Allow(ctx context.Context, id tenant.ID) (Decision, error) {
	s, e, now, err := r.local.lookup(ctx, id)
	if err != nil {
		return Decision{}, err
	}
	q := e.quota
	s.mu.Unlock()
	if until := r.downUntil.Load(); until != 0 && now < until {
		return r.unavailable(ctx, id, q, errRedisDown)
	}

	res, err := r.call(ctx, r.prefix+id.String(), redis_rate.Limit{
		Rate:   1,
		Period: time.Duration(float64(time.Second) / q.Rate),
		Burst:  q.Burst,
	})
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return Decision{}, fmt.Errorf("ratelimit: tenant %s: %w", id, cerr)
		}
		var reply redis.Error
		if !errors.As(err, &reply) || errors.Is(err, context.DeadlineExceeded) {
			// No answer: give Redis Retry before trying it again.
			r.downUntil.Store(max(1, r.local.clock.read()+int64(r.retry)))
		}
		r.local.cfg.Logger.WarnContext(ctx, "ratelimit: Redis failed", "tenant_id", id, "fallback", string(r.fallback), "err", err)
		return r.unavailable(ctx, id, q, err)
	}
	d := Decision{Allowed: res.Allowed > 0, Limit: q.Rate, Burst: q.Burst, Remaining: res.Remaining}
	if !d.Allowed {
		d.RetryAfter = max(res.RetryAfter, 1)
	}
	return d, nil
}

// call runs the script within Timeout. A client that does not heed its
// context's deadline (go-redis without ContextTimeoutEnabled waits for its
// own read and dial timeouts, seconds) is called in a goroutine of its
// own, which ends when the client gives up; that costs a hand-over between
// goroutines per call (tens of µs on a busy machine).
func (r *Redis) call(ctx context.Context, key string, limit redis_rate.Limit) (*redis_rate.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if r.direct {
		return r.rl.Allow(ctx, key, limit)
	}
	type result struct {
		res *redis_rate.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := r.rl.Allow(ctx, key, limit)
		done <- result{res, err}
	}()
	select {
	case x := <-done:
		return x.res, x.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

var errRedisDown = errors.New("not tried: Redis failed to answer within RedisConfig.Retry")

// unavailable decides as the Fallback says for a request Redis could not
// answer because of err.
func (r *Redis) unavailable(ctx context.Context, id tenant.ID, q Quota, err error) (Decision, error) {
	if r.fallback == FallbackLocal {
		return r.local.Allow(ctx, id)
	}
	return Decision{Limit: q.Rate, Burst: q.Burst, RetryAfter: max(r.retry, time.Second)},
		fmt.Errorf("ratelimit: tenant %s: %w: %w", id, ErrUnavailable, err)
}
