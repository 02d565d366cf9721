package localkms_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/rtmx-ai/tenancy/keys/localkms"
)

func newClient(t testing.TB) *localkms.Client {
	t.Helper()
	c, err := localkms.NewClient(localkms.Scheme)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func aeadAt(t testing.TB, path string) (tink.AEAD, string) {
	t.Helper()
	uri, err := localkms.KeyURI(path)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newClient(t).GetAEAD(uri)
	if err != nil {
		t.Fatal(err)
	}
	return a, uri
}

// readKey returns the key bytes of a key file, as the tests' oracle.
func readKey(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	k, err := base64.StdEncoding.DecodeString(lines[len(lines)-1])
	if err != nil || len(k) != 32 {
		t.Fatalf("key line %q: %v (len %d)", lines[len(lines)-1], err, len(k))
	}
	return k
}

func TestEncryptCreatesKeyFileMode0600InDir0700(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "master.key")
	a, _ := aeadAt(t, path)
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("GetAEAD created the key file (stat: %v); it should wait for the first use", err)
	}
	if _, err := a.Encrypt([]byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode %04o, want 0600", got)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		di, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if got := di.Mode().Perm(); got != 0o700 {
			t.Errorf("directory %s mode %04o, want 0700", d, got)
		}
	}
	content, _ := os.ReadFile(path)
	if !strings.Contains(string(content), "NEVER FOR PRODUCTION") {
		t.Errorf("key file does not warn that it is not for production:\n%s", content)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the key file (temporary file left behind?)", len(entries))
	}
}

func TestRoundTripAndAuthenticationFailures(t *testing.T) {
	a, _ := aeadAt(t, filepath.Join(t.TempDir(), "k"))
	pt, ad := []byte("tenant keyset bytes"), []byte("tenancy/v1/keyset/acme/data")
	ct, err := a.Encrypt(pt, ad)
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Decrypt(ct, ad)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Decrypt = %q, %v; want %q", got, err, pt)
	}
	ct2, _ := a.Encrypt(pt, ad)
	if bytes.Equal(ct, ct2) {
		t.Error("two encryptions of the same plaintext are equal: nonce not random")
	}
	if _, err := a.Decrypt(ct, []byte("tenancy/v1/keyset/other/data")); !errors.Is(err, localkms.ErrDecrypt) {
		t.Errorf("other associated data: err = %v, want ErrDecrypt", err)
	}
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x01
		if _, err := a.Decrypt(bad, ad); !errors.Is(err, localkms.ErrDecrypt) {
			t.Fatalf("flipped byte %d: err = %v, want ErrDecrypt", i, err)
		}
	}
	for _, bad := range [][]byte{nil, ct[:1], ct[:len(ct)-1], append(bytes.Clone(ct), 0)} {
		if _, err := a.Decrypt(bad, ad); !errors.Is(err, localkms.ErrDecrypt) {
			t.Errorf("ciphertext of length %d: err = %v, want ErrDecrypt", len(bad), err)
		}
	}
}

func TestDecryptWithMissingKeyFileFailsAndDoesNotCreateIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	a, _ := aeadAt(t, path)
	ct, err := a.Encrypt([]byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	_, err = a.Decrypt(ct, nil)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want fs.ErrNotExist naming %s", err, path)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Decrypt created the key file (stat: %v)", err)
	}
}

func TestOtherKeyDoesNotDecrypt(t *testing.T) {
	dir := t.TempDir()
	a, _ := aeadAt(t, filepath.Join(dir, "one"))
	b, _ := aeadAt(t, filepath.Join(dir, "two"))
	ct, _ := a.Encrypt([]byte("x"), nil)
	if _, err := b.Encrypt([]byte("y"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Decrypt(ct, nil); !errors.Is(err, localkms.ErrDecrypt) {
		t.Fatalf("err = %v, want ErrDecrypt", err)
	}
}

func TestConcurrentFirstUseCreatesOneKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "race", "k")
	const n = 16
	cts := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, _ := aeadAt(t, path)
			ct, err := a.Encrypt([]byte("p"), nil)
			if err != nil {
				t.Error(err)
			}
			cts[i] = ct
		}()
	}
	wg.Wait()
	a, _ := aeadAt(t, path)
	for i, ct := range cts {
		if _, err := a.Decrypt(ct, nil); err != nil {
			t.Errorf("ciphertext of goroutine %d does not decrypt with the key on disk: two keys were made", i)
		}
	}
}

