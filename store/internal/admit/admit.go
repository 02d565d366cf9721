package admit

import (
	"container/list"
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Config configures a [Controller]. MaxConns is required; every other field
// left at zero takes the default documented on it.
type Config struct {
	// MaxConns is the cap on open connections across all keys, counting
	// dials in progress. It must be > 0.
	MaxConns int

	// MinResidency is the age below which a connection is never closed for
	// another key, not by an evictor. Zero means any idle
	// connection may be closed. It must be >= 0.
	MinResidency time.Duration

	// ConnectRate is the number of new connections per second across all
	// keys. Zero means unlimited. It must be >= 0; rate.Inf is unlimited too.
	ConnectRate rate.Limit

	// ConnectBurst is the number of connections that may be opened at once
	// above ConnectRate. Zero with a ConnectRate means 1. It must be >= 0,
	// and 0 when ConnectRate is 0.
	ConnectBurst int

	// EvictRetry is how often a queued dial asks the evictors again while it
	// waits. Zero means 25ms. It must be >= 0.
	EvictRetry time.Duration
}

const defaultEvictRetry = 25 * time.Millisecond

// check returns cfg with defaults filled in, or an error naming the first
// field that breaks its rule.
func (cfg Config) check() (Config, error) {
	switch {
	case cfg.MaxConns <= 0:
		return cfg, fmt.Errorf("admit: Config.MaxConns must be > 0, got %d", cfg.MaxConns)
	case cfg.MinResidency < 0:
		return cfg, fmt.Errorf("admit: Config.MinResidency must be >= 0, got %v", cfg.MinResidency)
	case !(cfg.ConnectRate >= 0): // also rejects NaN
		return cfg, fmt.Errorf("admit: Config.ConnectRate must be >= 0, got %v", float64(cfg.ConnectRate))
	case cfg.ConnectBurst < 0:
		return cfg, fmt.Errorf("admit: Config.ConnectBurst must be >= 0, got %d", cfg.ConnectBurst)
	case cfg.ConnectRate == 0 && cfg.ConnectBurst != 0:
		return cfg, fmt.Errorf("admit: Config.ConnectBurst must be 0 when Config.ConnectRate is 0 (unlimited), got %d", cfg.ConnectBurst)
	case cfg.EvictRetry < 0:
		return cfg, fmt.Errorf("admit: Config.EvictRetry must be >= 0, got %v", cfg.EvictRetry)
	}
	if cfg.ConnectRate > 0 && cfg.ConnectBurst == 0 {
		cfg.ConnectBurst = 1
	}
	if cfg.EvictRetry == 0 {
		cfg.EvictRetry = defaultEvictRetry
	}
	return cfg, nil
}

// Controller caps the open connections of many pools together. It must be
// created with [New]. Its methods are safe for concurrent use, and it starts
// no goroutine, so it needs no Close.
type Controller struct {
	cfg     Config
	limiter *rate.Limiter // nil when ConnectRate is 0 or rate.Inf

	mu sync.Mutex // guards everything below, and every keyState and waiter field
	// open is the number of slots held: open sockets plus dials in progress.
	open int
	// queue holds the *waiter of every dial waiting for a slot, oldest
	// first. When it is not empty, open == cfg.MaxConns.
	queue list.List
	// keys holds the state of every key with an open slot, a waiting dial
	// or a registered evictor, and no other.
	keys map[string]*keyState
	// lru holds the *keyState of every key with open > 0, least recently
	// active first.
	lru       list.List
	evictorID uint64 // last id given to an evictor
	stats     Stats  // counters; Open, Waiting and Keys are filled in by Stats

	queued atomic.Int64 // queue.Len(), readable without mu (Kick's fast path)
}

// keyState is what the Controller knows about one key.
type keyState struct {
	name     string
	open     int           // slots held for this key
	waiting  int           // dials of this key in queue
	evictors []evictor     // in registration order
	lru      *list.Element // in Controller.lru while open > 0, else nil
}

type evictor struct {
	id uint64
	fn func(minAge time.Duration) bool
}

// waiter is one dial in Controller.queue.
type waiter struct {
	ks      *keyState
	elem    *list.Element // in Controller.queue until granted or abandoned
	granted bool          // a slot was handed over; set before ready is closed
	ready   chan struct{} // closed when granted
	kick    chan struct{} // Kick: a connection went idle, evict again now
}

// New returns a Controller for cfg, or an error naming the first field of
// cfg that breaks its rule.
func New(cfg Config) (*Controller, error) {
	cfg, err := cfg.check()
	if err != nil {
		return nil, err
	}
	c := &Controller{cfg: cfg, keys: make(map[string]*keyState)}
	if cfg.ConnectRate > 0 && cfg.ConnectRate != rate.Inf {
		c.limiter = rate.NewLimiter(cfg.ConnectRate, cfg.ConnectBurst)
	}
	return c, nil
}

// Dial wraps dial for the pool of key (a tenant ID). The result is meant for
// pgx.ConnConfig.DialFunc. A nil dial stands for a zero net.Dialer, as
// pgconn's default is.
//
// The wrapped dial takes a slot, waiting in a queue shared by all keys when
// none is free, then waits for the connect rate limit, then calls dial with
// its own context. While it is queued it asks the evictors of other keys to
// close an idle connection (see [Controller.Register]). It stops waiting
// when its context is done, or when the context given to [WithRequest] and
// found among its context's values is done, and returns an error wrapping
// that context's error. The connection it returns gives its slot back when
// it is first closed; so does a connection that is dropped without being
// closed, once the garbage collector finds it. If dial fails, the slot is
// given back at once and dial's error is returned unchanged.
//
// pgconn dials its cancel requests (sent when a query is interrupted)
// through the same DialFunc. Such a dial would take a slot and queue like
// any other, while the connection it cancels still holds its own: the
// caller should send a connection's later dials around the Controller
// (store gives each connection a dial of its own that does).
func (c *Controller) Dial(key string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if dial == nil {
		dial = new(net.Dialer).DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return c.dial(ctx, key, dial, network, addr)
	}
}

func (c *Controller) dial(ctx context.Context, key string, dial func(ctx context.Context, network, addr string) (net.Conn, error), network, addr string) (net.Conn, error) {
	st := stopFor(ctx)
	s, err := c.acquire(st, key)
	if err != nil {
		return nil, err
	}
	connected := false
	defer func() {
		if !connected { // also when dial panics
			s.release()
		}
	}()
	if err := c.throttle(st); err != nil {
		return nil, err
	}
	nc, err := dial(ctx, network, addr)
	if err == nil && nc == nil {
		err = fmt.Errorf("admit: dial %s %s returned neither a connection nor an error", network, addr)
	}
	c.mu.Lock()
	if err != nil {
		c.stats.ConnectFailures++
	} else {
		c.stats.Connects++
	}
	c.mu.Unlock()
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		return nil, err
	}
	connected = true
	return s.wrap(nc), nil
}

