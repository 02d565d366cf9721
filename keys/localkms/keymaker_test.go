package localkms_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
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
	CreateKey(ctx context.Context, label string) (keyURI string, err error)
	DestroyKeys(ctx context.Context, label string) error
	Owns(keyURI, label string) bool
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

// createKey makes a key labelled label and returns its URI, checking that
// it is the canonical URI of a file LABEL.<32 hex>.key in dir.
func createKey(t testing.TB, m *localkms.KeyMaker, dir, label string) string {
	t.Helper()
	uri, err := m.CreateKey(context.Background(), label)
	if err != nil {
		t.Fatalf("CreateKey(%s): %v", label, err)
	}
	want := "^" + regexp.QuoteMeta(localkms.Scheme+filepath.ToSlash(dir)+"/"+label+".") + "[0-9a-f]{32}" + regexp.QuoteMeta(".key") + "$"
	if !regexp.MustCompile(want).MatchString(uri) {
		t.Fatalf("CreateKey(%s) = %q, want a URI matching %s", label, uri, want)
	}
	return uri
}

// file returns the path of the key file uri names.
func file(uri string) string {
	return filepath.FromSlash(strings.TrimPrefix(uri, localkms.Scheme))
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

// base returns the file names of the key files the URIs name, sorted.
func base(uris ...string) []string {
	var out []string
	for _, u := range uris {
		out = append(out, filepath.Base(file(u)))
	}
	slices.Sort(out)
	return out
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

const hex32 = "0123456789abcdef0123456789abcdef"

func TestKeyMakerRefusesEachLabelNamingTheRule(t *testing.T) {
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
		{"acme." + hex32, charset},
		{"ac/me", charset},
		{"a/../b", charset},
		{"acme ", charset},
		{"ac\x00me", charset},
		{"acmé", charset},
	} {
		uri, err := m.CreateKey(context.Background(), tc.label)
		if !errors.Is(err, localkms.ErrInvalidURI) || !strings.Contains(err.Error(), tc.rule) {
			t.Errorf("CreateKey(%q) = %q, %v; want ErrInvalidURI saying the label %s", tc.label, uri, err, tc.rule)
		}
		if err := m.DestroyKeys(context.Background(), tc.label); !errors.Is(err, localkms.ErrInvalidURI) || !strings.Contains(err.Error(), tc.rule) {
			t.Errorf("DestroyKeys(%q) = %v; want ErrInvalidURI saying the label %s", tc.label, err, tc.rule)
		}
		if m.Owns(localkms.Scheme+filepath.ToSlash(dir)+"/"+tc.label+"."+hex32+".key", tc.label) {
			t.Errorf("Owns(DIR/%s.%s.key, %q) = true for a label CreateKey refuses", tc.label, hex32, tc.label)
		}
	}
	if got := names(t, dir); len(got) != 0 {
		t.Errorf("the refused labels left files: %v", got)
	}
}

func TestCreateKeyMakesANewKeyEachCall(t *testing.T) {
	m, dir, c := newMaker(t)
	first := createKey(t, m, dir, "tenancy-tenant-acme")
	second := createKey(t, m, dir, "tenancy-tenant-acme")
	if first == second {
		t.Fatalf("CreateKey twice gave one URI, %s", first)
	}
	for _, uri := range []string{first, second} {
		if canon, err := c.CanonicalKeyURI(uri); err != nil || canon != uri {
			t.Errorf("CanonicalKeyURI(%q) = %q, %v; want it unchanged", uri, canon, err)
		}
		fi, err := os.Lstat(file(uri))
		if err != nil {
			t.Fatalf("no key file after CreateKey: %v", err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
			t.Errorf("key file mode %v, want a regular file with mode 0600", fi.Mode())
		}
		if !m.Owns(uri, "tenancy-tenant-acme") {
			t.Errorf("Owns(%s) = false for a URI CreateKey gave", uri)
		}
	}
	ct1, ct2 := encrypt(t, c, first), encrypt(t, c, second)
	if err := decrypts(t, c, first, ct1); err != nil {
		t.Errorf("the first key: %v", err)
	}
	if err := decrypts(t, c, second, ct2); err != nil {
		t.Errorf("the second key: %v", err)
	}
	if err := decrypts(t, c, second, ct1); !errors.Is(err, localkms.ErrDecrypt) {
		t.Errorf("a ciphertext of the first key with the second: %v, want ErrDecrypt (two distinct keys)", err)
	}
	if err := decrypts(t, c, first, ct2); !errors.Is(err, localkms.ErrDecrypt) {
		t.Errorf("a ciphertext of the second key with the first: %v, want ErrDecrypt (two distinct keys)", err)
	}
	if got, want := names(t, dir), base(first, second); !slices.Equal(got, want) {
		t.Errorf("directory holds %v, want %v", got, want)
	}
}

func TestCreateKeyTakesEveryLabelOfTheRules(t *testing.T) {
	m, dir, c := newMaker(t)
	var uris []string
	for _, label := range []string{"tenancy-tenant-acme", "tenancy-tenant-a_b", "0", "a-", strings.Repeat("z", 64)} {
		uri := createKey(t, m, dir, label)
		if err := decrypts(t, c, uri, encrypt(t, c, uri)); err != nil {
			t.Errorf("key %s: %v", label, err)
		}
		uris = append(uris, uri)
	}
	if got, want := names(t, dir), base(uris...); !slices.Equal(got, want) {
		t.Errorf("directory holds %v, want %v", got, want)
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
	uri := createKey(t, m, real, "acme") // the URI names the directory the link names
	aliased := localkms.Scheme + filepath.ToSlash(alias) + "/" + filepath.Base(file(uri))
	if m.Owns(aliased, "acme") {
		t.Errorf("Owns(%s) = true: that spelling goes through the link", aliased)
	}
}

// A directory of the maker replaced by a link after NewKeyMaker would
// make its URIs name files elsewhere: CreateKey and DestroyKeys refuse.
func TestKeyMakerRefusesADirectoryReplacedByALink(t *testing.T) {
	m, dir, c := newMaker(t)
	elsewhere := t.TempDir()
	victim := filepath.Join(elsewhere, "tenancy-tenant-acme."+hex32+".key")
	victimURI := localkms.Scheme + filepath.ToSlash(victim)
	ct := encrypt(t, c, victimURI)
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, dir); err != nil {
		t.Fatal(err)
	}
	if uri, err := m.CreateKey(context.Background(), "tenancy-tenant-acme"); !errors.Is(err, localkms.ErrInvalidURI) {
		t.Fatalf("CreateKey through a replaced directory = %q, %v; want ErrInvalidURI", uri, err)
	}
	if err := m.DestroyKeys(context.Background(), "tenancy-tenant-acme"); !errors.Is(err, localkms.ErrInvalidURI) {
		t.Fatalf("DestroyKeys through a replaced directory = %v, want ErrInvalidURI", err)
	}
	if got, want := names(t, elsewhere), []string{filepath.Base(victim)}; !slices.Equal(got, want) {
		t.Errorf("the directory the link names holds %v, want %v", got, want)
	}
	if err := decrypts(t, c, victimURI, ct); err != nil {
		t.Errorf("the key in the directory the link names was destroyed: %v", err)
	}
}

func TestKeyMakerWithACanceledContextDoesNothing(t *testing.T) {
	m, dir, _ := newMaker(t)
	uri := createKey(t, m, dir, "tenancy-tenant-acme")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if uri, err := m.CreateKey(ctx, "tenancy-tenant-acme"); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateKey = %q, %v; want context.Canceled", uri, err)
	}
	if err := m.DestroyKeys(ctx, "tenancy-tenant-acme"); !errors.Is(err, context.Canceled) {
		t.Fatalf("DestroyKeys = %v, want context.Canceled", err)
	}
	if got, want := names(t, dir), base(uri); !slices.Equal(got, want) {
		t.Errorf("directory holds %v, want %v", got, want)
	}
}

func TestConcurrentCreateKeyMakesDistinctKeys(t *testing.T) {
	_, dir, c := newMaker(t)
	const n = 16
	uris := make([]string, n)
	cts := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			m, err := localkms.NewKeyMaker(c, dir) // a maker each, as processes would have
			if err != nil {
				t.Error(err)
				return
			}
			if uris[i], err = m.CreateKey(context.Background(), "tenancy-tenant-acme"); err != nil {
				t.Error(err)
				return
			}
			a, _ := c.GetAEAD(uris[i])
			if cts[i], err = a.Encrypt([]byte("tenant keyset"), []byte("ad")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	checkDistinctKeys(t, c, dir, uris, cts)
}

// checkDistinctKeys checks that the uris are distinct, that dir holds
// their files and nothing else, and that cts[i] decrypts with uris[i] and
// with no other.
func checkDistinctKeys(t *testing.T, c *localkms.Client, dir string, uris []string, cts [][]byte) {
	t.Helper()
	if got, want := names(t, dir), base(uris...); !slices.Equal(got, want) || len(slices.Compact(got)) != len(uris) {
		t.Fatalf("directory holds %v, want %d distinct key files %v", got, len(uris), want)
	}
	for i, ct := range cts {
		for j, uri := range uris {
			err := decrypts(t, c, uri, ct)
			if i == j && err != nil {
				t.Errorf("ciphertext %d does not decrypt with its key: %v", i, err)
			}
			if i != j && !errors.Is(err, localkms.ErrDecrypt) {
				t.Errorf("ciphertext %d with key %d: %v, want ErrDecrypt", i, j, err)
			}
		}
	}
}

// TestHelperProcessCreateKey is not a test: TestConcurrentProcessesCreateKey
// runs the test binary with it to race other processes.
func TestHelperProcessCreateKey(t *testing.T) {
	dir := os.Getenv("LOCALKMS_HELPER_DIR")
	if dir == "" {
		t.Skip("helper process only")
	}
	m, err := localkms.NewKeyMaker(newClient(t), dir)
	if err != nil {
		t.Fatal(err)
	}
	uri, err := m.CreateKey(context.Background(), "tenancy-tenant-acme")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("URI=%s\nCT=%x\n", uri, encrypt(t, newClient(t), uri))
}

func TestConcurrentProcessesCreateKeyMakeDistinctKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(dir, "tenant-keys") // made by the processes
	var uris []string
	var cts [][]byte
	for _, out := range runHelpers(t, 6, "TestHelperProcessCreateKey", "LOCALKMS_HELPER_DIR="+dir) {
		var ct []byte
		if _, err := fmt.Sscanf(helperValue(t, out, "CT"), "%x", &ct); err != nil {
			t.Fatal(err)
		}
		uris, cts = append(uris, helperValue(t, out, "URI")), append(cts, ct)
	}
	checkDistinctKeys(t, newClient(t), dir, uris, cts)
}

func TestDestroyKeysDestroysEveryKeyOfThatLabelAndNothingElse(t *testing.T) {
	m, dir, c := newMaker(t)
	var acme []string
	for range 3 {
		acme = append(acme, createKey(t, m, dir, "acme"))
	}
	others := []string{createKey(t, m, dir, "acme2"), createKey(t, m, dir, "acm"), createKey(t, m, dir, "beta")}
	// Key files of other names, and other files, none of which is a key
	// the maker made with the label acme.
	local := func(name string) string { return localkms.Scheme + filepath.ToSlash(filepath.Join(dir, name)) }
	for _, name := range []string{
		"acme.key",
		"acme." + strings.ToUpper(hex32) + ".key",
		"acme." + hex32[1:] + ".key",
		"acme." + hex32 + "0.key",
		"acme." + hex32 + ".key.bak",
		"acme." + hex32 + ".KEY",
		"acme.." + hex32 + ".key",
		"acme-" + hex32 + ".key",
		"xacme." + hex32 + ".key",
	} {
		others = append(others, local(name)) // made by its first encryption, below
	}
	write(t, filepath.Join(dir, "notes.txt"), "not a key", 0o600)
	write(t, filepath.Join(dir, ".localkms-1.tmp"), "not a key", 0o600)
	cts := map[string][]byte{}
	for _, uri := range append(slices.Clone(acme), others...) {
		cts[uri] = encrypt(t, c, uri)
	}
	before := names(t, dir)
	for i := range 2 {
		if err := m.DestroyKeys(context.Background(), "acme"); err != nil {
			t.Fatalf("DestroyKeys #%d: %v", i+1, err)
		}
		want := slices.DeleteFunc(slices.Clone(before), func(n string) bool { return slices.Contains(base(acme...), n) })
		if got := names(t, dir); !slices.Equal(got, want) {
			t.Errorf("after DestroyKeys #%d the directory holds %v, want %v (it held %v)", i+1, got, want, before)
		}
	}
	for _, uri := range acme {
		if err := decrypts(t, c, uri, cts[uri]); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("destroyed key %s: Decrypt = %v, want fs.ErrNotExist", uri, err)
		}
	}
	for _, uri := range others {
		if err := decrypts(t, c, uri, cts[uri]); err != nil {
			t.Errorf("key %s does not decrypt after DestroyKeys(acme): %v", uri, err)
		}
	}
}

