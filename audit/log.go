package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Config configures a [Log]. Start from [DefaultConfig] and set DB and
// Keys; [New] rejects a Config with a field out of range, and zero is
// never taken to mean a default.
type Config struct {
	// DB is the request path of store: entries are written and read as
	// the tenant in the context, on its own connections; checkpoints are
	// written and read as the platform role.
	DB *store.DB
	// Keys gives each tenant's audit MAC (keys.Manager.MAC).
	Keys *keys.Manager
	// CheckpointEvery is how many entries of a tenant this Log writes
	// between two checkpoints of its log (N, at least 1).
	// DefaultConfig sets 1000.
	CheckpointEvery int
	// CheckpointInterval is the longest a tenant's new entries wait for a
	// checkpoint (T, at least 10 ms). DefaultConfig sets one minute.
	CheckpointInterval time.Duration
	// Logger receives the package's logs (a checkpoint that failed, a
	// writer's retries); nil discards them. Logs carry tenant IDs and
	// sequence numbers, never an entry's fields.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with the default checkpoint policy and
// no DB or Keys.
func DefaultConfig() Config {
	return Config{CheckpointEvery: 1000, CheckpointInterval: time.Minute}
}

// Log is the audit logs of the tenants of one store.DB: every call works
// on the log of the tenant in its context, and fails with an error
// wrapping tenant.ErrNoTenant without one. It writes checkpoints as the
// Config says, from a goroutine of its own (appends do not wait for
// them), until [Log.Close]. It is safe for concurrent use, also by several
// processes on one database.
type Log struct {
	db   *store.DB
	keys *keys.Manager
	cfg  Config
	log  *slog.Logger

	mu     sync.Mutex // guards heads, turns and closed
	heads  map[tenant.ID]*head
	turns  map[tenant.ID]*turn
	closed bool
	kick   chan struct{} // wakes the checkpointer
	stop   chan struct{} // closed by Close
	done   chan struct{} // closed when the checkpointer has stopped
}

// head is what a Log knows of a tenant's log: the last entry it wrote
// (seq, mac) and the last checkpoint it made.
type head struct {
	seq     int64
	mac     []byte
	ckSeq   int64
	ckAt    time.Time
	writing bool // a checkpoint is being written
}

// New returns a Log for cfg. It does no I/O: the audit tables are
// expected in place ([WithMigration], [Install]); a call on a tenant
// without them fails with an error wrapping [ErrNotInstalled].
func New(cfg Config) (*Log, error) {
	switch {
	case cfg.DB == nil:
		return nil, fmt.Errorf("audit: %w: Config.DB is required", ErrInvalidConfig)
	case cfg.Keys == nil:
		return nil, fmt.Errorf("audit: %w: Config.Keys is required", ErrInvalidConfig)
	case cfg.CheckpointEvery < 1:
		return nil, fmt.Errorf("audit: %w: Config.CheckpointEvery must be at least 1, got %d (start from audit.DefaultConfig)", ErrInvalidConfig, cfg.CheckpointEvery)
	case cfg.CheckpointInterval < 10*time.Millisecond:
		return nil, fmt.Errorf("audit: %w: Config.CheckpointInterval must be at least 10ms, got %s (start from audit.DefaultConfig)", ErrInvalidConfig, cfg.CheckpointInterval)
	}
	l := &Log{db: cfg.DB, keys: cfg.Keys, cfg: cfg, log: cfg.Logger, heads: map[tenant.ID]*head{}, turns: map[tenant.ID]*turn{},
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	go l.checkpointer()
	return l, nil
}

// Append writes events to the log of the tenant in ctx, in one
// transaction, as consecutive entries, and returns them. Either all are
// written or none; if the database's answer is lost (the connection
// failed after the batch was sent), the same batch is sent again, up to
// three times, so that it is written once, and an error after that says
// the entries may have been written. It validates every event first: an invalid one fails
// the call with an error wrapping [ErrInvalidEvent] that names the field
// (and the event's index), and nothing is written. For many small appends
// a [Writer] batches them.
func (l *Log) Append(ctx context.Context, events ...Event) ([]Entry, error) {
	id, err := tenant.Require(ctx, "audit: append")
	if err != nil {
		return nil, err
	}
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	items := make([]*prepared, len(events))
	t := now()
	for i, ev := range events {
		if items[i], err = prepare(id.String(), ev, t); err != nil {
			return nil, fmt.Errorf("audit: append to tenant %s: event %d: %w", id, i, err)
		}
	}
	if len(items) == 0 {
		return nil, nil
	}
	w, err := l.write(ctx, id, items, nil)
	var sent *sentError
	for attempt := 0; attempt < 3 && errors.As(err, &sent); attempt++ {
		// The answer was lost: send the same batch again, so that it is
		// written once whether or not the first one got there.
		select {
		case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
		case <-ctx.Done():
			return nil, fmt.Errorf("audit: append to tenant %s: %w (and then: %w)", id, err, ctx.Err())
		}
		w, err = l.write(ctx, id, items, sent.b)
	}
	if err != nil {
		return nil, fmt.Errorf("audit: append to tenant %s: %w", id, err)
	}
	out := make([]Entry, len(items))
	for i, p := range items {
		out[i] = p.entry(id.String(), w.first+int64(i), w.prevOf(i), w.macs[i])
	}
	return out, nil
}

// fresh returns the arguments that make the DB plan a statement afresh:
// freshPlan, but for ModeSharedPool, which plans every statement so and
// takes no per-query option.
func (l *Log) fresh() []any {
	if l.db.Mode() == store.ModeSharedPool {
		return nil
	}
	return freshPlan
}

// scan calls fn with each entry of the log of the tenant in ctx.
func (l *Log) scan(ctx context.Context, id tenant.ID, fn func(*Entry) error) error {
	return scanLog(id.String(), func(after int64, limit int) (pgx.Rows, error) {
		rows, err := l.db.Query(ctx, tenantTable.scan, append(l.fresh(), after, limit)...)
		if err != nil {
			return nil, notInstalled(err, "the tenant's schema has no audit_log")
		}
		return rows, nil
	}, fn)
}

func (l *Log) checkOpen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("audit: %w: the Log is closed", ErrClosed)
	}
	return nil
}

