package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Overflow is what [Writer.Append] does when the writer holds
// WriterConfig.MaxPending entries not yet written.
type Overflow int

const (
	// OverflowBlock: Append waits until there is room, or its context
	// ends (its error then wraps the context's and [ErrBackpressure]).
	OverflowBlock Overflow = iota + 1
	// OverflowFail: Append fails at once with an error wrapping
	// [ErrBackpressure].
	OverflowFail
)

// WriterConfig configures a [Writer]. Start from [DefaultWriterConfig];
// [Log.NewWriter] rejects a field out of range, and zero is never taken
// to mean a default.
type WriterConfig struct {
	// MaxBatch is the most entries of one tenant written in one
	// transaction (1 to 10000). DefaultWriterConfig sets 1000.
	MaxBatch int
	// MaxPending bounds the entries held in memory, of every tenant,
	// waiting to be written (at least MaxBatch). DefaultWriterConfig sets
	// 20000.
	MaxPending int
	// Overflow is what Append does when MaxPending entries wait.
	// DefaultWriterConfig sets OverflowBlock.
	Overflow Overflow
	// FlushDelay is how long the first entry of a batch waits for others
	// before the batch is written (0 to 10 s; 0 writes at once, so batches
	// hold what arrived while the one before was written).
	// DefaultWriterConfig sets 10 ms.
	FlushDelay time.Duration
	// RetryMin and RetryMax bound the wait (doubling, with jitter) before
	// a batch that failed for a transient reason (the database
	// unreachable, a lost connection) is tried again. DefaultWriterConfig
	// sets 50 ms and 5 s.
	RetryMin, RetryMax time.Duration
}

// DefaultWriterConfig returns the default WriterConfig.
func DefaultWriterConfig() WriterConfig {
	return WriterConfig{MaxBatch: 1000, MaxPending: 20000, Overflow: OverflowBlock, FlushDelay: 10 * time.Millisecond,
		RetryMin: 50 * time.Millisecond, RetryMax: 5 * time.Second}
}

// Writer batches appends to the tenants' logs: [Writer.Append] queues an
// event for the tenant in its context and returns; a goroutine per tenant
// with entries waiting writes them, up to MaxBatch in one transaction of
// the [Log]; while one is on its way, it computes the next batch's chain
// and sends it too, on a second connection (the database writes it right
// after the first, or not at all: it is then chained again).
// An entry is written exactly once or reported: a batch is one
// transaction, so a crash (even kill -9) leaves it whole or absent, never
// in part, and the sequence numbers without gaps. A batch that fails for
// a transient reason is tried again until it is written or the Writer is
// closed (one whose answer was lost is sent again as it was, so that it
// is written once); one that PostgreSQL refuses for its content is split
// to find the entry it refuses, which fails alone. Memory is bounded by
// MaxPending. It is safe for concurrent use.
type Writer struct {
	l   *Log
	cfg WriterConfig
	sem chan struct{} // a token per entry held

	ctx    context.Context // ends when Close gives up
	cancel context.CancelFunc
	wg     sync.WaitGroup // the flushers

	mu       sync.Mutex // guards queues, closed, progress, failures, nFailed
	queues   map[tenant.ID]*queue
	closed   bool
	progress chan struct{} // closed (and replaced) when entries are done
	failures []error       // the first few entries that failed since the last Flush
	nFailed  int
}

// queue is one tenant's entries waiting.
type queue struct {
	id      tenant.ID
	items   []*item
	enq     uint64 // entries ever queued
	done    uint64 // entries ever written or failed
	running bool   // a flusher goroutine serves the queue
	urgent  bool   // write what waits now (Flush, Close, a full batch)
	kick    chan struct{}
	lastErr error // of the last failed attempt, for Flush's error
	// priors are the batches of entries waiting that were sent but whose
	// answers were lost, in no particular order (a batch sent again and
	// lost again comes after those lost with it): each is sent again as
	// it was, when its first entry is the first waiting.
	priors []sentBatch
}

