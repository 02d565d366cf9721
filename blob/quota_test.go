package blob_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gcblob "gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// c is the stored size of an encrypted object of n bytes.
func c(n int64) int64 { return blob.CiphertextSize(n) }

// stored returns what the storage holds under prefix of raw, listed past
// any view: the sum of the stored sizes and the number of objects.
func stored(t testing.TB, raw *gcblob.Bucket, prefix string) store.BlobUsage {
	t.Helper()
	var u store.BlobUsage
	it := raw.List(&gcblob.ListOptions{Prefix: prefix})
	for {
		o, err := it.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return u
		}
		if err != nil {
			t.Fatal(err)
		}
		u.Bytes += o.Size
		u.Objects++
	}
}

// checkSettled fails unless the account of ctx's tenant records what raw
// holds under its prefix, with nothing pending.
func checkSettled(t testing.TB, b *blob.Buckets, raw *gcblob.Bucket, ctx context.Context) store.BlobAccount {
	t.Helper()
	id, _ := tenant.FromContext(ctx)
	a := usage(t, b, ctx)
	if want := stored(t, raw, blob.TenantPrefix(id)); a.Used != want || a.Pending != (store.BlobUsage{}) || a.NeedsReconcile {
		t.Errorf("account %+v; storage holds %+v (want it as Used, nothing pending)", a, want)
	}
	return a
}

// quotaError returns the *QuotaError of err, failing unless it is one
// with gocloud code ResourceExhausted.
func quotaError(t testing.TB, err error) *blob.QuotaError {
	t.Helper()
	var qe *blob.QuotaError
	if !errors.Is(err, blob.ErrQuotaExceeded) || !errors.As(err, &qe) || gcerrors.Code(err) != gcerrors.ResourceExhausted {
		t.Fatalf("error %v (code %v): want a *QuotaError, code ResourceExhausted", err, gcerrors.Code(err))
	}
	return qe
}

// TestQuotaRefusesAndLeavesNothingBehind, on every backend: a write past
// the byte quota fails with a QuotaError naming the limit, the usage and
// the limit, and stores nothing; an overwrite past it leaves the old
// object as it was; usage is what storage holds.
func TestQuotaRefusesAndLeavesNothingBehind(t *testing.T) {
	cp := newControlPlane(t)
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			id, ctx := cp.tenant(t, km, "acme", tenant.TierStandard)
			cp.setQuota(t, id, store.BlobLimits{Bytes: 3 * c(1000), Objects: 10})
			b := be.open(t, km, blob.WithQuotas(cp.quotas(time.Minute)))
			v := view(t, b, ctx)
			for _, k := range []string{"a", "b", "c"} {
				if err := v.WriteAll(ctx, k, secret("acme", 1000), nil); err != nil {
					t.Fatal(err)
				}
			}
			qe := quotaError(t, v.WriteAll(ctx, "d", secret("acme", 1000), nil))
			if want := (blob.QuotaError{Tenant: id, Limit: "bytes", Usage: 3 * c(1000), Change: c(1000), Max: 3 * c(1000)}); *qe != want {
				t.Errorf("QuotaError %+v, want %+v", *qe, want)
			}
			if ok, err := be.raw.Exists(ctx, blob.TenantPrefix(id)+"d"); ok || err != nil {
				t.Errorf("the refused object is stored (%v)", err)
			}
			quotaError(t, v.WriteAll(ctx, "a", bytes.Repeat([]byte("y"), 2000), nil))
			if got, err := v.ReadAll(ctx, "a"); err != nil || !bytes.Equal(got, secret("acme", 1000)) {
				t.Errorf("after a refused overwrite the object reads %d bytes, %v; want the old 1000", len(got), err)
			}
			if a := checkSettled(t, b, be.raw, ctx); a.Used != (store.BlobUsage{Bytes: 3 * c(1000), Objects: 3}) {
				t.Errorf("Used %+v, want three objects of 1000 bytes", a.Used)
			}
		})
	}
}

