// Package storetest is a conformance suite for implementations of
// [keys.Store]: [TestStore] checks every clause of the Store contract, as
// testing/fstest does for file systems. keys.MemStore and store.Keysets run it; run it on
// your own Store too.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestStore runs the conformance suite on the Store that newStore returns,
// one subtest per clause of the contract of [keys.Store], named after it
// (for example TestMyStore/PutIsAllOrNothing): a failure names the clause
// that broke.
//
// newStore is called once per subtest, with the subtest's t. It may return
// a new, empty Store or the same shared one every time: each check uses
// tenant IDs and master key URIs of its own (unique to the call, and to
// the process), so the suite runs against a Store that other tests, or
// earlier runs of the suite, have filled. It never lists or counts keysets
// it did not write, except to check that a Store with keysets returns one
// when asked for one.
//
// For example, for a Store kept in some database:
//
//	func TestMyStore(t *testing.T) {
//		db := openTestDatabase(t)
//		storetest.TestStore(t, func(t *testing.T) keys.Store {
//			return mystore.New(db)
//		})
//	}
func TestStore(t *testing.T, newStore func(t *testing.T) keys.Store) {
	t.Helper()
	run := newRun()
	for _, c := range clauses {
		t.Run(c.name, func(t *testing.T) {
			c.check(&checker{T: t, s: newStore(t), run: run})
		})
	}
}

// clauses are the checks of TestStore, one per clause of the contract.
var clauses = []struct {
	name  string
	check func(c *checker)
}{
	{"PutCreatesAndGetReadsBack", putCreatesAndGetReadsBack},
	{"PutIsAllOrNothing", putIsAllOrNothing},
	{"PutCompareAndSwapsOnVersion", putCompareAndSwapsOnVersion},
	{"GetTellsDestroyedFromNeverProvisioned", getTellsDestroyedFromNeverProvisioned},
	{"DeleteRecordsTombstoneWithTenantKEKsIdempotently", deleteRecordsTombstone},
	{"DeleteOfTenantWithoutKeysetsRecordsTombstone", deleteWithoutKeysets},
	{"PutAfterDeleteIsKeyDestroyed", putAfterDeleteIsKeyDestroyed},
	{"ConcurrentPutAndDeleteNeverLeaveKeysetsBesideATombstone", concurrentPutAndDelete},
	{"ListPaginatesInTenantPurposeOrder", listPaginatesInOrder},
	{"ListRespectsLimit", listRespectsLimit},
	{"ListFiltersByKEKURIExactly", listFiltersByKEKURI},
	{"ListFiltersByKEKURIPrefixBytewise", listFiltersByKEKURIPrefix},
	{"PutRefusesAnUnknownKEKKind", putRefusesUnknownKEKKind},
	{"URIsThatPrintRedactedAreStoredAsThemselves", urisStoredAsThemselves},
}

// run makes the tenant IDs and master key URIs of one TestStore, unique to
// it: a random tag of the run and a counter.
type run struct {
	tag string
	seq atomic.Int64
}

func newRun() *run {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	b[0] = alphabet[int(b[0])%26] // IDs start with a letter
	return &run{tag: string(b)}
}

// checker is one subtest: its T, the Store under test, and the run.
type checker struct {
	*testing.T
	s   keys.Store
	run *run
}

// tenant returns a tenant ID no other check uses: st<tag>_<n>.
func (c *checker) tenant() tenant.ID {
	c.Helper()
	s := fmt.Sprintf("st%s_%d", c.run.tag, c.run.seq.Add(1))
	id, err := tenant.ParseID(s)
	if err != nil {
		c.Fatalf("storetest: bad tenant ID %q: %v", s, err)
	}
	return id
}

// kek returns a master key URI no other check uses.
func (c *checker) kek(name string) keys.URI {
	return keys.URI(fmt.Sprintf("storetest://%s/%d/%s", c.run.tag, c.run.seq.Add(1), name))
}

func (c *checker) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c.Cleanup(cancel)
	return ctx
}

func set(id tenant.ID, p keys.Purpose, kek keys.URI, version int64) keys.WrappedKeyset {
	return keys.WrappedKeyset{Tenant: id, Purpose: p, KEKURI: kek, KEKKind: keys.KEKPlatform, Wrapped: []byte("wrapped:" + id.String() + "/" + string(p)), Version: version}
}

