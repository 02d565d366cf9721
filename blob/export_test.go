package blob

import (
	"context"

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
	return &tenantBucket{raw: b.raw, id: id, prefix: TenantPrefix(id), keys: b.keys}, nil
}
