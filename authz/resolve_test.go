package authz_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestSubdomain(t *testing.T) {
	resolve := authz.Subdomain("Example.com.")
	for _, c := range []struct {
		host  string
		want  string // "" names none
		isErr bool
	}{
		{"acme.example.com", "acme", false},
		{"ACME.EXAMPLE.COM", "acme", false},
		{"acme.example.com:8443", "acme", false},
		{"acme.example.com.", "acme", false},
		{"acme.example.com.:443", "acme", false},
		{"big-corp.example.com", "big_corp", false},
		{"example.com", "", false},
		{"evil.com", "", false},
		{"acmeexample.com", "", false},
		{"acme.example.com.evil.com", "", false},
		{"127.0.0.1:8080", "", false},
		{"[::1]:443", "", false},
		{"a.acme.example.com", "", true},
		{"big_corp.example.com", "", true},
		{"-acme.example.com", "", true},
		{"public.example.com", "", true},
		{"xn--80ak6aa92e.example.com", "", true},
		{".example.com", "", true},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = c.host
		id, named, err := resolve(r)
		if c.isErr {
			require.Error(t, err, c.host)
			require.True(t, named, c.host)
			continue
		}
		require.NoError(t, err, c.host)
		require.Equal(t, c.want != "", named, c.host)
		require.Equal(t, c.want, id.String(), c.host)
	}
}

// A parent that can match no host (a port, a leading dot, a wildcard,
// empty) would check nothing: the resolver fails closed for every host.
func TestSubdomainParentRule(t *testing.T) {
	for _, parent := range []string{"", ".", "example.com:8443", ".example.com", "*.example.com", "example..com", "exa mple.com", "https://example.com"} {
		for _, host := range []string{"globex.example.com", "globex.example.com:8443", "example.com"} {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Host = host
			_, _, err := authz.Subdomain(parent)(r)
			require.ErrorIs(t, err, authz.ErrInvalidConfig, "parent %q, host %q", parent, host)
		}
	}
	for _, parent := range []string{"localhost", "Example.COM.", "a-b.example.com"} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = "acme." + strings.TrimSuffix(strings.ToLower(parent), ".")
		id, named, err := authz.Subdomain(parent)(r)
		require.NoError(t, err, parent)
		require.True(t, named, parent)
		require.Equal(t, "acme", id.String())
	}
	e := newEnv(t)
	acme := e.token(t, "acme")
	h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.Resolvers = []authz.Resolver{authz.Subdomain("example.com:443")} }).Handler(echo)
	r := request("/", acme)
	r.Host = "globex.example.com"
	requireProblem(t, do(h, r), http.StatusInternalServerError, acme, "globex")
}

func TestPathPrefix(t *testing.T) {
	resolve := authz.PathPrefix("/t/")
	for _, c := range []struct {
		target string
		want   string
		isErr  bool
	}{
		{"/t/acme/items", "acme", false},
		{"/t/acme", "acme", false},
		{"/t/acme/", "acme", false},
		{"/t/%61cme/items", "acme", false},
		{"/me", "", false},
		{"/", "", false},
		{"/tt/acme", "", false},
		{"/t/ACME/items", "", true},
		{"/t/acme%2Fglobex/items", "", true},
		{"/t/acme%2fglobex", "", true},
		{"/t/%2e%2e/items", "", true},
		{"/t/acme/../globex/items", "", true},
		{"/t/acme/%2e%2e/globex/items", "", true},
		{"/t/acme/./items", "", true},
		{"//t/globex/items", "", true},
		{"/t//globex/items", "", true},
		{"/x/../t/globex/items", "", true},
		{"/t/", "", true},
		{"/t/acme%00/items", "", true},
		// Segments compare unescaped, as ServeMux matches them.
		{"/%74/acme/items", "acme", false},
		{"/%74/Globex/items", "", true},
		// A router routing on the decoded path reads "/t/globex/items".
		{"/t%2Fglobex/items", "", true},
		{"/t%2facme", "", true},
	} {
		r := httptest.NewRequest(http.MethodGet, "http://h"+c.target, nil)
		id, named, err := resolve(r)
		if c.isErr {
			require.Error(t, err, c.target)
			require.True(t, named, c.target)
			continue
		}
		require.NoError(t, err, c.target)
		require.Equal(t, c.want != "", named, c.target)
		require.Equal(t, c.want, id.String(), c.target)
	}
}