// put fails the check unless Put succeeds.
func (c *checker) put(what string, sets ...keys.WrappedKeyset) {
	c.Helper()
	if err := c.s.Put(c.ctx(), sets...); err != nil {
		c.Fatalf("%s: Put: %v", what, err)
	}
}

// putErr fails the check unless Put fails with an error wrapping want.
func (c *checker) putErr(what string, want error, sets ...keys.WrappedKeyset) {
	c.Helper()
	if err := c.s.Put(c.ctx(), sets...); !errors.Is(err, want) {
		c.Errorf("%s: Put returned %v, want an error wrapping %v", what, err, want)
	}
}

// get fails the check unless Get succeeds.
func (c *checker) get(what string, id tenant.ID, p keys.Purpose) keys.WrappedKeyset {
	c.Helper()
	w, err := c.s.Get(c.ctx(), id, p)
	if err != nil {
		c.Fatalf("%s: Get(%s, %s): %v", what, id, p, err)
	}
	return w
}

// getErr fails the check unless Get fails with an error wrapping want, and
// not notWant.
func (c *checker) getErr(what string, id tenant.ID, p keys.Purpose, want, notWant error) {
	c.Helper()
	_, err := c.s.Get(c.ctx(), id, p)
	if !errors.Is(err, want) {
		c.Errorf("%s: Get(%s, %s) returned %v, want an error wrapping %v", what, id, p, err, want)
	} else if errors.Is(err, notWant) {
		c.Errorf("%s: Get(%s, %s) returned %v, which wraps %v as well as %v", what, id, p, err, notWant, want)
	}
}

func (c *checker) del(what string, id tenant.ID) keys.Tombstone {
	c.Helper()
	t, err := c.s.Delete(c.ctx(), id)
	if err != nil {
		c.Fatalf("%s: Delete(%s): %v", what, id, err)
	}
	return t
}

func (c *checker) list(what string, opts keys.ListOptions) []keys.WrappedKeyset {
	c.Helper()
	page, err := c.s.List(c.ctx(), opts)
	if err != nil {
		c.Fatalf("%s: List(%+v): %v", what, opts, err)
	}
	if len(page) > opts.Limit {
		c.Errorf("%s: List(%+v) returned %d keysets, more than Limit", what, opts, len(page))
	}
	return page
}

// listAll pages through List with opts (Limit as given) and returns
// "tenant/purpose" of every keyset, in the order returned.
func (c *checker) listAll(what string, opts keys.ListOptions) []string {
	c.Helper()
	var got []string
	for range 10000 {
		page := c.list(what, opts)
		for _, w := range page {
			k := key(w.Tenant, w.Purpose)
			if !opts.AfterTenant.IsZero() && compareKey(k, key(opts.AfterTenant, opts.AfterPurpose)) <= 0 {
				c.Fatalf("%s: List(%+v) returned %s, which is not after the cursor (%s, %s): not in (tenant, purpose) order, or the cursor is ignored",
					what, opts, k, opts.AfterTenant, opts.AfterPurpose)
			}
			got = append(got, k)
			opts.AfterTenant, opts.AfterPurpose = w.Tenant, w.Purpose
		}
		if len(page) < opts.Limit {
			return got
		}
	}
	c.Fatalf("%s: List does not end (the cursor is ignored?): %d keysets so far", what, len(got))
	return nil
}

func key(id tenant.ID, p keys.Purpose) string { return id.String() + "/" + string(p) }

// compareKey orders "tenant/purpose" keys as List must: by tenant, then
// purpose, byte by byte.
func compareKey(a, b string) int {
	at, ap, _ := strings.Cut(a, "/")
	bt, bp, _ := strings.Cut(b, "/")
	if c := strings.Compare(at, bt); c != 0 {
		return c
	}
	return strings.Compare(ap, bp)
}

