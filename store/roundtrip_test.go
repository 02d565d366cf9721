package store_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countingConn counts the writes a client makes: each flush of a request
// that the client then waits on is one network round trip.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

func withWriteCounter(writes *atomic.Int64) func(*store.Config) {
	return func(c *store.Config) {
		c.App.MaxConns = 1
		d := &net.Dialer{}
		c.App.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: conn, writes: writes}, nil
		}
	}
}

// TestTenantSetupAddsNoRoundTrip proves that the setup (role, search_path,
// app.tenant_id) travels with BEGIN and the first statement: a scoped
// one-statement call costs the same number of round trips as raw pgx.
func TestTenantSetupAddsNoRoundTrip(t *testing.T) {
	var writes atomic.Int64
	db := newStore(t, withWriteCounter(&writes))
	_, ctx := newTenant(t, db, "rt")
	insertReq(t, db, ctx, "REQ-1", "x")

	const sel = `SELECT requirement_text FROM requirements WHERE req_id = $1`
	const upd = `UPDATE requirements SET status = $2 WHERE req_id = $1`
	count := func(fn func() error) int64 {
		t.Helper()
		require.NoError(t, fn()) // the first run warms the connection's statement cache
		writes.Store(0)
		require.NoError(t, fn())
		return writes.Load()
	}
	var s string
	assert.EqualValues(t, 1, count(func() error { return db.QueryRow(ctx, sel, "REQ-1").Scan(&s) }), "QueryRow")
	assert.EqualValues(t, 1, count(func() error { _, err := db.Exec(ctx, upd, "REQ-1", "TESTED"); return err }), "Exec")
	assert.EqualValues(t, 2, count(func() error {
		return db.Tx(ctx, func(tx *store.Tx) error { return tx.QueryRow(ctx, sel, "REQ-1").Scan(&s) })
	}), "Tx with one statement: BEGIN+setup+statement, COMMIT")
	assert.EqualValues(t, 3, count(func() error {
		return db.Tx(ctx, func(tx *store.Tx) error {
			if _, err := tx.Exec(ctx, upd, "REQ-1", "COMPLETE"); err != nil {
				return err
			}
			return tx.QueryRow(ctx, sel, "REQ-1").Scan(&s)
		})
	}), "Tx with two statements")
	assert.EqualValues(t, 0, count(func() error { return db.Tx(ctx, func(*store.Tx) error { return nil }) }), "empty Tx begins nothing")

	// The same work with raw pgx on the same pool, for comparison.
	pool := db.UnscopedPool()
	assert.EqualValues(t, 1, count(func() error { return pool.QueryRow(ctx, `SELECT 1`).Scan(new(int)) }), "raw QueryRow")
	assert.EqualValues(t, 3, count(func() error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return tx.QueryRow(ctx, `SELECT 1`).Scan(new(int)) })
	}), "raw BeginFunc with one statement")
}

// TestExecModesKeepIsolation runs the scoped calls under every pgx query
// execution mode (PgBouncer in transaction mode needs exec or
// simple_protocol) and checks both isolation and the round-trip count.
func TestExecModesKeepIsolation(t *testing.T) {
	for _, mode := range []pgx.QueryExecMode{
		pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec,
		pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol,
	} {
		t.Run(mode.String(), func(t *testing.T) {
			var writes atomic.Int64
			db := newStore(t, withWriteCounter(&writes), func(c *store.Config) { c.App.ConnConfig.DefaultQueryExecMode = mode })
			_, ctxA := newTenant(t, db, "mode")
			_, ctxB := newTenant(t, db, "mode")
			insertReq(t, db, ctxA, "A", "a")
			insertReq(t, db, ctxB, "B", "b")
			for range 3 {
				for _, c := range []struct {
					ctx  context.Context
					want string
				}{{ctxA, "A"}, {ctxB, "B"}} {
					rows, err := db.Query(c.ctx, `SELECT req_id FROM requirements`)
					require.NoError(t, err)
					got, err := pgx.CollectRows(rows, pgx.RowTo[string])
					require.NoError(t, err)
					assert.Equal(t, []string{c.want}, got)
				}
			}
			var s string
			require.NoError(t, db.QueryRow(ctxA, `SELECT req_id FROM requirements WHERE req_id = $1`, "A").Scan(&s))
			writes.Store(0)
			require.NoError(t, db.QueryRow(ctxA, `SELECT req_id FROM requirements WHERE req_id = $1`, "A").Scan(&s))
			want := int64(1)
			if mode == pgx.QueryExecModeDescribeExec {
				// Describes every statement before it runs any, so it cannot
				// share the setup's round trip: describe+run the setup, then
				// describe+run the query, then commit.
				want = 5
			}
			assert.Equal(t, want, writes.Load(), "round trips")
		})
	}
}

// TestPlanPerTenantKeepsIsolationAndOneRoundTrip: with PlanPerTenant,
// tenants alternating on one connection each see only their own rows, and a
// warm statement still costs one round trip.
func TestPlanPerTenantKeepsIsolationAndOneRoundTrip(t *testing.T) {
	var writes atomic.Int64
	db := newStore(t, withWriteCounter(&writes), func(c *store.Config) { c.PlanPerTenant = true })
	_, ctxA := newTenant(t, db, "ppt")
	_, ctxB := newTenant(t, db, "ppt")
	insertReq(t, db, ctxA, "A", "a")
	insertReq(t, db, ctxB, "B", "b")
	q := `SELECT req_id FROM requirements -- a trailing comment must not swallow the tenant's`
	for range 3 {
		for _, c := range []struct {
			ctx  context.Context
			want string
		}{{ctxA, "A"}, {ctxB, "B"}} {
			writes.Store(0)
			var got string
			require.NoError(t, db.QueryRow(c.ctx, q).Scan(&got))
			assert.Equal(t, c.want, got)
		}
	}
	writes.Store(0)
	var got string
	require.NoError(t, db.QueryRow(ctxA, q).Scan(&got))
	assert.EqualValues(t, 1, writes.Load(), "round trips")
	require.NoError(t, db.Tx(ctxB, func(tx *store.Tx) error { return tx.QueryRow(ctxB, q).Scan(&got) }))
	assert.Equal(t, "B", got)

	// The point of the option: the connection holds one prepared statement
	// (so one plan) per tenant for the same SQL.
	var perTenant []string
	rows, err := db.UnscopedPool().Query(context.Background(),
		`SELECT substring(statement from '/\* tenancy:([a-z0-9_]+) \*/') FROM pg_prepared_statements
		 WHERE statement LIKE 'SELECT req_id FROM requirements -- a trailing comment%' ORDER BY 1`)
	require.NoError(t, err)
	perTenant, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	idA, _ := tenant.FromContext(ctxA)
	idB, _ := tenant.FromContext(ctxB)
	assert.ElementsMatch(t, []string{idA.String(), idB.String()}, perTenant)
}
