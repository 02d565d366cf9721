package localkms

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// Scheme is the URI prefix of local master keys.
const Scheme = "local://"

const (
	keySize    = 32 // AES-256
	nonceSize  = 12
	tagSize    = 16
	version    = 1
	fileHeader = "tenancy-localkms-v1"
	fileNote   = "# tenancy local master key (local://). FOR DEVELOPMENT ONLY, NEVER FOR PRODUCTION: whoever reads this file can decrypt every tenant key it wraps."
)

var (
	// ErrInvalidURI is wrapped by errors for a key URI this client does not
	// serve (not under its prefix, or without a path), and for a label a
	// KeyMaker refuses.
	ErrInvalidURI = errors.New("localkms: invalid key URI")

	// ErrKeyFile is wrapped by errors for a key file that exists but cannot
	// be used (malformed, or accessible by group or others), for a
	// KeyMaker's directory accessible by group or others, and for a file
	// in a key's place that a KeyMaker will not destroy (a link, or not a
	// regular file).
	ErrKeyFile = errors.New("localkms: unusable key file")

	// ErrDecrypt is wrapped by errors for a ciphertext that does not
	// decrypt with the key.
	ErrDecrypt = errors.New("localkms: decryption failed")
)

// Client is a Tink KMS client for local:// master keys. It holds no key
// material; it is safe for concurrent use.
type Client struct {
	prefix string
	root   string // clean absolute directory, links resolved, the keys must be in; "" for any
}

var _ registry.KMSClient = (*Client)(nil)

// NewClient returns a client for local:// key URIs. uriPrefix must start
// with "local://". "local://" alone serves every local key; a longer prefix
// names a directory ("local:///etc/app/keys/", with or without the final
// slash) and restricts the client to key files inside it. The check is made
// on the path with "..", "." and doubled slashes cleaned and symbolic links
// resolved, in the key path and in the directory alike, so that neither
// ".." nor a link can leave the directory. The directory's links are
// resolved here, when it exists; one that does not exist yet is resolved as
// far as it does.
func NewClient(uriPrefix string) (*Client, error) {
	if !strings.HasPrefix(uriPrefix, Scheme) {
		return nil, fmt.Errorf("%w: uriPrefix %q must start with %q", ErrInvalidURI, uriPrefix, Scheme)
	}
	c := &Client{prefix: uriPrefix}
	if dir := uriPrefix[len(Scheme):]; dir != "" {
		p := filepath.FromSlash(dir)
		if strings.ContainsRune(p, 0) || !filepath.IsAbs(p) {
			return nil, fmt.Errorf("%w: uriPrefix %q must name an absolute directory (local:///DIR/)", ErrInvalidURI, uriPrefix)
		}
		root, err := resolveLinks(filepath.Clean(p))
		if err != nil {
			return nil, fmt.Errorf("%w: uriPrefix %q: %w", ErrInvalidURI, uriPrefix, err)
		}
		c.root = root
	}
	return c, nil
}

// KeyURI returns the local:// URI of the key file at path, made absolute
// and clean. It does not resolve symbolic links: [Client.CanonicalKeyURI]
// gives the canonical URI of the key, which does.
func KeyURI(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("localkms: %w", err)
	}
	return Scheme + filepath.ToSlash(abs), nil
}

// Supported reports whether keyURI is a local:// URI naming an absolute
// path inside the client's directory (with links resolved). A path whose
// links cannot be resolved is checked as written, so that the client that
// serves it reports why ([Client.CanonicalKeyURI], [Client.GetAEAD]).
func (c *Client) Supported(keyURI string) bool {
	p, err := cleanPath(keyURI)
	if err != nil {
		return false
	}
	if r, err := resolveLinks(p); err == nil {
		p = r
	}
	return filepath.Dir(p) != p && c.inRoot(p)
}

