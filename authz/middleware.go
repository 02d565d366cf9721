package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/telemetry"
	"github.com/rtmx-ai/tenancy/tenant"
)

// ConcurrencyLimiter caps the requests of one tenant in flight at once
// (a quota). Acquire takes one of tenant id's slots and returns the
// function that gives it back, which the middleware calls once, when the
// handler returns. An error wrapping ratelimit.ErrQuotaExceeded means the
// tenant is at its cap (429, Retry-After: 1); any other error means the
// limiter could not decide (503). Implementations are safe for concurrent
// use.
type ConcurrencyLimiter interface {
	Acquire(ctx context.Context, id tenant.ID) (release func(), err error)
}

// Config configures a Middleware. Start from [DefaultConfig] and set
// Verifier and Directory; zero is not a default: NewMiddleware refuses a
// config whose required fields are zero, naming the field. Optional
// fields say what nil means.
type Config struct {
	// Verifier verifies the bearer token. Required.
	Verifier *Verifier
	// Directory says whether the token's tenant is active. Required: a
	// suspended tenant's tokens must stop working before they expire.
	Directory Directory
	// DirectoryTTL is how long the Directory's answer for a tenant is
	// remembered: a tenant suspended is refused at most this long after.
	// At most 5 minutes. DefaultConfig sets 5 s.
	DirectoryTTL time.Duration
	// DirectoryCacheSize bounds the tenants remembered. DefaultConfig sets
	// 10,000.
	DirectoryCacheSize int
	// Resolvers find the tenant the request names (path, host); each one
	// that names a tenant must name the token's. Nil: requests name no
	// tenant, only the token does.
	Resolvers []Resolver
	// Roles gives each tenant's role definitions. A token must grant at
	// least one role its tenant defines (403 otherwise), so that a route
	// that forgot [Require] still admits members of the tenant only.
	// DefaultConfig sets NewMemoryRoles(DefaultRoles()).
	Roles RoleSource
	// Limiter limits each tenant's request rate (429 with Retry-After
	// over it, 503 when it fails closed). Nil: no limit.
	Limiter ratelimit.Limiter
	// Concurrency caps each tenant's requests in flight. Nil: no cap.
	Concurrency ConcurrencyLimiter
	// Realm, if set, is the realm of the WWW-Authenticate challenge: at
	// most 64 printable ASCII characters, without '"' or '\'.
	Realm string
	// Logger receives a record for each refused request (its status,
	// reason and method); nil discards them. Records never carry the
	// token, its claims or the tenant the request named.
	Logger *slog.Logger
	// Telemetry, if it has a provider, tags each request's span with the
	// token's tenant and the outcome, and counts requests and refusals
	// by tenant (see the package documentation). The zero value records
	// nothing and costs nothing.
	Telemetry telemetry.Config
}

// maxDirectoryTTL bounds Config.DirectoryTTL: a suspended tenant's
// tokens must stop working within minutes, not hours.
const maxDirectoryTTL = 5 * time.Minute

// DefaultConfig returns a Config with the defaults filled in and no
// Verifier or Directory.
func DefaultConfig() Config {
	return Config{
		DirectoryTTL:       5 * time.Second,
		DirectoryCacheSize: 10_000,
		Roles:              NewMemoryRoles(nil),
	}
}

// Middleware authenticates requests by bearer token and puts the token's
// principal and tenant into their context. It is safe for concurrent use.
type Middleware struct {
	v           *Verifier
	dir         *dirCache
	resolvers   []Resolver
	roles       RoleSource
	limiter     ratelimit.Limiter
	concurrency ConcurrencyLimiter
	challenge   string // "Bearer" or `Bearer realm="..."`
	log         *slog.Logger
	obs         *observer // nil: no telemetry
}

