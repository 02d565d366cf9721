package ws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Hub is the rooms of every tenant and the connections in them. It is an
// http.Handler that upgrades a request to a WebSocket connection of the
// request's principal; mount it behind authz's Middleware:
//
//	mux.Handle("GET /t/{tenant}/ws", mw.Handler(hub))
//
// Rooms are kept per tenant, and a connection's tenant is its principal's:
// a client can join, and receive, only its own tenant's rooms. A Hub is
// safe for concurrent use; Close it to end every connection.
type Hub struct {
	cfg    Config
	log    *slog.Logger
	accept websocket.AcceptOptions
	ctx    context.Context // ends with Close; bounds Directory calls
	cancel context.CancelFunc
	done   chan struct{}  // closed when the checker has returned
	conns  sync.WaitGroup // one per ServeHTTP past registration

	mu      sync.RWMutex // guards tenants, closed and every client's rooms
	tenants map[tenant.ID]*tenantClients
	closed  bool
}

var _ http.Handler = (*Hub)(nil)

// tenantClients is one tenant's connections and rooms.
type tenantClients struct {
	clients map[*client]struct{}
	rooms   map[string]map[*client]struct{}
}

// NewHub checks cfg and returns a Hub, whose goroutine asks cfg.Directory
// about the tenants with connections every cfg.CheckInterval until Close.
func NewHub(cfg Config) (*Hub, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	cfg.OriginPatterns = append([]string(nil), cfg.OriginPatterns...)
	h := &Hub{
		cfg:     cfg,
		log:     cfg.Logger,
		accept:  websocket.AcceptOptions{OriginPatterns: cfg.OriginPatterns, Subprotocols: []string{Subprotocol}},
		done:    make(chan struct{}),
		tenants: map[tenant.ID]*tenantClients{},
	}
	if h.log == nil {
		h.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	go h.checkLoop()
	return h, nil
}

// Publish sends data, marshalled to JSON, to every client in room, as
// {"op":"message","room":<name>,"data":<data>}, and returns how many
// clients it was queued for. It does not wait for them: a client whose
// queue is full (Config.SendQueue) is disconnected instead. ctx must
// carry room's tenant: an error wraps tenant.ErrNoTenant if it carries
// none and tenant.ErrCrossTenant if it carries another (the zero Room is
// no tenant's). After Close, the error wraps [ErrClosed].
func (h *Hub) Publish(ctx context.Context, room Room, data any) (int, error) {
	if _, err := tenant.RequireSame(ctx, "ws.Publish", room.tenant); err != nil {
		return 0, err
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return 0, fmt.Errorf("ws: Publish: data: %w", err)
	}
	return h.publish(room.tenant, room.name, encode(reply{Op: opMessage, Room: room.name, Data: raw}))
}

// Clients returns the number of connections of the tenant of ctx, or an
// error wrapping tenant.ErrNoTenant.
func (h *Hub) Clients(ctx context.Context) (int, error) {
	id, err := tenant.Require(ctx, "ws.Clients")
	if err != nil {
		return 0, err
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if tc := h.tenants[id]; tc != nil {
		return len(tc.clients), nil
	}
	return 0, nil
}

// Close ends every connection with status 1001 (going away), stops asking
// the Directory, and returns once the connections' handlers have returned
// (each close handshake takes at most about 10 s). Upgrades after Close
// are answered 503. Close returns nil; calling it again does nothing.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	var all []*client
	for _, tc := range h.tenants {
		for c := range tc.clients {
			all = append(all, c)
		}
	}
	h.mu.Unlock()
	h.cancel()
	<-h.done
	for _, c := range all {
		c.kill(websocket.StatusGoingAway, "server shutting down")
	}
	h.conns.Wait()
	return nil
}

// errNoPrincipal is the error of an upgrade that did not pass the
// middleware.
var errNoPrincipal = errors.New("ws: no principal in the request context: mount the Hub behind authz's Middleware")

// ServeHTTP upgrades r to a WebSocket connection of r's principal (put
// there by authz's Middleware) and serves it until it closes. A request
// without a principal is answered 500, never upgraded; after Close, 503.
// An Origin header that is neither r's host nor matches
// Config.OriginPatterns is answered 403. A connection beyond the tenant's
// MaxClientsPerTenant is accepted and closed at once with status 1008.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, ok := authz.FromContext(r.Context())
	id, hasTenant := tenant.FromContext(r.Context())
	if !ok || !hasTenant || p.Tenant() != id {
		h.log.ErrorContext(r.Context(), errNoPrincipal.Error())
		authz.WriteError(w, errNoPrincipal)
		return
	}
	c := &client{
		hub:    h,
		p:      p,
		tenant: id,
		limit:  rate.NewLimiter(rate.Limit(h.cfg.MessageRate), h.cfg.MessageBurst),
		send:   make(chan []byte, h.cfg.SendQueue),
		quit:   make(chan struct{}),
		rooms:  map[string]struct{}{},
	}
	admitted, err := h.register(c)
	if err != nil {
		authz.WriteError(w, fmt.Errorf("%w: %w", authz.ErrUnavailable, err))
		return
	}
	defer h.conns.Done()
	conn, err := websocket.Accept(w, r, &h.accept)
	if err != nil { // Accept answered (403 for a foreign origin)
		h.remove(c)
		return
	}
	if !admitted {
		h.logClose(id, websocket.StatusPolicyViolation, "too many connections")
		_ = conn.Close(websocket.StatusPolicyViolation, "too many connections of the tenant")
		return
	}
	conn.SetReadLimit(h.cfg.ReadLimit)
	c.conn = conn
	c.serve(r.Context())
}

