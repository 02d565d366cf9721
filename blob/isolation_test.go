package blob_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	gcblob "gocloud.dev/blob"

	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/keys"
)

// secret returns plaintext that is easy to find in storage: a marker
// repeated over n bytes.
func secret(name string, n int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("SECRET-%s-", name)), n/len("SECRET-"+name+"-")+1)[:n]
}

// TestTenantACannotAccessTenantBFilesInStorage is REQ-DEPLOY-004 test case
// 3 ("Tenant A cannot access Tenant B files in storage") on every backend:
// each tenant lists only its own keys, at the root and under any prefix,
// "../" prefixes refused; it cannot read, stat, copy or delete the other's
// keys by any name; and the other's bytes copied into its prefix by a
// storage admin do not decrypt.
// rtmx:req REQ-TEN-010 REQ-TEN-014
func TestTenantACannotAccessTenantBFilesInStorage(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			aID, actx := provision(t, km, "acme")
			bID, bctx := provision(t, km, "globex")
			bk := be.open(t, km)
			a, b := view(t, bk, actx), view(t, bk, bctx)
			for _, k := range []string{"specs/1.md", "specs/2.md", "shared.txt"} {
				if err := a.WriteAll(actx, k, secret("acme", 100), nil); err != nil {
					t.Fatal(err)
				}
			}
			for _, k := range []string{"specs/9.md", "only-b.txt"} {
				if err := b.WriteAll(bctx, k, secret("globex", 100), nil); err != nil {
					t.Fatal(err)
				}
			}
			if got, want := listKeys(t, actx, a, ""), []string{"shared.txt", "specs/1.md", "specs/2.md"}; !slices.Equal(got, want) {
				t.Errorf("A lists %q, want %q", got, want)
			}
			if got, want := listKeys(t, bctx, b, ""), []string{"only-b.txt", "specs/9.md"}; !slices.Equal(got, want) {
				t.Errorf("B lists %q, want %q", got, want)
			}
			if got := listKeys(t, actx, a, "specs/9"); len(got) != 0 {
				t.Errorf("A lists %q under B's specs/9", got)
			}
			for _, p := range []string{"../", "..", "../" + bID.String() + "/", "/", "./", "%2e%2e/", `..\`, "specs/../"} {
				if _, _, err := a.ListPage(actx, gcblob.FirstPageToken, 10, &gcblob.ListOptions{Prefix: p}); !errors.Is(err, blob.ErrInvalidKey) {
					t.Errorf("A lists prefix %q: %v, want ErrInvalidKey", p, err)
				}
			}
			for _, k := range []string{"only-b.txt", "../" + bID.String() + "/only-b.txt", blob.TenantPrefix(bID) + "only-b.txt", "/" + blob.TenantPrefix(bID) + "only-b.txt"} {
				if _, err := a.ReadAll(actx, k); err == nil {
					t.Errorf("A reads B's %q", k)
				}
				if ok, _ := a.Exists(actx, k); ok {
					t.Errorf("A sees B's %q", k)
				}
				if err := a.Copy(actx, "stolen", k, nil); err == nil {
					t.Errorf("A copies B's %q", k)
				}
				_ = a.Delete(actx, k)
			}
			if ok, err := b.Exists(bctx, "only-b.txt"); !ok || err != nil {
				t.Fatalf("B's object is gone after A's attempts: %v", err)
			}

			// A storage admin copies B's object into A's prefix, under the
			// same relative key and under another: it does not decrypt.
			ctx := t.Context()
			for _, dst := range []string{"only-b.txt", "specs/1.md"} {
				if err := be.raw.Copy(ctx, blob.TenantPrefix(aID)+dst, blob.TenantPrefix(bID)+"only-b.txt", nil); err != nil {
					t.Fatal(err)
				}
				if got, err := a.ReadAll(actx, dst); !errors.Is(err, keys.ErrDecrypt) {
					t.Errorf("A reads B's bytes copied to %q: %q, %v; want keys.ErrDecrypt", dst, got, err)
				}
			}
		})
	}
}

// TestCopiedOrRenamedBytesDoNotDecrypt: an object's stored bytes copied (or
// renamed: copied and the source deleted) by a storage admin to another key
// of the same tenant, or to another tenant's prefix under the same key, do
// not decrypt; a Copy through the view re-encrypts and does.
func TestCopiedOrRenamedBytesDoNotDecrypt(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			aID, actx := provision(t, km, "acme")
			bID, bctx := provision(t, km, "globex")
			bk := be.open(t, km)
			a, b := view(t, bk, actx), view(t, bk, bctx)
			ctx := t.Context()
			data := secret("acme", 10_000)
			write := func(key string) {
				t.Helper()
				if err := a.WriteAll(actx, key, data, nil); err != nil {
					t.Fatal(err)
				}
			}
			write("doc")
			write("renamed-src")
			pa, pb := blob.TenantPrefix(aID), blob.TenantPrefix(bID)
			moves := []struct {
				name     string
				src, dst string
				rename   bool
				reader   func() ([]byte, error)
			}{
				{"copy to another key", pa + "doc", pa + "doc-copy", false, func() ([]byte, error) { return a.ReadAll(actx, "doc-copy") }},
				{"rename to another key", pa + "renamed-src", pa + "renamed", true, func() ([]byte, error) { return a.ReadAll(actx, "renamed") }},
				{"copy to another tenant", pa + "doc", pb + "doc", false, func() ([]byte, error) { return b.ReadAll(bctx, "doc") }},
				{"copy to another tenant and key", pa + "doc", pb + "x/doc", false, func() ([]byte, error) { return b.ReadAll(bctx, "x/doc") }},
			}
			for _, m := range moves {
				if err := be.raw.Copy(ctx, m.dst, m.src, nil); err != nil {
					t.Fatal(err)
				}
				if m.rename {
					if err := be.raw.Delete(ctx, m.src); err != nil {
						t.Fatal(err)
					}
				}
				got, err := m.reader()
				if !errors.Is(err, keys.ErrDecrypt) {
					t.Errorf("%s: read %d bytes, %v; want keys.ErrDecrypt", m.name, len(got), err)
				}
			}
			if err := a.Copy(actx, "doc-view-copy", "doc", nil); err != nil {
				t.Fatal(err)
			}
			if got, err := a.ReadAll(actx, "doc-view-copy"); err != nil || !bytes.Equal(got, data) {
				t.Errorf("view Copy: %d bytes, %v", len(got), err)
			}
		})
	}
}

// TestNoPlaintextInStorage: after tenant A writes, copies and overwrites
// objects (with metadata), none of its plaintext appears in any file of
// the file:// directory or any object of the S3 server's store, read
// below gocloud, nor in the memory bucket read raw.
func TestNoPlaintextInStorage(t *testing.T) {
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			km := newManager(t)
			_, actx := provision(t, km, "acme")
			a := view(t, be.open(t, km), actx)
			marker := []byte("SECRET-acme-")
			for i, n := range []int{12, 4040, 4041, 100_000, 1 << 20} {
				key := fmt.Sprintf("dir/obj-%d", i)
				if err := a.WriteAll(actx, key, secret("acme", n), &gcblob.WriterOptions{ContentType: "text/plain", Metadata: map[string]string{"label": "public"}}); err != nil {
					t.Fatal(err)
				}
				if err := a.Copy(actx, key+"-copy", key, nil); err != nil {
					t.Fatal(err)
				}
			}
			stored := be.stored(t)
			if len(stored) < 10 {
				t.Fatalf("only %d stored files/objects found", len(stored))
			}
			for name, p := range stored {
				if bytes.Contains(p, marker) || bytes.Contains(p, []byte("SECRET")) {
					t.Errorf("plaintext of tenant A in %s", name)
				}
			}
		})
	}
}

// TestTamperedStorageIsDetected: a storage admin who cuts an object short,
// extends it, flips a byte or replaces it makes its read fail with
// keys.ErrDecrypt. One who edits the format marker makes Attributes refuse
// the object; a read still returns the authenticated bytes, which the
// marker is not part of.
func TestTamperedStorageIsDetected(t *testing.T) {
	be := fileBackend(t)
	km := newManager(t)
	id, ctx := provision(t, km, "acme")
	a := view(t, be.open(t, km), ctx)
	data := secret("acme", 20_000)
	key := blob.TenantPrefix(id) + "obj"
	type edit func(p []byte, md map[string]string) ([]byte, map[string]string)
	content := map[string]edit{
		"cut at a segment": func(p []byte, md map[string]string) ([]byte, map[string]string) { return p[:4096], md },
		"cut mid-segment":  func(p []byte, md map[string]string) ([]byte, map[string]string) { return p[:len(p)-100], md },
		"last tag cut":     func(p []byte, md map[string]string) ([]byte, map[string]string) { return p[:len(p)-16], md },
		"extended": func(p []byte, md map[string]string) ([]byte, map[string]string) {
			return append(p, make([]byte, 4096)...), md
		},
		"byte flipped":       func(p []byte, md map[string]string) ([]byte, map[string]string) { p[5000] ^= 1; return p, md },
		"header flipped":     func(p []byte, md map[string]string) ([]byte, map[string]string) { p[3] ^= 1; return p, md },
		"plaintext injected": func(_ []byte, md map[string]string) ([]byte, map[string]string) { return secret("admin", 20_000), md },
	}
	marker := map[string]edit{
		"marker removed": func(p []byte, _ map[string]string) ([]byte, map[string]string) { return p, map[string]string{} },
		"marker of v2": func(p []byte, _ map[string]string) ([]byte, map[string]string) {
			return p, map[string]string{"tenancy-blob": "v2"}
		},
	}
	apply := func(t *testing.T, f edit) {
		t.Helper()
		if err := a.WriteAll(ctx, "obj", data, nil); err != nil {
			t.Fatal(err)
		}
		p, err := be.raw.ReadAll(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		attrs, err := be.raw.Attributes(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		p, md := f(p, attrs.Metadata)
		if err := be.raw.WriteAll(ctx, key, p, &gcblob.WriterOptions{Metadata: md}); err != nil {
			t.Fatal(err)
		}
	}
	for name, f := range content {
		t.Run(name, func(t *testing.T) {
			apply(t, f)
			if got, err := a.ReadAll(ctx, "obj"); !errors.Is(err, keys.ErrDecrypt) {
				t.Errorf("read %d bytes, %v; want keys.ErrDecrypt", len(got), err)
			}
		})
	}
	for name, f := range marker {
		t.Run(name, func(t *testing.T) {
			apply(t, f)
			if _, err := a.Attributes(ctx, "obj"); !errors.Is(err, keys.ErrDecrypt) {
				t.Errorf("Attributes: %v, want keys.ErrDecrypt", err)
			}
			if got, err := a.ReadAll(ctx, "obj"); err != nil || !bytes.Equal(got, data) {
				t.Errorf("read %d bytes, %v; want the object", len(got), err)
			}
		})
	}
}
