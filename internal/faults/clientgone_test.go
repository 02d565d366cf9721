package faults_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// newLocalKeys returns a keys.Manager over ks with the local master key in
// file kekPath (created on first use).
func newLocalKeys(t testing.TB, kekPath string, ks keys.Store) *keys.Manager {
	t.Helper()
	local, err := localkms.NewClient(localkms.Scheme)
	if err != nil {
		t.Fatal(err)
	}
	uri, err := localkms.KeyURI(kekPath)
	if err != nil {
		t.Fatal(err)
	}
	kc := keys.DefaultConfig()
	kc.Store, kc.KMS, kc.PlatformKEK = ks, []registry.KMSClient{local}, keys.URI(uri)
	m, err := keys.New(kc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// uploadResult is what the upload handler saw of each step.
type uploadResult struct {
	tx, audit, blob error
}

// uploadService is an RTMX-like service whose upload handler writes, for
// the tenant in the path, a row in writes and one in pairs in one
// transaction around storing the body as an object, then an audit entry.
// The uploads of tenants in stall signal on reading: odd-numbered ones
// after reading 64 KiB of their body, even-numbered ones between the
// transaction's two statements, where they wait for the client to go
// away.
type uploadService struct {
	db      *store.DB
	buckets *blob.Buckets
	log     *audit.Log

	stall   sync.Map      // tenant.ID -> true: wait for the client to go away
	reading chan struct{} // receives once a stalled upload has read some of its body
	results chan uploadResult
}

func (s *uploadService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, err := tenant.ParseID(r.PathValue("tenant"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var seq int64
	if _, err := fmt.Sscan(r.PathValue("seq"), &seq); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx := tenant.NewContext(r.Context(), id)
	_, stall := s.stall.Load(id)
	key := fmt.Sprintf("attachments/%d", seq)
	var res uploadResult
	res.tx = s.db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO writes (owner, seq) VALUES ($1, $2)`, id.String(), seq); err != nil {
			return err
		}
		bucket, err := s.buckets.For(ctx)
		if err != nil {
			return err
		}
		defer bucket.Close()
		// A write is aborted by cancelling its context before Close.
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		bw, err := bucket.NewWriter(wctx, key, nil)
		if err != nil {
			return err
		}
		var body io.Reader = r.Body
		if stall && seq%2 == 1 {
			body = &signalReader{r: r.Body, after: 64 << 10, signal: s.reading}
		}
		if _, err := io.Copy(bw, body); err != nil {
			cancel()
			_ = bw.Close()
			res.blob = err
			return err
		}
		if err := bw.Close(); err != nil {
			res.blob = err
			return err
		}
		if stall && seq%2 == 0 {
			s.reading <- struct{}{}
			<-ctx.Done() // the client has gone
		}
		_, err = tx.Exec(ctx, `INSERT INTO pairs (owner, seq) VALUES ($1, $2)`, id.String(), seq)
		return err
	})
	outcome := audit.OutcomeSuccess
	if res.tx != nil {
		outcome = audit.OutcomeFailure
	}
	_, res.audit = s.log.Append(ctx, audit.Event{Actor: "alice@" + id.String(), Action: "attachment.upload", Resource: key, Outcome: outcome})
	if res.tx != nil && res.blob == nil {
		// The transaction failed after the object was stored: remove it,
		// on a context that outlives the request.
		if bucket, err := s.buckets.For(context.WithoutCancel(ctx)); err == nil {
			res.blob = bucket.Delete(context.WithoutCancel(ctx), key)
			bucket.Close()
		}
	}
	if stall {
		s.results <- res
	}
	if res.tx != nil || res.audit != nil {
		http.Error(w, "upload failed", http.StatusInternalServerError)
	}
}

// signalReader sends on signal once after bytes have been read.
type signalReader struct {
	r      io.Reader
	after  int
	read   int
	signal chan<- struct{}
}

func (s *signalReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if s.read < s.after && s.read+n >= s.after {
		s.signal <- struct{}{}
	}
	s.read += n
	return n, err
}

// TestClientGoneMidHandlerLeavesNothingHalfWritten sends uploads to a
// handler that writes rows in a transaction, an object and an audit
// entry, while another tenant's uploads run: one client goes away in the
// middle of its body, another in the middle of the handler, after its
// body. Neither leaves a row of its transaction, nor its object, nor a
// file of it in the bucket's directory; no session is left in a
// transaction; the audit chains of both tenants verify, with an entry per
// upload whose append succeeded; and the other tenant's uploads all
// succeed, whole.
func TestClientGoneMidHandlerLeavesNothingHalfWritten(t *testing.T) {
	d := databaseFor(t, store.ModeTenantLogin).NewDatabase(t)
	f := newFixture(t, d, store.ModeTenantLogin, uniquePrefix("gone"), 2, func(a *store.AdminConfig, _ *store.Config) {
		var err error
		if a.Migrations, err = audit.WithMigration(nil, 1); err != nil {
			t.Fatal(err)
		}
	})
	if err := audit.Install(t.Context(), f.admin); err != nil {
		t.Fatal(err)
	}
	kek := filepath.Join(t.TempDir(), "platform.key")
	prov, km := newLocalKeys(t, kek, f.admin.Keysets()), newLocalKeys(t, kek, f.db.Keysets())
	for _, id := range f.ids {
		if err := prov.Provision(t.Context(), id, keys.ProvisionOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	acfg := audit.DefaultConfig()
	acfg.DB, acfg.Keys = f.db, km
	log, err := audit.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close(context.Background()) })
	dir := t.TempDir()
	buckets, err := blob.Open(t.Context(), "file://"+filepath.ToSlash(dir), km)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { buckets.Close() })

	gone, busy := f.ids[0], f.ids[1]
	svc := &uploadService{db: f.db, buckets: buckets, log: log, reading: make(chan struct{}), results: make(chan uploadResult, 1)}
	svc.stall.Store(gone, true)
	mux := http.NewServeMux()
	mux.Handle("POST /t/{tenant}/upload/{seq}", svc)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	// The busy tenant's uploads, all along.
	stop := make(chan struct{})
	var busyOK atomic.Int64
	var busyErrs []string
	var wg sync.WaitGroup
	wg.Go(func() {
		for seq := int64(1); ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := http.Post(fmt.Sprintf("%s/t/%s/upload/%d", srv.URL, busy, seq), "application/octet-stream",
				bytes.NewReader(bytes.Repeat([]byte{byte(seq)}, 100<<10)))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			if err != nil {
				busyErrs = append(busyErrs, fmt.Sprintf("upload %d: %v", seq, err))
				continue
			}
			busyOK.Store(seq)
		}
	})
	stopBusy := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopBusy)

	// send starts an upload of size bytes for the gone tenant, writes
	// sent of them, waits for the handler's signal and hangs up.
	send := func(seq int64, size, sent int) uploadResult {
		t.Helper()
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /t/%s/upload/%d HTTP/1.1\r\nHost: faults\r\nContent-Length: %d\r\n\r\n", gone, seq, size)
		if _, err := conn.Write(make([]byte, sent)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-svc.reading:
		case <-time.After(10 * time.Second):
			t.Fatalf("upload %d: the handler gave no signal", seq)
		}
		conn.Close()
		select {
		case res := <-svc.results:
			return res
		case <-time.After(10 * time.Second):
			t.Fatalf("upload %d: the handler did not finish", seq)
		}
		return uploadResult{}
	}
	// busyUploads waits for n more uploads of the busy tenant.
	busyUploads := func(n int64) {
		t.Helper()
		want := busyOK.Load() + n
		for deadline := time.Now().Add(10 * time.Second); busyOK.Load() < want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("tenant %s's uploads do not go on: %d, errors %q", busy, busyOK.Load(), busyErrs)
			}
		}
	}
	busyUploads(3)
	midBody := send(1, 1<<20, 128<<10) // gone in the middle of its body
	busyUploads(3)
	midHandler := send(2, 100<<10, 100<<10) // gone after its body, between the statements
	busyUploads(3)
	stopBusy()
	t.Logf("gone in the body: transaction %v; object %v; audit %v", midBody.tx, midBody.blob, midBody.audit)
	t.Logf("gone in the handler: transaction %v; object %v; audit %v", midHandler.tx, midHandler.blob, midHandler.audit)
	for _, res := range []uploadResult{midBody, midHandler} {
		if res.tx == nil {
			t.Errorf("an upload whose client went away committed")
		}
	}
	if !errors.Is(midHandler.tx, context.Canceled) {
		t.Errorf("the transaction of the client gone mid-handler failed with %v, want an error matching context.Canceled", midHandler.tx)
	}
	settled(t, d)

	ctx := tenant.NewContext(t.Context(), gone)
	for _, table := range []string{"writes", "pairs"} {
		if got := seqsOf(t, f.db, ctx, table, 0); len(got) != 0 {
			t.Errorf("rows %v of the uploads whose client went away are in %s", got, table)
		}
	}
	// Nothing of the gone tenant's uploads in the bucket's directory: no
	// object, no temporary file.
	var goneFiles []string
	busyObjects := 0
	err = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		switch {
		case strings.Contains(rel, gone.String()) || !strings.Contains(rel, busy.String()):
			goneFiles = append(goneFiles, rel)
		case !strings.HasSuffix(rel, ".attrs"):
			busyObjects++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(goneFiles) > 0 {
		t.Errorf("files left in the bucket by the uploads whose client went away: %q", goneFiles)
	}

	// Audit: both chains verify, one entry per successful append.
	for id, want := range map[tenant.ID]int64{gone: countNil(midBody.audit, midHandler.audit)} {
		rep, err := log.Verify(tenant.NewContext(t.Context(), id))
		if err != nil {
			t.Errorf("tenant %s's audit chain: %v", id, err)
		} else if rep.Entries != want {
			t.Errorf("tenant %s's audit log has %d entries, want %d", id, rep.Entries, want)
		}
	}
	bctx := tenant.NewContext(t.Context(), busy)
	if rep, err := log.Verify(bctx); err != nil {
		t.Errorf("tenant %s's audit chain: %v", busy, err)
	} else if n := busyOK.Load(); rep.Entries != n || n < 2 {
		t.Errorf("tenant %s: %d audit entries, %d uploads", busy, rep.Entries, n)
	}

	// The busy tenant's uploads are all there, whole.
	if len(busyErrs) > 0 {
		t.Errorf("uploads of tenant %s failed: %q", busy, busyErrs)
	}
	n := busyOK.Load()
	if got := seqsOf(t, f.db, bctx, "pairs", 0); int64(len(got)) != n {
		t.Errorf("tenant %s: %d transactions committed, %d uploads succeeded", busy, len(got), n)
	}
	if int64(busyObjects) != n {
		t.Errorf("tenant %s: %d objects stored, %d uploads succeeded", busy, busyObjects, n)
	}
	bucket, err := buckets.For(bctx)
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	for seq := int64(1); seq <= n; seq++ {
		b, err := bucket.ReadAll(bctx, fmt.Sprintf("attachments/%d", seq))
		if err != nil || !bytes.Equal(b, bytes.Repeat([]byte{byte(seq)}, 100<<10)) {
			t.Errorf("tenant %s: object %d reads %d bytes (%v), want its 100 KiB", busy, seq, len(b), err)
		}
	}
	t.Logf("tenant %s: %d uploads during the test", busy, n)
}

func countNil(errs ...error) int64 {
	n := int64(0)
	for _, err := range errs {
		if err == nil {
			n++
		}
	}
	return n
}
