package authz_test

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/tenant"
)

// The middleware with package ratelimit's own limiters: a token bucket
// (Local) and requests in flight (Concurrency) per tenant.
func TestWithRatelimitPackage(t *testing.T) {
	e := newEnv(t)
	rc := ratelimit.DefaultConfig()
	rc.Tiers[tenant.TierStandard] = ratelimit.Quota{Rate: 0.5, Burst: 2, Concurrent: 1}
	local, err := ratelimit.NewLocal(rc)
	require.NoError(t, err)
	conc, err := ratelimit.NewConcurrency(rc)
	require.NoError(t, err)

	entered, unblock := make(chan struct{}), make(chan struct{})
	block := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			entered <- struct{}{}
			<-unblock
		}
		echo.ServeHTTP(w, r)
	})
	h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) {
		c.Limiter, c.Concurrency = local, authz.ConcurrencyOf(conc)
	}).Handler(block)
	acme, globex := e.token(t, "acme"), e.token(t, "globex")

	// Concurrency: acme's one slot is taken; globex's is its own.
	done := make(chan int)
	go func() { done <- do(h, request("/block", acme)).Code }()
	<-entered
	w := do(h, request("/", acme))
	requireProblem(t, w, http.StatusTooManyRequests, acme)
	require.Equal(t, "1", w.Header().Get("Retry-After"))
	require.Equal(t, 200, do(h, request("/", globex)).Code)
	close(unblock)
	require.Equal(t, 200, <-done)

	// Rate: acme has spent its burst of 2 (the request refused for
	// concurrency took a token too: the rate is checked first).
	w = do(h, request("/", acme))
	requireProblem(t, w, http.StatusTooManyRequests, acme)
	secs, err := strconv.Atoi(w.Header().Get("Retry-After"))
	require.NoError(t, err)
	require.True(t, secs >= 1 && secs <= 2, "Retry-After %d", secs)
	require.Equal(t, 200, do(h, request("/", globex)).Code)
}
