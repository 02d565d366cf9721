package store

// A lexer of PostgreSQL's SQL, enough to find the top-level statements of
// a migration file and the words each begins with, so that a file that
// would end (or otherwise control) the transaction store runs it in is
// refused when it is loaded, before it runs anywhere.
//
// It follows PostgreSQL's lexical rules (src/backend/parser/scan.l):
// statements end at ; outside of
//
//   - single-quoted strings, with '' inside; E'...' strings, where a
//     backslash escapes the next character (standard_conforming_strings
//     is on: store sets it for the file's run, see Admin.Migrate; without
//     it every '...' string would take backslash escapes);
//   - double-quoted identifiers, with "" inside;
//   - dollar-quoted strings, $$...$$ and $tag$...$tag$, where the tag is
//     an identifier without $ (and does not start with a digit: $1 is a
//     parameter);
//   - -- comments, to the end of the line, and /* */ comments, which nest;
//   - the body of a function or procedure written BEGIN ATOMIC ... END,
//     whose statements end with ; too (the grammar's routine_body).
//
// An identifier starts with a letter, _ or any byte above 127, and goes on
// with those, digits and $, so "x$$" is an identifier and not the start of
// a dollar quote. A number is split from what follows it as PostgreSQL 14
// split it (1e'...' is the number 1 and an E'...' string; PostgreSQL 15 and
// later refuse such trailing junk).
//
// Only the statements that PostgreSQL runs one after another matter: the
// statements of a DO block or of a procedure cannot end the transaction
// when run inside a transaction block (PostgreSQL refuses COMMIT there:
// "invalid transaction termination"), and those of a BEGIN ATOMIC body
// run when the function is called, in a transaction of its caller's. The
// server parses the whole of a file sent in the simple protocol before it
// runs any of it, so a file it cannot parse runs nothing.

import (
	"fmt"
	"strings"
)

// sqlStatement is a top-level statement of SQL text: src[start:end], its
// terminating ; included (if any).
type sqlStatement struct {
	start, end int
	// at is the offset of its first token (after whitespace and comments),
	// -1 if it has none (an empty statement); line is that token's line,
	// from 1.
	at, line int
	// words are its first two tokens, in lower case, each if it is a bare
	// word (an identifier or keyword: not quoted); "" otherwise.
	words [2]string
}

// sqlSyntaxError is an unterminated string, quoted identifier or comment.
type sqlSyntaxError struct {
	what string
	at   int // where it starts
	line int
}

func (e *sqlSyntaxError) Error() string {
	return fmt.Sprintf("line %d: unterminated %s", e.line, e.what)
}

// token kinds.
const (
	tokSpace     = iota // whitespace and comments
	tokWord             // an identifier or a keyword, not quoted
	tokQuoted           // a quoted identifier
	tokString           // a quoted string, of any kind
	tokNumber           // digits
	tokParam            // $1
	tokSemicolon        // ;
	tokOther            // any other character (punctuation, an operator's)
)

// sqlLexer splits SQL text into tokens.
type sqlLexer struct {
	src string
	pos int
}

func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '\f', '\v':
		return true
	}
	return false
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isIdentCont(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }

// next returns the kind of the token at l.pos and moves past it; ok is
// false at the end of the text.
func (l *sqlLexer) next() (kind int, ok bool, err error) {
	src, i := l.src, l.pos
	if i >= len(src) {
		return 0, false, nil
	}
	n := len(src)
	peek := func(j int) byte {
		if j < n {
			return src[j]
		}
		return 0
	}
	fail := func(what string) (int, bool, error) {
		return 0, false, &sqlSyntaxError{what: what, at: i, line: 1 + strings.Count(src[:i], "\n")}
	}
	c := src[i]
	j := i + 1
	switch {
	case isSpace(c):
		for j < n && isSpace(src[j]) {
			j++
		}
		kind = tokSpace
	case c == '-' && peek(i+1) == '-':
		for j < n && src[j] != '\n' && src[j] != '\r' {
			j++
		}
		kind = tokSpace
	case c == '/' && peek(i+1) == '*':
		depth := 1
		for j = i + 2; depth > 0; {
			switch {
			case j+1 >= n:
				return fail("/* comment")
			case src[j] == '/' && src[j+1] == '*':
				depth++
				j += 2
			case src[j] == '*' && src[j+1] == '/':
				depth--
				j += 2
			default:
				j++
			}
		}
		kind = tokSpace
	case c == '\'':
		if j, ok = quoted(src, i+1, '\'', false); !ok {
			return fail("quoted string")
		}
		kind = tokString
	case (c == 'e' || c == 'E') && peek(i+1) == '\'':
		if j, ok = quoted(src, i+2, '\'', true); !ok {
			return fail("quoted string")
		}
		kind = tokString
	case c == '"':
		if j, ok = quoted(src, i+1, '"', false); !ok {
			return fail("quoted identifier")
		}
		kind = tokQuoted
	case c == '$' && isDigit(peek(i+1)):
		for j < n && isDigit(src[j]) {
			j++
		}
		kind = tokParam
	case c == '$':
		// $$ or $tag$ opens a dollar quote; a $ followed by anything else
		// is a character of its own (and a syntax error).
		for j < n && isIdentCont(src[j]) && src[j] != '$' && (j > i+1 || !isDigit(src[j])) {
			j++
		}
		kind = tokOther
		if j < n && src[j] == '$' {
			delim := src[i : j+1]
			k := strings.Index(src[j+1:], delim)
			if k < 0 {
				return fail("dollar-quoted string " + delim)
			}
			j += 1 + k + len(delim)
			kind = tokString
		} else {
			j = i + 1
		}
	case isIdentStart(c):
		for j < n && isIdentCont(src[j]) {
			j++
		}
		kind = tokWord
	case isDigit(c):
		for j < n && isDigit(src[j]) {
			j++
		}
		kind = tokNumber
	case c == ';':
		kind = tokSemicolon
	default:
		kind = tokOther
	}
	l.pos = j
	return kind, true, nil
}

