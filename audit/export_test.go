package audit

import "time"

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
	beforeSend = f
	return func() { beforeSend = nil }
}

// FastDetails is the encoder of the usual Go types of details.
func FastDetails(details any) ([]byte, bool, error) { return fastDetails(details) }