// TestQuotaAtExactlyItsLimit: a tenant may fill its quota to the byte and
// the object, and then store nothing more (not even an empty object),
// while overwrites that add nothing and deletes go on.
func TestQuotaAtExactlyItsLimit(t *testing.T) {
	cp := newControlPlane(t)
	km := newManager(t)
	be := memBackend(t)
	b := be.open(t, km, blob.WithQuotas(cp.quotas(time.Minute)))

	id, ctx := cp.tenant(t, km, "bytes", tenant.TierStandard)
	cp.setQuota(t, id, store.BlobLimits{Bytes: 2 * c(1000), Objects: store.NoLimit})
	v := view(t, b, ctx)
	write := func(key string, n int) error { return v.WriteAll(ctx, key, bytes.Repeat([]byte{byte(n)}, n), nil) }
	for _, k := range []string{"a", "b"} {
		if err := write(k, 1000); err != nil {
			t.Fatal(err)
		}
	}
	if qe := quotaError(t, write("empty", 0)); qe.Limit != "bytes" || qe.Usage != qe.Max || qe.Change != c(0) {
		t.Errorf("an empty object at the limit: %+v", *qe)
	}
	if err := write("a", 1000); err != nil {
		t.Errorf("an overwrite of the same size at the limit: %v", err)
	}
	quotaError(t, write("a", 1001))
	if err := write("a", 500); err != nil {
		t.Fatal(err)
	}
	// c(1000) - c(500) = 500 stored bytes are left: 444 plaintext bytes.
	if err := write("c", 444); err != nil {
		t.Errorf("a write to the byte of the limit: %v", err)
	}
	if a := checkSettled(t, b, be.raw, ctx); a.Used.Bytes != a.Limits.Bytes {
		t.Errorf("Used %+v, want exactly the limit %+v", a.Used, a.Limits)
	}
	quotaError(t, write("d", 0))

	id, ctx = cp.tenant(t, km, "objects", tenant.TierStandard)
	cp.setQuota(t, id, store.BlobLimits{Bytes: store.NoLimit, Objects: 2})
	v = view(t, b, ctx)
	for _, k := range []string{"a", "b"} {
		if err := write(k, 10); err != nil {
			t.Fatal(err)
		}
	}
	if qe := quotaError(t, write("c", 10)); qe.Limit != "objects" || qe.Usage != 2 || qe.Change != 1 || qe.Max != 2 {
		t.Errorf("a third object: %+v", *qe)
	}
	if err := write("b", 5000); err != nil {
		t.Errorf("an overwrite at the object limit: %v", err)
	}
	if err := v.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := write("c", 10); err != nil {
		t.Errorf("a write after a delete freed an object: %v", err)
	}
	checkSettled(t, b, be.raw, ctx)
}

