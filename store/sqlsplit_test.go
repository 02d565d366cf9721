package store

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
)

// On PostgreSQL, what a migration file does to the transaction it runs in.
const (
	pgSkip  = iota // not run there: a syntax error, or objects it lacks
	pgKeeps        // runs, and the transaction goes on
	pgEnds         // runs, and ends the transaction (commits or rolls back)
)

// txControlCases are migration files: refused names the statement
// checkTxControl refuses (its first words, as txControl says them) and
// line its line; "" if the file is accepted. pg says what PostgreSQL does
// with the file inside a transaction (TestMigrationLexerAgreesWithPostgreSQL).
var txControlCases = []struct {
	name, sql string
	refused   string
	line      int
	pg        int
}{
	// Every statement that controls the transaction, in every case.
	{"commit", "COMMIT;", "COMMIT", 1, pgEnds},
	{"commit lower", "commit", "COMMIT", 1, pgEnds},
	{"commit mixed", "CoMmIt WoRk;", "COMMIT", 1, pgEnds},
	{"commit and chain", "COMMIT AND CHAIN;", "COMMIT", 1, pgEnds},
	{"commit and no chain", "commit transaction and no chain;", "COMMIT", 1, pgEnds},
	{"commit prepared", "COMMIT PREPARED 'gid';", "COMMIT", 1, pgSkip},
	{"rollback", "ROLLBACK;", "ROLLBACK", 1, pgEnds},
	{"rollback lower", "rollback work;", "ROLLBACK", 1, pgEnds},
	{"rollback and chain", "ROLLBACK AND CHAIN;", "ROLLBACK", 1, pgEnds},
	{"rollback to", "SAVEPOINT s; ROLLBACK TO s;", "SAVEPOINT", 1, pgKeeps},
	{"rollback to savepoint", "select 1; rollback to savepoint s;", "ROLLBACK", 1, pgSkip},
	{"rollback prepared", "rollback prepared 'gid';", "ROLLBACK", 1, pgSkip},
	{"end", "END;", "END", 1, pgEnds},
	{"end lower", "end transaction;", "END", 1, pgEnds},
	{"end and chain", "End Work And Chain;", "END", 1, pgEnds},
	{"abort", "ABORT;", "ABORT", 1, pgEnds},
	{"abort lower", "abort and chain;", "ABORT", 1, pgEnds},
	{"begin", "BEGIN;", "BEGIN", 1, pgKeeps},
	{"begin lower", "begin isolation level serializable;", "BEGIN", 1, pgSkip},
	{"begin work", "SELECT 1;\nBegin Work;", "BEGIN", 2, pgKeeps},
	{"start transaction", "START TRANSACTION;", "START", 1, pgKeeps},
	{"start transaction lower", "start transaction read only;", "START", 1, pgKeeps},
	{"savepoint", "SAVEPOINT s;", "SAVEPOINT", 1, pgKeeps},
	{"release", "SAVEPOINT s; RELEASE s;", "SAVEPOINT", 1, pgKeeps},
	{"release savepoint", "release savepoint s;", "RELEASE", 1, pgSkip},
	{"prepare transaction", "PREPARE TRANSACTION 'gid';", "PREPARE TRANSACTION", 1, pgSkip},
	{"prepare transaction lower", "select 1;\n\nprepare transaction 'gid';", "PREPARE TRANSACTION", 3, pgSkip},

	// Found after what hides nothing.
	{"after statements", "CREATE TEMP TABLE t (tenant_id text NOT NULL);\nINSERT INTO t VALUES ('a');\nCOMMIT;", "COMMIT", 3, pgEnds},
	{"no space", "SELECT 1;COMMIT", "COMMIT", 1, pgEnds},
	{"after a line comment", "-- the end\nCOMMIT;", "COMMIT", 2, pgEnds},
	{"after a line comment, CRLF", "SELECT 1; -- x\r\n\r\n  commit;", "COMMIT", 3, pgEnds},
	{"after a block comment", "/* one */ /* two\n */ COMMIT;", "COMMIT", 2, pgEnds},
	{"after a nested comment", "/* a /* nested */ comment */ COMMIT;", "COMMIT", 1, pgEnds},
	{"after a comment in a statement", "SELECT 1 /* ; */; COMMIT", "COMMIT", 1, pgEnds},
	{"after a string with ;", "SELECT ';' AS s;\nCOMMIT;", "COMMIT", 2, pgEnds},
	{"after a string with '' and ;", "SELECT 'it''s; ok' AS s; COMMIT;", "COMMIT", 1, pgEnds},
	{"after a backslash in a string", `SELECT '\'; COMMIT; --';`, "COMMIT", 1, pgEnds},
	{"after an E string", `SELECT E'\';' AS s; COMMIT;`, "COMMIT", 1, pgEnds},
	{"after an E string ending in a backslash", `SELECT e'\\' AS s; COMMIT;`, "COMMIT", 1, pgEnds},
	{"after an E string with ''", `SELECT E'a''b\';' AS s; COMMIT;`, "COMMIT", 1, pgEnds},
	{"after a U& string", `SELECT U&'\0041;' AS s; COMMIT;`, "COMMIT", 1, pgEnds},
	{"after a bit string", "SELECT X'1F', B'101'; COMMIT;", "COMMIT", 1, pgEnds},
	{"after a continued string", "SELECT 'a'\n';' AS s; COMMIT;", "COMMIT", 2, pgEnds},
	{"after a quoted identifier with ;", `SELECT 1 AS "a;b""c"; COMMIT;`, "COMMIT", 1, pgEnds},
	{"after a dollar-quoted DO", "DO $$ BEGIN PERFORM 1; END $$;\nCOMMIT;", "COMMIT", 2, pgEnds},
	{"after a tagged dollar quote", "DO $x$ BEGIN PERFORM '$$'; END $x$; COMMIT;", "COMMIT", 1, pgEnds},
	{"after an identifier ending in $$", "SELECT 1 AS x$$; COMMIT; SELECT 1 AS y$$;", "COMMIT", 1, pgEnds},
	{"after a parameter", "PREPARE p AS SELECT $1::int; COMMIT;", "COMMIT", 1, pgEnds},
	{"after a parameter, not a tag", "SELECT $1a$; COMMIT; $1a$", "COMMIT", 1, pgSkip},
	{"after a number and an E string", `SELECT 1e'\''; COMMIT; --'`, "COMMIT", 1, pgSkip},
	{"after an operator and a comment", "SELECT 1 +-- ;\n 2; COMMIT;", "COMMIT", 2, pgEnds},
	{"after a function body", "CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE plpgsql AS $fn$ BEGIN COMMIT; END $fn$; END;", "END", 1, pgEnds},
	{"after a BEGIN ATOMIC body", "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n  SELECT 2;\nEND;\nCOMMIT;", "COMMIT", 6, pgEnds},
	{"after a BEGIN ATOMIC body with CASE", "CREATE FUNCTION pg_temp.f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END; END; COMMIT;", "COMMIT", 1, pgEnds},
	{"after a BEGIN ATOMIC body with an alias case", "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 AS case; END; COMMIT;", "COMMIT", 1, pgEnds},
	{"after a BEGIN ATOMIC procedure", "CREATE OR REPLACE PROCEDURE pg_temp.p() LANGUAGE sql BEGIN ATOMIC SELECT 1; END; END;", "END", 1, pgEnds},
	{"after a parameter named begin", `CREATE FUNCTION pg_temp.f("begin" int) RETURNS int LANGUAGE sql RETURN begin; COMMIT; END;`, "COMMIT", 1, pgEnds},
	{"after a commented-out BEGIN ATOMIC", "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql /* BEGIN ATOMIC */ RETURN 1; COMMIT;", "COMMIT", 1, pgEnds},
	{"after nested BEGIN ATOMIC bodies", "CREATE PROCEDURE pg_temp.p() LANGUAGE sql BEGIN ATOMIC CREATE FUNCTION pg_temp.g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; END; COMMIT;", "COMMIT", 1, pgSkip},
	{"after the close of a nested comment", "/* /* */ */ COMMIT;", "COMMIT", 1, pgEnds},

	// Accepted: nothing controls the transaction at the top level.
	{"plain", "CREATE TEMP TABLE t (tenant_id text NOT NULL, id int);\nINSERT INTO t VALUES ('a', 1);", "", 0, pgKeeps},
	{"empty", "", "", 0, pgKeeps},
	{"only comments", "-- nothing\n/* at /* all */ */", "", 0, pgKeeps},
	{"in a line comment", "SELECT 1; -- COMMIT;\n", "", 0, pgKeeps},
	{"in a block comment", "/* COMMIT; */ SELECT 1;", "", 0, pgKeeps},
	{"in a nested comment", "/* /* */ COMMIT; */ SELECT 1;", "", 0, pgKeeps},
	{"in a string", "SELECT 'x; COMMIT; y' AS s;", "", 0, pgKeeps},
	{"in a string with ''", "SELECT 'x''; COMMIT; ''y' AS s;", "", 0, pgKeeps},
	{"in an E string", `SELECT E'\'; COMMIT; --' AS s;`, "", 0, pgKeeps},
	{"in an E string with \\\\ and ''", `SELECT E'\\''; COMMIT; --' AS s;`, "", 0, pgKeeps},
	{"in a quoted identifier", `SELECT 1 AS "; COMMIT; ";`, "", 0, pgKeeps},
	{"quoted identifiers named commit", `CREATE TEMP TABLE "commit" (tenant_id text NOT NULL, "end" int, "COMMIT" int); SELECT "commit".* FROM "commit";`, "", 0, pgKeeps},
	{"quoted commit as a statement", `"COMMIT";`, "", 0, pgSkip},
	{"columns named commit and commit_ts", "CREATE TEMP TABLE t (tenant_id text NOT NULL, commit_ts timestamptz, commit int, rollback int);", "", 0, pgKeeps},
	{"words starting with commit", "commit_ts; rollbacks; ends; begins", "", 0, pgSkip},
	{"in a dollar-quoted function body", "CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n  COMMIT;\nEND\n$$;", "", 0, pgKeeps},
	{"in a tagged dollar quote", "CREATE FUNCTION pg_temp.f() RETURNS void LANGUAGE plpgsql AS $body$ BEGIN PERFORM '$$'; COMMIT; END $body$;", "", 0, pgKeeps},
	{"in a dollar quote, other tags", "SELECT $a$ $A$; COMMIT; $b$ $a$ AS s;", "", 0, pgKeeps},
	{"in a DO block", "DO $$ BEGIN COMMIT; END $$;", "", 0, pgSkip},
	{"a parameter", "PREPARE p(int) AS SELECT $1 + 1;", "", 0, pgKeeps},
	{"in a BEGIN ATOMIC body", "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;", "", 0, pgKeeps},
	{"an empty BEGIN ATOMIC body", "CREATE PROCEDURE pg_temp.p() LANGUAGE sql BEGIN ATOMIC END;", "", 0, pgKeeps},
	{"a BEGIN ATOMIC body with CASE", "CREATE FUNCTION pg_temp.f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END; END;", "", 0, pgKeeps},
	{"a BEGIN ATOMIC body with comments", "CREATE OR REPLACE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql begin /* x */ atomic -- y\n select 1; end;", "", 0, pgKeeps},
	{"a prepared statement named transaction_x", "PREPARE transaction_x AS SELECT 1;", "", 0, pgKeeps},
	{"in a BEGIN ATOMIC body (refused there by PostgreSQL)", "CREATE PROCEDURE pg_temp.p() LANGUAGE sql BEGIN ATOMIC COMMIT; END;", "", 0, pgSkip},
	{"an operator and a comment", "SELECT 1 */* ; COMMIT */ 2;", "", 0, pgKeeps},
}