// stop is what ends a wait: the dial's own context, and the request's
// context if the dial's context carries one ([WithRequest]).
type stop struct {
	own     context.Context
	req     context.Context // nil without WithRequest
	reqDone <-chan struct{} // nil (never ready) without WithRequest
}

func stopFor(ctx context.Context) stop {
	st := stop{own: ctx, req: requestFrom(ctx)}
	if st.req != nil {
		st.reqDone = st.req.Done()
	}
	return st
}

func (st stop) ownErr(what string) error {
	return fmt.Errorf("admit: waiting for %s: %w", what, st.own.Err())
}

func (st stop) reqErr(what string) error {
	return fmt.Errorf("admit: waiting for %s: request: %w", what, st.req.Err())
}

// err returns the error of whichever context is done, or nil.
func (st stop) err(what string) error {
	if st.own.Err() != nil {
		return st.ownErr(what)
	}
	if st.req != nil && st.req.Err() != nil {
		return st.reqErr(what)
	}
	return nil
}

const (
	waitSlot = "a connection slot"
	waitRate = "the connect rate limit"
)

// acquire takes a slot for key, waiting in the queue if none is free or
// others are already waiting.
func (c *Controller) acquire(st stop, key string) (*slot, error) {
	if err := st.err(waitSlot); err != nil {
		return nil, err
	}
	c.mu.Lock()
	ks := c.keys[key]
	if ks == nil {
		ks = &keyState{name: key}
		c.keys[key] = ks
	}
	if c.open < c.cfg.MaxConns && c.queue.Len() == 0 {
		c.takeLocked(ks)
		c.mu.Unlock()
		return &slot{c: c, ks: ks}, nil
	}
	w := &waiter{ks: ks, ready: make(chan struct{}), kick: make(chan struct{}, 1)}
	w.elem = c.queue.PushBack(w)
	c.queued.Add(1)
	ks.waiting++
	c.stats.Waits++
	c.mu.Unlock()

	start := time.Now()
	err := c.wait(st, w)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.WaitTime += time.Since(start)
	if err == nil {
		return &slot{c: c, ks: ks}, nil
	}
	if w.granted {
		// The slot arrived as the wait stopped: pass it on.
		c.releaseLocked(ks)
	} else {
		c.queue.Remove(w.elem)
		c.queued.Add(-1)
		w.elem = nil
		ks.waiting--
		c.dropIfUnusedLocked(ks)
	}
	return nil, err
}

