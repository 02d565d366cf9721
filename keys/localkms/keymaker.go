package localkms

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// maxLabelLen is the longest label, in bytes, that KeyMaker.KeyURI accepts.
const maxLabelLen = 64

// keySuffix ends the name of every key file a KeyMaker makes. A label has
// no '.', so the name cannot be "." or "..", nor the temporary name of a
// key file being created (".localkms-*.tmp").
const keySuffix = ".key"

// KeyMaker creates and destroys the master keys of one directory, one key
// file per label: the key labelled "tenancy-tenant-acme" is the file
// DIR/tenancy-tenant-acme.key. It is how a platform makes a master key per
// tenant for development and tests; in production the keys are made in an
// HSM (keys/pkcs11kms). It serves only the URIs [KeyMaker.KeyURI] gives, so it cannot
// create or destroy any other file. It holds no key material and is safe
// for concurrent use.
type KeyMaker struct {
	c   *Client
	dir string // clean absolute directory, links resolved
}

// NewKeyMaker returns a KeyMaker for the key files in dir, an absolute
// directory that c serves. dir is created with mode 0700 (and its missing
// parents too) if it does not exist; an existing dir must not be
// accessible by group or others (chmod 700 fixes it), since whoever can
// write to it can replace a key file or put a link in its place. The
// symbolic links in dir are resolved here, once: the URIs of its keys name
// the resolved directory.
//
// It fails with [ErrInvalidURI] for a nil client, a relative dir or a dir
// c does not serve, and with [ErrKeyFile] for a dir that is not a
// directory or is accessible by group or others.
func NewKeyMaker(c *Client, dir string) (*KeyMaker, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: NewKeyMaker: nil client", ErrInvalidURI)
	}
	if dir == "" || strings.ContainsRune(dir, 0) || !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("%w: key directory %q must be an absolute path", ErrInvalidURI, dir)
	}
	dir = filepath.Clean(dir)
	// Check before creating anything, and again once dir exists.
	resolved, err := resolveLinks(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: key directory %s: %w", ErrInvalidURI, dir, err)
	}
	if err := c.servesDir(dir, resolved); err != nil {
		return nil, err
	}
	fi, err := os.Stat(resolved)
	if missing(err) {
		if err := os.MkdirAll(resolved, 0o700); err != nil {
			return nil, fmt.Errorf("localkms: key directory %s: %w", dir, err)
		}
		if resolved, err = filepath.EvalSymlinks(resolved); err != nil {
			return nil, fmt.Errorf("localkms: key directory %s: %w", dir, err)
		}
		if err := c.servesDir(dir, resolved); err != nil {
			return nil, err
		}
		fi, err = os.Stat(resolved)
	}
	if err != nil {
		return nil, fmt.Errorf("localkms: key directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: key directory %s is not a directory", ErrKeyFile, dir)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: key directory %s has mode %04o: it must not be accessible by group or others (chmod 700 %s)",
			ErrKeyFile, dir, fi.Mode().Perm(), dir)
	}
	return &KeyMaker{c: c, dir: resolved}, nil
}

// servesDir fails with ErrInvalidURI unless the client serves the files in
// dir, whose links resolve to resolved.
func (c *Client) servesDir(dir, resolved string) error {
	if !c.inRoot(filepath.Join(resolved, "k"+keySuffix)) {
		return fmt.Errorf("%w: key directory %s is not inside %s, the directory the client is restricted to (symbolic links resolved)",
			ErrInvalidURI, dir, c.root)
	}
	return nil
}

// KeyURI returns the URI of the master key labelled label: "local://"
// followed by DIR/LABEL.key, with DIR the directory as NewKeyMaker resolved
// it. It creates nothing and reads nothing; while no link replaces the key
// file or a directory above it, the URI is the one [Client.CanonicalKeyURI]
// gives for the key (CreateKey checks that it is).
//
// A label is 1 to 64 bytes of lowercase ASCII letters, digits, '_' and
// '-', starting with a letter or a digit. Another label fails with an
// error wrapping [ErrInvalidURI] that names the rule it breaks.
func (m *KeyMaker) KeyURI(label string) (string, error) {
	if err := checkLabel(label); err != nil {
		return "", err
	}
	return m.uri(label), nil
}

func (m *KeyMaker) uri(label string) string {
	return Scheme + filepath.ToSlash(filepath.Join(m.dir, label+keySuffix))
}

