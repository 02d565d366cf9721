package ratelimit

import (
	"context"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Limiter decides whether one more request of a tenant may run now.
// Implementations are safe for concurrent use.
type Limiter interface {
	// Allow takes one token from tenant id's budget if there is one. A
	// Decision with Allowed false took nothing; its RetryAfter says when
	// one token will be there. An error means the limiter did not decide,
	// and comes with a Decision whose Allowed is false: it wraps
	// ErrUnavailable when the limiter could not (its backend is down,
	// with a Fallback that refuses, or the tenant's quota could not be
	// looked up), the context's error when ctx ended first, and
	// tenant.ErrNoTenant for the zero ID. What happens when a backend is
	// down is the limiter's documented choice, not the caller's.
	Allow(ctx context.Context, id tenant.ID) (Decision, error)
}

// Decision is a Limiter's answer for one request.
type Decision struct {
	// Allowed reports whether the request may run.
	Allowed bool
	// Limit is the tenant's sustained rate, in requests per second, and
	// Burst the most it may send at once.
	Limit float64
	Burst int
	// Remaining is how many more requests the tenant may send now.
	Remaining int
	// RetryAfter, when Allowed is false, is how long until one more
	// request is allowed. Zero when Allowed is true.
	RetryAfter time.Duration
}
