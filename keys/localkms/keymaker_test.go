package localkms_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rtmx-ai/tenancy/keys/localkms"
)

// keyMaker is the interface keys.Manager asks of a per-tenant key maker,
// restated here so that the tests check *KeyMaker against it without
// importing package keys.
type keyMaker interface {
	KeyURI(label string) (string, error)
	CreateKey(ctx context.Context, keyURI string) error
	DestroyKey(ctx context.Context, keyURI string) error
}

var _ keyMaker = (*localkms.KeyMaker)(nil)

// newMaker returns a KeyMaker for a new directory, the directory as the
// maker resolved it, and the client it uses.
func newMaker(t testing.TB) (*localkms.KeyMaker, string, *localkms.Client) {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(dir, "tenant-keys")
	c := newClient(t)
	m, err := localkms.NewKeyMaker(c, dir)
	if err != nil {
		t.Fatal(err)
	}
	return m, dir, c
}

// createKey makes the key labelled label and returns its URI.
func createKey(t testing.TB, m *localkms.KeyMaker, label string) string {
	t.Helper()
	uri, err := m.KeyURI(label)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CreateKey(context.Background(), uri); err != nil {
		t.Fatalf("CreateKey(%s): %v", uri, err)
	}
	return uri
}

// encrypt encrypts a fixed message with the key uri names.
func encrypt(t testing.TB, c *localkms.Client, uri string) []byte {
	t.Helper()
	a, err := c.GetAEAD(uri)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := a.Encrypt([]byte("tenant keyset"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// decrypts reports whether ct decrypts with the key uri names, and why not.
func decrypts(t testing.TB, c *localkms.Client, uri string, ct []byte) error {
	t.Helper()
	a, err := c.GetAEAD(uri)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := a.Decrypt(ct, []byte("ad"))
	if err == nil && string(pt) != "tenant keyset" {
		t.Fatalf("Decrypt = %q", pt)
	}
	return err
}

// names returns the sorted names in dir.
func names(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestKeyURIRefusesEachLabelNamingTheRule(t *testing.T) {
	m, dir, _ := newMaker(t)
	const (
		empty   = "must not be empty"
		tooLong = "longer than 64"
		first   = "must start with a lowercase letter or a digit"
		charset = "only lowercase letters, digits, '_' and '-' are allowed"
	)
	for _, tc := range []struct{ label, rule string }{
		{"", empty},
		{strings.Repeat("a", 65), tooLong},
		{"tenancy-tenant-" + strings.Repeat("x", 50), tooLong},
		{"_acme", first},
		{"-acme", first},
		{"Acme", first},
		{".acme", first},
		{"/acme", first},
		{"..", first},
		{"é", first},
		{"tenancy-tenant-Acme", charset},
		{"acme.key", charset},
		{"ac/me", charset},
		{"a/../b", charset},
		{"acme ", charset},
		{"ac\x00me", charset},
		{"acmé", charset},
	} {
		uri, err := m.KeyURI(tc.label)
		if !errors.Is(err, localkms.ErrInvalidURI) || !strings.Contains(err.Error(), tc.rule) {
			t.Errorf("KeyURI(%q) = %q, %v; want ErrInvalidURI saying the label %s", tc.label, uri, err, tc.rule)
		}
	}
	if got := names(t, dir); len(got) != 0 {
		t.Errorf("KeyURI created files: %v", got)
	}
}

func TestKeyURIIsTheCanonicalURIOfDirLabelDotKey(t *testing.T) {
	m, dir, c := newMaker(t)
	for _, label := range []string{"tenancy-tenant-acme", "tenancy-tenant-a_b", "0", "a-", strings.Repeat("z", 64)} {
		uri, err := m.KeyURI(label)
		if err != nil {
			t.Fatalf("KeyURI(%q): %v", label, err)
		}
		if want := localkms.Scheme + filepath.ToSlash(filepath.Join(dir, label+".key")); uri != want {
			t.Errorf("KeyURI(%q) = %q, want %q", label, uri, want)
		}
		if canon, err := c.CanonicalKeyURI(uri); err != nil || canon != uri {
			t.Errorf("CanonicalKeyURI(%q) = %q, %v; want it unchanged", uri, canon, err)
		}
	}
	if got := names(t, dir); len(got) != 0 {
		t.Errorf("KeyURI created files: %v", got)
	}
}

func TestNewKeyMakerCreatesAMissingDirectoryMode0700(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "keys")
	if _, err := localkms.NewKeyMaker(newClient(t), dir); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want a directory with mode 0700", d, fi.Mode())
		}
	}
}

func TestNewKeyMakerRefusesADirectoryAccessibleByOthers(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	_, err := localkms.NewKeyMaker(newClient(t), dir)
	if !errors.Is(err, localkms.ErrKeyFile) || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("NewKeyMaker(mode 0750 directory) = %v, want ErrKeyFile suggesting chmod 700", err)
	}
}