// beforeSend, when set (by tests only), runs before each batch of n
// entries is sent to the database, with the sequence number of its first
// entry (-1 when the transaction works it out).
var beforeSend func(first int64, n int)

// sendsInTurn, when set with beforeSend (by tests only), makes a batch
// sent ahead wait for the answer to the batch before it, so that tests see
// the batches sent one after the other.
var sendsInTurn bool

// write appends items to the log of tenant id (in ctx) in one
// transaction. Appends of one tenant by this Log take turns, so the head
// this Log last wrote is the log's unless another process wrote since:
// the chain is computed from it and sent in one statement (one round
// trip, its own transaction), which inserts it only if the head is still
// that one. If not (another process wrote, or this Log knows no head),
// the batch is written in a transaction that locks the log first, reads
// its head, and inserts the chain computed from it: that cannot lose a
// race.
//
// prior, if not nil, is the batch of an earlier attempt at items whose
// answer was lost (a [*sentError]): it is sent again as it was, so that
// it is written once whether or not the earlier attempt got there. A
// batch whose answer is lost this time is returned in a *sentError.
func (l *Log) write(ctx context.Context, id tenant.ID, items []*prepared, prior *batch) (*written, error) {
	mac, err := l.keys.MAC(ctx)
	if err != nil {
		return nil, err
	}
	release, err := l.turn(ctx, id)
	if err != nil {
		return nil, err
	}
	defer release()
	seq, head := l.knownHead(id)
	b := prior
	if b == nil && seq >= 0 {
		if b, err = chain(items, seq, head, mac); err != nil {
			return nil, err
		}
	}
	if b != nil {
		if beforeSend != nil {
			beforeSend(b.first, len(items))
		}
		var appended, present bool
		err = l.db.QueryRow(ctx, appendSQL, b.appendArgs()...).Scan(&appended, &present, &seq, &head)
		switch {
		case err == nil && (appended || present):
			l.committed(id, &b.written)
			return &b.written, nil
		case err != nil && answerLost(err):
			return nil, &sentError{b: b, err: err}
		case err != nil && !lostRace(err):
			return nil, notInstalled(err, "the tenant's schema has no audit_log: add audit.WithMigration to AdminConfig.Migrations and run Admin.Migrate")
		}
	}
	for attempt := 0; ; attempt++ {
		b = nil
		err = l.db.Tx(ctx, func(tx *store.Tx) error {
			var err error
			if beforeSend != nil {
				beforeSend(-1, len(items))
			}
			b, err = lockedBatch(ctx, tx, tenantTable, mac, items, l.fresh())
			return err
		})
		if err == nil || attempt >= 3 || !lostRace(err) {
			break
		}
	}
	switch {
	case err != nil && b != nil && answerLost(err):
		return nil, &sentError{b: b, err: err}
	case err != nil:
		return nil, notInstalled(err, "the tenant's schema has no audit_log: add audit.WithMigration to AdminConfig.Migrations and run Admin.Migrate")
	}
	l.committed(id, &b.written)
	return &b.written, nil
}

