package tenant

import "errors"

var (
	// ErrNoTenant is wrapped by every error returned because a
	// tenant-scoped operation was called with a context that carries no
	// tenant.
	ErrNoTenant = errors.New("tenant: no tenant in context")

	// ErrInvalidID is wrapped by errors for input that is not a tenant ID.
	ErrInvalidID = errors.New("tenant: invalid tenant ID")

	// ErrCrossTenant is wrapped by errors for an operation that names a
	// tenant other than the one in its context: a URL path or host for
	// another tenant, a job re-aimed, a row key of another tenant.
	ErrCrossTenant = errors.New("tenant: cross-tenant access denied")

	// ErrQuotaExceeded is wrapped by errors for a request or change
	// refused because it would take its tenant past a limit of its
	// quota. Packages store and blob (bytes and objects stored) and
	// authz/ratelimit (requests in flight) use this one value, so one
	// errors.Is test finds a quota exceeded wherever it was.
	ErrQuotaExceeded = errors.New("tenant: quota exceeded")

	// ErrIllegalTransition is wrapped by errors for a lifecycle state change
	// that the state machine does not allow.
	ErrIllegalTransition = errors.New("tenant: illegal state transition")

	// ErrJobTampered is wrapped by errors for a job envelope that is
	// malformed or whose integrity tag does not verify.
	ErrJobTampered = errors.New("tenant: job envelope rejected")

	// ErrJobExpired is wrapped by errors for a job envelope past its
	// expiry ([Job.Expires]).
	ErrJobExpired = errors.New("job envelope expired")

	// ErrJobMisdirected is wrapped by errors for a job envelope sealed for
	// another audience (queue) than the one opening it.
	ErrJobMisdirected = errors.New("job envelope is for another audience")

	// ErrJobReplayed is wrapped by errors for a job envelope whose job was
	// seen before ([OpenOptions.Seen]).
	ErrJobReplayed = errors.New("job envelope replayed")
)
