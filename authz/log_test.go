package authz_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/tenant"
)

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Refusals are logged with their reason, never with the token, a claim or
// the tenant the request named.
func TestRefusalLogs(t *testing.T) {
	e := newEnv(t)
	var logs syncBuffer
	mw := newMiddleware(t, e.v, e.dir, func(c *authz.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c.Resolvers = []authz.Resolver{authz.PathValue("tenant")}
	})
	mux := http.NewServeMux()
	mux.Handle("GET /t/{tenant}/items", mw.Handler(echo))
	c := claims("acme")
	c["email"] = canary
	acme := mint(t, edSigner(), c)
	bad := mint(t, edSigner(), withClaim("acme", "tenant_id", "Evil'--"))
	for _, r := range []*http.Request{
		request("/t/globex/items", acme),
		request("/t/acme/items", bad),
		request("/t/acme/items", acme+"x"),
		request("/t/acme/items", ""),
	} {
		require.NotEqual(t, 200, do(mux, r).Code)
	}
	out := logs.String()
	require.Contains(t, out, `"msg":"authz: request refused"`)
	require.Contains(t, out, `"status":403`)
	require.Contains(t, out, `"status":401`)
	for _, s := range []string{acme, bad, canary, "globex", "Evil"} {
		require.NotContains(t, out, s)
	}
}

// A principal logs its subject, tenant and roles, not its other claims.
func TestPrincipalLogValue(t *testing.T) {
	e := newEnv(t)
	c := claims("acme")
	c["email"] = canary
	p, err := e.v.Verify(t.Context(), mint(t, edSigner(), c))
	require.NoError(t, err)
	var out bytes.Buffer
	slog.New(slog.NewJSONHandler(&out, nil)).Info("who", "principal", p)
	require.Contains(t, out.String(), `"principal":{"sub":"user-1","tenant":"acme","roles":["viewer"]}`)
	require.NotContains(t, out.String(), canary)
}

// Authenticate runs the checks on a token found elsewhere than the
// Authorization header (a WebSocket subprotocol), and WriteError answers
// its errors.
func TestAuthenticate(t *testing.T) {
	e := newEnv(t)
	mw := newMiddleware(t, e.v, e.dir)
	r := request("/ws", "")
	ctx, err := mw.Authenticate(r, e.token(t, "acme"))
	require.NoError(t, err)
	p, ok := authz.FromContext(ctx)
	require.True(t, ok)
	require.Equal(t, "acme", p.Tenant().String())

	_, err = mw.Authenticate(r, "nope")
	require.ErrorIs(t, err, authz.ErrInvalidToken)
	w := do(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { authz.WriteError(w, err) }), r)
	requireProblem(t, w, http.StatusUnauthorized, "nope")
	require.Equal(t, `Bearer, error="invalid_token"`, w.Header().Get("WWW-Authenticate"))

	e.dir.set("acme", "suspended")
	mw = newMiddleware(t, e.v, e.dir)
	_, err = mw.Authenticate(r, e.token(t, "acme"))
	require.ErrorIs(t, err, authz.ErrTenantNotActive)
	require.ErrorIs(t, err, authz.ErrForbidden)

	_, ok = authz.FromContext(context.Background())
	require.False(t, ok)
}

// Every refusal's message has one "authz:" prefix, names the rule and
// matches its sentinels.
func TestErrorMessages(t *testing.T) {
	e := newEnv(t)
	e.dir.set("frozen", "suspended")
	mw := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.Resolvers = []authz.Resolver{authz.PathPrefix("/t/")} })
	for _, c := range []struct {
		target, token string
		is            []error
		msg           string
	}{
		{"/t/globex/x", e.token(t, "acme"), []error{authz.ErrForbidden, tenant.ErrCrossTenant}, "authz: forbidden: the request names another tenant than the token"},
		{"/t/Globex/x", e.token(t, "acme"), []error{authz.ErrForbidden, tenant.ErrCrossTenant}, "authz: forbidden: the request names no valid tenant"},
		{"/", e.token(t, "frozen"), []error{authz.ErrForbidden, authz.ErrTenantNotActive}, "authz: tenant not active: suspended"},
		{"/", e.token(t, "ghost"), []error{authz.ErrForbidden, authz.ErrTenantNotActive}, "authz: tenant not active: not in the directory"},
		{"/", e.token(t, "acme", "nobody"), []error{authz.ErrForbidden, authz.ErrMissingRole}, "authz: missing role: the token grants no role of its tenant"},
		{"/", mint(t, edSigner(), withClaim("acme", "tenant_id", "ACME")), []error{authz.ErrForbidden}, "authz: forbidden: claim tenant_id: not a tenant ID: "},
		{"/", mint(t, edSigner(), withClaim("acme", "exp", 1)), []error{authz.ErrInvalidToken}, "authz: invalid token: expired"},
	} {
		_, err := mw.Authenticate(request(c.target, ""), c.token)
		for _, is := range c.is {
			require.ErrorIs(t, err, is, c.msg)
		}
		require.Contains(t, err.Error(), c.msg)
		require.Equal(t, 1, strings.Count(err.Error(), "authz:"), err.Error())
		require.NotContains(t, err.Error(), "tenant: ", err.Error())
	}
}
