package audit_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// TestAuditLogsAreTenantIsolated is REQ-DEPLOY-004's test case 6, "Audit
// logs are tenant-isolated", on every placement: a tenant cannot read or
// append to another tenant's log, nor read or write any checkpoint; its
// own role may only SELECT and INSERT its log; an entry copied from
// another tenant's log does not verify in its own; and one tenant's key
// does not verify another's export.
// rtmx:req REQ-TEN-017
func TestAuditLogsAreTenantIsolated(t *testing.T) {
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			e := newEnv(t, tier)
			a, actx := e.newTenant(t, "isoa")
			b, bctx := e.newTenant(t, "isob")
			e.appendN(t, actx, 5, 5)
			_, err := e.log.Append(bctx, audit.Event{Actor: "bob-of-b", Action: "secret.read", Resource: "b-secret", Outcome: audit.OutcomeSuccess})
			require.NoError(t, err)
			_, err = e.log.Checkpoint(bctx)
			require.NoError(t, err)

			// A's view holds A's entries only.
			var export bytes.Buffer
			n, err := e.log.Export(actx, &export)
			require.NoError(t, err)
			require.Equal(t, int64(5), n)
			require.NotContains(t, export.String(), "bob-of-b")
			require.NotContains(t, export.String(), b.String())

			// A's connections cannot name B's log, read it or append to it.
			foreign := b.SchemaName() + ".audit_log"
			for _, sql := range []string{
				`SELECT count(*) FROM ` + foreign,
				`INSERT INTO ` + foreign + ` (seq, at, actor, action, resource, outcome, details, user_agent, prev_mac, mac)
					VALUES (2, now(), 'a', 'b', '', 'success', '{}', '', '\x00', '\x00')`,
				`SELECT count(*) FROM tenancy.audit_checkpoints`,
				`INSERT INTO tenancy.audit_checkpoints (tenant_id, seq, head_mac, at, mac) VALUES ('` + a.String() + `', 99, '\x01', now(), '\x01')`,
				`SELECT count(*) FROM tenancy.platform_audit`,
			} {
				_, err := e.db.Exec(actx, sql)
				require.Error(t, err, sql)
				code := pgCode(err)
				require.True(t, code == "42501" || code == "42P01" || code == "3F000", "%s: %v", sql, err)
			}
			require.Equal(t, int64(1), e.count(t, b), "B's log is as B wrote it")

			// A's own role: SELECT and INSERT only.
			for _, priv := range []string{"UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"} {
				var has bool
				require.NoError(t, e.db.QueryRow(actx, `SELECT has_table_privilege(current_user, 'audit_log', '`+priv+`')`).Scan(&has))
				require.False(t, has, priv)
			}
			for _, sql := range []string{`UPDATE audit_log SET actor = 'x'`, `DELETE FROM audit_log`, `TRUNCATE audit_log`} {
				_, err := e.db.Exec(actx, sql)
				require.Equal(t, "42501", pgCode(err), "%s: %v", sql, err)
			}
			// An INSERT that does not continue the chain is refused by the
			// database, whoever sends it.
			_, err = e.db.Exec(actx, `INSERT INTO audit_log (seq, at, actor, action, resource, outcome, details, user_agent, prev_mac, mac)
				VALUES (9, now(), 'a', 'b', '', 'success', '{}', '', '\x00', '\x00')`)
			require.Equal(t, "TN001", pgCode(err), "%v", err)
			_, err = e.db.Exec(actx, `INSERT INTO audit_log (seq, at, actor, action, resource, outcome, details, user_agent, prev_mac, mac)
				VALUES (6, now(), 'a', 'b', '', 'success', '{}', '', '\x00', '\x00')`)
			require.Equal(t, "TN001", pgCode(err), "%v", err)

			// An entry of B's, copied into A's log where it fits the chain
			// (by a superuser), does not verify there: the tenant is in
			// every MAC.
			bc, btable := e.superuser(t, b)
			var row []any
			rows, err := bc.Query(t.Context(), `SELECT at, actor, action, resource, outcome, details, user_agent, mac FROM `+btable+` WHERE seq = 1`)
			require.NoError(t, err)
			require.True(t, rows.Next())
			row, err = rows.Values()
			require.NoError(t, err)
			rows.Close()
			ac, atable := e.superuser(t, a)
			_, err = ac.Exec(t.Context(), `INSERT INTO `+atable+` (tenant_id, seq, at, actor, action, resource, outcome, details, user_agent, prev_mac, mac)
				SELECT $1, 6, $2, $3, $4, $5, $6, $7, $8, (SELECT mac FROM `+atable+` WHERE seq = 5), $9`, append([]any{a.String()}, row...)...)
			require.NoError(t, err)
			_, err = e.log.Verify(actx)
			var ce *audit.ChainError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, int64(6), ce.Seq)
			require.Equal(t, audit.ProblemChanged, ce.Problem)

			// A's key does not verify B's export.
			var bexp bytes.Buffer
			_, err = e.log.Export(bctx, &bexp)
			require.NoError(t, err)
			amac, err := e.km.MAC(actx)
			require.NoError(t, err)
			_, err = audit.VerifyExport(bytes.NewReader(bexp.Bytes()), amac)
			require.ErrorIs(t, err, audit.ErrInvalidConfig)
			_, err = audit.VerifyExport(bytes.NewReader(bexp.Bytes()), hideTenant{amac})
			require.ErrorIs(t, err, audit.ErrTampered)
			bmac, err := e.km.MAC(bctx)
			require.NoError(t, err)
			rep, err := audit.VerifyExport(bytes.NewReader(bexp.Bytes()), bmac)
			require.NoError(t, err)
			require.Equal(t, int64(1), rep.Entries)
			require.Equal(t, 1, rep.Checkpoints)
			require.True(t, strings.HasPrefix(bexp.String(), `{"type":"header","format":"tenancy-audit-export","v":1,"log":"`+b.String()+`"`), bexp.String())
		})
	}
}

