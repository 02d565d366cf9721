package blob_test

import (
	"strings"
	"testing"
	"time"

	gcblob "gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestReservedMetadataInAnyCase: the reserved "tenancy-" metadata keys are
// refused however they are written (gocloud lowercases metadata keys
// before the view sees them), so a tenant cannot overwrite the format
// marker; and a "tenancy-" key a storage admin added is not shown to the
// tenant, nor carried by Copy.
func TestReservedMetadataInAnyCase(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			id, ctx := provision(t, km, "acme")
			v := view(t, be.open(t, km), ctx)
			for _, k := range []string{"tenancy-blob", "TENANCY-BLOB", "Tenancy-Blob", "tenancy-", "TENANCY-other"} {
				err := v.WriteAll(ctx, "k", []byte("x"), &gcblob.WriterOptions{Metadata: map[string]string{k: "v1"}})
				if gcerrors.Code(err) != gcerrors.InvalidArgument {
					t.Errorf("metadata key %q: %v, want InvalidArgument", k, err)
				}
			}
			if err := v.WriteAll(ctx, "k", []byte("x"), &gcblob.WriterOptions{Metadata: map[string]string{"owner": "alice"}}); err != nil {
				t.Fatal(err)
			}
			// A storage admin copies the object onto itself with an extra
			// reserved key.
			p := "tenants/" + id.String() + "/k"
			raw, err := be.raw.ReadAll(t.Context(), p)
			if err != nil {
				t.Fatal(err)
			}
			if err := be.raw.WriteAll(t.Context(), p, raw, &gcblob.WriterOptions{Metadata: map[string]string{
				"tenancy-blob": "v1", "tenancy-injected": "x", "owner": "alice"}}); err != nil {
				t.Fatal(err)
			}
			if err := v.Copy(ctx, "k2", "k", nil); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"k", "k2"} {
				a, err := v.Attributes(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				if len(a.Metadata) != 1 || a.Metadata["owner"] != "alice" {
					t.Errorf("%s: metadata %v, want only owner=alice", k, a.Metadata)
				}
			}
			ra, err := be.raw.Attributes(t.Context(), "tenants/"+id.String()+"/k2")
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := ra.Metadata["tenancy-injected"]; ok {
				t.Errorf("Copy carried the injected reserved key: %v", ra.Metadata)
			}
		})
	}
}

// TestMetadataDoesNotBypassTheQuota: bytes kept in an object's metadata or
// headers are not counted by the quota (what is counted is the stored
// size), so they must be bounded: a tenant with a byte quota of 64 KiB
// must not store megabytes in metadata of empty objects, on a backend
// (mem://, file://) that sets no limit of its own.
func TestMetadataDoesNotBypassTheQuota(t *testing.T) {
	cp := newControlPlane(t)
	for _, be := range backends(t)[:2] {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			id, ctx := cp.tenant(t, km, "meta", tenant.TierStandard)
			cp.setQuota(t, id, store.BlobLimits{Bytes: 64 << 10, Objects: 100})
			v := view(t, be.open(t, km, blob.WithQuotas(cp.quotas(time.Minute))), ctx)
			big := strings.Repeat("m", 256<<10)
			for name, opts := range map[string]*gcblob.WriterOptions{
				"metadata value":      {Metadata: map[string]string{"x": big}},
				"metadata keys":       {Metadata: manyKeys(1024)},
				"content type":        {ContentType: "text/plain; x=" + big},
				"content disposition": {ContentDisposition: "attachment; filename=" + big},
				"cache control":       {CacheControl: big},
				"content encoding":    {ContentEncoding: big},
				"content language":    {ContentLanguage: big},
			} {
				err := v.WriteAll(ctx, "empty", nil, opts)
				if gcerrors.Code(err) != gcerrors.InvalidArgument {
					t.Errorf("%s of 256 KiB on an empty object: %v, want InvalidArgument", name, err)
				}
			}
			// What S3 takes (2 KiB of user metadata) is taken.
			md := map[string]string{"a": strings.Repeat("v", 1000), "b": strings.Repeat("w", 1000)}
			if err := v.WriteAll(ctx, "ok", []byte("x"), &gcblob.WriterOptions{Metadata: md, ContentType: "text/plain; charset=utf-8",
				ContentDisposition: `attachment; filename="` + strings.Repeat("n", 200) + `.pdf"`}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func manyKeys(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[strings.Repeat("k", 200)+string(rune('a'+i%26))+strings.Repeat("z", i/26)] = strings.Repeat("v", 200)
	}
	return m
}
