package localkms

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// zeros is a random source that always gives zeros.
type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// A random name drawn twice is an error: the existing key file is never
// adopted, nor changed.
func TestCreateKeyRefusesAnExistingName(t *testing.T) {
	c, err := NewClient(Scheme)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(dir, "tenant-keys") // made with mode 0700
	m, err := NewKeyMaker(c, dir)
	if err != nil {
		t.Fatal(err)
	}
	m.random = zeros{}
	name := "acme.00000000000000000000000000000000.key"
	uri, err := m.CreateKey(context.Background(), "acme")
	if err != nil || uri != Scheme+filepath.ToSlash(filepath.Join(dir, name)) {
		t.Fatalf("CreateKey = %q, %v; want the key %s", uri, err, name)
	}
	before, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	again, err := m.CreateKey(context.Background(), "acme")
	if !errors.Is(err, fs.ErrExist) || again != "" {
		t.Fatalf("CreateKey of a name that exists = %q, %v; want an error wrapping fs.ErrExist", again, err)
	}
	after, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("the existing key file was changed (%v)", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if want := []string{name}; !slices.Equal(got, want) {
		t.Errorf("directory holds %v, want %v", got, want)
	}
}