// sentBatch is a batch sent whose answer was lost: its entries and the
// chain sent.
type sentBatch struct {
	items []*item
	b     *batch
}

// item is one entry waiting, and then its outcome.
type item struct {
	p    prepared
	seq  int64
	prev []byte
	mac  []byte
	err  error
	done bool
}

// NewWriter returns a Writer that appends through l. Close it before l.
func (l *Log) NewWriter(cfg WriterConfig) (*Writer, error) {
	switch {
	case cfg.MaxBatch < 1 || cfg.MaxBatch > 10000:
		return nil, fmt.Errorf("audit: %w: WriterConfig.MaxBatch must be 1 to 10000, got %d (start from audit.DefaultWriterConfig)", ErrInvalidConfig, cfg.MaxBatch)
	case cfg.MaxPending < cfg.MaxBatch:
		return nil, fmt.Errorf("audit: %w: WriterConfig.MaxPending must be at least MaxBatch (%d), got %d", ErrInvalidConfig, cfg.MaxBatch, cfg.MaxPending)
	case cfg.Overflow != OverflowBlock && cfg.Overflow != OverflowFail:
		return nil, fmt.Errorf("audit: %w: WriterConfig.Overflow must be audit.OverflowBlock or audit.OverflowFail, got %d", ErrInvalidConfig, cfg.Overflow)
	case cfg.FlushDelay < 0 || cfg.FlushDelay > 10*time.Second:
		return nil, fmt.Errorf("audit: %w: WriterConfig.FlushDelay must be 0 to 10s, got %s", ErrInvalidConfig, cfg.FlushDelay)
	case cfg.RetryMin <= 0 || cfg.RetryMax < cfg.RetryMin:
		return nil, fmt.Errorf("audit: %w: WriterConfig.RetryMin must be positive and RetryMax at least RetryMin, got %s and %s", ErrInvalidConfig, cfg.RetryMin, cfg.RetryMax)
	}
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	w := &Writer{l: l, cfg: cfg, sem: make(chan struct{}, cfg.MaxPending), queues: map[tenant.ID]*queue{}, progress: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	return w, nil
}

// Receipt is one entry queued by [Writer.Append]; Wait says how it ended.
type Receipt struct {
	w  *Writer
	it *item
}

// Wait waits until the entry is written, and returns it, or until it
// failed, and returns why (an error wrapping [ErrNotWritten]), or until
// ctx ends. Waiting is optional: the entry is written whether or not
// anyone waits.
func (r Receipt) Wait(ctx context.Context) (Entry, error) {
	if r.w == nil {
		return Entry{}, fmt.Errorf("audit: wait: %w: not a receipt of Writer.Append", ErrInvalidConfig)
	}
	for {
		r.w.mu.Lock()
		it, ch := r.it, r.w.progress
		done, err := it.done, it.err
		r.w.mu.Unlock()
		if done {
			if err != nil {
				return Entry{}, err
			}
			return it.p.entry(it.p.log, it.seq, it.prev, it.mac), nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Entry{}, fmt.Errorf("audit: wait: %w", ctx.Err())
		}
	}
}

// Append validates ev and queues it for the log of the tenant in ctx. An
// invalid event fails at once with an error wrapping [ErrInvalidEvent]
// (a [*FieldError] naming the field); so does a full writer in
// OverflowFail mode ([ErrBackpressure]), or in OverflowBlock mode when ctx
// ends first. Entries of one tenant appended by one goroutine are
// written in the order of the calls. The entry's time, if ev has none, is
// the time of the call.
func (w *Writer) Append(ctx context.Context, ev Event) (Receipt, error) {
	id, err := tenant.Require(ctx, "audit: append")
	if err != nil {
		return Receipt{}, err
	}
	it := &item{}
	if err := it.p.prepare(id.String(), ev, now()); err != nil {
		return Receipt{}, fmt.Errorf("audit: append to tenant %s: %w", id, err)
	}
	if w.isClosed() {
		return Receipt{}, fmt.Errorf("audit: append: %w: the Writer is closed", ErrClosed)
	}
	select {
	case w.sem <- struct{}{}:
	default:
		if w.cfg.Overflow == OverflowFail {
			return Receipt{}, fmt.Errorf("audit: append to tenant %s: %w (%d waiting)", id, ErrBackpressure, w.cfg.MaxPending)
		}
		select {
		case w.sem <- struct{}{}:
		case <-ctx.Done():
			return Receipt{}, fmt.Errorf("audit: append to tenant %s: %w while %w", id, ctx.Err(), ErrBackpressure)
		case <-w.ctx.Done():
			return Receipt{}, fmt.Errorf("audit: append: %w: the Writer is closed", ErrClosed)
		}
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.sem
		return Receipt{}, fmt.Errorf("audit: append: %w: the Writer is closed", ErrClosed)
	}
	q := w.queues[id]
	if q == nil {
		q = &queue{id: id, kick: make(chan struct{}, 1)}
		w.queues[id] = q
	}
	q.items = append(q.items, it)
	q.enq++
	full := len(q.items) >= w.cfg.MaxBatch
	if !q.running {
		q.running = true
		w.wg.Add(1)
		go w.flusher(q)
	}
	w.mu.Unlock()
	if full {
		q.poke()
	}
	return Receipt{w: w, it: it}, nil
}

func (w *Writer) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

func (q *queue) poke() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// flight is a batch on its way to the database.
type flight struct {
	items []*item
	b     *batch        // the chain sent; nil if the Log works it out
	ahead bool          // sent by Log.writeAhead, before the answer to the flight before
	done  chan struct{} // closed when it is answered
	err   error         // writeItems' error, or writeAhead's *sentError
	wr    *written      // what writeAhead wrote, or nil
}

// asPredicted reports whether f was written whole as its chain says, so
// that a flight chained from its head may follow it; w.mu is held.
func (f *flight) asPredicted() bool {
	if f.ahead {
		return f.wr != nil
	}
	if f.err != nil || f.b == nil {
		return false
	}
	for _, it := range f.items {
		if !it.done {
			return false
		}
	}
	last := f.items[len(f.items)-1]
	return last.err == nil && bytes.Equal(last.mac, f.b.macs[len(f.b.macs)-1])
}

// flusher writes the entries of q until none wait; then it ends (Append
// starts another). While a batch is on its way to the database, it
// computes the chain of the next one, on the assumption that the batch on
// its way will be written, and sends it too (Log.writeAhead), without
// waiting for the answer to the first: the database writes it right
// after the first, or not at all. So two batches are on their way at
// once, and the client and the server work at once. If a batch is not
// written as its chain says, the flusher waits for the answer to the one
// after it, which is not written either (unless it was, right after), and
// goes on from the first entry not written, chained anew.
func (w *Writer) flusher(q *queue) {
	defer w.wg.Done()
	ctx := tenant.NewContext(w.ctx, q.id)
	retry := time.Duration(0)
	var flights []*flight
	sent := 0 // q.items[:sent] are the entries of flights
	// again is a flight sent ahead that the database refused (it came
	// before the one it follows, or another writer came between): its
	// chain is sent again the usual way.
	var again *flight
	for {
		if len(flights) == 0 {
			w.mu.Lock()
			if len(q.items) == 0 || w.ctx.Err() != nil {
				q.running = false
				w.mu.Unlock()
				return
			}
			wait := len(q.items) < w.cfg.MaxBatch && !q.urgent && !w.closed && w.cfg.FlushDelay > 0 && retry == 0 && again == nil
			w.mu.Unlock()
			if wait {
				t := time.NewTimer(w.cfg.FlushDelay)
				select {
				case <-t.C:
				case <-q.kick:
				case <-w.ctx.Done():
				}
				t.Stop()
			}
			w.mu.Lock()
			batch, prior := w.firstBatch(q)
			if again != nil && len(q.priors) == 0 && len(q.items) >= len(again.items) && q.items[0] == again.items[0] {
				batch, prior = again.items, again.b
			}
			again = nil
			w.mu.Unlock()
			if prior == nil {
				prior = w.chainAhead(ctx, q.id, batch, w.l.knownHead)
			}
			f := &flight{items: batch, b: prior, done: make(chan struct{})}
			go func() {
				f.err = w.writeItems(ctx, q, batch, prior)
				close(f.done)
			}()
			flights, sent = append(flights, f), len(batch)
		}
		for last := flights[len(flights)-1]; len(flights) < maxInFlight && last.b != nil; last = flights[len(flights)-1] {
			// Send the entries after the last flight, chained from its head.
			w.mu.Lock()
			var rest []*item
			if len(q.priors) == 0 && w.ctx.Err() == nil {
				rest = q.items[sent:min(len(q.items), sent+w.cfg.MaxBatch)]
				for i, it := range rest {
					if it.done {
						rest = rest[:i]
						break
					}
				}
			}
			w.mu.Unlock()
			if len(rest) == 0 {
				break
			}
			seq, mac := last.b.last()
			b := w.chainAhead(ctx, q.id, rest, func(tenant.ID) (int64, []byte) { return seq, mac })
			if b == nil {
				break
			}
			f := &flight{items: rest, b: b, ahead: true, done: make(chan struct{})}
			after := last.done
			go func() {
				f.wr, f.err = w.l.writeAhead(ctx, q.id, b, after)
				if f.wr != nil {
					w.finish(q, rest, f.wr, nil)
				}
				close(f.done)
			}()
			flights, sent = append(flights, f), sent+len(rest)
		}
		f := flights[0]
		<-f.done
		flights = flights[1:]
		w.mu.Lock()
		if f.asPredicted() {
			q.items, sent = q.items[len(f.items):], sent-len(f.items)
			if len(flights) == 0 {
				// Entries sent ahead of a batch resent may be written.
				for len(q.items) > 0 && q.items[0].done {
					q.items = q.items[1:]
				}
			}
			if len(q.items) == 0 {
				q.items = nil
				q.urgent = false
			}
			q.lastErr = nil
			w.mu.Unlock()
			retry = 0
			continue
		}
		w.mu.Unlock()
		// Not written as chained: neither are the flights after it,
		// unless they were, right after it.
		err := f.err
		if f.ahead && f.wr == nil && f.err == nil {
			again = f
		}
		for _, g := range flights {
			<-g.done
		}
		w.mu.Lock()
		for _, g := range append([]*flight{f}, flights...) {
			var lost *sentError
			if g.ahead && errors.As(g.err, &lost) {
				q.priors = append(q.priors, sentBatch{items: g.items, b: lost.b})
				if err == nil {
					err = g.err
				}
			}
		}
		flights, sent = nil, 0
		// Drop what is done (the batches written, or the part written
		// before a transient failure while one was being split).
		n := 0
		for n < len(q.items) && q.items[n].done {
			n++
		}
		q.items = q.items[n:]
		if len(q.items) == 0 {
			q.items = nil
			q.urgent = false
		}
		w.mu.Unlock()
		if err != nil {
			// Transient: keep the batch and try again after a while.
			w.mu.Lock()
			q.lastErr = err
			w.mu.Unlock()
			retry = min(max(2*retry, w.cfg.RetryMin), w.cfg.RetryMax)
			d := retry/2 + rand.N(retry/2+1)
			w.l.log.WarnContext(ctx, "audit: writing a batch failed; trying again", "tenant_id", q.id.String(), "entries", len(f.items), "retry_in", d, "error", err)
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-w.ctx.Done():
			}
			t.Stop()
			continue
		}
		retry = 0
		w.mu.Lock()
		q.lastErr = nil
		w.mu.Unlock()
	}
}

