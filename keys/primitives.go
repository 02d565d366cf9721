package keys

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"

	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/rtmx-ai/tenancy/tenant"
)

// StreamingAEAD is a tenant's blob streaming AEAD (AES-256-GCM-HKDF, 4 KiB
// segments), bound to the tenant: the associated data of every stream is
// the tenant followed by the caller's associated data (the blob package
// passes the object key), so a stream copied to another tenant or another
// key does not decrypt. Get one from [Manager.StreamingAEAD]. It satisfies
// tink.StreamingAEAD, is safe for concurrent use, and prints no key
// material.
type StreamingAEAD struct {
	tenant tenant.ID
	s      tink.StreamingAEAD
}

var _ tink.StreamingAEAD = (*StreamingAEAD)(nil)

// Tenant returns the tenant the stream cipher belongs to.
func (s *StreamingAEAD) Tenant() tenant.ID { return s.tenant }

// NewEncryptingWriter returns a writer that encrypts what is written to it
// into w, binding the tenant and associatedData. Close it to write the last
// segment; the ciphertext is incomplete until then.
func (s *StreamingAEAD) NewEncryptingWriter(w io.Writer, associatedData []byte) (io.WriteCloser, error) {
	if uint64(len(associatedData)) > math.MaxUint32 {
		return nil, fmt.Errorf("keys: %w: associated data longer than 4 GiB", ErrInvalidArgument)
	}
	wc, err := s.s.NewEncryptingWriter(w, boundAD(adBlob, s.tenant, associatedData))
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
	if uint64(len(associatedData)) > math.MaxUint32 {
		return nil, fmt.Errorf("keys: %w: associated data longer than 4 GiB", ErrInvalidArgument)
	}
	dr, err := s.s.NewDecryptingReader(r, boundAD(adBlob, s.tenant, associatedData))
	if err != nil {
		return nil, fmt.Errorf("keys: blob stream: %w: %w", ErrDecrypt, err)
	}
	return &decryptingReader{r: dr}, nil
}

// decryptingReader maps decryption failures to ErrDecrypt (keeping the
// cause, which may be an I/O error of the source, for errors.Is).
type decryptingReader struct{ r io.Reader }

// Read implements io.Reader.
func (d *decryptingReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("keys: blob stream: %w: %w", ErrDecrypt, err)
	}
	return n, err
}

// String implements fmt.Stringer; it prints no key material.
func (s StreamingAEAD) String() string {
	return "keys.StreamingAEAD{tenant=" + s.tenant.String() + "}"
}

// GoString implements fmt.GoStringer; it prints no key material.
func (s StreamingAEAD) GoString() string { return s.String() }

// LogValue implements slog.LogValuer; it logs no key material.
func (s StreamingAEAD) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MAC is a tenant's audit MAC (HMAC-SHA256, 256-bit tags with a 5-byte key
// prefix), bound to the tenant: the MAC input is the tenant followed by the
// caller's data, so a tag never verifies for another tenant. Tags made
// before a rotation still verify. Get one from [Manager.MAC]. It satisfies
// tink.MAC, is safe for concurrent use, and prints no key material.
type MAC struct {
	tenant tenant.ID
	m      tink.MAC
}

var _ tink.MAC = (*MAC)(nil)

// Tenant returns the tenant the MAC belongs to.
func (m *MAC) Tenant() tenant.ID { return m.tenant }

// ComputeMAC returns the tag of data under the tenant's primary audit key.
func (m *MAC) ComputeMAC(data []byte) ([]byte, error) {
	if uint64(len(data)) > math.MaxUint32 {
		return nil, fmt.Errorf("keys: %w: MAC input longer than 4 GiB", ErrInvalidArgument)
	}
	tag, err := m.m.ComputeMAC(boundAD(adAudit, m.tenant, data))
	if err != nil {
		return nil, fmt.Errorf("keys: compute MAC: %w", err)
	}
	return tag, nil
}

// VerifyMAC returns nil if tag is the tenant's tag of data under any of its
// audit keys, and [ErrInvalidMAC] otherwise. The comparison is constant
// time.
func (m *MAC) VerifyMAC(tag, data []byte) error {
	if uint64(len(data)) > math.MaxUint32 {
		return ErrInvalidMAC
	}
	if m.m.VerifyMAC(tag, boundAD(adAudit, m.tenant, data)) != nil {
		return ErrInvalidMAC
	}
	return nil
}

// String implements fmt.Stringer; it prints no key material.
func (m MAC) String() string { return "keys.MAC{tenant=" + m.tenant.String() + "}" }

// GoString implements fmt.GoStringer; it prints no key material.
func (m MAC) GoString() string { return m.String() }

// LogValue implements slog.LogValuer; it logs no key material.
func (m MAC) LogValue() slog.Value { return slog.StringValue(m.String()) }