func TestMigrationFilesControllingTheirTransaction(t *testing.T) {
	for _, tc := range txControlCases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkTxControl(tc.sql)
			if tc.refused == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), "controls the transaction ("+tc.refused+")")
			require.Contains(t, err.Error(), "line "+strconv.Itoa(tc.line)+": ")
			// The statement is quoted, from its first word.
			stmts, serr := splitStatements(tc.sql)
			require.NoError(t, serr)
			for _, s := range stmts {
				if s.txControl() != "" {
					require.Contains(t, err.Error(), `statement "`+strings.TrimSuffix(strings.Fields(tc.sql[s.at:])[0], ";"))
					break
				}
			}
		})
	}
}

func TestMigrationLexerUnterminated(t *testing.T) {
	for _, tc := range []struct{ sql, want string }{
		{"SELECT 'abc", "line 1: unterminated quoted string"},
		{"SELECT 1;\nSELECT E'abc\\'", "line 2: unterminated quoted string"},
		{`SELECT "abc`, "unterminated quoted identifier"},
		{"/* /* */ COMMIT;", "unterminated /* comment"},
		{"/*", "unterminated /* comment"},
		{"SELECT $$abc", "unterminated dollar-quoted string $$"},
		{"SELECT $a$ x $A$", "unterminated dollar-quoted string $a$"},
	} {
		err := checkTxControl(tc.sql)
		require.ErrorContains(t, err, tc.want, tc.sql)
		require.ErrorContains(t, err, "PostgreSQL would not parse the file")
	}
	// A $ that opens no quote is a character, not an error.
	require.NoError(t, checkTxControl("SELECT $a; SELECT $"))
}

