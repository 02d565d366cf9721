package ws_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/authz/ws"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	testIssuer   = "https://idp.example.test/"
	testAudience = "rtmx-api"
	testKID      = "ed-1"
)

var (
	keyOnce sync.Once
	edKey   ed25519.PrivateKey
)

func signingKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	keyOnce.Do(func() {
		var err error
		_, edKey, err = ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
	})
	return edKey
}

// jwks returns the JWK Set of the test issuer's public key.
func jwks(t testing.TB) []byte {
	t.Helper()
	j, err := jwkset.NewJWKFromKey(signingKey(t).Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: testKID, ALG: jwkset.AlgEdDSA}})
	require.NoError(t, err)
	b, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{j.Marshal()}})
	require.NoError(t, err)
	return b
}

// token returns a token of tenant id granting roles, expiring at exp.
func token(t testing.TB, id tenant.ID, exp time.Time, roles ...string) string {
	t.Helper()
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"iss":       testIssuer,
		"aud":       testAudience,
		"sub":       "user-of-" + id.String(),
		"iat":       now.Unix(),
		"nbf":       now.Add(-time.Minute).Unix(),
		"exp":       exp.Unix(),
		"tenant_id": id.String(),
		"roles":     roles,
	})
	tok.Header["kid"] = testKID
	s, err := tok.SignedString(signingKey(t))
	require.NoError(t, err)
	return s
}

// memDirectory is an authz.Directory in memory.
type memDirectory struct {
	mu     sync.Mutex // guards states and err
	states map[tenant.ID]tenant.State
	err    error
}

func (d *memDirectory) set(id tenant.ID, st tenant.State) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.states[id] = st
}

func (d *memDirectory) forget(id tenant.ID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.states, id)
}

func (d *memDirectory) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.err = err
}

func (d *memDirectory) Tenant(_ context.Context, id tenant.ID) (tenant.Info, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return tenant.Info{}, d.err
	}
	st, ok := d.states[id]
	if !ok {
		return tenant.Info{}, store.ErrUnknownTenant
	}
	return tenant.Info{ID: id, State: st, Tier: tenant.TierStandard}, nil
}

var _ authz.Directory = (*memDirectory)(nil)

// env is a service with a Hub behind the Middleware on a loopback
// server: GET /t/{tenant}/ws upgrades.
type env struct {
	srv  *httptest.Server
	hub  *ws.Hub
	dir  authz.Directory
	mem  *memDirectory // dir, when it is one
	a, b tenant.ID
}

// testConfig returns the hub config of the tests: checks every 50 ms.
func testConfig() ws.Config {
	cfg := ws.DefaultConfig()
	cfg.CheckInterval = 50 * time.Millisecond
	return cfg
}

// newEnv starts a service for tenants alpha and bravo, with a memory
// directory, the hub configured by cfg (its Directory set).
func newEnv(t testing.TB, cfg ws.Config) *env {
	t.Helper()
	mem := &memDirectory{states: map[tenant.ID]tenant.State{}}
	e := newEnvWith(t, cfg, mem, tenant.MustParseID("alpha"), tenant.MustParseID("bravo"))
	mem.set(e.a, tenant.StateActive)
	mem.set(e.b, tenant.StateActive)
	e.mem = mem
	return e
}

// newEnvWith starts a service for tenants a and b over dir.
func newEnvWith(t testing.TB, cfg ws.Config, dir authz.Directory, a, b tenant.ID) *env {
	t.Helper()
	vc := authz.DefaultVerifierConfig()
	vc.Issuer, vc.Audience, vc.JWKS = testIssuer, testAudience, jwks(t)
	v, err := authz.NewVerifier(t.Context(), vc)
	require.NoError(t, err)
	t.Cleanup(v.Close)
	mcfg := authz.DefaultConfig()
	mcfg.Verifier, mcfg.Directory = v, dir
	mcfg.DirectoryTTL = 20 * time.Millisecond
	mcfg.Resolvers = []authz.Resolver{authz.PathValue("tenant")}
	mw, err := authz.NewMiddleware(mcfg)
	require.NoError(t, err)
	cfg.Directory = dir
	hub, err := ws.NewHub(cfg)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("GET /t/{tenant}/ws", mw.Handler(hub))
	mux.Handle("GET /bare/{tenant}/ws", hub) // the mistake: no middleware
	mux.Handle("GET /s/{tenant}/ws", ws.Authenticate(mw, hub))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		require.NoError(t, hub.Close())
		srv.Close()
	})
	return &env{srv: srv, hub: hub, dir: dir, a: a, b: b}
}

