package keys_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

func requireInvalid(t *testing.T, err error, sentinel error, field string) {
	t.Helper()
	require.ErrorIs(t, err, sentinel)
	require.Contains(t, err.Error(), field, "the error must name the field")
	requireOnePrefix(t, err)
}

// requireOnePrefix checks that err reads "keys: ..." with no second
// "keys: " further down its chain (each chain of an errors.Join, one per
// line, as Rewrap returns).
func requireOnePrefix(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	for _, line := range strings.Split(err.Error(), "\n") {
		require.True(t, strings.HasPrefix(line, "keys: "), "errors are prefixed with the package: %s", line)
		require.Equal(t, 1, strings.Count(line, "keys: "), "one package prefix per error chain: %s", line)
	}
}

// Every kind of error the Manager returns, from its own checks, from a
// master key, from a Store, from Tink, reads "keys: <what failed>: ..."
// once, however deep the chain.
func TestErrorsCarryOnePackagePrefix(t *testing.T) {
	e := newEnv(t)
	flaky := &hookClient{KMSClient: e.local}
	m := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{flaky} })
	mem := e.manager(t, func(c *keys.Config) { c.Store = keys.NewMemStore() })
	id, ctx := provision(t, m, "prefix")
	ct, err := m.Seal(ctx, []byte("x"), field)
	require.NoError(t, err)
	mac, err := m.MAC(ctx)
	require.NoError(t, err)
	stream, err := m.StreamingAEAD(ctx)
	require.NoError(t, err)
	fake, cust := customerKey(t)
	gone, _ := provision(t, m, "prefixgone")
	_, err = m.Shred(ctxT(t), gone)
	require.NoError(t, err)
	newKEK, _ := e.keyURI(t, "prefix-new.key")
	down := func() { flaky.setHook(func(string, int64) error { return errors.New("HSM down") }) }
	up := func() { flaky.setHook(nil) }

	for name, call := range map[string]func() error{
		"Open of a bad ciphertext":       func() error { _, err := m.Open(ctx, append([]byte{}, ct[:len(ct)-1]...), field); return err },
		"VerifyMAC of a bad tag":         func() error { return mac.VerifyMAC([]byte("tag"), []byte("data")) },
		"Provision, customer local file": func() error { return m.Provision(ctxT(t), newID("p"), keys.ProvisionOptions{CustomerKEK: e.platform}) },
		"Provision, exists": func() error {
			return e.manager(t, withCustomerKMS(fake)).Provision(ctxT(t), id, keys.ProvisionOptions{CustomerKEK: cust})
		},
		"Provision, shredded":        func() error { return m.Provision(ctxT(t), gone, keys.ProvisionOptions{}) },
		"Provision, master key down": func() error { down(); defer up(); return m.Provision(ctxT(t), newID("p"), keys.ProvisionOptions{}) },
		"Rotate, master key down":    func() error { down(); defer up(); return m.Rotate(ctxT(t), id, keys.PurposeData) },
		"Rotate, shredded":           func() error { return m.Rotate(ctxT(t), gone, keys.PurposeData) },
		"Seal, shredded":             func() error { _, err := m.Seal(tenant.NewContext(ctxT(t), gone), []byte("x"), field); return err },
		"Open, master key down": func() error {
			down()
			defer up()
			keys.PurgeAll(m)
			_, err := m.Open(ctx, ct, field)
			return err
		},
		"Rewrap, master key down": func() error {
			down()
			defer up()
			_, err := m.Rewrap(ctxT(t), e.platform, newKEK)
			return err
		},
		"Seal, never provisioned (MemStore)": func() error { _, err := mem.Seal(ctx, []byte("x"), field); return err },
		"Provision, MemStore refuses":        func() error { return mem.Provision(ctxT(t), tenant.ID{}, keys.ProvisionOptions{}) },
		"StreamingAEAD not made by the Manager": func() error {
			if _, err := stream.NewEncryptingWriter(io.Discard, nil); err != nil {
				return fmt.Errorf("a Manager's StreamingAEAD failed: %w", err) // would fail the prefix check too, but say so
			}
			_, err := (&keys.StreamingAEAD{}).NewEncryptingWriter(io.Discard, nil)
			return err
		},
		"MAC not made by the Manager": func() error { _, err := (&keys.MAC{}).ComputeMAC([]byte("x")); return err },
		"Shred, zero tenant":          func() error { _, err := m.Shred(ctxT(t), tenant.ID{}); return err },
	} {
		t.Run(name, func(t *testing.T) { requireOnePrefix(t, call()) })
	}
}

func TestNewRejectsBadConfigNamingTheField(t *testing.T) {
	e := newEnv(t)
	for field, adjust := range map[string]func(*keys.Config){
		"Config.Store":           func(c *keys.Config) { c.Store = nil },
		"Config.KMS":             func(c *keys.Config) { c.KMS = nil },
		"Config.CustomerKMS":     func(c *keys.Config) { c.KMS, c.PlatformKEK = nil, "" },
		"Config.CustomerKMS[0]":  func(c *keys.Config) { c.CustomerKMS = []registry.KMSClient{nil} },
		"Config.KMS[1]":          func(c *keys.Config) { c.KMS = append(c.KMS, nil) },
		"Config.CacheMaxAge":     func(c *keys.Config) { c.CacheMaxAge = 0 },
		"Config.CacheMaxUses":    func(c *keys.Config) { c.CacheMaxUses = 0 },
		"Config.CacheMaxEntries": func(c *keys.Config) { c.CacheMaxEntries = -1 },
		"Config.LoadTimeout":     func(c *keys.Config) { c.LoadTimeout = 0 },
		"Config.RefreshInterval": func(c *keys.Config) { c.RefreshInterval = 0 },
	} {
		cfg := keys.DefaultConfig()
		cfg.Store, cfg.KMS, cfg.PlatformKEK = e.store, []registry.KMSClient{e.local}, e.platform
		adjust(&cfg)
		_, err := keys.New(cfg)
		requireInvalid(t, err, keys.ErrInvalidArgument, field)
	}
	cfg := keys.DefaultConfig()
	cfg.Store, cfg.KMS, cfg.PlatformKEK = e.store, []registry.KMSClient{e.local}, "vault://secret/kek"
	_, err := keys.New(cfg)
	requireInvalid(t, err, keys.ErrUnsupportedKEK, "Config.PlatformKEK")
}

