package authz

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

// problem is an RFC 9457 problem detail.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	// Code names the reason for programs: invalid_token, forbidden,
	// cross_tenant, tenant_not_active, missing_role, rate_limited,
	// unavailable, internal.
	Code string `json:"code"`
}

// WriteError answers a request refused with err, an error of this
// package, with an RFC 9457 problem (application/problem+json) and the
// status of err: 401 with a WWW-Authenticate Bearer challenge
// (error="invalid_token") for ErrInvalidToken, 403 for ErrForbidden, 429
// with Retry-After (whole seconds, at least 1) for ErrRateLimited, 503
// for ErrUnavailable, and 500 for any other error. The problem's detail
// is a fixed text per reason: it never echoes the token, a claim or the
// tenant a request named.
func WriteError(w http.ResponseWriter, err error) {
	writeError(w, err, "Bearer", false)
}

// writeError writes the problem for err and returns its status.
// noCredentials leaves the error out of the challenge (RFC 6750 3.1).
func writeError(w http.ResponseWriter, err error, challenge string, noCredentials bool) int {
	p := problem{Type: "about:blank"}
	h := w.Header()
	var le *limitError
	switch {
	case errors.Is(err, ErrInvalidToken):
		p.Status, p.Code, p.Detail = http.StatusUnauthorized, "invalid_token", "The request needs a valid bearer token."
		if noCredentials {
			h.Set("WWW-Authenticate", challenge)
		} else {
			h.Set("WWW-Authenticate", challenge+`, error="invalid_token"`)
		}
	case errors.Is(err, tenant.ErrCrossTenant):
		p.Status, p.Code, p.Detail = http.StatusForbidden, "cross_tenant", "The request names a tenant the token is not for."
	case errors.Is(err, ErrTenantNotActive):
		p.Status, p.Code, p.Detail = http.StatusForbidden, "tenant_not_active", "The token's tenant is not active."
	case errors.Is(err, ErrMissingRole):
		p.Status, p.Code, p.Detail = http.StatusForbidden, "missing_role", "The token does not grant the role this request needs."
		h.Set("WWW-Authenticate", challenge+`, error="insufficient_scope"`)
	case errors.Is(err, ErrForbidden):
		p.Status, p.Code, p.Detail = http.StatusForbidden, "forbidden", "The token does not name a valid tenant."
	case errors.As(err, &le):
		p.Status, p.Code, p.Detail = http.StatusTooManyRequests, "rate_limited", "The tenant is over its request limit."
		h.Set("Retry-After", strconv.FormatInt(retrySeconds(le.d.RetryAfter), 10))
		if !le.inFlight && le.d.Limit > 0 {
			h.Set("RateLimit-Limit", strconv.Itoa(le.d.Burst))
			h.Set("RateLimit-Remaining", strconv.Itoa(max(le.d.Remaining, 0)))
			h.Set("RateLimit-Reset", strconv.FormatInt(retrySeconds(le.d.RetryAfter), 10))
		}
	case errors.Is(err, ErrRateLimited):
		p.Status, p.Code, p.Detail = http.StatusTooManyRequests, "rate_limited", "The tenant is over its request limit."
		h.Set("Retry-After", "1")
	case errors.Is(err, ErrUnavailable):
		p.Status, p.Code, p.Detail = http.StatusServiceUnavailable, "unavailable", "The request could not be authorized now; try again later."
		h.Set("Retry-After", "1")
	default:
		p.Status, p.Code, p.Detail = http.StatusInternalServerError, "internal", "The request could not be authorized."
	}
	p.Title = http.StatusText(p.Status)
	body, _ := json.Marshal(p)
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(body, '\n'))
	return p.Status
}

// retrySeconds rounds d up to whole seconds, at least 1.
func retrySeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