func TestNewKeyMakerRefusesWhatIsNotAnAbsoluteDirectoryTheClientServes(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	restricted, err := localkms.NewClient(localkms.Scheme + filepath.Join(base, "served") + "/")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    *localkms.Client
		dir  string
		want error
	}{
		{"nil client", nil, base, localkms.ErrInvalidURI},
		{"empty", newClient(t), "", localkms.ErrInvalidURI},
		{"relative", newClient(t), "keys", localkms.ErrInvalidURI},
		{"outside the client's directory", restricted, filepath.Join(base, "other"), localkms.ErrInvalidURI},
		{"'..' out of the client's directory", restricted, filepath.Join(base, "served") + "/../other", localkms.ErrInvalidURI},
		{"the parent of the client's directory", restricted, base, localkms.ErrInvalidURI},
		{"a file", newClient(t), file, localkms.ErrKeyFile},
	} {
		if _, err := localkms.NewKeyMaker(tc.c, tc.dir); !errors.Is(err, tc.want) {
			t.Errorf("%s: NewKeyMaker(%q) = %v, want %v", tc.name, tc.dir, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(base, "other")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("NewKeyMaker created a directory outside the client's before refusing it (stat: %v)", err)
	}
	if _, err := localkms.NewKeyMaker(restricted, filepath.Join(base, "served", "tenants")); err != nil {
		t.Errorf("NewKeyMaker(a directory inside the client's) = %v", err)
	}
}

func TestNewKeyMakerResolvesALinkedDirectory(t *testing.T) {
	real, alias := symlinkedDir(t)
	m, err := localkms.NewKeyMaker(newClient(t), alias)
	if err != nil {
		t.Fatal(err)
	}
	uri, err := m.KeyURI("acme")
	if want := localkms.Scheme + filepath.ToSlash(filepath.Join(real, "acme.key")); err != nil || uri != want {
		t.Fatalf("KeyURI(acme) = %q, %v; want %q, in the directory the link names", uri, err, want)
	}
}

func TestCreateKeyMakesAKeyUsableWithGetAEAD(t *testing.T) {
	m, dir, c := newMaker(t)
	uri := createKey(t, m, "tenancy-tenant-acme")
	fi, err := os.Stat(filepath.Join(dir, "tenancy-tenant-acme.key"))
	if err != nil {
		t.Fatalf("no key file after CreateKey: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	if err := decrypts(t, c, uri, encrypt(t, c, uri)); err != nil {
		t.Fatal(err)
	}
	if got, want := names(t, dir), []string{"tenancy-tenant-acme.key"}; !slices.Equal(got, want) {
		t.Errorf("directory holds %v, want %v", got, want)
	}
}

func TestCreateKeyTwiceKeepsTheKey(t *testing.T) {
	m, dir, c := newMaker(t)
	uri := createKey(t, m, "tenancy-tenant-acme")
	ct := encrypt(t, c, uri)
	before, err := os.ReadFile(filepath.Join(dir, "tenancy-tenant-acme.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.CreateKey(context.Background(), uri); err != nil {
		t.Fatalf("second CreateKey: %v", err)
	}
	after, err := os.ReadFile(filepath.Join(dir, "tenancy-tenant-acme.key"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the second CreateKey rewrote the key file")
	}
	if err := decrypts(t, c, uri, ct); err != nil {
		t.Fatalf("a ciphertext made before the second CreateKey does not decrypt: %v", err)
	}
}

func TestCreateKeyAdoptsAKeyFileMadeByGetAEAD(t *testing.T) {
	m, _, c := newMaker(t)
	uri, err := m.KeyURI("tenancy-tenant-acme")
	if err != nil {
		t.Fatal(err)
	}
	ct := encrypt(t, c, uri) // the first encryption makes the file
	if err := m.CreateKey(context.Background(), uri); err != nil {
		t.Fatal(err)
	}
	if err := decrypts(t, c, uri, ct); err != nil {
		t.Fatalf("CreateKey replaced the existing key: %v", err)
	}
}

func TestCreateKeyRefusesAnUnusableFileAndLeavesIt(t *testing.T) {
	for name, setup := range map[string]func(t *testing.T, path, other string){
		"malformed": func(t *testing.T, path, _ string) {
			write(t, path, "tenancy-localkms-v1\nnot a key\n", 0o600)
		},
		"readable by others": func(t *testing.T, path, other string) {
			b, err := os.ReadFile(other)
			if err != nil {
				t.Fatal(err)
			}
			write(t, path, string(b), 0o644)
		},
		"a directory": func(t *testing.T, path, _ string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		},
		"a symbolic link to another key": func(t *testing.T, path, other string) {
			if err := os.Symlink(other, path); err != nil {
				t.Fatal(err)
			}
		},
		"a symbolic link to nothing": func(t *testing.T, path, other string) {
			if err := os.Symlink(other+".missing", path); err != nil {
				t.Fatal(err)
			}
		},
		"a hard link to another key": func(t *testing.T, path, other string) {
			if err := os.Link(other, path); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			m, dir, c := newMaker(t)
			otherURI := createKey(t, m, "tenancy-tenant-other")
			ct := encrypt(t, c, otherURI)
			other := filepath.Join(dir, "tenancy-tenant-other.key")
			path := filepath.Join(dir, "tenancy-tenant-acme.key")
			setup(t, path, other)
			before := names(t, dir)
			lfi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			uri, _ := m.KeyURI("tenancy-tenant-acme")
			if err := m.CreateKey(context.Background(), uri); !errors.Is(err, localkms.ErrKeyFile) || !strings.Contains(err.Error(), path) {
				t.Fatalf("CreateKey(%s) = %v, want ErrKeyFile naming the file", name, err)
			}
			if got := names(t, dir); !slices.Equal(got, before) {
				t.Errorf("directory went from %v to %v", before, got)
			}
			if fi, err := os.Lstat(path); err != nil || !os.SameFile(fi, lfi) || fi.Mode() != lfi.Mode() {
				t.Errorf("CreateKey changed the unusable file (%v)", err)
			}
			if err := decrypts(t, c, otherURI, ct); err != nil {
				t.Errorf("the other key no longer decrypts: %v", err)
			}
		})
	}
}

func write(t testing.TB, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// A directory of the maker replaced by a link after NewKeyMaker would
// make its URIs name files elsewhere: CreateKey refuses them.
func TestCreateKeyRefusesADirectoryReplacedByALink(t *testing.T) {
	m, dir, _ := newMaker(t)
	elsewhere := t.TempDir()
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, dir); err != nil {
		t.Fatal(err)
	}
	uri, _ := m.KeyURI("tenancy-tenant-acme")
	if err := m.CreateKey(context.Background(), uri); !errors.Is(err, localkms.ErrInvalidURI) {
		t.Fatalf("CreateKey through a replaced directory = %v, want ErrInvalidURI", err)
	}
	if got := names(t, elsewhere); len(got) != 0 {
		t.Errorf("CreateKey made %v in the directory the link names", got)
	}
}

func TestCreateKeyWithACanceledContextCreatesNothing(t *testing.T) {
	m, dir, _ := newMaker(t)
	uri, _ := m.KeyURI("tenancy-tenant-acme")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.CreateKey(ctx, uri); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateKey = %v, want context.Canceled", err)
	}
	if got := names(t, dir); len(got) != 0 {
		t.Errorf("CreateKey made %v", got)
	}
}

func TestDestroyKeyRemovesThatKeyFileAndNoOther(t *testing.T) {
	m, dir, c := newMaker(t)
	cts := map[string][]byte{}
	uris := map[string]string{}
	for _, label := range []string{"tenancy-tenant-acme", "tenancy-tenant-beta", "tenancy-tenant-gamma"} {
		uris[label] = createKey(t, m, label)
		cts[label] = encrypt(t, c, uris[label])
	}
	write(t, filepath.Join(dir, "notes.txt"), "not a key", 0o600)
	before := names(t, dir)
	if err := m.DestroyKey(context.Background(), uris["tenancy-tenant-beta"]); err != nil {
		t.Fatal(err)
	}
	want := slices.DeleteFunc(slices.Clone(before), func(n string) bool { return n == "tenancy-tenant-beta.key" })
	if got := names(t, dir); !slices.Equal(got, want) {
		t.Errorf("after DestroyKey the directory holds %v, want %v (it held %v)", got, want, before)
	}
	for label, ct := range cts {
		err := decrypts(t, c, uris[label], ct)
		switch {
		case label == "tenancy-tenant-beta" && !errors.Is(err, fs.ErrNotExist):
			t.Errorf("the destroyed key: Decrypt = %v, want fs.ErrNotExist", err)
		case label != "tenancy-tenant-beta" && err != nil:
			t.Errorf("key %s does not decrypt after another was destroyed: %v", label, err)
		}
	}
}

func TestDestroyKeyOfAMissingKeyIsNotAnError(t *testing.T) {
	m, dir, _ := newMaker(t)
	uri := createKey(t, m, "tenancy-tenant-acme")
	for i := range 2 {
		if err := m.DestroyKey(context.Background(), uri); err != nil {
			t.Fatalf("DestroyKey #%d: %v", i+1, err)
		}
	}
	never, _ := m.KeyURI("tenancy-tenant-never")
	if err := m.DestroyKey(context.Background(), never); err != nil {
		t.Fatalf("DestroyKey of a key never made: %v", err)
	}
	if got := names(t, dir); len(got) != 0 {
		t.Errorf("directory holds %v after DestroyKey", got)
	}
}

// A KeyMaker creates and destroys only what its KeyURI names, spelled as
// KeyURI spells it: not a key of another directory, nor its own keys under
// another spelling, nor a link, nor a name KeyURI would not give.
func TestKeyMakerRefusesURIsItDidNotMake(t *testing.T) {
	m, dir, c := newMaker(t)
	beta := createKey(t, m, "tenancy-tenant-beta")
	betaCT := encrypt(t, c, beta)
	otherMaker, otherDir, _ := newMaker(t)
	otherKey := createKey(t, otherMaker, "tenancy-tenant-acme")
	otherCT := encrypt(t, c, otherKey)

	parent, base := filepath.Dir(dir), filepath.Base(dir)
	alias := filepath.Join(parent, "alias")
	if err := os.Symlink(dir, alias); err != nil {
		t.Fatal(err)
	}
	outsideLink := filepath.Join(otherDir, "tenancy-tenant-beta.key")
	if err := os.Symlink(filepath.Join(dir, "tenancy-tenant-beta.key"), outsideLink); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, ".localkms-x.tmp"), "not a key", 0o600)
	local := func(p string) string { return localkms.Scheme + filepath.ToSlash(p) }
	for _, uri := range []string{
		otherKey,           // another directory
		local(outsideLink), // a link elsewhere to this maker's key
		local(dir + "/../" + base + "/tenancy-tenant-beta.key"),
		local(dir + "/sub/../tenancy-tenant-beta.key"),
		local(dir + "/./tenancy-tenant-beta.key"),
		local(dir + "//tenancy-tenant-beta.key"),
		local(alias + "/tenancy-tenant-beta.key"), // a linked directory
		local(dir + "/tenancy-tenant-beta"),
		local(dir + "/tenancy-tenant-beta.key.key"),
		local(dir + "/tenancy-tenant-Beta.key"),
		local(dir + "/tenancy-tenant-beta.KEY"),
		local(dir + "/_beta.key"),
		local(dir + "/.key"),
		local(dir + "/.localkms-x.tmp"),
		local(dir + "/sub/tenancy-tenant-beta.key"),
		local(dir + "/" + strings.Repeat("a", 65) + ".key"),
		local(dir),
		local(dir + "/"),
		"LOCAL://" + filepath.ToSlash(dir) + "/tenancy-tenant-beta.key",
		"file://" + filepath.ToSlash(dir) + "/tenancy-tenant-beta.key",
		"local://tenancy-tenant-beta.key",
		"",
	} {
		if err := m.CreateKey(context.Background(), uri); !errors.Is(err, localkms.ErrInvalidURI) {
			t.Errorf("CreateKey(%q) = %v, want ErrInvalidURI", uri, err)
		}
		if err := m.DestroyKey(context.Background(), uri); !errors.Is(err, localkms.ErrInvalidURI) {
			t.Errorf("DestroyKey(%q) = %v, want ErrInvalidURI", uri, err)
		}
	}
	// A link in the maker's own directory has a name KeyURI gives, but is
	// not a key of its own: CreateKey and DestroyKey refuse it.
	inside := filepath.Join(dir, "tenancy-tenant-alias.key")
	if err := os.Symlink(filepath.Join(dir, "tenancy-tenant-beta.key"), inside); err != nil {
		t.Fatal(err)
	}
	aliasURI, _ := m.KeyURI("tenancy-tenant-alias")
	if err := m.CreateKey(context.Background(), aliasURI); !errors.Is(err, localkms.ErrKeyFile) {
		t.Errorf("CreateKey(a link to another key) = %v, want ErrKeyFile", err)
	}
	if err := m.DestroyKey(context.Background(), aliasURI); !errors.Is(err, localkms.ErrKeyFile) {
		t.Errorf("DestroyKey(a link to another key) = %v, want ErrKeyFile", err)
	}

	if err := decrypts(t, c, beta, betaCT); err != nil {
		t.Errorf("this maker's key was destroyed: %v", err)
	}
	if err := decrypts(t, c, otherKey, otherCT); err != nil {
		t.Errorf("the other maker's key was destroyed: %v", err)
	}
	if got, want := names(t, dir), []string{".localkms-x.tmp", "tenancy-tenant-alias.key", "tenancy-tenant-beta.key"}; !slices.Equal(got, want) {
		t.Errorf("directory holds %v, want %v", got, want)
	}
	if got, want := names(t, otherDir), []string{"tenancy-tenant-acme.key", "tenancy-tenant-beta.key"}; !slices.Equal(got, want) {
		t.Errorf("other directory holds %v, want %v", got, want)
	}
}

func TestConcurrentCreateKeyMakesOneKey(t *testing.T) {
	_, dir, c := newMaker(t)
	const n = 16
	cts := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := localkms.NewKeyMaker(c, dir) // a maker each, as processes would have
			if err != nil {
				t.Error(err)
				return
			}
			uri, _ := m.KeyURI("tenancy-tenant-acme")
			if err := m.CreateKey(context.Background(), uri); err != nil {
				t.Error(err)
				return
			}
			a, _ := c.GetAEAD(uri)
			cts[i], err = a.Encrypt([]byte("tenant keyset"), []byte("ad"))
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	uri := localkms.Scheme + filepath.ToSlash(filepath.Join(dir, "tenancy-tenant-acme.key"))
	for i, ct := range cts {
		if err := decrypts(t, c, uri, ct); err != nil {
			t.Errorf("goroutine %d encrypted with another key than the one on disk: %v", i, err)
		}
	}
	if got, want := names(t, dir), []string{"tenancy-tenant-acme.key"}; !slices.Equal(got, want) {
		t.Errorf("directory holds %v, want %v", got, want)
	}
}
