package rtmxtrace_test

import (
	"encoding/csv"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// root is the repository, two directories up.
const root = "../.."

var (
	reqID  = regexp.MustCompile(`^REQ-[A-Z]+-[0-9]+$`)
	marker = regexp.MustCompile(`^//\s*rtmx:req\s+(.+)$`)
)

// header is RTMX's column order.
var header = strings.Split("req_id,category,subcategory,requirement_text,target_value,test_module,test_function,validation_method,status,priority,phase,notes,effort_weeks,dependencies,blocks,assignee,sprint,started_date,completed_date,requirement_file,external_id", ",")

type row struct {
	id, module, function, status, deps string
}

func readDatabase(t *testing.T) []row {
	t.Helper()
	f, err := os.Open(filepath.Join(root, ".rtmx", "database.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf(".rtmx/database.csv: %v", err)
	}
	if len(recs) < 2 || !slices.Equal(recs[0], header) {
		t.Fatalf(".rtmx/database.csv: the header must be RTMX's %q", header)
	}
	var out []row
	for i, r := range recs[1:] {
		if !reqID.MatchString(r[0]) {
			t.Errorf("line %d: req_id %q does not match %s", i+2, r[0], reqID)
		}
		out = append(out, row{id: r[0], module: r[5], function: r[6], status: r[8], deps: r[13]})
	}
	return out
}

// markers returns, for every test function of the repository's _test.go
// files, the requirement IDs of its rtmx:req markers, keyed by
// "path/file_test.go:TestName".
func markers(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv != nil {
				continue
			}
			key := rel + ":" + fn.Name.Name
			out[key] = append(out[key], []string{}...)
			if fn.Doc == nil {
				continue
			}
			for _, c := range fn.Doc.List {
				if m := marker.FindStringSubmatch(c.Text); m != nil {
					out[key] = append(out[key], strings.Fields(m[1])...)
				}
			}
		}
		// A marker anywhere else (not on a function's doc) is an error too.
		for _, cg := range f.Comments {
			for _, c := range cg.List {
				if marker.MatchString(c.Text) && !onFunc(f, c) {
					t.Errorf("%s: marker %q is not on a test function's doc comment", rel, c.Text)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func onFunc(f *ast.File, c *ast.Comment) bool {
	for _, decl := range f.Decls {
		if fn, ok := decl.(*ast.FuncDecl); ok && fn.Doc != nil && slices.Contains(fn.Doc.List, c) {
			return true
		}
	}
	return false
}

// TestDatabaseNamesRealTests: every row of .rtmx/database.csv but the
// umbrella requirement names a test function that exists in its test
// module and carries the row's marker; every marker names a row; the
// umbrella is COMPLETE only if every row depending on it is.
func TestDatabaseNamesRealTests(t *testing.T) {
	rows := readDatabase(t)
	funcs := markers(t)
	ids := map[string]row{}
	for _, r := range rows {
		if _, dup := ids[r.id]; dup {
			t.Errorf("req_id %s is given twice", r.id)
		}
		ids[r.id] = r
	}
	for _, r := range rows {
		if r.module == "" && r.function == "" {
			continue // an umbrella requirement, complete through its children
		}
		key := r.module + ":" + r.function
		got, ok := funcs[key]
		if !ok {
			t.Errorf("%s names test %s in %s, which does not exist", r.id, r.function, r.module)
			continue
		}
		if !strings.HasPrefix(r.function, "Test") {
			t.Errorf("%s names %s, which is not a test function", r.id, r.function)
		}
		if !slices.Contains(got, r.id) {
			t.Errorf("%s: test %s in %s lacks the marker // rtmx:req %s", r.id, r.function, r.module, r.id)
		}
	}
	for key, got := range funcs {
		for _, id := range got {
			if _, ok := ids[id]; !ok {
				t.Errorf("%s: marker names %s, which .rtmx/database.csv does not have", key, id)
			}
		}
	}
	for _, parent := range rows {
		if parent.status != "COMPLETE" {
			continue
		}
		for _, r := range rows {
			if slices.Contains(strings.Fields(strings.ReplaceAll(r.deps, ",", " ")), parent.id) && r.status != "COMPLETE" {
				t.Errorf("%s is COMPLETE but %s, which it needs, is %s", parent.id, r.id, r.status)
			}
		}
	}
	if len(rows) < 19 {
		t.Errorf("%d rows: REQ-DEPLOY-004 and one per acceptance criterion (7), verification test (4) and test case (7) are expected", len(rows))
	}
}
