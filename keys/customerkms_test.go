package keys_test

// A customer-managed master key held in the customer's own AWS KMS, as
// REQ-DEPLOY-004's provisioning request names one (kms_key_arn), served
// by Tink's AWS KMS client against a real AWS KMS API (local-kms on
// loopback, internal/awskmstest).

import (
	"context"
	"strings"
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
	uri := keys.URI(awskmstest.KeyURI(arn))
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
	uri := keys.URI(awskmstest.KeyURI(kms.CreateKey(b)))
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

// A customer key comes from a provisioning request: it may name only a key
// in the customer's KMS, served by Config.CustomerKMS. Each refusal names
// the field and the rule, and writes nothing.
func TestCustomerKeyRefusals(t *testing.T) {
	e := newEnv(t)
	// The platform's keys and the customer's in one AWS account and
	// region, reached by a platform client and a customer client alike: the
	// customer client serves the platform's ARNs, and only the identity
	// check stops them.
	aws := awskmstest.Start(t)
	platformARN := aws.CreateKey(t)
	retiredARN := aws.CreateKey(t)
	customerARN := aws.CreateKey(t)
	m := e.manager(t,
		func(c *keys.Config) {
			c.KMS = []registry.KMSClient{aws.TinkClient(t, ""), e.local}
			c.PlatformKEK = keys.URI(awskmstest.KeyURI(platformARN))
			c.RetiredKEKs = []keys.URI{keys.URI(awskmstest.KeyURI(retiredARN)), e.platform}
		},
		withCustomerKMS(aws.TinkClient(t, "")))

	hostile := map[string]struct {
		uri  keys.URI
		want error
		rule string
	}{
		"local key file":                {e.platform, keys.ErrInvalidArgument, "local key file"},
		"local key file, upper case":    {keys.URI("LOCAL://" + e.platformPath), keys.ErrInvalidArgument, "local key file"},
		"local, no slashes":             {keys.URI("local:" + e.platformPath), keys.ErrInvalidArgument, "local key file"},
		"pkcs11 with module-path":       {"pkcs11:token=t;object=k?module-path=/tmp/evil.so", keys.ErrInvalidArgument, "module-path"},
		"pkcs11 with module-name":       {"pkcs11:token=t;object=k?module-name=evil", keys.ErrInvalidArgument, "module-path"},
		"pkcs11 with pin-source":        {"pkcs11:token=t;object=k?pin-source=file:/etc/shadow", keys.ErrInvalidArgument, "pin-source"},
		"pkcs11, escaped query":         {"pkcs11:token=t;object=k%3Fmodule-path=/tmp/evil.so", keys.ErrInvalidArgument, "query or an escape"},
		"PKCS11 upper case with query":  {"PKCS11:token=t;object=k?module-path=/tmp/evil.so", keys.ErrInvalidArgument, "module-path"},
		"the platform key":              {keys.URI(awskmstest.KeyURI(platformARN)), keys.ErrKEKInUse, "platform master key"},
		"a retired platform key":        {keys.URI(awskmstest.KeyURI(retiredARN)), keys.ErrKEKInUse, "retired"},
		"no customer client serves it":  {"gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k", keys.ErrUnsupportedKEK, "Config.CustomerKMS"},
		"another AWS region":            {keys.URI("aws-kms://arn:aws:kms:eu-west-3:" + aws.AccountID() + ":key/" + customerARN[strings.LastIndex(customerARN, "/")+1:]), keys.ErrUnsupportedKEK, "Config.CustomerKMS"},
		"a platform-only scheme (fake)": {"fake-kms://CM2b3_MDEjEwMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY", keys.ErrUnsupportedKEK, "Config.CustomerKMS"},
	}
	for name, tc := range hostile {
		t.Run(name, func(t *testing.T) {
			id := newID("hostile")
			err := m.Provision(ctxT(t), id, keys.ProvisionOptions{CustomerKEK: tc.uri})
			require.ErrorIs(t, err, tc.want)
			require.ErrorContains(t, err, "ProvisionOptions.CustomerKEK")
			require.ErrorContains(t, err, tc.rule)
			n, tombs := e.rows(t, id)
			require.Zero(t, n+tombs, "a refused Provision writes nothing")
		})
	}

	// The customer's own key is accepted, and two tenants of one customer
	// may share it: shredding one leaves the other readable and the key
	// enabled.
	uri := keys.URI(awskmstest.KeyURI(customerARN))
	one, _ := provision(t, m, "custone", keys.ProvisionOptions{CustomerKEK: uri})
	_, ctxTwo := provision(t, m, "custtwo", keys.ProvisionOptions{CustomerKEK: uri})
	sealed, err := m.Seal(ctxTwo, []byte("two"), field)
	require.NoError(t, err)
	res, err := m.Shred(ctxT(t), one)
	require.NoError(t, err)
	assert.Empty(t, res.DestroyedKEKs)
	assert.Empty(t, res.Tombstone.TenantKEKs, "a customer key is not recorded for destruction")
	assert.Equal(t, awskmstest.StateEnabled, aws.KeyState(t, customerARN))
	keys.PurgeAll(m)
	got, err := m.Open(ctxTwo, sealed, field)
	require.NoError(t, err)
	assert.Equal(t, "two", string(got))
	assert.Equal(t, awskmstest.StateEnabled, aws.KeyState(t, platformARN), "nor is the platform's")
}

// The platform's KMS clients never serve a customer key, even one their
// scheme and credentials could reach: a keyset recorded as the customer's
// is unwrapped through Config.CustomerKMS only.
func TestCustomerKeysAreServedByCustomerKMSOnly(t *testing.T) {
	e := newEnv(t)
	aws := awskmstest.Start(t)
	arn := aws.CreateKey(t)
	both := e.manager(t, withCustomerKMS(aws.TinkClient(t, "")))
	_, ctx := provision(t, both, "custonly", keys.ProvisionOptions{CustomerKEK: keys.URI(awskmstest.KeyURI(arn))})
	sealed, err := both.Seal(ctx, []byte("c"), field)
	require.NoError(t, err)

	platformOnly := e.manager(t, withKMS(aws.TinkClient(t, ""))) // the same AWS account, as the platform's client
	_, err = platformOnly.Open(ctx, sealed, field)
	require.ErrorIs(t, err, keys.ErrUnsupportedKEK)
	require.ErrorContains(t, err, "Config.CustomerKMS")
	err = platformOnly.Provision(ctxT(t), newID("custonly"), keys.ProvisionOptions{CustomerKEK: keys.URI(awskmstest.KeyURI(arn))})
	require.ErrorIs(t, err, keys.ErrUnsupportedKEK)
}
