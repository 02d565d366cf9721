package main

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Columns are the columns of RTMX's database.csv, in its order.
var Columns = []string{
	"req_id", "category", "subcategory", "requirement_text", "target_value",
	"test_module", "test_function", "validation_method", "status", "priority",
	"phase", "notes", "effort_weeks", "dependencies", "blocks", "assignee",
	"sprint", "started_date", "completed_date", "requirement_file", "external_id",
}

// Statuses are RTMX's requirement statuses.
var Statuses = []string{"COMPLETE", "PARTIAL", "MISSING", "NOT_STARTED"}

// Priorities are RTMX's priorities; an empty priority is MEDIUM.
var Priorities = []string{"P0", "HIGH", "MEDIUM", "LOW"}

// reqIDPattern is the grammar of a requirement ID.
var reqIDPattern = regexp.MustCompile(`^REQ-[A-Z]+-[0-9]+$`)

// Limits of the fields, in bytes, and of the lists.
const (
	maxReqID     = 64
	maxShort     = 256
	maxMedium    = 1024
	maxLong      = 4096
	maxRefs      = 100
	maxPhase     = 9999
	maxEffort    = 1000
	dateLayout   = "2006-01-02"
	defaultPrio  = "MEDIUM"
	refSeparator = "|"
)

// presence says whether a text field is required.
type presence bool

const (
	optional presence = false
	required presence = true
)

// lines says whether a text field may hold line breaks (and tabs).
type lines bool

const (
	oneLine   lines = false
	multiLine lines = true
)

// Requirement is one row of RTMX's database.csv. Its JSON names are the
// CSV's columns; dependencies and blocks are lists of requirement IDs
// (pipe-separated in the CSV), phase and effort_weeks numbers or null, and
// the dates YYYY-MM-DD or empty.
type Requirement struct {
	ReqID            string   `json:"req_id"`
	Category         string   `json:"category"`
	Subcategory      string   `json:"subcategory"`
	RequirementText  string   `json:"requirement_text"`
	TargetValue      string   `json:"target_value"`
	TestModule       string   `json:"test_module"`
	TestFunction     string   `json:"test_function"`
	ValidationMethod string   `json:"validation_method"`
	Status           string   `json:"status"`
	Priority         string   `json:"priority"`
	Phase            *int     `json:"phase"`
	Notes            string   `json:"notes"`
	EffortWeeks      *float64 `json:"effort_weeks"`
	Dependencies     []string `json:"dependencies"`
	Blocks           []string `json:"blocks"`
	Assignee         string   `json:"assignee"`
	Sprint           string   `json:"sprint"`
	StartedDate      string   `json:"started_date"`
	CompletedDate    string   `json:"completed_date"`
	RequirementFile  string   `json:"requirement_file"`
	ExternalID       string   `json:"external_id"`
}

// FieldError is a field of a requirement that breaks a rule.
type FieldError struct {
	// Field is the column's name.
	Field string `json:"field"`
	// Rule says what the field must be.
	Rule string `json:"rule"`
}

// Error returns "field <Field>: <Rule>".
func (e *FieldError) Error() string { return "field " + e.Field + ": " + e.Rule }

// ValidationError lists every field of a requirement that breaks a rule.
type ValidationError struct {
	Fields []*FieldError
}

// Error names every field and its rule.
func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Error()
	}
	return "invalid requirement: " + strings.Join(parts, "; ")
}

// Normalize fills in the defaults RTMX gives empty fields (priority
// MEDIUM) and makes empty lists non-nil, so that a stored requirement and
// one read back compare equal.
func (r *Requirement) Normalize() {
	if r.Priority == "" {
		r.Priority = defaultPrio
	}
	if r.Dependencies == nil {
		r.Dependencies = []string{}
	}
	if r.Blocks == nil {
		r.Blocks = []string{}
	}
}