func TestInputValidationNamesTheField(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	id, ctx := provision(t, m, "acme")
	bg := ctxT(t)

	requireInvalid(t, m.Provision(bg, tenant.ID{}, keys.ProvisionOptions{}), keys.ErrInvalidArgument, "tenant ID is zero")
	requireInvalid(t, m.Provision(bg, newID("x"), keys.ProvisionOptions{CustomerKEK: "gcp-kms://projects/p/keys/k"}),
		keys.ErrUnsupportedKEK, "ProvisionOptions.CustomerKEK")
	requireInvalid(t, m.Provision(bg, newID("x"), keys.ProvisionOptions{CustomerKEK: "gcp-kms://projects/p/keys/k", TenantKEK: true}),
		keys.ErrInvalidArgument, "ProvisionOptions.CustomerKEK and ProvisionOptions.TenantKEK are both set")
	requireInvalid(t, m.Provision(bg, newID("x"), keys.ProvisionOptions{TenantKEK: true}), keys.ErrInvalidArgument, "Config.TenantKEKs is nil")
	noPlatform := e.manager(t, func(c *keys.Config) { c.PlatformKEK = "" })
	requireInvalid(t, noPlatform.Provision(bg, newID("x"), keys.ProvisionOptions{}), keys.ErrInvalidArgument, "Config.PlatformKEK is empty")

	requireInvalid(t, m.Rotate(bg, tenant.ID{}, keys.PurposeData), keys.ErrInvalidArgument, "tenant ID is zero")
	for _, p := range []keys.Purpose{"", "Data", "backup", "data "} {
		requireInvalid(t, m.Rotate(bg, id, p), keys.ErrInvalidArgument, "purpose")
		_, err := keys.ParsePurpose(string(p))
		require.ErrorIs(t, err, keys.ErrInvalidArgument)
	}
	for _, p := range keys.Purposes() {
		got, err := keys.ParsePurpose(string(p))
		require.NoError(t, err)
		require.Equal(t, p, got)
	}

	for field, b := range map[string]keys.Binding{
		"Binding.Table":  {Column: "c", RowKey: "r"},
		"Binding.Column": {Table: "t", RowKey: "r"},
		"Binding.RowKey": {Table: "t", Column: "c"},
	} {
		_, err := m.Seal(ctx, []byte("x"), b)
		requireInvalid(t, err, keys.ErrInvalidArgument, field)
		_, err = m.Open(ctx, []byte("x"), b)
		requireInvalid(t, err, keys.ErrInvalidArgument, field)
	}
	_, err := m.Seal(ctx, []byte("x"), keys.Binding{Table: "t", Column: "c", RowKey: strings.Repeat("r", keys.MaxBindingField+1)})
	requireInvalid(t, err, keys.ErrInvalidArgument, "Binding.RowKey")

	_, err = m.Rewrap(bg, "", e.platform)
	requireInvalid(t, err, keys.ErrInvalidArgument, "from")
	_, err = m.Rewrap(bg, e.platform, "")
	requireInvalid(t, err, keys.ErrInvalidArgument, "to")
	_, err = m.Rewrap(bg, e.platform, e.platform)
	requireInvalid(t, err, keys.ErrInvalidArgument, "same master key")
	_, err = m.Rewrap(bg, "ftp://kek", e.platform)
	requireInvalid(t, err, keys.ErrUnsupportedKEK, "from")

	_, err = m.Shred(bg, tenant.ID{})
	requireInvalid(t, err, keys.ErrInvalidArgument, "tenant ID is zero")
}

func TestURIsPrintRedacted(t *testing.T) {
	for in, want := range map[string]string{
		"local:///var/lib/kek":                          "local:///var/lib/kek",
		"aws-kms://arn:aws:kms:us-east-1:1:key/abc":     "aws-kms://arn:aws:kms:us-east-1:1:key/abc",
		"pkcs11:token=t;object=k?pin-value=1234":        "pkcs11:token=t;object=k?pin-value=REDACTED",
		"pkcs11:token=t;pin-value=1234;object=k":        "pkcs11:token=t;pin-value=REDACTED;object=k",
		"pkcs11:token=t?module-path=/m&PIN-VALUE=s&x=1": "pkcs11:token=t?module-path=/m&PIN-VALUE=REDACTED&x=1",
		// Lowering Ⱥ makes it longer: offsets must stay those of the URI.
		"pkcs11:token=ȺȺȺȺȺȺȺȺ?pin-value=SECRETPIN": "pkcs11:token=ȺȺȺȺȺȺȺȺ?pin-value=REDACTED",
		"pkcs11:token=ﬀ?Pin-Value=SECRETPIN&x=1":    "pkcs11:token=ﬀ?Pin-Value=REDACTED&x=1",
	} {
		require.Equal(t, want, keys.URI(in).String())
		require.Equal(t, want, fmt.Sprint(keys.URI(in)))
	}
	fake := "fake-kms://CM2b3_MDEjEwMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY"
	got := keys.URI(fake).String()
	require.True(t, strings.HasPrefix(got, "fake-kms://redacted-"), got)
	require.NotContains(t, got, fake[len("fake-kms://"):])
}
