//go:build cgo

package faults_test

import (
	"context"
	"testing"

	"github.com/rtmx-ai/tenancy/internal/softhsmtest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/pkcs11kms"
)

// TestMasterKeyUnavailableUnderLoadHSMTokenRemoved is
// TestMasterKeyUnavailableUnderLoad with the platform master key in a
// SoftHSM2 token, removed under the load. A removed token does not come
// back: the key is gone with it.
func TestMasterKeyUnavailableUnderLoadHSMTokenRemoved(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	c, err := pkcs11kms.NewClient("pkcs11:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	uri := tok.URI("platform-kek")
	if err := c.GenerateKey(context.Background(), uri); err != nil {
		t.Fatal(err)
	}
	canon, err := c.CanonicalKeyURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	runMasterKeyFault(t, keyFault{
		kms: c, uri: keys.URI(uri), name: canon,
		cut: func() {
			if err := tok.Delete(); err != nil {
				t.Fatal(err)
			}
		},
	})
}
