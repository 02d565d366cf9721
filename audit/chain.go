package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// macer computes and verifies the tags of one log's chain: a *keys.MAC
// (from keys.Manager.MAC, bound to its tenant) is one.
type macer interface {
	ComputeMAC(data []byte) ([]byte, error)
	Verifier
}

// Verifier verifies the tags of one log's chain; offline verification
// ([VerifyExport]) needs no more. A *keys.MAC is one.
type Verifier interface {
	VerifyMAC(tag, data []byte) error
}

// querier is what a batch runs on: a *store.Tx (a tenant's log) or a
// pgx.Tx (the platform's trail).
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// table is the SQL of one kind of audit table.
type table struct {
	lock, head, insert, scan string
}

// appendSQL appends a batch to the log of the tenant of the session (see
// appendFunctionSQL).
const appendSQL = `SELECT appended, present, head_seq, head_mac FROM audit_log_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`

func tableSQL(name, lockName string) table {
	return table{
		lock: `LOCK TABLE ` + lockName + ` IN EXCLUSIVE MODE`,
		head: `SELECT seq, mac FROM ` + name + ` ORDER BY seq DESC LIMIT 1`,
		insert: `INSERT INTO ` + name + ` (seq, at, actor, action, resource, outcome, details, source_ip, user_agent, prev_mac, mac)
	SELECT s, a, ac, act, r, o, d::jsonb, NULLIF(ip, '')::inet, ua, pm, m
	FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
	            $9::text[], $10::bytea[], $11::bytea[]) AS u(s, a, ac, act, r, o, d, ip, ua, pm, m)`,
		scan: `SELECT seq, at, actor, action, resource, outcome, details::text, source_ip, user_agent, prev_mac, mac
	FROM ` + name + ` WHERE seq > $1 ORDER BY seq LIMIT $2`,
	}
}

var (
	tenantTable   = tableSQL("audit_log", "audit_log_writer")
	platformTable = tableSQL("tenancy.platform_audit", "tenancy.platform_audit")
)

// written is what a batch wrote: entries first to first+len(macs)-1, the
// first after an entry whose MAC is prev.
type written struct {
	first int64
	prev  []byte
	macs  [][]byte
}

func (w *written) last() (int64, []byte) {
	return w.first + int64(len(w.macs)) - 1, w.macs[len(w.macs)-1]
}

// prevOf returns the previous MAC of the i-th entry written.
func (w *written) prevOf(i int) []byte {
	if i == 0 {
		return w.prev
	}
	return w.macs[i-1]
}

// batch is a chain of entries computed from a head: the entries and
// their times (the columns that write it are made from them).
type batch struct {
	written
	items []*prepared
	ats   []time.Time
}

// args returns the columns as the arguments $1 to $11 of table.insert
// (appendArgs packs them for appendSQL).
func (b *batch) args() []any {
	n := len(b.items)
	seqs, prevs := make([]int64, n), make([][]byte, n)
	actors, actions, resources, outcomes := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	details, ips, agents := make([]string, n), make([]string, n), make([]string, n)
	for i, p := range b.items {
		seqs[i], prevs[i] = b.first+int64(i), b.prevOf(i)
		actors[i], actions[i], resources[i], outcomes[i] = p.actor, p.action, p.resource, string(p.outcome)
		details[i], ips[i], agents[i] = string(p.details()), ipString(p.ip), p.userAgent
	}
	return []any{seqs, b.ats, actors, actions, resources, outcomes, details, ips, agents, prevs, b.macs}
}

// chain computes the entries of items with mac, the first numbered
// head+1 after an entry whose MAC is headMAC.
func chain(items []*prepared, head int64, headMAC []byte, mac macer) (*batch, error) {
	n := len(items)
	if head+int64(n) > maxSeq {
		return nil, fmt.Errorf("the log is full: sequence numbers end at %d", int64(maxSeq))
	}
	b := &batch{written: written{first: head + 1, prev: headMAC, macs: make([][]byte, n)}, items: items, ats: make([]time.Time, n)}
	if b.prev == nil {
		b.prev = []byte{}
	}
	prev := b.prev
	buf := make([]byte, 0, 512)
	for i, p := range items {
		buf = p.macInput(buf[:0], b.first+int64(i), prev)
		tag, err := mac.ComputeMAC(buf)
		if err != nil {
			return nil, err
		}
		b.ats[i], b.macs[i] = p.at, tag
		prev = tag
	}
	return b, nil
}

