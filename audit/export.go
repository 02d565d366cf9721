package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

// exportFormat names the export format in its header line.
const exportFormat = "tenancy-audit-export"

// The lines of an export, one JSON object each; see the package
// documentation.
type (
	headerLine struct {
		Type       string `json:"type"` // "header"
		Format     string `json:"format"`
		V          int    `json:"v"`
		Log        string `json:"log"`
		MAC        string `json:"mac"`
		ExportedAt string `json:"exported_at"`
	}
	checkpointLine struct {
		Type string `json:"type"` // "checkpoint"
		Seq  int64  `json:"seq"`
		Head []byte `json:"head_mac"`
		Time string `json:"time"`
		MAC  []byte `json:"mac"`
	}
	entryLine struct {
		Type      string          `json:"type"` // "entry"
		Seq       int64           `json:"seq"`
		Time      string          `json:"time"`
		Actor     string          `json:"actor"`
		Action    string          `json:"action"`
		Resource  string          `json:"resource"`
		Outcome   string          `json:"outcome"`
		Details   json.RawMessage `json:"details"`
		SourceIP  string          `json:"source_ip"`
		UserAgent string          `json:"user_agent"`
		PrevMAC   []byte          `json:"prev_mac"`
		MAC       []byte          `json:"mac"`
	}
	trailerLine struct {
		Type       string `json:"type"` // "trailer"
		Entries    int64  `json:"entries"`
		HeadSeq    int64  `json:"head_seq"`
		HeadMAC    []byte `json:"head_mac"`
		ExportedAt string `json:"exported_at"`
		MAC        []byte `json:"mac"`
	}
)

// macDescription is the header's description of the MAC.
const macDescription = "HMAC-SHA256 (Tink, 5-byte key prefix) of the tenant's audit keyset, over the RFC 8785 JSON of each line's fields"

// export writes log as JSON Lines: a header, the checkpoints, the entries
// scan gives, and a trailer MAC'd with mac.
func export(w io.Writer, log string, mac macer, cps []Checkpoint, scan func(fn func(*Entry) error) error) (int64, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	at := now().UTC().Truncate(time.Microsecond)
	if err := enc.Encode(headerLine{Type: "header", Format: exportFormat, V: 1, Log: log, MAC: macDescription, ExportedAt: formatTime(at)}); err != nil {
		return 0, err
	}
	for _, c := range cps {
		if err := enc.Encode(checkpointLine{Type: "checkpoint", Seq: c.Seq, Head: c.Head, Time: formatTime(c.Time), MAC: c.MAC}); err != nil {
			return 0, err
		}
	}
	var n, headSeq int64
	headMAC := []byte{}
	err := scan(func(e *Entry) error {
		n++
		headSeq, headMAC = e.Seq, e.MAC
		return enc.Encode(entryLine{
			Type: "entry", Seq: e.Seq, Time: formatTime(e.Time), Actor: e.Actor, Action: e.Action, Resource: e.Resource,
			Outcome: string(e.Outcome), Details: e.Details, SourceIP: ipString(e.SourceIP), UserAgent: e.UserAgent,
			PrevMAC: e.PrevMAC, MAC: e.MAC,
		})
	})
	if err != nil {
		return n, err
	}
	tag, err := mac.ComputeMAC(trailerInput(log, n, headSeq, headMAC, at))
	if err != nil {
		return n, err
	}
	if err := enc.Encode(trailerLine{Type: "trailer", Entries: n, HeadSeq: headSeq, HeadMAC: headMAC, ExportedAt: formatTime(at), MAC: tag}); err != nil {
		return n, err
	}
	return n, bw.Flush()
}

// maxLine bounds one line of an export (an entry is at most about 24 KiB).
const maxLine = 1 << 20

