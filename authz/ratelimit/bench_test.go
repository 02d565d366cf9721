package ratelimit_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/tenant"
)

// benchTenants is how many tenants the local benchmarks keep live.
const benchTenants = 100_000

// benchIDs returns n tenant IDs, and an order to visit them in (shuffled,
// so that neither side gains from the cache by visiting in memory order).
func benchIDs(n int) ([]tenant.ID, []int) {
	ids := make([]tenant.ID, n)
	for i := range ids {
		ids[i] = tenant.MustParseID(fmt.Sprintf("org_%d", i))
	}
	return ids, rand.New(rand.NewPCG(1, 2)).Perm(n)
}

// benchQuota lets every request through: the benchmarks measure the check.
var benchQuota = ratelimit.Quota{Rate: ratelimit.MaxRate, Burst: 1 << 30, Concurrent: 1 << 30}

// BenchmarkLocal checks the rate of one of 100,000 live tenants: ours
// (Local.Allow) against a bare *rate.Limiter.Allow on one of 100,000
// limiters held in a slice (mode=raw), and in a map by tenant ID, without
// a lock (mode=map: the cost of finding a tenant's limiter by its ID).
// With visit=all, each check is of the next tenant in a shuffled order of
// all 100,000 (every check misses the CPU caches, for all three); with
// visit=hot, of one of 64 of them (a working set that stays in cache),
// the table still holding 100,000. B/tenant is the heap each tenant
// takes.
func BenchmarkLocal(b *testing.B) {
	ids, order := benchIDs(benchTenants)
	for _, visit := range []struct {
		name string
		n    int
	}{{"all", benchTenants}, {"hot", 64}} {
		b.Run("visit="+visit.name, func(b *testing.B) {
			b.Run("mode=raw", func(b *testing.B) {
				before := heap()
				lims := make([]*rate.Limiter, benchTenants)
				for i := range lims {
					lims[i] = rate.NewLimiter(rate.Limit(benchQuota.Rate), benchQuota.Burst)
				}
				perTenant := float64(heap()-before) / benchTenants
				for i := 0; b.Loop(); i++ {
					if !lims[order[i%visit.n]].Allow() {
						b.Fatal("refused")
					}
				}
				b.ReportMetric(perTenant, "B/tenant")
			})
			b.Run("mode=map", func(b *testing.B) {
				before := heap()
				lims := make(map[tenant.ID]*rate.Limiter, benchTenants)
				for _, id := range ids {
					lims[id] = rate.NewLimiter(rate.Limit(benchQuota.Rate), benchQuota.Burst)
				}
				perTenant := float64(heap()-before) / benchTenants
				for i := 0; b.Loop(); i++ {
					if !lims[ids[order[i%visit.n]]].Allow() {
						b.Fatal("refused")
					}
				}
				b.ReportMetric(perTenant, "B/tenant")
			})
			b.Run("mode=ours", func(b *testing.B) {
				l, perTenant := populated(b, ids)
				ctx := context.Background()
				for i := 0; b.Loop(); i++ {
					d, err := l.Allow(ctx, ids[order[i%visit.n]])
					if err != nil || !d.Allowed {
						b.Fatal("refused", err)
					}
				}
				b.ReportMetric(perTenant, "B/tenant")
			})
		})
	}
}

// BenchmarkLocalParallel is BenchmarkLocal, visit=all, from GOMAXPROCS
// goroutines.
func BenchmarkLocalParallel(b *testing.B) {
	ids, order := benchIDs(benchTenants)
	b.Run("mode=raw", func(b *testing.B) {
		lims := make([]*rate.Limiter, benchTenants)
		for i := range lims {
			lims[i] = rate.NewLimiter(rate.Limit(benchQuota.Rate), benchQuota.Burst)
		}
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for i := rand.IntN(benchTenants); pb.Next(); i++ {
				if !lims[order[i%benchTenants]].Allow() {
					b.Error("refused")
					return
				}
			}
		})
	})
	b.Run("mode=ours", func(b *testing.B) {
		l, _ := populated(b, ids)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for i := rand.IntN(benchTenants); pb.Next(); i++ {
				d, err := l.Allow(ctx, ids[order[i%benchTenants]])
				if err != nil || !d.Allowed {
					b.Error("refused", err)
					return
				}
			}
		})
	})
}

