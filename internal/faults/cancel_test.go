package faults_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// oneConn makes a DB hold one tenant connection in all, so that the
// request after a cancelled transaction gets the connection it used, or
// the one that replaced it.
func oneConn(_ *store.AdminConfig, c *store.Config) { c.MaxConns, c.MinResidency = 1, 0 }

// seqsOf returns the seq of every row of table (writes or pairs) of the
// tenant in ctx from lo on.
func seqsOf(t *testing.T, db *store.DB, ctx context.Context, table string, lo int64) []int64 {
	t.Helper()
	rows, err := db.Query(ctx, `SELECT seq FROM `+table+` WHERE seq >= $1 ORDER BY seq`, lo)
	if err != nil {
		t.Fatalf("reading %s: %v", table, err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatalf("reading %s: %v", table, err)
	}
	return seqs
}

// settled waits until the database has no session left in a transaction
// or running a statement but the caller's (a cancelled statement's backend
// ends, or its cancel request arrives, a moment after the client has
// moved on), and fails the test if one is still there after 5 s.
func settled(t *testing.T, d *pgtest.Database) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), d.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var left []string
	for deadline := time.Now().Add(5 * time.Second); ; {
		rows, _ := conn.Query(t.Context(), `SELECT usename || ' ' || state || ': ' || left(query, 60) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
			AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')`)
		left, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions still in a transaction or a statement 5 s after the cancellation: %q", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCancelledTxLeavesNothing cancels the context of a transaction of
// several statements between two of them (and, in a third case, lets its
// deadline expire in the middle of a long statement), in both connection
// modes, on a DB of a single connection: the call fails with an error
// matching the context's, no row of the transaction is there, no session
// is left in the transaction or the statement, and the next transactions,
// of the same tenant and of another, run at once on the DB's one
// connection and see their own rows only.
func TestCancelledTxLeavesNothing(t *testing.T) {
	for _, m := range []store.Mode{store.ModeTenantLogin, store.ModeSharedPool} {
		t.Run(string(m), func(t *testing.T) {
			f := newFixture(t, databaseFor(t, m), m, uniquePrefix("cancel"), 2, oneConn)
			a, b := f.ids[0], f.ids[1]
			cases := []struct {
				name string
				want error
				// run runs the transaction with ctx, calling cancel at its point.
				run func(ctx context.Context, cancel func(), base int64) error
			}{
				{"cancelled between statements, the error returned", context.Canceled, func(ctx context.Context, cancel func(), base int64) error {
					return f.db.Tx(ctx, func(tx *store.Tx) error {
						if err := insertPair(ctx, tx, a, base); err != nil {
							return err
						}
						cancel()
						_, err := tx.Exec(ctx, `INSERT INTO writes (owner, seq) VALUES ($1, $2)`, a.String(), base+1)
						return err
					})
				}},
				{"cancelled between statements, the error dropped", context.Canceled, func(ctx context.Context, cancel func(), base int64) error {
					return f.db.Tx(ctx, func(tx *store.Tx) error {
						if err := insertPair(ctx, tx, a, base); err != nil {
							return err
						}
						cancel()
						_, _ = tx.Exec(ctx, `INSERT INTO writes (owner, seq) VALUES ($1, $2)`, a.String(), base+1)
						return nil // the commit has a cancelled context
					})
				}},
				{"deadline in a running statement", context.DeadlineExceeded, func(ctx context.Context, _ func(), base int64) error {
					ctx, stop := context.WithTimeout(ctx, 300*time.Millisecond)
					defer stop()
					return f.db.Tx(ctx, func(tx *store.Tx) error {
						if err := insertPair(ctx, tx, a, base); err != nil {
							return err
						}
						_, err := tx.Exec(ctx, `SELECT pg_sleep(30)`)
						return err
					})
				}},
			}
			for i, c := range cases {
				base := int64(i+1) * 1000
				ctx, cancel := context.WithCancel(tenant.NewContext(t.Context(), a))
				start := time.Now()
				err := c.run(ctx, cancel, base)
				cancel()
				if !errors.Is(err, c.want) {
					t.Fatalf("%s: Tx returned %v, want an error matching %v", c.name, err, c.want)
				}
				if took := time.Since(start); took > 5*time.Second {
					t.Errorf("%s: Tx returned after %v", c.name, took)
				}
				t.Logf("%s: %v", c.name, err)
				settled(t, f.d)

				actx := tenant.NewContext(t.Context(), a)
				for _, table := range []string{"writes", "pairs"} {
					if got := seqsOf(t, f.db, actx, table, base); len(got) != 0 {
						t.Errorf("%s: rows %v of the cancelled transaction are in %s", c.name, got, table)
					}
				}
				// The DB's one connection serves the next requests at once.
				for j, id := range []tenant.ID{a, b, a} {
					ctx, done := context.WithTimeout(tenant.NewContext(t.Context(), id), 5*time.Second)
					seq := base + 100 + int64(j)
					err := f.db.Tx(ctx, func(tx *store.Tx) error { return insertPair(ctx, tx, id, seq) })
					done()
					if err != nil {
						t.Fatalf("%s: the next transaction of %s: %v", c.name, id, err)
					}
				}
				for id, want := range map[tenant.ID]string{a: fmt.Sprint([]int64{base + 100, base + 102}), b: fmt.Sprint([]int64{base + 101})} {
					ctx := tenant.NewContext(t.Context(), id)
					for _, table := range []string{"writes", "pairs"} {
						if got := fmt.Sprint(seqsOf(t, f.db, ctx, table, base)); got != want {
							t.Errorf("%s: tenant %s's %s from %d: %s, want %s", c.name, id, table, base, got, want)
						}
					}
				}
			}
		})
	}
}

// insertPair writes seq in writes and in pairs, for id.
func insertPair(ctx context.Context, tx *store.Tx, id tenant.ID, seq int64) error {
	if _, err := tx.Exec(ctx, `INSERT INTO writes (owner, seq) VALUES ($1, $2)`, id.String(), seq); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO pairs (owner, seq) VALUES ($1, $2)`, id.String(), seq)
	return err
}
