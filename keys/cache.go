package keys

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead/aesgcm"
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

	Evictions uint64 // entries dropped to respect Config.CacheMaxEntries
	Entries   int    // keysets cached now
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
	kekURI  URI
	timer   *time.Timer // marks it expired at max age; nil if never cached

	// prev and next link the cached entries in the eviction ring, whose
	// hand is Manager.hand; guarded by Manager.mu.
	prev, next *entry

	// expired is set by the timer at max age, and by purges and evictions.
	// The hot path reads this flag instead of the clock: time.Now costs
	// more than the rest of a cache lookup on some virtual machines.
	expired   atomic.Bool
	uses      atomic.Uint64
	lastCheck atomic.Int64 // unix nanoseconds of the last staleness check
	// used is set by a cache hit and cleared by the eviction hand passing:
	// an entry used since the hand last passed gets a second chance.
	used atomic.Bool
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
	return !e.expired.Load() && e.uses.Add(1) <= maxUses
}

// retire marks e expired and stops its timer.
func (e *entry) retire() {
	e.expired.Store(true)
	if e.timer != nil {
		e.timer.Stop()
	}
}

func (e *entry) hasKey(id uint32) bool {
	_, ok := slices.BinarySearch(e.keyIDs, id)
	return ok
}

// flight is one load in progress, shared by every caller that needs the
// same keyset meanwhile (singleflight): N goroutines, 1 master-key call.
type flight struct {
	done chan struct{}
	// purged is set, under Manager.mu, by a purge of the tenant while the
	// load runs: what it read may be stale (rotated, shredded).
	purged bool
	// e and err are the result, and retry says that the load was purged
	// and its waiters must load again; set before done is closed.
	e     *entry
	err   error
	retry bool
}

// purposeIndex returns the index of p in Manager.entries.
func purposeIndex(p Purpose) int {
	switch p {
	case PurposeBlob:
		return 1
	case PurposeAudit:
		return 2
	}
	return 0
}

// cached returns the cached entry of k, or nil. It takes no lock.
func (m *Manager) cached(k cacheKey) *entry {
	if v, ok := m.entries[purposeIndex(k.purpose)].Load(k.tenant.String()); ok {
		return v.(*entry)
	}
	return nil
}

// get returns the cached keyset of (id, p), loading it on a miss.
func (m *Manager) get(ctx context.Context, id tenant.ID, p Purpose) (*entry, error) {
	k := cacheKey{id, p}
	e := m.cached(k)
	if e != nil && e.usable(m.maxUses) {
		m.hits.Add(1)
		if !e.used.Load() { // a read, not a write, on the hot path
			e.used.Store(true)
		}
		return e, nil
	}
	m.misses.Add(1)
	return m.load(ctx, k, e)
}

// deleteLocked removes k from the cache if it holds e (any entry if e is
// nil) and retires it. m.mu must be held.
func (m *Manager) deleteLocked(k cacheKey, e *entry) {
	cur := m.cached(k)
	if cur == nil || e != nil && cur != e {
		return
	}
	m.entries[purposeIndex(k.purpose)].Delete(k.tenant.String())
	m.count--
	m.unlinkLocked(cur)
	cur.retire()
}

// load joins or starts the load of k. stale is the entry the caller found
// unusable (expired or used up), if any; it is dropped.
//
// A waiter counts its use of the loaded keyset against CacheMaxUses like
// any other caller, and loads again if the keyset is used up. A load
// purged while it ran (by Rotate or Shred) hands nothing to its waiters:
// they load again, and see the rotated keyset or ErrKeyDestroyed.
func (m *Manager) load(ctx context.Context, k cacheKey, stale *entry) (*entry, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("keys: waiting for the %s keyset of tenant %s: %w", k.purpose, k.tenant, context.Cause(ctx))
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, fmt.Errorf("keys: %s keyset of tenant %s: %w", k.purpose, k.tenant, ErrClosed)
		}
		if cur := m.cached(k); cur != nil {
			if cur == stale {
				m.deleteLocked(k, cur)
			} else if cur.usable(m.maxUses) {
				m.mu.Unlock()
				return cur, nil // loaded by someone else meanwhile
			}
		}
		f := m.inflight[k]
		if f == nil {
			f = &flight{done: make(chan struct{})}
			m.inflight[k] = f
			// The load outlives the caller that started it (others wait for
			// it too), so it does not inherit its cancellation; LoadTimeout
			// bounds it.
			go m.runLoad(context.WithoutCancel(ctx), k, f)
		}
		m.mu.Unlock()

		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("keys: waiting for the %s keyset of tenant %s: %w", k.purpose, k.tenant, context.Cause(ctx))
		}
		switch {
		case f.retry:
			stale = nil
		case f.err != nil:
			return nil, f.err
		case f.e.usable(m.maxUses):
			return f.e, nil
		default:
			stale = f.e // used up by the other waiters
		}
	}
}