// wait evicts for w until it is granted a slot (nil) or st stops it. The
// caller sorts out a grant that races with the stop.
func (c *Controller) wait(st stop, w *waiter) error {
	t := time.NewTimer(c.cfg.EvictRetry)
	defer t.Stop()
	for {
		select {
		case <-w.ready:
			return nil
		default:
		}
		c.evictFor(w.ks)
		select {
		case <-w.ready:
			return nil
		case <-st.own.Done():
			return st.ownErr(waitSlot)
		case <-st.reqDone:
			return st.reqErr(waitSlot)
		case <-w.kick:
		case <-t.C:
			t.Reset(c.cfg.EvictRetry)
		}
	}
}

// evictFor asks the evictors of keys other than ks, least recently active
// first, to close one idle connection, and stops at the first that does.
// If none does, it asks ks's own evictors, with no minimum age: a pool
// may start a new connection while one of its own goes back idle, and
// with every slot held by that key, only closing its idle connection lets
// the new one in.
func (c *Controller) evictFor(ks *keyState) {
	c.mu.Lock()
	var fns []func(time.Duration) bool
	var ages []time.Duration
	for e := c.lru.Front(); e != nil; e = e.Next() {
		other := e.Value.(*keyState)
		if other == ks {
			continue
		}
		for _, ev := range other.evictors {
			fns = append(fns, ev.fn)
			ages = append(ages, c.cfg.MinResidency)
		}
	}
	for _, ev := range ks.evictors {
		fns = append(fns, ev.fn)
		ages = append(ages, 0)
	}
	c.mu.Unlock()
	// Called without c.mu: an evictor closes a connection, which releases
	// its slot.
	for i, fn := range fns {
		if fn(ages[i]) {
			c.mu.Lock()
			c.stats.Evictions++
			c.mu.Unlock()
			return
		}
	}
}

// throttle waits for the connect rate limiter.
func (c *Controller) throttle(st stop) error {
	if c.limiter == nil {
		return nil
	}
	r := c.limiter.Reserve() // always OK: ConnectBurst >= 1
	d := r.Delay()
	if d == 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-st.own.Done():
		r.Cancel()
		return st.ownErr(waitRate)
	case <-st.reqDone:
		r.Cancel()
		return st.reqErr(waitRate)
	}
}

// takeLocked gives a slot to ks.
func (c *Controller) takeLocked(ks *keyState) {
	c.open++
	ks.open++
	if ks.lru == nil {
		ks.lru = c.lru.PushBack(ks)
	} else {
		c.lru.MoveToBack(ks.lru)
	}
}

// releaseLocked takes a slot from ks and hands it to the oldest waiter, or
// frees it when nobody waits.
func (c *Controller) releaseLocked(ks *keyState) {
	c.open--
	ks.open--
	if ks.open == 0 {
		c.lru.Remove(ks.lru)
		ks.lru = nil
	}
	if front := c.queue.Front(); front != nil {
		w := c.queue.Remove(front).(*waiter)
		c.queued.Add(-1)
		w.elem = nil
		w.ks.waiting--
		c.takeLocked(w.ks)
		w.granted = true
		close(w.ready)
	}
	c.dropIfUnusedLocked(ks)
}

// dropIfUnusedLocked forgets ks when nothing refers to it any more.
func (c *Controller) dropIfUnusedLocked(ks *keyState) {
	if ks.open == 0 && ks.waiting == 0 && len(ks.evictors) == 0 && c.keys[ks.name] == ks {
		delete(c.keys, ks.name)
	}
}