// checkLabel reports which rule of KeyURI label breaks, if any.
func checkLabel(label string) error {
	if label == "" {
		return fmt.Errorf("%w: label must not be empty", ErrInvalidURI)
	}
	if len(label) > maxLabelLen {
		return fmt.Errorf("%w: label %.16q... is %d bytes, longer than %d", ErrInvalidURI, label, len(label), maxLabelLen)
	}
	if b := label[0]; !lowerOrDigit(b) {
		return fmt.Errorf("%w: label %q must start with a lowercase letter or a digit (a-z, 0-9), not %q", ErrInvalidURI, label, b)
	}
	for i := 1; i < len(label); i++ {
		if b := label[i]; !lowerOrDigit(b) && b != '_' && b != '-' {
			return fmt.Errorf("%w: label %q has %q at byte %d: only lowercase letters, digits, '_' and '-' are allowed (a-z, 0-9, _, -)", ErrInvalidURI, label, b, i)
		}
	}
	return nil
}

func lowerOrDigit(b byte) bool { return 'a' <= b && b <= 'z' || '0' <= b && b <= '9' }

// path returns the file path of keyURI if it is a URI KeyURI gives, spelled
// exactly so, and fails with ErrInvalidURI otherwise.
func (m *KeyMaker) path(keyURI string) (string, error) {
	prefix := strings.TrimSuffix(m.uri("x"), "x"+keySuffix) // "local:///DIR/"
	label, ok := strings.CutPrefix(keyURI, prefix)
	if ok {
		label, ok = strings.CutSuffix(label, keySuffix)
	}
	if !ok || checkLabel(label) != nil || m.uri(label) != keyURI {
		return "", fmt.Errorf("%w: %q is not a key of this key maker (%sLABEL%s)", ErrInvalidURI, keyURI, prefix, keySuffix)
	}
	return filepath.Join(m.dir, label+keySuffix), nil
}

// CreateKey creates the key file keyURI names, a URI [KeyMaker.KeyURI]
// gave, unless it exists already: then it is adopted as it is, so that
// CreateKey is idempotent (a provisioning resumed after a crash finds the
// key it made). It creates the file as [Client.GetAEAD]'s first encryption
// does: mode 0600, atomically, so that processes racing to create one key
// end up with the same key.
//
// It fails with [ErrInvalidURI] for another URI (another directory,
// another spelling, a name KeyURI would not give), or when a directory on
// the way has been replaced by a symbolic link since NewKeyMaker; and with
// [ErrKeyFile] for an existing file it cannot adopt: malformed, accessible
// by group or others, not a regular file, a symbolic link (even to another
// key of this directory: two labels would share one key), or a file with
// other hard links (the key under another name).
func (m *KeyMaker) CreateKey(ctx context.Context, keyURI string) error {
	p, err := m.path(keyURI)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkName(p); err != nil {
		return err
	}
	if canon, err := m.c.CanonicalKeyURI(keyURI); err != nil {
		return err
	} else if canon != keyURI {
		return fmt.Errorf("%w: %s now reaches %s through a symbolic link", ErrInvalidURI, keyURI, canon)
	}
	key, err := loadOrCreate(p)
	clear(key)
	if err != nil {
		return err
	}
	return checkOneName(ctx, p)
}

// checkName fails with ErrKeyFile if the file at p exists and is anything
// but a regular file: a symbolic link is not followed.
func checkName(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("localkms: key file %s: %w", p, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("%w: %s is a symbolic link: a key of a key maker is a file of its own", ErrKeyFile, p)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ErrKeyFile, p)
	}
	return nil
}

// linkWait bounds how long checkOneName waits for a second name to go.
const linkWait = time.Second

// checkOneName checks that the key file at p, which exists, is a regular
// file with no other name. A second hard link can be the temporary name
// under which create wrote the key, for the moment between linking it
// into place and removing it; it waits up to linkWait for it to go.
func checkOneName(ctx context.Context, p string) error {
	start, pause := time.Now(), time.Millisecond
	for {
		if err := checkName(p); err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("localkms: key file %s: %w", p, err)
		}
		n := links(fi)
		if n <= 1 {
			return nil
		}
		if time.Since(start) >= linkWait {
			return fmt.Errorf("%w: %s has %d hard links, so the key has other names that may be in use; remove the other links first", ErrKeyFile, p, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// DestroyKey destroys the key file keyURI names, a URI [KeyMaker.KeyURI]
// gave, with [Client.DestroyKey]: no other file. A key that does not exist
// is not an error. It fails with [ErrInvalidURI] for another URI, and with
// what Client.DestroyKey fails with otherwise (a symbolic link or a file
// with other hard links in the key's place is refused, [ErrKeyFile]).
func (m *KeyMaker) DestroyKey(ctx context.Context, keyURI string) error {
	if _, err := m.path(keyURI); err != nil {
		return err
	}
	return m.c.DestroyKey(ctx, keyURI)
}

// String implements fmt.Stringer.
func (m *KeyMaker) String() string {
	return "localkms.KeyMaker{dir=" + filepath.ToSlash(m.dir) + "}"
}
