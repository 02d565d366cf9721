package audit_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
)

// TestAdminTamperingIsDetected has a superuser (past the triggers, with
// session_replication_role = replica) edit, delete, reorder, insert and
// truncate the rows of a tenant's log, and the checkpoints, on every
// placement; Verify names the first broken entry each time, and says how
// it broke.
// rtmx:req REQ-TEN-007
func TestAdminTamperingIsDetected(t *testing.T) {
	type tamper struct {
		name    string
		sql     []string // $T is the tenant's audit table
		seq     int64
		problem audit.Problem
		cp      bool // the SQL is on the control plane's checkpoints
	}
	cases := []tamper{
		{name: "edit a field", sql: []string{`UPDATE $T SET actor = 'mallory' WHERE seq = 5`}, seq: 5, problem: audit.ProblemChanged},
		{name: "edit details", sql: []string{`UPDATE $T SET details = details || '{"approved": true}' WHERE seq = 6`}, seq: 6, problem: audit.ProblemChanged},
		{name: "edit time", sql: []string{`UPDATE $T SET at = at - interval '1 day' WHERE seq = 11`}, seq: 11, problem: audit.ProblemChanged},
		{name: "replace a MAC", sql: []string{`UPDATE $T SET mac = (SELECT mac FROM $T WHERE seq = 2) WHERE seq = 7`}, seq: 7, problem: audit.ProblemChanged},
		{name: "delete an entry", sql: []string{`DELETE FROM $T WHERE seq = 5`}, seq: 5, problem: audit.ProblemMissing},
		{name: "delete the first", sql: []string{`DELETE FROM $T WHERE seq = 1`}, seq: 1, problem: audit.ProblemMissing},
		{name: "reorder", sql: []string{
			`UPDATE $T SET seq = 1004 WHERE seq = 4`, `UPDATE $T SET seq = 4 WHERE seq = 8`, `UPDATE $T SET seq = 8 WHERE seq = 1004`,
		}, seq: 4, problem: audit.ProblemReordered},
		{name: "insert", sql: []string{
			`UPDATE $T SET seq = seq + 1000 WHERE seq >= 5`, `UPDATE $T SET seq = seq - 999 WHERE seq >= 1005`,
			`INSERT INTO $T SELECT tenant_id, 5, at, 'mallory', action, resource, outcome, details, source_ip, user_agent, mac, mac FROM $T WHERE seq = 4`,
		}, seq: 5, problem: audit.ProblemChanged},
		{name: "insert with a copied link", sql: []string{
			`UPDATE $T SET seq = seq + 1000 WHERE seq >= 5`, `UPDATE $T SET seq = seq - 999 WHERE seq >= 1005`,
			`INSERT INTO $T SELECT tenant_id, 5, at, actor, action, resource, outcome, details, source_ip, user_agent, prev_mac, mac FROM $T WHERE seq = 7`,
		}, seq: 5, problem: audit.ProblemReordered},
		{name: "cut the tail", sql: []string{`DELETE FROM $T WHERE seq > 9`}, seq: 10, problem: audit.ProblemTruncated},
		{name: "truncate", sql: []string{`TRUNCATE $T`}, seq: 1, problem: audit.ProblemTruncated},
		{name: "rewrite the head", sql: []string{`UPDATE $T SET outcome = 'denied' WHERE seq = 12`}, seq: 12, problem: audit.ProblemChanged},
		{name: "forge a checkpoint", cp: true, sql: []string{`UPDATE tenancy.audit_checkpoints SET seq = 40 WHERE tenant_id = $1`}, seq: 40, problem: audit.ProblemCheckpoint},
		{name: "move a checkpoint's head", cp: true, sql: []string{
			`UPDATE tenancy.audit_checkpoints SET head_mac = '\x00' || head_mac WHERE tenant_id = $1`}, seq: 12, problem: audit.ProblemCheckpoint},
	}
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			e := newEnv(t, tier)
			cp := e.controlPlane(t)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					id, ctx := e.newTenant(t, "tamper")
					e.appendN(t, ctx, 12, 3)
					_, err := e.log.Checkpoint(ctx)
					require.NoError(t, err)
					_, err = e.log.Verify(ctx)
					require.NoError(t, err)

					conn, table := e.superuser(t, id)
					var args []any
					if c.cp {
						conn, args = cp, []any{id.String()}
					}
					err = pgx.BeginFunc(t.Context(), conn, func(tx pgx.Tx) error {
						if _, err := tx.Exec(t.Context(), `SET LOCAL session_replication_role = replica`); err != nil {
							return err
						}
						for _, s := range c.sql {
							if _, err := tx.Exec(t.Context(), replaceT(s, table), args...); err != nil {
								return err
							}
						}
						return nil
					})
					require.NoError(t, err)

					_, err = e.log.Verify(ctx)
					var ce *audit.ChainError
					require.ErrorAs(t, err, &ce)
					require.ErrorIs(t, err, audit.ErrTampered)
					require.Equal(t, c.seq, ce.Seq, "%v", err)
					require.Equal(t, c.problem, ce.Problem, "%v", err)
					require.Equal(t, id.String(), ce.Log)
				})
			}

			// Without switching the triggers off, not even a superuser
			// changes a row.
			id, ctx := e.newTenant(t, "tamper")
			e.appendN(t, ctx, 3, 3)
			conn, table := e.superuser(t, id)
			for _, sql := range []string{`UPDATE $T SET actor = 'x'`, `DELETE FROM $T WHERE seq = 3`, `TRUNCATE $T`} {
				_, err := conn.Exec(t.Context(), replaceT(sql, table))
				require.Equal(t, "42501", pgCode(err), "%s: %v", sql, err)
			}
			for _, sql := range []string{`UPDATE tenancy.audit_checkpoints SET seq = seq`, `DELETE FROM tenancy.audit_checkpoints`, `TRUNCATE tenancy.audit_checkpoints`} {
				_, err := cp.Exec(context.Background(), sql)
				require.Equal(t, "42501", pgCode(err), "%s: %v", sql, err)
			}
			_, err := e.log.Verify(ctx)
			require.NoError(t, err)
		})
	}
}

func replaceT(sql, table string) string {
	out := []byte{}
	for i := 0; i < len(sql); i++ {
		if sql[i] == '$' && i+1 < len(sql) && sql[i+1] == 'T' {
			out = append(out, table...)
			i++
			continue
		}
		out = append(out, sql[i])
	}
	return string(out)
}