// inRoot reports whether the path p is inside the client's directory.
func (c *Client) inRoot(p string) bool {
	if c.root == "" {
		return true
	}
	rel, err := filepath.Rel(c.root, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// CanonicalKeyURI returns the canonical URI of the key keyURI names:
// "local://" followed by the clean absolute path with symbolic links
// resolved, so that every spelling of one path ("./", "//", "dir/../", a
// linked directory, a link to the key file) gives the same URI. The key
// file need not exist yet: links are resolved in the part of the path that
// exists. It fails with [ErrInvalidURI] for a URI the client does not serve
// or whose links cannot be resolved (a link to nothing, a loop). keys.Manager
// stores and compares master keys by this URI.
//
// A hard link to a key file is another file name, and so another URI; so
// is a path whose links are changed after the key was provisioned.
// [Client.DestroyKey] destroys a key only by its canonical URI.
func (c *Client) CanonicalKeyURI(keyURI string) (string, error) {
	p, err := c.path(keyURI)
	if err != nil {
		return "", err
	}
	return Scheme + filepath.ToSlash(p), nil
}

// KeyIdentity returns the identity of the key keyURI names, which for a
// local key is its canonical URI ([Client.CanonicalKeyURI]): the path is
// the key.
func (c *Client) KeyIdentity(keyURI string) (string, error) {
	return c.CanonicalKeyURI(keyURI)
}

// path returns the canonical file path keyURI names (clean, absolute,
// links resolved), checking that it is inside the client's directory.
func (c *Client) path(keyURI string) (string, error) {
	p, err := cleanPath(keyURI)
	if err != nil {
		return "", err
	}
	r, err := resolveLinks(p)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrInvalidURI, keyURI, err)
	}
	if filepath.Dir(r) == r {
		return "", fmt.Errorf("%w: %q names no file", ErrInvalidURI, keyURI)
	}
	if !c.inRoot(r) {
		return "", fmt.Errorf("%w: %q is not inside %s, the directory this client is restricted to (symbolic links resolved)", ErrInvalidURI, keyURI, c.root)
	}
	return r, nil
}

// cleanPath returns the clean absolute file path keyURI names, as written:
// links not resolved.
func cleanPath(keyURI string) (string, error) {
	if !strings.HasPrefix(keyURI, Scheme) {
		return "", fmt.Errorf("%w: %q is not a %s URI", ErrInvalidURI, keyURI, Scheme)
	}
	p := filepath.FromSlash(keyURI[len(Scheme):])
	if p == "" || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%w: %q names no file", ErrInvalidURI, keyURI)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%w: %q: the path must be absolute (local:///PATH): a relative path names another file in another working directory", ErrInvalidURI, keyURI)
	}
	p = filepath.Clean(p)
	if filepath.Dir(p) == p {
		return "", fmt.Errorf("%w: %q names no file", ErrInvalidURI, keyURI)
	}
	return p, nil
}

// resolveLinks resolves the symbolic links in the clean absolute path p,
// which need not exist: the links of its longest existing ancestor are
// resolved and the rest appended. A link to nothing is an error (what it
// names would change when its target is made), as is anything but a
// missing path that stops the resolution (a loop, a permission error).
func resolveLinks(p string) (string, error) {
	r, err := filepath.EvalSymlinks(p)
	for range 3 {
		if err == nil {
			return r, nil
		}
		if !missing(err) {
			return "", fmt.Errorf("resolving symbolic links: %w", err)
		}
		fi, lerr := os.Lstat(p)
		if missing(lerr) {
			// Resolved as it is named, in its resolved directory, even if
			// another process creates it now: that does not change the path.
			return resolveParent(p)
		}
		if lerr != nil {
			return "", fmt.Errorf("resolving symbolic links: %w", lerr)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if _, serr := os.Stat(p); missing(serr) {
				return "", fmt.Errorf("resolving symbolic links: %s is a symbolic link to nothing", p)
			}
		}
		// p (or what its link names) was made since EvalSymlinks looked,
		// by another process creating the same key: look again.
		r, err = filepath.EvalSymlinks(p)
	}
	if err == nil {
		return r, nil
	}
	if _, lerr := os.Lstat(p); !missing(lerr) {
		return "", fmt.Errorf("resolving symbolic links: %s keeps changing while it is resolved", p)
	}
	return resolveParent(p)
}

