package ratelimit

import (
	"hash/maphash"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/rtmx-ai/tenancy/tenant"
)

// maxShards is the most shards a table has; a table has one shard per
// minShardSize tenants of its MaxTenants, rounded down to a power of two.
const (
	maxShards    = 64
	minShardSize = 1024
	// sweepPerCall is how many idle entries one call may forget.
	sweepPerCall = 2
	// busySkips is how many entries with requests in flight an eviction
	// passes over before it gives up and lets the shard grow by one.
	busySkips = 4
)

// entry is the state of one tenant in a table. Its fields are guarded by
// its shard's mu.
type entry struct {
	id         tenant.ID
	prev, next *entry // the shard's recency list
	seen       time.Time
	checked    time.Time // when quota was looked up
	quota      Quota
	lim        *rate.Limiter // request rate, for Local
	limAt      time.Time     // the latest time lim was given: time never runs backwards for it
	inFlight   int           // requests in flight, for Concurrency
	wake       chan struct{} // closed when a slot frees, for Concurrency's waiters; nil if none
}

// shard is a part of a table.
type shard struct {
	mu   sync.Mutex // guards m, head, tail and the entries in m
	m    map[tenant.ID]*entry
	head *entry // the most recently used
	tail *entry // the least recently used
	_    [64]byte
}

// table keeps per-tenant entries, bounded: at most max per shard (but for
// entries with requests in flight, which are never dropped), and none
// unseen for longer than idle.
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
	if e == nil {
		return nil
	}
	if now.After(e.seen) {
		e.seen = now
	}
	if s.head != e {
		s.unlink(e)
		s.push(e)
	}
	return e
}

// add adds e, seen now, forgetting tenants unseen for longer than t.idle
// and, past t.max, the least recently seen. The caller holds s.mu.
func (t *table) add(s *shard, e *entry, now time.Time) {
	e.seen = now
	s.m[e.id] = e
	s.push(e)
	skips := 0
	for len(s.m) > t.max && skips < busySkips {
		old := s.tail
		if old.inFlight > 0 {
			s.unlink(old)
			s.push(old)
			skips++
			continue
		}
		s.drop(old)
	}
}

// sweep forgets up to sweepPerCall tenants unseen for longer than t.idle.
// The caller holds s.mu.
func (t *table) sweep(s *shard, now time.Time) {
	for range sweepPerCall {
		old := s.tail
		if old == nil || now.Sub(old.seen) <= t.idle {
			return
		}
		if old.inFlight > 0 {
			s.unlink(old)
			s.push(old)
			continue
		}
		s.drop(old)
	}
}

func (s *shard) drop(e *entry) {
	s.unlink(e)
	delete(s.m, e.id)
}

func (s *shard) push(e *entry) {
	e.prev, e.next = nil, s.head
	if s.head != nil {
		s.head.prev = e
	}
	s.head = e
	if s.tail == nil {
		s.tail = e
	}
}

func (s *shard) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
}
