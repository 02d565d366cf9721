package blob

import (
	"context"
	"errors"
	"fmt"
	"time"

	gcblob "gocloud.dev/blob"

	"github.com/rtmx-ai/tenancy/tenant"
)

// TenantBuckets says which tenants have a bucket of their own, for
// [WithTenantBuckets]. *store.Blobs ([store.DB.Blobs]) reads what
// store.Admin.SetTenantBucket recorded in the control plane.
type TenantBuckets interface {
	// TenantBucket returns the URL of the bucket of the tenant of ctx's
	// own, or "" if its objects are in the platform's bucket.
	TenantBucket(ctx context.Context) (string, error)
}

// WithTenantBuckets keeps the objects of each tenant that has a bucket of
// its own, as dir says, in that bucket: [Buckets.For], Purge and
// Reconcile use it, under the same prefix (tenants/<id>/) as in the
// platform's, so that a URL that names the platform's bucket by mistake
// still keeps tenants apart. A tenant's bucket is looked up on its first
// use and opened (by URL, with gocloud's default URL mux) once, then kept
// until [Buckets.Close]; that a tenant has none is remembered for a
// minute. Record a tenant's bucket before it stores anything: objects do
// not move, and a Buckets that has opened a tenant's bucket keeps using it.
func WithTenantBuckets(dir TenantBuckets) Option {
	return optionFunc(func(c *config) { c.dir = dir })
}

// ownBucketTTL is how long the lookup of a tenant without a bucket of its
// own is remembered.
const ownBucketTTL = time.Minute

// ownBucket is the lookup of one tenant's bucket.
type ownBucket struct {
	ready  chan struct{}  // closed when the lookup is done
	bucket *gcblob.Bucket // nil: the platform's
	err    error
	until  time.Time // for the platform's: when to look again
}

// openTenantBucket opens a tenant's bucket by URL (a variable for tests).
var openTenantBucket = gcblob.OpenBucket

var errClosed = errors.New("blob: Buckets is closed")

// bucketOf returns the bucket that holds tenant id's objects.
func (b *Buckets) bucketOf(ctx context.Context, id tenant.ID) (*gcblob.Bucket, error) {
	if b.dir == nil {
		return b.raw, nil
	}
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, errClosed
		}
		e := b.own[id]
		if e == nil {
			e = &ownBucket{ready: make(chan struct{})}
			b.own[id] = e
			b.prune()
			b.mu.Unlock()
			e.bucket, e.err = b.lookup(ctx, id)
			e.until = time.Now().Add(ownBucketTTL)
			close(e.ready)
			if e.err != nil {
				b.forget(id, e)
				return nil, e.err
			}
			return b.rawOr(e.bucket), nil
		}
		b.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		switch {
		case e.err != nil && ctx.Err() == nil && (errors.Is(e.err, context.Canceled) || errors.Is(e.err, context.DeadlineExceeded)):
			// The lookup of another caller was cancelled: look again.
		case e.err != nil:
			return nil, e.err
		case e.bucket != nil || time.Now().Before(e.until):
			return b.rawOr(e.bucket), nil
		default:
			b.forget(id, e) // expired: look again
		}
	}
}

func (b *Buckets) rawOr(own *gcblob.Bucket) *gcblob.Bucket {
	if own != nil {
		return own
	}
	return b.raw
}

// forget removes e, the entry of id, if it is still there.
func (b *Buckets) forget(id tenant.ID, e *ownBucket) {
	b.mu.Lock()
	if b.own[id] == e {
		delete(b.own, id)
	}
	b.mu.Unlock()
}

// prune drops the expired lookups of tenants without a bucket of their
// own, once per ownBucketTTL, so that own holds the tenants of about one
// TTL's requests and those with buckets. The caller holds b.mu.
func (b *Buckets) prune() {
	now := time.Now()
	if now.Sub(b.pruned) < ownBucketTTL {
		return
	}
	b.pruned = now
	for id, e := range b.own {
		select {
		case <-e.ready:
			if e.bucket == nil && e.err == nil && now.After(e.until) {
				delete(b.own, id)
			}
		default:
		}
	}
}

// lookup asks dir for tenant id's bucket and opens it.
func (b *Buckets) lookup(ctx context.Context, id tenant.ID) (*gcblob.Bucket, error) {
	u, err := b.dir.TenantBucket(tenant.NewContext(ctx, id))
	if err != nil {
		return nil, fmt.Errorf("look up the bucket of tenant %s: %w", id, err)
	}
	if u == "" {
		return nil, nil
	}
	bkt, err := openTenantBucket(ctx, u)
	if err != nil {
		// The URL is the platform's configuration: it is not repeated.
		return nil, fmt.Errorf("open the bucket of tenant %s: %w", id, err)
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		_ = bkt.Close()
		return nil, errClosed
	}
	return bkt, nil
}

// closeOwn closes the tenants' buckets and marks b closed.
func (b *Buckets) closeOwn() []error {
	b.mu.Lock()
	b.closed = true
	own := b.own
	b.own = map[tenant.ID]*ownBucket{}
	b.mu.Unlock()
	var errs []error
	for _, e := range own {
		<-e.ready
		if e.bucket != nil {
			errs = append(errs, e.bucket.Close())
		}
	}
	return errs
}