// firstBatch returns the first entries waiting, to send when nothing is
// on its way: the batch whose answer was lost, as it was sent, if it
// comes first, or else up to MaxBatch entries, to be chained, up to the
// next batch whose answer was lost; w.mu is held. It forgets the lost
// batches whose entries are done.
func (w *Writer) firstBatch(q *queue) ([]*item, *batch) {
	var starts map[*item]bool // made only when an answer was lost
	kept := q.priors[:0]
	var first *sentBatch
	for _, p := range q.priors {
		switch {
		case p.items[0].done:
		case p.items[0] == q.items[0] && first == nil:
			first = &sentBatch{items: p.items, b: p.b}
		default:
			kept = append(kept, p)
			if starts == nil {
				starts = map[*item]bool{}
			}
			starts[p.items[0]] = true
		}
	}
	clear(q.priors[len(kept):])
	q.priors = kept
	if first != nil {
		return first.items, first.b
	}
	batch := q.items[:min(len(q.items), w.cfg.MaxBatch)]
	for i, it := range batch {
		if i > 0 && (starts[it] || it.done) {
			return batch[:i], nil
		}
	}
	return batch, nil
}

// chainAhead computes the chain of items after the head that head gives,
// or returns nil if it knows none or cannot (the Log then works it out).
func (w *Writer) chainAhead(ctx context.Context, id tenant.ID, items []*item, head func(tenant.ID) (int64, []byte)) *batch {
	seq, prev := head(id)
	if seq < 0 {
		return nil
	}
	mac, err := w.l.keys.MAC(ctx)
	if err != nil {
		return nil
	}
	ps := make([]*prepared, len(items))
	for i, it := range items {
		ps[i] = &it.p
	}
	b, err := chain(ps, seq, prev, mac)
	if err != nil {
		return nil
	}
	return b
}

