package store_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBulkLoadThroughTemporaryTable shows the documented bulk-load path:
// COPY straight into a tenant table is refused by PostgreSQL (row level
// security), COPY into a temporary table and INSERT ... SELECT works, and
// the rows land with the transaction's tenant only.
func TestBulkLoadThroughTemporaryTable(t *testing.T) {
	db := newStore(t)
	idA, ctxA := newTenant(t, db, "copy")
	_, ctxB := newTenant(t, db, "copy")
	src := pgx.CopyFromRows([][]any{{"REQ-1", "BULK", "one"}, {"REQ-2", "BULK", "two"}})

	err := db.Tx(ctxA, func(tx *store.Tx) error {
		_, err := tx.CopyFrom(ctxA, pgx.Identifier{"requirements"}, []string{"req_id", "category", "requirement_text"}, src)
		return err
	})
	require.Error(t, err)
	assert.Equal(t, "0A000", pgCode(err), "COPY into a table under row level security: %v", err)

	src = pgx.CopyFromRows([][]any{{"REQ-1", "BULK", "one"}, {"REQ-2", "BULK", "two"}})
	err = db.Tx(ctxA, func(tx *store.Tx) error {
		if _, err := tx.Exec(ctxA, `CREATE TEMP TABLE staging (LIKE requirements INCLUDING DEFAULTS) ON COMMIT DROP`); err != nil {
			return err
		}
		n, err := tx.CopyFrom(ctxA, pgx.Identifier{"staging"}, []string{"req_id", "category", "requirement_text"}, src)
		if err != nil {
			return err
		}
		if n != 2 {
			t.Errorf("copied %d rows, want 2", n)
		}
		_, err = tx.Exec(ctxA, `INSERT INTO requirements SELECT * FROM staging`)
		return err
	})
	require.NoError(t, err)

	got, err := reqIDs(t, db, ctxA, `SELECT tenant_id || ':' || req_id FROM requirements ORDER BY 1`)
	require.NoError(t, err)
	assert.Equal(t, []string{idA.String() + ":REQ-1", idA.String() + ":REQ-2"}, got)
	got, err = reqIDs(t, db, ctxB, `SELECT req_id FROM requirements`)
	require.NoError(t, err)
	assert.Empty(t, got)

	// A staged row claiming another tenant is stopped by the policy.
	err = db.Tx(ctxB, func(tx *store.Tx) error {
		if _, err := tx.Exec(ctxB, `CREATE TEMP TABLE staging (LIKE requirements INCLUDING DEFAULTS) ON COMMIT DROP`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctxB, `INSERT INTO staging (tenant_id, req_id, category, requirement_text) VALUES ($1, 'X', 'C', 'forged')`, idA.String()); err != nil {
			return err
		}
		_, err := tx.Exec(ctxB, `INSERT INTO requirements SELECT * FROM staging`)
		return err
	})
	require.Error(t, err)
	assert.Equal(t, "42501", pgCode(err), "%v", err)
}
