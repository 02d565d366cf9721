package pkcs11kms

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThalesGroup/crypto11"
)

// sessionWait bounds how long an operation waits for a free PKCS#11
// session before it fails.
const sessionWait = 10 * time.Second

// gcmNonceSize is the GCM IV length: 96 bits, as NIST SP 800-38D
// recommends for random IVs.
const gcmNonceSize = 12

// moduleKey resolves symlinks in a module path: a library loaded under two
// names is one library to the dynamic linker, and initialising or
// finalising it once per name would break the other users.
func moduleKey(k *KeyURI) (tokenKey, error) {
	module, err := filepath.EvalSymlinks(k.ModulePath)
	if err != nil {
		return tokenKey{}, fmt.Errorf("%w: cannot load PKCS#11 module %s: %w", ErrHSM, k.ModulePath, err)
	}
	return tokenKey{module, k.Token}, nil
}

// tokenKey names one token of one module: the unit that shares a crypto11
// Context within the process.
type tokenKey struct{ module, token string }

// tokenConn is the process-wide connection to one token: a crypto11
// Context, logged in, shared by every Client that names the token. A
// PKCS#11 login is per application and token, not per session, so there is
// exactly one per token in the process.
type tokenConn struct {
	key    tokenKey
	ctx    *crypto11.Context
	pinSum []byte // salted SHA-256 of the PIN that logged in

	refs   int         // Clients holding this conn; guarded by conns.mu
	broken atomic.Bool // token/module reported gone: do not hand out again
	genMu  sync.Mutex  // serialises GenerateKey, DestroyKey and KeyMaker.CreateKey on this token
}

var conns = struct {
	mu sync.Mutex
	m  map[tokenKey]*tokenConn
}{m: map[tokenKey]*tokenConn{}}

// pinSalt salts the PIN digests kept to check that a second URI naming an
// open token brings the same PIN.
var pinSalt = func() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}()

func pinDigest(pin []byte) []byte {
	h := sha256.New()
	h.Write(pinSalt)
	h.Write(pin)
	return h.Sum(nil)
}

// acquire returns the shared connection to k's token, opening and logging
// in if there is none, and takes a reference on it. An open connection is
// handed out only to a caller presenting the same PIN: the token would
// otherwise accept any PIN (CKR_USER_ALREADY_LOGGED_IN).
//
// key.module is the module path with symlinks resolved (see moduleKey).
func acquire(key tokenKey, k *KeyURI, pin []byte) (*tokenConn, error) {
	sum := pinDigest(pin)
	conns.mu.Lock()
	defer conns.mu.Unlock()
	if c := conns.m[key]; c != nil {
		if !c.broken.Load() {
			if err := c.checkPIN(sum); err != nil {
				return nil, err
			}
			c.refs++
			return c, nil
		}
		delete(conns.m, key) // closed when its last holder releases it
	}
	cfg := &crypto11.Config{
		Path:            key.module,
		TokenLabel:      k.Token,
		Pin:             string(pin),
		GCMIVLength:     gcmNonceSize,
		PoolWaitTimeout: sessionWait,
	}
	ctx, err := protect(func() (*crypto11.Context, error) { return crypto11.Configure(cfg) })
	cfg.Pin = ""
	if err != nil {
		return nil, openError(k, err)
	}
	c := &tokenConn{key: key, ctx: ctx, pinSum: sum, refs: 1}
	conns.m[key] = c
	return c, nil
}

func openError(k *KeyURI, err error) error {
	msg := err.Error()
	code := ckr(err)
	switch {
	case pinRejected(code):
		return fmt.Errorf("%w: token %s refused the PIN from %s (%s)", ErrPIN, quote(k.Token), k.PINSource, code)
	case strings.Contains(msg, "could not find PKCS#11 token"):
		return fmt.Errorf("%w: no token labelled %s in module %s", ErrTokenNotFound, quote(k.Token), k.ModulePath)
	case strings.Contains(msg, "failed to open module"):
		return fmt.Errorf("%w: cannot load PKCS#11 module %s", ErrHSM, k.ModulePath)
	}
	return fmt.Errorf("%w: opening token %s in module %s: %w", ErrHSM, quote(k.Token), k.ModulePath, err)
}

func (c *tokenConn) checkPIN(sum []byte) error {
	if subtle.ConstantTimeCompare(sum, c.pinSum) != 1 {
		return fmt.Errorf("%w: token %s is already open in this process with a different PIN", ErrPIN, quote(c.key.token))
	}
	return nil
}

// release drops a reference; the last one closes the crypto11 Context
// (which, for the last Context on a module, finalises the module).
func (c *tokenConn) release() error {
	conns.mu.Lock()
	c.refs--
	last := c.refs == 0
	if last && conns.m[c.key] == c {
		delete(conns.m, c.key)
	}
	conns.mu.Unlock()
	if !last {
		return nil
	}
	_, err := protect(func() (struct{}, error) { return struct{}{}, c.ctx.Close() })
	if err != nil {
		return fmt.Errorf("%w: closing token %s: %w", ErrHSM, quote(c.key.token), err)
	}
	return nil
}

// noteError marks the connection broken when err says the token, session
// or module is gone, so that the next GetAEAD opens a new one.
func (c *tokenConn) noteError(err error) {
	if err != nil && tokenGone(ckr(err)) {
		c.broken.Store(true)
	}
}

// protect calls f, turning a panic into an error wrapping ErrHSM. Every
// call into crypto11 goes through it: crypto11 panics on module errors in
// cipher.AEAD.Seal, and a PKCS#11 module may misbehave in other ways.
func protect[T any](f func() (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			var zero T
			v, err = zero, panicError(r)
		}
	}()
	return f()
}

// call runs f through protect, giving up when ctx is done. PKCS#11 calls
// cannot be interrupted: when ctx ends first, f keeps running in its own
// goroutine and its result is dropped. With a context that can never be
// cancelled, f runs on the caller's goroutine.
func call[T any](ctx context.Context, f func() (T, error)) (T, error) {
	if err := ctx.Err(); err != nil {
		var zero T
		return zero, err
	}
	if ctx.Done() == nil {
		return protect(f)
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := protect(f)
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// readPIN reads the PIN named by a pin-source (already validated by
// ParseKeyURI). Leading and trailing white space is trimmed.
func readPIN(src string) ([]byte, error) {
	kind, arg, _ := strings.Cut(src, ":")
	var pin []byte
	switch kind {
	case "env":
		v, ok := os.LookupEnv(arg)
		if !ok {
			return nil, fmt.Errorf("%w: pin-source %s: environment variable not set", ErrPIN, src)
		}
		pin = []byte(v)
	case "file":
		b, err := readSmallFile(arg)
		if err != nil {
			return nil, fmt.Errorf("%w: pin-source %s: %w", ErrPIN, src, err)
		}
		pin = b
	default:
		return nil, fmt.Errorf("%w: pin-source %s: unsupported", ErrPIN, src)
	}
	pin = []byte(strings.TrimSpace(string(pin)))
	if len(pin) == 0 {
		return nil, fmt.Errorf("%w: pin-source %s: empty PIN", ErrPIN, src)
	}
	return pin, nil
}

// readSmallFile reads a regular file of at most maxPINFileSize bytes; it
// refuses FIFOs and devices, which could block or never end.
func readSmallFile(name string) ([]byte, error) {
	// Stat before Open: opening a FIFO blocks until it has a writer.
	if fi, err := os.Stat(name); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPINFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPINFileSize {
		return nil, errors.New("larger than 1 KiB")
	}
	return b, nil
}
