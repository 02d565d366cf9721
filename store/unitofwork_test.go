package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/stretchr/testify/require"
)

// requireNoCursor asserts that err is PostgreSQL's "cursor does not exist".
func requireNoCursor(t *testing.T, err error) {
	t.Helper()
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr, "want an error from the server, got %v", err)
	require.Equal(t, "34000", pgErr.Code, "want invalid_cursor_name: %v", err)
}

// A cursor declared WITH HOLD outlives its transaction on the connection,
// holding rows read as its tenant; with one connection in the pool, the
// next unit of work (of another tenant) would be on that connection.
func TestHeldCursorDoesNotOutliveItsUnitOfWork(t *testing.T) {
	declare := map[string]string{
		"DECLARE":    `DECLARE export_cur CURSOR WITH HOLD FOR SELECT tenant_id, req_id FROM requirements`,
		"DO via SPI": `DO $$ BEGIN EXECUTE 'DECLARE export_cur CURSOR WITH HOLD FOR SELECT tenant_id, req_id FROM requirements'; END $$`,
	}
	for name, sql := range declare {
		t.Run(name, func(t *testing.T) {
			db := newStore(t, func(c *store.Config) { c.App.MaxConns = 1 })
			_, ctxA := newTenant(t, db, "cursora")
			_, ctxB := newTenant(t, db, "cursorb")
			insertReq(t, db, ctxA, "A-1", "tenant A's text")

			require.NoError(t, db.Tx(ctxA, func(tx *store.Tx) error {
				if _, err := tx.Exec(ctxA, sql); err != nil {
					return err
				}
				// Within its own transaction the cursor works.
				var tid, rid string
				return tx.QueryRow(ctxA, `FETCH NEXT FROM export_cur`).Scan(&tid, &rid)
			}))

			_, err := db.Exec(ctxB, `FETCH ALL FROM export_cur`)
			requireNoCursor(t, err)
			err = db.Tx(ctxB, func(tx *store.Tx) error {
				_, err := tx.Exec(ctxB, `MOVE NEXT IN export_cur`)
				return err
			})
			requireNoCursor(t, err)
			_, err = db.Exec(ctxA, `FETCH ALL FROM export_cur`)
			requireNoCursor(t, err) // nor the tenant itself, in a later unit of work

			rows, err := db.Query(ctxB, `SELECT name || ': ' || statement FROM pg_cursors WHERE is_holdable`)
			require.NoError(t, err)
			held, err := pgx.CollectRows(rows, pgx.RowTo[string])
			require.NoError(t, err)
			require.Empty(t, held)
		})
	}
}