// runLoad runs the load f of k, bounded by Config.LoadTimeout, and hands
// its result to the callers waiting for it. The Store read and the
// master-key call get the deadline; should either ignore it, runLoad stops
// waiting anyway, so that the callers get an error and the next one starts
// a new load rather than join one that may never end.
func (m *Manager) runLoad(ctx context.Context, k cacheKey, f *flight) {
	ctx, cancel := context.WithTimeout(ctx, m.loadTimeout)
	defer cancel()
	type result struct {
		e   *entry
		err error
	}
	var kekURI atomic.Pointer[URI] // set by fetch once it knows the master key
	ch := make(chan result, 1)
	go func() {
		e, err := m.fetch(ctx, k.tenant, k.purpose, &kekURI)
		ch <- result{e, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		if uri := kekURI.Load(); uri != nil {
			r.err = fmt.Errorf("keys: load %s keyset of tenant %s: %w: master key %s did not answer within Config.LoadTimeout (%v): %w",
				k.purpose, k.tenant, ErrUnwrap, URI(*uri), m.loadTimeout, context.Cause(ctx))
		} else {
			r.err = fmt.Errorf("keys: load %s keyset of tenant %s: the Store did not answer within Config.LoadTimeout (%v): %w",
				k.purpose, k.tenant, m.loadTimeout, context.Cause(ctx))
		}
	}
	e, err := r.e, r.err
	m.loads.Add(1)
	if err != nil {
		m.loadErrors.Add(1)
	}

	m.mu.Lock()
	if m.inflight[k] == f {
		delete(m.inflight, k)
	}
	// A purge (rotation, shred) since the load started makes its result
	// stale: neither cache it nor hand it to the callers waiting for it.
	f.retry = f.purged
	if err == nil && !f.retry {
		m.insertLocked(k, e)
	}
	m.mu.Unlock()
	if !f.retry {
		f.e, f.err = e, err
	}
	close(f.done)
}

// fetch reads and unwraps the keyset (id, p) and makes its primitive. It
// sets kekURI to the keyset's master key URI once it has read it.
func (m *Manager) fetch(ctx context.Context, id tenant.ID, p Purpose, kekURI *atomic.Pointer[URI]) (e *entry, err error) {
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
	kekURI.Store(&w.KEKURI)
	h, err := m.unwrap(ctx, w)
	if err != nil {
		err = fmt.Errorf("keys: load %s keyset of tenant %s: %w", p, id, err)
		m.log.WarnContext(ctx, "keys: cannot unwrap keyset", "tenant_id", id.String(), "purpose", string(p), "kek", w.KEKURI, "error", err)
		return nil, err
	}
	e, err = newEntry(h, id, p)
	if err != nil {
		return nil, err
	}
	e.version = w.Version
	e.kekURI = w.KEKURI
	return e, nil
}

func newEntry(h *keyset.Handle, id tenant.ID, p Purpose) (*entry, error) {
	e := &entry{tenant: id, purpose: p}
	var err error
	switch p {
	case PurposeData:
		e.aead, err = newDataAEAD(h)
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

// dataAEAD is the AEAD of a data keyset: Tink's AES-GCM primitives of its
// enabled keys, dispatched by the 4-byte key ID of the Tink output prefix.
// It does what aead.New's wrapper does for a keyset whose keys all have the
// TINK prefix (which PurposeData's template guarantees, and newDataAEAD
// checks), without its per-call prefix-map lookup and monitoring hooks:
// that is a measurable share of a 1 KiB seal and open.
type dataAEAD struct {
	primary tink.AEAD
	keys    []dataKey
}

type dataKey struct {
	id uint32
	a  tink.AEAD
}

func newDataAEAD(h *keyset.Handle) (*dataAEAD, error) {
	d := &dataAEAD{}
	for i := range h.Len() {
		en, err := h.Entry(i)
		if err != nil {
			return nil, err
		}
		if en.KeyStatus() != keyset.Enabled {
			continue
		}
		k, ok := en.Key().(*aesgcm.Key)
		if !ok {
			return nil, fmt.Errorf("data key %d is a %T, want AES-GCM", en.KeyID(), en.Key())
		}
		prefix := k.OutputPrefix()
		if len(prefix) != 5 || prefix[0] != 0x01 {
			return nil, fmt.Errorf("data key %d does not have the TINK output prefix", en.KeyID())
		}
		a, err := aesgcm.NewAEAD(k)
		if err != nil {
			return nil, err
		}
		d.keys = append(d.keys, dataKey{id: binary.BigEndian.Uint32(prefix[1:]), a: a})
		if en.IsPrimary() {
			d.primary = a
		}
	}
	if d.primary == nil {
		return nil, errors.New("data keyset has no enabled primary key")
	}
	return d, nil
}

// Encrypt seals with the primary key.
func (d *dataAEAD) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	return d.primary.Encrypt(plaintext, associatedData)
}

var errNoKey = errors.New("no key for the ciphertext's key ID")

// Decrypt opens with the key the ciphertext's prefix names.
func (d *dataAEAD) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	if len(ciphertext) < 5 || ciphertext[0] != 0x01 {
		return nil, errNoKey
	}
	id := binary.BigEndian.Uint32(ciphertext[1:5])
	for _, k := range d.keys {
		if k.id == id {
			return k.a.Decrypt(ciphertext, associatedData)
		}
	}
	return nil, errNoKey
}

// String implements fmt.Stringer; it prints no key material.
func (d *dataAEAD) String() string { return fmt.Sprintf("keys.dataAEAD{keys=%d}", len(d.keys)) }

// GoString implements fmt.GoStringer; it prints no key material.
func (d *dataAEAD) GoString() string { return d.String() }

// insertLocked caches e under k, with a timer that retires it at max age,
// evicting to respect maxEntries. m.mu must be held.
func (m *Manager) insertLocked(k cacheKey, e *entry) {
	m.deleteLocked(k, nil)
	if m.count >= m.maxEntries {
		m.evictLocked()
	}
	e.timer = time.AfterFunc(m.maxAge, func() {
		// At max age the unwrapped keyset leaves memory, used or not.
		m.mu.Lock()
		m.deleteLocked(k, e)
		m.mu.Unlock()
		e.expired.Store(true)
	})
	m.entries[purposeIndex(k.purpose)].Store(k.tenant.String(), e)
	m.count++
	m.linkLocked(e)
}

// maxSweep bounds the entries the eviction hand passes over in one
// eviction, so that evicting costs O(1) however many entries are cached and
// however busy they are.
const maxSweep = 32

// evictLocked evicts one entry by the CLOCK algorithm, an approximation of
// least-recently-used that costs nothing on a cache hit but a flag: the
// hand goes round the ring of entries, giving each entry used since it last
// passed (used) a second chance, and evicts the first one that was not used
// (or has expired). After maxSweep entries it evicts the one under the
// hand. m.mu must be held.
func (m *Manager) evictLocked() {
	if m.hand == nil {
		return
	}
	for range maxSweep {
		e := m.hand
		if e.expired.Load() || !e.used.Load() {
			break
		}
		e.used.Store(false)
		m.hand = e.next
	}
	e := m.hand
	m.deleteLocked(cacheKey{e.tenant, e.purpose}, e)
	m.evictions.Add(1)
}

// linkLocked adds e to the eviction ring just behind the hand, so that the
// hand reaches it last. m.mu must be held.
func (m *Manager) linkLocked(e *entry) {
	if m.hand == nil {
		e.prev, e.next = e, e
		m.hand = e
		return
	}
	e.prev, e.next = m.hand.prev, m.hand
	m.hand.prev.next = e
	m.hand.prev = e
}

// unlinkLocked removes e from the eviction ring. m.mu must be held.
func (m *Manager) unlinkLocked(e *entry) {
	if e.next == nil {
		return // not linked
	}
	if e.next == e {
		m.hand = nil
	} else {
		e.prev.next = e.next
		e.next.prev = e.prev
		if m.hand == e {
			m.hand = e.next
		}
	}
	e.prev, e.next = nil, nil
}

// Purge drops every cached keyset of the tenant from this Manager's cache,
// and makes loads in progress for it stale, so that the next use, and the
// callers waiting for those loads, read the Store again. [Manager.Rotate]
// and [Manager.Shred] call it; other replicas' caches expire after
// Config.CacheMaxAge.
func (m *Manager) Purge(id tenant.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range Purposes() {
		k := cacheKey{id, p}
		m.deleteLocked(k, nil)
		if f := m.inflight[k]; f != nil {
			f.purged = true
			delete(m.inflight, k)
		}
	}
}

// Close drops every cached keyset, so that the unwrapped keys leave memory
// at once rather than at max age, and closes the Manager: from then on
// Seal, Open, StreamingAEAD and MAC fail with [ErrClosed] instead of
// unwrapping keys again (a StreamingAEAD or MAC obtained before keeps
// working). Loads in progress become stale, as with [Manager.Purge].
// Close is idempotent and returns nil.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.purgeAllLocked()
	return nil
}

// purgeAllLocked drops every cached keyset. m.mu must be held.
func (m *Manager) purgeAllLocked() {
	for i := range m.entries {
		m.entries[i].Range(func(_, v any) bool {
			e := v.(*entry)
			m.deleteLocked(cacheKey{e.tenant, e.purpose}, e)
			return true
		})
	}
	for k, f := range m.inflight {
		f.purged = true
		delete(m.inflight, k)
	}
}

// invalidate drops e if it is still the cached entry for its key.
func (m *Manager) invalidate(e *entry) {
	m.mu.Lock()
	m.deleteLocked(cacheKey{e.tenant, e.purpose}, e)
	m.mu.Unlock()
}

// Stats returns a snapshot of the counters.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	n := m.count
	m.mu.Unlock()
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
