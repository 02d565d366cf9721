package ws_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/authz/ws"
	"github.com/rtmx-ai/tenancy/tenant"
)

// requireStatus checks that an upgrade was refused with status, as a
// problem that does not name the other tenant or echo the token.
func requireStatus(t *testing.T, resp *http.Response, err error, status int, secrets ...string) {
	t.Helper()
	require.Error(t, err)
	require.NotNil(t, resp, "no HTTP response: %v", err)
	require.Equal(t, status, resp.StatusCode)
	if resp.Body == nil {
		return
	}
	body, _ := io.ReadAll(resp.Body)
	for _, s := range secrets {
		require.NotContains(t, string(body), s)
	}
}

func TestUpgradeIsAuthorisedByTheMiddleware(t *testing.T) {
	e := newEnv(t, testConfig())
	hour := time.Now().Add(time.Hour)
	alpha := token(t, e.a, hour, authz.RoleViewer)
	bravo := token(t, e.b, hour, authz.RoleViewer)

	_, resp, err := dial(t, e.url(e.a.String()), "", nil)
	requireStatus(t, resp, err, http.StatusUnauthorized)
	_, resp, err = dial(t, e.url(e.a.String()), alpha+"x", nil)
	requireStatus(t, resp, err, http.StatusUnauthorized)

	// B's token on A's path, and A's on B's: 403, naming neither.
	_, resp, err = dial(t, e.url(e.a.String()), bravo, nil)
	requireStatus(t, resp, err, http.StatusForbidden, bravo, e.a.String(), e.b.String())
	_, resp, err = dial(t, e.url(e.b.String()), alpha, nil)
	requireStatus(t, resp, err, http.StatusForbidden, alpha, e.a.String(), e.b.String())
	_, resp, err = dial(t, e.url("BRAVO"), alpha, nil)
	requireStatus(t, resp, err, http.StatusForbidden)
	_, resp, err = dial(t, e.url("bravo%2F..%2Falpha"), alpha, nil)
	requireStatus(t, resp, err, http.StatusForbidden)
	require.Zero(t, e.clients(t, e.a))
	require.Zero(t, e.clients(t, e.b))

	// A token without a role of its tenant.
	_, resp, err = dial(t, e.url(e.a.String()), token(t, e.a, hour, "stranger"), nil)
	requireStatus(t, resp, err, http.StatusForbidden)

	// A suspended tenant is refused at the upgrade.
	e.mem.set(e.b, tenant.StateSuspended)
	require.Eventually(t, func() bool {
		_, resp, err := dial(t, e.url(e.b.String()), bravo, nil)
		return err != nil && resp != nil && resp.StatusCode == http.StatusForbidden
	}, 5*time.Second, 10*time.Millisecond)

	// A request that is no upgrade gets 426 from websocket's Accept.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.srv.URL+"/t/"+e.a.String()+"/ws", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+alpha)
	plain, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	require.NoError(t, plain.Body.Close())
	require.Equal(t, http.StatusUpgradeRequired, plain.StatusCode)
	require.Zero(t, e.clients(t, e.a))

	// The right token on its own path is upgraded.
	c, resp, err := dial(t, e.url(e.a.String()), alpha, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	join(t, c, "x")
	require.Equal(t, 1, e.clients(t, e.a))
}

func TestHubWithoutMiddlewareRefusesUpgrade(t *testing.T) {
	e := newEnv(t, testConfig())
	alpha := token(t, e.a, time.Now().Add(time.Hour), authz.RoleOwner)
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/bare/alpha/ws"
	_, resp, err := dial(t, url, alpha, nil)
	requireStatus(t, resp, err, http.StatusInternalServerError, alpha)
	require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	require.Zero(t, e.clients(t, e.a))
}

func TestOriginChecked(t *testing.T) {
	e := newEnv(t, testConfig())
	alpha := token(t, e.a, time.Now().Add(time.Hour), authz.RoleViewer)
	evil := http.Header{"Origin": {"https://evil.example"}}
	_, resp, err := dial(t, e.url(e.a.String()), alpha, evil)
	requireStatus(t, resp, err, http.StatusForbidden)
	require.Zero(t, e.clients(t, e.a))

	// Same origin (the request's host) is accepted by default.
	same := http.Header{"Origin": {e.srv.URL}}
	_, _, err = dial(t, e.url(e.a.String()), alpha, same)
	require.NoError(t, err)

	// Another origin is accepted once a pattern allows it, and only it.
	cfg := testConfig()
	cfg.OriginPatterns = []string{"app.example.com"}
	e2 := newEnv(t, cfg)
	_, _, err = dial(t, e2.url(e2.a.String()), alpha, http.Header{"Origin": {"https://app.example.com"}})
	require.NoError(t, err)
	_, resp, err = dial(t, e2.url(e2.a.String()), alpha, http.Header{"Origin": {"https://app.example.com.evil.example"}})
	requireStatus(t, resp, err, http.StatusForbidden)
}

// Seed verification test 4 of REQ-DEPLOY-004, one client each: the same
// room name in two tenants carries separate traffic.
func TestSameRoomNameSeparateTraffic(t *testing.T) {
	e := newEnv(t, testConfig())
	ca, cb := e.connect(t, e.a), e.connect(t, e.b)
	join(t, ca, "x")
	join(t, cb, "x")
	require.Equal(t, 1, e.publish(t, e.a, "x", "canary-alpha"))
	require.Equal(t, 1, e.publish(t, e.b, "x", "canary-bravo"))
	m := next(t, ca)
	require.Equal(t, msg{Op: "message", Room: "x", Data: json.RawMessage(`"canary-alpha"`)}, m)
	m = next(t, cb)
	require.Equal(t, msg{Op: "message", Room: "x", Data: json.RawMessage(`"canary-bravo"`)}, m)
	e.fence(t, ca, e.a, "x")
	e.fence(t, cb, e.b, "x")
}

func TestJoinOfHostileRoomNamesRefused(t *testing.T) {
	e := newEnv(t, testConfig())
	cb := e.connect(t, e.b)
	join(t, cb, "x")
	join(t, cb, "b")
	ca := e.connect(t, e.a)
	join(t, ca, "mine")
	for name := range hostileRooms {
		if len(name) > 1000 {
			continue // over the read limit: see TestMalformedMessages
		}
		raw, err := json.Marshal(map[string]string{"op": "join", "room": name})
		require.NoError(t, err)
		send(t, ca, string(raw))
		m := requireError(t, ca, "invalid_room")
		require.True(t, strings.HasPrefix(m.Detail, "invalid room name: "), m.Detail)
	}
	// A, in none of them, gets nothing of B's rooms.
	e.publish(t, e.b, "x", "canary-bravo")
	e.publish(t, e.b, "b", "canary-bravo")
	e.fence(t, ca, e.a, "mine")
	require.Equal(t, `"canary-bravo"`, string(next(t, cb).Data))
	require.Equal(t, `"canary-bravo"`, string(next(t, cb).Data))
}

func TestMessageNamingATenantRefused(t *testing.T) {
	e := newEnv(t, testConfig())
	cb := e.connect(t, e.b)
	join(t, cb, "x")
	ca := e.connect(t, e.a, authz.RoleEditor)
	join(t, ca, "mine")
	for _, m := range []string{
		`{"op":"join","room":"x","tenant":"bravo"}`,
		`{"op":"join","room":"x","tenant_id":"bravo"}`,
		`{"tenant":"bravo","op":"join","room":"x"}`,
		`{"op":"join","room":"x","Tenant":"bravo"}`,
		`{"op":"publish","room":"mine","data":"canary-alpha","tenant":"bravo"}`,
		`{"op":"join","room":{"tenant":"bravo","name":"x"}}`,
		`{"op":"join","room":["bravo","x"]}`,
	} {
		send(t, ca, m)
		requireError(t, ca, "bad_message")
	}
	// None of them joined anything, or published anything.
	e.publish(t, e.b, "x", "canary-bravo")
	e.fence(t, ca, e.a, "mine")
	require.Equal(t, `"canary-bravo"`, string(next(t, cb).Data))
	e.fence(t, cb, e.b, "x")
}

func TestClientPublish(t *testing.T) {
	e := newEnv(t, testConfig())
	bs := []*websocket.Conn{e.connect(t, e.b), e.connect(t, e.b, authz.RoleEditor)}
	for _, c := range bs {
		join(t, c, "x")
	}
	editor := e.connect(t, e.a, authz.RoleEditor)
	join(t, editor, "x")
	other := e.connect(t, e.a)
	join(t, other, "x")

	// A's editor publishes to "x", the name B uses: A's members get it,
	// the sender too; B's get nothing.
	send(t, editor, `{"op":"publish","room":"x","data":{"canary":"alpha-1"}}`)
	want := msg{Op: "message", Room: "x", Data: json.RawMessage(`{"canary":"alpha-1"}`)}
	require.Equal(t, want, next(t, editor))
	require.Equal(t, want, next(t, other))
	e.fenceAll(t, e.b, "x", bs...)

	// Publishing to a room not joined, even one B uses, is refused.
	send(t, editor, `{"op":"publish","room":"b","data":"canary-alpha"}`)
	requireError(t, editor, "not_joined")
	// A viewer may not publish.
	send(t, other, `{"op":"publish","room":"x","data":"canary-alpha"}`)
	requireError(t, other, "forbidden")
	e.fenceAll(t, e.a, "x", editor, other)
	e.fenceAll(t, e.b, "x", bs...)
}

func TestClientPublishDisabled(t *testing.T) {
	cfg := testConfig()
	cfg.PublishPermission = ""
	e := newEnv(t, cfg)
	owner := e.connect(t, e.a, authz.RoleOwner)
	join(t, owner, "x")
	send(t, owner, `{"op":"publish","room":"x","data":1}`)
	requireError(t, owner, "forbidden")
	e.fence(t, owner, e.a, "x")
}

func TestLeave(t *testing.T) {
	e := newEnv(t, testConfig())
	c := e.connect(t, e.a)
	join(t, c, "x")
	join(t, c, "x") // joining twice is one membership
	join(t, c, "y")
	require.Equal(t, 1, e.publish(t, e.a, "x", 1))
	require.Equal(t, `1`, string(next(t, c).Data))
	send(t, c, `{"op":"leave","room":"x"}`)
	require.Equal(t, msg{Op: "left", Room: "x"}, next(t, c))
	send(t, c, `{"op":"leave","room":"never"}`)
	require.Equal(t, msg{Op: "left", Room: "never"}, next(t, c))
	require.Zero(t, e.publish(t, e.a, "x", 2))
	e.fence(t, c, e.a, "y")
}

func TestMaxRoomsPerClient(t *testing.T) {
	cfg := testConfig()
	cfg.MaxRoomsPerClient = 2
	e := newEnv(t, cfg)
	c := e.connect(t, e.a)
	join(t, c, "r1")
	join(t, c, "r2")
	send(t, c, `{"op":"join","room":"r3"}`)
	requireError(t, c, "too_many_rooms")
	send(t, c, `{"op":"leave","room":"r1"}`)
	require.Equal(t, "left", next(t, c).Op)
	join(t, c, "r3")
}

func TestMalformedMessages(t *testing.T) {
	e := newEnv(t, testConfig())
	c := e.connect(t, e.a, authz.RoleEditor)
	join(t, c, "x")
	for frame, code := range map[string]string{
		``:                                  "bad_message",
		`{`:                                 "bad_message",
		`null`:                              "bad_message",
		`[]`:                                "bad_message",
		`"join"`:                            "bad_message",
		`{"op":"join","room":"x"} {}`:       "bad_message",
		`{"op":"join","room":"x"}x`:         "bad_message",
		`{"op":"join","room":"y","x":1}`:    "bad_message",
		`{"op":"join","room":1}`:            "bad_message",
		`{"op":"join","room":"x","data":1}`: "bad_message",
		`{"op":"publish","room":"x"}`:       "bad_message",
		`{"op":"publish","room":"x","data":null}`: "bad_message",
		`{"op":"publish","room":"x","data":nope}`: "bad_message",
		`{"op":"subscribe","room":"x"}`:           "unknown_op",
		`{"op":"JOIN","room":"x"}`:                "unknown_op",
		`{"room":"x"}`:                            "unknown_op",
		`{"op":"join"}`:                           "invalid_room",
		"\xff\xfe":                                "bad_message",
	} {
		send(t, c, frame)
		requireError(t, c, code)
	}
	e.fence(t, c, e.a, "x") // still connected, still in x

	// A binary frame closes the connection (1003).
	ctx := t.Context()
	require.NoError(t, c.Write(ctx, websocket.MessageBinary, []byte(`{"op":"join","room":"y"}`)))
	requireClosed(t, c, websocket.StatusUnsupportedData, 5*time.Second)

	// A frame over the read limit closes it (1009).
	c = e.connect(t, e.a)
	_ = c.Write(ctx, websocket.MessageText, []byte(`{"op":"join","room":"`+strings.Repeat("a", 16<<10)+`"}`))
	requireClosed(t, c, websocket.StatusMessageTooBig, 5*time.Second)
	require.Eventually(t, func() bool { return e.clients(t, e.a) == 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestClientsPerTenantCapped(t *testing.T) {
	cfg := testConfig()
	cfg.MaxClientsPerTenant = 3
	e := newEnv(t, cfg)
	var as []*websocket.Conn
	for range 3 {
		c := e.connect(t, e.a)
		join(t, c, "x")
		as = append(as, c)
	}
	over := e.connect(t, e.a)
	requireClosed(t, over, websocket.StatusPolicyViolation, 5*time.Second)
	require.Equal(t, 3, e.clients(t, e.a))
	// B has a cap of its own.
	for range 3 {
		join(t, e.connect(t, e.b), "x")
	}
	require.Equal(t, 3, e.clients(t, e.b))
	// The clients in were not disturbed.
	require.Equal(t, 3, e.publish(t, e.a, "x", "after"))
	for _, c := range as {
		require.Equal(t, `"after"`, string(next(t, c).Data))
	}
	// Once one leaves, another gets in.
	require.NoError(t, as[0].Close(websocket.StatusNormalClosure, ""))
	require.Eventually(t, func() bool { return e.clients(t, e.a) == 2 }, 5*time.Second, 10*time.Millisecond)
	join(t, e.connect(t, e.a), "x")
	require.Equal(t, 3, e.clients(t, e.a))
}

func TestSlowClientDisconnected(t *testing.T) {
	cfg := testConfig()
	cfg.SendQueue = 4
	cfg.WriteTimeout = 500 * time.Millisecond
	var logs logBuffer
	cfg.Logger = logs.logger()
	e := newEnv(t, cfg)
	slow := e.connect(t, e.a)
	join(t, slow, "secret-room")
	fast := e.connect(t, e.a)
	join(t, fast, "secret-room")

	// fast reads everything; slow reads nothing from now on.
	big := strings.Repeat("z", 32<<10)
	got := make(chan int, 1)
	const n = 400
	go func() {
		count := 0
		for count < n {
			_, _, err := fast.Read(t.Context())
			if err != nil {
				break
			}
			count++
		}
		got <- count
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; i++ {
			e.publish(t, e.a, "secret-room", big)
			time.Sleep(time.Millisecond) // let fast keep up; slow's socket fills
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Publish blocked behind a slow client")
	}
	require.Equal(t, n, <-got, "the fast client got every message")
	require.Equal(t, 1, e.clients(t, e.a), "the slow client was dropped")
	require.Equal(t, 1, e.publish(t, e.a, "secret-room", "only-fast-left"))
	out := logs.String()
	require.Contains(t, out, `"reason":"too slow: send queue full"`)
	require.Contains(t, out, `"tenant_id":"alpha"`)
	require.NotContains(t, out, "secret-room", "logs carry no room names")
	require.NotContains(t, out, "zzzz", "logs carry no data")
	// slow finds its connection ended once it reads.
	ctx := t.Context()
	for {
		if _, _, err := slow.Read(ctx); err != nil {
			break
		}
	}
}

func TestExpiredTokenDisconnects(t *testing.T) {
	e := newEnv(t, testConfig())
	exp := time.Now().Add(2 * time.Second)
	c, _, err := dial(t, e.url(e.a.String()), token(t, e.a, exp, authz.RoleViewer), nil)
	require.NoError(t, err)
	join(t, c, "x")
	long := e.connect(t, e.a)
	join(t, long, "x")
	requireClosed(t, c, ws.StatusTokenExpired, 5*time.Second)
	require.False(t, time.Now().Before(exp.Truncate(time.Second)), "closed before the token's exp")
	require.Equal(t, 1, e.publish(t, e.a, "x", "still here"))
	require.Equal(t, `"still here"`, string(next(t, long).Data))
}

func TestSuspendedTenantDisconnected(t *testing.T) {
	e := newEnv(t, testConfig())
	var as []*websocket.Conn
	for range 3 {
		c := e.connect(t, e.a)
		join(t, c, "x")
		as = append(as, c)
	}
	cb := e.connect(t, e.b)
	join(t, cb, "x")
	e.mem.set(e.a, tenant.StateSuspended)
	for _, c := range as {
		requireClosed(t, c, ws.StatusTenantNotActive, 5*time.Second)
	}
	require.Zero(t, e.clients(t, e.a))
	e.fence(t, cb, e.b, "x") // B was not touched
	require.Equal(t, 1, e.clients(t, e.b))
}

func TestDirectoryFailureKeepsConnectionsUnknownTenantDoesNot(t *testing.T) {
	e := newEnv(t, testConfig())
	c := e.connect(t, e.a)
	join(t, c, "x")
	e.mem.fail(errors.New("control plane down"))
	time.Sleep(5 * testConfig().CheckInterval) // several checks fail
	e.fence(t, c, e.a, "x")
	e.mem.fail(nil)
	e.mem.forget(e.a)
	requireClosed(t, c, ws.StatusTenantNotActive, 5*time.Second)
}

func TestPublishNeedsTheRoomsTenant(t *testing.T) {
	e := newEnv(t, testConfig())
	cb := e.connect(t, e.b)
	join(t, cb, "x")
	actx, bctx := tenant.NewContext(t.Context(), e.a), tenant.NewContext(t.Context(), e.b)
	broom, err := ws.NewRoom(bctx, "x")
	require.NoError(t, err)
	_, err = e.hub.Publish(actx, broom, "canary-alpha")
	require.ErrorIs(t, err, tenant.ErrCrossTenant)
	_, err = e.hub.Publish(t.Context(), broom, "canary-alpha")
	require.ErrorIs(t, err, tenant.ErrNoTenant)
	_, err = e.hub.Publish(actx, ws.Room{}, "canary-alpha")
	require.ErrorIs(t, err, tenant.ErrCrossTenant)
	_, err = e.hub.Publish(bctx, broom, func() {})
	require.ErrorContains(t, err, "ws: Publish: data")
	_, err = e.hub.Clients(t.Context())
	require.ErrorIs(t, err, tenant.ErrNoTenant)
	e.fence(t, cb, e.b, "x")
}

func TestCloseEndsConnections(t *testing.T) {
	e := newEnv(t, testConfig())
	ca, cb := e.connect(t, e.a), e.connect(t, e.b)
	join(t, ca, "x")
	join(t, cb, "x")
	closed := make(chan error, 1)
	go func() { closed <- e.hub.Close() }()
	requireClosed(t, ca, websocket.StatusGoingAway, 5*time.Second)
	requireClosed(t, cb, websocket.StatusGoingAway, 5*time.Second)
	require.NoError(t, <-closed)
	require.NoError(t, e.hub.Close())
	ctx := tenant.NewContext(t.Context(), e.a)
	room, err := ws.NewRoom(ctx, "x")
	require.NoError(t, err)
	_, err = e.hub.Publish(ctx, room, 1)
	require.ErrorIs(t, err, ws.ErrClosed)
	_, resp, err := dial(t, e.url(e.a.String()), token(t, e.a, time.Now().Add(time.Hour), authz.RoleViewer), nil)
	requireStatus(t, resp, err, http.StatusServiceUnavailable)
}

func TestNewHubConfigErrors(t *testing.T) {
	for field, mod := range map[string]func(*ws.Config){
		"Directory":           func(c *ws.Config) { c.Directory = nil },
		"CheckInterval":       func(c *ws.Config) { c.CheckInterval = 0 },
		"ReadLimit":           func(c *ws.Config) { c.ReadLimit = 0 },
		"WriteTimeout":        func(c *ws.Config) { c.WriteTimeout = -1 },
		"SendQueue":           func(c *ws.Config) { c.SendQueue = 0 },
		"MaxClientsPerTenant": func(c *ws.Config) { c.MaxClientsPerTenant = 0 },
		"MaxRoomsPerClient":   func(c *ws.Config) { c.MaxRoomsPerClient = -1 },
		"MessageRate":         func(c *ws.Config) { c.MessageRate = math.NaN() },
		"MessageBurst":        func(c *ws.Config) { c.MessageBurst = 0 },
		"OriginPatterns[1]":   func(c *ws.Config) { c.OriginPatterns = []string{"a.example", "*"} },
		"OriginPatterns[0]":   func(c *ws.Config) { c.OriginPatterns = []string{""} },
	} {
		cfg := ws.DefaultConfig()
		cfg.Directory = &memDirectory{}
		mod(&cfg)
		_, err := ws.NewHub(cfg)
		require.ErrorIs(t, err, ws.ErrInvalidConfig, field)
		require.ErrorContains(t, err, "Config."+field+" ", field)
		require.True(t, strings.HasPrefix(err.Error(), "ws: "), err.Error())
	}
	// A suspended tenant's connections would stay for hours.
	cfg := ws.DefaultConfig()
	cfg.Directory, cfg.CheckInterval = &memDirectory{}, 5*time.Minute+1
	_, err := ws.NewHub(cfg)
	require.ErrorIs(t, err, ws.ErrInvalidConfig)
	require.ErrorContains(t, err, "Config.CheckInterval must be at most 5m0s")
	for _, r := range []float64{0, -1, math.Inf(1)} {
		cfg := ws.DefaultConfig()
		cfg.Directory, cfg.MessageRate = &memDirectory{}, r
		_, err := ws.NewHub(cfg)
		require.ErrorContains(t, err, "Config.MessageRate ", "%v", r)
	}
	var zero ws.Config
	zero.Directory = &memDirectory{}
	_, err = ws.NewHub(zero)
	require.ErrorIs(t, err, ws.ErrInvalidConfig, "zero is not a default")
}

func TestClientSendingTooFastDisconnected(t *testing.T) {
	cfg := testConfig()
	cfg.MessageRate, cfg.MessageBurst = 1, 5
	e := newEnv(t, cfg)
	c := e.connect(t, e.a)
	other := e.connect(t, e.a)
	join(t, other, "x")
	for range 5 {
		join(t, c, "x") // within the burst
	}
	for range 20 {
		if err := c.Write(t.Context(), websocket.MessageText, []byte(`{"op":"leave","room":"y"}`)); err != nil {
			break
		}
	}
	requireClosed(t, c, websocket.StatusPolicyViolation, 5*time.Second)
	e.fence(t, other, e.a, "x") // the other client is unaffected
}

// A Directory that panics in the hub's check is a failing one: the
// connections stay, the hub goes on checking (the process does not end),
// and a suspension seen once it answers again disconnects.
func TestHubDirectoryPanics(t *testing.T) {
	mem := &memDirectory{states: map[tenant.ID]tenant.State{}}
	dir := &panickyDirectory{memDirectory: mem}
	e := newEnvWith(t, testConfig(), dir, tenant.MustParseID("alpha"), tenant.MustParseID("bravo"))
	mem.set(e.a, tenant.StateActive)
	c := e.connect(t, e.a, authz.RoleViewer)
	join(t, c, "x")
	dir.panics.Store(true)
	time.Sleep(200 * time.Millisecond) // four checks
	require.Equal(t, 1, e.clients(t, e.a))
	dir.panics.Store(false)
	mem.set(e.a, tenant.StateSuspended)
	requireClosed(t, c, ws.StatusTenantNotActive, 5*time.Second)
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