// url returns the WebSocket URL of tenant id's path (a raw segment).
func (e *env) url(segment string) string {
	return "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/t/" + segment + "/ws"
}

// dial opens a connection to url with token; it returns the upgrade's
// response too.
func dial(t testing.TB, url, token string, h http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	if h == nil {
		h = http.Header{}
	}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if c != nil {
		c.SetReadLimit(1 << 20)
		t.Cleanup(func() { _ = c.CloseNow() })
	}
	return c, resp, err
}

// connect opens a connection of tenant id on its own path, with a token
// valid for an hour granting roles (viewer if none).
func (e *env) connect(t testing.TB, id tenant.ID, roles ...string) *websocket.Conn {
	t.Helper()
	if len(roles) == 0 {
		roles = []string{authz.RoleViewer}
	}
	c, _, err := dial(t, e.url(id.String()), token(t, id, time.Now().Add(time.Hour), roles...), nil)
	require.NoError(t, err)
	return c
}

// msg is a message of the hub.
type msg struct {
	Op     string          `json:"op"`
	Room   string          `json:"room"`
	Data   json.RawMessage `json:"data"`
	Code   string          `json:"code"`
	Detail string          `json:"detail"`
}

// send writes s as a text frame.
func send(t testing.TB, c *websocket.Conn, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	require.NoError(t, c.Write(ctx, websocket.MessageText, []byte(s)))
}

// next reads the next message, failing after 5 s.
func next(t testing.TB, c *websocket.Conn) msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	require.NoError(t, err)
	require.Equal(t, websocket.MessageText, typ)
	var m msg
	require.NoError(t, json.Unmarshal(b, &m), "frame %q", b)
	return m
}

// join joins room and waits for the hub to confirm.
func join(t testing.TB, c *websocket.Conn, room string) {
	t.Helper()
	send(t, c, `{"op":"join","room":"`+room+`"}`)
	require.Equal(t, msg{Op: "joined", Room: room}, next(t, c))
}

// requireError reads the next message and checks it is an error of code.
func requireError(t testing.TB, c *websocket.Conn, code string) msg {
	t.Helper()
	m := next(t, c)
	require.Equal(t, "error", m.Op, "message %+v", m)
	require.Equal(t, code, m.Code, "message %+v", m)
	require.NotEmpty(t, m.Detail)
	return m
}

// requireClosed reads until the connection ends and checks its status.
func requireClosed(t testing.TB, c *websocket.Conn, code websocket.StatusCode, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err != nil {
			require.NoError(t, ctx.Err(), "the connection was not closed within %v", within)
			require.Equal(t, code, websocket.CloseStatus(err), "closed with %v", err)
			return
		}
	}
}

// publish publishes data to tenant id's room name.
func (e *env) publish(t testing.TB, id tenant.ID, name string, data any) int {
	t.Helper()
	ctx := tenant.NewContext(t.Context(), id)
	room, err := ws.NewRoom(ctx, name)
	require.NoError(t, err)
	n, err := e.hub.Publish(ctx, room, data)
	require.NoError(t, err)
	return n
}

// fence publishes a marker to tenant id's room name and checks that it
// is the next message c gets: whatever the hub queued for c before it
// would come first.
func (e *env) fence(t testing.TB, c *websocket.Conn, id tenant.ID, name string) {
	t.Helper()
	e.fenceAll(t, id, name, c)
}

// fenceAll is fence for every client of cs, all in tenant id's room name.
func (e *env) fenceAll(t testing.TB, id tenant.ID, name string, cs ...*websocket.Conn) {
	t.Helper()
	marker := "fence-" + time.Now().Format(time.RFC3339Nano)
	require.Equal(t, len(cs), e.publish(t, id, name, marker), "the fence reached the room's members only")
	for _, c := range cs {
		m := next(t, c)
		require.Equal(t, "message", m.Op, "message %+v", m)
		require.Equal(t, name, m.Room)
		require.JSONEq(t, `"`+marker+`"`, string(m.Data), "a message came before the fence")
	}
}

// clients returns the hub's connection count of tenant id.
func (e *env) clients(t testing.TB, id tenant.ID) int {
	t.Helper()
	n, err := e.hub.Clients(tenant.NewContext(t.Context(), id))
	require.NoError(t, err)
	return n
}

// logBuffer collects a logger's JSON records.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logger returns a logger writing to b.
func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(b, nil)) }

// mustRoom returns the room name of the tenant of ctx.
func mustRoom(t testing.TB, ctx context.Context, name string) ws.Room {
	t.Helper()
	r, err := ws.NewRoom(ctx, name)
	require.NoError(t, err)
	return r
}
