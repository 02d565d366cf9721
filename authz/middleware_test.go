package authz_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/tenant"
)

// bucketLimiter is a token bucket per tenant (golang.org/x/time/rate).
type bucketLimiter struct {
	limit rate.Limit
	burst int
	mu    sync.Mutex // guards buckets and err
	b     map[tenant.ID]*rate.Limiter
	err   error
}

func (l *bucketLimiter) Allow(_ context.Context, id tenant.ID) (ratelimit.Decision, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return ratelimit.Decision{}, l.err
	}
	if l.b == nil {
		l.b = map[tenant.ID]*rate.Limiter{}
	}
	b, ok := l.b[id]
	if !ok {
		b = rate.NewLimiter(l.limit, l.burst)
		l.b[id] = b
	}
	d := ratelimit.Decision{Limit: float64(l.limit), Burst: l.burst}
	now := time.Now()
	r := b.ReserveN(now, 1)
	if delay := r.DelayFrom(now); delay > 0 {
		r.CancelAt(now)
		d.RetryAfter = delay
		return d, nil
	}
	d.Allowed, d.Remaining = true, int(b.TokensAt(now))
	return d, nil
}

// fixedLimiter answers every request with d.
type fixedLimiter struct{ d ratelimit.Decision }

func (l fixedLimiter) Allow(context.Context, tenant.ID) (ratelimit.Decision, error) { return l.d, nil }

// env is a middleware over an Ed25519 JWKS, tenants acme and globex.
type env struct {
	dir *memDirectory
	v   *authz.Verifier
}

func newEnv(t testing.TB) *env {
	t.Helper()
	testKeys(t)
	vc := verifierConfig()
	vc.JWKS = jwksJSON(t, edSigner())
	return &env{
		dir: newMemDirectory(map[string]tenant.State{"acme": tenant.StateActive, "globex": tenant.StateActive}),
		v:   newVerifier(t, vc),
	}
}

func (e *env) token(t testing.TB, id string, roles ...string) string {
	t.Helper()
	c := claims(id)
	if roles != nil {
		c["roles"] = roles
	}
	return mint(t, edSigner(), c)
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t)
	lim := &bucketLimiter{limit: 0.5, burst: 2}
	h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.Limiter = lim }).Handler(echo)
	acme, globex := e.token(t, "acme"), e.token(t, "globex")
	for range 2 {
		require.Equal(t, 200, do(h, request("/", acme)).Code)
	}
	w := do(h, request("/", acme))
	p := requireProblem(t, w, http.StatusTooManyRequests, acme)
	require.Equal(t, "rate_limited", p["code"])
	secs, err := strconv.Atoi(w.Header().Get("Retry-After"))
	require.NoError(t, err)
	require.True(t, secs >= 1 && secs <= 2, "Retry-After %d: one token comes back in 2 s", secs)
	require.Equal(t, "2", w.Header().Get("RateLimit-Limit"))
	require.Equal(t, "0", w.Header().Get("RateLimit-Remaining"))
	require.Equal(t, 200, do(h, request("/", globex)).Code, "another tenant has its own budget")

	lim.mu.Lock()
	lim.err = ratelimit.ErrUnavailable
	lim.mu.Unlock()
	w = do(h, request("/", globex))
	p = requireProblem(t, w, http.StatusServiceUnavailable, globex)
	require.Equal(t, "unavailable", p["code"])
}

func TestRetryAfterRounding(t *testing.T) {
	e := newEnv(t)
	token := e.token(t, "acme")
	for _, c := range []struct {
		after time.Duration
		want  string
	}{{0, "1"}, {time.Millisecond, "1"}, {time.Second, "1"}, {1001 * time.Millisecond, "2"}, {59*time.Second + 1, "60"}} {
		h := newMiddleware(t, e.v, e.dir, func(cfg *authz.Config) {
			cfg.Limiter = fixedLimiter{ratelimit.Decision{Limit: 1, Burst: 1, RetryAfter: c.after}}
		}).Handler(echo)
		w := do(h, request("/", token))
		requireProblem(t, w, http.StatusTooManyRequests, token)
		require.Equal(t, c.want, w.Header().Get("Retry-After"), "RetryAfter %v", c.after)
	}
}

