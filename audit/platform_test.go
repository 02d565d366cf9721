package audit_test

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

var platformKeySeq atomic.Int64

// TestPlatformTrail records platform operations in the control plane under
// the platform's own key: the record of a tenant's deprovisioning still
// verifies, online and offline, after the tenant's keys are shredded; a
// superuser's edit is found; a tenant's ID is refused as the key's.
func TestPlatformTrail(t *testing.T) {
	e := newEnv(t, "standard")
	cp := e.controlPlane(t)
	// The trail is the database's, shared by every run of this test: start
	// it again under this run's key.
	tx, err := cp.Begin(t.Context())
	require.NoError(t, err)
	_, err = tx.Exec(t.Context(), `SET LOCAL session_replication_role = replica`)
	require.NoError(t, err)
	_, err = tx.Exec(t.Context(), `TRUNCATE tenancy.platform_audit`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(t.Context()))
	keyID := tenant.MustParseID(fmt.Sprintf("platformkey%d", platformKeySeq.Add(1)))
	require.NoError(t, e.prov.Provision(t.Context(), keyID, keys.ProvisionOptions{}))
	p, err := audit.NewPlatform(t.Context(), audit.PlatformConfig{Admin: e.admin, Keys: e.prov, KeyID: keyID})
	require.NoError(t, err)

	id, _ := e.newTenant(t, "plat")
	_, err = p.Append(t.Context(), audit.Event{Actor: "provisioner", Action: "tenant.provision", Resource: "tenant/" + id.String(), Outcome: audit.OutcomeSuccess,
		Details: map[string]any{"tier": "standard"}})
	require.NoError(t, err)
	_, err = e.prov.Shred(t.Context(), id)
	require.NoError(t, err)
	require.NoError(t, e.admin.DropTenant(t.Context(), id))
	got, err := p.Append(t.Context(), audit.Event{Actor: "provisioner", Action: "tenant.deprovision", Resource: "tenant/" + id.String(), Outcome: audit.OutcomeSuccess})
	require.NoError(t, err)
	require.Equal(t, audit.PlatformLog, got[0].Log)

	rep, err := p.Verify(t.Context())
	require.NoError(t, err)
	require.Equal(t, int64(2), rep.Entries)
	var buf bytes.Buffer
	_, err = p.Export(t.Context(), &buf)
	require.NoError(t, err)
	mac, err := e.prov.MAC(tenant.NewContext(t.Context(), keyID))
	require.NoError(t, err)
	rep2, err := audit.VerifyExport(bytes.NewReader(buf.Bytes()), mac)
	require.NoError(t, err)
	require.Equal(t, rep.HeadMAC, rep2.HeadMAC)

	_, err = cp.Exec(t.Context(), `UPDATE tenancy.platform_audit SET outcome = 'failure' WHERE seq = $1`, got[0].Seq)
	require.Equal(t, "42501", pgCode(err), "the trigger refuses: %v", err)
	tx, err = cp.Begin(t.Context())
	require.NoError(t, err)
	_, err = tx.Exec(t.Context(), `SET LOCAL session_replication_role = replica`)
	require.NoError(t, err)
	_, err = tx.Exec(t.Context(), `UPDATE tenancy.platform_audit SET outcome = 'failure' WHERE seq = $1`, got[0].Seq)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(t.Context()))
	_, err = p.Verify(t.Context())
	var ce *audit.ChainError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, got[0].Seq, ce.Seq)
	require.Equal(t, audit.PlatformLog, ce.Log)

	other, _ := e.newTenant(t, "plat")
	_, err = audit.NewPlatform(t.Context(), audit.PlatformConfig{Admin: e.admin, Keys: e.prov, KeyID: other})
	require.ErrorIs(t, err, audit.ErrInvalidConfig)
}
