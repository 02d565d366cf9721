package storetest_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/storetest"
	"github.com/rtmx-ai/tenancy/tenant"
)

// brokenEnv names the broken store TestBrokenStore runs the suite on, in
// the subprocess TestSuiteCatchesBrokenStores starts.
const brokenEnv = "STORETEST_BROKEN_STORE"

// brokenStores are Stores that each break one clause of the contract, and
// the subtest of TestStore that must fail on each.
var brokenStores = map[string]struct {
	new    func() keys.Store
	clause string
}{
	// The control: a correct Store, on which the subprocess passes.
	"MemStore":                        {func() keys.Store { return keys.NewMemStore() }, ""},
	"PutNotAtomic":                    {func() keys.Store { return putNotAtomic{keys.NewMemStore()} }, "PutIsAllOrNothing"},
	"PutIgnoresVersion":               {func() keys.Store { return putIgnoresVersion{keys.NewMemStore()} }, "PutCompareAndSwapsOnVersion"},
	"GetSaysNoKeysAfterDelete":        {func() keys.Store { return getNoKeysAfterDelete{keys.NewMemStore()} }, "GetTellsDestroyedFromNeverProvisioned"},
	"DeleteForgetsTenantKEKs":         {func() keys.Store { return deleteForgetsKEKs{keys.NewMemStore()} }, "DeleteRecordsTombstoneWithTenantKEKsIdempotently"},
	"DeleteNotIdempotent":             {func() keys.Store { return deleteNotIdempotent{keys.NewMemStore()} }, "DeleteRecordsTombstoneWithTenantKEKsIdempotently"},
	"DeleteWithoutKeysetsNoTombstone": {func() keys.Store { return deleteNeedsKeysets{keys.NewMemStore()} }, "DeleteOfTenantWithoutKeysetsRecordsTombstone"},
	"PutAfterDeleteSucceeds":          {func() keys.Store { return putAfterDeleteSucceeds{keys.NewMemStore()} }, "PutAfterDeleteIsKeyDestroyed"},
	"PutAndDeleteNotSerialised":       {func() keys.Store { return &racyStore{} }, "ConcurrentPutAndDeleteNeverLeaveKeysetsBesideATombstone"},
	"ListIgnoresCursor":               {func() keys.Store { return listIgnoresCursor{keys.NewMemStore()} }, "ListPaginatesInTenantPurposeOrder"},
	"ListReversed":                    {func() keys.Store { return listReversed{keys.NewMemStore()} }, "ListPaginatesInTenantPurposeOrder"},
	"ListOneOverLimit":                {func() keys.Store { return listOverLimit{keys.NewMemStore()} }, "ListRespectsLimit"},
	"ListKEKURIAsPrefix":              {func() keys.Store { return listKEKURIAsPrefix{keys.NewMemStore()} }, "ListFiltersByKEKURIExactly"},
	"ListPrefixFoldsCase":             {func() keys.Store { return listPrefixFoldsCase{keys.NewMemStore()} }, "ListFiltersByKEKURIPrefixBytewise"},
	"PutAcceptsAnyKEKKind":            {func() keys.Store { return putAcceptsAnyKind{keys.NewMemStore()} }, "PutRefusesAnUnknownKEKKind"},
	"StoresURIsAsTheirText":           {func() keys.Store { return storesURIText{keys.NewMemStore()} }, "URIsThatPrintRedactedAreStoredAsThemselves"},
	"GetForgetsKEKKind":               {func() keys.Store { return getForgetsKind{keys.NewMemStore()} }, "PutCreatesAndGetReadsBack"},
}