// Validate checks every field of r against RTMX's rules and returns a
// *ValidationError naming each field that breaks one, or nil. Call
// Normalize first.
func (r *Requirement) Validate() error {
	var errs []*FieldError
	bad := func(field, rule string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Rule: fmt.Sprintf(rule, args...)})
	}
	text := func(field, v string, max int, need presence, multiline lines) {
		switch {
		case v == "" && need == required:
			bad(field, "is required")
		case len(v) > max:
			bad(field, "must be at most %d bytes", max)
		case !utf8.ValidString(v):
			bad(field, "must be valid UTF-8")
		case hasControl(v, multiline):
			if multiline == multiLine {
				bad(field, "must not hold control characters other than tab and line breaks")
			} else {
				bad(field, "must not hold control characters or line breaks")
			}
		case v != strings.TrimSpace(v):
			bad(field, "must not begin or end with white space")
		}
	}
	switch {
	case r.ReqID == "":
		bad("req_id", "is required")
	case len(r.ReqID) > maxReqID || !reqIDPattern.MatchString(r.ReqID):
		bad("req_id", "must match REQ-[A-Z]+-[0-9]+ (at most %d bytes)", maxReqID)
	}
	text("category", r.Category, maxShort, required, oneLine)
	text("subcategory", r.Subcategory, maxShort, optional, oneLine)
	text("requirement_text", r.RequirementText, maxLong, required, multiLine)
	text("target_value", r.TargetValue, maxMedium, optional, oneLine)
	text("test_module", r.TestModule, maxMedium, optional, oneLine)
	text("test_function", r.TestFunction, maxShort, optional, oneLine)
	text("validation_method", r.ValidationMethod, maxShort, optional, oneLine)
	switch {
	case r.Status == "":
		bad("status", "is required: one of %s", strings.Join(Statuses, ", "))
	case !slices.Contains(Statuses, r.Status):
		bad("status", "must be one of %s", strings.Join(Statuses, ", "))
	}
	if !slices.Contains(Priorities, r.Priority) {
		bad("priority", "must be one of %s (empty: %s)", strings.Join(Priorities, ", "), defaultPrio)
	}
	if r.Phase != nil && (*r.Phase < 0 || *r.Phase > maxPhase) {
		bad("phase", "must be an integer from 0 to %d", maxPhase)
	}
	text("notes", r.Notes, maxLong, optional, multiLine)
	if e := r.EffortWeeks; e != nil && (math.IsNaN(*e) || *e < 0 || *e > maxEffort) {
		bad("effort_weeks", "must be a number of weeks from 0 to %d", maxEffort)
	}
	refs := func(field string, ids []string) {
		if len(ids) > maxRefs {
			bad(field, "must name at most %d requirements", maxRefs)
			return
		}
		for i, id := range ids {
			switch {
			case !reqIDPattern.MatchString(id) || len(id) > maxReqID:
				bad(field, "entry %d must be a requirement ID matching REQ-[A-Z]+-[0-9]+", i+1)
				return
			case id == r.ReqID:
				bad(field, "must not name the requirement itself")
				return
			case slices.Contains(ids[:i], id):
				bad(field, "must not name %s twice", id)
				return
			}
		}
	}
	refs("dependencies", r.Dependencies)
	refs("blocks", r.Blocks)
	text("assignee", r.Assignee, maxShort, optional, oneLine)
	text("sprint", r.Sprint, maxShort, optional, oneLine)
	started, okStart := date(r.StartedDate)
	if !okStart {
		bad("started_date", "must be a date YYYY-MM-DD or empty")
	}
	completed, okDone := date(r.CompletedDate)
	if !okDone {
		bad("completed_date", "must be a date YYYY-MM-DD or empty")
	}
	if okStart && okDone && !started.IsZero() && !completed.IsZero() && completed.Before(started) {
		bad("completed_date", "must not be before started_date")
	}
	text("requirement_file", r.RequirementFile, maxMedium, optional, oneLine)
	text("external_id", r.ExternalID, maxShort, optional, oneLine)
	if errs != nil {
		return &ValidationError{Fields: errs}
	}
	return nil
}

// date parses a YYYY-MM-DD date; "" is the zero time.
func date(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, true
	}
	t, err := time.Parse(dateLayout, s)
	return t, err == nil && t.Year() >= 1900
}

// hasControl reports whether s holds a control character (C0, DEL, C1),
// tab and line breaks aside if l is multiLine.
func hasControl(s string, l lines) bool {
	for _, c := range s {
		if l == multiLine && (c == '\t' || c == '\n' || c == '\r') {
			continue
		}
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f) {
			return true
		}
	}
	return false
}

// ImportError is a row of an imported CSV that cannot be taken: it names
// the row (1 for the first row after the header), the line of the file
// it starts on, the column and the rule.
type ImportError struct {
	Row    int    `json:"row"`
	Line   int    `json:"line"`
	Column string `json:"column,omitempty"`
	Rule   string `json:"rule"`
}