// Put creates keysets at version 1, and Get reads them back as written,
// bytes exactly, with CreatedAt and UpdatedAt set by the store.
func putCreatesAndGetReadsBack(c *checker) {
	id, kek := c.tenant(), c.kek("k")
	var sets []keys.WrappedKeyset
	for _, p := range keys.Purposes() {
		sets = append(sets, set(id, p, kek, 0))
	}
	sets[1].KEKKind = keys.KEKTenant
	sets[2].KEKKind = keys.KEKCustomer
	sets[2].Wrapped = []byte{0, 0xff, 0xfe, '\'', '\\', '"', '%', 0} // not UTF-8, quotes, NULs
	before := time.Now().Add(-time.Hour)
	sets[0].CreatedAt, sets[0].UpdatedAt = before.Add(-24*time.Hour), before.Add(-24*time.Hour) // Put sets these itself
	want := slices.Clone(sets)
	for i := range want {
		want[i].Wrapped = slices.Clone(sets[i].Wrapped)
	}
	c.put("create", sets...)
	for i, p := range keys.Purposes() {
		w := c.get("read back", id, p)
		if w.Tenant != id || w.Purpose != p || w.KEKURI != kek || w.KEKKind != want[i].KEKKind {
			c.Errorf("Get(%s, %s) = {Tenant %s, Purpose %s, KEKURI %q, KEKKind %q}, want {%s, %s, %q, %q}",
				id, p, w.Tenant, w.Purpose, w.KEKURI, w.KEKKind, id, p, kek, want[i].KEKKind)
		}
		if !bytes.Equal(w.Wrapped, want[i].Wrapped) {
			c.Errorf("Get(%s, %s).Wrapped = %x, want %x (byte for byte)", id, p, w.Wrapped, want[i].Wrapped)
		}
		if w.Version != 1 {
			c.Errorf("Get(%s, %s).Version = %d after a create, want 1", id, p, w.Version)
		}
		if w.CreatedAt.IsZero() || w.UpdatedAt.IsZero() {
			c.Errorf("Get(%s, %s): CreatedAt %v, UpdatedAt %v: the store must set both", id, p, w.CreatedAt, w.UpdatedAt)
		}
		if w.CreatedAt.Before(before) || w.UpdatedAt.Before(before) {
			c.Errorf("Get(%s, %s): CreatedAt %v, UpdatedAt %v: the store must set them, not keep the caller's", id, p, w.CreatedAt, w.UpdatedAt)
		}
	}
}

// Put writes all of its sets or none: a conflict or a tombstone on any
// one of them, whichever comes first in the list, leaves nothing written.
func putIsAllOrNothing(c *checker) {
	id, kek := c.tenant(), c.kek("k")
	c.put("create audit", set(id, keys.PurposeAudit, kek, 0))

	// data and blob are new, audit exists (last in the list).
	c.putErr("create data, blob and an existing audit", keys.ErrConflict,
		set(id, keys.PurposeData, kek, 0), set(id, keys.PurposeBlob, kek, 0), set(id, keys.PurposeAudit, kek, 0))
	// data is new, the replace of audit is at a stale version.
	c.putErr("create data, replace audit at a stale version", keys.ErrConflict,
		set(id, keys.PurposeData, kek, 0), set(id, keys.PurposeAudit, kek, 7))
	for _, p := range []keys.Purpose{keys.PurposeData, keys.PurposeBlob} {
		c.getErr("after a failed Put", id, p, keys.ErrNoKeys, keys.ErrKeyDestroyed)
	}
	if a := c.get("after a failed Put", id, keys.PurposeAudit); a.Version != 1 {
		c.Errorf("after a failed Put: the audit keyset is at version %d, want 1 (untouched)", a.Version)
	}

	// Across tenants: the second tenant is destroyed.
	other, gone := c.tenant(), c.tenant()
	c.del("destroy a tenant", gone)
	c.putErr("create keysets of a live and a destroyed tenant", keys.ErrKeyDestroyed,
		set(other, keys.PurposeData, kek, 0), set(gone, keys.PurposeData, kek, 0))
	c.getErr("after a failed Put", other, keys.PurposeData, keys.ErrNoKeys, keys.ErrKeyDestroyed)

	if got := c.listAll("list the check's keysets", keys.ListOptions{KEKURI: kek, Limit: 10}); len(got) != 1 {
		c.Errorf("a failed Put left keysets behind: List finds %v, want only %s", got, key(id, keys.PurposeAudit))
	}
}

