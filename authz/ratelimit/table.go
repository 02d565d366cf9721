package ratelimit

import (
	"hash/maphash"
	"sync"
	"time"

	"golang.org/x/time/rate"

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

// entry is the state of one tenant in a table. Its fields are guarded by
// its shard's mu.
type entry struct {
	id       tenant.ID
	seen     time.Time // the latest time the tenant was seen (never moves back)
	checked  time.Time // when quota was looked up
	quota    Quota
	limAt    time.Time     // the latest time lim was given: time never runs backwards for it
	inFlight int           // requests in flight, for Concurrency
	wake     chan struct{} // closed when a slot frees, for Concurrency's waiters; nil if none
	// lim is the tenant's token bucket, for Local. It is part of the
	// entry (one allocation, one cache line less per check); newEntry
	// sets it.
	lim rate.Limiter
}

// newEntry returns the entry of tenant id with quota q, its bucket full.
func newEntry(id tenant.ID, q Quota, now time.Time) *entry {
	e := &entry{id: id, quota: q, limAt: now}
	// A zero Limiter last updated at the zero time: setting its limit and
	// burst at that time leaves it there, so its first use at now fills
	// it to its burst, as rate.NewLimiter's would be.
	e.lim.SetLimitAt(time.Time{}, rate.Limit(q.Rate))
	e.lim.SetBurstAt(time.Time{}, q.Burst)
	return e
}

// shard is a part of a table.
type shard struct {
	mu        sync.Mutex // guards m, nextSweep and the entries in m
	m         map[tenant.ID]*entry
	nextSweep time.Time
	_         [64]byte
}

// table keeps per-tenant entries, bounded: at most max per shard (but for
// entries with requests in flight, which are never dropped), and, within
// idle/sweepsPerIdle, none unseen for longer than idle.
type table struct {
	seed   maphash.Seed
	mask   uint64
	max    int // per shard
	idle   time.Duration
	shards []shard
}

func newTable(maxTenants int, idle time.Duration) *table {
	n := 1
	for n < maxShards && n*2*minShardSize <= maxTenants {
		n *= 2
	}
	t := &table{
		seed:   maphash.MakeSeed(),
		mask:   uint64(n - 1),
		max:    maxTenants / n,
		idle:   idle,
		shards: make([]shard, n),
	}
	for i := range t.shards {
		t.shards[i].m = make(map[tenant.ID]*entry)
	}
	return t
}

// shard returns the shard of tenant id.
func (t *table) shard(id tenant.ID) *shard {
	if t.mask == 0 {
		return &t.shards[0]
	}
	return &t.shards[maphash.String(t.seed, id.String())&t.mask]
}

// len returns how many tenants t holds.
func (t *table) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// get returns the entry of id, marked as seen now, or nil. The caller
// holds s.mu.
func (s *shard) get(id tenant.ID, now time.Time) *entry {
	e := s.m[id]
	if e != nil && now.After(e.seen) {
		e.seen = now
	}
	return e
}

// add adds e, seen now; past t.max, it forgets the tenant seen least
// recently of a few (evictSample) without requests in flight. The caller
// holds s.mu.
func (t *table) add(s *shard, e *entry, now time.Time) {
	for len(s.m) >= t.max {
		var old *entry
		n := 0
		for _, c := range s.m { // from a random place
			if c.inFlight > 0 {
				continue
			}
			if old == nil || c.seen.Before(old.seen) {
				old = c
			}
			if n++; n == evictSample {
				break
			}
		}
		if old == nil {
			break // all in flight (tried the first ones only): grow
		}
		delete(s.m, old.id)
	}
	e.seen = now
	s.m[e.id] = e
}

// sweep forgets the tenants of s unseen for longer than t.idle, if it is
// time to look. The caller holds s.mu.
func (t *table) sweep(s *shard, now time.Time) {
	if now.Before(s.nextSweep) {
		return
	}
	s.nextSweep = now.Add(t.idle / sweepsPerIdle)
	for id, e := range s.m {
		if e.inFlight == 0 && now.Sub(e.seen) > t.idle {
			delete(s.m, id)
		}
	}
}
