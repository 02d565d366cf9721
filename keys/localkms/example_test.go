package localkms_test

import (
	"fmt"
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