// writeItems writes batch (the first entries of q) and marks each done,
// written or failed; it returns an error only for a transient failure,
// which leaves every item of the batch to be tried again. prior, if it
// is the chain of exactly these entries, is sent as it is (see Log.write).
func (w *Writer) writeItems(ctx context.Context, q *queue, batch []*item, prior *batch) error {
	ps := make([]*prepared, len(batch))
	for i, it := range batch {
		ps[i] = &it.p
	}
	if prior != nil && len(prior.macs) != len(batch) {
		prior = nil
	}
	wr, err := w.l.write(ctx, q.id, ps, prior)
	var sent *sentError
	switch {
	case err == nil:
		w.finish(q, batch, wr, nil)
		return nil
	case errors.As(err, &sent):
		w.mu.Lock()
		q.priors = append(q.priors, sentBatch{items: batch, b: sent.b})
		w.mu.Unlock()
		return err
	case transient(err):
		return err
	case len(batch) > 1 && entryRefused(err):
		// PostgreSQL refused something in the batch: find the entry in
		// halves, writing the others.
		half := len(batch) / 2
		if err := w.writeItems(ctx, q, batch[:half], nil); err != nil {
			return err
		}
		return w.writeItems(ctx, q, batch[half:], nil)
	default:
		w.finish(q, batch, nil, fmt.Errorf("audit: %w: tenant %s: %w", ErrNotWritten, q.id, err))
		return nil
	}
}

