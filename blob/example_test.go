package blob_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Each tenant's objects, encrypted with its own keys, in one bucket. A
// development master key in a temporary directory; production uses an HSM
// or a cloud KMS, store.Keysets as the keys Store, and an s3://, gs:// or
// azblob:// URL.
func Example() {
	dir, _ := os.MkdirTemp("", "blob-example-")
	defer os.RemoveAll(dir)
	kek, _ := localkms.KeyURI(filepath.Join(dir, "master.key"))
	local, _ := localkms.NewClient(localkms.Scheme)
	kc := keys.DefaultConfig()
	kc.Store, kc.KMS, kc.PlatformKEK = keys.NewMemStore(), []registry.KMSClient{local}, keys.URI(kek)
	km, _ := keys.New(kc)

	ctx := context.Background()
	acme, globex := tenant.MustParseID("acme"), tenant.MustParseID("globex")
	for _, id := range []tenant.ID{acme, globex} {
		_ = km.Provision(ctx, id, keys.ProvisionOptions{})
	}

	buckets, err := blob.Open(ctx, "mem://", km)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer buckets.Close()

	acmeCtx := tenant.NewContext(ctx, acme)
	bucket, _ := buckets.For(acmeCtx) // the view of acme's objects
	defer bucket.Close()
	_ = bucket.WriteAll(acmeCtx, "specs/REQ-1.md", []byte("isolate tenants"), nil)
	data, _ := bucket.ReadAll(acmeCtx, "specs/REQ-1.md")
	attrs, _ := bucket.Attributes(acmeCtx, "specs/REQ-1.md")
	fmt.Printf("acme reads %q (%d bytes), stored under %s\n", data, attrs.Size, blob.TenantPrefix(acme))

	err = bucket.WriteAll(acmeCtx, "../globex/specs/REQ-1.md", []byte("x"), nil)
	fmt.Println("traversal refused:", errors.Is(err, blob.ErrInvalidKey))

	globexCtx := tenant.NewContext(ctx, globex)
	other, _ := buckets.For(globexCtx)
	defer other.Close()
	ok, _ := other.Exists(globexCtx, "specs/REQ-1.md")
	fmt.Println("globex sees it:", ok)

	_, err = buckets.For(ctx)
	fmt.Println("no tenant:", errors.Is(err, tenant.ErrNoTenant))
	// Output:
	// acme reads "isolate tenants" (15 bytes), stored under tenants/acme/
	// traversal refused: true
	// globex sees it: false
	// no tenant: true
}