// NewMiddleware checks cfg and returns a Middleware.
func NewMiddleware(cfg Config) (*Middleware, error) {
	bad := func(field, rule string) error {
		return fmt.Errorf("authz: %w: Config.%s: %s", ErrInvalidConfig, field, rule)
	}
	switch {
	case cfg.Verifier == nil:
		return nil, bad("Verifier", "required")
	case cfg.Directory == nil:
		return nil, bad("Directory", "required")
	case cfg.DirectoryTTL <= 0 || cfg.DirectoryTTL > maxDirectoryTTL:
		return nil, bad("DirectoryTTL", "must be positive and at most "+maxDirectoryTTL.String())
	case cfg.DirectoryCacheSize <= 0:
		return nil, bad("DirectoryCacheSize", "must be positive")
	case cfg.Roles == nil:
		return nil, bad("Roles", "required (see DefaultConfig)")
	case len(cfg.Realm) > 64:
		return nil, bad("Realm", "longer than 64 bytes")
	}
	for i, r := range cfg.Resolvers {
		if r == nil {
			return nil, bad(fmt.Sprintf("Resolvers[%d]", i), "nil")
		}
	}
	for i := 0; i < len(cfg.Realm); i++ {
		if c := cfg.Realm[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return nil, bad("Realm", `may hold only printable ASCII without '"' and '\'`)
		}
	}
	m := &Middleware{
		v:           cfg.Verifier,
		dir:         newDirCache(cfg.Directory, cfg.DirectoryTTL, cfg.DirectoryCacheSize),
		resolvers:   append([]Resolver(nil), cfg.Resolvers...),
		roles:       cfg.Roles,
		limiter:     cfg.Limiter,
		concurrency: cfg.Concurrency,
		challenge:   "Bearer",
		log:         cfg.Logger,
	}
	var err error
	if m.obs, err = newObserver(cfg.Telemetry); err != nil {
		return nil, fmt.Errorf("authz: Config.Telemetry: %w", err)
	}
	if cfg.Realm != "" {
		m.challenge = `Bearer realm="` + cfg.Realm + `"`
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	return m, nil
}

// Handler returns next behind the middleware: a request reaches next only
// with a valid bearer token of an active tenant, whose path and host name
// no other tenant, that grants a role of its tenant, within the tenant's
// limits; its context then carries the principal ([FromContext]) and the
// tenant (tenant.FromContext). Any other request gets an RFC 9457 problem
// (see [WriteError]). m.Handler is a func(http.Handler) http.Handler.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var span trace.Span
		if m.obs != nil {
			var own bool
			if r, span, own = m.obs.start(r); own {
				defer span.End()
			}
		}
		token, err := bearer(r)
		var id tenant.ID // of the verified token
		if err == nil {
			var ctx context.Context
			if ctx, id, err = m.authenticate(r, token); err == nil {
				var release func()
				if release, err = m.acquire(ctx); err == nil {
					defer release()
					if m.obs != nil {
						m.obs.record(ctx, span, id, nil)
					}
					next.ServeHTTP(w, r.WithContext(ctx))
					return
				}
			}
		}
		if m.obs != nil {
			m.obs.record(r.Context(), span, id, err)
		}
		m.refuse(w, r, err)
	})
}

// Authenticate runs the checks of Handler but the concurrency cap on
// token, a bearer token r carried somewhere else than its Authorization
// header (a WebSocket subprotocol), and returns r's context carrying the
// principal and tenant, or an error for [WriteError]. With
// Config.Telemetry, it tags the span recording in r's context, if any, and
// counts the request as Handler does.
func (m *Middleware) Authenticate(r *http.Request, token string) (context.Context, error) {
	ctx, id, err := m.authenticate(r, token)
	if m.obs != nil {
		var span trace.Span
		if s := trace.SpanFromContext(r.Context()); s.IsRecording() && m.obs.tracer != nil {
			span = s
		}
		m.obs.record(r.Context(), span, id, err)
	}
	return ctx, err
}