// Put replaces a keyset only if it is still at the version given
// (compare-and-swap); it creates only what does not exist.
func putCompareAndSwapsOnVersion(c *checker) {
	id, oldKEK, newKEK := c.tenant(), c.kek("old"), c.kek("new")
	c.put("create", set(id, keys.PurposeData, oldKEK, 0))
	w := c.get("read", id, keys.PurposeData)
	created := w.CreatedAt

	w.KEKURI, w.Wrapped, w.KEKKind = newKEK, []byte("rewrapped"), keys.KEKCustomer
	c.put("replace at the version read", w)
	got := c.get("read the replaced keyset", id, keys.PurposeData)
	if got.Version != 2 || got.KEKURI != newKEK || !bytes.Equal(got.Wrapped, []byte("rewrapped")) || got.KEKKind != keys.KEKCustomer {
		c.Errorf("after a replace at version 1: Version %d, KEKURI %q, Wrapped %q, KEKKind %q; want 2, %q, \"rewrapped\", customer",
			got.Version, got.KEKURI, got.Wrapped, got.KEKKind, newKEK)
	}
	if !got.CreatedAt.Equal(created) {
		c.Errorf("a replace changed CreatedAt from %v to %v", created, got.CreatedAt)
	}
	if got.UpdatedAt.Before(got.CreatedAt) {
		c.Errorf("after a replace, UpdatedAt %v is before CreatedAt %v", got.UpdatedAt, got.CreatedAt)
	}

	// w still says version 1: a stale writer loses.
	w.Wrapped = []byte("stale")
	c.putErr("replace at a stale version", keys.ErrConflict, w)
	ahead := got
	ahead.Version, ahead.Wrapped = 9, []byte("ahead")
	c.putErr("replace at a version the keyset never had", keys.ErrConflict, ahead)
	// A replace of a keyset that does not exist loses, and creates nothing.
	c.putErr("replace a missing keyset", keys.ErrConflict, set(id, keys.PurposeBlob, oldKEK, 3))
	c.getErr("after a replace of a missing keyset", id, keys.PurposeBlob, keys.ErrNoKeys, keys.ErrKeyDestroyed)
	// A create of a keyset that exists loses.
	c.putErr("create an existing keyset", keys.ErrConflict, set(id, keys.PurposeData, oldKEK, 0))
	if got := c.get("after the losing writes", id, keys.PurposeData); got.Version != 2 || !bytes.Equal(got.Wrapped, []byte("rewrapped")) {
		c.Errorf("a losing write changed the keyset: Version %d, Wrapped %q; want 2, \"rewrapped\"", got.Version, got.Wrapped)
	}

	// The winner of a version goes on.
	got.Wrapped = []byte("third")
	c.put("replace at version 2", got)
	if got := c.get("read", id, keys.PurposeData); got.Version != 3 {
		c.Errorf("after a replace at version 2: Version %d, want 3", got.Version)
	}
}

// Get returns ErrNoKeys for what was never provisioned and ErrKeyDestroyed
// for a tenant with a tombstone, whatever the purpose, never both.
func getTellsDestroyedFromNeverProvisioned(c *checker) {
	never, live, shredded := c.tenant(), c.tenant(), c.tenant()
	for _, p := range keys.Purposes() {
		c.getErr("a tenant never provisioned", never, p, keys.ErrNoKeys, keys.ErrKeyDestroyed)
	}
	c.put("create", set(live, keys.PurposeData, c.kek("k"), 0), set(shredded, keys.PurposeData, c.kek("k"), 0))
	c.getErr("a purpose never provisioned", live, keys.PurposeBlob, keys.ErrNoKeys, keys.ErrKeyDestroyed)
	c.del("destroy", shredded)
	for _, p := range keys.Purposes() {
		c.getErr("a destroyed tenant", shredded, p, keys.ErrKeyDestroyed, keys.ErrNoKeys)
	}
	c.get("another tenant after the Delete", live, keys.PurposeData)
}