// TestQuotaOverrideBelowUsage: limits of a tenant's own set below what it
// stores refuse every write that adds bytes or objects, and let the
// others (same-size or smaller overwrites, deletes) through; cleared, the
// tier's limits apply again.
func TestQuotaOverrideBelowUsage(t *testing.T) {
	cp := newControlPlane(t)
	km := newManager(t)
	be := memBackend(t)
	b := be.open(t, km, blob.WithQuotas(cp.quotas(time.Minute)))
	id, ctx := cp.tenant(t, km, "acme", tenant.TierStandard)
	v := view(t, b, ctx)
	for i := range 5 {
		if err := v.WriteAll(ctx, fmt.Sprint(i), make([]byte, 1000), nil); err != nil {
			t.Fatal(err)
		}
	}
	cp.setQuota(t, id, store.BlobLimits{Bytes: 2 * c(1000), Objects: 2})
	if a := usage(t, b, ctx); !a.Override || a.Used.Objects != 5 || a.Limits.Objects != 2 {
		t.Errorf("account %+v: want the override, 5 objects over a limit of 2", a)
	}
	if qe := quotaError(t, v.WriteAll(ctx, "new", nil, nil)); qe.Usage != 5*c(1000) || qe.Max != 2*c(1000) {
		t.Errorf("a new object over the limit: %+v", *qe)
	}
	quotaError(t, v.WriteAll(ctx, "0", make([]byte, 1001), nil))
	for _, n := range []int{1000, 10} {
		if err := v.WriteAll(ctx, "0", make([]byte, n), nil); err != nil {
			t.Errorf("an overwrite with %d bytes over the limit: %v", n, err)
		}
	}
	if err := v.Delete(ctx, "1"); err != nil {
		t.Errorf("a delete over the limit: %v", err)
	}
	if err := cp.admin.ClearBlobQuota(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAll(ctx, "new", nil, nil); err != nil {
		t.Errorf("a write under the tier's limits again: %v", err)
	}
	if a := checkSettled(t, b, be.raw, ctx); a.Override || a.Limits != blob.DefaultQuotas(nil).Tiers[tenant.TierStandard] {
		t.Errorf("account %+v: want the standard tier's limits", a)
	}
}

// TestQuotaTierDefaults: each tenant gets its tier's limits from
// Quotas.Tiers, unless it has its own.
func TestQuotaTierDefaults(t *testing.T) {
	cp := newControlPlane(t)
	km := newManager(t)
	q := cp.quotas(time.Minute)
	q.Tiers[tenant.TierStandard] = store.BlobLimits{Bytes: store.NoLimit, Objects: 1}
	q.Tiers[tenant.TierEnterprise] = store.BlobLimits{Bytes: store.NoLimit, Objects: 2}
	b := memBackend(t).open(t, km, blob.WithQuotas(q))
	q.Tiers[tenant.TierStandard] = store.BlobLimits{} // WithQuotas took a copy
	for _, tc := range []struct {
		tier  tenant.Tier
		fits  int
		own   *store.BlobLimits
		limit int64
	}{
		{tenant.TierStandard, 1, nil, 1},
		{tenant.TierEnterprise, 2, nil, 2},
		{tenant.TierStandard, 3, &store.BlobLimits{Bytes: store.NoLimit, Objects: 3}, 3},
	} {
		id, ctx := cp.tenant(t, km, "tier", tc.tier)
		if tc.own != nil {
			cp.setQuota(t, id, *tc.own)
		}
		v := view(t, b, ctx)
		for i := range tc.fits {
			if err := v.WriteAll(ctx, fmt.Sprint(i), nil, nil); err != nil {
				t.Fatalf("%s tenant, object %d: %v", tc.tier, i, err)
			}
		}
		if qe := quotaError(t, v.WriteAll(ctx, "one-more", nil, nil)); qe.Max != tc.limit || qe.Limit != "objects" {
			t.Errorf("%s tenant: %+v, want the object limit %d", tc.tier, *qe, tc.limit)
		}
	}
}

// TestQuotasRefuseInvalidConfig: Quotas need a usage store, a positive
// lease, and valid limits for every tier.
func TestQuotasRefuseInvalidConfig(t *testing.T) {
	for name, change := range map[string]func(*blob.Quotas){
		"no usage store": func(q *blob.Quotas) { q.Usage = nil },
		"no lease":       func(q *blob.Quotas) { q.Lease = 0 },
		"a tier missing": func(q *blob.Quotas) { delete(q.Tiers, tenant.TierGovernment) },
		"a bad limit":    func(q *blob.Quotas) { q.Tiers[tenant.TierStandard] = store.BlobLimits{Bytes: -2} },
	} {
		q := blob.DefaultQuotas(new(store.Blobs))
		change(&q)
		if _, err := blob.Open(t.Context(), "mem://", nil, blob.WithoutEncryption(), blob.WithQuotas(q)); err == nil {
			t.Errorf("%s: Open succeeded", name)
		}
	}
	b, err := blob.Open(t.Context(), "mem://", nil, blob.WithoutEncryption(), blob.WithQuotas(blob.DefaultQuotas(new(store.Blobs))))
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
}

// TestQuotaConcurrentWriters, on every backend: 16 goroutines racing one
// tenant's byte quota with new objects, overwrites of shared keys of any
// size and deletes never hold (used and pending) more than the limit, nor
// store more, and end with usage equal to what the bucket holds.
func TestQuotaConcurrentWriters(t *testing.T) {
	cp := newControlPlane(t)
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			id, ctx := cp.tenant(t, km, "race", tenant.TierStandard)
			limit := 40 * c(1000)
			cp.setQuota(t, id, store.BlobLimits{Bytes: limit, Objects: store.NoLimit})
			b := be.open(t, km, blob.WithQuotas(cp.quotas(time.Minute)))
			v := view(t, b, ctx)

			stop, monitored := make(chan struct{}), make(chan struct{})
			var worst atomic.Int64
			go func() {
				defer close(monitored)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if a, err := b.Usage(ctx); err == nil {
						if held := a.Used.Bytes + a.Pending.Bytes; held > worst.Load() {
							worst.Store(held)
						}
					}
				}
			}()
			var wrote, refused atomic.Int64
			var wg sync.WaitGroup
			for g := range 16 {
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(g), 2))
					for i := range 8 {
						key, n := fmt.Sprintf("g%d/%d", g, i), 1000
						switch r.IntN(4) {
						case 0:
							key, n = fmt.Sprintf("shared/%d", r.IntN(4)), r.IntN(3000)
						case 1:
							if i > 0 {
								if err := v.Delete(ctx, fmt.Sprintf("g%d/%d", g, i-1)); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
									t.Error(err)
								}
							}
						}
						switch err := v.WriteAll(ctx, key, make([]byte, n), nil); {
						case err == nil:
							wrote.Add(1)
						case errors.Is(err, blob.ErrQuotaExceeded):
							refused.Add(1)
						default:
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			close(stop)
			<-monitored
			if worst.Load() > limit {
				t.Errorf("usage and reservations reached %d, over the limit %d", worst.Load(), limit)
			}
			if refused.Load() == 0 || wrote.Load() < 40 {
				t.Errorf("%d writes, %d refused: the race did not reach the quota", wrote.Load(), refused.Load())
			}
			if a := checkSettled(t, b, be.raw, ctx); a.Used.Bytes > limit {
				t.Errorf("storage holds %d bytes, over the limit %d", a.Used.Bytes, limit)
			}
			t.Logf("%d writes, %d refused, at most %d of %d bytes held", wrote.Load(), refused.Load(), worst.Load(), limit)
		})
	}
}