// authenticate is Authenticate, and returns the tenant of the token once
// it is verified (zero before), whether the request is refused or not.
func (m *Middleware) authenticate(r *http.Request, token string) (context.Context, tenant.ID, error) {
	ctx := r.Context()
	// A tenant or principal already in ctx is replaced: what the request
	// gets comes from the token alone.
	p, err := m.v.Verify(ctx, token)
	if err != nil {
		return nil, tenant.ID{}, err
	}
	for _, resolve := range m.resolvers {
		id, named, err := resolve(r)
		switch {
		case errors.Is(err, errRouting), errors.Is(err, ErrInvalidConfig):
			return nil, p.tenant, err
		case err != nil:
			return nil, p.tenant, refuse("forbidden: the request names no valid tenant", ErrForbidden, tenant.ErrCrossTenant)
		case named && id != p.tenant:
			return nil, p.tenant, refuse("forbidden: the request names another tenant than the token", ErrForbidden, tenant.ErrCrossTenant)
		}
	}
	if err := m.dir.active(ctx, p.tenant); err != nil {
		return nil, p.tenant, err
	}
	roles, err := m.roles.Roles(ctx, p.tenant)
	if err != nil || roles == nil {
		return nil, p.tenant, fmt.Errorf("%w: the tenant's roles could not be read", ErrUnavailable)
	}
	p.model = roles
	if !roles.knows(p.roles) {
		return nil, p.tenant, refuse("missing role: the token grants no role of its tenant", ErrForbidden, ErrMissingRole)
	}
	if m.limiter != nil {
		d, err := m.limiter.Allow(ctx, p.tenant)
		if err != nil {
			return nil, p.tenant, fmt.Errorf("%w: the rate limiter failed", ErrUnavailable)
		}
		if !d.Allowed {
			return nil, p.tenant, &limitError{d: d}
		}
	}
	return newContext(ctx, p), p.tenant, nil
}

func (m *Middleware) acquire(ctx context.Context) (func(), error) {
	if m.concurrency == nil {
		return func() {}, nil
	}
	id, _ := tenant.FromContext(ctx)
	release, err := m.concurrency.Acquire(ctx, id)
	switch {
	case errors.Is(err, ratelimit.ErrQuotaExceeded):
		return nil, &limitError{d: ratelimit.Decision{RetryAfter: time.Second}, inFlight: true}
	case err != nil:
		return nil, fmt.Errorf("%w: the concurrency limiter failed", ErrUnavailable)
	case release == nil:
		return func() {}, nil
	}
	return release, nil
}

// bearer returns the token of r's Authorization header.
func bearer(r *http.Request) (string, error) {
	vals := r.Header.Values("Authorization")
	switch len(vals) {
	case 0:
		return "", errNoToken
	case 1:
	default:
		return "", fmt.Errorf("%w: more than one Authorization header", ErrInvalidToken)
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: the Authorization header is not Bearer", ErrInvalidToken)
	}
	if !isToken68(token) {
		return "", fmt.Errorf("%w: the bearer token is not a token68", ErrInvalidToken)
	}
	return token, nil
}

// errNoToken is the error of a request without credentials: 401 with a
// challenge that names no error (RFC 6750 section 3.1).
var errNoToken = fmt.Errorf("%w: no Authorization header", ErrInvalidToken)

// token68 marks the bytes of a token68 (RFC 7235) before its trailing
// '=': the characters of base64url (a JWT) and of base64.
var token68 = func() (t [256]bool) {
	for _, c := range []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+/") {
		t[c] = true
	}
	return t
}()

// isToken68 reports whether s is a token68.
func isToken68(s string) bool {
	i := 0
	for i < len(s) && token68[s[i]] {
		i++
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// limitError is a request over its tenant's rate or concurrency limit.
type limitError struct {
	d        ratelimit.Decision
	inFlight bool
}

func (e *limitError) Error() string {
	if e.inFlight {
		return "authz: rate limited: too many requests of the tenant in flight"
	}
	return "authz: rate limited: over the tenant's rate limit"
}

func (e *limitError) Unwrap() error { return ErrRateLimited }

func (m *Middleware) refuse(w http.ResponseWriter, r *http.Request, err error) {
	status := writeError(w, err, m.challenge, err == errNoToken)
	attrs := []any{"status", status, "reason", err.Error(), "method", r.Method}
	lvl := slog.LevelInfo
	if status >= 500 {
		lvl = slog.LevelWarn
	}
	m.log.Log(r.Context(), lvl, "authz: request refused", attrs...)
}

// ConcurrencyOf returns c, the in-memory concurrency limiter of package
// ratelimit, as a ConcurrencyLimiter.
func ConcurrencyOf(c *ratelimit.Concurrency) ConcurrencyLimiter { return slotLimiter{c} }

type slotLimiter struct{ c *ratelimit.Concurrency }

func (s slotLimiter) Acquire(ctx context.Context, id tenant.ID) (func(), error) {
	slot, err := s.c.Acquire(ctx, id)
	if err != nil {
		return nil, err
	}
	return slot.Release, nil
}