// finish marks batch done: written as wr says, or failed with err.
func (w *Writer) finish(q *queue, batch []*item, wr *written, err error) {
	w.mu.Lock()
	for i, it := range batch {
		it.done = true
		if err != nil {
			it.err = fmt.Errorf("%w (entry of %s, action %q)", err, formatTime(it.p.at), truncate(it.p.action, 40))
			continue
		}
		it.seq, it.prev, it.mac = wr.first+int64(i), wr.prevOf(i), wr.macs[i]
	}
	if err != nil {
		w.nFailed += len(batch)
		if len(w.failures) < 8 {
			w.failures = append(w.failures, batch[0].err)
		}
		w.l.log.Error("audit: entries not written", "tenant_id", q.id.String(), "entries", len(batch), "error", err)
	}
	q.done += uint64(len(batch))
	close(w.progress)
	w.progress = make(chan struct{})
	w.mu.Unlock()
	for range batch {
		<-w.sem
	}
}

// transient reports whether a failed batch may succeed if tried again:
// anything but a refusal of the entries, the tenant or its keys.
func transient(err error) bool {
	switch {
	case errors.Is(err, store.ErrUnknownTenant), errors.Is(err, keys.ErrKeyDestroyed), errors.Is(err, keys.ErrNoKeys),
		errors.Is(err, tenant.ErrNoTenant), errors.Is(err, ErrNotInstalled), errors.Is(err, keys.ErrClosed),
		errors.Is(err, keys.ErrInvalidArgument):
		return false
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "22", "23", "42", "2B", "44":
			return lostRace(err) // the others are refusals
		}
	}
	return true
}

