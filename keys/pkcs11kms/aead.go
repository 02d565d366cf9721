package pkcs11kms

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/tink"
)

var (
	_ tink.AEAD            = (*hsmAEAD)(nil)
	_ tink.AEADWithContext = (*hsmAEAD)(nil)
)

// gcmTagSize is the length of the GCM authentication tag.
const gcmTagSize = 16

// hsmAEAD is AES-256-GCM computed inside the token. Its ciphertext is
// nonce (12 bytes) || GCM ciphertext || tag (16 bytes).
type hsmAEAD struct {
	client *Client
	conn   *tokenConn
	uri    string // canonical key URI, for errors
	gcm    cipher.AEAD
}

// String names the key; the AEAD holds no key material.
func (a *hsmAEAD) String() string { return "pkcs11kms AEAD " + a.uri }

// Encrypt encrypts plaintext with associatedData under a fresh random nonce.
func (a *hsmAEAD) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	return a.EncryptWithContext(context.Background(), plaintext, associatedData)
}

// Decrypt decrypts a ciphertext made by Encrypt with the same associated
// data. Every authentication failure is the same [ErrDecrypt].
func (a *hsmAEAD) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	return a.DecryptWithContext(context.Background(), ciphertext, associatedData)
}

// EncryptWithContext is Encrypt, giving up when ctx is done.
func (a *hsmAEAD) EncryptWithContext(ctx context.Context, plaintext, associatedData []byte) ([]byte, error) {
	if a.client.closed.Load() {
		return nil, ErrClosed
	}
	out, err := call(ctx, func() ([]byte, error) {
		buf := make([]byte, gcmNonceSize, gcmNonceSize+len(plaintext)+gcmTagSize)
		_, _ = rand.Read(buf) // never fails (crypto/rand, Go 1.24+)
		// Seal appends to buf after the nonce, which it only reads.
		return a.gcm.Seal(buf, buf[:gcmNonceSize], plaintext, associatedData), nil
	})
	if err != nil {
		return nil, a.opError("encrypt", err)
	}
	return out, nil
}

// DecryptWithContext is Decrypt, giving up when ctx is done.
func (a *hsmAEAD) DecryptWithContext(ctx context.Context, ciphertext, associatedData []byte) ([]byte, error) {
	if a.client.closed.Load() {
		return nil, ErrClosed
	}
	if len(ciphertext) < gcmNonceSize+gcmTagSize {
		return nil, ErrDecrypt
	}
	out, err := call(ctx, func() ([]byte, error) {
		return a.gcm.Open(nil, ciphertext[:gcmNonceSize], ciphertext[gcmNonceSize:], associatedData)
	})
	if err != nil {
		yes, maybe := authFailed(ckr(err))
		if yes {
			return nil, ErrDecrypt
		}
		if maybe {
			// Tell a bad ciphertext from a failing module: if the key
			// still round-trips, the ciphertext was at fault.
			if perr := a.probe(ctx); perr != nil {
				return nil, a.opError("decrypt", perr)
			}
			return nil, ErrDecrypt
		}
		return nil, a.opError("decrypt", err)
	}
	return out, nil
}

// probe encrypts and decrypts an empty message with the key.
func (a *hsmAEAD) probe(ctx context.Context) error {
	_, err := call(ctx, func() ([]byte, error) {
		nonce := make([]byte, gcmNonceSize)
		_, _ = rand.Read(nonce)
		ct := a.gcm.Seal(nil, nonce, nil, nil)
		return a.gcm.Open(nil, nonce, ct, nil)
	})
	return err
}

func (a *hsmAEAD) opError(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	a.conn.noteError(err)
	if a.client.closed.Load() {
		return ErrClosed
	}
	if keyGone(ckr(err)) {
		return fmt.Errorf("%w: %s: %s: key no longer in the token: %w", ErrKeyNotFound, op, a.uri, err)
	}
	return fmt.Errorf("%w: %s with %s: %w", ErrHSM, op, a.uri, err)
}