// resolveParent resolves the links of the directory of p, which does not
// exist, and appends its name.
func resolveParent(p string) (string, error) {
	dir := filepath.Dir(p)
	if dir == p {
		return p, nil
	}
	rd, err := resolveLinks(dir)
	if err != nil {
		return "", err
	}
	return filepath.Join(rd, filepath.Base(p)), nil
}

// missing reports whether err says that a path does not exist: no such
// file, or a file where a directory should be (which then cannot hold it).
func missing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// GetAEAD returns the AEAD of the key file named by keyURI. It does not
// touch the file: Encrypt creates it if missing, Decrypt requires it.
func (c *Client) GetAEAD(keyURI string) (tink.AEAD, error) {
	p, err := c.path(keyURI)
	if err != nil {
		return nil, err
	}
	return &fileAEAD{path: p}, nil
}

// DestroyKey destroys the key file named by keyURI: it overwrites it with
// zeros, syncs it and removes it. A missing file is not an error. It
// destroys a key only by its canonical URI ([Client.CanonicalKeyURI]): a
// URI that reaches the file through a symbolic link (in its directories or
// the file name) is refused with [ErrKeyFile], so that a link named as one
// key cannot destroy another; so is anything but a regular file, and a
// file with other hard links (other names for the same key). See the
// package documentation for what this does not guarantee.
func (c *Client) DestroyKey(ctx context.Context, keyURI string) error {
	p, err := c.path(keyURI)
	if err != nil {
		return err
	}
	if written, err := cleanPath(keyURI); err != nil {
		return err
	} else if written != p {
		return fmt.Errorf("%w: destroy %s: it reaches %s through a symbolic link; destroy the key by its canonical URI %s",
			ErrKeyFile, written, p, Scheme+filepath.ToSlash(p))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	lfi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("localkms: destroy %s: %w", p, err)
	}
	if lfi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("%w: destroy %s: it is a symbolic link; destroy the key file it points to by its own URI", ErrKeyFile, p)
	}
	if !lfi.Mode().IsRegular() {
		return fmt.Errorf("%w: destroy %s: not a regular file", ErrKeyFile, p)
	}
	if n := links(lfi); n > 1 {
		// Overwriting would destroy the key for every other name too.
		return fmt.Errorf("%w: destroy %s: the file has %d hard links, so the key has other names (URIs) that may be in use; remove the other links first", ErrKeyFile, p, n)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("localkms: destroy %s: %w", p, err)
	}
	fi, err := f.Stat()
	if err == nil && !os.SameFile(lfi, fi) {
		err = fmt.Errorf("%w: it was replaced while being destroyed", ErrKeyFile)
	}
	if err == nil {
		_, err = f.WriteAt(make([]byte, fi.Size()), 0)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("localkms: destroy %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("localkms: destroy %s: %w", p, err)
	}
	syncDir(filepath.Dir(p))
	return nil
}

// String implements fmt.Stringer.
func (c *Client) String() string { return "localkms.Client{prefix=" + c.prefix + "}" }

// fileAEAD is the AEAD of one key file. It reads the key for each call.
type fileAEAD struct {
	path string
}

// String implements fmt.Stringer; the AEAD holds no key, only its path.
func (a *fileAEAD) String() string { return "localkms.AEAD{" + a.path + "}" }

// GoString implements fmt.GoStringer.
func (a *fileAEAD) GoString() string { return a.String() }

func gcm(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Encrypt encrypts plaintext with the key, creating the key file first if
// it does not exist.
func (a *fileAEAD) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	key, err := loadOrCreate(a.path)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	g, err := gcm(key)
	if err != nil {
		return nil, fmt.Errorf("localkms: %s: %w", a.path, err)
	}
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(plaintext)+tagSize)
	out[0] = version
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("localkms: %w", err)
	}
	return g.Seal(out, out[1:], plaintext, associatedData), nil
}