// TestQuotaCancelledWrite, on every backend: a write whose context is
// cancelled midway, or just as it commits, stores nothing, counts nothing
// and leaves no hold on its key.
func TestQuotaCancelledWrite(t *testing.T) {
	cp := newControlPlane(t)
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			id, ctx := cp.tenant(t, km, "cancel", tenant.TierStandard)
			b := be.open(t, km, blob.WithQuotas(cp.quotas(time.Minute)))
			v := view(t, b, ctx)

			wctx, cancel := context.WithCancel(ctx)
			w, err := v.NewWriter(wctx, "midway", nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(make([]byte, 200<<10)); err != nil {
				t.Fatal(err)
			}
			cancel()
			_, _ = w.Write(make([]byte, 200<<10))
			if err := w.Close(); err == nil {
				t.Error("a cancelled write closed without error")
			}

			wctx, cancel = context.WithCancel(ctx)
			restore := blob.SetQuotaHook(func(stage string) {
				if stage == "reserved" {
					cancel()
				}
			})
			err = v.WriteAll(wctx, "committing", make([]byte, 1000), nil)
			restore()
			if err == nil {
				t.Error("a write cancelled as it committed succeeded")
			}
			for _, k := range []string{"midway", "committing"} {
				if ok, _ := be.raw.Exists(ctx, blob.TenantPrefix(id)+k); ok {
					t.Errorf("the cancelled write of %s is stored", k)
				}
			}
			checkSettled(t, b, be.raw, ctx)
			// No hold is left: writing the keys again does not wait for a lease.
			tctx, done := context.WithTimeout(ctx, 20*time.Second)
			defer done()
			for _, k := range []string{"midway", "committing"} {
				if err := v.WriteAll(tctx, k, []byte("again"), nil); err != nil {
					t.Errorf("writing %s again: %v", k, err)
				}
			}
			checkSettled(t, b, be.raw, ctx)
		})
	}
}