// register adds c to its tenant's clients if the tenant is below its
// cap, and counts c's handler in h.conns whether it is admitted or not.
func (h *Hub) register(c *client) (admitted bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false, ErrClosed
	}
	h.conns.Add(1)
	tc := h.tenants[c.tenant]
	if tc == nil {
		tc = &tenantClients{clients: map[*client]struct{}{}, rooms: map[string]map[*client]struct{}{}}
		h.tenants[c.tenant] = tc
	}
	if len(tc.clients) >= h.cfg.MaxClientsPerTenant {
		if len(tc.clients) == 0 {
			delete(h.tenants, c.tenant)
		}
		return false, nil
	}
	tc.clients[c] = struct{}{}
	return true, nil
}

// remove takes c out of its tenant's clients and rooms.
func (h *Hub) remove(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	tc := h.tenants[c.tenant]
	if tc == nil {
		return
	}
	for name := range c.rooms {
		members := tc.rooms[name]
		delete(members, c)
		if len(members) == 0 {
			delete(tc.rooms, name)
		}
	}
	clear(c.rooms)
	delete(tc.clients, c)
	if len(tc.clients) == 0 {
		delete(h.tenants, c.tenant)
	}
}

// join puts c into its tenant's room name.
func (h *Hub) join(c *client, name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	tc := h.tenants[c.tenant]
	if tc == nil {
		return errGone
	}
	if _, ok := tc.clients[c]; !ok {
		return errGone
	}
	if _, in := c.rooms[name]; in {
		return nil
	}
	if len(c.rooms) >= h.cfg.MaxRoomsPerClient {
		return errTooManyRooms
	}
	members := tc.rooms[name]
	if members == nil {
		members = map[*client]struct{}{}
		tc.rooms[name] = members
	}
	members[c] = struct{}{}
	c.rooms[name] = struct{}{}
	return nil
}

// leave takes c out of its tenant's room name.
func (h *Hub) leave(c *client, name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, in := c.rooms[name]; !in {
		return
	}
	delete(c.rooms, name)
	if tc := h.tenants[c.tenant]; tc != nil {
		members := tc.rooms[name]
		delete(members, c)
		if len(members) == 0 {
			delete(tc.rooms, name)
		}
	}
}

// member reports whether c is in room name.
func (h *Hub) member(c *client, name string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	_, in := c.rooms[name]
	return in
}

// publish queues frame for every client in tenant id's room name and
// disconnects those whose queue is full.
func (h *Hub) publish(id tenant.ID, name string, frame []byte) (int, error) {
	var slow []*client
	n := 0
	h.mu.RLock()
	if h.closed {
		h.mu.RUnlock()
		return 0, fmt.Errorf("ws: Publish: %w", ErrClosed)
	}
	if tc := h.tenants[id]; tc != nil {
		for c := range tc.rooms[name] {
			select {
			case c.send <- frame:
				n++
			default:
				slow = append(slow, c)
			}
		}
	}
	h.mu.RUnlock()
	for _, c := range slow {
		c.kill(websocket.StatusPolicyViolation, "too slow: send queue full")
	}
	return n, nil
}

// checkLoop asks the Directory about every tenant with connections, every
// CheckInterval, until Close.
func (h *Hub) checkLoop() {
	defer close(h.done)
	t := time.NewTicker(h.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
			h.checkTenants()
		}
	}
}

// checkTenants disconnects the clients of every tenant the Directory does
// not report active. A Directory that fails (other than not knowing the
// tenant) leaves the connections, to be asked again at the next check.
func (h *Hub) checkTenants() {
	h.mu.RLock()
	ids := make([]tenant.ID, 0, len(h.tenants))
	for id := range h.tenants {
		ids = append(ids, id)
	}
	h.mu.RUnlock()
	for _, id := range ids {
		if h.ctx.Err() != nil {
			return
		}
		info, err := h.ask(id)
		switch {
		case err == nil && info.State == tenant.StateActive:
			continue
		case err != nil && !errors.Is(err, store.ErrUnknownTenant):
			if h.ctx.Err() == nil {
				h.log.LogAttrs(h.ctx, slog.LevelWarn, "ws: directory failed; connections kept until the next check",
					slog.Any("tenant_id", id), slog.String("error", err.Error()))
			}
			continue
		}
		h.mu.RLock()
		var gone []*client
		if tc := h.tenants[id]; tc != nil {
			for c := range tc.clients {
				gone = append(gone, c)
			}
		}
		h.mu.RUnlock()
		for _, c := range gone {
			c.kill(StatusTenantNotActive, "tenant not active")
		}
	}
}

// ask asks the Directory about tenant id, within CheckInterval. A
// Directory that panics is one that failed: the panic would otherwise end
// the process from the checker's goroutine.
func (h *Hub) ask(id tenant.ID) (info tenant.Info, err error) {
	ctx, cancel := context.WithTimeout(tenant.NewContext(h.ctx, id), h.cfg.CheckInterval)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the directory panicked: %v", p)
		}
	}()
	return h.cfg.Directory.Tenant(ctx, id)
}

// logClose records a connection closed by the hub.
func (h *Hub) logClose(id tenant.ID, code websocket.StatusCode, reason string) {
	h.log.LogAttrs(context.Background(), slog.LevelInfo, "ws: connection closed",
		slog.Any("tenant_id", id), slog.Int("status", int(code)), slog.String("reason", reason))
}
