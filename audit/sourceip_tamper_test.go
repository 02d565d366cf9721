package audit_test

import (
	"net/netip"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
)

// An entry's source IP is stored as inet, which can also hold a network:
// an administrator who turns 10.0.0.1 into 10.0.0.1/8 changes what every
// query on the column finds (WHERE source_ip = '10.0.0.1' no longer does)
// while the address stays the same. Verify must see it.
func TestSourceIPWidenedToANetworkIsDetected(t *testing.T) {
	e := newEnv(t, "standard")
	id, ctx := e.newTenant(t, "ip")
	for range 3 {
		_, err := e.log.Append(ctx, audit.Event{Actor: "a", Action: "login", Outcome: audit.OutcomeSuccess,
			SourceIP: netip.MustParseAddr("10.0.0.1")})
		require.NoError(t, err)
	}
	_, err := e.log.Verify(ctx)
	require.NoError(t, err)
	conn, table := e.superuser(t, id)
	require.NoError(t, pgx.BeginFunc(t.Context(), conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(t.Context(), `SET LOCAL session_replication_role = replica`); err != nil {
			return err
		}
		_, err := tx.Exec(t.Context(), replaceT(`UPDATE $T SET source_ip = '10.0.0.1/8' WHERE seq = 2`, table))
		return err
	}))
	_, err = e.log.Verify(ctx)
	var ce *audit.ChainError
	require.ErrorAs(t, err, &ce, "a source IP widened to a network verified")
	require.Equal(t, int64(2), ce.Seq)
	require.Equal(t, audit.ProblemChanged, ce.Problem)
}