// hideTenant is a key that does not say whose it is.
type hideTenant struct{ m *keys.MAC }

func (h hideTenant) VerifyMAC(tag, data []byte) error { return h.m.VerifyMAC(tag, data) }

var _ = tenant.ErrNoTenant

// TestSharedPoolModeKeepsLogsApart runs in store's shared-pool mode, where
// isolation is row-level security on a setting (by convention, see
// package store): a tenant that writes into another's table writes rows
// the other never sees, and they take none of its sequence numbers.
func TestSharedPoolModeKeepsLogsApart(t *testing.T) {
	e := newEnv(t, tenant.TierStandard, sharedPool)
	a, actx := e.newTenant(t, "spa")
	b, bctx := e.newTenant(t, "spb")
	e.appendN(t, bctx, 3, 3)
	var n int64
	require.NoError(t, e.db.QueryRow(actx, `SELECT count(*) FROM `+b.SchemaName()+`.audit_log`).Scan(&n))
	require.Zero(t, n, "A sees none of B's rows")
	_, err := e.db.Exec(actx, `INSERT INTO `+b.SchemaName()+`.audit_log (seq, at, actor, action, resource, outcome, details, user_agent, prev_mac, mac)
		VALUES (1, now(), 'a', 'b', '', 'success', '{}', '', '', '\x00'), (4, now(), 'a', 'b', '', 'success', '{}', '', '', '\x00')`)
	require.Error(t, err, "not consecutive")
	_, err = e.db.Exec(actx, `INSERT INTO `+b.SchemaName()+`.audit_log (seq, at, actor, action, resource, outcome, details, user_agent, prev_mac, mac)
		VALUES (1, now(), 'a', 'b', '', 'success', '{}', '', '', '\x00')`)
	require.NoError(t, err, "a row of A's own, in B's table")
	got := e.appendN(t, bctx, 2, 2)
	require.Equal(t, int64(4), got[0].Seq)
	rep, err := e.log.Verify(bctx)
	require.NoError(t, err)
	require.Equal(t, int64(5), rep.Entries)
	_, err = e.log.Verify(actx)
	require.NoError(t, err, "A's own log is empty")
	_ = a
}
