package pgtest_test

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
)

// TestStopStartKeepsDataAndPort stops a throwaway cluster in each mode and
// starts it again: the server answers at the same URL with the rows
// committed before the stop (with synchronous_commit on), and Exec
// reconnects by itself.
func TestStopStartKeepsDataAndPort(t *testing.T) {
	d := pgtest.NewCluster(t)
	d.Exec(t, `ALTER SYSTEM SET synchronous_commit = on`)
	d.Exec(t, `SELECT pg_reload_conf()`)
	d.Exec(t, `CREATE TABLE kept (n int)`)
	for i, mode := range []pgtest.StopMode{pgtest.StopImmediate, pgtest.StopFast} {
		d.Exec(t, `INSERT INTO kept VALUES ($1)`, i)
		d.Stop(t, mode)
		if conn, err := pgx.Connect(t.Context(), d.AdminURL()); err == nil {
			conn.Close(t.Context())
			t.Fatalf("%s: the server answers after Stop", mode)
		}
		d.Start(t)
		d.Exec(t, `SELECT 1`)
		conn, err := pgx.Connect(t.Context(), d.AdminURL())
		if err != nil {
			t.Fatalf("%s: after Start: %v", mode, err)
		}
		var n int
		err = conn.QueryRow(t.Context(), `SELECT count(*) FROM kept`).Scan(&n)
		conn.Close(t.Context())
		if err != nil || n != i+1 {
			t.Fatalf("%s: %d rows kept (%v), want %d", mode, n, err, i+1)
		}
	}
}
