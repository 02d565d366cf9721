package keys

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/rtmx-ai/tenancy/tenant"
)

// bound is what [StreamingAEAD] and [MAC] share: a Tink primitive of one
// of the tenant's keysets, and a way to the primitive of a newer keyset of
// the tenant (another replica rotated it) for an input the first one
// rejects. They hold it behind a pointer, so that printing either (any fmt
// verb, slog, JSON) shows an address, never a key.
type bound[P any] struct {
	tenant tenant.ID
	p      P
	// newer returns the primitive of a newer keyset of the tenant than p's
	// if the Store holds one (hint: the rejected tag, which names its key),
	// or false.
	newer func(hint []byte) (P, bool)
}

// check returns the error of a primitive not made by the Manager (zero or
// nil), and of an input longer than the 4 GiB the associated data encoding
// takes.
func (b *bound[P]) check(what string, n int) error {
	if b == nil {
		return errZeroPrimitive(what)
	}
	if uint64(n) > math.MaxUint32 {
		return fmt.Errorf("keys: %s: %w: input longer than 4 GiB", what, ErrInvalidArgument)
	}
	return nil
}

// tenantOf returns the tenant of b, or the zero ID for a zero primitive.
func (b *bound[P]) tenantOf() tenant.ID {
	if b == nil {
		return tenant.ID{}
	}
	return b.tenant
}

// StreamingAEAD is a tenant's blob streaming AEAD (AES-256-GCM-HKDF, 4 KiB
// segments), bound to the tenant: the associated data of every stream is
// the tenant followed by the caller's associated data (the blob package
// passes the object key), so a stream copied to another tenant or another
// key does not decrypt. Get one from [Manager.StreamingAEAD]. It satisfies
// tink.StreamingAEAD, is safe for concurrent use, and prints no key
// material.
type StreamingAEAD struct{ b *bound[tink.StreamingAEAD] }

var _ tink.StreamingAEAD = (*StreamingAEAD)(nil)

// Tenant returns the tenant the stream cipher belongs to (the zero ID for
// one not made by the Manager).
func (s *StreamingAEAD) Tenant() tenant.ID {
	if s == nil {
		return tenant.ID{}
	}
	return s.b.tenantOf()
}

// NewEncryptingWriter returns a writer that encrypts what is written to it
// into w, binding the tenant and associatedData. Close it to write the last
// segment; the ciphertext is incomplete until then.
func (s *StreamingAEAD) NewEncryptingWriter(w io.Writer, associatedData []byte) (io.WriteCloser, error) {
	if s == nil {
		return nil, errZeroPrimitive("StreamingAEAD")
	}
	if err := s.b.check("StreamingAEAD", len(associatedData)); err != nil {
		return nil, err
	}
	wc, err := s.b.p.NewEncryptingWriter(w, boundAD(adBlob, s.b.tenant, associatedData))
	if err != nil {
		return nil, fmt.Errorf("keys: blob stream: %w", err)
	}
	return wc, nil
}

// NewDecryptingReader returns a reader of the plaintext of the stream r,
// which must have been made with the same tenant and associatedData. A
// stream that does not authenticate (another tenant's, another key's,
// tampered with, truncated) makes Read return an error wrapping
// [ErrDecrypt], possibly after returning the segments that did authenticate.
func (s *StreamingAEAD) NewDecryptingReader(r io.Reader, associatedData []byte) (io.Reader, error) {
	if s == nil {
		return nil, errZeroPrimitive("StreamingAEAD")
	}
	if err := s.b.check("StreamingAEAD", len(associatedData)); err != nil {
		return nil, err
	}
	ad := boundAD(adBlob, s.b.tenant, associatedData)
	rec := &recorder{r: r}
	dr, err := s.b.p.NewDecryptingReader(rec, ad)
	if err != nil {
		return nil, fmt.Errorf("keys: blob stream: %w: %w", ErrDecrypt, err)
	}
	return &decryptingReader{r: dr, rec: rec, ad: ad, newer: s.b.newer}, nil
}

// errZeroPrimitive is the error of a StreamingAEAD or MAC not made by the
// Manager: it belongs to no tenant.
func errZeroPrimitive(what string) error {
	return fmt.Errorf("keys: %s: %w: get one from Manager.%s with a tenant in the context", what, tenant.ErrNoTenant, what)
}