// TestHelperProcessEncrypt is not a test: TestConcurrentProcessesCreateOneKey
// runs the test binary with it to race other processes.
func TestHelperProcessEncrypt(t *testing.T) {
	path := os.Getenv("LOCALKMS_HELPER_PATH")
	if path == "" {
		t.Skip("helper process only")
	}
	a, _ := aeadAt(t, path)
	ct, err := a.Encrypt([]byte("p"), nil)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("CT=%s\n", base64.StdEncoding.EncodeToString(ct))
}

func TestConcurrentProcessesCreateOneKey(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "keys", "master.key")
	a, _ := aeadAt(t, path)
	for i, out := range runHelpers(t, 6, "TestHelperProcessEncrypt", "LOCALKMS_HELPER_PATH="+path) {
		ct, err := base64.StdEncoding.DecodeString(helperValue(t, out, "CT"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Decrypt(ct, nil); err != nil {
			t.Errorf("process %d encrypted with another key than the one on disk: %v", i, err)
		}
	}
}

// runHelpers runs n processes of the test binary at once, each running
// only the test named test with env added to its environment, and returns
// what each printed. A process that fails fails t.
func runHelpers(t *testing.T, n int, test string, env ...string) []string {
	t.Helper()
	cmds := make([]*exec.Cmd, n)
	outs := make([]*bytes.Buffer, n)
	for i := range n {
		cmds[i] = exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v")
		cmds[i].Env = append(os.Environ(), env...)
		outs[i] = new(bytes.Buffer)
		cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
	}
	for _, c := range cmds {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	printed := make([]string, n)
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("process %d: %v\n%s", i, err, outs[i])
		}
		printed[i] = outs[i].String()
	}
	return printed
}

// helperValue returns the value of the line "NAME=value" a helper process
// printed.
func helperValue(t *testing.T, out, name string) string {
	t.Helper()
	_, line, ok := strings.Cut(out, name+"=")
	if !ok {
		t.Fatalf("the process printed no %s:\n%s", name, out)
	}
	line, _, _ = strings.Cut(line, "\n")
	return line
}

func TestRefusesKeyFileAccessibleByOthers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	a, _ := aeadAt(t, path)
	ct, _ := a.Encrypt([]byte("x"), nil)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := a.Decrypt(ct, nil)
	if !errors.Is(err, localkms.ErrKeyFile) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("err = %v, want ErrKeyFile suggesting chmod 600", err)
	}
	if _, err := a.Encrypt([]byte("x"), nil); !errors.Is(err, localkms.ErrKeyFile) {
		t.Fatalf("Encrypt: err = %v, want ErrKeyFile (and the file must not be replaced)", err)
	}
}

func TestMalformedKeyFile(t *testing.T) {
	for name, content := range map[string]string{
		"empty":      "",
		"no header":  "AAAA\n",
		"no key":     "tenancy-localkms-v1\n# comment\n",
		"short key":  "tenancy-localkms-v1\n" + base64.StdEncoding.EncodeToString(make([]byte, 16)) + "\n",
		"not base64": "tenancy-localkms-v1\n!!!!\n",
		"two keys": "tenancy-localkms-v1\n" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n" +
			base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			a, _ := aeadAt(t, path)
			if _, err := a.Encrypt([]byte("x"), nil); !errors.Is(err, localkms.ErrKeyFile) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want ErrKeyFile naming the file", err)
			}
		})
	}
}

func TestURIs(t *testing.T) {
	if _, err := localkms.NewClient("file:///x"); !errors.Is(err, localkms.ErrInvalidURI) {
		t.Errorf("NewClient(file:///x): err = %v, want ErrInvalidURI", err)
	}
	all := newClient(t)
	sub, err := localkms.NewClient("local:///etc/app/")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c    *localkms.Client
		uri  string
		want bool
	}{
		{all, "local:///tmp/k", true},
		{all, "local://relative/k", false},
		{all, "local://", false},
		{all, "local://a\x00b", false},
		{all, "aws-kms://arn:aws:kms:x", false},
		{all, "LOCAL:///tmp/k", false},
		{sub, "local:///etc/app/k", true},
		{sub, "local:///etc/other/k", false},
	} {
		if got := tc.c.Supported(tc.uri); got != tc.want {
			t.Errorf("%v.Supported(%q) = %v, want %v", tc.c, tc.uri, got, tc.want)
		}
		if _, err := tc.c.GetAEAD(tc.uri); (err == nil) != tc.want {
			t.Errorf("%v.GetAEAD(%q): err = %v", tc.c, tc.uri, err)
		}
	}
	uri, err := localkms.KeyURI("k")
	if err != nil || !strings.HasPrefix(uri, "local:///") {
		t.Errorf("KeyURI(k) = %q, %v; want an absolute local:/// URI", uri, err)
	}
}

