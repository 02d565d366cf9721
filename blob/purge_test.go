package blob_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/tenant"
)

// writeObjects writes n objects through the view of ctx's tenant, and a
// few through the raw bucket under its prefix with keys no view would
// take.
func writeObjects(t *testing.T, be *backend, b *blob.Buckets, ctx context.Context, n int) int {
	t.Helper()
	v := view(t, b, ctx)
	for i := range n {
		if err := v.WriteAll(ctx, fmt.Sprintf("d%d/obj-%04d", i%7, i), []byte("data"), nil); err != nil {
			t.Fatal(err)
		}
	}
	id, _ := tenant.FromContext(ctx)
	junk := []string{"a b ", "x%2e%2e", "deep/er/still/x"}
	for _, k := range junk {
		if err := be.raw.WriteAll(ctx, blob.TenantPrefix(id)+k, []byte("raw"), nil); err != nil {
			t.Fatal(err)
		}
	}
	return n + len(junk)
}

// TestPurgeDeletesEverythingUnderThePrefix: Purge deletes every object of
// the tenant (more than a page, and objects written raw with keys a view
// refuses), reports the count, leaves the prefix listing empty and the
// other tenant's objects untouched; run again, it deletes nothing.
func TestPurgeDeletesEverythingUnderThePrefix(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			aID, actx := provision(t, km, "acme")
			bID, bctx := provision(t, km, "globex")
			b := be.open(t, km)
			n := 1100
			want := writeObjects(t, be, b, actx, n)
			other := writeObjects(t, be, b, bctx, 5)
			left, err := b.Remains(t.Context(), aID, 3)
			if err != nil || len(left) != 3 {
				t.Errorf("Remains before Purge = %q, %v; want 3 keys", left, err)
			}

			res, err := b.Purge(t.Context(), aID)
			if err != nil {
				t.Fatal(err)
			}
			if res.Deleted != want || res.Pages < 3 {
				t.Errorf("Purge = %+v, want %d deleted over at least 3 pages", res, want)
			}
			if got := listKeys(t, actx, be.raw, blob.TenantPrefix(aID)); len(got) != 0 {
				t.Errorf("after Purge the prefix lists %d keys: %q...", len(got), got[0])
			}
			if got := listKeys(t, bctx, view(t, b, bctx), ""); len(got) != other {
				t.Errorf("the other tenant lists %d keys after Purge, want %d", len(got), other)
			}
			for name := range be.stored(t) {
				if strings.Contains(name, blob.TenantPrefix(aID)) && !strings.HasSuffix(name, ".attrs") {
					t.Errorf("stored after Purge: %s", name)
				}
			}
			if left, err := b.Remains(t.Context(), aID, 10); err != nil || len(left) != 0 {
				t.Errorf("Remains after Purge = %q, %v; want none", left, err)
			}
			if left, err := b.Remains(t.Context(), bID, 10); err != nil || len(left) != other {
				t.Errorf("Remains of the other tenant = %q, %v; want its %d", left, err, other)
			}
			res, err = b.Purge(t.Context(), aID)
			if err != nil || res.Deleted != 0 {
				t.Errorf("second Purge = %+v, %v; want nothing deleted", res, err)
			}
		})
	}
}

// TestPurgeResumesAfterInterruption: a Purge cancelled midway returns the
// context's error and what it deleted; a second run deletes the rest, the
// two counts adding up to every object (but those in flight at the
// cancellation), and the prefix lists empty.
func TestPurgeResumesAfterInterruption(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			id, ctx := provision(t, km, "acme")
			b := be.open(t, km)
			want := writeObjects(t, be, b, ctx, 1500)

			cctx, cancel := context.WithCancel(t.Context())
			var seen atomic.Int64
			restore := blob.SetPurgeHook(func(string) {
				if seen.Add(1) == 1200 {
					cancel()
				}
			})
			first, err := b.Purge(cctx, id)
			restore()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted Purge = %+v, %v; want context.Canceled", first, err)
			}
			if first.Deleted < 1000 || first.Deleted >= want {
				t.Fatalf("interrupted Purge deleted %d of %d", first.Deleted, want)
			}
			second, err := b.Purge(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			// Deletions in flight when the context was cancelled may have
			// happened unconfirmed (the S3 server deleted, the client gave
			// up waiting): at most one per parallel deletion goes uncounted.
			if sum := first.Deleted + second.Deleted; sum > want || sum < want-8 {
				t.Errorf("Purges deleted %d + %d, want %d in all (less at most 8 in flight)", first.Deleted, second.Deleted, want)
			}
			if got := listKeys(t, ctx, be.raw, blob.TenantPrefix(id)); len(got) != 0 {
				t.Errorf("after the resumed Purge the prefix lists %d keys", len(got))
			}
		})
	}
}

// TestPurgeRefusesZeroTenant: Purge needs a tenant.
func TestPurgeRefusesZeroTenant(t *testing.T) {
	b := memBackend(t).open(t, newManager(t))
	if _, err := b.Purge(t.Context(), tenant.ID{}); !errors.Is(err, tenant.ErrInvalidID) {
		t.Errorf("Purge of the zero ID: %v, want ErrInvalidID", err)
	}
}
