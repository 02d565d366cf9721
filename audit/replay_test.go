package audit_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
)

// TestReplayedEntriesAndMovedCheckpointsDoNotVerify: an administrator
// past the triggers
//   - appends a copy of one of the tenant's own entries at the head (its
//     prev_mac set to the head's MAC, so the link looks right): the MAC
//     covers the sequence number, so it does not verify;
//   - files tenant A's checkpoint under tenant B's ID (at a sequence
//     number B has): it is A's key's MAC over log A, so B's Verify
//     refuses it.
func TestReplayedEntriesAndMovedCheckpointsDoNotVerify(t *testing.T) {
	e := newEnv(t, "standard")
	cp := e.controlPlane(t)
	replica := func(conn *pgx.Conn, sql string, args ...any) {
		t.Helper()
		require.NoError(t, pgx.BeginFunc(t.Context(), conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(t.Context(), `SET LOCAL session_replication_role = replica`); err != nil {
				return err
			}
			_, err := tx.Exec(t.Context(), sql, args...)
			return err
		}))
	}

	t.Run("replay at the head", func(t *testing.T) {
		id, ctx := e.newTenant(t, "replay")
		entries := e.appendN(t, ctx, 6, 3)
		conn, table := e.superuser(t, id)
		replica(conn, replaceT(`INSERT INTO $T SELECT tenant_id, 7, at, actor, action, resource, outcome, details, source_ip, user_agent, $1, mac FROM $T WHERE seq = 2`, table),
			entries[5].MAC)
		_, err := e.log.Verify(ctx)
		var ce *audit.ChainError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, int64(7), ce.Seq)
		require.Equal(t, audit.ProblemChanged, ce.Problem)
	})

	t.Run("A's checkpoint under B", func(t *testing.T) {
		aID, actx := e.newTenant(t, "cpa")
		bID, bctx := e.newTenant(t, "cpb")
		e.appendN(t, actx, 5, 5)
		e.appendN(t, bctx, 5, 5)
		_, err := e.log.Checkpoint(actx)
		require.NoError(t, err)
		_, err = e.log.Verify(bctx)
		require.NoError(t, err)
		replica(cp, `INSERT INTO tenancy.audit_checkpoints (tenant_id, seq, head_mac, at, mac)
			SELECT $2, seq, head_mac, at, mac FROM tenancy.audit_checkpoints WHERE tenant_id = $1`, aID.String(), bID.String())
		_, err = e.log.Verify(bctx)
		var ce *audit.ChainError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, audit.ProblemCheckpoint, ce.Problem)
		require.Equal(t, bID.String(), ce.Log)
		_, err = e.log.Verify(actx)
		require.NoError(t, err)
	})
}