// TestSuiteCatchesBrokenStores runs the suite on each broken store in a
// subprocess (this test binary, running only TestBrokenStore) and checks
// that it fails, in the subtest of the clause that store breaks. A
// subprocess, because a *testing.T cannot be faked: a failing subtest
// fails its parent for good.
func TestSuiteCatchesBrokenStores(t *testing.T) {
	if os.Getenv(brokenEnv) != "" {
		t.Skip("in the subprocess")
	}
	for name, b := range brokenStores {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestBrokenStore$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), brokenEnv+"="+name)
			out, err := cmd.CombinedOutput()
			if b.clause == "" {
				if err != nil || !strings.Contains(string(out), "--- PASS: TestBrokenStore ") {
					t.Fatalf("the suite did not pass on a correct store in the subprocess (err %v):\n%s", err, out)
				}
				return
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("the suite passed on a store that breaks %s (err %v):\n%s", b.clause, err, out)
			}
			if want := "--- FAIL: TestBrokenStore/" + b.clause + " "; !strings.Contains(string(out), want) {
				t.Fatalf("the suite failed, but not in %s:\n%s", b.clause, out)
			}
		})
	}
}

// TestBrokenStore runs the suite on the broken store named by
// $STORETEST_BROKEN_STORE; without it, it is skipped.
func TestBrokenStore(t *testing.T) {
	name := os.Getenv(brokenEnv)
	if name == "" {
		t.Skip("run by TestSuiteCatchesBrokenStores")
	}
	b, ok := brokenStores[name]
	if !ok {
		t.Fatalf("no broken store %q", name)
	}
	storetest.TestStore(t, func(*testing.T) keys.Store { return b.new() })
}

// putNotAtomic writes the sets one by one.
type putNotAtomic struct{ *keys.MemStore }

func (s putNotAtomic) Put(ctx context.Context, sets ...keys.WrappedKeyset) error {
	for _, w := range sets {
		if err := s.MemStore.Put(ctx, w); err != nil {
			return err
		}
	}
	return nil
}

// putIgnoresVersion replaces a keyset whatever version the caller read.
type putIgnoresVersion struct{ *keys.MemStore }

func (s putIgnoresVersion) Put(ctx context.Context, sets ...keys.WrappedKeyset) error {
	sets = slices.Clone(sets)
	for i, w := range sets {
		if w.Version > 0 {
			if cur, err := s.MemStore.Get(ctx, w.Tenant, w.Purpose); err == nil {
				sets[i].Version = cur.Version
			}
		}
	}
	return s.MemStore.Put(ctx, sets...)
}

// getNoKeysAfterDelete cannot tell a destroyed tenant from a new one.
type getNoKeysAfterDelete struct{ *keys.MemStore }

func (s getNoKeysAfterDelete) Get(ctx context.Context, id tenant.ID, p keys.Purpose) (keys.WrappedKeyset, error) {
	w, err := s.MemStore.Get(ctx, id, p)
	if errors.Is(err, keys.ErrKeyDestroyed) {
		return w, fmt.Errorf("tenant %s: %w", id, keys.ErrNoKeys)
	}
	return w, err
}

// deleteForgetsKEKs records no TenantKEKs.
type deleteForgetsKEKs struct{ *keys.MemStore }

func (s deleteForgetsKEKs) Delete(ctx context.Context, id tenant.ID) (keys.Tombstone, error) {
	t, err := s.MemStore.Delete(ctx, id)
	t.TenantKEKs = nil
	return t, err
}

// deleteNotIdempotent returns a new tombstone each time.
type deleteNotIdempotent struct{ *keys.MemStore }

func (s deleteNotIdempotent) Delete(ctx context.Context, id tenant.ID) (keys.Tombstone, error) {
	t, err := s.MemStore.Delete(ctx, id)
	t.DestroyedAt = time.Now().Add(time.Duration(time.Now().UnixNano() % 1000))
	return t, err
}

// deleteNeedsKeysets records no tombstone for a tenant without keysets.
type deleteNeedsKeysets struct{ *keys.MemStore }

func (s deleteNeedsKeysets) Delete(ctx context.Context, id tenant.ID) (keys.Tombstone, error) {
	for _, p := range keys.Purposes() {
		if _, err := s.MemStore.Get(ctx, id, p); !errors.Is(err, keys.ErrNoKeys) {
			return s.MemStore.Delete(ctx, id)
		}
	}
	return keys.Tombstone{Tenant: id, DestroyedAt: time.Now()}, nil
}