// TestQuotaRefusesEarly: a stream far past the quota is refused while it
// is written, long before its end, having stored nothing; an overwrite at
// the limit of an object with one of its size is not refused early.
func TestQuotaRefusesEarly(t *testing.T) {
	cp := newControlPlane(t)
	km := newManager(t)
	be := memBackend(t)
	b := be.open(t, km, blob.WithQuotas(cp.quotas(time.Minute)))
	id, ctx := cp.tenant(t, km, "early", tenant.TierStandard)
	const quota = 2 << 20
	cp.setQuota(t, id, store.BlobLimits{Bytes: quota, Objects: store.NoLimit})
	v := view(t, b, ctx)
	w, err := v.NewWriter(ctx, "huge", nil)
	if err != nil {
		t.Fatal(err)
	}
	var sent int64
	chunk := make([]byte, 64<<10)
	for sent < 64<<20 {
		if _, err = w.Write(chunk); err != nil {
			break
		}
		sent += int64(len(chunk))
	}
	quotaError(t, err)
	if sent > 2*quota+1<<20 {
		t.Errorf("refused after %d bytes of a quota of %d: want at most about twice the quota", sent, quota)
	}
	quotaError(t, w.Close())
	checkSettled(t, b, be.raw, ctx)

	cp.setQuota(t, id, store.BlobLimits{Bytes: c(3 << 20), Objects: store.NoLimit})
	for i := range 2 {
		if err := v.WriteAll(ctx, "big", bytes.Repeat([]byte{byte(i)}, 3<<20), nil); err != nil {
			t.Errorf("write %d of an object the size of the quota: %v", i, err)
		}
	}
	checkSettled(t, b, be.raw, ctx)
}

// TestQuotaAccountsEveryChange: writes, overwrites (larger and smaller),
// copies (new and onto an object), deletes (and of what is not there)
// each move usage by what they change in storage, encrypted or not.
func TestQuotaAccountsEveryChange(t *testing.T) {
	cp := newControlPlane(t)
	for _, mode := range []struct {
		name string
		opts []blob.Option
		size func(int64) int64
	}{
		{"encrypted", nil, c},
		{"plaintext", []blob.Option{blob.WithoutEncryption()}, func(n int64) int64 { return n }},
	} {
		t.Run(mode.name, func(t *testing.T) {
			km := newManager(t)
			be := memBackend(t)
			b := be.open(t, km, append(mode.opts, blob.WithQuotas(cp.quotas(time.Minute)))...)
			_, ctx := cp.tenant(t, km, "every", tenant.TierStandard)
			v := view(t, b, ctx)
			s := mode.size
			for i, step := range []struct {
				what string
				do   func() error
				want store.BlobUsage
			}{
				{"write a", func() error { return v.WriteAll(ctx, "a", make([]byte, 1000), nil) }, store.BlobUsage{Bytes: s(1000), Objects: 1}},
				{"grow a", func() error { return v.WriteAll(ctx, "a", make([]byte, 5000), nil) }, store.BlobUsage{Bytes: s(5000), Objects: 1}},
				{"copy a to b", func() error { return v.Copy(ctx, "b", "a", nil) }, store.BlobUsage{Bytes: 2 * s(5000), Objects: 2}},
				{"shrink b", func() error { return v.WriteAll(ctx, "b", make([]byte, 10), nil) }, store.BlobUsage{Bytes: s(5000) + s(10), Objects: 2}},
				{"copy a onto b", func() error { return v.Copy(ctx, "b", "a", nil) }, store.BlobUsage{Bytes: 2 * s(5000), Objects: 2}},
				{"delete a", func() error { return v.Delete(ctx, "a") }, store.BlobUsage{Bytes: s(5000), Objects: 1}},
				{"copy the deleted a", func() error { return v.Copy(ctx, "c", "a", nil) }, store.BlobUsage{Bytes: s(5000), Objects: 1}},
				{"delete a again", func() error { return v.Delete(ctx, "a") }, store.BlobUsage{Bytes: s(5000), Objects: 1}},
				{"delete b", func() error { return v.Delete(ctx, "b") }, store.BlobUsage{}},
			} {
				err := step.do()
				if gcerrors.Code(err) == gcerrors.NotFound && i >= 6 {
					err = nil
				}
				if err != nil {
					t.Fatalf("%s: %v", step.what, err)
				}
				if a := checkSettled(t, b, be.raw, ctx); a.Used != step.want {
					t.Errorf("after %s: Used %+v, want %+v", step.what, a.Used, step.want)
				}
			}
		})
	}
}

