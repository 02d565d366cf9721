package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"time"

	gcblob "gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// ErrQuotaExceeded is wrapped by the error of a write, copy or overwrite
// that would take a tenant past a limit of its quota (gocloud code
// ResourceExhausted): a [*QuotaError], which names the limit, what the
// tenant has and the limit. Nothing of the refused write is stored. It is
// tenant.ErrQuotaExceeded, as are store.ErrBlobQuotaExceeded (where quotas
// are accounted) and ratelimit.ErrQuotaExceeded.
var ErrQuotaExceeded = tenant.ErrQuotaExceeded

// QuotaError reports a change refused by a tenant's quota. It is
// store.BlobQuotaError; its Limit is "bytes" or "objects".
type QuotaError = store.BlobQuotaError

// UsageStore keeps the tenants' usage of object storage and their own
// limits, for [WithQuotas]. *store.Blobs ([store.DB.Blobs]) is the one of
// the control plane. Its methods take the tenant from the context; see
// store.Blobs for the contract of each.
type UsageStore interface {
	// Change makes change c of an object within the tenant's quota, and
	// records it.
	Change(ctx context.Context, c store.BlobChange) error
	// Usage returns the tenant's account, with limits by tier.
	Usage(ctx context.Context, limits map[tenant.Tier]store.BlobLimits) (store.BlobAccount, error)
	// Reconcile records what count finds in storage as the tenant's usage.
	Reconcile(ctx context.Context, count func(context.Context) (store.BlobUsage, error)) (store.BlobReconciliation, error)
}

var _ UsageStore = (*store.Blobs)(nil)

// Quotas are per-tenant limits of object storage, turned on by
// [WithQuotas]. Make them with [DefaultQuotas] and change what needs to
// differ: zero values are limits of nothing, not defaults.
type Quotas struct {
	// Usage accounts each tenant's objects: store.DB.Blobs in a service.
	Usage UsageStore
	// Tiers are the limits of each tier (every one of tenant.Tiers must
	// be there), in bytes as stored (an encrypted object stores 56 bytes
	// more than its plaintext, and 16 more per 4 KiB) and objects; a
	// tenant's own limits (store.Admin.SetBlobQuota) replace its tier's.
	// store.NoLimit sets none.
	Tiers map[tenant.Tier]store.BlobLimits
	// Lease is how long a write's reservation holds without news of the
	// write: past it, the writer is taken for dead, another write of the
	// object may go ahead, and the reservation stays counted until
	// [Buckets.Reconcile]. It must outlast the commit of an object (a
	// write's last part and its completion).
	Lease time.Duration
}

// DefaultQuotas returns the default quotas over usage: 10 GiB and 100,000
// objects per standard tenant, 1 TiB and 10 million objects per
// enterprise or government tenant, and a lease of 2 minutes.
func DefaultQuotas(usage UsageStore) Quotas {
	return Quotas{
		Usage: usage,
		Tiers: map[tenant.Tier]store.BlobLimits{
			tenant.TierStandard:   {Bytes: 10 << 30, Objects: 100_000},
			tenant.TierEnterprise: {Bytes: 1 << 40, Objects: 10_000_000},
			tenant.TierGovernment: {Bytes: 1 << 40, Objects: 10_000_000},
		},
		Lease: 2 * time.Minute,
	}
}

// WithQuotas turns on quotas q: every write, copy, overwrite and delete of
// a tenant's view is accounted in q.Usage, and a change that would take
// the tenant past a limit fails with an error wrapping [ErrQuotaExceeded],
// storing nothing.
func WithQuotas(q Quotas) Option {
	q.Tiers = maps.Clone(q.Tiers)
	return optionFunc(func(c *config) { c.quotas = &q })
}

func (q *Quotas) validate() error {
	if q.Usage == nil {
		return errors.New("blob: Quotas.Usage is required")
	}
	if q.Lease <= 0 {
		return fmt.Errorf("blob: Quotas.Lease must be positive, got %s", q.Lease)
	}
	for _, t := range tenant.Tiers() {
		l, ok := q.Tiers[t]
		if !ok {
			return fmt.Errorf("blob: Quotas.Tiers has no limits for tier %s (store.NoLimit sets none)", t)
		}
		if l.Bytes < store.NoLimit || l.Objects < store.NoLimit {
			return fmt.Errorf("blob: Quotas.Tiers[%s] = %+v: a limit is 0 or more, or store.NoLimit", t, l)
		}
	}
	return nil
}

