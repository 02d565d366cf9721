package blob_test

import (
	"context"
	"fmt"
	"io"
	"testing"

	gcblob "gocloud.dev/blob"

	"github.com/rtmx-ai/tenancy/blob"
)

// BenchmarkWriteRead measures writing an object and reading it back
// through a tenant's view (mode=tenant: key validation, prefix,
// AES-256-GCM-HKDF streaming encryption and decryption) against the same
// through the platform's bucket (mode=raw: the same key under the tenant's
// prefix, stored as written), on mem:// and file://, for 1 MiB and 64 MiB.
// Each size's raw case runs right before its tenant case; -count repeats
// each case in a row, so for interleaved figures run go test -count 1 a few
// times and compare with benchstat -col /mode.
func BenchmarkWriteRead(b *testing.B) {
	for _, mk := range []func(testing.TB) *backend{memBackend, fileBackend} {
		be := mk(b)
		km := newManager(b)
		id, ctx := provision(b, km, "bench")
		v := view(b, be.open(b, km), ctx)
		for _, size := range []int{1 << 20, 64 << 20} {
			data := make([]byte, size)
			_, _ = newRandReader(3, int64(size)).Read(data)
			for _, mode := range []string{"raw", "tenant"} {
				bkt, key := v, "bench/object"
				if mode == "raw" {
					bkt, key = be.raw, blob.TenantPrefix(id)+key
				}
				b.Run(fmt.Sprintf("backend=%s/size=%dMiB/mode=%s", be.name, size>>20, mode), func(b *testing.B) {
					b.SetBytes(int64(size))
					for b.Loop() {
						writeRead(b, ctx, bkt, key, data)
					}
				})
			}
		}
	}
}

// writeRead writes data to key and reads it back, streaming, under ctx
// (which carries the tenant a view checks on every call).
func writeRead(b *testing.B, ctx context.Context, bkt *gcblob.Bucket, key string, data []byte) {
	if err := bkt.WriteAll(ctx, key, data, &gcblob.WriterOptions{ContentType: "application/octet-stream"}); err != nil {
		b.Fatal(err)
	}
	r, err := bkt.NewReader(ctx, key, nil)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, r)
	if err != nil || n != int64(len(data)) {
		b.Fatalf("read %d bytes, %v", n, err)
	}
	_ = r.Close()
}
