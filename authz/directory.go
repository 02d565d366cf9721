package authz

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Directory tells the middleware what the control plane records of a
// tenant, to refuse tenants that are not active. *store.Admin satisfies
// it; request handling, which must not hold an Admin, uses
// [StoreDirectory] over a *store.DB. A tenant the directory does not know
// is reported with an error wrapping store.ErrUnknownTenant (403); any
// other error fails the request with 503.
type Directory interface {
	Tenant(ctx context.Context, id tenant.ID) (tenant.Info, error)
}

var _ Directory = (*store.Admin)(nil)

// StoreDirectory returns the Directory of db: db.Tenant, asked with a
// context carrying the tenant.
func StoreDirectory(db *store.DB) Directory { return dbDirectory{db} }

type dbDirectory struct{ db *store.DB }

func (d dbDirectory) Tenant(ctx context.Context, id tenant.ID) (tenant.Info, error) {
	return d.db.Tenant(tenant.NewContext(ctx, id))
}

// directoryTimeout bounds one question to the Directory.
const directoryTimeout = 5 * time.Second

// dirCache remembers the state of tenants for ttl, up to max of them.
type dirCache struct {
	dir   Directory
	ttl   time.Duration
	max   int
	now   func() time.Time
	group singleflight.Group

	mu      sync.Mutex // guards entries
	entries map[tenant.ID]dirEntry
}

type dirEntry struct {
	state   tenant.State // "" for a tenant the directory does not know
	expires time.Time
}

func newDirCache(dir Directory, ttl time.Duration, max int) *dirCache {
	return &dirCache{dir: dir, ttl: ttl, max: max, now: time.Now, entries: make(map[tenant.ID]dirEntry)}
}

// active returns nil if tenant id is active, and otherwise an error
// wrapping ErrTenantNotActive or ErrUnavailable.
func (c *dirCache) active(ctx context.Context, id tenant.ID) error {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[id]
	c.mu.Unlock()
	if !ok || !now.Before(e.expires) {
		ch := c.group.DoChan(id.String(), func() (_ any, err error) {
			// A Directory that panics fails the requests waiting (503);
			// under DoChan a panic would end the process.
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("the directory panicked: %v", p)
				}
			}()
			// Shared by the requests waiting for it: not ended by the
			// first one's cancellation, but bounded.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), directoryTimeout)
			defer cancel()
			info, err := c.dir.Tenant(ctx, id)
			switch {
			case errors.Is(err, store.ErrUnknownTenant):
				info.State = ""
			case err != nil:
				return nil, err
			}
			e := dirEntry{state: info.State, expires: c.now().Add(c.ttl)}
			c.put(id, e)
			return e, nil
		})
		// A request whose context ends stops waiting; the question goes
		// on for the others.
		var res singleflight.Result
		select {
		case res = <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: the tenant directory did not answer before the request ended: %w", ErrUnavailable, ctx.Err())
		}
		if res.Err != nil {
			return fmt.Errorf("%w: the tenant directory failed", ErrUnavailable)
		}
		e = res.Val.(dirEntry)
	}
	switch e.state {
	case tenant.StateActive:
		return nil
	case "":
		return refuse("tenant not active: not in the directory", ErrForbidden, ErrTenantNotActive)
	default:
		return refuse("tenant not active: "+string(e.state), ErrForbidden, ErrTenantNotActive)
	}
}

func (c *dirCache) put(id tenant.ID, e dirEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[id]; !ok && len(c.entries) >= c.max {
		for k := range c.entries { // any one: map iteration starts anywhere
			delete(c.entries, k)
			break
		}
	}
	c.entries[id] = e
}
