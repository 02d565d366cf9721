package ws_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/authz/ws"
)

// dialSub opens a connection to tenant segment's /s/ path offering
// protocols, with header h (nil for none).
func dialSub(t *testing.T, e *env, segment string, h http.Header, protocols ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/s/" + segment + "/ws"
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h, Subprotocols: protocols})
	if c != nil {
		t.Cleanup(func() { _ = c.CloseNow() })
	}
	return c, resp, err
}

func TestTokenInSubprotocol(t *testing.T) {
	e := newEnv(t, testConfig())
	hour := time.Now().Add(time.Hour)
	alpha := token(t, e.a, hour, authz.RoleViewer)
	bravo := token(t, e.b, hour, authz.RoleViewer)

	c, resp, err := dialSub(t, e, e.a.String(), nil, ws.Subprotocol, "bearer."+alpha)
	require.NoError(t, err)
	require.Equal(t, ws.Subprotocol, c.Subprotocol())
	require.NotContains(t, resp.Header.Get("Sec-WebSocket-Protocol"), alpha, "the token is not sent back")
	join(t, c, "x")
	e.fence(t, c, e.a, "x")

	// The middleware's checks apply: B's token on A's path, a bad token.
	_, resp, err = dialSub(t, e, e.a.String(), nil, ws.Subprotocol, "bearer."+bravo)
	requireStatus(t, resp, err, http.StatusForbidden, bravo)
	_, resp, err = dialSub(t, e, e.a.String(), nil, ws.Subprotocol, "bearer."+alpha[:len(alpha)-2])
	requireStatus(t, resp, err, http.StatusUnauthorized)
	_, resp, err = dialSub(t, e, e.a.String(), nil, ws.Subprotocol, "bearer.")
	requireStatus(t, resp, err, http.StatusUnauthorized)
	// Two tokens, or a token in both places, are ambiguous: 401.
	_, resp, err = dialSub(t, e, e.a.String(), nil, ws.Subprotocol, "bearer."+alpha, "bearer."+bravo)
	requireStatus(t, resp, err, http.StatusUnauthorized, alpha, bravo)
	_, resp, err = dialSub(t, e, e.a.String(), http.Header{"Authorization": {"Bearer " + alpha}}, ws.Subprotocol, "bearer."+alpha)
	requireStatus(t, resp, err, http.StatusUnauthorized)
	// Without one, the Authorization header is read as by the middleware.
	c, _, err = dialSub(t, e, e.a.String(), http.Header{"Authorization": {"Bearer " + alpha}})
	require.NoError(t, err)
	require.Empty(t, c.Subprotocol())
	_, resp, err = dialSub(t, e, e.a.String(), nil, ws.Subprotocol)
	requireStatus(t, resp, err, http.StatusUnauthorized)
	require.Equal(t, 2, e.clients(t, e.a))
	require.Zero(t, e.clients(t, e.b))

	// The token's expiry closes the connection as well.
	soon := token(t, e.a, time.Now().Add(time.Second), authz.RoleViewer)
	c, _, err = dialSub(t, e, e.a.String(), nil, ws.Subprotocol, "bearer."+soon)
	require.NoError(t, err)
	requireClosed(t, c, ws.StatusTokenExpired, 5*time.Second)
}
