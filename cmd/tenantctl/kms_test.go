package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/awskmstest"
)

// TestAWSKMS against a real AWS KMS API (local-kms): a customer-managed
// (BYOK) request wraps the tenant's keysets with the customer's key, which
// the customer disabling makes unreadable and deprovisioning leaves
// enabled; and the platform's master key moves from a local file to an
// aws-kms:// key (keys rewrap across schemes, kms.endpoint overriding the
// endpoint), after which provisioning runs on it.
func TestAWSKMS(t *testing.T) {
	kms := awskmstest.Start(t)
	// The default AWS credential chain; local-kms accepts any credentials.
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	d := newDev(t)
	d.env["TENANTCTL_CUSTOMER_KMS_REGION"] = kms.Region()
	d.env["TENANTCTL_CUSTOMER_KMS_ENDPOINT"] = kms.Endpoint()
	d.env["TENANTCTL_KMS_REGION"] = kms.Region()
	d.env["TENANTCTL_KMS_ENDPOINT"] = kms.Endpoint()

	customer := kms.CreateKey(t)
	req := strings.Replace(standardRequest("byok1"), "encryption: platform-managed", "encryption: customer-managed\n    kms_key_arn: \""+customer+"\"", 1)
	r := d.runIn(req, "provision", "-f", "-")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Equal(t, 3, strings.Count(d.snapshot()["table tenant_keysets"], "aws-kms://"+customer), "the tenant's keysets are wrapped by the customer's key")
	require.Equal(t, 0, d.run("audit", "verify", "byok1").code)

	kms.DisableKey(t, customer)
	r = d.run("audit", "verify", "byok1")
	assert.Equal(t, exitFailure, r.code, "the customer revoked its key: %s", r)
	kms.EnableKey(t, customer)
	require.Equal(t, 0, d.run("audit", "verify", "byok1").code)

	// The platform's master key moves to AWS KMS.
	platformKey := "aws-kms://" + kms.CreateKey(t)
	local := "local://" + d.opts.dir + "/master.key"
	type rewrapJSON struct {
		Rewrapped int `json:"rewrapped"`
		Failed    int `json:"failed"`
	}
	rw := jsonOut[rewrapJSON](t, d.run("keys", "rewrap", "--from", local, "--to", platformKey, "--output", "json"))
	assert.Equal(t, rewrapJSON{Rewrapped: 6}, rw, "the platform audit key's and the backup key's keysets")
	d.env["TENANTCTL_MASTER_KEY"] = platformKey
	require.Equal(t, 0, d.run("audit", "verify", "--platform").code)
	r = d.runIn(standardRequest("onaws"), "provision", "-f", "-")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Equal(t, 9, strings.Count(d.snapshot()["table tenant_keysets"], platformKey), "the new tenant's three and the platform's six")

	r = d.run("deprovision", "byok1")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Equal(t, "Enabled", kms.KeyState(t, customer), "the platform never destroys a customer's key")
	require.Equal(t, 0, d.run("deprovision", "onaws").code)
}
