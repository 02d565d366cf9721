package audit_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

func writerConfig(adjust func(*audit.WriterConfig)) audit.WriterConfig {
	c := audit.DefaultWriterConfig()
	if adjust != nil {
		adjust(&c)
	}
	return c
}

// TestWriterLosesNothing appends from many goroutines to two tenants
// through one Writer; after Flush every entry is in its tenant's log,
// once, in a chain that verifies, and each receipt names its entry.
func TestWriterLosesNothing(t *testing.T) {
	e := newEnv(t, "standard")
	w, err := e.log.NewWriter(writerConfig(func(c *audit.WriterConfig) { c.MaxBatch, c.FlushDelay = 50, 2*time.Millisecond }))
	require.NoError(t, err)
	_, actx := e.newTenant(t, "wra")
	b, bctx := e.newTenant(t, "wrb")
	const goroutines, each = 8, 250
	receipts := make([][]audit.Receipt, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			ctx := actx
			if g%2 == 1 {
				ctx = bctx
			}
			for i := range each {
				r, err := w.Append(ctx, audit.Event{Actor: fmt.Sprintf("g%d", g), Action: "write", Resource: fmt.Sprint(i), Outcome: audit.OutcomeSuccess})
				if err != nil {
					t.Error(err)
					return
				}
				receipts[g] = append(receipts[g], r)
			}
		})
	}
	wg.Wait()
	require.NoError(t, w.Flush(t.Context()))
	seen := map[string]map[int64]bool{}
	for g, rs := range receipts {
		require.Len(t, rs, each)
		last := int64(0)
		for i, r := range rs {
			en, err := r.Wait(t.Context())
			require.NoError(t, err)
			require.Equal(t, fmt.Sprint(i), en.Resource)
			require.Greater(t, en.Seq, last, "one goroutine's entries are in the order it appended them")
			last = en.Seq
			if seen[en.Log] == nil {
				seen[en.Log] = map[int64]bool{}
			}
			require.False(t, seen[en.Log][en.Seq])
			seen[en.Log][en.Seq] = true
			_ = g
		}
	}
	for _, ctx := range []context.Context{actx, bctx} {
		rep, err := e.log.Verify(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(goroutines/2*each), rep.Entries)
	}
	require.Equal(t, int64(goroutines/2*each), e.count(t, b))
	require.NoError(t, w.Close(t.Context()))
	_, err = w.Append(actx, audit.Event{Actor: "a", Action: "b", Outcome: audit.OutcomeSuccess})
	require.ErrorIs(t, err, audit.ErrClosed)
}

// lockLog holds the writers' lock of tenant id's log from a superuser
// session until the returned function is called: a database that does
// not take the writer's batches.
func (e *env) lockLog(t *testing.T, id tenant.ID) (release func()) {
	t.Helper()
	c, table := e.superuser(t, id)
	lock := table[:len(table)-len(`"audit_log"`)] + `"audit_log_writer"`
	tx, err := c.Begin(t.Context())
	require.NoError(t, err)
	_, err = tx.Exec(t.Context(), `LOCK TABLE `+lock+` IN EXCLUSIVE MODE`)
	require.NoError(t, err)
	var once sync.Once
	release = func() { once.Do(func() { require.NoError(t, tx.Rollback(context.Background())) }) }
	t.Cleanup(release)
	return release
}

// TestWriterBackpressure holds a tenant's log locked, so that no batch
// commits: memory stays at MaxPending entries, and Append fails at once
// (OverflowFail) or waits for room until its context ends
// (OverflowBlock). When the database takes batches again, every accepted
// entry is written.
func TestWriterBackpressure(t *testing.T) {
	e := newEnv(t, "standard")
	id, ctx := e.newTenant(t, "bp")
	release := e.lockLog(t, id)
	ev := audit.Event{Actor: "a", Action: "b", Outcome: audit.OutcomeSuccess}

	fail, err := e.log.NewWriter(writerConfig(func(c *audit.WriterConfig) { c.MaxBatch, c.MaxPending, c.Overflow = 10, 30, audit.OverflowFail }))
	require.NoError(t, err)
	for range 30 {
		_, err := fail.Append(ctx, ev)
		require.NoError(t, err)
	}
	_, err = fail.Append(ctx, ev)
	require.ErrorIs(t, err, audit.ErrBackpressure)

	block, err := e.log.NewWriter(writerConfig(func(c *audit.WriterConfig) { c.MaxBatch, c.MaxPending, c.Overflow = 5, 5, audit.OverflowBlock }))
	require.NoError(t, err)
	for range 5 {
		_, err := block.Append(ctx, ev)
		require.NoError(t, err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = block.Append(short, ev)
	require.ErrorIs(t, err, audit.ErrBackpressure)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.GreaterOrEqual(t, time.Since(start), 90*time.Millisecond, "Append waited")

	short2, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	err = fail.Flush(short2)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), "30 entries not written yet")
	require.Equal(t, int64(0), e.count(t, id))

	// A blocked Append goes on as soon as there is room.
	done := make(chan error, 1)
	go func() { _, err := block.Append(ctx, ev); done <- err }()
	time.Sleep(50 * time.Millisecond)
	release()
	require.NoError(t, <-done)
	require.NoError(t, fail.Close(t.Context()))
	require.NoError(t, block.Close(t.Context()))
	require.Equal(t, int64(36), e.count(t, id))
	_, err = e.log.Verify(ctx)
	require.NoError(t, err)
}

