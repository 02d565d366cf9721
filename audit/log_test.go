package audit_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestAppendVerifyExport writes entries on every placement (and in
// store's shared-pool mode), reads them back through Verify and an
// export, and verifies the export offline; every call of a Log or a
// Writer for a tenant fails without one in the context.
func TestAppendVerifyExport(t *testing.T) {
	for _, tier := range append(tiers, "shared-pool") {
		t.Run(string(tier), func(t *testing.T) {
			var opts []envOption
			if tier == "shared-pool" {
				tier, opts = tenant.TierStandard, []envOption{sharedPool}
			}
			e := newEnv(t, tier, opts...)
			id, ctx := e.newTenant(t, "app")
			got := e.appendN(t, ctx, 25, 10)
			for i, en := range got {
				require.Equal(t, int64(i+1), en.Seq)
				require.Equal(t, id.String(), en.Log)
				if i > 0 {
					require.Equal(t, got[i-1].MAC, en.PrevMAC)
				}
			}
			require.Empty(t, got[0].PrevMAC)
			_, err := e.log.Append(ctx, audit.Event{Actor: "bob", Action: "login", Outcome: audit.OutcomeDenied,
				SourceIP: netip.MustParseAddr("2001:db8::1"), Details: map[string]any{"reason": "bad password", "n": 1e21, "s": "é\u2028\x01"}})
			require.NoError(t, err)
			rep, err := e.log.Verify(ctx)
			require.NoError(t, err)
			require.Equal(t, int64(26), rep.Entries)
			require.Equal(t, int64(26), rep.HeadSeq)

			var buf bytes.Buffer
			n, err := e.log.Export(ctx, &buf)
			require.NoError(t, err)
			require.Equal(t, int64(26), n)
			mac, err := e.km.MAC(ctx)
			require.NoError(t, err)
			rep2, err := audit.VerifyExport(bytes.NewReader(buf.Bytes()), mac)
			require.NoError(t, err, buf.String())
			require.Equal(t, rep.HeadMAC, rep2.HeadMAC)

			_, err = e.log.Append(t.Context(), audit.Event{Actor: "a", Action: "b", Outcome: audit.OutcomeSuccess})
			require.True(t, errors.Is(err, tenant.ErrNoTenant), "%v", err)
			// Every tenant-scoped call fails without a tenant: no default.
			_, err = e.log.Verify(t.Context())
			require.ErrorIs(t, err, tenant.ErrNoTenant)
			_, err = e.log.Export(t.Context(), &buf)
			require.ErrorIs(t, err, tenant.ErrNoTenant)
			_, err = e.log.Checkpoint(t.Context())
			require.ErrorIs(t, err, tenant.ErrNoTenant)
			_, err = e.log.Checkpoints(t.Context())
			require.ErrorIs(t, err, tenant.ErrNoTenant)
			w, err := e.log.NewWriter(audit.DefaultWriterConfig())
			require.NoError(t, err)
			_, err = w.Append(t.Context(), audit.Event{Actor: "a", Action: "b", Outcome: audit.OutcomeSuccess})
			require.ErrorIs(t, err, tenant.ErrNoTenant)
			require.NoError(t, w.Close(t.Context()))
		})
	}
}
