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
	// one token will be there. An error means the limiter could not decide
	// (its backend is down) and wraps ErrUnavailable; what a caller does
	// then is the limiter's documented choice, not the caller's.
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