// TestWriterReportsEntriesNotWritten: an entry the database refuses (a
// constraint a superuser added) fails alone, with an error naming it,
// while the rest of its batch is written; entries of a tenant whose keys
// are shredded fail with the reason.
func TestWriterReportsEntriesNotWritten(t *testing.T) {
	e := newEnv(t, "standard")
	id, ctx := e.newTenant(t, "nw")
	c, table := e.superuser(t, id)
	_, err := c.Exec(t.Context(), `ALTER TABLE `+table+` ADD CONSTRAINT no_poison CHECK (NOT details ? 'poison')`)
	require.NoError(t, err)
	w, err := e.log.NewWriter(writerConfig(func(c *audit.WriterConfig) { c.FlushDelay = 50 * time.Millisecond }))
	require.NoError(t, err)
	var rs []audit.Receipt
	for i := range 10 {
		d := map[string]any{"i": i}
		if i == 4 {
			d["poison"] = true
		}
		r, err := w.Append(ctx, audit.Event{Actor: "a", Action: "b", Outcome: audit.OutcomeSuccess, Details: d})
		require.NoError(t, err)
		rs = append(rs, r)
	}
	err = w.Flush(t.Context())
	require.ErrorIs(t, err, audit.ErrNotWritten)
	require.Contains(t, err.Error(), "1 entries failed")
	require.NoError(t, w.Flush(t.Context()), "Flush reports a failure once")
	seq := int64(0)
	for i, r := range rs {
		en, err := r.Wait(t.Context())
		if i == 4 {
			require.ErrorIs(t, err, audit.ErrNotWritten)
			require.Equal(t, "23514", pgCode(err), "%v", err)
			continue
		}
		require.NoError(t, err)
		seq++
		require.Equal(t, seq, en.Seq)
	}
	rep, err := e.log.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(9), rep.Entries)

	_, err = e.prov.Shred(t.Context(), id)
	require.NoError(t, err)
	e.km.Purge(id)
	r, err := w.Append(ctx, audit.Event{Actor: "a", Action: "b", Outcome: audit.OutcomeSuccess})
	require.NoError(t, err)
	_, err = r.Wait(t.Context())
	require.ErrorIs(t, err, audit.ErrNotWritten)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
	require.ErrorIs(t, w.Flush(t.Context()), audit.ErrNotWritten)
	require.NoError(t, w.Close(t.Context()))
	// Nothing can checkpoint the shredded tenant's log any more.
	err = e.log.Close(t.Context())
	require.ErrorContains(t, err, "entries up to 9 have no checkpoint")
}

// TestResentBatchIsWrittenOnce: a batch whose answer was lost is sent
// again as it was; whether the first sending got there or not, and
// whether other entries came after it meanwhile, its entries are in the
// log exactly once.
func TestResentBatchIsWrittenOnce(t *testing.T) {
	e := newEnv(t, "standard")
	id, ctx := e.newTenant(t, "resend")
	e.appendN(t, ctx, 2, 2)
	ev := []audit.Event{{Actor: "a", Action: "once", Outcome: audit.OutcomeSuccess}, {Actor: "a", Action: "once", Outcome: audit.OutcomeSuccess}}
	others := func() {
		_, err := e.log.Append(ctx, audit.Event{Actor: "b", Action: "other", Outcome: audit.OutcomeSuccess})
		require.NoError(t, err)
	}
	// It got there; nothing came after.
	first, err := audit.ResendLost(ctx, e.log, ev, true, func() {})
	require.NoError(t, err)
	require.Equal(t, int64(3), first)
	// It got there; another entry came after it.
	first, err = audit.ResendLost(ctx, e.log, ev, true, others)
	require.NoError(t, err)
	require.Equal(t, int64(5), first)
	// It never got there; another entry took its place: written after it.
	first, err = audit.ResendLost(ctx, e.log, ev, false, others)
	require.NoError(t, err)
	require.Equal(t, int64(9), first)
	// It never got there; nothing changed: written where it was meant to be.
	first, err = audit.ResendLost(ctx, e.log, ev, false, func() {})
	require.NoError(t, err)
	require.Equal(t, int64(11), first)
	require.Equal(t, int64(12), e.count(t, id))
	c, table := e.superuser(t, id)
	var once int64
	require.NoError(t, c.QueryRow(t.Context(), `SELECT count(*) FROM `+table+` WHERE action = 'once'`).Scan(&once))
	require.Equal(t, int64(8), once, "four batches of two, each once")
	_, err = e.log.Verify(ctx)
	require.NoError(t, err)
}

