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

// MAC computes and verifies the tags of one log's chain: a *keys.MAC (from
// keys.Manager.MAC, bound to its tenant) is one.
type MAC interface {
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

func tableSQL(name, lockName string) table {
	return table{
		lock: `LOCK TABLE ` + lockName + ` IN EXCLUSIVE MODE`,
		head: `SELECT seq, mac FROM ` + name + ` ORDER BY seq DESC LIMIT 1`,
		insert: `INSERT INTO ` + name + ` (seq, at, actor, action, resource, outcome, details, source_ip, user_agent, prev_mac, mac)
	SELECT s, a, ac, act, r, o, d::jsonb, NULLIF(ip, '')::inet, ua, pm, m
	FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
	            $9::text[], $10::bytea[], $11::bytea[]) AS u(s, a, ac, act, r, o, d, ip, ua, pm, m)`,
		scan: `SELECT seq, at, actor, action, resource, outcome, details::text, source_ip, user_agent, prev_mac, mac
	FROM ` + name + ` ORDER BY seq`,
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

// writeBatch appends items to the log of t in q, in the transaction q
// belongs to: it locks the log against other writers, reads its head,
// computes the chain with mac and inserts every entry in one statement.
func writeBatch(ctx context.Context, q querier, t table, log string, mac MAC, items []*prepared) (*written, error) {
	if _, err := q.Exec(ctx, t.lock); err != nil {
		return nil, err
	}
	w := &written{first: 1}
	var head int64
	err := q.QueryRow(ctx, t.head).Scan(&head, &w.prev)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		w.prev = []byte{}
	case err != nil:
		return nil, err
	default:
		w.first = head + 1
	}
	if w.first+int64(len(items))-1 > maxSeq {
		return nil, fmt.Errorf("the log is full: sequence numbers end at %d", int64(maxSeq))
	}
	n := len(items)
	var (
		seqs                                = make([]int64, n)
		ats                                 = make([]time.Time, n)
		actors, actions, resources, outcome = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		details, ips, uas                   = make([]string, n), make([]string, n), make([]string, n)
		prevs                               = make([][]byte, n)
	)
	w.macs = make([][]byte, n)
	prev := w.prev
	var buf []byte
	for i, p := range items {
		seq := w.first + int64(i)
		buf = p.macInput(buf[:0], seq, prev)
		tag, err := mac.ComputeMAC(buf)
		if err != nil {
			return nil, err
		}
		seqs[i], ats[i], actors[i], actions[i], resources[i], outcome[i] = seq, p.at, p.actor, p.action, p.resource, string(p.outcome)
		details[i], ips[i], uas[i], prevs[i], w.macs[i] = string(p.details), ipString(p.ip), p.userAgent, prev, tag
		prev = tag
	}
	if _, err := q.Exec(ctx, t.insert, seqs, ats, actors, actions, resources, outcome, details, ips, uas, prevs, w.macs); err != nil {
		return nil, err
	}
	return w, nil
}

// scanEntries calls fn with each entry of the log of t, in sequence
// order, as rows (of t.scan) give them.
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
		if c, err := canonicalDetails(json.RawMessage(e.Details)); err == nil {
			e.Details = c // jsonb keeps them in a form of its own
		}
		if ip != nil {
			e.SourceIP = ip.Addr()
		}
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
