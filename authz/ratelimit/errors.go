package ratelimit

import (
	"errors"
	"fmt"

	"github.com/rtmx-ai/tenancy/tenant"
)

var (
	// ErrUnavailable is wrapped by the error of a limiter that could not
	// decide: Redis unreachable or failing (with FallbackRefuse), or a
	// tenant's quota that could not be looked up and was not known yet.
	ErrUnavailable = errors.New("rate limiter unavailable")

	// ErrQuotaExceeded is wrapped by the error of a [Concurrency.Acquire]
	// refused because the tenant has its most requests in flight: a
	// [*QuotaError]. It is tenant.ErrQuotaExceeded, as are
	// blob.ErrQuotaExceeded and store.ErrBlobQuotaExceeded, so that one
	// errors.Is test finds a quota exceeded wherever it was.
	ErrQuotaExceeded = tenant.ErrQuotaExceeded

	// ErrInvalidConfig is wrapped by the error of a constructor given a
	// Config that breaks its rules, and of a quota that breaks those of
	// [Quota]. Like ErrUnavailable it carries no prefix: the errors that
	// wrap it start with "ratelimit:" once.
	ErrInvalidConfig = errors.New("invalid configuration")
)

// QuotaError reports a request refused by a tenant's quota of requests in
// flight. It wraps [ErrQuotaExceeded].
type QuotaError struct {
	Tenant tenant.ID
	// InFlight is how many of the tenant's requests were in flight, and
	// Limit its quota (Quota.Concurrent).
	InFlight, Limit int
}

// Error implements error.
func (e *QuotaError) Error() string {
	return fmt.Sprintf("ratelimit: quota exceeded: tenant %s has %d requests in flight, its limit", e.Tenant, e.InFlight)
}

// Unwrap returns ErrQuotaExceeded.
func (e *QuotaError) Unwrap() error { return ErrQuotaExceeded }
