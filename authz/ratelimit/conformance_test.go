package ratelimit_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/authz/ratelimit/ratelimittest"
)

func TestLocalConformance(t *testing.T) {
	ratelimittest.TestLimiter(t, func(t *testing.T, q ratelimit.Quota) ratelimit.Limiter {
		return newLocal(t, config(q, nil))
	})
}

func TestRedisConformance(t *testing.T) {
	rdb := redisClient(t)
	for _, fb := range []ratelimit.Fallback{ratelimit.FallbackLocal, ratelimit.FallbackRefuse} {
		t.Run("fallback="+string(fb), func(t *testing.T) {
			ratelimittest.TestLimiter(t, func(t *testing.T, q ratelimit.Quota) ratelimit.Limiter {
				return newRedis(t, rdb, redisConfig(q, testPrefix(t, rdb), fb))
			})
		})
	}
}

// TestRedisUnreachableConformance: with Redis away, FallbackLocal is a
// Limiter like any other.
func TestRedisUnreachableConformance(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: freeAddr(t), MaxRetries: -1})
	defer rdb.Close()
	ratelimittest.TestLimiter(t, func(t *testing.T, q ratelimit.Quota) ratelimit.Limiter {
		return newRedis(t, rdb, redisConfig(q, "tenancytest:unreachable:", ratelimit.FallbackLocal))
	})
}