// VerifyExport verifies an export ([Log.Export], [Platform.Export]) read
// from r, offline: with the log's audit key alone (key: the tenant's
// *keys.MAC, or the platform's), without any database. It checks every
// checkpoint, the chain entry by entry against the checkpoints, and the
// trailer, which covers the number of entries and the head, so that an
// export cut short or with lines removed does not verify. It returns the
// report; an export whose chain is broken gives an error wrapping
// [ErrTampered] (a [*ChainError] naming the first broken entry), input
// that is not an export one wrapping [ErrBadExport]. A key that names its
// tenant (a *keys.MAC does) must be the export's tenant's.
func VerifyExport(r io.Reader, key Verifier) (Report, error) {
	if key == nil {
		return Report{}, fmt.Errorf("audit: verify export: %w: no key", ErrInvalidConfig)
	}
	br := bufio.NewReaderSize(r, 64<<10)
	lineNo := 0
	next := func() ([]byte, string, error) {
		line, err := readLine(br)
		if err != nil {
			return nil, "", err
		}
		lineNo++
		var t struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(line, &t); err != nil {
			return nil, "", fmt.Errorf("audit: verify export: %w: line %d: %v", ErrBadExport, lineNo, err)
		}
		return line, t.Type, nil
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("audit: verify export: %w: line %d: "+format, append([]any{ErrBadExport, lineNo}, args...)...)
	}
	line, typ, err := next()
	if errors.Is(err, io.EOF) {
		return Report{}, fmt.Errorf("audit: verify export: %w: empty input", ErrBadExport)
	}
	if err != nil {
		return Report{}, err
	}
	var h headerLine
	if typ != "header" || strictUnmarshal(line, &h) != nil || h.Format != exportFormat || h.V != 1 {
		return Report{}, bad("not the header of a %s, version 1", exportFormat)
	}
	if h.Log != "platform" {
		if _, err := tenant.ParseID(h.Log); err != nil {
			return Report{}, bad("the header's log is not a tenant ID: %v", err)
		}
	}
	if k, ok := key.(interface{ Tenant() tenant.ID }); ok && k.Tenant().String() != h.Log && h.Log != "platform" {
		return Report{Log: h.Log}, fmt.Errorf("audit: verify export: %w: the key is tenant %s's, the export is of log %s", ErrInvalidConfig, k.Tenant(), h.Log)
	}
	var cps []Checkpoint
	var v *verifier
	for {
		line, typ, err = next()
		if errors.Is(err, io.EOF) {
			if v == nil {
				if v, err = newVerifier(h.Log, key, cps); err != nil {
					return Report{Log: h.Log}, err
				}
			}
			return v.rep, &ChainError{Log: h.Log, Seq: v.rep.HeadSeq + 1, Problem: ProblemExport, Detail: "the export ends without its trailer: it was cut short"}
		}
		if err != nil {
			return Report{Log: h.Log}, err
		}
		if typ != "checkpoint" && v == nil {
			if v, err = newVerifier(h.Log, key, cps); err != nil {
				return Report{Log: h.Log}, err
			}
		}
		switch typ {
		case "checkpoint":
			if v != nil {
				return Report{Log: h.Log}, bad("a checkpoint after the entries")
			}
			var c checkpointLine
			if err := strictUnmarshal(line, &c); err != nil {
				return Report{Log: h.Log}, bad("checkpoint: %v", err)
			}
			at, err := parseTime(c.Time)
			if err != nil {
				return Report{Log: h.Log}, bad("checkpoint: %v", err)
			}
			cps = append(cps, Checkpoint{Log: h.Log, Seq: c.Seq, Head: c.Head, Time: at, MAC: c.MAC})
		case "entry":
			e, err := parseEntryLine(h.Log, line)
			if err != nil {
				return v.rep, bad("entry: %v", err)
			}
			if err := v.entry(e); err != nil {
				return v.rep, err
			}
		case "trailer":
			var t trailerLine
			if err := strictUnmarshal(line, &t); err != nil {
				return v.rep, bad("trailer: %v", err)
			}
			at, err := parseTime(t.ExportedAt)
			if err != nil {
				return v.rep, bad("trailer: %v", err)
			}
			if key.VerifyMAC(t.MAC, trailerInput(h.Log, t.Entries, t.HeadSeq, t.HeadMAC, at)) != nil {
				return v.rep, &ChainError{Log: h.Log, Seq: v.rep.HeadSeq + 1, Problem: ProblemExport, Detail: "the trailer's MAC does not verify"}
			}
			if t.Entries != v.rep.Entries || t.HeadSeq != v.rep.HeadSeq || !bytes.Equal(t.HeadMAC, nonNil(v.rep.HeadMAC)) {
				return v.rep, &ChainError{Log: h.Log, Seq: v.rep.HeadSeq + 1, Problem: ProblemExport,
					Detail: fmt.Sprintf("the trailer records %d entries up to entry %d, the export holds %d up to entry %d: entries were removed from it", t.Entries, t.HeadSeq, v.rep.Entries, v.rep.HeadSeq)}
			}
			if _, err := readLine(br); !errors.Is(err, io.EOF) {
				lineNo++
				return v.rep, bad("input after the trailer")
			}
			return v.finish()
		default:
			return Report{Log: h.Log}, bad("unknown line type %q", typ)
		}
	}
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// readLine reads one line (without its newline), refusing one longer than
// maxLine; io.EOF at the end of the input.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) > 0 {
				return line, nil
			}
			return nil, err
		}
		line = append(line, chunk...)
		if len(line) > maxLine {
			return nil, fmt.Errorf("audit: verify export: %w: a line longer than %d bytes", ErrBadExport, maxLine)
		}
		if !isPrefix {
			return line, nil
		}
	}
}

// strictUnmarshal decodes one JSON object into v, refusing unknown fields.
func strictUnmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q is not of the form %s", truncate(s, 40), timeLayout)
	}
	return t, nil
}

func parseEntryLine(log string, line []byte) (*Entry, error) {
	var l entryLine
	if err := strictUnmarshal(line, &l); err != nil {
		return nil, err
	}
	at, err := parseTime(l.Time)
	if err != nil {
		return nil, err
	}
	e := &Entry{Log: log, Seq: l.Seq, Time: at, Actor: l.Actor, Action: l.Action, Resource: l.Resource,
		Outcome: Outcome(l.Outcome), Details: l.Details, UserAgent: l.UserAgent, PrevMAC: nonNil(l.PrevMAC), MAC: l.MAC}
	if l.SourceIP != "" {
		if e.SourceIP, err = netip.ParseAddr(l.SourceIP); err != nil {
			return nil, fmt.Errorf("source_ip: %v", err)
		}
	}
	return e, nil
}
