package authz

import (
	"errors"
)

// The errors of the package. Every error the Verifier and the middleware
// return wraps one of them (a request naming another tenant wraps
// tenant.ErrCrossTenant and ErrForbidden), and [WriteError] maps each to
// its HTTP status. Messages name the rule that failed, never the token, a
// claim's value or another tenant.
var (
	// ErrInvalidToken is wrapped by errors for a request without a valid
	// bearer token: none, malformed, badly signed, of an algorithm not
	// allowed, for a key not known, expired, not yet valid, of another
	// issuer or audience, or with duplicated members. HTTP 401.
	ErrInvalidToken = errors.New("authz: invalid token")

	// ErrForbidden is wrapped by errors for a valid token that does not
	// reach what the request asks: it names no valid tenant, its tenant
	// is not the one the request's path or host names
	// (tenant.ErrCrossTenant too), its tenant is not active
	// (ErrTenantNotActive too), or it lacks the role or permission
	// (ErrMissingRole too). HTTP 403.
	ErrForbidden = errors.New("authz: forbidden")

	// ErrTenantNotActive is wrapped by errors for a token whose tenant the
	// Directory does not know or does not report active. HTTP 403.
	ErrTenantNotActive = errors.New("authz: tenant not active")

	// ErrMissingRole is wrapped by errors for a principal without the role
	// or permission a handler requires, or without any role its tenant
	// defines. HTTP 403.
	ErrMissingRole = errors.New("authz: missing role")

	// ErrRateLimited is wrapped by errors for a request over its tenant's
	// rate limit or concurrent-request cap. HTTP 429, with Retry-After.
	ErrRateLimited = errors.New("authz: rate limited")

	// ErrUnavailable is wrapped by errors for a request that could not be
	// decided: the JWKS endpoint is down and the token's key is not known,
	// the Directory failed, or a limiter failed closed. HTTP 503.
	ErrUnavailable = errors.New("authz: unavailable")

	// ErrInvalidConfig is wrapped by errors for a configuration that
	// breaks its rules; the message names the field.
	ErrInvalidConfig = errors.New("invalid configuration")
)

// refusal is an error with one message that matches several sentinels
// (errors.Is), so that its message has one "authz:" prefix however many
// it matches.
type refusal struct {
	msg string
	is  []error
}

func (e *refusal) Error() string   { return e.msg }
func (e *refusal) Unwrap() []error { return e.is }

// refuse returns an error with message "authz: "+msg matching is.
func refuse(msg string, is ...error) error { return &refusal{msg: "authz: " + msg, is: is} }