// quotaCheckFrom is the stored size from which a write checks, as it goes,
// that it still fits the tenant's quota; it checks again each time the
// size doubles, so that a stream far past the quota is refused before its
// end, having sent at most about twice what was left.
const quotaCheckFrom = 1 << 20

// quotaHook, if set (by tests), is called with "reserved" when a write
// within its quota is about to commit its object, and "committed" once it
// has, before its usage is recorded.
var quotaHook func(stage string)

// stat returns what key takes in the tenant's prefix of the bucket: its
// stored size and one object, or nothing.
func (b *tenantBucket) stat(ctx context.Context, key string) (store.BlobUsage, error) {
	a, err := b.raw.Attributes(ctx, b.prefix+key)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return store.BlobUsage{}, nil
	}
	if err != nil {
		return store.BlobUsage{}, err
	}
	return store.BlobUsage{Bytes: a.Size, Objects: 1}, nil
}

// change makes the change of key to after with apply, within the quota.
func (b *tenantBucket) change(ctx context.Context, key string, after store.BlobUsage, apply func(context.Context) error) error {
	return b.quota.Usage.Change(ctx, store.BlobChange{
		Key:    key,
		After:  after,
		Stat:   func(ctx context.Context) (store.BlobUsage, error) { return b.stat(ctx, key) },
		Apply:  apply,
		Limits: b.quota.Tiers,
		Lease:  b.quota.Lease,
	})
}

// checkQuota is a write's check, as it goes, that the w.count.n bytes it
// has stored so far (less what the object it replaces takes) fit the
// tenant's quota. It is a hint for failing early: Close reserves.
func (w *writer) checkQuota() error {
	acct, err := w.b.quota.Usage.Usage(w.ctx, w.b.quota.Tiers)
	if err != nil {
		return err
	}
	old, err := w.b.stat(w.ctx, w.key)
	if err != nil {
		return err
	}
	return acct.Check(store.BlobUsage{Bytes: w.count.n - old.Bytes, Objects: 1 - old.Objects})
}

// Usage returns the object storage account of the tenant of ctx: what its
// objects take, what writes in progress hold, and its limits. It needs
// [WithQuotas].
func (b *Buckets) Usage(ctx context.Context) (store.BlobAccount, error) {
	if _, err := tenant.Require(ctx, "blob: Usage"); err != nil {
		return store.BlobAccount{}, err
	}
	if b.quota == nil {
		return store.BlobAccount{}, errors.New("blob: Usage: quotas are off (WithQuotas)")
	}
	a, err := b.quota.Usage.Usage(ctx, b.quota.Tiers)
	if err != nil {
		return a, fmt.Errorf("blob: Usage: %w", err)
	}
	return a, nil
}

// Reconcile recounts every object under the prefix of tenant id (in its
// bucket) and records that as its usage, dropping what writers that died
// between reserving and recording still held (see store.Blobs.Reconcile).
// The tenant's writes pause while it lists. Run it after a crash, or when
// Usage reports NeedsReconcile, or now and then. It is an operation of
// the platform: it takes the tenant as an argument and ignores the
// context's. It needs [WithQuotas].
func (b *Buckets) Reconcile(ctx context.Context, id tenant.ID) (store.BlobReconciliation, error) {
	if b.quota == nil {
		return store.BlobReconciliation{}, errors.New("blob: Reconcile: quotas are off (WithQuotas)")
	}
	if id.IsZero() {
		return store.BlobReconciliation{}, fmt.Errorf("blob: Reconcile: %w: zero tenant ID", tenant.ErrInvalidID)
	}
	raw, err := b.bucketOf(ctx, id)
	if err != nil {
		return store.BlobReconciliation{}, fmt.Errorf("blob: Reconcile tenant %s: %w", id, err)
	}
	count := func(ctx context.Context) (store.BlobUsage, error) {
		var u store.BlobUsage
		it := raw.List(&gcblob.ListOptions{Prefix: TenantPrefix(id)})
		for {
			o, err := it.Next(ctx)
			if errors.Is(err, io.EOF) {
				return u, nil
			}
			if err != nil {
				return u, fmt.Errorf("list: %w", err)
			}
			if !o.IsDir {
				u.Bytes += o.Size
				u.Objects++
			}
		}
	}
	res, err := b.quota.Usage.Reconcile(tenant.NewContext(ctx, id), count)
	if err != nil {
		return res, fmt.Errorf("blob: Reconcile tenant %s: %w", id, err)
	}
	return res, nil
}
