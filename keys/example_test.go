package keys_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Per-tenant field encryption with a development master key in a temporary
// directory. Production uses store.Keysets (PostgreSQL) as the Store and an
// HSM or cloud KMS as the master key.
func Example() {
	dir, _ := os.MkdirTemp("", "keys-example-")
	defer os.RemoveAll(dir)
	kek, _ := localkms.KeyURI(filepath.Join(dir, "master.key"))
	local, _ := localkms.NewClient(localkms.Scheme)

	cfg := keys.DefaultConfig()
	cfg.Store = keys.NewMemStore() // store.NewKeysets(pool) in a real service
	cfg.KMS = []registry.KMSClient{local}
	cfg.PlatformKEK = keys.URI(kek)
	m, err := keys.New(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}

	ctx := context.Background()
	acme, globex := tenant.MustParseID("acme"), tenant.MustParseID("globex")
	for _, id := range []tenant.ID{acme, globex} {
		if err := m.Provision(ctx, id, keys.ProvisionOptions{}); err != nil {
			fmt.Println(err)
			return
		}
	}

	where := keys.Binding{Table: "integrations", Column: "github_token", RowKey: "1"}
	acmeCtx := tenant.NewContext(ctx, acme)
	sealed, _ := m.Seal(acmeCtx, []byte("ghp_example"), where)

	plain, err := m.Open(acmeCtx, sealed, where)
	fmt.Printf("acme opens: %s %v\n", plain, err)

	_, err = m.Open(tenant.NewContext(ctx, globex), sealed, where)
	fmt.Println("globex opens:", err)

	_, err = m.Open(acmeCtx, sealed, keys.Binding{Table: "integrations", Column: "github_token", RowKey: "2"})
	fmt.Println("another row:", err)

	_, _ = m.Shred(ctx, acme)
	_, err = m.Open(acmeCtx, sealed, where)
	fmt.Println("after shred:", errors.Is(err, keys.ErrKeyDestroyed))
	// Output:
	// acme opens: ghp_example <nil>
	// globex opens: keys: Open: decryption failed
	// another row: keys: Open: decryption failed
	// after shred: true
}