// Delete removes the tenant's keysets and records a tombstone listing the
// distinct master keys that were the tenant's own; a second Delete returns
// the same tombstone.
func deleteRecordsTombstone(c *checker) {
	id, other := c.tenant(), c.tenant()
	ownA, ownB, platform := c.kek("own-a"), c.kek("own-b"), c.kek("platform")
	sets := []keys.WrappedKeyset{
		set(id, keys.PurposeData, ownB, 0),
		set(id, keys.PurposeBlob, ownA, 0),
		set(id, keys.PurposeAudit, ownB, 0),
	}
	for i := range sets {
		sets[i].KEKKind = keys.KEKTenant
	}
	c.put("create keysets on the tenant's own keys", sets...)
	c.put("create another tenant's keysets", set(other, keys.PurposeData, ownA, 0), set(other, keys.PurposeBlob, platform, 0))

	t1 := c.del("first Delete", id)
	if t1.Tenant != id {
		c.Errorf("Delete(%s).Tenant = %s", id, t1.Tenant)
	}
	if t1.DestroyedAt.IsZero() {
		c.Errorf("Delete(%s).DestroyedAt is zero", id)
	}
	if got := sorted(t1.TenantKEKs); !slices.Equal(got, []keys.URI{ownA, ownB}) {
		c.Errorf("Delete(%s).TenantKEKs = %q, want the distinct %q", id, t1.TenantKEKs, []keys.URI{ownA, ownB})
	}
	for _, kek := range []keys.URI{ownA, ownB} {
		for _, w := range c.list("list after Delete", keys.ListOptions{KEKURI: kek, Limit: 10}) {
			if w.Tenant == id {
				c.Errorf("Delete(%s) left its %s keyset", id, w.Purpose)
			}
		}
	}
	c.get("another tenant's keyset on the same key after Delete", other, keys.PurposeData)
	c.get("another tenant's keyset after Delete", other, keys.PurposeBlob)

	t2 := c.del("second Delete", id)
	if t2.Tenant != id || !slices.Equal(sorted(t2.TenantKEKs), sorted(t1.TenantKEKs)) || !t2.DestroyedAt.Equal(t1.DestroyedAt) {
		c.Errorf("a second Delete returned %+v, want the first tombstone %+v", t2, t1)
	}

	// Keysets on the platform's key or a customer's leave no KEK to destroy.
	plat := c.tenant()
	customer := set(plat, keys.PurposeAudit, c.kek("customer"), 0)
	customer.KEKKind = keys.KEKCustomer
	c.put("create on a platform key and a customer key", set(plat, keys.PurposeData, platform, 0), set(plat, keys.PurposeBlob, ownA, 0), customer)
	if tp := c.del("Delete a tenant on platform and customer keys", plat); len(tp.TenantKEKs) != 0 {
		c.Errorf("Delete of a tenant whose keysets are on platform and customer keys: TenantKEKs %q, want none", tp.TenantKEKs)
	}
}

// Delete of a tenant with no keysets records a tombstone too, so that the
// tenant ID is never provisioned again.
func deleteWithoutKeysets(c *checker) {
	never := c.tenant()
	t1 := c.del("Delete a tenant with no keysets", never)
	if t1.Tenant != never || t1.DestroyedAt.IsZero() || len(t1.TenantKEKs) != 0 {
		c.Errorf("Delete of a tenant with no keysets returned %+v, want its tombstone with no KEKs", t1)
	}
	for _, p := range keys.Purposes() {
		c.getErr("a tenant deleted before it had keysets", never, p, keys.ErrKeyDestroyed, keys.ErrNoKeys)
	}
	c.putErr("provision a tenant deleted before it had keysets", keys.ErrKeyDestroyed, set(never, keys.PurposeData, c.kek("k"), 0))
	if t2 := c.del("second Delete", never); !t2.DestroyedAt.Equal(t1.DestroyedAt) || len(t2.TenantKEKs) != 0 {
		c.Errorf("a second Delete returned %+v, want the first tombstone %+v", t2, t1)
	}
}

// A destroyed tenant is never written again: neither a create nor a
// replace at the version it had.
func putAfterDeleteIsKeyDestroyed(c *checker) {
	id, kek := c.tenant(), c.kek("k")
	c.put("create", set(id, keys.PurposeData, kek, 0))
	w := c.get("read", id, keys.PurposeData)
	c.del("destroy", id)
	c.putErr("create after Delete", keys.ErrKeyDestroyed, set(id, keys.PurposeBlob, kek, 0))
	c.putErr("create again after Delete", keys.ErrKeyDestroyed, set(id, keys.PurposeData, kek, 0))
	w.Wrapped = []byte("after")
	c.putErr("replace after Delete", keys.ErrKeyDestroyed, w)
	if got := c.listAll("list after Delete", keys.ListOptions{KEKURI: kek, Limit: 10}); len(got) != 0 {
		c.Errorf("Put after Delete wrote keysets beside the tombstone: %v", got)
	}
}

