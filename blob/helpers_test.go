package blob_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	gcblob "gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/blob/memblob"

	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/tenant"
)

var idSeq atomic.Int64

// newID returns a tenant ID not used before in this test process.
func newID(name string) tenant.ID {
	return tenant.MustParseID(fmt.Sprintf("%s%d", name, idSeq.Add(1)))
}

// newManager returns a keys.Manager over a MemStore with a platform master
// key in a local key file of the test's own.
func newManager(t testing.TB) *keys.Manager {
	t.Helper()
	kek, err := localkms.KeyURI(filepath.Join(t.TempDir(), "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	local, err := localkms.NewClient(localkms.Scheme)
	if err != nil {
		t.Fatal(err)
	}
	cfg := keys.DefaultConfig()
	cfg.Store, cfg.KMS, cfg.PlatformKEK = keys.NewMemStore(), []registry.KMSClient{local}, keys.URI(kek)
	cfg.CacheMaxUses = 1 << 62
	m, err := keys.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// provision provisions a new tenant and returns a context that carries it.
func provision(t testing.TB, m *keys.Manager, name string) (tenant.ID, context.Context) {
	t.Helper()
	id := newID(name)
	if err := m.Provision(context.Background(), id, keys.ProvisionOptions{}); err != nil {
		t.Fatal(err)
	}
	return id, tenant.NewContext(context.Background(), id)
}

// backend is one kind of platform bucket: how to open it as Buckets, the
// same bucket raw (as a storage admin sees it), and every stored object's
// bytes as the storage holds them.
type backend struct {
	name string
	// open returns Buckets over the backend, by URL where the scheme allows
	// (mem:// opens a new bucket each time, so New over raw).
	open func(t testing.TB, km *keys.Manager, opts ...blob.Option) *blob.Buckets
	raw  *gcblob.Bucket
	// stored returns the bytes of every file or object the storage holds,
	// by name, read below gocloud.
	stored func(t testing.TB) map[string][]byte
}

// backends returns a fresh bucket of each kind: mem://, file:// and s3://
// against gofakes3 on loopback.
func backends(t testing.TB) []*backend {
	t.Helper()
	return []*backend{memBackend(t), fileBackend(t), s3Backend(t)}
}

func memBackend(t testing.TB) *backend {
	t.Helper()
	raw := memblob.OpenBucket(nil)
	t.Cleanup(func() { _ = raw.Close() })
	return &backend{
		name: "mem",
		raw:  raw,
		open: func(t testing.TB, km *keys.Manager, opts ...blob.Option) *blob.Buckets {
			t.Helper()
			// Buckets.Close would close raw, which the test keeps using.
			b, err := blob.New(raw, km, opts...)
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		stored: func(t testing.TB) map[string][]byte {
			t.Helper()
			out := map[string][]byte{}
			it := raw.List(nil)
			for {
				o, err := it.Next(context.Background())
				if err != nil {
					break
				}
				p, err := raw.ReadAll(context.Background(), o.Key)
				if err != nil {
					t.Fatal(err)
				}
				out[o.Key] = p
			}
			return out
		},
	}
}

func fileBackend(t testing.TB) *backend {
	t.Helper()
	dir := t.TempDir()
	raw, err := fileblob.OpenBucket(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	return &backend{
		name: "file",
		raw:  raw,
		open: func(t testing.TB, km *keys.Manager, opts ...blob.Option) *blob.Buckets {
			t.Helper()
			return openURL(t, "file://"+filepath.ToSlash(dir), km, opts...)
		},
		stored: func(t testing.TB) map[string][]byte {
			t.Helper()
			out := map[string][]byte{}
			err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				p, err := os.ReadFile(path)
				out[path] = p
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return out
		},
	}
}

func s3Backend(t testing.TB) *backend {
	t.Helper()
	const bucket = "tenancy"
	mem := s3mem.New()
	if err := mem.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(mem).Server())
	t.Cleanup(srv.Close)
	q := url.Values{
		"endpoint":       {srv.URL},
		"use_path_style": {"true"},
		"disable_https":  {"true"},
		"region":         {"us-east-1"},
		"anonymous":      {"true"},
	}
	u := "s3://" + bucket + "?" + q.Encode()
	raw, err := gcblob.OpenBucket(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	return &backend{
		name: "s3",
		raw:  raw,
		open: func(t testing.TB, km *keys.Manager, opts ...blob.Option) *blob.Buckets {
			t.Helper()
			return openURL(t, u, km, opts...)
		},
		stored: func(t testing.TB) map[string][]byte {
			t.Helper()
			out := map[string][]byte{}
			list, err := mem.ListBucket(bucket, nil, gofakes3.ListBucketPage{})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range list.Contents {
				obj, err := mem.GetObject(bucket, o.Key, nil)
				if err != nil {
					t.Fatal(err)
				}
				p := make([]byte, obj.Size)
				if _, err := io.ReadFull(obj.Contents, p); err != nil {
					t.Fatal(err)
				}
				_ = obj.Contents.Close()
				out[o.Key] = p
			}
			return out
		},
	}
}

func openURL(t testing.TB, u string, km *keys.Manager, opts ...blob.Option) *blob.Buckets {
	t.Helper()
	b, err := blob.Open(context.Background(), u, km, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// view returns the view of the tenant of ctx.
func view(t testing.TB, b *blob.Buckets, ctx context.Context) *gcblob.Bucket {
	t.Helper()
	v, err := b.For(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// listKeys returns the keys bkt lists under prefix, sorted.
func listKeys(t testing.TB, ctx context.Context, bkt *gcblob.Bucket, prefix string) []string {
	t.Helper()
	var keys []string
	it := bkt.List(&gcblob.ListOptions{Prefix: prefix})
	for {
		o, err := it.Next(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		keys = append(keys, o.Key)
	}
	sort.Strings(keys)
	return keys
}
