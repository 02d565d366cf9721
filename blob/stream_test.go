package blob_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	gcblob "gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/rtmx-ai/tenancy/blob"
)

// randReader is n pseudo-random bytes from a fixed seed.
type randReader struct {
	src *rand.ChaCha8
	n   int64
}

func newRandReader(seed byte, n int64) *randReader {
	var s [32]byte
	s[0] = seed
	return &randReader{src: rand.NewChaCha8(s), n: n}
}

func (r *randReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	n, _ := r.src.Read(p)
	r.n -= int64(n)
	return n, nil
}

// heapPeak samples the heap in use until stop is called, and returns the
// highest sample.
func heapPeak() (stop func() uint64) {
	var (
		mu   sync.Mutex
		peak uint64
		done = make(chan struct{})
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			mu.Lock()
			peak = max(peak, ms.HeapInuse)
			mu.Unlock()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak
	}
}

// TestLargeObjectStreamsInBoundedMemory writes a 256 MiB object through a
// tenant's view of a file:// bucket and reads it back, sampling the heap
// every 10 ms: the peak stays within 64 MiB of the heap before, and the
// bytes read back are the bytes written (SHA-256).
func TestLargeObjectStreamsInBoundedMemory(t *testing.T) {
	const size = 256 << 20
	const bound = 64 << 20
	be := fileBackend(t)
	km := newManager(t)
	_, ctx := provision(t, km, "acme")
	v := view(t, be.open(t, km), ctx)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	stop := heapPeak()

	w, err := v.NewWriter(ctx, "big.bin", &gcblob.WriterOptions{ContentType: "application/octet-stream"})
	if err != nil {
		t.Fatal(err)
	}
	hw := sha256.New()
	if _, err := io.Copy(io.MultiWriter(w, hw), newRandReader(1, size)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := v.NewReader(ctx, "big.bin", nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Size() != size {
		t.Errorf("reader size %d, want %d", r.Size(), size)
	}
	hr := sha256.New()
	n, err := io.Copy(hr, r)
	if err != nil || n != size {
		t.Fatalf("read %d bytes, %v", n, err)
	}
	_ = r.Close()
	peak := stop()
	if !bytes.Equal(hw.Sum(nil), hr.Sum(nil)) {
		t.Error("the bytes read back differ from those written")
	}
	t.Logf("heap in use: %d KiB before, peak %d KiB (+%d KiB) for a %d MiB object", base>>10, peak>>10, (peak-base)>>10, size>>20)
	if peak > base+bound {
		t.Errorf("heap peak %d MiB above the %d MiB before, want < %d MiB", (peak-base)>>20, base>>20, bound>>20)
	}
}

// TestSizeArithmetic: the v1 ciphertext size of every plaintext size
// around the segment boundaries is what the stream cipher writes, and
// plaintextSize inverts it, refusing sizes no ciphertext has.
func TestSizeArithmetic(t *testing.T) {
	for c := int64(0); c < 3*4096+100; c++ {
		n, ok := blob.PlaintextSize(c)
		if ok && blob.CiphertextSize(n) != c {
			t.Fatalf("PlaintextSize(%d) = %d, whose ciphertext is %d", c, n, blob.CiphertextSize(n))
		}
	}
	for n := int64(0); n < 3*4096+100; n++ {
		if got, ok := blob.PlaintextSize(blob.CiphertextSize(n)); !ok || got != n {
			t.Fatalf("PlaintextSize(CiphertextSize(%d)) = %d, %v", n, got, ok)
		}
	}
	// Against the stream cipher itself, through a view (TestRoundTrip
	// checks stored sizes too).
	km := newManager(t)
	_, ctx := provision(t, km, "acme")
	be := memBackend(t)
	v := view(t, be.open(t, km), ctx)
	for _, n := range []int{0, 4039, 4040, 4041, 8120, 8121, 12200, 12201, 1 << 20} {
		if err := v.WriteAll(ctx, "k", make([]byte, n), nil); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if a, err := v.Attributes(ctx, "k"); err != nil || a.Size != int64(n) {
			t.Fatalf("%d bytes: Attributes size %v, %v", n, a, err)
		}
	}
}

// TestRangeReads: reads from an offset, of a length, past the end, and
// seeking, return the plaintext's bytes.
func TestRangeReads(t *testing.T) {
	km := newManager(t)
	_, ctx := provision(t, km, "acme")
	v := view(t, memBackend(t).open(t, km), ctx)
	data := make([]byte, 50_000)
	_, _ = newRandReader(2, int64(len(data))).Read(data)
	if err := v.WriteAll(ctx, "k", data, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ off, n int64 }{{0, 0}, {0, 1}, {4039, 3}, {4040, 5000}, {12345, -1}, {49_999, 10}, {50_000, -1}, {60_000, 5}} {
		r, err := v.NewRangeReader(ctx, "k", c.off, c.n, nil)
		if err != nil {
			t.Fatalf("range %v: %v", c, err)
		}
		got, err := io.ReadAll(r)
		_ = r.Close()
		end := int64(len(data))
		if c.n >= 0 {
			end = min(end, c.off+c.n)
		}
		want := data[min(c.off, int64(len(data))):max(end, min(c.off, int64(len(data))))]
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("range %v: %d bytes, %v; want %d", c, len(got), err, len(want))
		}
	}
}

// TestFailedWritesStoreNothing: a write whose context is cancelled, or
// whose ContentMD5 does not match, stores nothing and leaves an earlier
// object as it was.
func TestFailedWritesStoreNothing(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			_, actx := provision(t, km, "acme")
			v := view(t, be.open(t, km), actx)
			if err := v.WriteAll(actx, "kept", []byte("old"), nil); err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{"new", "kept"} {
				cctx, cancel := context.WithCancel(actx)
				w, err := v.NewWriter(cctx, key, &gcblob.WriterOptions{ContentType: "text/plain"})
				if err != nil {
					t.Fatal(err)
				}
				_, _ = w.Write(bytes.Repeat([]byte("y"), 10_000))
				cancel()
				if err := w.Close(); err == nil {
					t.Errorf("%s: Close after cancel: nil error", key)
				}
				err = v.WriteAll(actx, key, []byte("new content"), &gcblob.WriterOptions{ContentMD5: []byte("0123456789abcdef")})
				if err == nil {
					t.Errorf("%s: write with a wrong ContentMD5: nil error", key)
				}
			}
			if ok, _ := v.Exists(actx, "new"); ok {
				t.Error("a failed write stored an object")
			}
			if got, err := v.ReadAll(actx, "kept"); err != nil || string(got) != "old" {
				t.Errorf("earlier object: %q, %v", got, err)
			}
		})
	}
}

// TestReservedMetadataAndSignedURL: metadata keys of the package are
// refused, signed URLs are not offered.
func TestReservedMetadataAndSignedURL(t *testing.T) {
	km := newManager(t)
	_, ctx := provision(t, km, "acme")
	v := view(t, memBackend(t).open(t, km), ctx)
	err := v.WriteAll(ctx, "k", []byte("x"), &gcblob.WriterOptions{Metadata: map[string]string{"Tenancy-Blob": "v0"}})
	if gcerrors.Code(err) != gcerrors.InvalidArgument {
		t.Errorf("reserved metadata key: %v, want InvalidArgument", err)
	}
	if _, err := v.SignedURL(ctx, "k", nil); gcerrors.Code(err) != gcerrors.Unimplemented {
		t.Errorf("SignedURL: %v, want Unimplemented", err)
	}
	var s3client any
	if v.As(&s3client) {
		t.Error("As exposed the platform's bucket")
	}
}
