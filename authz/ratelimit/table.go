package ratelimit

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

const (
	// maxShards is the most shards a table has; a table has one shard
	// per minShardSize tenants of its MaxTenants, in powers of two.
	maxShards    = 64
	minShardSize = 1024
	// evictSample is how many tenants an eviction compares to find the
	// one seen least recently.
	evictSample = 8
	// sweepsPerIdle is how many times per Idle a shard looks for idle
	// tenants.
	sweepsPerIdle = 4
)

// clock reads a limiter's time as nanoseconds since its start: one int64
// per reading, compared and subtracted without time.Time's checks.
type clock struct {
	start time.Time
	now   func() time.Time // Config.Clock; nil: the monotonic clock
}

func newClock(now func() time.Time) clock {
	if now == nil {
		return clock{start: time.Now()}
	}
	return clock{start: now(), now: now}
}

// read returns the time. With the monotonic clock it is time.Since, which
// reads one clock where time.Now reads two (the wall clock too).
func (c *clock) read() int64 {
	if c.now == nil {
		return int64(time.Since(c.start))
	}
	return int64(c.now().Sub(c.start))
}

// entry is the state of one tenant in a table (88 bytes, in 96-byte
// allocations). Its fields are guarded by its shard's mu. Times are
// readings of the table's clock. The fields a rate check reads come
// first.
type entry struct {
	id tenant.ID
	// seen is the latest time the tenant was seen. It never moves back,
	// and is the time the bucket is given: time never runs backwards for
	// it.
	seen     int64
	checked  int64 // when quota was looked up
	quota    Quota
	b        bucket        // the tenant's token bucket, for Local
	inFlight int           // requests in flight, for Concurrency
	wake     chan struct{} // closed when a slot frees, for Concurrency's waiters; nil if none
}

// newEntry returns the entry of tenant id with quota q, its bucket full.
func newEntry(id tenant.ID, q Quota, now int64) *entry {
	return &entry{id: id, quota: q, seen: now, b: bucket{tokens: float64(q.Burst), last: now}}
}

// A slot of a shard's hash table: an entry and the hash of its ID.
type slot struct {
	hash uint64
	e    *entry // nil: the slot is empty
}

// shard is a part of a table: a hash table with linear probing, whose
// slots hold the hash beside the entry, so that a lookup reads one slot
// and the entry it finds.
type shard struct {
	mu sync.Mutex // guards slots, n, nextSweep and the entries in slots
	// slots has a power of two length, and at most maxLoadNum/maxLoadDen
	// of it is in use, so that every probe ends at an empty slot.
	slots     []slot
	n         int // slots in use
	nextSweep int64
	_         [64]byte
}

const (
	// minSlots is the length of a shard's slots at first; they double
	// when more than maxLoadNum/maxLoadDen of them would be in use.
	minSlots   = 8
	maxLoadNum = 3
	maxLoadDen = 4
	// homeShift drops the hash bits that chose the shard (at most
	// log2(maxShards)) from those that choose the slot.
	homeShift = 8
)

// table keeps per-tenant entries, bounded: at most max per shard (but for
// entries with requests in flight, which are never dropped), and, within
// idle/sweepsPerIdle, none unseen for longer than idle.
//
// A tenant's ID is hashed once per check (maphash, with a seed of the
// table's own): the low bits choose its shard, the higher ones its slot.
// IDs compare equal before an entry is used, so two IDs of one hash cost
// a probe more, never another tenant's entry.
type table struct {
	seed     maphash.Seed
	hashMask uint64 // every bit in use; tests clear bits to make IDs collide
	mask     uint64 // of the shard index
	max      int    // per shard
	idle     int64
	shards   []shard
}

func newTable(maxTenants int, idle time.Duration) *table {
	n := 1
	for n < maxShards && n*2*minShardSize <= maxTenants {
		n *= 2
	}
	t := &table{
		seed:     maphash.MakeSeed(),
		hashMask: ^uint64(0),
		mask:     uint64(n - 1),
		max:      maxTenants / n,
		idle:     int64(idle),
		shards:   make([]shard, n),
	}
	for i := range t.shards {
		t.shards[i].slots = make([]slot, minSlots)
	}
	return t
}

