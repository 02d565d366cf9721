package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
)

// declaredBenchmarks returns the top-level benchmark functions of the
// module's test files, by package directory (relative, with slashes).
func declaredBenchmarks(root string) (map[string][]string, error) {
	out := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return fmt.Errorf("read the benchmarks of %s: %w", path, err)
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || !isBenchmarkName(fn.Name.Name) {
				continue
			}
			out[rel] = append(out[rel], fn.Name.Name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan the module for benchmarks: %w", err)
	}
	for k := range out {
		slices.Sort(out[k])
	}
	return out, nil
}

// isBenchmarkName reports whether go test runs a function of this name as
// a benchmark: Benchmark, then nothing or a character that is not a
// lower-case letter.
func isBenchmarkName(name string) bool {
	rest, ok := strings.CutPrefix(name, "Benchmark")
	return ok && (rest == "" || rest[0] < 'a' || rest[0] > 'z')
}

// topLevel returns the top-level benchmark of a full benchmark name.
func topLevel(name string) string {
	top, _, _ := strings.Cut(name, "/")
	return top
}

// checkDeclared fails, naming every pair concerned, if a pair names a
// top-level benchmark its package does not declare: a renamed or removed
// benchmark stops the report before anything runs.
func checkDeclared(root string, all []pair) error {
	decl, err := declaredBenchmarks(root)
	if err != nil {
		return err
	}
	var missing []string
	for _, p := range all {
		for _, n := range []string{p.Ours, p.Base} {
			if !slices.Contains(decl[p.Pkg], topLevel(n)) {
				missing = append(missing, fmt.Sprintf("%s (pair %q): ./%s declares no %s", n, p.Label, p.Pkg, topLevel(n)))
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the pairs name benchmarks that do not exist; update internal/cmd/benchreport/pairs.go:\n  %s", strings.Join(missing, "\n  "))
	}
	return nil
}

// unpairedBenchmarks returns, as "./pkg.BenchmarkName", every top-level
// benchmark of the module that no pair names.
func unpairedBenchmarks(root string, all []pair) ([]string, error) {
	decl, err := declaredBenchmarks(root)
	if err != nil {
		return nil, err
	}
	named := map[string]bool{}
	for _, p := range all {
		named[p.Pkg+"."+topLevel(p.Ours)] = true
		named[p.Pkg+"."+topLevel(p.Base)] = true
	}
	var out []string
	for pkg, names := range decl {
		for _, n := range names {
			if !named[pkg+"."+n] {
				out = append(out, "./"+pkg+"."+n)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}