// countingReader counts what is read through it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestQuotaDoesNotTrustContentLength: behind an HTTP handler that streams
// request bodies into a tenant's view, what is counted is what is stored,
// whatever Content-Length says: a length smaller than the body stores
// and counts the declared bytes; a huge one, or a negative or overflowing
// one, stores nothing; a chunked body past the quota is refused while it
// streams, nothing stored.
func TestQuotaDoesNotTrustContentLength(t *testing.T) {
	cp := newControlPlane(t)
	km := newManager(t)
	be := memBackend(t)
	b := be.open(t, km, blob.WithQuotas(cp.quotas(time.Minute)))
	id, ctx := cp.tenant(t, km, "http", tenant.TierStandard)
	const quota = 1 << 20
	cp.setQuota(t, id, store.BlobLimits{Bytes: quota, Objects: store.NoLimit})
	v := view(t, b, ctx)
	var read atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		bw, err := v.NewWriter(wctx, strings.TrimPrefix(r.URL.Path, "/"), nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body := &countingReader{r: r.Body}
		_, err = io.Copy(bw, body)
		read.Store(body.n.Load())
		if err != nil {
			cancel() // abort: store nothing
		}
		if cerr := bw.Close(); err == nil {
			err = cerr
		}
		switch {
		case errors.Is(err, blob.ErrQuotaExceeded):
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
		default:
			w.WriteHeader(http.StatusCreated)
		}
	}))
	t.Cleanup(srv.Close)
	send := func(key, length string, body []byte) string {
		t.Helper()
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(conn, "PUT /%s HTTP/1.1\r\nHost: tenancy\r\nContent-Length: %s\r\n\r\n", key, length)
		_, _ = conn.Write(body)
		_ = conn.(*net.TCPConn).CloseWrite()
		status, _ := bufio.NewReader(conn).ReadString('\n')
		return strings.TrimSpace(status)
	}
	exists := func(key string) bool {
		ok, err := be.raw.Exists(ctx, blob.TenantPrefix(id)+key)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}

	if got := send("small", "10", make([]byte, 5000)); !strings.Contains(got, "201") {
		t.Errorf("declared 10 of 5000 bytes: %q, want 201", got)
	}
	if a, err := v.Attributes(ctx, "small"); err != nil || a.Size != 10 {
		t.Errorf("declared 10 of 5000 bytes: stored %v bytes (%v), want 10", a, err)
	}
	for _, length := range []string{"9223372036854775807", "-5", "99999999999999999999999", "0x10"} {
		key := "lie" + strings.NewReplacer("-", "m").Replace(length)
		got := send(key, length, make([]byte, 5000))
		if strings.Contains(got, "201") || exists(key) {
			t.Errorf("Content-Length %s: %q, stored %v; want an error and nothing stored", length, got, exists(key))
		}
	}
	if a := checkSettled(t, b, be.raw, ctx); a.Used != (store.BlobUsage{Bytes: c(10), Objects: 1}) {
		t.Errorf("Used %+v, want the 10 bytes stored", a.Used)
	}

	// Chunked, no length at all, 8 MiB against 1 MiB.
	body := &countingReader{r: io.LimitReader(zeros{}, 8<<20)}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, srv.URL+"/chunked", body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("8 MiB chunked over a quota of 1 MiB: %s, want 413", resp.Status)
		}
	}
	if exists("chunked") || read.Load() > 4<<20 {
		t.Errorf("8 MiB chunked over a quota of 1 MiB: stored %v, the handler read %d bytes; want nothing stored, refused before 4 MiB", exists("chunked"), read.Load())
	}
	checkSettled(t, b, be.raw, ctx)
}

