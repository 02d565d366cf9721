// Package ratelimit limits the request rate of each tenant: a Limiter
// answers, for the tenant of a request, whether it may run now and, if
// not, when it may try again. It also limits each tenant's requests in
// flight at once.
//
// [Local] keeps a token bucket per tenant in memory, for a service with
// one replica. It decides exactly as a golang.org/x/time/rate Limiter
// would (the same arithmetic, tested decision for decision against one),
// under the lock that guards the tenant's entry rather than a mutex of
// its own. [Redis] keeps the buckets in Redis (go-redis v9, redis_rate
// v10), so that every replica of a service takes from one budget per
// tenant. [Concurrency] counts each tenant's requests in flight; Acquire
// takes a [Slot], Release gives it back. The authz middleware calls a
// Limiter's Allow and answers a refusal with 429 Too Many Requests and
// Retry-After. Package ratelimittest is the conformance suite of the
// Limiter contract, which Local and Redis pass; run it on other Limiters.
//
// # Quotas
//
// A tenant's [Quota] (Rate, Burst, Concurrent) is its override if
// [Config.Overrides] has one ([Map] keeps overrides in memory), else its
// tier's ([Config.Tiers], from [DefaultConfig]; the tier from
// [Config.TierOf]). A limiter looks a tenant's quota up on its first
// request and again on its first request after [Config.Refresh] (1 s by
// default; 0 looks up on every request): a changed override or tier takes
// effect within Refresh. A refusal takes nothing: a tenant refused does
// not push its next token further away. One tenant's requests never take
// from another's budget.
//
// # Memory
//
// A limiter keeps state for at most [Config.MaxTenants] tenants (250,000 by
// default; about 130 bytes each), however many distinct tenants it sees.
// Past it, a new tenant replaces the one seen least recently of a few
// sampled; a tenant unseen for [Config.Idle] is forgotten within a quarter
// of Idle. A tenant forgotten comes back with a full bucket: which loses
// nothing if its bucket had refilled (Idle longer than Burst/Rate), and
// otherwise gives it up to one more burst. A Concurrency never forgets a
// tenant with requests in flight. A service that limits by a tenant ID it
// has not authenticated can thus be made to forget tenants, but not to
// grow. The state in Redis is one key per tenant that expires once the
// tenant's bucket is full again.
//
// # Redis
//
// A tenant's key is "rate:" + [RedisConfig.Prefix] + its ID (redis_rate
// adds "rate:"); the Prefix ends in ":", which no tenant ID holds, so no
// two tenants, and no two Prefixes, share a key. Buckets run on the Redis
// server's clock, one clock for every replica. Each Allow is one round
// trip, bounded by [RedisConfig.Timeout].
//
// When Redis does not answer (down, unreachable, timed out), or replies
// an error, [RedisConfig.Fallback] decides: [FallbackLocal] (the default)
// decides from a Local limiter of the same quotas in the replica's memory
// and reports no error, so the service stays up while each replica
// enforces the whole budget on its own; [FallbackRefuse] refuses every
// request with an error wrapping [ErrUnavailable], so that no tenant can
// pass its budget while Redis is away. After Redis fails to answer,
// requests go straight to the Fallback for [RedisConfig.Retry] before
// Redis is tried again.
//
// # Clocks
//
// Local and Concurrency read [Config.Clock] (by default the monotonic
// clock, which makes them immune to changes of the wall clock). A
// clock that goes back gives no tokens, and refills nothing when it comes
// forward again to where it was; one that jumps forward fills buckets to
// their burst, no more. In Redis, a server clock set back holds a tenant's
// bucket where it was until the clock catches up (the tenant is refused
// for up to its last RetryAfter plus the step back); one set forward fills
// the bucket to its burst.
//
// # Contexts
//
// A call whose context is done before it starts, or ends while the
// tenant's quota is looked up, takes nothing and fails with the context's
// error. A Redis call whose context ends while the request is on its way
// fails with the context's error, and Redis may have taken a token for it:
// the request it was for does not run, so the tenant is charged at most
// one request it did not make.
//
// # Errors
//
// Errors are matchable with errors.Is:
//
//   - [ErrQuotaExceeded] ([*QuotaError]): Acquire refused, the tenant has
//     its most requests in flight. It is tenant.ErrQuotaExceeded, the
//     sentinel of blob.ErrQuotaExceeded too. (Allow reports a rate
//     refusal as a Decision with Allowed false, not an error.)
//   - [ErrUnavailable]: the limiter could not decide: Redis did not answer
//     with FallbackRefuse (the Decision has Allowed false), or the
//     tenant's quota was not known and could not be looked up (the
//     lookup's error is wrapped too). A quota known already is kept while
//     lookups fail, and a warning logged.
//   - [ErrInvalidConfig]: a constructor's Config, or a quota (of [Map.Set]
//     or one Overrides returned), that breaks the rules of its fields; the
//     error names the field.
//   - tenant.ErrNoTenant: the zero tenant.ID.
//   - context.Canceled, context.DeadlineExceeded: see Contexts.
//
// # Security
//
// Limits protect the service's capacity and each tenant from the others'
// load; they are no access control. Error messages and logs name the
// tenant and the limit, never another tenant. Keys in Redis carry tenant
// IDs in the clear: whoever reads the Redis sees which tenants are active
// and how busy. With FallbackLocal, a Redis outage multiplies each
// tenant's budget by the number of replicas; with FallbackRefuse it stops
// the service: choose per deployment.
package ratelimit