// TestWriterRefusedBatchStopsTheOneSentAhead: the batch sent while the
// one before it is on its way is not written after a batch the database
// refuses (an entry of it, then split out), nor after one of another
// writer that came between: every entry but the refused one is written
// once, in the order appended, with no gap.
func TestWriterRefusedBatchStopsTheOneSentAhead(t *testing.T) {
	e := newEnv(t, "standard")
	id, ctx := e.newTenant(t, "ahead")
	c, table := e.superuser(t, id)
	_, err := c.Exec(t.Context(), `ALTER TABLE `+table+` ADD CONSTRAINT no_poison CHECK (NOT details ? 'poison')`)
	require.NoError(t, err)
	w, err := e.log.NewWriter(writerConfig(func(c *audit.WriterConfig) { c.MaxBatch, c.MaxPending, c.FlushDelay = 50, 2000, 0 }))
	require.NoError(t, err)
	const n = 1500
	var rs []audit.Receipt
	for i := range n {
		d := map[string]any{"i": i}
		if i%300 == 120 {
			d["poison"] = true
		}
		if i%200 == 77 {
			_, err := e.log.Append(ctx, audit.Event{Actor: "other", Action: "between", Outcome: audit.OutcomeSuccess})
			require.NoError(t, err)
		}
		r, err := w.Append(ctx, audit.Event{Actor: "w", Action: "ahead", Outcome: audit.OutcomeSuccess, Details: d})
		require.NoError(t, err)
		rs = append(rs, r)
	}
	err = w.Flush(t.Context())
	require.ErrorIs(t, err, audit.ErrNotWritten)
	require.Contains(t, err.Error(), "5 entries failed")
	require.NoError(t, w.Close(t.Context()))
	last := int64(0)
	for i, r := range rs {
		en, err := r.Wait(t.Context())
		if i%300 == 120 {
			require.ErrorIs(t, err, audit.ErrNotWritten)
			continue
		}
		require.NoError(t, err)
		require.Greater(t, en.Seq, last, "entry %d", i)
		last = en.Seq
	}
	rep, err := e.log.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(n-5+8), rep.Entries)
	var is []int64
	rows, err := c.Query(t.Context(), `SELECT (details->>'i')::bigint FROM `+table+` WHERE actor = 'w' ORDER BY seq`)
	require.NoError(t, err)
	for rows.Next() {
		var i int64
		require.NoError(t, rows.Scan(&i))
		is = append(is, i)
	}
	require.NoError(t, rows.Err())
	require.Len(t, is, n-5)
	k := 0
	for i := range int64(n) {
		if i%300 == 120 {
			continue
		}
		require.Equal(t, i, is[k], "the Writer's entries, in order, each once")
		k++
	}
}

// TestWriterResendsBatchesSentAheadOnce: batches sent ahead whose
// answers are lost (written or not, and the one after sent meanwhile) are
// sent again as they were: every entry is in the log once, in the order
// appended, with no gap.
func TestWriterResendsBatchesSentAheadOnce(t *testing.T) {
	e := newEnv(t, "standard")
	id, ctx := e.newTenant(t, "aheadlost")
	var calls atomic.Int64
	defer audit.SetAheadAnswerLost(func() bool { return calls.Add(1)%3 == 0 })()
	w, err := e.log.NewWriter(writerConfig(func(c *audit.WriterConfig) {
		c.MaxBatch, c.MaxPending, c.FlushDelay, c.RetryMin = 50, 2000, 0, time.Millisecond
	}))
	require.NoError(t, err)
	const n = 1500
	for i := range n {
		_, err := w.Append(ctx, audit.Event{Actor: "w", Action: "lost", Outcome: audit.OutcomeSuccess, Details: map[string]any{"i": i}})
		require.NoError(t, err)
	}
	require.NoError(t, w.Flush(t.Context()))
	require.NoError(t, w.Close(t.Context()))
	require.Greater(t, calls.Load(), int64(6), "batches were sent ahead")
	rep, err := e.log.Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(n), rep.Entries)
	c, table := e.superuser(t, id)
	rows, err := c.Query(t.Context(), `SELECT (details->>'i')::bigint FROM `+table+` ORDER BY seq`)
	require.NoError(t, err)
	k := int64(0)
	for rows.Next() {
		var i int64
		require.NoError(t, rows.Scan(&i))
		require.Equal(t, k, i, "in order, each once")
		k++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, int64(n), k)
}