func TestMigrationLexerStatements(t *testing.T) {
	src := "-- head\nCREATE TABLE a (x int);\n\n  Commit And Chain ; ;\"q\" x; 'tail'"
	stmts, err := splitStatements(src)
	require.NoError(t, err)
	var texts []string
	for _, s := range stmts {
		texts = append(texts, src[s.start:s.end])
	}
	require.Equal(t, []string{"-- head\nCREATE TABLE a (x int);", "\n\n  Commit And Chain ;", " ;", "\"q\" x;", " 'tail'"}, texts)
	require.Equal(t, [2]string{"create", "table"}, stmts[0].words)
	require.Equal(t, 2, stmts[0].line)
	require.Equal(t, [2]string{"commit", "and"}, stmts[1].words)
	require.Equal(t, 4, stmts[1].line)
	require.Equal(t, -1, stmts[2].at, "an empty statement has no first token")
	require.Equal(t, [2]string{"", "x"}, stmts[3].words, "a quoted identifier is not a word")
	require.Equal(t, [2]string{"", ""}, stmts[4].words)
}

// TestMigrationLexerAgreesWithPostgreSQL runs each file of txControlCases
// that PostgreSQL can run inside a transaction, and checks that the files
// the lexer accepts leave the transaction as it was, and those it refuses
// for ending it do end it.
func TestMigrationLexerAgreesWithPostgreSQL(t *testing.T) {
	d := pgtest.DB(t)
	for _, tc := range txControlCases {
		if tc.pg == pgSkip {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			c, err := pgx.Connect(ctx, d.AdminURL())
			require.NoError(t, err)
			defer c.Close(ctx)
			conn := c.PgConn()
			_, err = conn.Exec(ctx, `BEGIN; SET LOCAL standard_conforming_strings = on`).ReadAll()
			require.NoError(t, err)
			var started time.Time
			require.NoError(t, c.QueryRow(ctx, `SELECT now()`).Scan(&started))
			_, err = conn.Exec(ctx, tc.sql).ReadAll()
			require.NoError(t, err, "PostgreSQL runs the file")
			ended := conn.TxStatus() != 'T'
			if !ended {
				var now time.Time
				require.NoError(t, c.QueryRow(ctx, `SELECT now()`).Scan(&now))
				ended = !now.Equal(started)
			}
			require.Equal(t, tc.pg == pgEnds, ended, "the transaction ended")
			if tc.refused == "" {
				require.False(t, ended, "an accepted file keeps its transaction")
			}
		})
	}
}