func TestDestroyKeyRemovesTheFileIdempotently(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	a, uri := aeadAt(t, path)
	ct, _ := a.Encrypt([]byte("x"), nil)
	c := newClient(t)
	for i := range 2 {
		if err := c.DestroyKey(context.Background(), uri); err != nil {
			t.Fatalf("DestroyKey #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("key file still there after DestroyKey (stat: %v)", err)
	}
	if _, err := a.Decrypt(ct, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Decrypt after DestroyKey: err = %v, want fs.ErrNotExist", err)
	}
}

func TestNothingPrintsTheKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	a, _ := aeadAt(t, path)
	if _, err := a.Encrypt([]byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	key := readKey(t, path)
	c := newClient(t)
	for _, v := range []any{a, c} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			out := fmt.Sprintf(verb, v)
			for _, enc := range []string{string(key), base64.StdEncoding.EncodeToString(key), fmt.Sprintf("%x", key), fmt.Sprint(key)} {
				if strings.Contains(out, enc) {
					t.Errorf("fmt %s of %T prints the key: %s", verb, v, out)
				}
			}
		}
	}
}

// A client restricted to a directory serves only keys inside it, however
// the path is spelled: "..", "." and doubled slashes are resolved before
// the check, so the restriction cannot be escaped.
func TestPrefixCannotBeEscaped(t *testing.T) {
	dir := t.TempDir()
	allowed := filepath.Join(dir, "allowed")
	c, err := localkms.NewClient(localkms.Scheme + allowed + "/")
	if err != nil {
		t.Fatal(err)
	}
	for _, uri := range []string{
		localkms.Scheme + allowed + "/../outside.key",
		localkms.Scheme + allowed + "/sub/../../outside.key",
		localkms.Scheme + allowed + "/./../outside.key",
		localkms.Scheme + allowed + "/..",
		localkms.Scheme + allowed + "/.",
		localkms.Scheme + allowed,
		localkms.Scheme + allowed + "2/k",
	} {
		if c.Supported(uri) {
			t.Errorf("Supported(%q) = true for a client restricted to %s/", uri, allowed)
		}
		a, err := c.GetAEAD(uri)
		if !errors.Is(err, localkms.ErrInvalidURI) {
			t.Errorf("GetAEAD(%q) = %v, want ErrInvalidURI", uri, err)
			if a != nil {
				_, _ = a.Encrypt([]byte("x"), nil)
			}
		}
		if err := c.DestroyKey(context.Background(), uri); !errors.Is(err, localkms.ErrInvalidURI) {
			t.Errorf("DestroyKey(%q) = %v, want ErrInvalidURI", uri, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "outside.key")); err == nil {
		t.Fatalf("a client restricted to %s/ created %s", allowed, filepath.Join(dir, "outside.key"))
	}
	// Spellings that stay inside are served, under their clean path.
	for _, uri := range []string{
		localkms.Scheme + allowed + "/k",
		localkms.Scheme + allowed + "//k",
		localkms.Scheme + allowed + "/./k",
		localkms.Scheme + allowed + "/sub/../k",
	} {
		if !c.Supported(uri) {
			t.Errorf("Supported(%q) = false", uri)
		}
	}
	// The prefix is a directory, not a text prefix of the path.
	noSlash, err := localkms.NewClient(localkms.Scheme + allowed)
	if err != nil {
		t.Fatal(err)
	}
	if noSlash.Supported(localkms.Scheme + allowed + "2/k") {
		t.Errorf("prefix %s serves a sibling directory %s2", allowed, allowed)
	}
	if !noSlash.Supported(localkms.Scheme + allowed + "/k") {
		t.Errorf("prefix %s does not serve %s/k", allowed, allowed)
	}
}

// Relative paths depend on the working directory, so the same URI could
// name different keys in different processes: they are refused.
func TestRelativePathsAreRefused(t *testing.T) {
	all := newClient(t)
	for _, uri := range []string{"local://relative/k", "local://./k", "local://../k", "local://k"} {
		if all.Supported(uri) {
			t.Errorf("Supported(%q) = true", uri)
		}
		if _, err := all.GetAEAD(uri); !errors.Is(err, localkms.ErrInvalidURI) || !strings.Contains(err.Error(), "absolute") {
			t.Errorf("GetAEAD(%q) = %v, want ErrInvalidURI saying the path must be absolute", uri, err)
		}
		if _, err := all.CanonicalKeyURI(uri); !errors.Is(err, localkms.ErrInvalidURI) {
			t.Errorf("CanonicalKeyURI(%q) = %v, want ErrInvalidURI", uri, err)
		}
	}
	for _, prefix := range []string{"local://relative/", "local://../x/"} {
		if _, err := localkms.NewClient(prefix); !errors.Is(err, localkms.ErrInvalidURI) {
			t.Errorf("NewClient(%q) = %v, want ErrInvalidURI", prefix, err)
		}
	}
}

// Every spelling of a key's path has one canonical URI, which is also its
// identity: that is how keys.Manager tells that two URIs name one key.
func TestCanonicalKeyURI(t *testing.T) {
	dir := t.TempDir()
	want, err := localkms.KeyURI(filepath.Join(dir, "kek", "platform.key"))
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t)
	for _, alias := range []string{
		want,
		localkms.Scheme + dir + "/kek/./platform.key",
		localkms.Scheme + dir + "//kek//platform.key",
		localkms.Scheme + dir + "/kek/x/../platform.key",
		localkms.Scheme + dir + "/other/../kek/platform.key",
	} {
		got, err := c.CanonicalKeyURI(alias)
		if err != nil || got != want {
			t.Errorf("CanonicalKeyURI(%q) = %q, %v; want %q", alias, got, err, want)
		}
		id, err := c.KeyIdentity(alias)
		if err != nil || id != want {
			t.Errorf("KeyIdentity(%q) = %q, %v; want %q", alias, id, err, want)
		}
	}
	other, _ := c.CanonicalKeyURI(localkms.Scheme + dir + "/kek/platform.key2")
	if other == want {
		t.Errorf("two keys have one canonical URI %q", want)
	}
}