// A prefix with more segments, the root prefix, and prefixes that break
// the rule: those fail closed for every path, never let it through.
func TestPathPrefixRule(t *testing.T) {
	get := func(target string) *http.Request { return httptest.NewRequest(http.MethodGet, "http://h"+target, nil) }
	id, named, err := authz.PathPrefix("/api/t/")(get("/api/%74/acme/x"))
	require.NoError(t, err)
	require.True(t, named)
	require.Equal(t, "acme", id.String())
	_, named, err = authz.PathPrefix("/api/t/")(get("/api%2Ft/globex/x"))
	require.True(t, named)
	require.ErrorIs(t, err, tenant.ErrInvalidID)
	id, named, err = authz.PathPrefix("/")(get("/acme/items"))
	require.NoError(t, err)
	require.True(t, named)
	require.Equal(t, "acme", id.String())
	for _, prefix := range []string{"", "t/", "/t", "t", "//", "/t//", "/./", "/../t/", "/%74/"} {
		for _, target := range []string{"/t/globex/items", "/me"} {
			_, _, err := authz.PathPrefix(prefix)(get(target))
			require.ErrorIs(t, err, authz.ErrInvalidConfig, "prefix %q, %s", prefix, target)
		}
	}
	e := newEnv(t)
	acme := e.token(t, "acme")
	h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.Resolvers = []authz.Resolver{authz.PathPrefix("t/")} }).Handler(echo)
	requireProblem(t, do(h, request("/t/globex/items", acme)), http.StatusInternalServerError, acme, "globex")
}

// The middleware mounted around a ServeMux, before routing.
func TestMiddlewareAroundMux(t *testing.T) {
	e := newEnv(t)
	acme := e.token(t, "acme")
	mux := http.NewServeMux()
	mux.Handle("GET /t/{tenant}/items", echo)
	mux.Handle("GET /me", echo)

	t.Run("PathValue before routing fails closed", func(t *testing.T) {
		h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.Resolvers = []authz.Resolver{authz.PathValue("tenant")} }).Handler(mux)
		for _, target := range []string{"/t/acme/items", "/t/globex/items", "/me"} {
			requireProblem(t, do(h, request(target, acme)), http.StatusInternalServerError, acme)
		}
	})
	t.Run("PathPrefix", func(t *testing.T) {
		h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.Resolvers = []authz.Resolver{authz.PathPrefix("/t/")} }).Handler(mux)
		require.Equal(t, 200, do(h, request("/t/acme/items", acme)).Code)
		require.Equal(t, 200, do(h, request("/me", acme)).Code)
		for _, target := range []string{
			"/t/globex/items", "/t/Globex/items", "/t/acme/../globex/items", "/t/acme/%2e%2e/globex/items",
			"//t/globex/items", "/t//globex/items", "/x/../t/globex/items", "/t/acme%2F..%2Fglobex/items",
			// ServeMux matches unescaped segments: "/%74/" is "/t/" to it.
			"/%74/globex/items", "/%74/Globex/items",
		} {
			w := do(h, request(target, acme))
			requireProblem(t, w, http.StatusForbidden, acme, "globex", "Globex")
		}
	})
}

// Routed by ServeMux with the middleware inside each route: the mux
// cleans the path (a redirect) before any handler runs.
func TestPathValueAfterRouting(t *testing.T) {
	e := newEnv(t)
	acme := e.token(t, "acme")
	mw := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.Resolvers = []authz.Resolver{authz.PathValue("tenant")} })
	mux := http.NewServeMux()
	mux.Handle("GET /t/{tenant}/items", mw.Handler(echo))
	mux.Handle("GET /files/{tenant}/{path...}", mw.Handler(echo))
	for _, c := range []struct {
		target string
		want   int
	}{
		{"/t/acme/items", 200},
		{"/files/acme/a/b", 200},
		{"/files/globex/a/b", 403},
		{"/t/acme/../globex/items", http.StatusTemporaryRedirect},
		{"//t/globex/items", http.StatusTemporaryRedirect},
		{"/t/acme%2F..%2Fglobex/items", 403},
		{"/t/%2e%2e/items", 403},
	} {
		w := do(mux, request(c.target, acme))
		require.Equal(t, c.want, w.Code, c.target)
		if c.want == 200 {
			require.Contains(t, w.Body.String(), "of acme", c.target)
			continue
		}
		require.NotContains(t, w.Body.String(), "hello", c.target)
		if c.want == 403 {
			requireProblem(t, w, 403, acme, "globex")
		}
	}
}

// Resolver errors name the rule once, with one prefix, and not the input.
func TestResolverErrors(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/t/ACME/items", nil)
	r.Host = "Big_Corp.example.com"
	for _, resolve := range []authz.Resolver{authz.PathPrefix("/t/"), authz.Subdomain("example.com")} {
		_, named, err := resolve(r)
		require.True(t, named)
		require.ErrorIs(t, err, tenant.ErrInvalidID)
		require.Equal(t, 1, strings.Count(err.Error(), "authz:"), err.Error())
		require.NotContains(t, err.Error(), "tenant:")
		require.NotContains(t, strings.ToLower(err.Error()), "acme")
		require.NotContains(t, strings.ToLower(err.Error()), "big")
	}
}