// lockedBatch appends items to the log of t in q, in the transaction q
// belongs to: it locks the log against other writers, reads its head,
// computes the chain with mac and inserts every entry in one statement.
// fresh are the arguments that make q plan a statement afresh (see
// freshPlan). It returns the batch once it is sent, with the error of the
// INSERT if any.
func lockedBatch(ctx context.Context, q querier, t table, mac macer, items []*prepared, fresh []any) (*batch, error) {
	if _, err := q.Exec(ctx, t.lock); err != nil {
		return nil, err
	}
	var head int64
	var headMAC []byte
	err := q.QueryRow(ctx, t.head, fresh...).Scan(&head, &headMAC)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, err
	}
	b, err := chain(items, head, headMAC, mac)
	if err != nil {
		return nil, err
	}
	_, err = q.Exec(ctx, t.insert, b.args()...)
	return b, err
}

// freshPlan is the pgx option that has PostgreSQL plan a statement each
// time it runs (an unnamed statement) rather than keep the plan it made
// the first time on a connection: a plan made while the log was empty
// reads the head with a sequential scan, which grows with the log.
var freshPlan = []any{pgx.QueryExecModeExec}

// scanPage is how many entries one query of a scan reads.
const scanPage = 5000

// scanLog calls fn with each entry of log, in sequence order, reading it
// in pages of scanPage with page (t.scan with its arguments: the sequence
// number after which to start, and the page's size).
func scanLog(log string, page func(after int64, limit int) (pgx.Rows, error), fn func(*Entry) error) error {
	after := int64(0)
	for {
		rows, err := page(after, scanPage)
		if err != nil {
			return err
		}
		n := 0
		err = scanEntries(rows, log, func(e *Entry) error {
			n++
			after = e.Seq
			return fn(e)
		})
		if err != nil || n < scanPage {
			return err
		}
	}
}

