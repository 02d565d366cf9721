package lifecycle_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/awskmstest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/lifecycle"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestEncryptionSettingsChooseTheMasterKey provisions and deprovisions a
// tenant with each settings.encryption: platform-managed keysets open
// with the platform key; dedicated ones with a key made for the tenant,
// destroyed by deprovisioning; customer-managed ones with the customer's
// key in a real AWS KMS API (local-kms), which deprovisioning leaves
// alone (only the customer may destroy it) while the tenant's keysets
// are shredded.
func TestEncryptionSettingsChooseTheMasterKey(t *testing.T) {
	customer := awskmstest.StartWith(t, awskmstest.Options{Region: "eu-west-1", AccountID: "111122223333"})
	arn := customer.CreateKey(t)
	e := newEnv(t)
	// Provision through a manager that serves the customer's KMS too.
	e.prov = newManager(t, e.kekPath, e.admin.Keysets(), customer.TinkClient(t, ""))
	for i, s := range e.steps {
		if _, ok := s.(*lifecycle.KeysStep); ok {
			e.steps[i] = &lifecycle.KeysStep{Keys: e.prov, Store: e.admin.Keysets()}
		}
	}
	var err error
	e.lc, err = lifecycle.New(t.Context(), lifecycle.Config{Admin: e.admin, Steps: e.steps, Audit: e.platform})
	require.NoError(t, err)

	for _, tc := range []struct {
		encryption, arn string
		kind            keys.KEKKind
	}{
		{"platform-managed", omit, keys.KEKPlatform},
		{"dedicated", omit, keys.KEKTenant},
		{"customer-managed", `"` + arn + `"`, keys.KEKCustomer},
	} {
		t.Run(tc.encryption, func(t *testing.T) {
			id := "enc" + tenantSuffix()
			req, err := parse(t, doc(t, "id", `"`+id+`"`, "tier", `"standard"`, "region", `"eu-west-1"`, "encryption", `"`+tc.encryption+`"`, "kms_key_arn", tc.arn))
			require.NoError(t, err)
			_, err = e.lc.Provision(t.Context(), req)
			require.NoError(t, err)
			for _, p := range keys.Purposes() {
				ws, err := e.admin.Keysets().Get(t.Context(), req.ID, p)
				require.NoError(t, err)
				assert.Equal(t, tc.kind, ws.KEKKind, "keyset %s", p)
				if tc.kind == keys.KEKCustomer {
					assert.Equal(t, keys.URI("aws-kms://"+arn), ws.KEKURI)
				}
			}
			ctx := tenant.NewContext(t.Context(), req.ID)
			b := keys.Binding{Table: "requirements", Column: "sealed", RowKey: "1"}
			sealed, err := e.prov.Seal(ctx, []byte("x"), b)
			require.NoError(t, err)
			_, err = e.prov.Open(ctx, sealed, b)
			require.NoError(t, err)
			before := dirNames(t, tenantKEKDir(e.kekPath))

			_, err = e.lc.Deprovision(t.Context(), req.ID)
			require.NoError(t, err)
			for _, p := range keys.Purposes() {
				_, err := e.admin.Keysets().Get(t.Context(), req.ID, p)
				assert.ErrorIs(t, err, keys.ErrKeyDestroyed)
			}
			after := dirNames(t, tenantKEKDir(e.kekPath))
			switch tc.kind {
			case keys.KEKTenant:
				assert.Less(t, len(after), len(before), "the tenant's own master key is destroyed")
			case keys.KEKCustomer:
				assert.Equal(t, "Enabled", customer.KeyState(t, arn), "the customer's key is the customer's to destroy")
			}
		})
	}
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// TestCustomerKeyOfAnotherAccountIsRefused: with KeysStep.CustomerKey
// checking the ARN's account against the customer's, a request naming a
// key of another account is refused before anything is made.
func TestCustomerKeyOfAnotherAccountIsRefused(t *testing.T) {
	e := newEnv(t)
	accounts := map[string]string{} // tenant -> its customer's AWS account
	for i, s := range e.steps {
		if ks, ok := s.(*lifecycle.KeysStep); ok {
			ks.CustomerKey = func(_ context.Context, id tenant.ID, arn string) error {
				if parts := strings.Split(arn, ":"); len(parts) < 5 || parts[4] != accounts[id.String()] {
					return errors.New("the key's account is not the customer's")
				}
				return nil
			}
			e.steps[i] = ks
		}
	}
	lc, err := lifecycle.New(t.Context(), lifecycle.Config{Admin: e.admin, Steps: e.steps})
	require.NoError(t, err)
	id := "byok" + tenantSuffix()
	accounts[id] = "444455556666"
	arn := "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	req, err := parse(t, doc(t, "id", `"`+id+`"`, "region", `"eu-west-1"`, "kms_key_arn", `"`+arn+`"`))
	require.NoError(t, err)
	_, err = lc.Provision(t.Context(), req)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "settings.kms_key_arn: the tenant may not use this key: the key's account is not the customer's")
	_, err = e.admin.Tenant(t.Context(), req.ID)
	assert.ErrorIs(t, err, lifecycle.ErrUnknownTenant, "nothing made")
}