// hash returns the hash of tenant id.
func (t *table) hash(id tenant.ID) uint64 {
	return maphash.String(t.seed, id.String()) & t.hashMask
}

// shard returns the shard of the tenant of hash h.
func (t *table) shard(h uint64) *shard { return &t.shards[h&t.mask] }

// len returns how many tenants t holds.
func (t *table) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += s.n
		s.mu.Unlock()
	}
	return n
}

// home returns the slot where probes for hash h start.
func (s *shard) home(h uint64) uint64 { return (h >> homeShift) & uint64(len(s.slots)-1) }

// get returns the entry of id, of hash h, marked as seen now, or nil.
// The caller holds s.mu.
func (s *shard) get(h uint64, id tenant.ID, now int64) *entry {
	mask := uint64(len(s.slots) - 1)
	for i := s.home(h); ; i = (i + 1) & mask {
		sl := &s.slots[i]
		if sl.e == nil {
			return nil
		}
		if sl.hash == h && sl.e.id == id {
			if now > sl.e.seen {
				sl.e.seen = now
			}
			return sl.e
		}
	}
}

// insert puts e, of hash h, in the first free slot from its home. The
// caller holds s.mu, and has made room.
func (s *shard) insert(h uint64, e *entry) {
	mask := uint64(len(s.slots) - 1)
	i := s.home(h)
	for s.slots[i].e != nil {
		i = (i + 1) & mask
	}
	s.slots[i] = slot{hash: h, e: e}
	s.n++
}

// grow doubles s.slots. The caller holds s.mu.
func (s *shard) grow() {
	old := s.slots
	s.slots = make([]slot, 2*len(old))
	s.n = 0
	for _, sl := range old {
		if sl.e != nil {
			s.insert(sl.hash, sl.e)
		}
	}
}

// removeAt empties slot i, and moves back the slots after it that probes
// would no longer reach (backward-shift deletion: no tombstones). Slots
// move back along the probe order only, from after i to i or after it
// (cyclically), which sweep relies on. The caller holds s.mu.
func (s *shard) removeAt(i uint64) {
	mask := uint64(len(s.slots) - 1)
	s.n--
	for j := i; ; {
		s.slots[i] = slot{}
		for {
			j = (j + 1) & mask
			if s.slots[j].e == nil {
				return
			}
			// Slot j may move to the hole at i unless its home lies
			// cyclically in (i, j].
			home := s.home(s.slots[j].hash)
			if i <= j && (home <= i || home > j) || i > j && home <= i && home > j {
				break
			}
		}
		s.slots[i] = s.slots[j]
		i = j
	}
}

// add adds e, of hash h, seen now; past t.max, it forgets the tenant seen
// least recently of a few (evictSample) without requests in flight. The
// caller holds s.mu.
func (t *table) add(s *shard, h uint64, e *entry, now int64) {
	for s.n >= t.max {
		// Sample from a place that depends on the new tenant's hash:
		// spread over the table, and not chosen by whoever names it.
		mask := uint64(len(s.slots) - 1)
		start := (h ^ h>>17) & mask
		old, at, n := (*entry)(nil), uint64(0), 0
		for k, i := uint64(0), start; k <= mask && n < evictSample; k, i = k+1, (i+1)&mask {
			c := s.slots[i].e
			if c == nil || c.inFlight > 0 {
				continue
			}
			if old == nil || c.seen < old.seen {
				old, at = c, i
			}
			n++
		}
		if old == nil {
			break // all in flight: grow
		}
		s.removeAt(at)
	}
	if (s.n+1)*maxLoadDen > len(s.slots)*maxLoadNum {
		s.grow()
	}
	e.seen = now
	s.insert(h, e)
}

// sweep forgets the tenants of s unseen for longer than t.idle, if it is
// time to look. The caller holds s.mu.
func (t *table) sweep(s *shard, now int64) {
	if now < s.nextSweep {
		return
	}
	s.nextSweep = now + t.idle/sweepsPerIdle
	if s.nextSweep < now { // past the clock's last reading (time.Since saturates)
		s.nextSweep = now
	}
	for i := uint64(0); i < uint64(len(s.slots)); {
		if e := s.slots[i].e; e != nil && e.inFlight == 0 && now-e.seen > t.idle {
			s.removeAt(i) // a slot from after i may now be at i: look again
			continue
		}
		i++
	}
}