func TestDestroyKeysOfNoKeysIsNotAnError(t *testing.T) {
	m, dir, _ := newMaker(t)
	if err := m.DestroyKeys(context.Background(), "never"); err != nil {
		t.Fatalf("DestroyKeys of a label without keys: %v", err)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := m.DestroyKeys(context.Background(), "never"); err != nil {
		t.Fatalf("DestroyKeys with the directory gone: %v", err)
	}
}

// A file with the name of a key of the label that is not a key file of
// its own is reported and left as it is; the label's keys are destroyed
// all the same.
func TestDestroyKeysReportsWhatIsNotAKeyOfItsOwnAndLeavesIt(t *testing.T) {
	for name, setup := range map[string]func(t *testing.T, path, target string){
		"a symbolic link to another key": func(t *testing.T, path, target string) {
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		},
		"a symbolic link to nothing": func(t *testing.T, path, target string) {
			if err := os.Symlink(target+".missing", path); err != nil {
				t.Fatal(err)
			}
		},
		"a hard link to another key": func(t *testing.T, path, target string) {
			if err := os.Link(target, path); err != nil {
				t.Fatal(err)
			}
		},
		"a directory": func(t *testing.T, path, _ string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			m, dir, c := newMaker(t)
			own := createKey(t, m, dir, "acme")
			// The link's target: another label's key, and a key outside.
			beta := createKey(t, m, dir, "beta")
			outside := localkms.Scheme + filepath.ToSlash(filepath.Join(t.TempDir(), "platform.key"))
			ownCT, betaCT, outsideCT := encrypt(t, c, own), encrypt(t, c, beta), encrypt(t, c, outside)
			targets := []string{file(beta)}
			if name != "a hard link to another key" {
				targets = append(targets, file(outside)) // a hard link cannot cross file systems
			}
			var planted []string
			for i, target := range targets {
				p := filepath.Join(dir, fmt.Sprintf("acme.%031x%d.key", 0, i))
				setup(t, p, target)
				planted = append(planted, p)
			}
			before := names(t, dir)
			lfis := map[string]fs.FileInfo{}
			for _, p := range planted {
				if lfis[p], _ = os.Lstat(p); lfis[p] == nil {
					t.Fatalf("%s was not made", p)
				}
			}

			err := m.DestroyKeys(context.Background(), "acme")
			if !errors.Is(err, localkms.ErrKeyFile) {
				t.Fatalf("DestroyKeys = %v, want ErrKeyFile", err)
			}
			if strings.Contains(name, "symbolic") && !strings.Contains(err.Error(), "symbolic link") {
				t.Errorf("the error does not say the file is a symbolic link: %v", err)
			}
			for _, p := range planted {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("the error does not name %s: %v", p, err)
				}
				if fi, lerr := os.Lstat(p); lerr != nil || !os.SameFile(fi, lfis[p]) || fi.Mode() != lfis[p].Mode() {
					t.Errorf("%s was changed (%v)", p, lerr)
				}
			}
			want := slices.DeleteFunc(slices.Clone(before), func(n string) bool { return n == filepath.Base(file(own)) })
			if got := names(t, dir); !slices.Equal(got, want) {
				t.Errorf("directory went from %v to %v, want %v", before, got, want)
			}
			if err := decrypts(t, c, own, ownCT); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the label's own key: Decrypt = %v, want fs.ErrNotExist (destroyed)", err)
			}
			if err := decrypts(t, c, beta, betaCT); err != nil {
				t.Errorf("the other label's key was destroyed: %v", err)
			}
			if err := decrypts(t, c, outside, outsideCT); err != nil {
				t.Errorf("the key outside was destroyed: %v", err)
			}
		})
	}
}

