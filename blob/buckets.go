package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	gcblob "gocloud.dev/blob"
	"gocloud.dev/gcerrors"
	"golang.org/x/sync/errgroup"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

// rootPrefix is the prefix under which every tenant's objects are stored,
// each under rootPrefix + "<id>/".
const rootPrefix = "tenants/"

// TenantPrefix returns the prefix under which the objects of tenant id are
// stored in the platform's bucket: "tenants/<id>/". A tenant ID cannot hold
// a slash, a dot or anything else a key rule refuses, so no prefix is
// another's prefix.
func TenantPrefix(id tenant.ID) string { return rootPrefix + id.String() + "/" }

// Buckets is the platform's bucket, from which each tenant gets its own
// view ([Buckets.For]). It is safe for concurrent use. Never hand the
// bucket it was made from to tenant code: that one reaches every tenant.
type Buckets struct {
	raw   *gcblob.Bucket
	keys  *keys.Manager // nil only WithoutEncryption
	quota *Quotas       // nil: no quotas
	dir   TenantBuckets // nil: every tenant's objects are in raw

	mu     sync.Mutex // guards own, closed and pruned
	own    map[tenant.ID]*ownBucket
	closed bool
	pruned time.Time // when own was last swept of expired entries
}

// Option configures [Open] and [New].
type Option interface{ apply(*config) }

type config struct {
	plaintext bool
	quotas    *Quotas
	dir       TenantBuckets
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithoutEncryption stores objects as written, without client-side
// encryption; the keys.Manager may then be nil. Tenant prefixes and key
// validation stay. Use it only for objects that are public, or encrypted
// already, and only in buckets that hold no encrypted objects: the view
// would read those as their ciphertext.
func WithoutEncryption() Option {
	return optionFunc(func(c *config) { c.plaintext = true })
}

// Open opens the platform's bucket at urlstr, with gocloud.dev/blob's URL
// opener (see the package documentation for the schemes), and returns it
// as [Buckets]. km gives each tenant's stream cipher; it is required
// unless [WithoutEncryption] is given.
func Open(ctx context.Context, urlstr string, km *keys.Manager, opts ...Option) (*Buckets, error) {
	if err := checkKeys(km, opts); err != nil {
		return nil, err
	}
	raw, err := gcblob.OpenBucket(ctx, urlstr)
	if err != nil {
		return nil, fmt.Errorf("blob: open bucket: %w", err)
	}
	return New(raw, km, opts...)
}

// New returns [Buckets] over raw, a bucket opened already (by a driver's
// own constructor, such as s3blob.OpenBucket with a client of its own).
// Buckets.Close closes raw. km is as for [Open]. It fails on invalid
// [Quotas].
func New(raw *gcblob.Bucket, km *keys.Manager, opts ...Option) (*Buckets, error) {
	if raw == nil {
		return nil, errors.New("blob: New: nil bucket")
	}
	if err := checkKeys(km, opts); err != nil {
		return nil, err
	}
	var c config
	for _, o := range opts {
		o.apply(&c)
	}
	if c.quotas != nil {
		if err := c.quotas.validate(); err != nil {
			return nil, err
		}
	}
	b := &Buckets{raw: raw, quota: c.quotas, dir: c.dir, own: map[tenant.ID]*ownBucket{}}
	if !c.plaintext {
		b.keys = km
	}
	return b, nil
}

func checkKeys(km *keys.Manager, opts []Option) error {
	var c config
	for _, o := range opts {
		o.apply(&c)
	}
	if km == nil && !c.plaintext {
		return errors.New("blob: a keys.Manager is required to encrypt objects (or the option WithoutEncryption)")
	}
	return nil
}

// For returns the view of the bucket of the tenant of ctx: a gocloud
// bucket whose keys are under the tenant's prefix ([TenantPrefix]), every
// key validated ([ValidateKey]) and every object encrypted with the
// tenant's stream cipher. Without a tenant in ctx, it returns an error
// wrapping tenant.ErrNoTenant. With [WithTenantBuckets], the bucket is
// the tenant's own if it has one (under the same prefix there), else the
// platform's.
//
// The view is cheap: get one per request or job (the first For of a
// tenant with [WithTenantBuckets] looks its bucket up, and opens it). Its
// calls take a context of the view's tenant: without a tenant they fail
// with an error wrapping tenant.ErrNoTenant, with another tenant's with one
// wrapping tenant.ErrCrossTenant (both code PermissionDenied).
// Closing it releases nothing shared. The view offers no As (nothing of
// the platform's bucket is exposed, to it or to the Before* hooks of its
// options) and no signed URLs (code Unimplemented).
func (b *Buckets) For(ctx context.Context) (*gcblob.Bucket, error) {
	id, err := tenant.Require(ctx, "blob: For")
	if err != nil {
		return nil, err
	}
	tb, err := b.driver(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("blob: For: %w", err)
	}
	return gcblob.NewBucket(tb), nil
}

// driver returns the driver of the view of tenant id.
func (b *Buckets) driver(ctx context.Context, id tenant.ID) (*tenantBucket, error) {
	raw, err := b.bucketOf(ctx, id)
	if err != nil {
		return nil, err
	}
	return &tenantBucket{raw: raw, id: id, prefix: TenantPrefix(id), keys: b.keys, quota: b.quota}, nil
}

// Close closes the platform's bucket and the tenants' own buckets it
// opened. Views from For fail after it.
func (b *Buckets) Close() error {
	errs := b.closeOwn()
	if err := b.raw.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("blob: close: %w", err)
	}
	return nil
}