// Error returns "import: row <Row> (line <Line>), column <Column>: <Rule>".
func (e *ImportError) Error() string {
	where := fmt.Sprintf("row %d (line %d)", e.Row, e.Line)
	if e.Row == 0 {
		where = fmt.Sprintf("header (line %d)", e.Line)
	}
	if e.Column != "" {
		where += ", column " + e.Column
	}
	return "import: " + where + ": " + e.Rule
}

// Limits of an import.
const (
	maxImportRows  = 10000
	maxImportBytes = 8 << 20
)

// ParseCSV reads an RTMX database.csv: a header naming columns of
// [Columns] (req_id, category, requirement_text and status required, any
// order, each once), then one requirement per row, each validated. It
// returns every requirement, or the first row that breaks a rule as an
// *ImportError naming its row and column (and no requirement). A UTF-8 byte
// order mark before the header is allowed.
func ParseCSV(r io.Reader) ([]Requirement, error) {
	br := &bomReader{r: r}
	cr := csv.NewReader(br)
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, &ImportError{Line: 1, Rule: "the file is empty: it needs a header of RTMX columns"}
	}
	if err != nil {
		return nil, csvError(err, 0)
	}
	index := map[string]int{}
	for i, name := range header {
		switch {
		case !slices.Contains(Columns, name):
			return nil, &ImportError{Line: 1, Column: printable(name), Rule: "is not a column of RTMX's database.csv (" + strings.Join(Columns, ",") + ")"}
		case index[name] > 0:
			return nil, &ImportError{Line: 1, Column: name, Rule: "appears twice in the header"}
		}
		index[name] = i + 1 // 0 means absent
	}
	for _, need := range []string{"req_id", "category", "requirement_text", "status"} {
		if index[need] == 0 {
			return nil, &ImportError{Line: 1, Column: need, Rule: "is required in the header"}
		}
	}
	var out []Requirement
	seen := map[string]int{}
	for row := 1; ; row++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvError(err, row)
		}
		line, _ := cr.FieldPos(0)
		if row > maxImportRows {
			return nil, &ImportError{Row: row, Line: line, Rule: fmt.Sprintf("an import holds at most %d rows", maxImportRows)}
		}
		get := func(col string) string {
			if i := index[col]; i > 0 {
				return unquoteCell(rec[i-1])
			}
			return ""
		}
		req, cerr := fromColumns(get)
		if cerr == nil {
			req.Normalize()
			if err := req.Validate(); err != nil {
				cerr = err.(*ValidationError).Fields[0]
			}
		}
		if cerr != nil {
			return nil, &ImportError{Row: row, Line: line, Column: cerr.Field, Rule: cerr.Rule}
		}
		if first, dup := seen[req.ReqID]; dup {
			return nil, &ImportError{Row: row, Line: line, Column: "req_id", Rule: fmt.Sprintf("%s is also row %d", req.ReqID, first)}
		}
		seen[req.ReqID] = row
		out = append(out, req)
	}
	if len(out) == 0 {
		return nil, &ImportError{Row: 1, Line: 2, Rule: "the file has a header but no rows"}
	}
	return out, nil
}

// fromColumns builds a requirement from its CSV columns.
func fromColumns(get func(string) string) (Requirement, *FieldError) {
	r := Requirement{
		ReqID: get("req_id"), Category: get("category"), Subcategory: get("subcategory"),
		RequirementText: get("requirement_text"), TargetValue: get("target_value"),
		TestModule: get("test_module"), TestFunction: get("test_function"),
		ValidationMethod: get("validation_method"), Status: get("status"), Priority: get("priority"),
		Notes: get("notes"), Assignee: get("assignee"), Sprint: get("sprint"),
		StartedDate: get("started_date"), CompletedDate: get("completed_date"),
		RequirementFile: get("requirement_file"), ExternalID: get("external_id"),
		Dependencies: splitRefs(get("dependencies")), Blocks: splitRefs(get("blocks")),
	}
	if s := get("phase"); s != "" {
		p, err := strconv.Atoi(s)
		if err != nil {
			return r, &FieldError{Field: "phase", Rule: fmt.Sprintf("must be an integer from 0 to %d or empty", maxPhase)}
		}
		r.Phase = &p
	}
	if s := get("effort_weeks"); s != "" {
		e, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsInf(e, 0) {
			return r, &FieldError{Field: "effort_weeks", Rule: fmt.Sprintf("must be a number of weeks from 0 to %d or empty", maxEffort)}
		}
		r.EffortWeeks = &e
	}
	return r, nil
}

