// Package ws serves WebSocket rooms scoped to the tenant, on
// github.com/coder/websocket: a client joins rooms of its own tenant
// only, receives what is published there, and is disconnected when its
// token expires or its tenant stops being active.
//
// A [Hub] is an http.Handler that upgrades a request to a connection.
// Mount it behind authz's Middleware, which authenticates the upgrade
// like any other request (bearer token, tenant of the path or host,
// tenant active, roles, rate limit):
//
//	hub, err := ws.NewHub(cfg) // cfg from ws.DefaultConfig, with a Directory
//	defer hub.Close()
//	mux.Handle("GET /t/{tenant}/ws", mw.Handler(hub))
//
// or, for browsers, which cannot set an Authorization header on a
// WebSocket, behind [Authenticate], which also reads the token from the
// subprotocol list:
//
//	mux.Handle("GET /t/{tenant}/ws", ws.Authenticate(mw, hub))
//
// The service publishes with a [Room], which only [NewRoom] makes, from
// a context carrying the tenant (a request's, or a job's):
//
//	room, err := ws.NewRoom(r.Context(), "req-deploy-004")
//	n, err := hub.Publish(r.Context(), room, event)
//
// # Protocol
//
// Every message is a text frame holding one JSON object. A client sends:
//
//	{"op":"join","room":"x"}               join room x of its tenant
//	{"op":"leave","room":"x"}              leave it
//	{"op":"publish","room":"x","data":V}   send V to room x (see below)
//
// and nothing else: a message with any other member (such as "tenant"),
// another op, trailing data or invalid JSON is answered with an error
// and changes nothing; the connection stays open. Member names match
// case-insensitively and a repeated member's last value counts, as with
// encoding/json. Room names follow the rules of NewRoom. The hub sends:
//
//	{"op":"joined","room":"x"}             the client is in x: it gets every message published after this
//	{"op":"left","room":"x"}               the client is not in x
//	{"op":"message","room":"x","data":V}   V was published to x
//	{"op":"error","code":C,"detail":D}     a message was refused
//
// with C one of bad_message, unknown_op, invalid_room, too_many_rooms,
// not_joined, forbidden, closed; D is a fixed text (for invalid_room, the
// rule broken) that never echoes what the client sent.
//
// A client publishes only to a room it has joined, and only if its
// principal has Config.PublishPermission (authz.PermWrite by default:
// editors and owners); every member of the room receives the message,
// the sender too. With an empty PublishPermission only the service
// publishes.
//
// # Disconnection
//
// The hub closes a connection with a status code and a fixed reason:
// [StatusTokenExpired] (4001) when the principal's token expires (at
// Principal.Expires; a token admitted within the verifier's leeway after
// it is closed at once); [StatusTenantNotActive] (4003) for every
// connection of a tenant that Config.Directory, asked every
// CheckInterval, does not report active; 1008 (policy violation) for a
// connection over the tenant's MaxClientsPerTenant (accepted, then
// closed), a client more than SendQueue messages behind or not taking a
// message within WriteTimeout, or one sending faster than MessageRate; 1009 for a frame over ReadLimit; 1003 for a
// binary frame; 1001 when the hub is closed. A slow client never slows
// a publisher or another client: Publish only queues. The hub sends no
// pings: a connection whose peer vanished is found by the next write
// that times out, and ends at its token's expiry in any case.
//
// # Errors
//
// [NewRoom] fails with an error wrapping [ErrInvalidRoom], naming the
// rule, or tenant.ErrNoTenant. [Hub.Publish] fails with errors wrapping
// tenant.ErrNoTenant (no tenant in its context), tenant.ErrCrossTenant
// (the room is another tenant's than the context's) or [ErrClosed].
// [NewHub] fails with [ErrInvalidConfig], naming the field. The upgrade
// answers with authz's problems: 500 without a principal (the Hub was
// mounted without the Middleware), 503 after Close; websocket's Accept
// answers 403 to a foreign Origin and 426 to a request that is not an
// upgrade.
//
// # Security
//
// Rooms are kept per tenant, a connection's tenant is its principal's,
// and a room name is local: there is no global room name, so no name a
// client sends ("b/x", "../b", "tenant_b:x", or anything else) reaches
// another tenant's room, and nothing in a message can name a tenant.
// The same name in two tenants is two rooms. Room names are plain ASCII,
// so look-alike letters from other scripts are refused rather than
// confused.
//
// Only the Middleware admits an upgrade: the Hub refuses a request whose
// context carries no principal. The Origin of a browser's upgrade must be
// the request's host, or match Config.OriginPatterns; without that check
// any web page could open a connection with a visitor's cookies.
// Browsers cannot send an Authorization header on a WebSocket: mount the
// Hub with [Authenticate], which also takes the token from the
// subprotocol list ("bearer.<token>" beside [Subprotocol]).
//
// A suspended tenant keeps its connections until the next check (at most
// about CheckInterval, plus the Directory's own caching); while the
// Directory fails, connections are kept and the failure logged, each
// still ending when its token expires. Logs (Config.Logger) carry the
// tenant, status and reason of each connection closed, never tokens,
// room names or message data.
//
// The Middleware's concurrency cap (authz.Config.Concurrency), if set,
// counts a connection as one request in flight for as long as it is
// open; MaxClientsPerTenant is the cap meant for connections.
package ws
