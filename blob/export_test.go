package blob

import (
	"context"
	"sync/atomic"

	gcblob "gocloud.dev/blob"

	"gocloud.dev/blob/driver"

	"github.com/rtmx-ai/tenancy/tenant"
)

// SetPurgeHook makes Purge call f after each deletion, until the test ends.
func SetPurgeHook(f func(key string)) (restore func()) {
	old := purgeDeleted
	purgeDeleted = f
	return func() { purgeDeleted = old }
}

// CiphertextSize and PlaintextSize expose the size arithmetic of format v1.
var (
	CiphertextSize = ciphertextSize
	PlaintextSize  = plaintextSize
)

// TenantDriver returns the driver of the view of ctx's tenant, for
// gocloud's drivertest, whose calls carry contexts of their own: each is
// given ctx's tenant, as a service's request context would carry it.
func (b *Buckets) TenantDriver(ctx context.Context) (driver.Bucket, error) {
	id, err := tenant.Require(ctx, "TenantDriver")
	if err != nil {
		return nil, err
	}
	d, err := b.driver(ctx, id)
	if err != nil {
		return nil, err
	}
	return withTenant{d, id}, nil
}

// withTenant is a driver.Bucket whose calls' contexts carry id.
type withTenant struct {
	driver.Bucket
	id tenant.ID
}

func (w withTenant) ctx(ctx context.Context) context.Context { return tenant.NewContext(ctx, w.id) }

func (w withTenant) Attributes(ctx context.Context, key string) (*driver.Attributes, error) {
	return w.Bucket.Attributes(w.ctx(ctx), key)
}

func (w withTenant) ListPaged(ctx context.Context, opts *driver.ListOptions) (*driver.ListPage, error) {
	return w.Bucket.ListPaged(w.ctx(ctx), opts)
}

func (w withTenant) NewRangeReader(ctx context.Context, key string, offset, length int64, opts *driver.ReaderOptions) (driver.Reader, error) {
	return w.Bucket.NewRangeReader(w.ctx(ctx), key, offset, length, opts)
}

func (w withTenant) NewTypedWriter(ctx context.Context, key, contentType string, opts *driver.WriterOptions) (driver.Writer, error) {
	return w.Bucket.NewTypedWriter(w.ctx(ctx), key, contentType, opts)
}

func (w withTenant) Copy(ctx context.Context, dstKey, srcKey string, opts *driver.CopyOptions) error {
	return w.Bucket.Copy(w.ctx(ctx), dstKey, srcKey, opts)
}

func (w withTenant) Delete(ctx context.Context, key string, opts *driver.DeleteOptions) error {
	return w.Bucket.Delete(w.ctx(ctx), key, opts)
}

func (w withTenant) SignedURL(ctx context.Context, key string, opts *driver.SignedURLOptions) (string, error) {
	return w.Bucket.SignedURL(w.ctx(ctx), key, opts)
}

// SetQuotaHook makes a write within its quota call f with "reserved"
// before it commits its object and "committed" after, until restore.
func SetQuotaHook(f func(stage string)) (restore func()) {
	old := quotaHook
	quotaHook = f
	return func() { quotaHook = old }
}

// CountTenantBucketOpens makes *n count the opening of tenants' buckets,
// until restore.
func CountTenantBucketOpens(n *atomic.Int64) (restore func()) {
	old := openTenantBucket
	openTenantBucket = func(ctx context.Context, u string) (*gcblob.Bucket, error) {
		n.Add(1)
		return old(ctx, u)
	}
	return func() { openTenantBucket = old }
}
