package localkms

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// maxLabelLen is the longest label, in bytes, that a KeyMaker accepts.
const maxLabelLen = 64

// randomLen is the length of the random part of a key file's name: 32
// lower-case hex digits, 128 random bits.
const randomLen = 32

// keySuffix ends the name of every key file a KeyMaker makes. A label has
// no '.', so the name LABEL.RANDOM.key parses back into its label and
// random part unambiguously, and cannot be "." or "..", nor the temporary
// name of a key file being created (".localkms-*.tmp").
const keySuffix = ".key"

// KeyMaker creates and destroys the master keys of one directory. Every
// key it creates is a new file of its own, named by its label and a random
// part: a key labelled "tenancy-tenant-acme" is a file such as
// DIR/tenancy-tenant-acme.3f9c0a1b2d4e5f60718293a4b5c6d7e8.key. No file
// is ever adopted or shared: [KeyMaker.CreateKey] fails rather than use a
// file that exists, so a URI it gives names the key it made and no other.
// It is how a platform makes a master key per tenant for development and
// tests; in production the keys are made in an HSM (keys/pkcs11kms). It
// holds no key material and is safe for concurrent use.
type KeyMaker struct {
	c      *Client
	dir    string    // clean absolute directory, links resolved
	prefix string    // "local://" followed by DIR and a separator: what every URI it gives starts with
	random io.Reader // of the names' random parts; nil for crypto/rand
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
	m := &KeyMaker{c: c, dir: resolved}
	m.prefix = strings.TrimSuffix(m.uri("x"), "x")
	return m, nil
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

// uri returns the URI of the file named name in the maker's directory.
func (m *KeyMaker) uri(name string) string {
	return Scheme + filepath.ToSlash(filepath.Join(m.dir, name))
}

// CreateKey creates a new master key labelled label, a new file of its own
// in the maker's directory named LABEL.RANDOM.key (RANDOM being 32
// lower-case hex digits from crypto/rand), and returns its URI: "local://"
// followed by the file's path, the URI [Client.CanonicalKeyURI] gives for
// it. Every call makes another key, even for a label that has keys
// already. The file is created as [Client.GetAEAD]'s first encryption
// creates one (mode 0600, written under a temporary name and linked into
// place, so that no reader sees a partial file), except that a file of
// that name that exists already is never used: that is an error wrapping
// [fs.ErrExist], and the file is left as it is.
//
// A label is 1 to 64 bytes of lowercase ASCII letters, digits, '_' and
// '-', starting with a letter or a digit. Another label fails with an
// error wrapping [ErrInvalidURI] that names the rule it breaks; so does a
// directory of the maker replaced by a symbolic link since NewKeyMaker
// (its keys would be made elsewhere).
func (m *KeyMaker) CreateKey(ctx context.Context, label string) (string, error) {
	if err := checkLabel(label); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	b := make([]byte, randomLen/2)
	r := m.random
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("localkms: %w", err)
	}
	name := label + "." + hex.EncodeToString(b) + keySuffix
	uri := m.uri(name)
	if canon, err := m.c.CanonicalKeyURI(uri); err != nil {
		return "", err
	} else if canon != uri {
		return "", fmt.Errorf("%w: %s now reaches %s through a symbolic link", ErrInvalidURI, uri, canon)
	}
	key, err := createNew(filepath.Join(m.dir, name))
	clear(key)
	if errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("%w (a random name was drawn twice: a key file is never adopted)", err)
	}
	if err != nil {
		return "", err
	}
	return uri, nil
}

// DestroyKeys destroys every key the maker made with label: every regular
// file of the maker's directory named LABEL.RANDOM.key, with RANDOM 32
// lower-case hex digits, each with [Client.DestroyKey] (overwritten with
// zeros, synced, removed). It destroys nothing else: not LABEL.key, not
// the keys of another label (of "acme2" for "acme"), not another file. No
// key of that label is not an error, nor is a missing directory.
//
// A file with such a name that is a symbolic link, or not a regular file,
// is left as it is and reported with [ErrKeyFile]; so is one that
// Client.DestroyKey refuses (a file with other hard links). The other
// keys of the label are destroyed all the same, and the errors joined. A
// key of label that CreateKey is making at the same moment may or may not
// be destroyed, and may be reported as a file with two links while it
// still has its temporary name.
//
// It fails with [ErrInvalidURI] for a label CreateKey refuses, or when a
// directory of the maker has been replaced by a symbolic link since
// NewKeyMaker.
func (m *KeyMaker) DestroyKeys(ctx context.Context, label string) error {
	if err := checkLabel(label); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if r, err := resolveLinks(m.dir); err != nil {
		return fmt.Errorf("%w: key directory %s: %w", ErrInvalidURI, m.dir, err)
	} else if r != m.dir {
		return fmt.Errorf("%w: key directory %s now reaches %s through a symbolic link", ErrInvalidURI, m.dir, r)
	}
	entries, err := os.ReadDir(m.dir)
	if missing(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("localkms: key directory %s: %w", m.dir, err)
	}
	var errs []error
	for _, e := range entries {
		if !ownsName(e.Name(), label) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		p := filepath.Join(m.dir, e.Name())
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // destroyed meanwhile
		case err != nil:
			err = fmt.Errorf("localkms: destroy %s: %w", p, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			err = fmt.Errorf("%w: destroy %s: it is a symbolic link, not a key of its own: left as it is", ErrKeyFile, p)
		case !fi.Mode().IsRegular():
			err = fmt.Errorf("%w: destroy %s: not a regular file: left as it is", ErrKeyFile, p)
		default:
			err = m.c.DestroyKey(ctx, m.uri(e.Name()))
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Owns reports whether keyURI names a key this maker makes with label, in
// the spelling CreateKey gives: "local://" followed by the maker's
// directory (as NewKeyMaker resolved it) and a file name LABEL.RANDOM.key,
// RANDOM being 32 lower-case hex digits. It is a check on the string
// alone: it opens nothing, and reports nothing about whether the key
// exists.
func (m *KeyMaker) Owns(keyURI, label string) bool {
	name, ok := strings.CutPrefix(keyURI, m.prefix)
	return ok && checkLabel(label) == nil && ownsName(name, label)
}

// ownsName reports whether name is LABEL.RANDOM.key for label, with RANDOM
// 32 lower-case hex digits.
func ownsName(name, label string) bool {
	rest, ok := strings.CutPrefix(name, label+".")
	if !ok {
		return false
	}
	random, ok := strings.CutSuffix(rest, keySuffix)
	if !ok || len(random) != randomLen {
		return false
	}
	for i := range len(random) {
		if b := random[i]; !('0' <= b && b <= '9' || 'a' <= b && b <= 'f') {
			return false
		}
	}
	return true
}

// checkLabel reports which rule of CreateKey label breaks, if any.
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

// String implements fmt.Stringer.
func (m *KeyMaker) String() string {
	return "localkms.KeyMaker{dir=" + filepath.ToSlash(m.dir) + "}"
}
