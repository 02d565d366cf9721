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
// gocloud's drivertest.
func (b *Buckets) TenantDriver(ctx context.Context) (driver.Bucket, error) {
	id, err := tenant.Require(ctx, "TenantDriver")
	if err != nil {
		return nil, err
	}
	return b.driver(ctx, id)
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