// Kick tells the oldest waiting dial, if any, that a connection has just
// gone back idle to its pool, so that it asks the evictors again at once
// rather than at its next EvictRetry. Call it after every release of a
// connection; when nobody waits it costs one atomic load.
func (c *Controller) Kick() {
	if c.queued.Load() == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if front := c.queue.Front(); front != nil {
		select {
		case front.Value.(*waiter).kick <- struct{}{}:
		default:
		}
	}
}

// Register registers evict for key: a function that closes at most one idle
// connection of key's pool that is at least minAge old, and reports whether
// it did. A dial waiting for a slot calls the evictors of keys other than
// its own that hold connections, least recently active key first, with
// minAge = [Config.MinResidency], then its own key's with minAge 0, and
// stops at the first that returns true.
// Evictors are called without any lock of the Controller held, and may be
// called shortly after unregister returns, so an evictor must do nothing
// harmful then (a closed pgxpool.Pool has no idle connection).
//
// A key may have several evictors (an old pool closing and a new one
// opening); they are called in registration order. unregister removes this
// one; calling it again does nothing. A nil evict registers nothing.
func (c *Controller) Register(key string, evict func(minAge time.Duration) bool) (unregister func()) {
	if evict == nil {
		return func() {}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ks := c.keys[key]
	if ks == nil {
		ks = &keyState{name: key}
		c.keys[key] = ks
	}
	c.evictorID++
	id := c.evictorID
	ks.evictors = append(ks.evictors, evictor{id: id, fn: evict})
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, ev := range ks.evictors {
			if ev.id == id {
				ks.evictors = append(ks.evictors[:i:i], ks.evictors[i+1:]...)
				c.dropIfUnusedLocked(ks)
				return
			}
		}
	}
}

// Touch records activity of key; the store calls it on every acquire. Taking
// a slot for key counts as activity too. Eviction asks the least recently
// active key first. Touch of a key with no open connection does nothing: it
// has nothing to evict, and its first connection makes it the most recent.
func (c *Controller) Touch(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ks := c.keys[key]; ks != nil && ks.lru != nil {
		c.lru.MoveToBack(ks.lru)
	}
}

// Stats is a snapshot of a Controller's state and counters, for metrics.
// Counters only grow.
type Stats struct {
	Open    int // slots held: open connections plus dials in progress
	Waiting int // dials waiting for a slot

	Connects        int64         // dials that returned a connection
	ConnectFailures int64         // dials that returned an error (waits that stopped are not counted)
	Evictions       int64         // evictor calls that closed a connection
	Waits           int64         // dials that had to wait for a slot
	WaitTime        time.Duration // total time dials waited for a slot (not for the rate limit)

	Keys int // keys with an open connection, a waiting dial or an evictor
}

// Stats returns a snapshot of c's state and counters.
func (c *Controller) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Open = c.open
	s.Waiting = c.queue.Len()
	s.Keys = len(c.keys)
	return s
}

// slot is one slot held for ks; release gives it back once.
type slot struct {
	c    *Controller
	ks   *keyState
	once sync.Once
}

func (s *slot) release() {
	s.once.Do(func() {
		s.c.mu.Lock()
		defer s.c.mu.Unlock()
		s.c.releaseLocked(s.ks)
	})
}

// wrap returns nc holding s until it is closed, or until it is unreachable.
func (s *slot) wrap(nc net.Conn) net.Conn {
	cn := &conn{Conn: nc, slot: s}
	cn.cleanup = runtime.AddCleanup(cn, (*slot).release, s)
	return cn
}

// conn is a net.Conn that holds a slot until it is closed.
type conn struct {
	net.Conn
	slot    *slot
	cleanup runtime.Cleanup
}

// Close closes the connection, then gives its slot back if this is the
// first Close.
func (cn *conn) Close() error {
	err := cn.Conn.Close()
	cn.slot.release()
	cn.cleanup.Stop()
	return err
}

type requestKey struct{}

// WithRequest returns a copy of ctx that carries ctx itself as the request
// context: a dial wrapped by [Controller.Dial] whose context carries it
// stops waiting for a slot or the rate limit when ctx is done, even if its
// own context is not (pgxpool dials with a context that keeps ctx's values
// but not its cancellation).
func WithRequest(ctx context.Context) context.Context {
	return context.WithValue(ctx, requestKey{}, ctx)
}

func requestFrom(ctx context.Context) context.Context {
	req, _ := ctx.Value(requestKey{}).(context.Context)
	return req
}
