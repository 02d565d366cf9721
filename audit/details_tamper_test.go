package audit_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
)

// TestDetailsNumberTamperingIsDetected: jsonb keeps numbers exactly
// (numeric), while the canonical form of details (RFC 8785) keeps them as
// doubles. An administrator who changes a stored number to another that
// rounds to the same double (12345678901234567000 -> ...890, 1 ->
// 1.0000000000000000001) changes what the table says, for every query
// that reads it, and Verify must see it.
func TestDetailsNumberTamperingIsDetected(t *testing.T) {
	e := newEnv(t, "standard")
	for _, c := range []struct{ name, sql string }{
		{"big integer", `UPDATE $T SET details = jsonb_set(details, '{big}', '12345678901234567890') WHERE seq = 2`},
		{"fraction", `UPDATE $T SET details = jsonb_set(details, '{one}', '1.0000000000000000001') WHERE seq = 2`},
		{"tiny", `UPDATE $T SET details = jsonb_set(details, '{zero}', '1e-400') WHERE seq = 2`},
	} {
		t.Run(c.name, func(t *testing.T) {
			id, ctx := e.newTenant(t, "num")
			for range 3 {
				_, err := e.log.Append(ctx, audit.Event{Actor: "a", Action: "pay", Outcome: audit.OutcomeSuccess,
					Details: map[string]any{"big": 12345678901234567000.0, "one": 1, "zero": 0}})
				require.NoError(t, err)
			}
			_, err := e.log.Verify(ctx)
			require.NoError(t, err)
			conn, table := e.superuser(t, id)
			require.NoError(t, pgx.BeginFunc(t.Context(), conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(t.Context(), `SET LOCAL session_replication_role = replica`); err != nil {
					return err
				}
				_, err := tx.Exec(t.Context(), replaceT(c.sql, table))
				return err
			}))
			var changed string
			require.NoError(t, conn.QueryRow(t.Context(), `SELECT details::text FROM `+table+` WHERE seq = 2`).Scan(&changed))
			t.Logf("stored details now %s", changed)

			_, err = e.log.Verify(ctx)
			var ce *audit.ChainError
			require.ErrorAs(t, err, &ce, "a changed number verified")
			require.Equal(t, int64(2), ce.Seq)
			require.Equal(t, audit.ProblemChanged, ce.Problem)
		})
	}
}

// TestExportDetailsNumberTamperingIsDetected: the same change made to an
// export (a line's details edited to a number that rounds to the same
// double) does not verify offline; and a tampered number in the table
// does not verify in an export of it either.
func TestExportDetailsNumberTamperingIsDetected(t *testing.T) {
	e := newEnv(t, "standard")
	id, ctx := e.newTenant(t, "numexp")
	for range 2 {
		_, err := e.log.Append(ctx, audit.Event{Actor: "a", Action: "pay", Outcome: audit.OutcomeSuccess,
			Details: map[string]any{"big": 12345678901234567000.0, "exp": 1e21, "tiny": 5e-324}})
		require.NoError(t, err)
	}
	mac, err := e.km.MAC(ctx)
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = e.log.Export(ctx, &buf)
	require.NoError(t, err)
	_, err = audit.VerifyExport(bytes.NewReader(buf.Bytes()), mac)
	require.NoError(t, err)
	require.Contains(t, buf.String(), `"big":12345678901234567000`)
	for _, to := range []string{`"big":12345678901234567890`, `"big":12345678901234567000.1`, `"big":1.2345678901234567e19`} {
		edited := strings.Replace(buf.String(), `"big":12345678901234567000`, to, 1)
		_, err = audit.VerifyExport(strings.NewReader(edited), mac)
		if to == `"big":1.2345678901234567e19` {
			require.NoError(t, err, "the same value, written otherwise, is the same entry")
			continue
		}
		require.ErrorIs(t, err, audit.ErrTampered, "export edited to %s verified", to)
	}

	conn, table := e.superuser(t, id)
	require.NoError(t, pgx.BeginFunc(t.Context(), conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(t.Context(), `SET LOCAL session_replication_role = replica`); err != nil {
			return err
		}
		_, err := tx.Exec(t.Context(), replaceT(`UPDATE $T SET details = jsonb_set(details, '{big}', '12345678901234567890') WHERE seq = 1`, table))
		return err
	}))
	buf.Reset()
	_, err = e.log.Export(ctx, &buf)
	require.NoError(t, err)
	require.Contains(t, buf.String(), `12345678901234567890`, "the export shows what the table holds")
	_, err = audit.VerifyExport(bytes.NewReader(buf.Bytes()), mac)
	require.ErrorIs(t, err, audit.ErrTampered)
}