// slots is a ConcurrencyLimiter: at most n requests of a tenant at once.
type slots struct {
	n        int
	mu       sync.Mutex // guards inFlight and err
	inFlight map[tenant.ID]int
	err      error
	released atomic.Int64
}

func (s *slots) Acquire(_ context.Context, id tenant.ID) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	if s.inFlight == nil {
		s.inFlight = map[tenant.ID]int{}
	}
	if s.inFlight[id] >= s.n {
		return nil, &ratelimit.QuotaError{}
	}
	s.inFlight[id]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.inFlight[id]--
			s.mu.Unlock()
			s.released.Add(1)
		})
	}, nil
}

func TestConcurrencyCap(t *testing.T) {
	e := newEnv(t)
	sl := &slots{n: 1}
	entered, unblock := make(chan struct{}), make(chan struct{})
	block := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			entered <- struct{}{}
			<-unblock
		}
		echo.ServeHTTP(w, r)
	})
	h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.Concurrency = sl }).Handler(block)
	acme, globex := e.token(t, "acme"), e.token(t, "globex")
	done := make(chan int)
	go func() { done <- do(h, request("/block", acme)).Code }()
	<-entered
	w := do(h, request("/", acme))
	requireProblem(t, w, http.StatusTooManyRequests, acme)
	require.Equal(t, "1", w.Header().Get("Retry-After"))
	require.Equal(t, 200, do(h, request("/", globex)).Code, "another tenant has its own slots")
	close(unblock)
	require.Equal(t, 200, <-done)
	require.Equal(t, 200, do(h, request("/", acme)).Code, "the slot came back")
	require.EqualValues(t, 3, sl.released.Load(), "every slot taken is released once")

	sl.mu.Lock()
	sl.err = errors.New("backend down")
	sl.mu.Unlock()
	requireProblem(t, do(h, request("/", acme)), http.StatusServiceUnavailable, acme)
}

// The slot is given back even when the handler panics (net/http
// recovers it for the connection).
func TestConcurrencyReleasedOnPanic(t *testing.T) {
	e := newEnv(t)
	sl := &slots{n: 1}
	h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.Concurrency = sl }).Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic(http.ErrAbortHandler)
	}))
	require.Panics(t, func() { do(h, request("/", e.token(t, "acme"))) })
	require.EqualValues(t, 1, sl.released.Load())
}

func TestRequire(t *testing.T) {
	e := newEnv(t)
	mw := newMiddleware(t, e.v, e.dir)
	editors := mw.Handler(authz.Require(authz.RoleEditor)(echo))
	writers := mw.Handler(authz.RequirePermission(authz.PermWrite)(echo))
	for _, c := range []struct {
		roles []string
		want  int
	}{
		{[]string{authz.RoleViewer}, 403},
		{[]string{authz.RoleEditor}, 200},
		{[]string{authz.RoleOwner}, 200},
		{[]string{"superuser", authz.RoleViewer}, 403},
		{[]string{"Editor", authz.RoleViewer}, 403},
	} {
		token := e.token(t, "acme", c.roles...)
		for _, h := range []http.Handler{editors, writers} {
			w := do(h, request("/", token))
			if c.want == 200 {
				require.Equal(t, 200, w.Code, "%v", c.roles)
				continue
			}
			p := requireProblem(t, w, c.want, token)
			require.Equal(t, "missing_role", p["code"])
			require.Equal(t, `Bearer, error="insufficient_scope"`, w.Header().Get("WWW-Authenticate"))
		}
	}
}

// A careless service: Require without the middleware, a handler without
// either. Neither lets a request through with a tenant.
func TestWithoutMiddleware(t *testing.T) {
	e := newEnv(t)
	token := e.token(t, "acme", authz.RoleOwner)
	w := do(authz.Require(authz.RoleViewer)(echo), request("/", token))
	p := requireProblem(t, w, http.StatusInternalServerError, token)
	require.Equal(t, "internal", p["code"])

	var sawPrincipal, sawTenant bool
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, sawPrincipal = authz.FromContext(r.Context())
		_, sawTenant = tenant.FromContext(r.Context())
		_, err := tenant.Require(r.Context(), "test")
		require.ErrorIs(t, err, tenant.ErrNoTenant)
	})
	do(bare, request("/", token))
	require.False(t, sawPrincipal)
	require.False(t, sawTenant)
}

