package audit

import (
	"context"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

// CanonicalEntry returns the canonical encoding over which the MAC of ev
// as entry seq of log, after an entry whose MAC is prev, is computed.
func CanonicalEntry(log string, ev Event, seq int64, prev []byte) ([]byte, time.Time, error) {
	p, err := prepare(log, ev, time.Now())
	if err != nil {
		return nil, time.Time{}, err
	}
	return p.macInput(nil, seq, prev), p.at, nil
}

// CanonicalDetails returns the canonical form of details.
func CanonicalDetails(details any) ([]byte, error) { return canonicalDetails(details) }

// CheckpointInput and TrailerInput are the canonical encodings of a
// checkpoint and an export trailer.
var (
	CheckpointInput = checkpointInput
	TrailerInput    = trailerInput
)

// SetBeforeSend makes every batch of a Log call f before it is sent to
// the database, until restore is called. Not for parallel tests.
func SetBeforeSend(f func(n int)) (restore func()) {
	beforeSend, sendsInTurn = func(_ int64, n int) { f(n) }, true
	return func() { beforeSend, sendsInTurn = nil, false }
}

// SetBeforeEverySend is SetBeforeSend without the turns: a batch sent
// ahead goes while the one before it is on its way, as without the hook,
// and f runs in the goroutine of each, with the sequence number of the
// batch's first entry (-1 when it is worked out in the transaction).
func SetBeforeEverySend(f func(first int64, n int)) (restore func()) {
	beforeSend = f
	return func() { beforeSend = nil }
}

// SetAheadAnswerLost makes a Log drop the answer to a batch sent ahead
// (written or not) when f returns true, until restore is called. Not for
// parallel tests.
func SetAheadAnswerLost(f func() bool) (restore func()) {
	aheadAnswerLost = f
	return func() { aheadAnswerLost = nil }
}

// FastDetails is the encoder of the usual Go types of details.
func FastDetails(details any) ([]byte, bool, error) { return fastDetails(details) }

// ResendLost computes the batch of events after the head l knows for the
// tenant of ctx (which must be known: append something first), sends it
// if send, then runs between, then sends the same batch again as a batch
// whose answer was lost is sent; it returns the first sequence number of
// what the second sending reports written.
func ResendLost(ctx context.Context, l *Log, events []Event, send bool, between func()) (int64, error) {
	id, err := tenant.Require(ctx, "ResendLost")
	if err != nil {
		return 0, err
	}
	items := make([]*prepared, len(events))
	for i, ev := range events {
		if items[i], err = prepare(id.String(), ev, time.Now()); err != nil {
			return 0, err
		}
	}
	mac, err := l.keys.MAC(ctx)
	if err != nil {
		return 0, err
	}
	seq, head := l.knownHead(id)
	b, err := chain(items, seq, head, mac)
	if err != nil {
		return 0, err
	}
	if send {
		if _, err := l.write(ctx, id, items, b); err != nil {
			return 0, err
		}
	}
	between()
	w, err := l.write(ctx, id, items, b)
	if err != nil {
		return 0, err
	}
	return w.first, nil
}
