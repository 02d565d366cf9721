package localkms_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/rtmx-ai/tenancy/keys/localkms"
)

// A local master key for development: the key file is created on first use.
func Example() {
	dir, _ := os.MkdirTemp("", "localkms-example-")
	defer os.RemoveAll(dir)

	client, _ := localkms.NewClient(localkms.Scheme)
	uri, _ := localkms.KeyURI(filepath.Join(dir, "master.key"))
	kek, _ := client.GetAEAD(uri)

	wrapped, _ := kek.Encrypt([]byte("a tenant keyset"), []byte("associated data"))
	plain, err := kek.Decrypt(wrapped, []byte("associated data"))
	fmt.Println(string(plain), err)

	fi, _ := os.Stat(filepath.Join(dir, "master.key"))
	fmt.Println(fi.Mode().Perm())
	// Output:
	// a tenant keyset <nil>
	// -rw-------
}

// A master key per tenant: the platform chooses the label, creates a key
// when it provisions the tenant and destroys the label's keys to
// crypto-shred the tenant.
func ExampleKeyMaker() {
	dir, _ := os.MkdirTemp("", "localkms-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	client, _ := localkms.NewClient(localkms.Scheme)
	maker, err := localkms.NewKeyMaker(client, filepath.Join(dir, "tenant-keys"))
	if err != nil {
		fmt.Println(err)
		return
	}
	uri, err := maker.CreateKey(ctx, "tenancy-tenant-acme")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(maker.Owns(uri, "tenancy-tenant-acme"), maker.Owns(uri, "tenancy-tenant-beta"))

	// Again (a provisioning resumed after a crash): another key.
	unused, _ := maker.CreateKey(ctx, "tenancy-tenant-acme")
	fmt.Println(unused != uri)

	kek, _ := client.GetAEAD(uri)
	wrapped, _ := kek.Encrypt([]byte("acme's keyset"), []byte("associated data"))

	if err := maker.DestroyKeys(ctx, "tenancy-tenant-acme"); err != nil { // both keys
		fmt.Println(err)
		return
	}
	_, err = kek.Decrypt(wrapped, []byte("associated data"))
	fmt.Println(errors.Is(err, fs.ErrNotExist))

	_, err = maker.CreateKey(ctx, "Acme")
	fmt.Println(errors.Is(err, localkms.ErrInvalidURI))
	// Output:
	// true false
	// true
	// true
	// true
}