// zeros reads zero bytes forever.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestReconcileRecountsWhatTheViewDidNotWrite: objects written or deleted
// past the view (by a storage admin, under the tenant's prefix) are not
// in the account until Reconcile, which records what storage holds; the
// platform's Purge leaves the account at zero.
func TestReconcileRecountsWhatTheViewDidNotWrite(t *testing.T) {
	cp := newControlPlane(t)
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			id, ctx := cp.tenant(t, km, "drift", tenant.TierStandard)
			b := be.open(t, km, blob.WithQuotas(cp.quotas(time.Minute)))
			v := view(t, b, ctx)
			for i := range 5 {
				if err := v.WriteAll(ctx, fmt.Sprint(i), make([]byte, 100*i), nil); err != nil {
					t.Fatal(err)
				}
			}
			p := blob.TenantPrefix(id)
			if err := be.raw.WriteAll(ctx, p+"raw junk", make([]byte, 777), nil); err != nil {
				t.Fatal(err)
			}
			if err := be.raw.Delete(ctx, p+"3"); err != nil {
				t.Fatal(err)
			}
			before := usage(t, b, ctx).Used
			res, err := b.Reconcile(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if want := stored(t, be.raw, p); res.Before != before || res.After != want || res.Dropped != (store.BlobUsage{}) {
				t.Errorf("Reconcile = %+v; want Before %+v, After %+v", res, before, want)
			}
			checkSettled(t, b, be.raw, ctx)
			if _, err := b.Purge(t.Context(), id); err != nil {
				t.Fatal(err)
			}
			if a := checkSettled(t, b, be.raw, ctx); a.Used != (store.BlobUsage{}) {
				t.Errorf("after Purge: Used %+v, want nothing", a.Used)
			}
		})
	}
}

// TestErrQuotaExceededIsTenants: blob, store and tenant share one
// sentinel, so errors.Is finds a blob quota refusal by any of their names.
func TestErrQuotaExceededIsTenants(t *testing.T) {
	if blob.ErrQuotaExceeded != tenant.ErrQuotaExceeded || store.ErrBlobQuotaExceeded != tenant.ErrQuotaExceeded {
		t.Fatalf("blob.ErrQuotaExceeded %p, store.ErrBlobQuotaExceeded %p: want both tenant.ErrQuotaExceeded %p",
			blob.ErrQuotaExceeded, store.ErrBlobQuotaExceeded, tenant.ErrQuotaExceeded)
	}
	var err error = fmt.Errorf("blob: write: %w", &blob.QuotaError{Tenant: tenant.MustParseID("acme"), Limit: store.QuotaBytes})
	if !errors.Is(err, tenant.ErrQuotaExceeded) {
		t.Fatalf("errors.Is(%v, tenant.ErrQuotaExceeded) = false", err)
	}
}
