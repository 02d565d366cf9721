package blob_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	gcblob "gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestRoundTrip writes and reads objects through a tenant's view on every
// backend: bytes, content type, user metadata and the plaintext size come
// back; the stored object is under the tenant's prefix, marked, and its
// stored size is the ciphertext's.
func TestRoundTrip(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			id, ctx := provision(t, km, "acme")
			v := view(t, be.open(t, km), ctx)
			for _, n := range []int{0, 1, 4040, 4041, 100_000} {
				key := "docs/report.txt"
				data := bytes.Repeat([]byte("x"), n)
				err := v.WriteAll(ctx, key, data, &gcblob.WriterOptions{ContentType: "text/plain", Metadata: map[string]string{"owner": "ops"}})
				if err != nil {
					t.Fatal(err)
				}
				got, err := v.ReadAll(ctx, key)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("ReadAll(%d bytes) = %d bytes, %v", n, len(got), err)
				}
				a, err := v.Attributes(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				if a.Size != int64(n) || a.ContentType != "text/plain" || a.Metadata["owner"] != "ops" || len(a.Metadata) != 1 {
					t.Errorf("Attributes = size %d, type %q, metadata %v; want %d, text/plain, owner=ops", a.Size, a.ContentType, a.Metadata, n)
				}
				ra, err := be.raw.Attributes(ctx, blob.TenantPrefix(id)+key)
				if err != nil {
					t.Fatal(err)
				}
				if ra.Size != blob.CiphertextSize(int64(n)) || ra.Metadata["tenancy-blob"] != "v1" {
					t.Errorf("stored size %d, metadata %v; want %d, tenancy-blob=v1", ra.Size, ra.Metadata, blob.CiphertextSize(int64(n)))
				}
			}
		})
	}
}

// TestForWithoutTenant: a view needs a tenant in the context.
func TestForWithoutTenant(t *testing.T) {
	b := memBackend(t).open(t, newManager(t))
	if _, err := b.For(t.Context()); !errors.Is(err, tenant.ErrNoTenant) {
		t.Fatalf("For without tenant: %v, want ErrNoTenant", err)
	}
}

// TestViewRefusesAnotherTenantsContext: a view used with a context of
// another tenant refuses every call.
func TestViewRefusesAnotherTenantsContext(t *testing.T) {
	km := newManager(t)
	_, actx := provision(t, km, "acme")
	_, gctx := provision(t, km, "globex")
	v := view(t, memBackend(t).open(t, km), actx)
	if err := v.WriteAll(actx, "a", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := v.ReadAll(gctx, "a"); !errors.Is(err, tenant.ErrCrossTenant) || gcerrors.Code(err) != gcerrors.PermissionDenied {
		t.Errorf("ReadAll with another tenant's context: %v, want ErrCrossTenant", err)
	}
	if err := v.Delete(gctx, "a"); !errors.Is(err, tenant.ErrCrossTenant) {
		t.Errorf("Delete with another tenant's context: %v, want ErrCrossTenant", err)
	}
	// A view is not a tenant of its own: a call without a tenant in its
	// context fails, as every tenant-scoped call does (DESIGN.md: no
	// default tenant, no fallback).
	if _, err := v.ReadAll(t.Context(), "a"); !errors.Is(err, tenant.ErrNoTenant) {
		t.Errorf("ReadAll with a context without tenant: %v, want ErrNoTenant", err)
	}
	if err := v.WriteAll(t.Context(), "b", []byte("x"), nil); !errors.Is(err, tenant.ErrNoTenant) {
		t.Errorf("WriteAll with a context without tenant: %v, want ErrNoTenant", err)
	}
}

// TestEncryptionRequiresKeys: without a keys.Manager, Open and New refuse
// unless told WithoutEncryption.
func TestEncryptionRequiresKeys(t *testing.T) {
	if _, err := blob.Open(t.Context(), "mem://", nil); err == nil {
		t.Error("Open without keys.Manager: nil error")
	}
	b, err := blob.Open(t.Context(), "mem://", nil, blob.WithoutEncryption())
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	var _ *keys.Manager
}

// noUsage is a UsageStore and TenantBuckets that no call without a tenant
// may reach.
type noUsage struct{ t *testing.T }

func (n noUsage) Change(context.Context, store.BlobChange) error {
	n.t.Error("Change reached without a tenant")
	return nil
}

func (n noUsage) Usage(context.Context, map[tenant.Tier]store.BlobLimits) (store.BlobAccount, error) {
	n.t.Error("Usage reached the store without a tenant")
	return store.BlobAccount{}, nil
}

func (n noUsage) Reconcile(context.Context, func(context.Context) (store.BlobUsage, error)) (store.BlobReconciliation, error) {
	n.t.Error("Reconcile reached the store without a tenant")
	return store.BlobReconciliation{}, nil
}

func (n noUsage) TenantBucket(context.Context) (string, error) {
	n.t.Error("TenantBucket reached without a tenant")
	return "", nil
}

// TestTenantScopedEntryPointsNeedATenant: every entry point that takes its
// tenant from the context (For, with and without quotas and tenant
// buckets; Usage, with quotas on or off) fails with tenant.ErrNoTenant
// without one, before it reaches the usage store or the bucket directory:
// none falls back to a default tenant.
func TestTenantScopedEntryPointsNeedATenant(t *testing.T) {
	km := newManager(t)
	q := blob.DefaultQuotas(noUsage{t})
	for name, opts := range map[string][]blob.Option{
		"plain":          nil,
		"quotas":         {blob.WithQuotas(q)},
		"tenant buckets": {blob.WithTenantBuckets(noUsage{t})},
		"both":           {blob.WithQuotas(q), blob.WithTenantBuckets(noUsage{t})},
	} {
		t.Run(name, func(t *testing.T) {
			b := memBackend(t).open(t, km, opts...)
			if _, err := b.For(t.Context()); !errors.Is(err, tenant.ErrNoTenant) {
				t.Errorf("For without tenant: %v, want ErrNoTenant", err)
			}
			if _, err := b.Usage(t.Context()); !errors.Is(err, tenant.ErrNoTenant) {
				t.Errorf("Usage without tenant: %v, want ErrNoTenant", err)
			}
		})
	}
}