// aheadAnswerLost, when set (by tests only), drops the answer to a batch
// sent by writeAhead (whether or not it was written) when it returns true.
var aheadAnswerLost func() bool

// writeAhead sends b, the chain of entries of tenant id (in ctx)
// computed from the head a batch still on its way (whose answer closes
// after) is to leave, without waiting for that batch or taking this Log's
// turn: audit_log_append takes the log's lock, so waits for the batch
// before to commit or roll back if that one has it, and inserts b only if
// the head is then the one b follows. So b is written right after the
// batch before it, or not at all. If b came first (the head was behind
// the one b follows), it is sent again once the batch before is
// answered. If it is not written (the batch before failed, or another
// writer came between), it returns nil, nil, and the entries are to be
// chained again. A batch whose answer is lost is returned in a
// *sentError. Any other failure writes nothing either, and returns nil,
// nil: the entries go again the usual way, which reports it.
func (l *Log) writeAhead(ctx context.Context, id tenant.ID, b *batch, after <-chan struct{}) (*written, error) {
	if sendsInTurn {
		select {
		case <-after:
		case <-ctx.Done():
			return nil, nil
		}
	}
	for attempt := 0; ; attempt++ {
		if beforeSend != nil {
			beforeSend(b.first, len(b.items))
		}
		var appended, present bool
		var seq int64
		var head []byte
		err := l.db.QueryRow(ctx, appendSQL, b.appendArgs()...).Scan(&appended, &present, &seq, &head)
		if aheadAnswerLost != nil && aheadAnswerLost() {
			return nil, &sentError{b: b, err: errors.New("audit: test: the answer was lost")}
		}
		switch {
		case err == nil && (appended || present):
			l.committed(id, &b.written)
			return &b.written, nil
		case err != nil && answerLost(err):
			return nil, &sentError{b: b, err: err}
		case err == nil && attempt == 0 && seq < b.first-1:
			// It came before the batch it follows was written.
			select {
			case <-after:
				continue
			case <-ctx.Done():
			}
		}
		return nil, nil
	}
}

// sentError is the error of a batch that was sent to the database and
// whose answer was lost (the connection failed, the context ended): it may
// or may not have been written. Sending b again ([Log.write]'s prior)
// writes it once either way.
type sentError struct {
	b   *batch
	err error
}

func (e *sentError) Error() string {
	return fmt.Sprintf("%v (entries %d to %d may have been written)", e.err, e.b.first, e.b.first+int64(len(e.b.macs))-1)
}

func (e *sentError) Unwrap() error { return e.err }

// answerLost reports whether err may have come after the database
// received a statement, without its answer: any error but one of the
// database (which rolls the statement back). pgconn.SafeToRetry is no
// guide: pgx reports a connection it closed while a statement was on its
// way as "conn closed", safe to retry, after the server has run it (a
// COMMIT, cut by a proxy, that committed: TestWriterLosesNothingWhileItsConnectionsAreCut).
// Sending a batch again costs one statement, which writes it once
// either way.
func answerLost(err error) bool {
	var pgErr *pgconn.PgError
	return !errors.As(err, &pgErr)
}

// turn waits until no other append of this Log to tenant id's log is
// running (or ctx ends), and returns the function that ends this one's
// turn.
func (l *Log) turn(ctx context.Context, id tenant.ID) (release func(), err error) {
	l.mu.Lock()
	t := l.turns[id]
	if t == nil {
		t = &turn{ch: make(chan struct{}, 1)}
		l.turns[id] = t
	}
	t.users++
	l.mu.Unlock()
	done := func() {
		l.mu.Lock()
		if t.users--; t.users == 0 {
			delete(l.turns, id)
		}
		l.mu.Unlock()
	}
	select {
	case t.ch <- struct{}{}:
		return func() { <-t.ch; done() }, nil
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
}

// turn is the token of the appends to one tenant's log.
type turn struct {
	ch    chan struct{}
	users int // guarded by Log.mu
}

// knownHead returns the head of the log of id this Log last wrote, or -1
// if it knows none.
func (l *Log) knownHead(id tenant.ID) (int64, []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.heads[id]; h != nil && h.mac != nil {
		return h.seq, h.mac
	}
	return -1, nil
}

// lostRace reports whether err is a batch that found another entry where
// it meant to put its own (a writer that did not take the lock, or the
// chain trigger's refusal): the batch can be made again on the new head.
func lostRace(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "23505", chainViolation, "40001", "40P01": // unique, the chain trigger, serialization, deadlock
		return true
	}
	return false
}