// entryRefused reports whether PostgreSQL refused the content of an entry
// (a data exception or a constraint).
func entryRefused(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		c := pgErr.Code[:2]
		return c == "22" || c == "23"
	}
	return false
}

// Flush waits until every entry appended before the call has been
// written or has failed, or until ctx ends. It returns an error wrapping
// [ErrNotWritten] if entries failed since the last Flush (it says how
// many, and the first few); if ctx ends first, one wrapping ctx's error
// that says how many entries still wait (they stay queued, and are
// written when the database allows).
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	targets := make(map[*queue]uint64, len(w.queues))
	for _, q := range w.queues {
		if q.done < q.enq {
			targets[q] = q.enq
			q.urgent = true
			q.poke()
		}
	}
	w.mu.Unlock()
	for {
		w.mu.Lock()
		waiting := uint64(0)
		var lastErr error
		for q, t := range targets {
			if q.done < t {
				waiting += t - q.done
				if q.lastErr != nil {
					lastErr = q.lastErr
				}
			} else {
				delete(targets, q)
			}
		}
		ch := w.progress
		if waiting == 0 {
			err := w.takeFailures()
			w.mu.Unlock()
			return err
		}
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			msg := fmt.Sprintf("%d entries not written yet", waiting)
			if lastErr != nil {
				msg += fmt.Sprintf(" (the last attempt: %v)", lastErr)
			}
			return fmt.Errorf("audit: flush: %w: %s", ctx.Err(), msg)
		}
	}
}

// takeFailures returns (and forgets) the failures since the last call;
// w.mu is held.
func (w *Writer) takeFailures() error {
	if w.nFailed == 0 {
		return nil
	}
	err := fmt.Errorf("audit: flush: %w: %d entries failed since the last Flush; the first: %w", ErrNotWritten, w.nFailed, errors.Join(w.failures...))
	w.nFailed, w.failures = 0, nil
	return err
}

// Close stops taking entries (Append fails with [ErrClosed]), writes
// every entry waiting, as Flush does, and stops the Writer's goroutines.
// If ctx ends first, it gives up: the entries still waiting are not
// written, and its error says how many. Close the Writer before its Log.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	for _, q := range w.queues {
		q.urgent = true
		q.poke()
	}
	w.mu.Unlock()
	err := w.Flush(ctx)
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	lost := 0
	for _, q := range w.queues {
		lost += len(q.items)
		for _, it := range q.items {
			if !it.done {
				it.done, it.err = true, fmt.Errorf("audit: %w: tenant %s: the Writer was closed before it could write the entry", ErrNotWritten, q.id)
			}
		}
		q.items = nil
	}
	close(w.progress)
	w.progress = make(chan struct{})
	w.mu.Unlock()
	if lost > 0 {
		return fmt.Errorf("audit: close: %w: %d entries were not written: %w", ErrNotWritten, lost, err)
	}
	return err
}

// maxInFlight is how many batches of a tenant a Writer keeps on their way
// to the database at once. Three measured slower than two (the batches
// wait for one another's lock in the database, and a third backend
// competes with the client for the CPU).
const maxInFlight = 2