// populated returns a Local holding every tenant of ids, and the heap
// each takes.
func populated(b *testing.B, ids []tenant.ID) (*ratelimit.Local, float64) {
	b.Helper()
	cfg := config(benchQuota, nil)
	cfg.MaxTenants = 2 * len(ids)
	before := heap()
	l := newLocal(b, cfg)
	ctx := context.Background()
	for _, id := range ids {
		if _, err := l.Allow(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
	perTenant := float64(heap()-before) / float64(len(ids))
	if n := l.Tenants(); n != len(ids) {
		b.Fatalf("%d tenants kept, want %d", n, len(ids))
	}
	return l, perTenant
}

// BenchmarkConcurrency takes and gives back a slot of one of 100,000
// tenants: ours (Concurrency.Acquire and Slot.Release) against a bare
// semaphore per tenant (a buffered channel) held in a slice (mode=raw).
func BenchmarkConcurrency(b *testing.B) {
	ids, order := benchIDs(benchTenants)
	b.Run("mode=raw", func(b *testing.B) {
		sems := make([]chan struct{}, benchTenants)
		for i := range sems {
			sems[i] = make(chan struct{}, 16)
		}
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			sem := sems[order[i%benchTenants]]
			select {
			case sem <- struct{}{}:
			default:
				b.Fatal("refused")
			}
			<-sem
		}
	})
	b.Run("mode=ours", func(b *testing.B) {
		cfg := config(benchQuota, nil)
		cfg.MaxTenants = 2 * benchTenants
		c := newConcurrency(b, cfg)
		ctx := context.Background()
		for _, id := range ids {
			s, err := c.Acquire(ctx, id)
			if err != nil {
				b.Fatal(err)
			}
			s.Release()
		}
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			s, err := c.Acquire(ctx, ids[order[i%benchTenants]])
			if err != nil {
				b.Fatal(err)
			}
			s.Release()
		}
	})
}

// BenchmarkRedis is one rate check in Redis for one of 1,000 tenants: ours
// (Redis.Allow) against a bare redis_rate Allow of the same limit
// (mode=raw), and a PING, the round trip under both (mode=ping), with a
// client that heeds contexts (ContextTimeoutEnabled), and with one that
// does not, which ours calls from a goroutine of its own.
func BenchmarkRedis(b *testing.B) {
	for _, heeds := range []bool{true, false} {
		b.Run(fmt.Sprintf("ctxtimeout=%v", heeds), func(b *testing.B) {
			redisClient(b) // skips or fails without Redis
			rdb := redis.NewClient(&redis.Options{Addr: redisAddr(), ContextTimeoutEnabled: heeds})
			b.Cleanup(func() { _ = rdb.Close() }) // after testPrefix's cleanup, which uses it
			benchRedis(b, rdb)
		})
	}
}

func benchRedis(b *testing.B, rdb *redis.Client) {
	prefix := testPrefix(b, rdb)
	ids, order := benchIDs(1000)
	ctx := context.Background()
	b.Run("mode=ping", func(b *testing.B) {
		for b.Loop() {
			if err := rdb.Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("mode=raw", func(b *testing.B) {
		rl := redis_rate.NewLimiter(rdb)
		limit := redis_rate.Limit{Rate: 1, Period: 1000, Burst: benchQuota.Burst} // 1e6 per second
		for i := 0; b.Loop(); i++ {
			res, err := rl.Allow(ctx, prefix+"raw:"+ids[order[i%len(ids)]].String(), limit)
			if err != nil || res.Allowed == 0 {
				b.Fatal("refused", err)
			}
		}
	})
	b.Run("mode=ours", func(b *testing.B) {
		l := newRedis(b, rdb, redisConfig(benchQuota, prefix, ratelimit.FallbackRefuse))
		for i := 0; b.Loop(); i++ {
			d, err := l.Allow(ctx, ids[order[i%len(ids)]])
			if err != nil || !d.Allowed {
				b.Fatal("refused", err)
			}
		}
	})
}