// committed records the head a batch wrote, and wakes the checkpointer
// if a checkpoint is due.
func (l *Log) committed(id tenant.ID, w *written) {
	seq, mac := w.last()
	l.mu.Lock()
	h := l.heads[id]
	if h == nil {
		h = &head{ckSeq: w.first - 1, ckAt: now()}
		l.heads[id] = h
	}
	if seq > h.seq || h.mac == nil {
		// Batches written one after the other may be answered in
		// another order: the head only moves forward.
		h.seq, h.mac = seq, mac
	}
	due := h.seq-h.ckSeq >= int64(l.cfg.CheckpointEvery)
	l.mu.Unlock()
	if due {
		// The checkpointer writes it: appends do not wait for it.
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// checkpointHead writes a checkpoint of the head this Log last wrote for
// id (ctx carries id), unless another is being written.
func (l *Log) checkpointHead(ctx context.Context, id tenant.ID) {
	l.mu.Lock()
	h := l.heads[id]
	if h == nil || h.writing || h.seq <= h.ckSeq {
		l.mu.Unlock()
		return
	}
	h.writing = true
	seq, mac := h.seq, h.mac
	l.mu.Unlock()
	_, err := l.addCheckpoint(ctx, id, seq, mac)
	l.mu.Lock()
	h.writing = false
	if err == nil {
		h.ckSeq, h.ckAt = max(h.ckSeq, seq), now()
	}
	l.mu.Unlock()
	if err != nil {
		l.log.WarnContext(ctx, "audit: checkpoint failed; the next batch or tick tries again", "tenant_id", id.String(), "seq", seq, "error", err)
	}
}

// addCheckpoint makes and records a checkpoint of entry seq, whose MAC is
// head, of the log of id (in ctx).
func (l *Log) addCheckpoint(ctx context.Context, id tenant.ID, seq int64, head []byte) (Checkpoint, error) {
	mac, err := l.keys.MAC(ctx)
	if err != nil {
		return Checkpoint{}, err
	}
	c, err := makeCheckpoint(id.String(), seq, head, mac)
	if err != nil {
		return Checkpoint{}, err
	}
	err = l.db.AddAuditCheckpoint(ctx, store.AuditCheckpoint{Seq: c.Seq, Head: c.Head, Time: c.Time, MAC: c.MAC})
	if err != nil {
		return Checkpoint{}, notInstalled(err, "the control plane has no audit checkpoints: run audit.Install")
	}
	return c, nil
}

func makeCheckpoint(log string, seq int64, head []byte, mac macer) (Checkpoint, error) {
	c := Checkpoint{Log: log, Seq: seq, Head: head, Time: now().UTC().Truncate(time.Microsecond)}
	var err error
	if c.MAC, err = mac.ComputeMAC(checkpointInput(log, seq, head, c.Time)); err != nil {
		return Checkpoint{}, err
	}
	return c, nil
}

// checkpointer writes the checkpoints that come due by time, until Close.
func (l *Log) checkpointer() {
	defer close(l.done)
	tick := time.NewTicker(max(l.cfg.CheckpointInterval/4, 5*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		case <-l.kick:
		}
		for _, id := range l.due(false) {
			l.checkpointHead(tenant.NewContext(context.Background(), id), id)
		}
	}
}

// due returns the tenants whose new entries wait for a checkpoint: at
// least CheckpointEvery of them or for longer than CheckpointInterval, or
// at all (all). It forgets tenants with nothing new for a while.
func (l *Log) due(all bool) []tenant.ID {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []tenant.ID
	t := now()
	for id, h := range l.heads {
		switch {
		case h.seq > h.ckSeq && (all || h.seq-h.ckSeq >= int64(l.cfg.CheckpointEvery) || t.Sub(h.ckAt) >= l.cfg.CheckpointInterval):
			ids = append(ids, id)
		case h.seq == h.ckSeq && !h.writing && t.Sub(h.ckAt) >= 2*l.cfg.CheckpointInterval:
			delete(l.heads, id)
		}
	}
	return ids
}

// Checkpoint writes a checkpoint of the current head of the log of the
// tenant in ctx, as read from the database, and returns it. An empty log
// has none to write: it returns the zero Checkpoint.
func (l *Log) Checkpoint(ctx context.Context) (Checkpoint, error) {
	id, err := tenant.Require(ctx, "audit: checkpoint")
	if err != nil {
		return Checkpoint{}, err
	}
	var seq int64
	var mac []byte
	err = l.db.QueryRow(ctx, tenantTable.head, l.fresh()...).Scan(&seq, &mac)
	if isNoRows(err) {
		return Checkpoint{}, nil
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint of tenant %s: %w", id, notInstalled(err, "the tenant's schema has no audit_log"))
	}
	c, err := l.addCheckpoint(ctx, id, seq, mac)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint of tenant %s: %w", id, err)
	}
	return c, nil
}

// Checkpoints returns the checkpoints of the log of the tenant in ctx, in
// sequence order.
func (l *Log) Checkpoints(ctx context.Context) ([]Checkpoint, error) {
	id, err := tenant.Require(ctx, "audit: checkpoints")
	if err != nil {
		return nil, err
	}
	cs, err := l.db.AuditCheckpoints(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoints of tenant %s: %w", id, notInstalled(err, "the control plane has no audit checkpoints: run audit.Install"))
	}
	out := make([]Checkpoint, len(cs))
	for i, c := range cs {
		out[i] = Checkpoint{Log: id.String(), Seq: c.Seq, Head: c.Head, Time: c.Time.UTC(), MAC: c.MAC}
	}
	return out, nil
}

// Verify recomputes the chain of the log of the tenant in ctx with the
// tenant's audit key, entry by entry, and checks it against the
// checkpoints in the control plane. It returns what it verified; if the
// chain is broken, it returns an error wrapping [ErrTampered], a
// [*ChainError] naming the first broken entry and how it broke: an entry
// changed, missing (deleted), reordered or inserted, the log shorter than
// its last checkpoint (truncated), or a checkpoint that does not verify.
// The checkpoints are read before the entries, so entries appended
// meanwhile cannot make a checkpoint look ahead of the log.
func (l *Log) Verify(ctx context.Context) (Report, error) {
	id, err := tenant.Require(ctx, "audit: verify")
	if err != nil {
		return Report{}, err
	}
	rep, err := l.verify(ctx, id)
	if err != nil {
		var ce *ChainError
		if errors.As(err, &ce) {
			return rep, err
		}
		return rep, fmt.Errorf("audit: verify tenant %s: %w", id, err)
	}
	return rep, nil
}

func (l *Log) verify(ctx context.Context, id tenant.ID) (Report, error) {
	mac, err := l.keys.MAC(ctx)
	if err != nil {
		return Report{}, err
	}
	cps, err := l.Checkpoints(ctx)
	if err != nil {
		return Report{}, err
	}
	v, err := newVerifier(id.String(), mac, cps)
	if err != nil {
		return Report{Log: id.String()}, err
	}
	if err := l.scan(ctx, id, v.entry); err != nil {
		return v.rep, err
	}
	return v.finish()
}

// Export writes the log of the tenant in ctx to w as JSON Lines, with
// its checkpoints and a trailer MAC'd by the tenant's audit key: all that
// [VerifyExport] needs to verify it offline with that key alone (see the
// package documentation for the format). It exports what is stored,
// verified or not; it returns the number of entries written.
func (l *Log) Export(ctx context.Context, w io.Writer) (int64, error) {
	id, err := tenant.Require(ctx, "audit: export")
	if err != nil {
		return 0, err
	}
	mac, err := l.keys.MAC(ctx)
	if err != nil {
		return 0, fmt.Errorf("audit: export tenant %s: %w", id, err)
	}
	cps, err := l.Checkpoints(ctx)
	if err != nil {
		return 0, err
	}
	n, err := export(w, id.String(), mac, cps, func(fn func(*Entry) error) error { return l.scan(ctx, id, fn) })
	if err != nil {
		return n, fmt.Errorf("audit: export tenant %s: %w", id, err)
	}
	return n, nil
}

// Close stops the Log's checkpointer and writes a checkpoint of every
// tenant whose entries written by this Log wait for one. Calls after
// Close fail with an error wrapping [ErrClosed]. Close the Writers of the
// Log first.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	var errs []error
	for _, id := range l.due(true) {
		c := tenant.NewContext(ctx, id)
		l.checkpointHead(c, id)
		l.mu.Lock()
		if h := l.heads[id]; h != nil && h.seq > h.ckSeq {
			errs = append(errs, fmt.Errorf("tenant %s: entries up to %d have no checkpoint", id, h.seq))
		}
		l.mu.Unlock()
	}
	if len(errs) > 0 {
		return fmt.Errorf("audit: close: %w", errors.Join(errs...))
	}
	return nil
}

func isNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }
