package tenanttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	gcblob "gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/tenant"
)

// maxObjects is the most objects the suite lists in one view or prefix.
const maxObjects = 10_000

// hostileKeys are keys that try to leave tenant self's view for tenant
// other's object key: traversal, absolute, encoded, backslashed, NUL.
func hostileKeys(other tenant.ID, key string) []string {
	o := other.String()
	return []string{
		"../" + o + "/" + key,
		"../../" + blob.TenantPrefix(other) + key,
		"/" + blob.TenantPrefix(other) + key,
		"/../" + o + "/" + key,
		"a/../../" + o + "/" + key,
		"./../" + o + "/" + key,
		"%2e%2e/" + o + "/" + key,
		"%2e%2e%2f" + o + "%2f" + key,
		"%252e%252e/" + o + "/" + key,
		`..\` + o + `\` + key,
		`..%5c` + o + `%5c` + key,
		"../" + o + "/" + key + "\x00",
		key + "\x00../../" + o,
		"..%00/" + o + "/" + key,
		"\u2025/" + o + "/" + key, // TWO DOT LEADER
		"..\uff0f" + o + "\uff0f" + key,
	}
}

// view returns the bucket view of the tenant of ctx, as the service's
// code gets it.
func (s *suite) view(ctx context.Context) (*gcblob.Bucket, error) {
	if s.h.BucketView != nil {
		return s.h.BucketView(ctx)
	}
	return s.h.Buckets.For(ctx)
}

// checkObjects is verification test 3 and test case 3: no tenant's view
// reads, lists or reaches by a hostile key another tenant's objects, each
// reads its own, and (with Raw) none is stored in clear text.
func (s *suite) checkObjects(ctx context.Context, r *report) {
	h := s.h
	planted := map[tenant.ID]Planted{}
	needle := map[tenant.ID]string{}
	withObjects := 0
	for _, tn := range h.Tenants {
		p, n, err := s.plant(ctx, tn)
		if err != nil {
			r.failf("Harness.Plant for tenant %s: %v", tn.ID, err)
			return
		}
		planted[tn.ID], needle[tn.ID] = p, n
		if len(p.Objects) > 0 {
			withObjects++
		}
	}
	if withObjects == 0 {
		r.failf("Harness.Plant returned no Planted.Objects for any tenant: the object checks need the keys of the objects that hold the canary")
		return
	}
	views := map[tenant.ID]*gcblob.Bucket{}
	for _, tn := range h.Tenants {
		v, err := s.view(tenant.NewContext(ctx, tn.ID))
		if err != nil {
			r.failf("the view of tenant %s: %v", tn.ID, err)
			return
		}
		defer v.Close()
		views[tn.ID] = v
	}

	// Each tenant reads its own objects, with its canary.
	for _, tn := range h.Tenants {
		tctx := tenant.NewContext(ctx, tn.ID)
		for _, k := range planted[tn.ID].Objects {
			b, err := views[tn.ID].ReadAll(tctx, k)
			if err != nil {
				r.failf("tenant %s reading its own object %q: %v", tn.ID, k, err)
				continue
			}
			if !bytes.Contains(b, []byte(needle[tn.ID])) {
				r.failf("tenant %s reading its own object %q: the content does not hold its canary %s%s", tn.ID, k, canaryPrefix, needle[tn.ID])
			}
		}
	}

	for _, a := range h.Tenants {
		actx := tenant.NewContext(ctx, a.ID)
		va := views[a.ID]
		own := planted[a.ID].Objects
		others := s.othersNeedles(a.ID)
		for _, b := range h.Tenants {
			if a.ID == b.ID {
				continue
			}
			for _, k := range planted[b.ID].Objects {
				// B's key, in A's view: not found (or A's own object of
				// the same key, without B's canary).
				got, err := va.ReadAll(actx, k)
				switch {
				case err == nil:
					if ls := leaks(others, fmt.Sprintf("tenant %s's object %q", a.ID, k), got, nil); len(ls) > 0 {
						r.failf("tenant %s reading tenant %s's object key %q in its own view got tenant %s's object: %v", a.ID, b.ID, k, b.ID, ls)
					} else if !slices.Contains(own, k) {
						r.failf("tenant %s reading tenant %s's object key %q in its own view got %d bytes, want not found (tenant %s has no object of that key)", a.ID, b.ID, k, len(got), a.ID)
					}
				case gcerrors.Code(err) != gcerrors.NotFound:
					r.failf("tenant %s reading tenant %s's object key %q in its own view: %v (code %v), want not found: the view reached an object it cannot read", a.ID, b.ID, k, err, gcerrors.Code(err))
				}
				// Hostile keys that try to reach B's object from A's view:
				// refused or not found, and never B's data, read or written.
				for _, hk := range hostileKeys(b.ID, k) {
					got, err := va.ReadAll(actx, hk)
					if err == nil {
						if ls := leaks(others, "the content", got, nil); len(ls) > 0 {
							r.failf("tenant %s reading the hostile key %q: %v", a.ID, hk, ls)
						}
					}
					w, err := va.NewWriter(actx, hk, nil)
					if err == nil {
						_, _ = io.WriteString(w, "tenanttest: written by tenant "+a.ID.String()+" with a hostile key")
						_ = w.Close()
					}
				}
			}
		}
		// Listing A's view shows nothing of another tenant's.
		s.listView(actx, r, a.ID, va, others, own)
	}

	// B's objects are as planted after A's writes with hostile keys.
	for _, tn := range h.Tenants {
		tctx := tenant.NewContext(ctx, tn.ID)
		for _, k := range planted[tn.ID].Objects {
			b, err := views[tn.ID].ReadAll(tctx, k)
			if err != nil {
				r.failf("tenant %s reading its own object %q after the other tenants' writes with hostile keys: %v", tn.ID, k, err)
				continue
			}
			if !bytes.Contains(b, []byte(needle[tn.ID])) {
				r.failf("tenant %s's object %q was overwritten by another tenant's write with a hostile key: %q", tn.ID, k, abbrev(b))
			}
		}
	}

	if h.Raw == nil {
		r.notRun("Raw", "whether objects are stored encrypted")
		return
	}
	for _, tn := range h.Tenants {
		s.checkRaw(ctx, r, tn.ID, planted[tn.ID].Objects)
	}
}

// listView lists the whole of view v of tenant id and reads every object
// listed: none may hold another tenant's canary, and the tenant's own
// planted objects must be there.
func (s *suite) listView(ctx context.Context, r *report, id tenant.ID, v *gcblob.Bucket, others map[tenant.ID][]string, own []string) {
	it := v.List(nil)
	listed := map[string]bool{}
	for n := 0; n < maxObjects; n++ {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			r.failf("listing tenant %s's view: %v", id, err)
			return
		}
		listed[obj.Key] = true
		if obj.IsDir {
			continue
		}
		b, err := v.ReadAll(ctx, obj.Key)
		if err != nil {
			continue // what does not read leaks nothing
		}
		if ls := leaks(others, fmt.Sprintf("object %q listed in tenant %s's view", obj.Key, id), b, nil); len(ls) > 0 {
			r.failf("listing tenant %s's view: %v", id, ls)
		}
	}
	for _, k := range own {
		if !listed[k] {
			r.failf("listing tenant %s's view: its own object %q is not listed", id, k)
		}
	}
}

// checkRaw reads every object under tenant id's prefix in the raw bucket:
// none may hold the tenant's canaries in clear text, and its planted
// objects must be there.
func (s *suite) checkRaw(ctx context.Context, r *report, id tenant.ID, own []string) {
	prefix := blob.TenantPrefix(id)
	mine := map[tenant.ID][]string{id: s.othersNeedles(tenant.ID{})[id]}
	it := s.h.Raw.List(&gcblob.ListOptions{Prefix: prefix})
	listed := map[string]bool{}
	for n := 0; n < maxObjects; n++ {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			r.failf("listing %s in Harness.Raw: %v", prefix, err)
			return
		}
		listed[obj.Key] = true
		b, err := s.h.Raw.ReadAll(ctx, obj.Key)
		if err != nil {
			r.failf("reading %q in Harness.Raw: %v", obj.Key, err)
			continue
		}
		if ls := leaks(mine, fmt.Sprintf("the stored bytes of %q", obj.Key), b, nil); len(ls) > 0 {
			r.failf("Harness.Raw: tenant %s's object is stored in clear text: %v", id, ls)
		}
	}
	for _, k := range own {
		if !listed[prefix+k] {
			r.failf("Harness.Raw: tenant %s's object %q is not stored under %s (is Harness.Raw the bucket under the tenant views?)", id, k, prefix)
		}
	}
}
