package authz

import (
	"fmt"
	"net/http"
)

// Require returns a middleware that lets a request through only if its
// principal has role in its tenant's role definitions (granted, or implied
// by a role granted: with DefaultRoles, Require(RoleEditor) admits editors
// and owners), and answers 403 otherwise. Mount it inside
// [Middleware.Handler]; a request that reaches it without a principal
// (the middleware was not mounted) is answered 500, never let through.
func Require(role string) func(http.Handler) http.Handler {
	return requireFunc(func(p *Principal) bool { return p.HasRole(role) }, "role")
}

// RequirePermission is like Require, for a permission that a role of the
// principal grants.
func RequirePermission(perm string) func(http.Handler) http.Handler {
	return requireFunc(func(p *Principal) bool { return p.Can(perm) }, "permission")
}

var errNoMiddleware = fmt.Errorf("authz: Require reached without the middleware: no principal in the request context")

func requireFunc(ok func(*Principal) bool, what string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, found := FromContext(r.Context())
			switch {
			case !found:
				WriteError(w, errNoMiddleware)
			case !ok(p):
				WriteError(w, refuse("missing role: the principal lacks the "+what, ErrForbidden, ErrMissingRole))
			default:
				next.ServeHTTP(w, r)
			}
		})
	}
}