// A transaction of the tenant that has written to a shared table and not
// yet committed when DropTenant starts: DropTenant waits for it and
// deletes what it wrote, instead of leaving the row behind.
func TestDropTenantWaitsForWritersOfSharedTables(t *testing.T) {
	db := newStore(t)
	schema := uniqueName("dropwait")
	require.NoError(t, db.CreateSharedTable(ctxT(t), schema, store.Table{Name: "notes", Columns: "body text NOT NULL"}))
	notes := pgx.Identifier{schema, "notes"}.Sanitize()
	id, ctx := newTenant(t, db, "dropwait")
	a := admin(t)

	inserted, release := make(chan struct{}), make(chan struct{})
	txErr, dropErr := make(chan error, 1), make(chan error, 1)
	go func() {
		txErr <- db.Tx(ctx, func(tx *store.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO `+notes+` (body) VALUES ('written while the tenant is dropped')`); err != nil {
				return err
			}
			close(inserted)
			<-release
			return nil
		})
	}()
	<-inserted
	go func() { dropErr <- db.DropTenant(ctxT(t), id) }()

	// Let the writer commit once DropTenant waits for it, or once
	// DropTenant has returned without waiting (the bug).
	var dropped error
	waiting := false
	for deadline := time.Now().Add(20 * time.Second); !waiting && time.Now().Before(deadline); {
		select {
		case dropped = <-dropErr:
			waiting = true // returned without waiting: fall through to the check
			dropErr <- dropped
		case <-time.After(20 * time.Millisecond):
			var n int
			require.NoError(t, a.QueryRow(ctxT(t), `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'`).Scan(&n))
			waiting = n > 0
		}
	}
	require.True(t, waiting, "DropTenant neither waited for the writer nor returned")
	close(release)
	require.NoError(t, <-txErr)
	require.NoError(t, <-dropErr)

	var left int
	require.NoError(t, a.QueryRow(ctxT(t), `SELECT count(*) FROM `+notes+` WHERE tenant_id = $1`, id.String()).Scan(&left))
	require.Zero(t, left, "rows of the dropped tenant are left in the shared table")
}

func TestTxUsedAfterItsFunctionReturnedFails(t *testing.T) {
	db := newStore(t)
	_, ctx := newTenant(t, db, "txafter")
	var kept *store.Tx
	require.NoError(t, db.Tx(ctx, func(tx *store.Tx) error {
		kept = tx
		_, err := tx.Exec(ctx, `SELECT 1`)
		return err
	}))
	_, err := kept.Exec(ctx, `SELECT 1`)
	require.ErrorIs(t, err, pgx.ErrTxClosed)
	_, err = kept.Query(ctx, `SELECT 1`)
	require.ErrorIs(t, err, pgx.ErrTxClosed)
	var one int
	require.ErrorIs(t, kept.QueryRow(ctx, `SELECT 1`).Scan(&one), pgx.ErrTxClosed)
	require.ErrorIs(t, kept.SendBatch(ctx, &pgx.Batch{}).Close(), pgx.ErrTxClosed)
	_, err = kept.CopyFrom(ctx, pgx.Identifier{"requirements"}, []string{"req_id"}, pgx.CopyFromRows(nil))
	require.ErrorIs(t, err, pgx.ErrTxClosed)

	// Also when the function failed or never began the transaction.
	sentinel := errors.New("handler failed")
	require.ErrorIs(t, db.Tx(ctx, func(tx *store.Tx) error { kept = tx; return sentinel }), sentinel)
	_, err = kept.Exec(context.Background(), `SELECT 1`)
	require.ErrorIs(t, err, pgx.ErrTxClosed)
}

// A statement of a tenant's transaction needs that tenant in its context:
// none is ErrNoTenant, another tenant is ErrCrossTenant, and neither runs.
func TestTxStatementsNeedTheTxsTenantInTheirContext(t *testing.T) {
	db := newStore(t)
	_, ctxA := newTenant(t, db, "txctxa")
	_, ctxB := newTenant(t, db, "txctxb")
	err := db.Tx(ctxA, func(tx *store.Tx) error {
		for name, tc := range map[string]struct {
			ctx  context.Context
			want error
		}{"no tenant": {context.Background(), tenant.ErrNoTenant}, "another tenant": {ctxB, tenant.ErrCrossTenant}} {
			_, err := tx.Exec(tc.ctx, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ('X-1', 'C', 't')`)
			require.ErrorIs(t, err, tc.want, "Exec, %s", name)
			_, err = tx.Query(tc.ctx, `SELECT 1`)
			require.ErrorIs(t, err, tc.want, "Query, %s", name)
			var one int
			require.ErrorIs(t, tx.QueryRow(tc.ctx, `SELECT 1`).Scan(&one), tc.want, "QueryRow, %s", name)
			require.ErrorIs(t, tx.SendBatch(tc.ctx, &pgx.Batch{}).Close(), tc.want, "SendBatch, %s", name)
			_, err = tx.CopyFrom(tc.ctx, pgx.Identifier{"requirements"}, []string{"req_id"}, pgx.CopyFromRows(nil))
			require.ErrorIs(t, err, tc.want, "CopyFrom, %s", name)
		}
		// The transaction itself is unharmed.
		_, err := tx.Exec(ctxA, `SELECT 1`)
		return err
	})
	require.NoError(t, err)
	var n int
	require.NoError(t, db.QueryRow(ctxA, `SELECT count(*) FROM requirements WHERE req_id = 'X-1'`).Scan(&n))
	require.Zero(t, n)
}

// The setup of a tenant is cached only while the tenant exists: calls with
// unknown IDs (hostile input) or a dropped tenant's do not pile up.
func TestUnknownAndDroppedTenantsAreNotCached(t *testing.T) {
	db := newStore(t)
	id, ctx := newTenant(t, db, "cached")
	_, err := db.Exec(ctx, `SELECT 1`)
	require.NoError(t, err)
	before := store.CachedScopes(db)
	for i := range 50 {
		ghost := tenant.NewContext(ctxT(t), tenant.MustParseID(fmt.Sprintf("ghost%d", i)))
		_, err := db.Exec(ghost, `SELECT 1`)
		require.ErrorIs(t, err, store.ErrUnknownTenant)
	}
	require.Equal(t, before, store.CachedScopes(db), "unknown tenants were cached")
	require.NoError(t, db.DropTenant(ctxT(t), id))
	require.Equal(t, before-1, store.CachedScopes(db), "a dropped tenant stays cached")
}