// maxRecord bounds what a decrypting reader keeps of its source until the
// first plaintext comes out (the header and the first segment), so that it
// can start again with a newer keyset.
const maxRecord = 1 << 20

// recorder passes reads through and keeps a copy of what they return, up
// to maxRecord bytes, until it is stopped.
type recorder struct {
	r       io.Reader
	buf     []byte
	stopped bool
	err     error // the source's first error other than io.EOF
}

func (c *recorder) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && c.err == nil {
		c.err = err
	}
	if !c.stopped {
		if len(c.buf)+n > maxRecord {
			c.stop()
		} else {
			c.buf = append(c.buf, p[:n]...)
		}
	}
	return n, err
}

func (c *recorder) stop() { c.stopped, c.buf = true, nil }

// decryptingReader maps decryption failures to ErrDecrypt (keeping the
// cause, which may be an I/O error of the source, for errors.Is). If the
// stream fails before any plaintext came out and the tenant's keyset has
// changed in the Store since it was cached (another replica rotated it),
// it starts again, once, with the newer keyset.
type decryptingReader struct {
	r     io.Reader
	rec   *recorder
	ad    []byte
	newer func([]byte) (tink.StreamingAEAD, bool)
	begun bool // plaintext came out, or the retry was made
}

// Read implements io.Reader.
func (d *decryptingReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && d.rec.err != nil {
		// The source failed: Tink reports that as a stream that does not
		// authenticate; say what happened, and start nothing again.
		if errors.Is(err, d.rec.err) {
			return n, fmt.Errorf("keys: blob stream: %w: %w", ErrDecrypt, err)
		}
		return n, fmt.Errorf("keys: blob stream: %w: reading the source: %w (%v)", ErrDecrypt, d.rec.err, err)
	}
	if !d.begun && n == 0 && err != nil && !errors.Is(err, io.EOF) && d.newer != nil && !d.rec.stopped {
		d.begun = true
		if s2, ok := d.newer(nil); ok {
			src := io.MultiReader(bytes.NewReader(d.rec.buf), d.rec.r)
			d.rec.stop()
			if dr, err2 := s2.NewDecryptingReader(src, d.ad); err2 == nil {
				d.r = dr
				n, err = d.r.Read(p)
			}
		}
	}
	if n > 0 && !d.begun {
		d.begun = true
		d.rec.stop()
	}
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("keys: blob stream: %w: %w", ErrDecrypt, err)
	}
	return n, err
}

// MAC is a tenant's audit MAC (HMAC-SHA256, 256-bit tags with a 5-byte key
// prefix), bound to the tenant: the MAC input is the tenant followed by the
// caller's data, so a tag never verifies for another tenant. Tags made
// before a rotation still verify. Get one from [Manager.MAC]. It satisfies
// tink.MAC, is safe for concurrent use, and prints no key material.
type MAC struct{ b *bound[tink.MAC] }

var _ tink.MAC = (*MAC)(nil)

// Tenant returns the tenant the MAC belongs to (the zero ID for one not
// made by the Manager).
func (m *MAC) Tenant() tenant.ID {
	if m == nil {
		return tenant.ID{}
	}
	return m.b.tenantOf()
}

// ComputeMAC returns the tag of data under the tenant's primary audit key.
func (m *MAC) ComputeMAC(data []byte) ([]byte, error) {
	if m == nil {
		return nil, errZeroPrimitive("MAC")
	}
	if err := m.b.check("MAC", len(data)); err != nil {
		return nil, err
	}
	tag, err := m.b.p.ComputeMAC(boundAD(adAudit, m.b.tenant, data))
	if err != nil {
		return nil, fmt.Errorf("keys: compute MAC: %w", err)
	}
	return tag, nil
}

// VerifyMAC returns nil if tag is the tenant's tag of data under any of its
// audit keys, and [ErrInvalidMAC] otherwise. The comparison is constant
// time.
func (m *MAC) VerifyMAC(tag, data []byte) error {
	if m == nil {
		return errZeroPrimitive("MAC")
	}
	if err := m.b.check("MAC", len(data)); err != nil {
		if errors.Is(err, ErrInvalidArgument) {
			return errVerify
		}
		return err
	}
	in := boundAD(adAudit, m.b.tenant, data)
	if m.b.p.VerifyMAC(tag, in) == nil {
		return nil
	}
	if m2, ok := m.b.newer(tag); ok && m2.VerifyMAC(tag, in) == nil {
		return nil
	}
	return errVerify
}
