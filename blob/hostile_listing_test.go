package blob_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	gcblob "gocloud.dev/blob"

	"github.com/rtmx-ai/tenancy/blob"
)

// TestHostileListingStaysInThePrefix: a tenant that lists with every
// delimiter it likes (one that occurs in the tenant prefix, a multi-byte
// one, "tenants/") and with page tokens it forged (another tenant's raw
// keys, the root, a page token of another tenant's listing, garbage) sees
// only its own keys, on every backend, and never an object of another
// tenant or of the platform (keys outside tenants/).
func TestHostileListingStaysInThePrefix(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			aID, actx := provision(t, km, "acme")
			bID, bctx := provision(t, km, "globex")
			bk := be.open(t, km)
			a, b := view(t, bk, actx), view(t, bk, bctx)
			ctx := t.Context()
			for _, k := range []string{"a/1", "a/2", "z", "tenants/x"} {
				if err := a.WriteAll(actx, k, []byte("A"), nil); err != nil {
					t.Fatal(err)
				}
			}
			for _, k := range []string{"b/1", "b/2", "zz"} {
				if err := b.WriteAll(bctx, k, []byte("B"), nil); err != nil {
					t.Fatal(err)
				}
			}
			// The platform's own objects, beside the tenants'.
			for _, k := range []string{"platform/secret", "tenants.json", "tenantsx/1"} {
				if err := be.raw.WriteAll(ctx, k, []byte("P"), nil); err != nil {
					t.Fatal(err)
				}
			}
			// A page token of B's listing, for A to replay.
			_, bToken, err := b.ListPage(bctx, gcblob.FirstPageToken, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			tokens := [][]byte{
				gcblob.FirstPageToken, bToken, []byte(""), []byte("tenants/"), []byte(blob.TenantPrefix(bID)),
				[]byte(blob.TenantPrefix(bID) + "b/1"), []byte("platform/"), []byte("a"), []byte("\xff\xfe garbage"),
				[]byte(blob.TenantPrefix(aID)[:len(blob.TenantPrefix(aID))-1]),
			}
			delims := []string{"", "/", "t", "tenants/", "/" + bID.String() + "/", "s/", "\x00", "é"}
			prefixes := []string{"", "a", "a/", "t", "tenants/"}
			// The control: a plain listing works and shows A's own keys, so
			// the loop below checks listings that happened, not only errors.
			own, _, err := a.ListPage(actx, gcblob.FirstPageToken, 10, &gcblob.ListOptions{Prefix: "a/"})
			if err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("A lists its own prefix: %v", err)
			}
			if len(own) != 2 || own[0].Key != "a/1" || own[1].Key != "a/2" {
				t.Fatalf("A lists %d keys under a/, want a/1 and a/2", len(own))
			}
			listed := 0
			for _, tok := range tokens {
				for _, d := range delims {
					for _, p := range prefixes {
						objs, next, err := a.ListPage(actx, tok, 2, &gcblob.ListOptions{Prefix: p, Delimiter: d})
						if err != nil && !errors.Is(err, io.EOF) {
							continue // a backend may refuse a forged token: that leaks nothing
						}
						listed++
						for _, o := range objs {
							if strings.Contains(o.Key, bID.String()) || strings.HasPrefix(o.Key, "b/") || o.Key == "zz" ||
								strings.Contains(o.Key, "platform") || strings.HasPrefix(o.Key, "tenants.") || strings.HasPrefix(o.Key, "tenantsx") {
								t.Errorf("token %q delimiter %q prefix %q: A lists %q", tok, d, p, o.Key)
							}
						}
						if strings.Contains(string(next), bID.String()) {
							t.Errorf("token %q delimiter %q prefix %q: A's next page token %q names B", tok, d, p, next)
						}
					}
				}
			}
			if listed == 0 {
				t.Fatal("every hostile listing failed: nothing was checked")
			}
		})
	}
}
