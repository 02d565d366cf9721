// Package authz authenticates the requests of a multi-tenant service and
// scopes them to their tenant: JWT bearer tokens verified with
// golang-jwt v5 against configured keys or a JWKS endpoint
// (MicahParks/keyfunc), net/http middleware that puts the token's
// [Principal] and tenant into the request context, refusal of tenants that
// are not active and of requests whose path or host names another tenant,
// per-tenant roles, and per-tenant rate limits and concurrency caps.
//
// A [Verifier] checks a token; a [Middleware] runs it on every request:
//
//	v, err := authz.NewVerifier(ctx, vcfg)   // Issuer, Audience, JWKSURL, ...
//	cfg := authz.DefaultConfig()
//	cfg.Verifier, cfg.Directory = v, authz.StoreDirectory(db)
//	cfg.Resolvers = []authz.Resolver{authz.PathValue("tenant")}
//	mw, err := authz.NewMiddleware(cfg)
//	mux.Handle("GET /t/{tenant}/items", mw.Handler(authz.Require(authz.RoleViewer)(list)))
//
// A handler behind it finds the principal with [FromContext] and the
// tenant with tenant.FromContext; store, blob and audit calls with the
// request's context then work for that tenant only.
//
// # Tokens
//
// A token is accepted when all of these hold; a token that breaks any of
// them gets 401:
//
//   - it is a JWS in compact form (three segments; a JWE is refused), at
//     most VerifierConfig.MaxTokenBytes long, in an Authorization header
//     "Bearer <token>" (one such header);
//   - its alg is one of VerifierConfig.Algorithms, all asymmetric (RS256,
//     ES256 and EdDSA by default): "none" and HMAC algorithms are never
//     accepted, so a token signed with a public key as HMAC secret fails;
//   - it is signed by a key of VerifierConfig.PEM, JWKS or JWKSURL (the
//     token's kid selects a JWK; jku, x5u and jwk headers are ignored);
//     a kid not known makes the Verifier fetch JWKSURL again, at most once
//     every RefreshUnknownKID;
//   - it has no crit header, and no JSON object of its header or payload
//     repeats a member name (parsers disagree on which one wins); with
//     VerifierConfig.Types, its typ is one of them ("at+jwt");
//   - iss is the Issuer, aud holds the Audience, exp is present and not
//     past, nbf and iat (if present) not in the future, each within
//     VerifierConfig.Leeway; sub is a non-empty string.
//
// An accepted token's tenant claim (VerifierConfig.TenantClaim) must be a
// string that tenant.ParseID accepts, and its roles claim (RolesClaim)
// absent, a list of strings, or a string of space-separated names; a
// token that breaks these is valid but names no tenant: 403.
//
// # Tenants
//
// After the token, the middleware refuses with 403:
//
//   - a request whose path or host names another tenant than the token's
//     ([Resolver]: [PathValue] for ServeMux wildcards, [PathPrefix] before
//     routing, [Subdomain] for hosts), or names something that is not a
//     tenant ID (upper case, escaped slashes, dot segments);
//   - a tenant the [Directory] does not report active (cached for
//     Config.DirectoryTTL: a suspended tenant is refused at most that long
//     after the change);
//   - a token that grants no role its tenant defines ([RoleSource]).
//
// [Require] and [RequirePermission] check a role or permission of the
// tenant's definitions ([Roles]: owner ⊇ editor ⊇ viewer by default; a
// tenant may define its own). Then the tenant's rate limit
// (ratelimit.Limiter, such as ratelimit.Local or ratelimit.Redis: 429
// with Retry-After) and concurrency cap ([ConcurrencyLimiter]; for
// ratelimit.Concurrency, [ConcurrencyOf]) apply.
//
// # Telemetry
//
// With Config.Telemetry (package telemetry: a TracerProvider, a
// MeterProvider, a Guard; the zero value records nothing and costs
// nothing), every request decided by Handler has a span: the span already
// recording in the request's context if there is one (wrap the handler
// in otelhttp for the HTTP attributes), else one the middleware starts,
// named "authz", of kind server, ended when the handler returns, and
// parent of the handler's spans. The span gets "authz.outcome" (allowed,
// or the reason the request was refused: invalid_token, forbidden,
// cross_tenant, not_active, missing_role, rate_limited, over_concurrency,
// unavailable, internal) and, once the token is verified, "tenant.id",
// the token's tenant (tenant_id in logs). Status is Error for
// unavailable and internal only.
//
// Two counters, tenancy.authz.requests (by tenant.id) and
// tenancy.authz.refusals (by tenant.id and authz.outcome), count every
// request decided; their tenant.id is the Guard's label (at most
// len(Allow) + Admit + 1 values, the rest under "_other"), and is absent
// before a token is verified. [Middleware.Authenticate] counts and tags
// (the span in its request's context, if recording) the same way.
//
// # Errors
//
// Refused requests get an RFC 9457 problem (application/problem+json,
// [WriteError]) whose status follows the error's sentinel:
// [ErrInvalidToken] 401 (with WWW-Authenticate: Bearer, error="invalid_token"
// when a token was given), [ErrForbidden] 403 (also wrapping
// tenant.ErrCrossTenant, [ErrTenantNotActive] or [ErrMissingRole]),
// [ErrRateLimited] 429, [ErrUnavailable] 503 (JWKS endpoint down and the
// key not known, directory or limiter failing), and 500 for a
// misconfiguration found at run time (Require without the middleware,
// PathValue before routing). [ErrInvalidConfig] is the error of a
// constructor given a config that breaks its rules, naming the field.
// Every error is matchable with errors.Is.
//
// # Security
//
// The problem's detail is a fixed text per reason: it never echoes the
// token, a claim's value or the tenant a request named, so a client
// learns nothing about other tenants from a refusal. Logs (Config.Logger)
// carry the reason and status, never tokens or claims. Telemetry carries
// the tenant of the verified token only: never the token, its subject or
// other claims, nor the tenant a path or host named, so a hostile request
// cannot write into spans or make metric series of its own.
//
// Tenant resolution reads what routing reads: r.PathValue after a
// ServeMux routed the request (which cleans the path first), the path's
// segments for PathPrefix, unescaped one by one as ServeMux matches them
// ("/%74/b" is under "/t/"), refusing a path that a router decoding the
// whole path would read otherwise (an escaped '/') and dot and empty
// segments, which a cleaning router would send elsewhere; r.Host for
// Subdomain, lower-cased,
// without port. X-Forwarded-Host and similar headers are never read:
// behind a proxy, have it set Host, or write a Resolver that trusts it.
//
// A handler reached without the middleware finds no principal and no
// tenant in its context: tenant-scoped calls (store, blob, audit) fail
// with tenant.ErrNoTenant, and Require answers 500. A route that forgot
// Require still admits only tokens granting a role of their tenant.
//
// The Verifier holds public keys only (a configured JWKS entry with
// private or symmetric key material is refused; a fetched symmetric key
// verifies nothing, no HMAC algorithm being allowed), fetches a JWKS over
// https (http only on loopback; redirects likewise, at most 5), reads at
// most 1 MiB of it, and bounds how often a made-up kid can make it fetch.
package authz
