package store_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// rtmx:req REQ-TEN-001
func TestTenantSeesOnlyItsOwnRows(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		_, ctxA := e.newTenant(t, "a")
		_, ctxB := e.newTenant(t, "b")
		e.insertReq(t, ctxA, "REQ-A-1", "only A")
		e.insertReq(t, ctxB, "REQ-B-1", "only B")
		e.insertReq(t, ctxB, "REQ-B-2", "only B")

		gotA, err := reqIDs(t, e.db, ctxA, `SELECT req_id FROM requirements ORDER BY req_id`)
		require.NoError(t, err)
		assert.Equal(t, []string{"REQ-A-1"}, gotA)
		gotB, err := reqIDs(t, e.db, ctxB, `SELECT req_id FROM requirements ORDER BY req_id`)
		require.NoError(t, err)
		assert.Equal(t, []string{"REQ-B-1", "REQ-B-2"}, gotB)

		var text string
		err = e.db.QueryRow(ctxA, `SELECT requirement_text FROM requirements WHERE req_id = $1`, "REQ-B-1").Scan(&text)
		assert.ErrorIs(t, err, pgx.ErrNoRows)

		err = e.db.Tx(ctxB, func(tx *store.Tx) error {
			_, err := tx.Exec(ctxB, `UPDATE requirements SET status = 'COMPLETE' WHERE req_id = $1`, "REQ-B-1")
			return err
		})
		require.NoError(t, err)
	})
}

// rtmx:req REQ-TEN-009
func TestCallWithoutTenantFails(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		_, err := e.db.Exec(t.Context(), `SELECT 1`)
		assert.ErrorIs(t, err, tenant.ErrNoTenant)
	})
}
