package tenant

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
)

// MinJobKeyLen is the shortest HMAC key a [JobCarrier] accepts, in bytes.
const MinJobKeyLen = 32

// jobEnvelopeVersion is the version of the envelope format; a carrier
// rejects envelopes of any other version.
const jobEnvelopeVersion = 1

// JobCarrier carries the tenant of a context into a background job and back.
// [JobCarrier.Seal] binds the tenant and the job payload under an
// HMAC-SHA256 tag; [JobCarrier.Open] verifies the tag before it restores the
// tenant, so an envelope whose tenant was edited (a job re-aimed at another
// tenant) or whose payload was changed is rejected with [ErrJobTampered].
//
// A JobCarrier is safe for concurrent use. Its keys are never printed, with
// any fmt verb, of the carrier or of a copy of it. The zero JobCarrier has no
// key: it seals nothing and opens nothing; make one with [NewJobCarrier].
type JobCarrier struct {
	// macs[0] seals; every one opens. Each returns a new HMAC-SHA256 keyed
	// with its key. The keys live only inside these closures, where no
	// reflection-based printer (fmt's %#v, %x, %d, bad verbs, spew) can
	// reach them: fmt prints a func as its address.
	macs []func() hash.Hash
}

// NewJobCarrier returns a carrier that seals with key and opens envelopes
// sealed with key or any of old (for key rotation). Every key must be at
// least [MinJobKeyLen] bytes of secret random data; the carrier keeps copies.
func NewJobCarrier(key []byte, old ...[]byte) (*JobCarrier, error) {
	all := append([][]byte{key}, old...)
	c := &JobCarrier{macs: make([]func() hash.Hash, 0, len(all))}
	for i, k := range all {
		if len(k) < MinJobKeyLen {
			name := "key"
			if i > 0 {
				name = fmt.Sprintf("old[%d]", i-1)
			}
			return nil, fmt.Errorf("tenant: job carrier %s is %d bytes: it must be at least %d bytes of random data", name, len(k), MinJobKeyLen)
		}
		own := append([]byte(nil), k...)
		c.macs = append(c.macs, func() hash.Hash { return hmac.New(sha256.New, own) })
	}
	return c, nil
}

// String describes the carrier without its keys.
func (c *JobCarrier) String() string {
	if c == nil {
		return "tenant.JobCarrier(nil)"
	}
	return fmt.Sprintf("tenant.JobCarrier(%d keys)", len(c.macs))
}

// keys returns the carrier's MAC constructors: none for a nil or zero
// carrier, which therefore seals and opens nothing.
func (c *JobCarrier) keys() []func() hash.Hash {
	if c == nil {
		return nil
	}
	return c.macs
}

type jobEnvelope struct {
	V       int    `json:"v"`
	Tenant  string `json:"tenant"`
	Payload []byte `json:"payload"`
	Tag     []byte `json:"tag"`
}

// tag computes the HMAC over an unambiguous encoding of version, tenant and
// payload: the tenant is length-prefixed, so no split of the same bytes
// into another tenant and payload (say "alpha" + "x\x00y" against
// "alpha\x00x" + "y") gives the same input, whatever the tenant holds.
func tag(newMAC func() hash.Hash, tenant string, payload []byte) []byte {
	m := newMAC()
	fmt.Fprintf(m, "tenancy-job-v%d\x00%d:%s", jobEnvelopeVersion, len(tenant), tenant)
	m.Write(payload)
	return m.Sum(nil)
}

// Seal returns an envelope (JSON) that carries the tenant of ctx and
// payload. It fails with an error wrapping [ErrNoTenant] when ctx carries no
// tenant: a job is never queued without one.
func (c *JobCarrier) Seal(ctx context.Context, payload []byte) ([]byte, error) {
	macs := c.keys()
	if len(macs) == 0 {
		return nil, errors.New("tenant: seal job: the JobCarrier has no key (make it with tenant.NewJobCarrier)")
	}
	id, err := Require(ctx, "tenant: seal job")
	if err != nil {
		return nil, err
	}
	env := jobEnvelope{V: jobEnvelopeVersion, Tenant: id.s, Payload: payload, Tag: tag(macs[0], id.s, payload)}
	return json.Marshal(env)
}

// Open verifies envelope and returns ctx carrying the envelope's tenant,
// together with the payload. Any envelope that is malformed, of another
// version, names an invalid tenant, or whose tag does not verify under any
// of the carrier's keys is rejected with an error wrapping [ErrJobTampered];
// the error does not echo the envelope's contents.
//
// If ctx already carries a tenant and it differs from the envelope's, Open
// fails with an error wrapping [ErrCrossTenant]: a worker bound to one
// tenant does not run another tenant's job.
func (c *JobCarrier) Open(ctx context.Context, envelope []byte) (context.Context, []byte, error) {
	var env jobEnvelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		return ctx, nil, fmt.Errorf("%w: not a job envelope", ErrJobTampered)
	}
	if env.V != jobEnvelopeVersion {
		return ctx, nil, fmt.Errorf("%w: unsupported envelope version %d (want %d)", ErrJobTampered, env.V, jobEnvelopeVersion)
	}
	ok := false
	for _, mac := range c.keys() {
		if hmac.Equal(tag(mac, env.Tenant, env.Payload), env.Tag) {
			ok = true
			break
		}
	}
	if !ok {
		return ctx, nil, fmt.Errorf("%w: integrity tag does not verify (edited tenant or payload, or unknown key)", ErrJobTampered)
	}
	id, err := ParseID(env.Tenant)
	if err != nil {
		return ctx, nil, fmt.Errorf("%w: %w", ErrJobTampered, err)
	}
	if cur, has := FromContext(ctx); has && cur != id {
		return ctx, nil, fmt.Errorf("tenant: open job: %w: the worker's context is bound to another tenant", ErrCrossTenant)
	}
	return NewContext(ctx, id), env.Payload, nil
}
