package keys

import (
	"fmt"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/mac"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"github.com/tink-crypto/tink-go/v2/streamingaead"
)

// Purpose names one of a tenant's keysets. Every tenant has one keyset per
// purpose, each wrapped by the master key separately, with the purpose in
// the associated data, so a keyset cannot be used for another purpose.
type Purpose string

const (
	// PurposeData is the AEAD keyset (AES-256-GCM) of [Manager.Seal] and
	// [Manager.Open]: field and record encryption.
	PurposeData Purpose = "data"

	// PurposeBlob is the streaming AEAD keyset (AES-256-GCM-HKDF, 4 KiB
	// segments) of [Manager.StreamingAEAD]: object encryption.
	PurposeBlob Purpose = "blob"

	// PurposeAudit is the MAC keyset (HMAC-SHA256, 256-bit tags) of
	// [Manager.MAC]: the audit hash chain.
	PurposeAudit Purpose = "audit"
)

// Purposes lists every purpose, in the order keysets are provisioned.
func Purposes() []Purpose { return []Purpose{PurposeData, PurposeBlob, PurposeAudit} }

// ParsePurpose returns the purpose named s, or an error wrapping
// [ErrInvalidArgument].
func ParsePurpose(s string) (Purpose, error) {
	p := Purpose(s)
	if !p.Valid() {
		return "", fmt.Errorf("%w: purpose %q is not one of data, blob, audit", ErrInvalidArgument, s)
	}
	return p, nil
}

// Valid reports whether p is one of [PurposeData], [PurposeBlob] and
// [PurposeAudit].
func (p Purpose) Valid() bool {
	switch p {
	case PurposeData, PurposeBlob, PurposeAudit:
		return true
	}
	return false
}

// String returns the purpose's name.
func (p Purpose) String() string { return string(p) }

// template returns the Tink key template of new keys for p.
//
//   - data: AES256_GCM with the TINK output prefix, so a ciphertext names the
//     key that sealed it and opening after rotation costs one lookup.
//   - blob: AES256_GCM_HKDF_4KB. 4 KiB segments keep the memory of each open
//     stream at a few KiB (a service handles many concurrent uploads across
//     many tenants), make ranged reads cheap, and cost 16 bytes of tag per
//     4 KiB (0.4 %). 1 MiB segments would save a little CPU per byte but hold
//     1 MiB per stream and make a 100-byte ranged read decrypt 1 MiB.
//   - audit: HMAC_SHA256 with 256-bit tags, as a MAC (not a PRF): the chain
//     needs verification, which the MAC interface does in constant time, and
//     the TINK prefix on each tag names the key, so an audit log that spans a
//     key rotation still verifies. A PRF set computes only with the primary
//     key and leaves both problems to the caller.
func (p Purpose) template() *tinkpb.KeyTemplate {
	switch p {
	case PurposeData:
		return aead.AES256GCMKeyTemplate()
	case PurposeBlob:
		return streamingaead.AES256GCMHKDF4KBKeyTemplate()
	case PurposeAudit:
		return mac.HMACSHA256Tag256KeyTemplate()
	}
	return nil
}
