package keys_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/tenant"
)

var benchSizes = []int{64, 1 << 10, 64 << 10}

func sizeName(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// benchBinding is a realistic binding; the raw baseline uses associated
// data of the same length as keys builds from it.
var benchBinding = keys.Binding{Table: "requirements", Column: "requirement_text", RowKey: "REQ-DEPLOY-004"}

// benchManager returns a Manager over a MemStore (the Store is not on the
// hot path: a cached keyset never reads it) and a provisioned tenant.
func benchManager(b *testing.B, store keys.Store) (*keys.Manager, context.Context, tenant.ID) {
	b.Helper()
	kek, err := localkms.KeyURI(filepath.Join(b.TempDir(), "master.key"))
	if err != nil {
		b.Fatal(err)
	}
	local, _ := localkms.NewClient(localkms.Scheme)
	cfg := keys.DefaultConfig()
	cfg.Store, cfg.KMS, cfg.PlatformKEK = store, []registry.KMSClient{local}, keys.URI(kek)
	cfg.CacheMaxUses = 1 << 62
	m, err := keys.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	id := newID("bench")
	if err := m.Provision(context.Background(), id, keys.ProvisionOptions{}); err != nil {
		b.Fatal(err)
	}
	return m, tenant.NewContext(context.Background(), id), id
}

// BenchmarkSealOpen measures one Seal and one Open of a cached tenant
// keyset ("keys") against the same work done with crypto/aes and
// cipher.NewGCM directly ("raw"): random 12-byte nonce per seal, associated
// data of the same length, fresh output slices.
func BenchmarkSealOpen(b *testing.B) {
	m, ctx, id := benchManager(b, keys.NewMemStore())
	adLen := len("tenancy/v1/data") + 16 + len(id.String()) + len(benchBinding.Table) + len(benchBinding.Column) + len(benchBinding.RowKey)
	for _, n := range benchSizes {
		pt := make([]byte, n)
		rand.Read(pt)
		b.Run("keys/"+sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				ct, err := m.Seal(ctx, pt, benchBinding)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := m.Open(ctx, ct, benchBinding); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("tink/"+sizeName(n), func(b *testing.B) {
			h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
			if err != nil {
				b.Fatal(err)
			}
			a, err := aead.New(h)
			if err != nil {
				b.Fatal(err)
			}
			ad := make([]byte, adLen)
			rand.Read(ad)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				ct, err := a.Encrypt(pt, ad)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := a.Decrypt(ct, ad); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("raw/"+sizeName(n), func(b *testing.B) {
			key := make([]byte, 32)
			rand.Read(key)
			block, _ := aes.NewCipher(key)
			gcm, _ := cipher.NewGCM(block)
			ad := make([]byte, adLen)
			rand.Read(ad)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				out := make([]byte, 12, 12+n+16)
				rand.Read(out)
				ct := gcm.Seal(out, out, pt, ad)
				if _, err := gcm.Open(make([]byte, 0, n), ct[:12], ct[12:], ad); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSealOpenParallel is BenchmarkSealOpen at 1 KiB from GOMAXPROCS
// goroutines, to show the cache lookup does not serialise callers.
func BenchmarkSealOpenParallel(b *testing.B) {
	m, ctx, _ := benchManager(b, keys.NewMemStore())
	pt := make([]byte, 1<<10)
	b.SetBytes(int64(len(pt)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ct, err := m.Seal(ctx, pt, benchBinding)
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := m.Open(ctx, ct, benchBinding); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkColdUnwrapLocalKMS measures a cache miss with localkms: read the
// wrapped data keyset from the Store, read the key file, unwrap, build the
// AEAD, then one Seal. "postgres" reads from store.Keysets on real
// PostgreSQL; "memstore" leaves the database out.
func BenchmarkColdUnwrapLocalKMS(b *testing.B) {
	for _, tc := range []struct {
		name  string
		store func(b *testing.B) keys.Store
	}{
		{"memstore", func(*testing.B) keys.Store { return keys.NewMemStore() }},
		{"postgres", func(b *testing.B) keys.Store { return newEnv(b).store }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m, ctx, id := benchManager(b, tc.store(b))
			benchColdSeal(b, m, ctx, id)
		})
	}
}

// benchColdSeal times one Seal of tenant id's after dropping its cached
// keysets, so that every Seal reads, unwraps and builds them anew, and
// checks that the master key was called each time.
func benchColdSeal(b *testing.B, m *keys.Manager, ctx context.Context, id tenant.ID) {
	b.Helper()
	pt := []byte("x")
	b.ReportAllocs()
	for b.Loop() {
		m.Purge(id)
		if _, err := m.Seal(ctx, pt, benchBinding); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if s := m.Stats(); s.KEKCalls < uint64(b.N) {
		b.Fatalf("%d master-key calls for %d iterations: the cache was not cold", s.KEKCalls, b.N)
	}
}
