package audit

import (
	"errors"
	"fmt"
	"strings"
)

// The sentinel errors carry no package prefix: the errors the package
// returns wrap them behind one "audit: " prefix (errors.Is matches them).

var (
	// ErrInvalidEvent is wrapped by the error of an append whose [Event]
	// breaks a rule; the error is a [*FieldError] (several, joined) naming
	// the field.
	ErrInvalidEvent = errors.New("invalid event")

	// ErrInvalidConfig is wrapped by errors for a [Config] or
	// [WriterConfig] that cannot be used; the message names the field.
	ErrInvalidConfig = errors.New("invalid configuration")

	// ErrBackpressure is returned by [Writer.Append] in [OverflowFail]
	// mode when the writer holds WriterConfig.MaxPending entries not yet
	// written: the database is slower than the callers.
	ErrBackpressure = errors.New("too many entries waiting to be written")

	// ErrNotWritten is wrapped by the error of an entry the [Writer] could
	// not write, and gave up on (the cause is wrapped too): the tenant is
	// unknown or its keys are destroyed, or PostgreSQL refused the entry
	// itself. Transient failures (a lost connection, a slow database) are
	// retried, not reported.
	ErrNotWritten = errors.New("entry not written")

	// ErrClosed is wrapped by errors for a call on a closed [Log] or
	// [Writer].
	ErrClosed = errors.New("closed")

	// ErrTampered is wrapped by the error of [Log.Verify], [Platform.Verify]
	// and [VerifyExport] when the chain does not verify; the error is a
	// [*ChainError] naming the first broken entry.
	ErrTampered = errors.New("audit log does not verify")

	// ErrNotInstalled is wrapped by errors for a database without the
	// audit tables: a tenant whose schema lacks the audit migration
	// ([Migrations]), or a control plane without [Install].
	ErrNotInstalled = errors.New("audit tables missing")

	// ErrBadExport is wrapped by the error of [VerifyExport] for input
	// that is not an export: a malformed or unexpected line.
	ErrBadExport = errors.New("malformed export")
)

// FieldError is the error of one field of an [Event] that breaks a rule.
// It wraps [ErrInvalidEvent].
type FieldError struct {
	// Field is the name of the Event field (Actor, Details, ...).
	Field string
	// Rule says what the field must be.
	Rule string
}

// Error returns "audit: invalid event: field <Field>: <Rule>".
func (e *FieldError) Error() string {
	return fmt.Sprintf("audit: %v: field %s: %s", ErrInvalidEvent, e.Field, e.Rule)
}

// Unwrap makes errors.Is(err, ErrInvalidEvent) true.
func (e *FieldError) Unwrap() error { return ErrInvalidEvent }

// Problem is the kind of break [Log.Verify] found in a chain.
type Problem string

const (
	// ProblemChanged: the entry's MAC does not verify over its fields: a
	// field or the MAC was changed, or the entry was forged.
	ProblemChanged Problem = "changed"
	// ProblemMissing: no entry has this sequence number, but later ones
	// exist: entries were deleted.
	ProblemMissing Problem = "missing"
	// ProblemReordered: the entry is not the one that followed its
	// predecessor (its previous-MAC field names another entry): entries
	// were reordered, or one was inserted or put in another's place.
	ProblemReordered Problem = "reordered"
	// ProblemTruncated: the log ends before the sequence number of a
	// checkpoint: its last entries were cut off.
	ProblemTruncated Problem = "truncated"
	// ProblemCheckpoint: a checkpoint does not verify, or its head MAC is
	// not the MAC of the entry it covers.
	ProblemCheckpoint Problem = "checkpoint"
	// ProblemExport: an export's trailer is missing, does not verify or
	// does not match its entries.
	ProblemExport Problem = "export"
)

// ChainError reports the first break of an audit chain. It wraps
// [ErrTampered].
type ChainError struct {
	// Log is the tenant's ID, or "platform".
	Log string
	// Seq is the sequence number of the first broken entry: for
	// ProblemTruncated the first missing one at the end.
	Seq int64
	// Problem is the kind of break.
	Problem Problem
	// Detail says more, for people.
	Detail string
}

// Error returns "audit: log <Log>: entry <Seq>: <Problem>: <Detail>".
func (e *ChainError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "audit: %v: log %s: entry %d: %s", ErrTampered, e.Log, e.Seq, e.Problem)
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrTampered) true.
func (e *ChainError) Unwrap() error { return ErrTampered }