// quoted returns the offset just past the closing quote of a string or
// identifier whose content starts at i, and false if there is none. A
// doubled quote stands for itself; with backslash, so does a quote after
// a backslash (which escapes any character).
func quoted(src string, i int, quote byte, backslash bool) (int, bool) {
	for i < len(src) {
		switch c := src[i]; {
		case backslash && c == '\\':
			i += 2
		case c != quote:
			i++
		case i+1 < len(src) && src[i+1] == quote:
			i += 2
		default:
			return i + 1, true
		}
	}
	return 0, false
}

// lowerASCII lowers the ASCII letters of s, as PostgreSQL folds keywords.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// splitStatements splits SQL text into its top-level statements, which
// together are the whole of src, in order. It fails on an unterminated
// string, quoted identifier or /* comment.
func splitStatements(src string) ([]sqlStatement, error) {
	// A frame is a list of statements: the file's, or a BEGIN ATOMIC
	// body's (inside a CREATE FUNCTION or PROCEDURE, which may nest).
	type frame struct {
		ntok    int    // significant tokens of the current statement so far
		head    string // its first words, lower-cased, space-separated (4 at most)
		routine bool   // it is CREATE [OR REPLACE] FUNCTION or PROCEDURE
		depth   int    // parentheses open in it
		begin   bool   // its last token was BEGIN, outside parentheses
	}
	var out []sqlStatement
	stack := []frame{{}}
	cur := sqlStatement{at: -1}
	l := &sqlLexer{src: src}
	line, counted := 1, 0 // the line of offset counted
	for {
		start := l.pos
		kind, ok, err := l.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if kind == tokSpace {
			continue
		}
		f := &stack[len(stack)-1]
		var word string
		if kind == tokWord {
			word = lowerASCII(src[start:l.pos])
		}
		if len(stack) == 1 {
			if f.ntok == 0 && kind != tokSemicolon {
				line += strings.Count(src[counted:start], "\n")
				counted = start
				cur.at, cur.line = start, line
			}
			if f.ntok < 2 {
				cur.words[f.ntok] = word
			}
		}
		if kind == tokSemicolon {
			if len(stack) == 1 {
				cur.end = l.pos
				out = append(out, cur)
				cur = sqlStatement{start: l.pos, at: -1}
			}
			*f = frame{}
			continue
		}
		if f.ntok == 0 && len(stack) > 1 && word == "end" {
			// The END of a BEGIN ATOMIC body: where a statement of it
			// would start (the legacy END statement is top-level only).
			stack = stack[:len(stack)-1]
			stack[len(stack)-1].begin = false
			stack[len(stack)-1].ntok++
			continue
		}
		if f.ntok < 4 {
			w := word
			if w == "" {
				w = "?" // not a bare word: no head below matches
			}
			if f.ntok > 0 {
				f.head += " "
			}
			f.head += w
			switch f.head {
			case "create function", "create procedure", "create or replace function", "create or replace procedure":
				f.routine = true
			}
		}
		f.ntok++
		switch {
		case kind == tokOther && src[start] == '(':
			f.depth++
		case kind == tokOther && src[start] == ')':
			f.depth = max(f.depth-1, 0)
		}
		if f.routine && f.depth == 0 && f.begin && word == "atomic" {
			f.begin = false
			stack = append(stack, frame{})
			continue
		}
		f.begin = f.routine && f.depth == 0 && word == "begin"
	}
	if cur.start < len(src) {
		cur.end = len(src)
		out = append(out, cur)
	}
	return out, nil
}

// txControl returns the statement (its first words, upper-cased) if s
// ends or controls the transaction it runs in, and "" otherwise.
func (s sqlStatement) txControl() string {
	switch w := s.words; w[0] {
	case "begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release":
		return strings.ToUpper(w[0])
	case "prepare":
		if w[1] == "transaction" {
			return "PREPARE TRANSACTION"
		}
	}
	return ""
}
