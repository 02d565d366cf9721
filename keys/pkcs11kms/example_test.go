package pkcs11kms_test

import (
	"bytes"
	"context"
	"log"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/rtmx-ai/tenancy/keys/pkcs11kms"
)

// Wrap a tenant keyset with a master key held in an HSM. The PIN is read
// from the environment variable the URI names; it never appears in the URI.
// (Not run: it needs a configured token.)
func Example() {
	const kek = "pkcs11:token=tenancy;object=master-kek" +
		"?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:TENANCY_HSM_PIN"

	client, err := pkcs11kms.NewClient("pkcs11:token=tenancy;",
		pkcs11kms.WithModulePaths("/usr/lib/softhsm/libsofthsm2.so"))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	// Once, at installation:
	if err := client.GenerateKey(context.Background(), kek); err != nil {
		log.Fatal(err)
	}

	master, err := client.GetAEAD(kek)
	if err != nil {
		log.Fatal(err)
	}
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		log.Fatal(err)
	}
	var wrapped bytes.Buffer
	ad := []byte("tenant=acme;purpose=data")
	if err := h.WriteWithAssociatedData(keyset.NewBinaryWriter(&wrapped), master, ad); err != nil {
		log.Fatal(err)
	}
	// Store wrapped.Bytes() in the control plane; later:
	if _, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(&wrapped), master, ad); err != nil {
		log.Fatal(err)
	}
}

// A master key per tenant, made and destroyed in the platform's token by a
// KeyMaker. keys.Manager does this itself when given the KeyMaker
// (Config.TenantKEKs); the calls are shown here alone. (Not run: it needs a
// configured token.)
func ExampleNewKeyMaker() {
	const module = "/usr/lib/softhsm/libsofthsm2.so"
	client, err := pkcs11kms.NewClient("pkcs11:token=gov;", pkcs11kms.WithModulePaths(module))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	maker, err := pkcs11kms.NewKeyMaker(client,
		"pkcs11:token=gov?module-path="+module+"&pin-source=file:/run/tenancy/hsm-pin")
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	// When the tenant is provisioned: a new key, and the URI that names it
	// alone, which the caller stores with the tenant's keysets.
	kek, err := maker.CreateKey(ctx, "tenancy-tenant-acme")
	if err != nil {
		log.Fatal(err)
	}
	// The key wraps acme's keysets, as in Example.
	if _, err := client.GetAEAD(kek); err != nil {
		log.Fatal(err)
	}
	// A URI read back from the store: is it one this maker made for acme?
	if !maker.Owns(kek, "tenancy-tenant-acme") {
		log.Fatal("not acme's key")
	}
	// When the tenant is crypto-shredded: every key labelled for acme,
	// including any a Provision interrupted and resumed left unused
	// (nothing wrapped under them opens again).
	if err := maker.DestroyKeys(ctx, "tenancy-tenant-acme"); err != nil {
		log.Fatal(err)
	}
}