// Put and Delete of a tenant are serialised: however they interleave, no
// keyset is left beside a tombstone.
func concurrentPutAndDelete(c *checker) {
	kek := c.kek("race")
	const tenants, writers = 20, 4
	ids := make([]tenant.ID, tenants)
	for i := range ids {
		ids[i] = c.tenant()
	}
	ctx := c.ctx()
	var wg sync.WaitGroup
	for _, id := range ids {
		for range writers {
			wg.Go(func() {
				err := c.s.Put(ctx, set(id, keys.PurposeData, kek, 0), set(id, keys.PurposeBlob, kek, 0))
				if err != nil && !errors.Is(err, keys.ErrConflict) && !errors.Is(err, keys.ErrKeyDestroyed) {
					c.Errorf("concurrent Put(%s): %v, want nil, ErrConflict or ErrKeyDestroyed", id, err)
				}
			})
			wg.Go(func() {
				if _, err := c.s.Delete(ctx, id); err != nil {
					c.Errorf("concurrent Delete(%s): %v", id, err)
				}
			})
		}
	}
	wg.Wait()
	for _, id := range ids {
		c.getErr("after concurrent Put and Delete", id, keys.PurposeData, keys.ErrKeyDestroyed, keys.ErrNoKeys)
	}
	if got := c.listAll("list after concurrent Put and Delete", keys.ListOptions{KEKURI: kek, Limit: 100}); len(got) != 0 {
		c.Errorf("keysets written beside a tombstone: %v", got)
	}
}

// List pages through keysets in (tenant, purpose) byte order, starting
// after the cursor, whatever order they were written in.
func listPaginatesInOrder(c *checker) {
	kek := c.kek("list")
	ids := make([]tenant.ID, 5)
	for i := range ids {
		ids[i] = c.tenant()
	}
	// Written out of order: st<tag>_10 sorts before st<tag>_9, and the
	// purposes go data, blob, audit.
	var want []string
	for i := len(ids) - 1; i >= 0; i-- {
		for _, p := range keys.Purposes() {
			c.put("create", set(ids[i], p, kek, 0))
			want = append(want, key(ids[i], p))
		}
	}
	slices.SortFunc(want, compareKey)

	for _, limit := range []int{1, 4, len(want), 100} {
		got := c.listAll(fmt.Sprintf("page with Limit %d", limit), keys.ListOptions{KEKURI: kek, Limit: limit})
		if !slices.Equal(got, want) {
			c.Errorf("paging with Limit %d returned\n\t%v\nwant, in (tenant, purpose) byte order,\n\t%v", limit, got, want)
		}
	}
	// A cursor in the middle of a tenant, and one between tenants.
	after, _, _ := strings.Cut(want[4], "/")
	mid := c.list("list after a cursor", keys.ListOptions{KEKURI: kek, AfterTenant: tenant.MustParseID(after), AfterPurpose: keys.Purpose(strings.SplitN(want[4], "/", 2)[1]), Limit: 100})
	if got := keysOf(mid); !slices.Equal(got, want[5:]) {
		c.Errorf("List after %s returned %v, want %v", want[4], got, want[5:])
	}
	first, _, _ := strings.Cut(want[0], "/")
	rest := c.list("list after a whole tenant", keys.ListOptions{KEKURI: kek, AfterTenant: tenant.MustParseID(first), AfterPurpose: keys.Purpose("zzz"), Limit: 100})
	if got := keysOf(rest); !slices.Equal(got, want[3:]) {
		c.Errorf("List after (%s, \"zzz\") returned %v, want %v", first, got, want[3:])
	}
	last, _, _ := strings.Cut(want[len(want)-1], "/")
	if end := c.list("list after the last keyset", keys.ListOptions{KEKURI: kek, AfterTenant: tenant.MustParseID(last), AfterPurpose: keys.PurposeData, Limit: 100}); len(end) != 0 {
		c.Errorf("List after the last keyset returned %v, want none", keysOf(end))
	}
	for _, w := range c.list("list", keys.ListOptions{KEKURI: kek, Limit: 100}) {
		if want := set(w.Tenant, w.Purpose, kek, 0).Wrapped; !bytes.Equal(w.Wrapped, want) || w.Version != 1 || w.CreatedAt.IsZero() {
			c.Errorf("List returned %s with Wrapped %q, Version %d, CreatedAt %v; want %q, 1, set", key(w.Tenant, w.Purpose), w.Wrapped, w.Version, w.CreatedAt, want)
		}
	}
}