// DestroyKey refuses a key file reached through a symbolic link (a link
// named as a tenant's own key must not destroy the file it points to,
// another key) and a file with other hard links (the same key under other
// names).
func TestDestroyKeyRefusesLinks(t *testing.T) {
	for name, link := range map[string]func(oldname, newname string) error{"symbolic": os.Symlink, "hard": os.Link} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(dir, "platform.key")
			a, _ := aeadAt(t, target)
			ct, err := a.Encrypt([]byte("x"), nil)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "tenant.key")
			if err := link(target, path); err != nil {
				t.Fatal(err)
			}
			uri, _ := localkms.KeyURI(path)
			if err := newClient(t).DestroyKey(context.Background(), uri); !errors.Is(err, localkms.ErrKeyFile) {
				t.Fatalf("DestroyKey(%s link) = %v, want ErrKeyFile", name, err)
			}
			if _, err := a.Decrypt(ct, nil); err != nil {
				t.Fatalf("the key behind the %s link was destroyed: %v", name, err)
			}
			if name != "hard" {
				return
			}
			// With the other name gone, it is the key's only name and goes.
			if err := os.Remove(target); err != nil {
				t.Fatal(err)
			}
			if err := newClient(t).DestroyKey(context.Background(), uri); err != nil {
				t.Fatalf("DestroyKey(only name) = %v", err)
			}
			if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("key file still there: %v", err)
			}
		})
	}
}

// symlinkedDir makes dir/real and dir/alias, a symbolic link to it, and
// returns both.
func symlinkedDir(t *testing.T) (real, alias string) {
	t.Helper()
	dir := t.TempDir()
	real, alias = filepath.Join(dir, "real"), filepath.Join(dir, "alias")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, alias); err != nil {
		t.Fatal(err)
	}
	return real, alias
}