// ErrNotEmpty is wrapped by the error of [Buckets.Purge] when objects are
// still listed under the tenant's prefix after it deleted what it found
// (objects written meanwhile).
var ErrNotEmpty = errors.New("objects remain under the tenant's prefix")

// PurgeResult reports what [Buckets.Purge] did.
type PurgeResult struct {
	// Deleted is the number of objects this call deleted, as confirmed by
	// the storage; a run that resumes an interrupted one counts only its
	// own. A deletion in flight when the call was interrupted may have
	// happened unconfirmed, and is then counted by neither run.
	Deleted int
	// Pages is the number of list pages it read (the last one, which finds
	// the prefix empty, included).
	Pages int
}

// purgePageSize and purgeParallel bound a Purge: objects listed per page
// and deletions in flight.
const (
	purgePageSize = 1000
	purgeParallel = 8
)

// purgeDeleted, if set (by tests), is called after each deletion of Purge.
var purgeDeleted func(key string)

// Purge deletes every object under the prefix of tenant id (in its own
// bucket if it has one), whatever its key (objects no view would name
// included), a page at a time, then checks that the prefix lists empty;
// with [WithQuotas], it then records the tenant's usage as nothing
// ([Buckets.Reconcile]). It is resumable: run again after an
// interruption (an error, a cancelled context, a crash), it deletes what
// is left. Objects deleted by someone else meanwhile are not an error.
// It is an operation of the platform (deprovisioning), not of the tenant:
// it takes the tenant as an argument and ignores the context's.
//
// Purge deletes the objects, not their keys: the tenant's stream keys
// (and with them any copy of its objects elsewhere, such as in backups)
// are destroyed by keys.Manager.Shred.
func (b *Buckets) Purge(ctx context.Context, id tenant.ID) (PurgeResult, error) {
	var res PurgeResult
	if id.IsZero() {
		return res, fmt.Errorf("blob: Purge: %w: zero tenant ID", tenant.ErrInvalidID)
	}
	prefix := TenantPrefix(id)
	raw, err := b.bucketOf(ctx, id)
	if err != nil {
		return res, fmt.Errorf("blob: Purge tenant %s: %w", id, err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("blob: Purge tenant %s: %w", id, err)
		}
		// Always the first page: what was deleted is no longer listed, so
		// this needs no page token that a deletion could invalidate.
		objs, _, err := raw.ListPage(ctx, gcblob.FirstPageToken, purgePageSize, &gcblob.ListOptions{Prefix: prefix})
		if err != nil && !errors.Is(err, io.EOF) {
			return res, fmt.Errorf("blob: Purge tenant %s: list: %w", id, err)
		}
		res.Pages++
		if len(objs) == 0 {
			break
		}
		n, err := deleteAll(ctx, raw, prefix, objs)
		res.Deleted += n
		if err != nil {
			return res, fmt.Errorf("blob: Purge tenant %s: %w", id, err)
		}
	}
	objs, _, err := raw.ListPage(ctx, gcblob.FirstPageToken, 1, &gcblob.ListOptions{Prefix: prefix})
	if err != nil && !errors.Is(err, io.EOF) {
		return res, fmt.Errorf("blob: Purge tenant %s: verify: %w", id, err)
	}
	if len(objs) > 0 {
		return res, fmt.Errorf("blob: Purge tenant %s: %w", id, ErrNotEmpty)
	}
	if b.quota != nil {
		if _, err := b.Reconcile(ctx, id); err != nil {
			return res, err
		}
	}
	return res, nil
}

// Remains returns the keys (relative to the tenant's prefix, escaped for
// display by %q) of up to max objects under the prefix of tenant id, in
// its own bucket if it has one, whatever their keys: nothing once Purge
// has run. Deprovisioning asks it to verify its work; like Purge it is an
// operation of the platform and ignores the context's tenant.
func (b *Buckets) Remains(ctx context.Context, id tenant.ID, max int) ([]string, error) {
	if id.IsZero() {
		return nil, fmt.Errorf("blob: Remains: %w: zero tenant ID", tenant.ErrInvalidID)
	}
	if max < 1 {
		max = 1
	}
	prefix := TenantPrefix(id)
	raw, err := b.bucketOf(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("blob: Remains of tenant %s: %w", id, err)
	}
	objs, _, err := raw.ListPage(ctx, gcblob.FirstPageToken, max, &gcblob.ListOptions{Prefix: prefix})
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("blob: Remains of tenant %s: list: %w", id, err)
	}
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		out = append(out, strings.TrimPrefix(o.Key, prefix))
	}
	return out, nil
}

// deleteAll deletes objs from raw, a few at a time, and returns how many
// it deleted.
func deleteAll(ctx context.Context, raw *gcblob.Bucket, prefix string, objs []*gcblob.ListObject) (int, error) {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(purgeParallel)
	deleted := make([]bool, len(objs))
	for i, o := range objs {
		if !strings.HasPrefix(o.Key, prefix) {
			return 0, fmt.Errorf("the bucket listed a key outside the prefix asked for")
		}
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err // interrupted: what is left is for the next run
			}
			err := raw.Delete(gctx, o.Key)
			switch {
			case err == nil:
				deleted[i] = true
				if purgeDeleted != nil {
					purgeDeleted(o.Key)
				}
			case gcerrors.Code(err) == gcerrors.NotFound:
			default:
				return fmt.Errorf("delete: %w", err)
			}
			return nil
		})
	}
	err := g.Wait()
	n := 0
	for _, d := range deleted {
		if d {
			n++
		}
	}
	return n, err
}
