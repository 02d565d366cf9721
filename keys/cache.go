package keys

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/mac"
	"github.com/tink-crypto/tink-go/v2/streamingaead"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Stats are the cache and master-key counters of a [Manager], for metrics.
// Counters only grow; Entries is the current number of cached keysets.
type Stats struct {
	Hits       uint64 // operations served by a cached keyset
	Misses     uint64 // operations that found no usable cached keyset
	Loads      uint64 // keysets read from the Store and unwrapped
	LoadErrors uint64 // loads that failed (destroyed, missing, master key error)
	KEKCalls   uint64 // master-key operations: one per wrap or unwrap
	Evictions  uint64 // entries dropped to respect Config.CacheMaxEntries
	Entries    int    // keysets cached now
}

type cacheKey struct {
	tenant  tenant.ID
	purpose Purpose
}

// entry is one unwrapped keyset, as the primitive of its purpose. Only one
// of aead, stream and mac is set.
type entry struct {
	tenant  tenant.ID
	purpose Purpose
	aead    tink.AEAD
	stream  tink.StreamingAEAD
	mac     tink.MAC
	keyIDs  []uint32 // sorted IDs of the keyset's keys
	version int64    // the Store version it was read at
	kekURI  string
	expires time.Time

	uses      atomic.Uint64
	lastCheck atomic.Int64 // unix nanoseconds of the last staleness check
}

// String implements fmt.Stringer; it prints no key material.
func (e *entry) String() string {
	return fmt.Sprintf("keys.cachedKeyset{tenant=%s purpose=%s version=%d keys=%d}", e.tenant, e.purpose, e.version, len(e.keyIDs))
}

// GoString implements fmt.GoStringer; it prints no key material.
func (e *entry) GoString() string { return e.String() }

// LogValue implements slog.LogValuer; it logs no key material.
func (e *entry) LogValue() slog.Value { return slog.StringValue(e.String()) }

// usable reports whether e may serve one more operation, and counts it.
func (e *entry) usable(maxUses uint64) bool {
	return time.Now().Before(e.expires) && e.uses.Add(1) <= maxUses
}

func (e *entry) hasKey(id uint32) bool {
	_, ok := slices.BinarySearch(e.keyIDs, id)
	return ok
}

// flight is one load in progress, shared by every caller that needs the
// same keyset meanwhile (singleflight): N goroutines, 1 master-key call.
type flight struct {
	done chan struct{}
	e    *entry
	err  error
}

// get returns the cached keyset of (id, p), loading it on a miss.
func (m *Manager) get(ctx context.Context, id tenant.ID, p Purpose) (*entry, error) {
	k := cacheKey{id, p}
	m.mu.RLock()
	e := m.entries[k]
	m.mu.RUnlock()
	if e != nil && e.usable(m.maxUses) {
		m.hits.Add(1)
		return e, nil
	}
	m.misses.Add(1)
	return m.load(ctx, k, e)
}

// load joins or starts the load of k. stale is the entry the caller found
// unusable (expired or used up), if any; it is dropped.
func (m *Manager) load(ctx context.Context, k cacheKey, stale *entry) (*entry, error) {
	m.mu.Lock()
	if cur := m.entries[k]; cur != nil {
		if cur == stale {
			delete(m.entries, k)
		} else if cur.usable(m.maxUses) {
			m.mu.Unlock()
			return cur, nil // loaded by someone else meanwhile
		}
	}
	f := m.inflight[k]
	if f == nil {
		f = &flight{done: make(chan struct{})}
		m.inflight[k] = f
		// The load outlives the caller that started it (others wait for it
		// too), so it does not inherit its cancellation; LoadTimeout bounds it.
		go m.runLoad(context.WithoutCancel(ctx), k, f, m.epoch)
	}
	m.mu.Unlock()

	select {
	case <-f.done:
		if f.err != nil {
			return nil, f.err
		}
		f.e.uses.Add(1)
		return f.e, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("keys: waiting for the %s keyset of tenant %s: %w", k.purpose, k.tenant, context.Cause(ctx))
	}
}

func (m *Manager) runLoad(ctx context.Context, k cacheKey, f *flight, epoch uint64) {
	ctx, cancel := context.WithTimeout(ctx, m.loadTimeout)
	defer cancel()
	e, err := m.fetch(ctx, k.tenant, k.purpose)
	m.loads.Add(1)
	if err != nil {
		m.loadErrors.Add(1)
	}

	m.mu.Lock()
	if m.inflight[k] == f {
		delete(m.inflight, k)
	}
	// A purge (rotation, shred) since the load started makes its result
	// suspect: hand it to the callers already waiting, but do not cache it.
	if err == nil && m.epoch == epoch {
		m.insertLocked(k, e)
	}
	m.mu.Unlock()
	f.e, f.err = e, err
	close(f.done)
}

