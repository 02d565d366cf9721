package blob_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gcblob "gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"

	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/tenant"
)

// fileURL is the file:// URL of dir.
func fileURL(dir string) string { return "file://" + filepath.ToSlash(dir) }

// openDir opens the file:// bucket at dir as the storage admin sees it.
func openDir(t testing.TB, dir string) *gcblob.Bucket {
	t.Helper()
	raw, err := fileblob.OpenBucket(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	return raw
}

// TestTenantOwnBucket: an enterprise tenant given a bucket of its own
// (recorded in the control plane) keeps its objects there, under its
// prefix, and none in the platform's bucket; a standard tenant's stay in
// the platform's; each lists only its own. The tenant's bucket is opened
// once for many views, Reconcile and Purge work in it, and Close closes
// it.
func TestTenantOwnBucket(t *testing.T) {
	cp := newControlPlane(t)
	km := newManager(t)
	shared := memBackend(t)
	ownDir := t.TempDir()
	entID, entCtx := cp.tenant(t, km, "bigco", tenant.TierEnterprise)
	stdID, stdCtx := cp.tenant(t, km, "smallco", tenant.TierStandard)
	if err := cp.admin.SetTenantBucket(t.Context(), entID, fileURL(ownDir)); err != nil {
		t.Fatal(err)
	}
	var opens atomic.Int64
	defer blob.CountTenantBucketOpens(&opens)()
	b, err := blob.New(shared.raw, km, blob.WithTenantBuckets(cp.db.Blobs()), blob.WithQuotas(cp.quotas(time.Minute)))
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			ctx, key := stdCtx, "std/"+string(rune('a'+i))
			if i%2 == 0 {
				ctx, key = entCtx, "ent/"+string(rune('a'+i))
			}
			v, err := b.For(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			if err := v.WriteAll(ctx, key, secret("own", 500), nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := opens.Load(); n != 1 {
		t.Errorf("the tenant's bucket was opened %d times, want once", n)
	}
	own := openDir(t, ownDir)
	if got := listKeys(t, entCtx, own, ""); len(got) != 10 || !allPrefixed(got, blob.TenantPrefix(entID)+"ent/") {
		t.Errorf("the tenant's own bucket holds %q, want its 10 objects under its prefix", got)
	}
	if got := listKeys(t, entCtx, shared.raw, blob.TenantPrefix(entID)); len(got) != 0 {
		t.Errorf("the platform's bucket holds %q of the tenant with its own", got)
	}
	if got := listKeys(t, stdCtx, shared.raw, ""); len(got) != 10 || !allPrefixed(got, blob.TenantPrefix(stdID)+"std/") {
		t.Errorf("the platform's bucket holds %q, want the standard tenant's 10 objects", got)
	}
	for _, tc := range []struct {
		ctx  context.Context
		want string
	}{{entCtx, "ent/"}, {stdCtx, "std/"}} {
		if got := listKeys(t, tc.ctx, view(t, b, tc.ctx), ""); len(got) != 10 || !allPrefixed(got, tc.want) {
			t.Errorf("a view lists %q, want its own 10 objects", got)
		}
	}

	checkSettled(t, b, own, entCtx)
	checkSettled(t, b, shared.raw, stdCtx)
	if res, err := b.Reconcile(t.Context(), entID); err != nil || res.After != stored(t, own, blob.TenantPrefix(entID)) {
		t.Errorf("Reconcile in the tenant's bucket = %+v, %v", res, err)
	}
	if res, err := b.Purge(t.Context(), entID); err != nil || res.Deleted != 10 {
		t.Errorf("Purge in the tenant's bucket = %+v, %v", res, err)
	}
	if got := listKeys(t, entCtx, own, ""); len(got) != 0 {
		t.Errorf("after Purge the tenant's bucket holds %q", got)
	}
	if got := listKeys(t, stdCtx, shared.raw, ""); len(got) != 10 {
		t.Errorf("Purge of the other tenant took the standard tenant's objects: %q", got)
	}

	v := view(t, b, entCtx)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAll(entCtx, "after-close", nil, nil); err == nil {
		t.Error("a view of the tenant's bucket writes after Close")
	}
	if _, err := b.For(entCtx); err == nil {
		t.Error("For after Close succeeded")
	}
}

func allPrefixed(keys []string, prefix string) bool {
	return !slices.ContainsFunc(keys, func(k string) bool { return !strings.HasPrefix(k, prefix) })
}

// bucketDir is a TenantBuckets from a map, with an error to return.
type bucketDir struct {
	mu    sync.Mutex // guards urls, err and calls
	urls  map[tenant.ID]string
	err   error
	calls int
}

func (d *bucketDir) TenantBucket(ctx context.Context) (string, error) {
	id, _ := tenant.FromContext(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	return d.urls[id], d.err
}

// TestTenantBucketNamingThePlatformsStillIsolates: a tenant bucket URL
// that names the platform's own bucket by mistake still keeps each
// tenant under its prefix, and neither lists, reads nor deletes the
// other's objects.
func TestTenantBucketNamingThePlatformsStillIsolates(t *testing.T) {
	km := newManager(t)
	dir := t.TempDir()
	aID, actx := provision(t, km, "acme")
	bID, bctx := provision(t, km, "globex")
	b := openURL(t, fileURL(dir), km, blob.WithTenantBuckets(&bucketDir{urls: map[tenant.ID]string{aID: fileURL(dir)}}))
	a, g := view(t, b, actx), view(t, b, bctx)
	if err := a.WriteAll(actx, "doc", secret("acme", 100), nil); err != nil {
		t.Fatal(err)
	}
	if err := g.WriteAll(bctx, "doc", secret("globex", 100), nil); err != nil {
		t.Fatal(err)
	}
	raw := openDir(t, dir)
	if got, want := listKeys(t, actx, raw, ""), []string{blob.TenantPrefix(aID) + "doc", blob.TenantPrefix(bID) + "doc"}; !slices.Equal(got, want) {
		t.Errorf("the bucket holds %q, want %q", got, want)
	}
	for _, tc := range []struct {
		v    *gcblob.Bucket
		ctx  context.Context
		want string
	}{{a, actx, "acme"}, {g, bctx, "globex"}} {
		got, err := tc.v.ReadAll(tc.ctx, "doc")
		if err != nil || string(got) != string(secret(tc.want, 100)) {
			t.Errorf("%s reads %q, %v; want its own", tc.want, got, err)
		}
		if keys := listKeys(t, tc.ctx, tc.v, ""); !slices.Equal(keys, []string{"doc"}) {
			t.Errorf("%s lists %q", tc.want, keys)
		}
	}
}

// TestTenantBucketLookupFailures: a lookup that fails fails For, and is
// tried again on the next For (not remembered); a URL that does not open
// fails For with an error naming the tenant; that a tenant has no bucket
// of its own is remembered.
func TestTenantBucketLookupFailures(t *testing.T) {
	km := newManager(t)
	_, actx := provision(t, km, "acme")
	bID, bctx := provision(t, km, "globex")
	dir := &bucketDir{urls: map[tenant.ID]string{bID: "nosuchscheme://bucket"}, err: errors.New("control plane down")}
	b := memBackend(t).open(t, km, blob.WithTenantBuckets(dir))
	if _, err := b.For(actx); err == nil || !strings.Contains(err.Error(), "control plane down") {
		t.Errorf("For with a failing lookup: %v", err)
	}
	dir.mu.Lock()
	dir.err = nil
	dir.mu.Unlock()
	if _, err := b.For(actx); err != nil {
		t.Errorf("For after the lookup recovered: %v", err)
	}
	if _, err := b.For(bctx); err == nil || !strings.Contains(err.Error(), bID.String()) {
		t.Errorf("For with a URL that does not open: %v, want an error naming the tenant", err)
	}
	dir.mu.Lock()
	calls := dir.calls
	dir.mu.Unlock()
	for range 10 {
		if _, err := b.For(actx); err != nil {
			t.Fatal(err)
		}
	}
	dir.mu.Lock()
	defer dir.mu.Unlock()
	if dir.calls != calls {
		t.Errorf("%d more lookups of a tenant without a bucket of its own, want none", dir.calls-calls)
	}
}
