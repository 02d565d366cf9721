package tenanttest

import (
	"context"
	"net/http"
	"time"

	gcblob "gocloud.dev/blob"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// A Harness is what a service gives the suite: its tenants, its handler,
// its routes, and the SDK objects it runs on. Tenants, Handler and Plant
// are required; every other field enables the checks that need it, and a
// check whose field is zero is skipped with a message naming the field
// (or fails, with Strict).
type Harness struct {
	// Tenants are two or more provisioned, active tenants of the service.
	// The suite plants its own canaries in them and leaves them there.
	Tenants []Tenant

	// Handler is the service's whole HTTP handler, authentication
	// included, as its clients reach it. The suite serves it on a loopback
	// httptest.Server for the WebSocket checks.
	Handler http.Handler

	// Plant writes a canary, a unique string, into the tenant's data
	// through the service's own code (a row, an object, an audit entry, a
	// setting: as many kinds as the service keeps), and returns where it
	// put it. The suite calls it many times per tenant, each time with a
	// new canary, and expects each call to leave the earlier ones alone.
	// ctx carries tn's tenant (tenant.FromContext). A canary is printable
	// ASCII; the database check's holds SQL metacharacters (' ; --), which
	// the service must store as given.
	Plant func(ctx context.Context, tn Tenant, canary string) (Planted, error)

	// Routes are the service's routes that touch tenant data. Each is
	// called as its own tenant (it must answer 2xx, and a Reads route
	// must return the canary), then replayed with another tenant's token
	// against the first tenant's path and values, and with the one's token
	// against the other's values: no replay may answer a status that grants
	// access (1xx, 2xx, 3xx) or carry another tenant's canary in its body
	// or headers, and the planted data must read back unchanged after it
	// (through every Reads route whose path names a planted thing, or the
	// first Reads route if none does). Each route gets fresh canaries, so
	// a route that changes or deletes the planted data is fine.
	Routes []Route

	// WebSocket, if set, is the service's feed of changes per tenant.
	WebSocket *WebSocket

	// DB, if set, is the service's store.DB: the suite checks that a query
	// without a tenant in its context fails with tenant.ErrNoTenant, and,
	// with Tables, what each tenant's session can read.
	DB *store.DB
	// Tables are the service's tables (unqualified names) into which Plant
	// writes the canary in clear text. Read as each tenant through DB they
	// hold its canary and no other's; named with another tenant's schema
	// (tenant_<id>.<table>) they fail or hold nothing of that tenant's.
	Tables []string

	// Buckets, if set, is the service's tenant buckets: each tenant's view
	// must not reach another's objects (Planted.Objects), by key, by
	// listing or by a hostile key (../, absolute, encoded).
	Buckets *blob.Buckets
	// BucketView, if set, is how the service's own code gets the bucket
	// view of the tenant of ctx, where that is not Buckets.For (a view
	// the service wraps or makes itself). The object checks use it in
	// place of Buckets.For; either field enables them. The suite closes
	// every view it gets.
	BucketView func(ctx context.Context) (*gcblob.Bucket, error)
	// Raw, if set, is the bucket under Buckets: no object under a
	// tenant's prefix may hold its canary in clear text.
	Raw *gcblob.Bucket

	// Keys, if set, is the service's key manager: data sealed for one
	// tenant must not open for another.
	Keys *keys.Manager

	// Audit, if set, is the service's audit log: each tenant's export and
	// verification show its own entries only, and every tenant's chain
	// verifies.
	Audit *audit.Log

	// Quota, if set, is how the service limits each tenant: one tenant
	// driven over its limit is refused with 429, and the others are not.
	Quota *Quota

	// Strict makes a check whose field is zero fail instead of skip: set
	// it where every part is meant to be checked.
	Strict bool

	// Timeout bounds each check (30 s if zero).
	Timeout time.Duration
}

// A Tenant is one of the service's tenants, with a way to act as it.
type Tenant struct {
	// ID is the tenant's ID.
	ID tenant.ID
	// Token returns a bearer token for a member of the tenant holding
	// role; "" asks for the most privileged role the harness has. A token
	// that is a JWS (three dot-separated segments) is also replayed with
	// its signature changed, which must reach nothing.
	Token func(role string) (string, error)
}

// Planted says where Plant put a canary.
type Planted struct {
	// Values fill the route templates: a path's {name} is Values[name]
	// (the ID of the row made, the name of the object put, ...); {tenant}
	// is the tenant's ID and needs no value. No value may hold the
	// canary: Setup refuses it.
	Values map[string]string
	// Objects are the keys, in the tenant's own bucket view, of objects
	// whose content holds the canary.
	Objects []string
}

// A Route is one route of the service that touches tenant data.
type Route struct {
	// Method is the HTTP method.
	Method string
	// Path is the path template, such as "/t/{tenant}/requirements/{req}":
	// {tenant} is the tenant's ID, any other {name} a Planted value.
	Path string
	// Body, if set, makes the request body and its content type for a
	// tenant's planted values (nil: no body). A replay with another
	// tenant's values gets the body made from those. The body names
	// things by their IDs: Setup refuses one holding the canary.
	Body func(p Planted) (contentType string, body []byte)
	// Role is the role the route needs ("" for Tenant.Token's default).
	Role string
	// Reads says a 2xx answer of its own tenant carries the canary (a
	// GET of a planted row); the suite requires it.
	Reads bool
}

// WebSocket describes the service's per-tenant feed.
type WebSocket struct {
	// Path is the upgrade path template, such as "/t/{tenant}/ws"; it
	// may hold no placeholder but {tenant}. The suite connects with a
	// token of Tenant.Token("").
	Path string
	// Join are the text messages a client sends after connecting to
	// receive the tenant's changes, such as {"op":"join","room":"changes"}.
	Join []string
	// Joined reports whether msg is the service's confirmation of the
	// i-th Join message (nil: the suite waits for no confirmation). The
	// suite plants only after every Join is confirmed.
	Joined func(i int, msg []byte) bool
}

// Quota describes how to drive a tenant over its limit.
type Quota struct {
	// Route is the route sent again and again (its Reads and Body apply).
	Route Route
	// Requests is how many requests at most the suite sends, as
	// Harness.Tenants[0], before it expects a 429 with Retry-After; then
	// each other tenant's one request must answer 2xx.
	Requests int
}