// scanEntries calls fn with each entry that rows (of t.scan) give, in
// their order.
func scanEntries(rows pgx.Rows, log string, fn func(*Entry) error) error {
	defer rows.Close()
	for rows.Next() {
		e := &Entry{Log: log}
		var ip *netip.Prefix
		var details string
		var outcome string
		if err := rows.Scan(&e.Seq, &e.Time, &e.Actor, &e.Action, &e.Resource, &outcome, &details, &ip, &e.UserAgent, &e.PrevMAC, &e.MAC); err != nil {
			return err
		}
		e.Outcome, e.Details, e.Time = Outcome(outcome), []byte(details), e.Time.UTC()
		if exactNumbers(e.Details) == nil {
			if c, err := canonicalDetails(json.RawMessage(e.Details)); err == nil {
				e.Details = c // jsonb keeps them in a form of its own
			}
		} // else kept as stored, for Verify to refuse (and an export to show)
		if ip != nil && ip.IsSingleIP() {
			e.SourceIP = ip.Addr()
		} // a network (10.0.0.1/8) is no entry's source: left unknown, it does not verify
		if err := fn(e); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Checkpoint is a MAC'd record of a log's head at one time: the sequence
// number of its last entry and that entry's MAC. Checkpoints are kept in
// the control plane, apart from the log; a log shorter than its last
// checkpoint has lost entries.
type Checkpoint struct {
	Log  string    `json:"log"`
	Seq  int64     `json:"seq"`
	Head []byte    `json:"head_mac"`
	Time time.Time `json:"time"`
	// MAC is the log's audit key over the canonical JSON of the fields
	// above (see the package documentation).
	MAC []byte `json:"mac"`
}

// Report is what a verification found in a log that verifies.
type Report struct {
	// Log is the tenant's ID, or "platform".
	Log string
	// Entries is the number of entries verified; HeadSeq and HeadMAC are
	// the last one's sequence number and MAC (0 and nil for an empty log).
	Entries int64
	HeadSeq int64
	HeadMAC []byte
	// Checkpoints is the number of checkpoints verified, and
	// LastCheckpoint the sequence number of the last (0 if none).
	Checkpoints    int
	LastCheckpoint int64
}

// verifier checks a chain entry by entry, against its checkpoints.
type verifier struct {
	log  string
	mac  Verifier
	cps  []Checkpoint // in sequence order, each verified
	next int          // the first checkpoint not reached yet
	rep  Report
	buf  []byte
}

// newVerifier verifies the checkpoints of log (in any order) and returns a
// verifier of its entries, or the first checkpoint that does not verify.
func newVerifier(log string, mac Verifier, cps []Checkpoint) (*verifier, error) {
	v := &verifier{log: log, mac: mac, rep: Report{Log: log}}
	var prevSeq int64
	for _, c := range cps {
		if c.Seq <= prevSeq {
			return nil, &ChainError{Log: log, Seq: c.Seq, Problem: ProblemCheckpoint, Detail: "checkpoints out of order"}
		}
		prevSeq = c.Seq
		if err := mac.VerifyMAC(c.MAC, checkpointInput(log, c.Seq, c.Head, c.Time)); err != nil {
			return nil, &ChainError{Log: log, Seq: c.Seq, Problem: ProblemCheckpoint, Detail: "the checkpoint's MAC does not verify (forged, or made with another key)"}
		}
		v.cps = append(v.cps, c)
	}
	v.rep.Checkpoints = len(v.cps)
	if len(v.cps) > 0 {
		v.rep.LastCheckpoint = v.cps[len(v.cps)-1].Seq
	}
	return v, nil
}

// entry verifies the next entry of the log, e, or returns the break it is.
func (v *verifier) entry(e *Entry) error {
	want := v.rep.HeadSeq + 1
	if e.Seq != want {
		if e.Seq > want {
			return &ChainError{Log: v.log, Seq: want, Problem: ProblemMissing,
				Detail: fmt.Sprintf("the log goes from entry %d to entry %d: entries were deleted (or moved)", v.rep.HeadSeq, e.Seq)}
		}
		return &ChainError{Log: v.log, Seq: e.Seq, Problem: ProblemReordered, Detail: fmt.Sprintf("entry %d comes after entry %d", e.Seq, v.rep.HeadSeq)}
	}
	prev := v.rep.HeadMAC
	if prev == nil {
		prev = []byte{}
	}
	linked := bytes.Equal(e.PrevMAC, prev)
	p, err := prepareStored(e)
	if err != nil {
		return &ChainError{Log: v.log, Seq: e.Seq, Problem: ProblemChanged, Detail: err.Error()}
	}
	v.buf = p.macInput(v.buf[:0], e.Seq, e.PrevMAC)
	if v.mac.VerifyMAC(e.MAC, v.buf) != nil {
		if !linked {
			return &ChainError{Log: v.log, Seq: e.Seq, Problem: ProblemReordered,
				Detail: "the entry's MAC does not verify and it does not follow the entry before: entries were reordered, inserted or replaced"}
		}
		return &ChainError{Log: v.log, Seq: e.Seq, Problem: ProblemChanged, Detail: "the entry's MAC does not verify: it was changed, or forged in this place"}
	}
	if !linked {
		return &ChainError{Log: v.log, Seq: e.Seq, Problem: ProblemReordered, Detail: "the entry does not follow the entry before it"}
	}
	for v.next < len(v.cps) && v.cps[v.next].Seq <= e.Seq {
		if c := v.cps[v.next]; c.Seq == e.Seq && !bytes.Equal(c.Head, e.MAC) {
			return &ChainError{Log: v.log, Seq: e.Seq, Problem: ProblemCheckpoint,
				Detail: "the entry verifies but is not the one its checkpoint recorded: the log was rewritten from here"}
		}
		v.next++
	}
	v.rep.Entries++
	v.rep.HeadSeq, v.rep.HeadMAC = e.Seq, e.MAC
	return nil
}

// finish checks the end of the log against the checkpoints.
func (v *verifier) finish() (Report, error) {
	if v.rep.LastCheckpoint > v.rep.HeadSeq {
		return v.rep, &ChainError{Log: v.log, Seq: v.rep.HeadSeq + 1, Problem: ProblemTruncated,
			Detail: fmt.Sprintf("the log ends at entry %d, but a checkpoint records entry %d: its last entries were cut off", v.rep.HeadSeq, v.rep.LastCheckpoint)}
	}
	return v.rep, nil
}
