package pkcs11kms_test

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"testing"

	"github.com/rtmx-ai/tenancy/internal/softhsmtest"
)

// benchSizes: a wrapped DEK or small keyset (32 B) and a larger keyset (1 KiB).
var benchSizes = []struct {
	name string
	n    int
}{{"32B", 32}, {"1KiB", 1024}}

// BenchmarkHSMEncrypt measures Encrypt through the token (AES-256-GCM in
// SoftHSM2 over PKCS#11); compare with BenchmarkAESGCMRaw for the cost of
// the HSM boundary.
func BenchmarkHSMEncrypt(b *testing.B) {
	tok := softhsmtest.NewToken(b)
	c := newClient(b)
	_, a := newKey(b, c, tok, "bench-kek")
	ad := []byte("tenant=acme;purpose=data")
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			pt := make([]byte, s.n)
			b.SetBytes(int64(s.n))
			for b.Loop() {
				if _, err := a.Encrypt(pt, ad); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAESGCMRaw does the same work in process: crypto/aes with
// cipher.NewGCM, a random nonce per call, nonce prepended.
func BenchmarkAESGCMRaw(b *testing.B) {
	key := make([]byte, 32)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		b.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	ad := []byte("tenant=acme;purpose=data")
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			pt := make([]byte, s.n)
			b.SetBytes(int64(s.n))
			for b.Loop() {
				buf := make([]byte, 12, 12+len(pt)+16)
				rand.Read(buf)
				_ = gcm.Seal(buf, buf, pt, ad)
			}
		})
	}
}