// A key reached through a symbolic link (a linked directory, a link to the
// key file, a link to a directory that does not hold the file yet) has the
// canonical URI of the file itself: that is how keys.Manager tells that a
// tenant's "own" key is really the platform key.
func TestCanonicalKeyURIResolvesSymlinks(t *testing.T) {
	real, alias := symlinkedDir(t)
	want, err := localkms.KeyURI(filepath.Join(real, "platform.key"))
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t)
	check := func(uri, want string) {
		t.Helper()
		got, err := c.CanonicalKeyURI(uri)
		if err != nil || got != want {
			t.Errorf("CanonicalKeyURI(%q) = %q, %v; want %q", uri, got, err, want)
		}
		id, err := c.KeyIdentity(uri)
		if err != nil || id != want {
			t.Errorf("KeyIdentity(%q) = %q, %v; want %q", uri, id, err, want)
		}
	}
	// Before the key file exists: the directory's link is resolved.
	check(localkms.Scheme+alias+"/platform.key", want)
	if _, err := newClient(t).GetAEAD(want); err != nil {
		t.Fatal(err)
	}
	a, _ := aeadAt(t, filepath.Join(real, "platform.key"))
	if _, err := a.Encrypt([]byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	// After: also through a link to the file, and a missing subdirectory
	// of a linked directory.
	fileLink := filepath.Join(filepath.Dir(real), "tenant.key")
	if err := os.Symlink(filepath.Join(alias, "platform.key"), fileLink); err != nil {
		t.Fatal(err)
	}
	for _, uri := range []string{
		want,
		localkms.Scheme + alias + "/platform.key",
		localkms.Scheme + alias + "/./x/../platform.key",
		localkms.Scheme + fileLink,
	} {
		check(uri, want)
	}
	check(localkms.Scheme+alias+"/sub/new.key", localkms.Scheme+real+"/sub/new.key")
	// Under a regular file nothing can exist: the rest is kept as written.
	check(localkms.Scheme+alias+"/platform.key/sub.key", want+"/sub.key")
	// A link to nothing cannot be told apart from what it will name.
	dangling := filepath.Join(real, "dangling.key")
	if err := os.Symlink(filepath.Join(real, "nothing"), dangling); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CanonicalKeyURI(localkms.Scheme + dangling); !errors.Is(err, localkms.ErrInvalidURI) {
		t.Errorf("CanonicalKeyURI(link to nothing) = %v, want ErrInvalidURI", err)
	}
}

// DestroyKey destroys a key only by its canonical URI: through a linked
// directory it is refused and the key kept, as through a link to the file.
func TestDestroyKeyRefusesALinkedDirectory(t *testing.T) {
	real, alias := symlinkedDir(t)
	a, uri := aeadAt(t, filepath.Join(real, "platform.key"))
	ct, err := a.Encrypt([]byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t)
	for _, u := range []string{localkms.Scheme + alias + "/platform.key", localkms.Scheme + alias + "//platform.key"} {
		if err := c.DestroyKey(context.Background(), u); !errors.Is(err, localkms.ErrKeyFile) || !strings.Contains(err.Error(), uri) {
			t.Errorf("DestroyKey(%q) = %v, want ErrKeyFile naming the canonical URI %s", u, err, uri)
		}
	}
	if _, err := a.Decrypt(ct, nil); err != nil {
		t.Fatalf("the key behind the linked directory was destroyed: %v", err)
	}
	if err := c.DestroyKey(context.Background(), uri); err != nil {
		t.Fatalf("DestroyKey(canonical) = %v", err)
	}
	if _, err := a.Decrypt(ct, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Decrypt after DestroyKey: %v, want fs.ErrNotExist", err)
	}
}

// A client restricted to a directory checks the path with links resolved:
// a link inside pointing outside is refused, and a directory given through
// a link serves its keys under either spelling.
func TestPrefixCannotBeEscapedThroughASymlink(t *testing.T) {
	real, alias := symlinkedDir(t)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(real, "out")); err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{localkms.Scheme + real + "/", localkms.Scheme + alias + "/"} {
		c, err := localkms.NewClient(prefix)
		if err != nil {
			t.Fatal(err)
		}
		escape := localkms.Scheme + real + "/out/k"
		if c.Supported(escape) {
			t.Errorf("%s: Supported(%q) = true: a link leaves the directory", prefix, escape)
		}
		if _, err := c.GetAEAD(escape); !errors.Is(err, localkms.ErrInvalidURI) {
			t.Errorf("%s: GetAEAD(%q) = %v, want ErrInvalidURI", prefix, escape, err)
		}
		want := localkms.Scheme + real + "/k"
		for _, uri := range []string{want, localkms.Scheme + alias + "/k"} {
			if got, err := c.CanonicalKeyURI(uri); err != nil || got != want {
				t.Errorf("%s: CanonicalKeyURI(%q) = %q, %v; want %q", prefix, uri, got, err, want)
			}
		}
	}
}
