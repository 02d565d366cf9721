package keys_test

// A customer-managed master key held in the customer's own AWS KMS, as
// REQ-DEPLOY-004's provisioning request names one (kms_key_arn), served
// by Tink's AWS KMS client against a real AWS KMS API (local-kms on
// loopback, internal/awskmstest).

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/internal/awskmstest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestCustomerKeyInAWSKMS(t *testing.T) {
	e := newEnv(t)
	customer := awskmstest.StartWith(t, awskmstest.Options{Region: "eu-west-1", AccountID: "444455556666"})
	arn := customer.CreateKey(t)
	uri := awskmstest.KeyURI(arn)
	const maxAge = 300 * time.Millisecond
	m := e.manager(t, withCustomerKMS(customer.TinkClient(t, "")), withMaxAge(maxAge))

	idC, ctxC := provision(t, m, "byok", keys.ProvisionOptions{CustomerKEK: uri})
	_, ctxP := provision(t, m, "plat")
	for p, k := range e.kekOf(t, idC) {
		assert.Equal(t, uri, k, "%s keyset of the customer's tenant is wrapped by its key", p)
	}
	where := keys.Binding{Table: "integrations", Column: "secret", RowKey: "github"}
	sealedC, err := m.Seal(ctxC, []byte("customer's secret"), where)
	require.NoError(t, err)
	sealedP, err := m.Seal(ctxP, []byte("platform tenant's secret"), where)
	require.NoError(t, err)

	// The customer disables its key: once the cached keyset has aged out,
	// every read of that tenant fails, naming the customer's key; the
	// platform's tenant is served as ever.
	customer.DisableKey(t, arn)
	require.Eventually(t, func() bool {
		_, err := m.Open(ctxC, sealedC, where)
		return err != nil
	}, 10*maxAge+5*time.Second, maxAge/4, "reads fail after the cache period")
	_, err = m.Open(ctxC, sealedC, where)
	require.ErrorIs(t, err, keys.ErrUnwrap)
	assert.Contains(t, err.Error(), arn, "the error names the customer's key: %v", err)
	assert.Contains(t, err.Error(), "disabled", "and says why: %v", err)
	got, err := m.Open(ctxP, sealedP, where)
	require.NoError(t, err, "another tenant is unaffected")
	assert.Equal(t, "platform tenant's secret", string(got))

	// Enabled again: readable again.
	customer.EnableKey(t, arn)
	require.Eventually(t, func() bool {
		got, err := m.Open(ctxC, sealedC, where)
		return err == nil && string(got) == "customer's secret"
	}, 10*maxAge+5*time.Second, maxAge/4, "readable again once the key is enabled")

	// Shredding the tenant deletes its keysets and never touches the
	// customer's key: it still exists, enabled, in the customer's KMS.
	_, err = m.Shred(ctxT(t), idC)
	require.NoError(t, err)
	_, err = m.Open(ctxC, sealedC, where)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
	assert.Equal(t, awskmstest.StateEnabled, customer.KeyState(t, arn), "the customer's key is the customer's")
}

// BenchmarkColdUnwrapAWSKMS is BenchmarkColdUnwrapLocalKMS with the
// tenant's keysets wrapped by a customer key in an AWS KMS (local-kms on
// loopback, through Tink's AWS client and the AWS SDK over HTTP): a cache
// miss costs one KMS Decrypt round trip. On a MemStore, so that the
// figure is the master key's.
func BenchmarkColdUnwrapAWSKMS(b *testing.B) {
	kms := awskmstest.Start(b)
	uri := awskmstest.KeyURI(kms.CreateKey(b))
	cfg := keys.DefaultConfig()
	cfg.Store, cfg.CustomerKMS = keys.NewMemStore(), []registry.KMSClient{kms.TinkClient(b, "")}
	cfg.CacheMaxUses = 1 << 62
	m, err := keys.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	id := newID("benchaws")
	if err := m.Provision(context.Background(), id, keys.ProvisionOptions{CustomerKEK: uri}); err != nil {
		b.Fatal(err)
	}
	benchColdSeal(b, m, tenant.NewContext(context.Background(), id), id)
}