// fetch reads and unwraps the keyset (id, p) and makes its primitive.
func (m *Manager) fetch(ctx context.Context, id tenant.ID, p Purpose) (e *entry, err error) {
	defer func() {
		if r := recover(); r != nil {
			e, err = nil, fmt.Errorf("keys: load %s keyset of tenant %s: panic: %v", p, id, r)
		}
	}()
	w, err := m.store.Get(ctx, id, p)
	if err != nil {
		return nil, fmt.Errorf("keys: load %s keyset of tenant %s: %w", p, id, err)
	}
	if w.Tenant != id || w.Purpose != p {
		return nil, fmt.Errorf("keys: load %s keyset of tenant %s: the store returned the %s keyset of tenant %s", p, id, w.Purpose, w.Tenant)
	}
	h, err := m.unwrap(w)
	if err != nil {
		m.log.WarnContext(ctx, "keys: cannot unwrap keyset", "tenant_id", id.String(), "purpose", string(p), "kek", DisplayURI(w.KEKURI), "error", err)
		return nil, err
	}
	e, err = newEntry(h, id, p)
	if err != nil {
		return nil, err
	}
	e.version = w.Version
	e.kekURI = w.KEKURI
	e.expires = time.Now().Add(m.maxAge)
	return e, nil
}

func newEntry(h *keyset.Handle, id tenant.ID, p Purpose) (*entry, error) {
	e := &entry{tenant: id, purpose: p}
	var err error
	switch p {
	case PurposeData:
		e.aead, err = aead.New(h)
	case PurposeBlob:
		e.stream, err = streamingaead.New(h)
	case PurposeAudit:
		e.mac, err = mac.New(h)
	default:
		err = fmt.Errorf("unknown purpose %q", p)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: %s keyset of tenant %s: %w", p, id, err)
	}
	for _, k := range h.KeysetInfo().GetKeyInfo() {
		e.keyIDs = append(e.keyIDs, k.GetKeyId())
	}
	slices.Sort(e.keyIDs)
	return e, nil
}

// insertLocked caches e under k, evicting to respect maxEntries. m.mu must
// be held for writing.
func (m *Manager) insertLocked(k cacheKey, e *entry) {
	if _, ok := m.entries[k]; !ok && len(m.entries) >= m.maxEntries {
		now := time.Now()
		var oldestKey cacheKey
		var oldest *entry
		for ck, ce := range m.entries {
			if !now.Before(ce.expires) {
				delete(m.entries, ck)
				m.evictions.Add(1)
				continue
			}
			if oldest == nil || ce.expires.Before(oldest.expires) {
				oldestKey, oldest = ck, ce
			}
		}
		if len(m.entries) >= m.maxEntries && oldest != nil {
			delete(m.entries, oldestKey)
			m.evictions.Add(1)
		}
	}
	m.entries[k] = e
}

// Purge drops every cached keyset of the tenant from this Manager's cache,
// and makes loads in progress for it uncacheable, so that the next use reads
// the Store again. [Manager.Rotate] and [Manager.Shred] call it; other
// replicas' caches expire after Config.CacheMaxAge.
func (m *Manager) Purge(id tenant.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range Purposes() {
		k := cacheKey{id, p}
		delete(m.entries, k)
		delete(m.inflight, k)
	}
	m.epoch++
}

// PurgeAll drops every cached keyset.
func (m *Manager) PurgeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.entries)
	clear(m.inflight)
	m.epoch++
}

// invalidate drops e if it is still the cached entry for its key.
func (m *Manager) invalidate(e *entry) {
	k := cacheKey{e.tenant, e.purpose}
	m.mu.Lock()
	if m.entries[k] == e {
		delete(m.entries, k)
	}
	m.mu.Unlock()
}

// Stats returns a snapshot of the counters.
func (m *Manager) Stats() Stats {
	m.mu.RLock()
	n := len(m.entries)
	m.mu.RUnlock()
	return Stats{
		Hits:       m.hits.Load(),
		Misses:     m.misses.Load(),
		Loads:      m.loads.Load(),
		LoadErrors: m.loadErrors.Load(),
		KEKCalls:   m.kekCalls.Load(),
		Evictions:  m.evictions.Load(),
		Entries:    n,
	}
}