// A request whose context already carries a tenant (an upstream bug) gets
// the token's.
func TestContextTenantReplaced(t *testing.T) {
	e := newEnv(t)
	h := newMiddleware(t, e.v, e.dir).Handler(echo)
	r := request("/", e.token(t, "acme"))
	r = r.WithContext(tenant.NewContext(r.Context(), tenant.MustParseID("globex")))
	w := do(h, r)
	require.Equal(t, 200, w.Code)
	require.Equal(t, "hello user-1 of acme", w.Body.String())
}

func TestPerTenantRoles(t *testing.T) {
	e := newEnv(t)
	own, err := authz.NewRoles(map[string]authz.RoleDef{
		"auditor": {Permissions: []string{authz.PermRead, "audit:export"}},
		"admin":   {Implies: []string{"auditor"}, Permissions: []string{authz.PermManage}},
	})
	require.NoError(t, err)
	roles := authz.NewMemoryRoles(nil)
	roles.Set(tenant.MustParseID("globex"), own)
	mw := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.Roles = roles })
	exporters := mw.Handler(authz.RequirePermission("audit:export")(echo))
	viewers := mw.Handler(authz.Require(authz.RoleViewer)(echo))
	readers := mw.Handler(authz.RequirePermission(authz.PermRead)(echo))

	globexAdmin := e.token(t, "globex", "admin")
	require.Equal(t, 200, do(exporters, request("/", globexAdmin)).Code, "admin implies auditor")
	require.Equal(t, 200, do(readers, request("/", globexAdmin)).Code)
	requireProblem(t, do(viewers, request("/", globexAdmin)), 403, globexAdmin)
	// globex defines no viewer: a viewer token of globex is no member.
	globexViewer := e.token(t, "globex", authz.RoleViewer)
	requireProblem(t, do(readers, request("/", globexViewer)), 403, globexViewer)
	// acme has the defaults: its "admin" is no role.
	acmeAdmin := e.token(t, "acme", "admin")
	requireProblem(t, do(readers, request("/", acmeAdmin)), 403, acmeAdmin)
	acmeOwner := e.token(t, "acme", authz.RoleOwner)
	require.Equal(t, 200, do(readers, request("/", acmeOwner)).Code)
	requireProblem(t, do(exporters, request("/", acmeOwner)), 403, acmeOwner)

	// Back to the defaults.
	roles.Set(tenant.MustParseID("globex"), nil)
	require.Equal(t, 200, do(viewers, request("/", globexViewer)).Code)
}

type failingRoles struct{}

func (failingRoles) Roles(context.Context, tenant.ID) (*authz.Roles, error) {
	return nil, errors.New("config store down")
}

func TestRoleSourceFails(t *testing.T) {
	e := newEnv(t)
	token := e.token(t, "acme")
	h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.Roles = failingRoles{} }).Handler(echo)
	requireProblem(t, do(h, request("/", token)), http.StatusServiceUnavailable, token)
}

func TestRoles(t *testing.T) {
	r := authz.DefaultRoles()
	require.Equal(t, []string{"editor", "owner", "viewer"}, r.Defined())
	for _, c := range []struct {
		role, other string
		want        bool
	}{
		{"owner", "editor", true}, {"owner", "viewer", true}, {"editor", "viewer", true},
		{"viewer", "editor", false}, {"editor", "owner", false}, {"viewer", "viewer", true}, {"nobody", "nobody", false},
	} {
		require.Equal(t, c.want, r.Implies(c.role, c.other), "%s implies %s", c.role, c.other)
	}
	require.True(t, r.Grants("owner", authz.PermRead))
	require.True(t, r.Grants("owner", authz.PermManage))
	require.False(t, r.Grants("editor", authz.PermManage))
	require.False(t, r.Grants("viewer", authz.PermWrite))
	var zero authz.Roles
	require.False(t, zero.Implies("owner", "owner"))
	require.Empty(t, zero.Defined())
}

func TestNewRolesErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		defs map[string]authz.RoleDef
		msg  string
	}{
		{"empty name", map[string]authz.RoleDef{"": {}}, `role ""`},
		{"upper case", map[string]authz.RoleDef{"Owner": {}}, "must start with a letter"},
		{"space", map[string]authz.RoleDef{"a b": {}}, "may hold only"},
		{"too long", map[string]authz.RoleDef{"a" + string(make([]byte, 64)): {}}, "1 to 64 bytes"},
		{"undefined implied", map[string]authz.RoleDef{"a": {Implies: []string{"b"}}}, `implies "b", which is not defined`},
		{"self cycle", map[string]authz.RoleDef{"a": {Implies: []string{"a"}}}, "circular"},
		{"cycle", map[string]authz.RoleDef{"a": {Implies: []string{"b"}}, "b": {Implies: []string{"c"}}, "c": {Implies: []string{"b"}}}, "circular"},
		{"bad permission", map[string]authz.RoleDef{"a": {Permissions: []string{"rm -rf"}}}, `permission "rm -rf"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := authz.NewRoles(c.defs)
			require.ErrorIs(t, err, authz.ErrInvalidConfig)
			require.ErrorContains(t, err, c.msg)
		})
	}
}

func TestDirectoryCache(t *testing.T) {
	e := newEnv(t)
	h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.DirectoryTTL = 300 * time.Millisecond }).Handler(echo)
	acme := e.token(t, "acme")
	cached := time.Now() // the answer is remembered until at least cached+TTL
	require.Equal(t, 200, do(h, request("/", acme)).Code)
	calls := e.dir.calls.Load()
	for range 10 {
		require.Equal(t, 200, do(h, request("/", acme)).Code)
	}
	require.Equal(t, calls, e.dir.calls.Load(), "answers are cached")

	e.dir.set("acme", tenant.StateSuspended)
	// Within the TTL the cached answer stands; after it, 403.
	require.Eventually(t, func() bool { return do(h, request("/", acme)).Code == 403 }, 2*time.Second, 10*time.Millisecond)
	require.GreaterOrEqual(t, time.Since(cached), 300*time.Millisecond, "refused only once the cached answer expired")
	p := requireProblem(t, do(h, request("/", acme)), 403, acme)
	require.Equal(t, "tenant_not_active", p["code"])

	// A directory that fails: 503, and nothing is cached.
	e.dir.fail(errors.New("connection refused"))
	globex := e.token(t, "globex")
	requireProblem(t, do(h, request("/", globex)), http.StatusServiceUnavailable, globex)
	e.dir.fail(nil)
	require.Equal(t, 200, do(h, request("/", globex)).Code, "the failure was not cached")

	// An unknown tenant is cached too.
	ghost := e.token(t, "ghost")
	requireProblem(t, do(h, request("/", ghost)), 403, ghost)
	calls = e.dir.calls.Load()
	requireProblem(t, do(h, request("/", ghost)), 403, ghost)
	require.Equal(t, calls, e.dir.calls.Load())
}

func TestDirectoryCacheBounded(t *testing.T) {
	e := newEnv(t)
	acme, globex := e.token(t, "acme"), e.token(t, "globex")
	for _, c := range []struct {
		size      int
		wantCalls int64
	}{{2, 2}, {1, 10}} {
		e.dir.calls.Store(0)
		h := newMiddleware(t, e.v, e.dir, func(cfg *authz.Config) { cfg.DirectoryCacheSize = c.size }).Handler(echo)
		for range 5 {
			require.Equal(t, 200, do(h, request("/", acme)).Code)
			require.Equal(t, 200, do(h, request("/", globex)).Code)
		}
		require.Equal(t, c.wantCalls, e.dir.calls.Load(), "cache of %d tenants, 2 tenants alternating", c.size)
	}
}

// Requests for one tenant whose answer is not cached ask the directory
// once between them.
func TestDirectoryOneQuestionAtATime(t *testing.T) {
	e := newEnv(t)
	slow := &slowDirectory{memDirectory: e.dir, gate: make(chan struct{})}
	h := newMiddleware(t, e.v, slow).Handler(echo)
	acme := e.token(t, "acme")
	var wg sync.WaitGroup
	codes := make(chan int, 10)
	for range 10 {
		wg.Go(func() { codes <- do(h, request("/", acme)).Code })
	}
	require.Eventually(t, func() bool { return e.dir.calls.Load() == 0 && slow.waiting.Load() == 1 }, time.Second, time.Millisecond)
	time.Sleep(50 * time.Millisecond) // let the others line up behind it
	close(slow.gate)
	wg.Wait()
	close(codes)
	for c := range codes {
		require.Equal(t, 200, c)
	}
	require.EqualValues(t, 1, e.dir.calls.Load())
}

// A request whose context ends while the directory is slow to answer
// stops waiting for it (503) instead of holding its goroutine until the
// directory answers; the question goes on for the requests behind it.
func TestDirectorySlowRequestGivesUp(t *testing.T) {
	e := newEnv(t)
	slow := &slowDirectory{memDirectory: e.dir, gate: make(chan struct{})}
	t.Cleanup(func() { close(slow.gate) })
	h := newMiddleware(t, e.v, slow).Handler(echo)
	acme := e.token(t, "acme")
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	done := make(chan *httptest.ResponseRecorder, 1)
	go func() { done <- do(h, request("/", acme).WithContext(ctx)) }()
	select {
	case w := <-done:
		requireProblem(t, w, http.StatusServiceUnavailable, acme)
	case <-time.After(3 * time.Second):
		t.Fatal("the request waited for the directory past its context")
	}
}

// A Directory that panics fails the request with 503, as one that
// fails does, and the next request asks it again.
func TestDirectoryPanics(t *testing.T) {
	e := newEnv(t)
	d := &panickyDirectory{memDirectory: e.dir}
	d.panics.Store(true)
	h := newMiddleware(t, e.v, d).Handler(echo)
	acme := e.token(t, "acme")
	requireProblem(t, do(h, request("/", acme)), http.StatusServiceUnavailable, acme)
	d.panics.Store(false)
	require.Equal(t, 200, do(h, request("/", acme)).Code)
}

type panickyDirectory struct {
	*memDirectory
	panics atomic.Bool
}

func (d *panickyDirectory) Tenant(ctx context.Context, id tenant.ID) (tenant.Info, error) {
	if d.panics.Load() {
		panic("directory bug")
	}
	return d.memDirectory.Tenant(ctx, id)
}

type slowDirectory struct {
	*memDirectory
	gate    chan struct{}
	waiting atomic.Int64
}

func (d *slowDirectory) Tenant(ctx context.Context, id tenant.ID) (tenant.Info, error) {
	d.waiting.Add(1)
	<-d.gate
	return d.memDirectory.Tenant(ctx, id)
}

func TestMiddlewareConfigErrors(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		field string
		edit  func(*authz.Config)
	}{
		{"Verifier", func(c *authz.Config) { c.Verifier = nil }},
		{"Directory", func(c *authz.Config) { c.Directory = nil }},
		{"DirectoryTTL", func(c *authz.Config) { c.DirectoryTTL = 0 }},
		// A suspended tenant would be let in for hours.
		{"DirectoryTTL", func(c *authz.Config) { c.DirectoryTTL = 5*time.Minute + 1 }},
		{"DirectoryCacheSize", func(c *authz.Config) { c.DirectoryCacheSize = -1 }},
		{"Roles", func(c *authz.Config) { c.Roles = nil }},
		{"Resolvers[1]", func(c *authz.Config) { c.Resolvers = []authz.Resolver{authz.PathValue("tenant"), nil} }},
		{"Realm", func(c *authz.Config) { c.Realm = `x", error="none` }},
		{"Realm", func(c *authz.Config) { c.Realm = "a\nb" }},
	} {
		t.Run(c.field, func(t *testing.T) {
			cfg := authz.DefaultConfig()
			cfg.Verifier, cfg.Directory = e.v, e.dir
			c.edit(&cfg)
			_, err := authz.NewMiddleware(cfg)
			require.ErrorIs(t, err, authz.ErrInvalidConfig)
			require.ErrorContains(t, err, "Config."+c.field)
		})
	}
	_, err := authz.NewMiddleware(authz.Config{})
	require.ErrorIs(t, err, authz.ErrInvalidConfig)
}

func TestRealm(t *testing.T) {
	e := newEnv(t)
	h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.Realm = "rtmx" }).Handler(echo)
	require.Equal(t, `Bearer realm="rtmx"`, do(h, request("/", "")).Header().Get("WWW-Authenticate"))
	require.Equal(t, `Bearer realm="rtmx", error="invalid_token"`, do(h, request("/", "x.y.z")).Header().Get("WWW-Authenticate"))
}