// FuzzMigrationStatements checks that splitStatements never panics, that
// its statements are the whole text, in order, each ended by ; but the
// last, and that each statement split alone is itself, with the same first
// token and words.
func FuzzMigrationStatements(f *testing.F) {
	for _, tc := range txControlCases {
		f.Add(tc.sql)
	}
	f.Add("/* /* */ */ $a$ $$ $a$ E'\\'' \"\"\"\" $1$ x$$ 1e'\\'' U&'\\0041' -- x\r;")
	f.Add("CREATE FUNCTION f() BEGIN ATOMIC CREATE PROCEDURE p() BEGIN ATOMIC END; END; END;")
	f.Fuzz(func(t *testing.T, src string) {
		stmts, err := splitStatements(src)
		_ = checkTxControl(src)
		if err != nil {
			se, ok := err.(*sqlSyntaxError)
			if !ok || se.at < 0 || se.at >= len(src) || se.line != 1+strings.Count(src[:se.at], "\n") {
				t.Fatalf("bad error %#v for %q", err, src)
			}
			return
		}
		pos := 0
		var joined strings.Builder
		for i, s := range stmts {
			if s.start != pos || s.end <= s.start || s.end > len(src) {
				t.Fatalf("statement %d is [%d, %d), after %d, in %q", i, s.start, s.end, pos, src)
			}
			text := src[s.start:s.end]
			joined.WriteString(text)
			pos = s.end
			if i < len(stmts)-1 && !strings.HasSuffix(text, ";") {
				t.Fatalf("statement %d %q does not end with ;", i, text)
			}
			if s.at >= 0 && (s.at < s.start || s.at >= s.end || s.line != 1+strings.Count(src[:s.at], "\n")) {
				t.Fatalf("statement %d: first token at %d, line %d, in %q", i, s.at, s.line, src)
			}
			alone, err := splitStatements(text)
			if err != nil || len(alone) != 1 {
				t.Fatalf("statement %d %q split alone: %v, %d statements", i, text, err, len(alone))
			}
			a := alone[0]
			wantAt := -1
			if s.at >= 0 {
				wantAt = s.at - s.start
			}
			if a.start != 0 || a.end != len(text) || a.at != wantAt || a.words != s.words {
				t.Fatalf("statement %d %q split alone is %+v, not %+v", i, text, a, s)
			}
		}
		if joined.String() != src {
			t.Fatalf("statements %q rejoined are not the text %q", joined.String(), src)
		}
	})
}