func keysOf(page []keys.WrappedKeyset) []string {
	out := make([]string, 0, len(page))
	for _, w := range page {
		out = append(out, key(w.Tenant, w.Purpose))
	}
	return out
}

func sorted[S ~string](s []S) []S {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// List returns at most Limit keysets, exactly Limit when there are more,
// and refuses a Limit that is not > 0.
func listRespectsLimit(c *checker) {
	id, kek := c.tenant(), c.kek("limit")
	for _, p := range keys.Purposes() {
		c.put("create", set(id, p, kek, 0))
	}
	for limit, want := range map[int]int{1: 1, 2: 2, 3: 3, 4: 3} {
		if page := c.list("list", keys.ListOptions{KEKURI: kek, Limit: limit}); len(page) != want {
			c.Errorf("List with Limit %d of 3 keysets returned %d, want %d", limit, len(page), want)
		}
	}
	if page := c.list("list without a filter", keys.ListOptions{Limit: 1}); len(page) != 1 {
		c.Errorf("List(Limit 1) of a store with keysets returned %d, want 1", len(page))
	}
	for _, limit := range []int{0, -1} {
		if _, err := c.s.List(c.ctx(), keys.ListOptions{KEKURI: kek, Limit: limit}); err == nil {
			c.Errorf("List with Limit %d returned no error; the Limit must be > 0", limit)
		}
	}
}

// ListOptions.KEKURI selects the keysets of exactly that master key: not
// of one whose URI it is a prefix of, nor one that is a prefix of it.
func listFiltersByKEKURI(c *checker) {
	id := c.tenant()
	kek := c.kek("exact")
	c.put("create", set(id, keys.PurposeData, kek, 0), set(id, keys.PurposeBlob, kek+"-b", 0), set(id, keys.PurposeAudit, kek[:len(kek)-1], 0))
	for uri, want := range map[keys.URI][]string{
		kek:                                    {key(id, keys.PurposeData)},
		kek + "-b":                             {key(id, keys.PurposeBlob)},
		kek[:len(kek)-1]:                       {key(id, keys.PurposeAudit)},
		keys.URI(strings.ToUpper(string(kek))): nil,
		kek + "-c":                             nil,
	} {
		if got := c.listAll("list by KEKURI", keys.ListOptions{KEKURI: uri, Limit: 10}); !slices.Equal(got, want) {
			c.Errorf("List(KEKURI %q) returned %v, want %v", uri, got, want)
		}
	}
}

// ListOptions.KEKURIPrefix selects the keysets whose master key URI starts
// with it, byte by byte: no wildcards, no case folding, no collation. With
// KEKURI too, both must hold; with a cursor, the list pages.
func listFiltersByKEKURIPrefix(c *checker) {
	base := c.kek("pkcs11:token=p;object=k?module-path=/m&pin-source=")
	keks := map[string]keys.URI{
		"file": base + "file:/run/pin",
		"env":  base + "env:PIN",
		"wild": base[:len(base)-1] + "%_", // shares base but its last byte
		"case": keys.URI(strings.ToUpper(string(base[:9]))) + base[9:] + "x",
	}
	ids := map[string]tenant.ID{}
	for _, name := range []string{"file", "env", "wild", "case"} {
		ids[name] = c.tenant()
		c.put("create", set(ids[name], keys.PurposeData, keks[name], 0))
	}
	want := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, key(ids[n], keys.PurposeData))
		}
		slices.SortFunc(out, compareKey)
		return out
	}
	for _, tc := range []struct {
		what string
		opts keys.ListOptions
		want []string
	}{
		{"a prefix", keys.ListOptions{KEKURIPrefix: base}, want("file", "env")},
		{"a whole URI as prefix", keys.ListOptions{KEKURIPrefix: keks["env"]}, want("env")},
		{"a prefix and a KEKURI", keys.ListOptions{KEKURIPrefix: base, KEKURI: keks["env"]}, want("env")},
		{"a prefix and a KEKURI it is not a prefix of", keys.ListOptions{KEKURIPrefix: base, KEKURI: keks["wild"]}, nil},
		{"_ is not a wildcard", keys.ListOptions{KEKURIPrefix: base[:len(base)-1] + "_"}, nil},
		{"% is not a wildcard", keys.ListOptions{KEKURIPrefix: base[:len(base)-1] + "%"}, want("wild")},
		{"the comparison is case-sensitive", keys.ListOptions{KEKURIPrefix: keys.URI(strings.ToUpper(string(base)))}, nil},
		{"a prefix nothing has", keys.ListOptions{KEKURIPrefix: base + "nothing"}, nil},
	} {
		tc.opts.Limit = 100
		if got := c.listAll("list by "+tc.what, tc.opts); !slices.Equal(got, tc.want) {
			c.Errorf("%s: List(%+v) returned %v, want %v", tc.what, tc.opts, got, tc.want)
		}
	}
	// An empty prefix is no filter.
	if got := c.listAll("list by KEKURI, empty prefix", keys.ListOptions{KEKURI: keks["case"], Limit: 10}); !slices.Equal(got, want("case")) {
		c.Errorf("List(KEKURI %q, no prefix) returned %v, want %v", keks["case"], got, want("case"))
	}
	// Paginated: the cursor and the prefix together.
	if got := c.listAll("page by prefix", keys.ListOptions{KEKURIPrefix: base, Limit: 1}); !slices.Equal(got, want("file", "env")) {
		c.Errorf("paging by prefix with Limit 1 returned %v, want %v", got, want("file", "env"))
	}
}

