package lifecycle_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/internal/awskmstest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestKeyOptionsProvisionWithKeys takes the ARN of a key created in a real
// AWS KMS API (local-kms on loopback), puts it in a provisioning request,
// and provisions the tenant's keysets with the request's KeyOptions: the
// ARN passes ParseRequest, and the URI KeyOptions makes is one keys
// accepts as a customer key and serves from Config.CustomerKMS. A
// platform-managed request provisions with the platform key.
func TestKeyOptionsProvisionWithKeys(t *testing.T) {
	customer := awskmstest.StartWith(t, awskmstest.Options{Region: "eu-west-1", AccountID: "444455556666"})
	arn := customer.CreateKey(t)

	platformKEK, err := localkms.KeyURI(filepath.Join(t.TempDir(), "master.key"))
	require.NoError(t, err)
	local, err := localkms.NewClient(localkms.Scheme)
	require.NoError(t, err)
	cfg := keys.DefaultConfig()
	cfg.Store = keys.NewMemStore()
	cfg.KMS = []registry.KMSClient{local}
	cfg.CustomerKMS = []registry.KMSClient{customer.TinkClient(t, "")}
	cfg.PlatformKEK = keys.URI(platformKEK)
	m, err := keys.New(cfg)
	require.NoError(t, err)

	for _, tc := range []struct {
		id, doc string
	}{
		{"byok", doc(t, "id", "byok", "region", "eu-west-1", "kms_key_arn", `"`+arn+`"`)},
		{"plat", doc(t, "id", "plat", "encryption", "platform-managed", "kms_key_arn", omit)},
	} {
		t.Run(tc.id, func(t *testing.T) {
			req, err := parse(t, tc.doc)
			require.NoError(t, err)
			require.NoError(t, m.Provision(t.Context(), req.ID, req.Settings.KeyOptions()))

			ctx := tenant.NewContext(t.Context(), req.ID)
			where := keys.Binding{Table: "integrations", Column: "secret", RowKey: "1"}
			sealed, err := m.Seal(ctx, []byte("secret of "+tc.id), where)
			require.NoError(t, err)
			got, err := m.Open(ctx, sealed, where)
			require.NoError(t, err)
			require.Equal(t, "secret of "+tc.id, string(got))
		})
	}

	// The customer disables its key: the BYOK tenant's keysets no longer
	// open once uncached, proving they were wrapped by the request's key.
	customer.DisableKey(t, arn)
	m2, err := keys.New(cfg) // a fresh cache
	require.NoError(t, err)
	where := keys.Binding{Table: "integrations", Column: "secret", RowKey: "1"}
	_, err = m2.Seal(tenant.NewContext(t.Context(), tenant.MustParseID("byok")), []byte("x"), where)
	require.ErrorIs(t, err, keys.ErrUnwrap)
	_, err = m2.Seal(tenant.NewContext(t.Context(), tenant.MustParseID("plat")), []byte("x"), where)
	require.NoError(t, err, "the platform-managed tenant does not use the customer's key")
}
