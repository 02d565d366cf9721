package tenant

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"hash"
	"testing"
)

// No other split of the same bytes into tenant, job ID, audience, expiry
// and payload gives the same tag: the tenant grammar is not what keeps a
// job from being relabelled.
func TestJobTagEncodingIsUnambiguous(t *testing.T) {
	mac := func() hash.Hash { return hmac.New(sha256.New, bytes.Repeat([]byte{7}, 32)) }
	envs := []jobEnvelope{
		{Tenant: "alpha", ID: "x\x00y"}, {Tenant: "alpha\x00x", ID: "y"},
		{Tenant: "alpha", ID: "1:b"}, {Tenant: "alpha1", ID: ":b"},
		{Tenant: "a", ID: "b", Audience: "c"}, {Tenant: "a", ID: "bc"}, {Tenant: "ab", ID: "c"},
		{Tenant: "a", ID: "b", Payload: []byte("c")}, {Tenant: "a", ID: "b", Audience: "", Payload: []byte("1:c")},
		{Tenant: "a", ID: "b", Expires: 12}, {Tenant: "a", ID: "b", Expires: 1, Payload: []byte("2")},
		{Tenant: "a", ID: "b", Audience: "q", Expires: 3}, {Tenant: "a", ID: "bq", Expires: 3},
	}
	seen := map[string]jobEnvelope{}
	for _, e := range envs {
		k := string(tag(mac, &e))
		if prev, ok := seen[k]; ok {
			t.Fatalf("%+v has the tag of %+v", e, prev)
		}
		seen[k] = e
	}
}
