package blob

import (
	"fmt"
	"strings"

	"github.com/rtmx-ai/tenancy/keys"
)

// The stored form of an encrypted object (format "v1") is the ciphertext
// of keys.StreamingAEAD (Tink's AES-256-GCM-HKDF streaming AEAD, 4 KiB
// ciphertext segments) with the object's key, relative to the tenant's
// prefix, as associated data (keys puts the tenant in front of it). The
// object's metadata holds formatKey = formatV1.
//
// The ciphertext's length is a function of the plaintext's, one to one, so
// the plaintext size of an object is known from its stored size, in
// listings too, without reading or decrypting it; and it is authenticated:
// the stream's last segment is marked, so a ciphertext cut or extended does
// not decrypt. Object metadata cannot carry the size of a streamed object:
// S3, GCS and Azure take it when an upload starts, before the size is
// known.
const (
	formatKey = "tenancy-blob"
	formatV1  = "v1"

	// reservedMetadataPrefix starts the metadata keys this package keeps
	// for itself.
	reservedMetadataPrefix = "tenancy-"

	segmentSize  = 4096                               // ciphertext bytes per segment
	tagSize      = 16                                 // AES-GCM tag per segment
	headerSize   = 1 + 32 + 7                         // length byte, HKDF salt, nonce prefix
	firstSegment = segmentSize - headerSize - tagSize // plaintext bytes in the first segment
	nextSegment  = segmentSize - tagSize              // plaintext bytes in each later segment
)

// ciphertextSize returns the length of the v1 ciphertext of n plaintext
// bytes.
func ciphertextSize(n int64) int64 {
	segments := int64(1)
	if n > firstSegment {
		segments += (n - firstSegment + nextSegment - 1) / nextSegment
	}
	return headerSize + n + tagSize*segments
}

// plaintextSize returns the length of the plaintext of a v1 ciphertext of
// c bytes, and false if no plaintext has a ciphertext of that length.
func plaintextSize(c int64) (int64, bool) {
	if c < headerSize+tagSize {
		return 0, false
	}
	segments := int64(1)
	if c > segmentSize {
		segments += (c - segmentSize + segmentSize - 1) / segmentSize
	}
	n := c - headerSize - tagSize*segments
	if n < 0 || ciphertextSize(n) != c {
		return 0, false
	}
	return n, true
}

// associatedData is what an object's stream is bound to, besides the
// tenant (which keys.StreamingAEAD puts in front): its key, relative to the
// tenant's prefix, so that an object moves with its tenant to another
// bucket (an enterprise tenant's own) without being re-encrypted, and
// never decrypts under another key.
func associatedData(key string) []byte { return []byte(key) }

// errNotEncrypted is the error for an object under a tenant's prefix that
// this package did not write encrypted: it has no format marker, or one of
// another version, or a stored size no ciphertext has. It wraps
// keys.ErrDecrypt: such an object is read no more than a tampered one.
func errNotEncrypted(key, why string) error {
	return fmt.Errorf("blob: object %s: %w: %s", displayKey(key), keys.ErrDecrypt, why)
}

// checkFormat checks the format marker of stored metadata.
func checkFormat(key string, md map[string]string) error {
	switch v, ok := md[formatKey]; {
	case !ok:
		return errNotEncrypted(key, "not written encrypted by a tenant bucket (no "+formatKey+" metadata)")
	case v != formatV1:
		return errNotEncrypted(key, "unknown encryption format "+displayKey(v))
	}
	return nil
}

// userMetadata returns md without the keys this package keeps for itself.
func userMetadata(md map[string]string) map[string]string {
	if md == nil {
		return nil
	}
	out := make(map[string]string, len(md))
	for k, v := range md {
		if !strings.HasPrefix(k, reservedMetadataPrefix) {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