// Decrypt decrypts a ciphertext of Encrypt. It never creates the key file.
func (a *fileAEAD) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	key, err := load(a.path)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	if len(ciphertext) < 1+nonceSize+tagSize || ciphertext[0] != version {
		return nil, fmt.Errorf("%w with key %s", ErrDecrypt, a.path)
	}
	g, err := gcm(key)
	if err != nil {
		return nil, fmt.Errorf("localkms: %s: %w", a.path, err)
	}
	pt, err := g.Open(nil, ciphertext[1:1+nonceSize], ciphertext[1+nonceSize:], associatedData)
	if err != nil {
		return nil, fmt.Errorf("%w with key %s", ErrDecrypt, a.path)
	}
	return pt, nil
}

// load reads the key file at path.
func load(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("localkms: key file %s does not exist (the master key is unavailable): %w", path, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("localkms: key file %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("localkms: key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrKeyFile, path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o: it must not be accessible by group or others (chmod 600 %s)",
			ErrKeyFile, path, fi.Mode().Perm(), path)
	}
	const maxFile = 4096
	content, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	defer clear(content)
	if err != nil {
		return nil, fmt.Errorf("localkms: key file %s: %w", path, err)
	}
	if len(content) > maxFile {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrKeyFile, path, maxFile)
	}
	return parse(path, content)
}

func parse(path string, content []byte) ([]byte, error) {
	sc := bufio.NewScanner(bytes.NewReader(content))
	if !sc.Scan() || sc.Text() != fileHeader {
		return nil, fmt.Errorf("%w: %s does not start with %q", ErrKeyFile, path, fileHeader)
	}
	var key []byte
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if key != nil {
			clear(key)
			return nil, fmt.Errorf("%w: %s has more than one key line", ErrKeyFile, path)
		}
		key = make([]byte, base64.StdEncoding.DecodedLen(len(line)))
		n, err := base64.StdEncoding.Decode(key, line)
		if err != nil || n != keySize {
			clear(key)
			return nil, fmt.Errorf("%w: %s: the key line is not %d bytes in base64", ErrKeyFile, path, keySize)
		}
		key = key[:n]
	}
	if key == nil {
		return nil, fmt.Errorf("%w: %s holds no key", ErrKeyFile, path)
	}
	return key, nil
}

// loadOrCreate reads the key file at path, creating it with a fresh key if
// it does not exist. Processes racing to create it end up with one key: the
// loser of the race reads the winner's.
func loadOrCreate(path string) ([]byte, error) {
	key, err := load(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key, err = createNew(path)
	if errors.Is(err, fs.ErrExist) {
		return load(path) // another process or goroutine won the race
	}
	return key, err
}

// createNew writes a fresh key to path atomically and returns it: the file
// is written and synced under a temporary name in the same directory, then
// hard-linked to path, which fails if path exists (an error wrapping
// fs.ErrExist; the existing file is left as it is). No reader ever sees a
// partial file.
func createNew(path string) ([]byte, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("localkms: create key file %s: %w", path, err)
	}
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("localkms: %w", err)
	}
	content := make([]byte, 0, 256)
	content = append(content, fileHeader+"\n"+fileNote+"\n"...)
	content = base64.StdEncoding.AppendEncode(content, key)
	content = append(content, '\n')
	defer clear(content)

	tmp, err := os.CreateTemp(dir, ".localkms-*.tmp") // mode 0600
	if err != nil {
		clear(key)
		return nil, fmt.Errorf("localkms: create key file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(content)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
		// Until the temporary name goes the key file has two links, and
		// Client.DestroyKey refuses it: remove it now, not when returning.
		_ = os.Remove(tmp.Name())
	}
	if err != nil {
		clear(key)
		return nil, fmt.Errorf("localkms: create key file %s: %w", path, err)
	}
	syncDir(dir)
	return key, nil
}

// syncDir makes a directory entry change durable, where the platform allows.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