// Put refuses a keyset whose KEKKind is not one of keys.KEKPlatform,
// KEKTenant, KEKCustomer (the kind decides which KMS clients serve the key
// and whether Shred destroys it), and writes none of the sets.
func putRefusesUnknownKEKKind(c *checker) {
	for _, kind := range []keys.KEKKind{"", "Platform", "tenant ", "other"} {
		id := c.tenant()
		good, bad := set(id, keys.PurposeData, c.kek("k"), 0), set(id, keys.PurposeBlob, c.kek("k"), 0)
		bad.KEKKind = kind
		c.putErr(fmt.Sprintf("Put with KEKKind %q", kind), keys.ErrInvalidArgument, good, bad)
		c.getErr(fmt.Sprintf("Get after a refused Put (KEKKind %q)", kind), id, keys.PurposeData, keys.ErrNoKeys, keys.ErrKeyDestroyed)
	}
}

// A keys.URI prints (and marshals as text) redacted; the Store must keep
// the URI itself: a PIN, a fake-kms:// key. Get, List and the tombstone
// give back exactly what Put was given.
func urisStoredAsThemselves(c *checker) {
	id := c.tenant()
	pin := keys.URI("pkcs11:token=t;object=" + string(c.kek("o")) + "?module-path=/m&pin-value=s3cr3t")
	fake := keys.URI("fake-kms://CM2b3_MDEjEwMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY" + c.run.tag)
	a, b := set(id, keys.PurposeData, pin, 0), set(id, keys.PurposeBlob, fake, 0)
	a.KEKKind = keys.KEKTenant
	c.put("create keysets on URIs with secrets", a, b)
	if got := c.get("read back", id, keys.PurposeData).KEKURI; string(got) != string(pin) {
		c.Errorf("Get returned KEKURI %q, want the URI as given (%d bytes, got %d): a Store must store string(uri), not its redacted text", got, len(pin), len(got))
	}
	if got := c.list("list by the URI", keys.ListOptions{KEKURI: fake, Limit: 10}); len(got) != 1 || string(got[0].KEKURI) != string(fake) {
		c.Errorf("List(KEKURI: a fake-kms URI) returned %d keysets, want 1 with the URI as given", len(got))
	}
	tomb := c.del("Delete", id)
	if len(tomb.TenantKEKs) != 1 || string(tomb.TenantKEKs[0]) != string(pin) {
		c.Errorf("the tombstone records %d KEKs, want the one URI as given", len(tomb.TenantKEKs))
	}
}