// putAfterDeleteSucceeds drops writes to a destroyed tenant silently.
type putAfterDeleteSucceeds struct{ *keys.MemStore }

func (s putAfterDeleteSucceeds) Put(ctx context.Context, sets ...keys.WrappedKeyset) error {
	if err := s.MemStore.Put(ctx, sets...); !errors.Is(err, keys.ErrKeyDestroyed) {
		return err
	}
	return nil
}

// listIgnoresCursor starts every list at the beginning.
type listIgnoresCursor struct{ *keys.MemStore }

func (s listIgnoresCursor) List(ctx context.Context, opts keys.ListOptions) ([]keys.WrappedKeyset, error) {
	opts.AfterTenant, opts.AfterPurpose = tenant.ID{}, ""
	return s.MemStore.List(ctx, opts)
}

// listReversed returns each page backwards.
type listReversed struct{ *keys.MemStore }

func (s listReversed) List(ctx context.Context, opts keys.ListOptions) ([]keys.WrappedKeyset, error) {
	page, err := s.MemStore.List(ctx, opts)
	slices.Reverse(page)
	return page, err
}

// listOverLimit returns one keyset more than asked.
type listOverLimit struct{ *keys.MemStore }

func (s listOverLimit) List(ctx context.Context, opts keys.ListOptions) ([]keys.WrappedKeyset, error) {
	if opts.Limit > 0 {
		opts.Limit++
	}
	return s.MemStore.List(ctx, opts)
}

// listKEKURIAsPrefix compares ListOptions.KEKURI as a prefix.
type listKEKURIAsPrefix struct{ *keys.MemStore }

func (s listKEKURIAsPrefix) List(ctx context.Context, opts keys.ListOptions) ([]keys.WrappedKeyset, error) {
	if opts.KEKURI != "" && strings.HasPrefix(string(opts.KEKURI), string(opts.KEKURIPrefix)) {
		opts.KEKURIPrefix, opts.KEKURI = opts.KEKURI, ""
	}
	return s.MemStore.List(ctx, opts)
}

// listPrefixFoldsCase compares ListOptions.KEKURIPrefix without case.
type listPrefixFoldsCase struct{ *keys.MemStore }

func (s listPrefixFoldsCase) List(ctx context.Context, opts keys.ListOptions) ([]keys.WrappedKeyset, error) {
	prefix, limit := opts.KEKURIPrefix, opts.Limit
	opts.KEKURIPrefix, opts.Limit = "", 1<<20
	all, err := s.MemStore.List(ctx, opts)
	if err != nil || limit <= 0 {
		return nil, cmp.Or(err, errors.New("limit"))
	}
	var out []keys.WrappedKeyset
	for _, w := range all {
		if len(w.KEKURI) >= len(prefix) && strings.EqualFold(string(w.KEKURI[:len(prefix)]), string(prefix)) && len(out) < limit {
			out = append(out, w)
		}
	}
	return out, nil
}

// putAcceptsAnyKind stores a keyset of an unknown KEKKind as a platform
// one, instead of refusing it.
type putAcceptsAnyKind struct{ *keys.MemStore }

func (s putAcceptsAnyKind) Put(ctx context.Context, sets ...keys.WrappedKeyset) error {
	sets = slices.Clone(sets)
	for i := range sets {
		if !sets[i].KEKKind.Valid() {
			sets[i].KEKKind = keys.KEKPlatform
		}
	}
	return s.MemStore.Put(ctx, sets...)
}

// storesURIText stores each master key URI as it prints (fmt.Sprint),
// which is redacted, instead of string(uri).
type storesURIText struct{ *keys.MemStore }

func (s storesURIText) Put(ctx context.Context, sets ...keys.WrappedKeyset) error {
	sets = slices.Clone(sets)
	for i := range sets {
		sets[i].KEKURI = keys.URI(fmt.Sprint(sets[i].KEKURI))
	}
	return s.MemStore.Put(ctx, sets...)
}