// splitRefs splits a list of requirement IDs separated by "|" (RTMX's
// form) or white space (its older form).
func splitRefs(s string) []string {
	return strings.FieldsFunc(s, func(c rune) bool { return c == '|' || c == ' ' || c == '\t' })
}

// csvError turns an error of encoding/csv into an *ImportError.
func csvError(err error, row int) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &ImportError{Row: row, Line: pe.Line, Rule: "not valid CSV: " + pe.Err.Error()}
	}
	if errors.Is(err, errTooLarge) {
		return &ImportError{Row: row, Rule: err.Error()}
	}
	return fmt.Errorf("import: read: %w", err)
}

// printable quotes s for an error message if it is not plain.
func printable(s string) string {
	q := strconv.QuoteToASCII(s)
	if q[1:len(q)-1] == s && s != "" {
		return s
	}
	if len(q) > 66 {
		q = q[:63] + `..."`
	}
	return q
}

// formulaStarts are the first characters that make a spreadsheet read a
// cell as a formula (OWASP's CSV injection list).
const formulaStarts = "=+-@\t\r"

// quoteCell returns v with a single quote before it if a spreadsheet would
// read v as a formula: v begins with one of [formulaStarts], after any
// number of single quotes (so that a value that itself begins with quotes
// before such a character reads back unchanged). [unquoteCell] undoes it.
func quoteCell(v string) string {
	if rest := strings.TrimLeft(v, "'"); rest != "" && strings.ContainsRune(formulaStarts, rune(rest[0])) {
		return "'" + v
	}
	return v
}

// unquoteCell drops the single quote [quoteCell] puts before a cell: one
// quote, if the cell is one or more quotes then one of [formulaStarts].
func unquoteCell(c string) string {
	rest := strings.TrimLeft(c, "'")
	if len(rest) < len(c) && rest != "" && strings.ContainsRune(formulaStarts, rune(rest[0])) {
		return c[1:]
	}
	return c
}

// WriteCSV writes reqs as an RTMX database.csv with every column. A cell a
// spreadsheet would run as a formula is written with a single quote before
// it (see [quoteCell]); [ParseCSV] drops that quote again.
func WriteCSV(w io.Writer, reqs []Requirement) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(Columns); err != nil {
		return err
	}
	for _, r := range reqs {
		phase, effort := "", ""
		if r.Phase != nil {
			phase = strconv.Itoa(*r.Phase)
		}
		if r.EffortWeeks != nil {
			effort = strconv.FormatFloat(*r.EffortWeeks, 'f', -1, 64)
			if !strings.Contains(effort, ".") {
				effort += ".0"
			}
		}
		cells := []string{
			r.ReqID, r.Category, r.Subcategory, r.RequirementText, r.TargetValue,
			r.TestModule, r.TestFunction, r.ValidationMethod, r.Status, r.Priority,
			phase, r.Notes, effort, strings.Join(r.Dependencies, refSeparator), strings.Join(r.Blocks, refSeparator),
			r.Assignee, r.Sprint, r.StartedDate, r.CompletedDate, r.RequirementFile, r.ExternalID,
		}
		for i, c := range cells {
			cells[i] = quoteCell(c)
		}
		if err := cw.Write(cells); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// errTooLarge is the error of a body over its limit.
var errTooLarge = errors.New("the file is larger than the import limit")

// bomReader drops a UTF-8 byte order mark at the start of r.
type bomReader struct {
	r       io.Reader
	checked bool
	buf     []byte
}

func (b *bomReader) Read(p []byte) (int, error) {
	if !b.checked {
		b.checked = true
		head := make([]byte, 3)
		n, err := io.ReadFull(b.r, head)
		head = head[:n]
		if !bytes.Equal(head, []byte("\xef\xbb\xbf")) {
			b.buf = head
		}
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return 0, err
		}
	}
	if len(b.buf) > 0 {
		n := copy(p, b.buf)
		b.buf = b.buf[n:]
		return n, nil
	}
	return b.r.Read(p)
}