func TestOwns(t *testing.T) {
	m, dir, _ := newMaker(t)
	acme := createKey(t, m, dir, "acme")
	acme2 := createKey(t, m, dir, "acme2")
	other, otherDir, _ := newMaker(t)
	otherAcme := createKey(t, other, otherDir, "acme")
	random := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(file(acme)), "acme."), ".key")

	parent, name := filepath.Dir(dir), filepath.Base(dir)
	alias := filepath.Join(parent, "alias")
	if err := os.Symlink(dir, alias); err != nil {
		t.Fatal(err)
	}
	local := func(p string) string { return localkms.Scheme + filepath.ToSlash(p) }
	d := filepath.ToSlash(dir)
	for _, tc := range []struct {
		why, uri, label string
		want            bool
	}{
		{"a URI CreateKey gave", acme, "acme", true},
		{"a URI CreateKey gave", acme2, "acme2", true},
		{"a key never made, of the right shape (nothing is opened)", local(d + "/acme." + hex32 + ".key"), "acme", true},
		{"another label", acme, "beta", false},
		{"a label that is a prefix of the key's", acme2, "acme", false},
		{"a label the key's is a prefix of", acme, "acme2", false},
		{"a label CreateKey refuses", local(d + "/Acme." + hex32 + ".key"), "Acme", false},
		{"another directory", otherAcme, "acme", false},
		{"a subdirectory", local(d + "/sub/acme." + random + ".key"), "acme", false},
		{"the parent directory", local(parent + "/acme." + random + ".key"), "acme", false},
		{"a linked directory", local(alias + "/acme." + random + ".key"), "acme", false},
		{"'..'", local(d + "/../" + name + "/acme." + random + ".key"), "acme", false},
		{"'sub/..'", local(d + "/sub/../acme." + random + ".key"), "acme", false},
		{"'.'", local(d + "/./acme." + random + ".key"), "acme", false},
		{"'//'", local(d + "//acme." + random + ".key"), "acme", false},
		{"no random part", local(d + "/acme.key"), "acme", false},
		{"an empty random part", local(d + "/acme..key"), "acme", false},
		{"upper-case hex", local(d + "/acme." + strings.ToUpper(random) + ".key"), "acme", false},
		{"31 hex digits", local(d + "/acme." + random[1:] + ".key"), "acme", false},
		{"33 hex digits", local(d + "/acme." + random + "0.key"), "acme", false},
		{"not hex", local(d + "/acme." + strings.Repeat("g", 32) + ".key"), "acme", false},
		{"another suffix", local(d + "/acme." + random + ".KEY"), "acme", false},
		{"a suffix after", local(d + "/acme." + random + ".key.bak"), "acme", false},
		{"no suffix", local(d + "/acme." + random), "acme", false},
		{"'-' for '.'", local(d + "/acme-" + random + ".key"), "acme", false},
		{"the directory", local(d), "acme", false},
		{"the directory and a slash", local(d + "/"), "acme", false},
		{"another scheme's case", "LOCAL://" + d + "/acme." + random + ".key", "acme", false},
		{"another scheme", "file://" + d + "/acme." + random + ".key", "acme", false},
		{"a relative path", "local://acme." + random + ".key", "acme", false},
		{"empty", "", "acme", false},
	} {
		if got := m.Owns(tc.uri, tc.label); got != tc.want {
			t.Errorf("%s: Owns(%q, %q) = %v, want %v", tc.why, tc.uri, tc.label, got, tc.want)
		}
	}
	if !other.Owns(otherAcme, "acme") || other.Owns(acme, "acme") {
		t.Error("the other maker owns the wrong keys")
	}
	if got, want := names(t, dir), base(acme, acme2); !slices.Equal(got, want) {
		t.Errorf("directory holds %v, want %v", got, want)
	}
}