// getForgetsKind reads every keyset back as wrapped by the platform key.
type getForgetsKind struct{ *keys.MemStore }

func (s getForgetsKind) Get(ctx context.Context, id tenant.ID, p keys.Purpose) (keys.WrappedKeyset, error) {
	w, err := s.MemStore.Get(ctx, id, p)
	w.KEKKind = keys.KEKPlatform
	return w, err
}

// racyStore checks for a tombstone and writes in two steps, so a Delete
// can come between them: a keyset is then written beside the tombstone.
type racyStore struct {
	mu    sync.Mutex
	sets  map[string]keys.WrappedKeyset
	tombs map[tenant.ID]keys.Tombstone
}

func (s *racyStore) init() {
	if s.sets == nil {
		s.sets, s.tombs = map[string]keys.WrappedKeyset{}, map[tenant.ID]keys.Tombstone{}
	}
}

func (s *racyStore) Get(_ context.Context, id tenant.ID, p keys.Purpose) (keys.WrappedKeyset, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	if _, ok := s.tombs[id]; ok {
		return keys.WrappedKeyset{}, keys.ErrKeyDestroyed
	}
	w, ok := s.sets[id.String()+"/"+string(p)]
	if !ok {
		return w, keys.ErrNoKeys
	}
	w.Wrapped = slices.Clone(w.Wrapped)
	return w, nil
}

func (s *racyStore) Put(_ context.Context, sets ...keys.WrappedKeyset) error {
	s.mu.Lock()
	s.init()
	for _, w := range sets {
		if _, ok := s.tombs[w.Tenant]; ok {
			s.mu.Unlock()
			return keys.ErrKeyDestroyed
		}
		cur, ok := s.sets[w.Tenant.String()+"/"+string(w.Purpose)]
		if w.Version == 0 && ok || w.Version > 0 && (!ok || cur.Version != w.Version) {
			s.mu.Unlock()
			return keys.ErrConflict
		}
	}
	s.mu.Unlock()
	time.Sleep(time.Millisecond) // the race window
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for _, w := range sets {
		k := w.Tenant.String() + "/" + string(w.Purpose)
		w.Wrapped = slices.Clone(w.Wrapped)
		w.CreatedAt, w.UpdatedAt = cmp.Or(s.sets[k].CreatedAt, now), now
		w.Version++
		s.sets[k] = w
	}
	return nil
}

func (s *racyStore) Delete(_ context.Context, id tenant.ID) (keys.Tombstone, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	if t, ok := s.tombs[id]; ok {
		return t, nil
	}
	t := keys.Tombstone{Tenant: id, DestroyedAt: time.Now()}
	for _, p := range keys.Purposes() {
		k := id.String() + "/" + string(p)
		if w, ok := s.sets[k]; ok {
			if w.KEKKind == keys.KEKTenant && !slices.Contains(t.TenantKEKs, w.KEKURI) {
				t.TenantKEKs = append(t.TenantKEKs, w.KEKURI)
			}
			delete(s.sets, k)
		}
	}
	s.tombs[id] = t
	return t, nil
}

func (s *racyStore) List(_ context.Context, opts keys.ListOptions) ([]keys.WrappedKeyset, error) {
	if opts.Limit <= 0 {
		return nil, keys.ErrInvalidArgument
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	after := opts.AfterTenant.String() + "/" + string(opts.AfterPurpose)
	var out []keys.WrappedKeyset
	for k, w := range s.sets {
		if opts.KEKURI != "" && w.KEKURI != opts.KEKURI || !strings.HasPrefix(string(w.KEKURI), string(opts.KEKURIPrefix)) ||
			!opts.AfterTenant.IsZero() && k <= after {
			continue
		}
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b keys.WrappedKeyset) int {
		return cmp.Or(strings.Compare(a.Tenant.String(), b.Tenant.String()), cmp.Compare(a.Purpose, b.Purpose))
	})
	return out[:min(len(out), opts.Limit)], nil
}
