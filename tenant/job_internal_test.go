package tenant

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"hash"
	"testing"
)

// No split of the same bytes into another tenant and payload gives the same
// tag: the tenant grammar is not what keeps a job from being relabelled.
func TestJobTagEncodingIsUnambiguous(t *testing.T) {
	mac := func() hash.Hash { return hmac.New(sha256.New, bytes.Repeat([]byte{7}, 32)) }
	pairs := [][2]string{
		{"alpha", "x\x00y"}, {"alpha\x00x", "y"},
		{"alpha", "1:b"}, {"alpha1", ":b"},
		{"a", "bc"}, {"ab", "c"},
	}
	seen := map[string]string{}
	for _, p := range pairs {
		k := string(tag(mac, p[0], []byte(p[1])))
		if prev, ok := seen[k]; ok {
			t.Fatalf("tenant %q payload %q has the tag of %s", p[0], p[1], prev)
		}
		seen[k] = p[0] + "|" + p[1]
	}
}
