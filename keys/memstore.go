package keys

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

// MemStore is a [Store] kept in memory. It is for examples and for the
// tests of packages that use keys without a database. Everything in it is
// lost when the process ends, and with it every tenant key: never use it
// where data outlives the process. The PostgreSQL Store is store.Keysets.
//
// The zero MemStore is empty and ready to use. It is safe for concurrent
// use.
type MemStore struct {
	mu    sync.Mutex
	sets  map[cacheKey]WrappedKeyset
	tombs map[tenant.ID]Tombstone
}

var _ Store = (*MemStore)(nil)

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{} }

func (s *MemStore) init() {
	if s.sets == nil {
		s.sets = make(map[cacheKey]WrappedKeyset)
		s.tombs = make(map[tenant.ID]Tombstone)
	}
}

func cloneSet(w WrappedKeyset) WrappedKeyset {
	w.Wrapped = slices.Clone(w.Wrapped)
	return w
}

// Get implements [Store.Get].
func (s *MemStore) Get(ctx context.Context, id tenant.ID, p Purpose) (WrappedKeyset, error) {
	if err := ctx.Err(); err != nil {
		return WrappedKeyset{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	if _, ok := s.tombs[id]; ok {
		return WrappedKeyset{}, fmt.Errorf("tenant %s: %w", id, ErrKeyDestroyed)
	}
	w, ok := s.sets[cacheKey{id, p}]
	if !ok {
		return WrappedKeyset{}, fmt.Errorf("tenant %s, purpose %s: %w", id, p, ErrNoKeys)
	}
	return cloneSet(w), nil
}

// Put implements [Store.Put].
func (s *MemStore) Put(ctx context.Context, sets ...WrappedKeyset) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	seen := make(map[cacheKey]bool, len(sets))
	for _, w := range sets {
		k := cacheKey{w.Tenant, w.Purpose}
		if w.Tenant.IsZero() || !w.Purpose.Valid() || w.KEKURI == "" || !w.KEKKind.Valid() || len(w.Wrapped) == 0 || w.Version < 0 {
			return fmt.Errorf("keys.MemStore: Put: %w: incomplete keyset %v", ErrInvalidArgument, w)
		}
		if seen[k] {
			return fmt.Errorf("keys.MemStore: Put: %w: keyset %s/%s given twice", ErrInvalidArgument, w.Tenant, w.Purpose)
		}
		seen[k] = true
		if _, ok := s.tombs[w.Tenant]; ok {
			return fmt.Errorf("tenant %s: %w", w.Tenant, ErrKeyDestroyed)
		}
		cur, ok := s.sets[k]
		if w.Version == 0 && ok || w.Version > 0 && (!ok || cur.Version != w.Version) {
			return fmt.Errorf("keyset %s/%s: %w", w.Tenant, w.Purpose, ErrConflict)
		}
	}
	now := time.Now()
	for _, w := range sets {
		k := cacheKey{w.Tenant, w.Purpose}
		w = cloneSet(w)
		if w.Version == 0 {
			w.CreatedAt = now
		} else {
			w.CreatedAt = s.sets[k].CreatedAt
		}
		w.UpdatedAt = now
		w.Version++
		s.sets[k] = w
	}
	return nil
}

// Delete implements [Store.Delete].
func (s *MemStore) Delete(ctx context.Context, id tenant.ID) (Tombstone, error) {
	if err := ctx.Err(); err != nil {
		return Tombstone{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	if t, ok := s.tombs[id]; ok {
		t.TenantKEKs = slices.Clone(t.TenantKEKs)
		return t, nil
	}
	t := Tombstone{Tenant: id, DestroyedAt: time.Now()}
	for _, p := range Purposes() {
		k := cacheKey{id, p}
		if w, ok := s.sets[k]; ok {
			if w.KEKKind == KEKTenant && !slices.Contains(t.TenantKEKs, w.KEKURI) {
				t.TenantKEKs = append(t.TenantKEKs, w.KEKURI)
			}
			delete(s.sets, k)
		}
	}
	slices.Sort(t.TenantKEKs)
	s.tombs[id] = t
	t.TenantKEKs = slices.Clone(t.TenantKEKs)
	return t, nil
}

// List implements [Store.List].
func (s *MemStore) List(ctx context.Context, opts ListOptions) ([]WrappedKeyset, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.Limit <= 0 {
		return nil, fmt.Errorf("keys.MemStore: List: %w: ListOptions.Limit must be > 0", ErrInvalidArgument)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	var out []WrappedKeyset
	for _, w := range s.sets {
		if opts.KEKURI != "" && w.KEKURI != opts.KEKURI || !strings.HasPrefix(string(w.KEKURI), string(opts.KEKURIPrefix)) {
			continue
		}
		if !opts.AfterTenant.IsZero() && compareKey(w.Tenant, w.Purpose, opts.AfterTenant, opts.AfterPurpose) <= 0 {
			continue
		}
		out = append(out, cloneSet(w))
	}
	slices.SortFunc(out, func(a, b WrappedKeyset) int { return compareKey(a.Tenant, a.Purpose, b.Tenant, b.Purpose) })
	if len(out) > opts.Limit {
		out = out[:opts.Limit]
	}
	return out, nil
}

// compareKey orders keysets by tenant, then purpose, comparing bytes (the
// order of PostgreSQL's "C" collation).
func compareKey(t1 tenant.ID, p1 Purpose, t2 tenant.ID, p2 Purpose) int {
	if c := cmp.Compare(t1.String(), t2.String()); c != 0 {
		return c
	}
	return cmp.Compare(p1, p2)
}
