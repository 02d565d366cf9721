// Package admit is admission control for per-tenant connection pools.
//
// The store opens one pgxpool.Pool per tenant, each logged in as that
// tenant's PostgreSQL role. pgxpool caps each pool on its own; nothing caps
// them together. A [Controller] does: it keeps the number of open server
// connections across all pools at or below [Config.MaxConns], queues dials
// in arrival order when the cap is reached, asks other tenants' pools to
// close idle connections for a waiting one, limits the rate of new
// connections, and counts what happens ([Controller.Stats]).
//
// # Wiring
//
// Each tenant pool's pgx.ConnConfig.DialFunc is replaced by
// [Controller.Dial] around the original. The wrapped dial takes a slot, waits
// for the connect rate limiter, then dials; the connection it returns gives
// the slot back when it is closed, once, whichever path closes it. A slot is
// therefore held by every open socket and by every dial in progress, and by
// nothing else.
//
// pgxpool creates connections in a background goroutine whose context keeps
// the values of the acquiring request's context but not its cancellation.
// The store calls [WithRequest] on the request context before
// pool.Acquire; the wrapped dial finds it among its context's values and
// stops waiting when that request gives up. The pool registers an evictor
// with [Controller.Register] and calls [Controller.Touch] on every acquire.
// A waiting dial asks the evictors of other keys first (least recently
// active first, connections at least MinResidency old), then its own key's:
// a pool may start a connection while one of its own goes back idle, and
// when that key holds every slot only closing its idle one lets the new one
// in.
//
// # Errors
//
// [New] reports a Config field that breaks its rule, naming the field. A
// dial that stops waiting returns an error wrapping the context error that
// stopped it (errors.Is(err, context.Canceled) or
// context.DeadlineExceeded); a dial that fails returns the dial function's
// error unchanged.
//
// # Security
//
// Keys are tenant IDs. They are kept only as map keys and are never put in
// an error, so an error returned to one tenant's request cannot name
// another tenant. A connection keeps the PostgreSQL role it was opened with:
// a slot freed by one tenant is used by another tenant's pool to open a new
// connection, never to hand over an existing one.
package admit
