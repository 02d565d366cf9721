package tenant

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"time"
	"unicode/utf8"
)

// MinJobKeyLen is the shortest HMAC key a [JobCarrier] accepts, in bytes.
const MinJobKeyLen = 32

// jobEnvelopeVersion is the version of the envelope format; a carrier
// rejects envelopes of any other version. Version 2 added the job ID,
// the expiry and the audience (version 1 envelopes never expired).
const jobEnvelopeVersion = 2

// MaxJobIDLen is the longest job ID and audience a [JobCarrier] takes, in
// bytes.
const MaxJobIDLen = 200

// JobCarrier carries the tenant of a context into a background job and back.
// [JobCarrier.Seal] binds the tenant, the job's ID, expiry and audience (the
// queue it is for) and its payload under an HMAC-SHA256 tag;
// [JobCarrier.Open] verifies the tag before it restores the tenant, so an
// envelope whose tenant was edited (a job re-aimed at another tenant), or
// whose payload, ID, expiry or audience was changed, is rejected with
// [ErrJobTampered]. Open also rejects an expired envelope
// ([ErrJobExpired]), one for another queue ([ErrJobMisdirected]) and, given
// a record of the jobs already run, a replay ([ErrJobReplayed]).
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

// Job is what a [JobCarrier] seals besides the tenant, and what Open
// returns.
type Job struct {
	// ID names the job, unique among the jobs of its tenant (a UUID, or
	// the job table's key): what Open's replay check remembers. Required,
	// 1 to MaxJobIDLen bytes of UTF-8.
	ID string
	// Audience is the queue (or worker kind) the job is for; Open refuses
	// it anywhere else. "" seals a job for no queue in particular, which
	// only an Open that names no audience takes. At most MaxJobIDLen bytes.
	Audience string
	// Expires is when the envelope stops being accepted. Required, and in
	// the future when sealed. Open returns it as sealed, to the
	// nanosecond, in UTC.
	Expires time.Time
	// Payload is the job's own data, opaque to the carrier.
	Payload []byte
}

// OpenOptions are what [JobCarrier.Open] checks beyond the tag.
type OpenOptions struct {
	// Audience is the queue this worker serves: the envelope's audience
	// must equal it ("" only takes jobs sealed for no queue).
	Audience string
	// Seen, if set, is asked once the envelope verified (tag, expiry,
	// audience), and reports whether job id of tenant was seen before;
	// it must record it too, atomically (a unique key in the job table:
	// INSERT ... ON CONFLICT DO NOTHING, seen when no row was inserted).
	// A job seen before is rejected with ErrJobReplayed; an error of Seen
	// fails Open. Without Seen, Open cannot detect replays.
	Seen func(ctx context.Context, tenant ID, jobID string) (bool, error)
	// Now returns the time expiry is checked against; nil means time.Now.
	Now func() time.Time
}

type jobEnvelope struct {
	V        int    `json:"v"`
	Tenant   string `json:"tenant"`
	ID       string `json:"id"`
	Audience string `json:"aud,omitempty"`
	Expires  int64  `json:"exp"` // Unix nanoseconds
	Payload  []byte `json:"payload"`
	Tag      []byte `json:"tag"`
}

// tag computes the HMAC over an unambiguous encoding of the envelope's
// version and fields: each is length-prefixed, so no other split of the
// same bytes into tenant, ID, audience, expiry and payload (say "alpha" +
// "x\x00y" against "alpha\x00x" + "y") gives the same input, whatever
// the fields hold.
func tag(newMAC func() hash.Hash, e *jobEnvelope) []byte {
	m := newMAC()
	fmt.Fprintf(m, "tenancy-job-v%d\x00", jobEnvelopeVersion)
	for _, f := range []string{e.Tenant, e.ID, e.Audience, strconv.FormatInt(e.Expires, 10)} {
		fmt.Fprintf(m, "%d:%s", len(f), f)
	}
	fmt.Fprintf(m, "%d:", len(e.Payload))
	m.Write(e.Payload)
	return m.Sum(nil)
}

func validJobField(name, v string, required bool) error {
	switch {
	case required && v == "":
		return fmt.Errorf("field %s: must be set", name)
	case len(v) > MaxJobIDLen:
		return fmt.Errorf("field %s: must be at most %d bytes", name, MaxJobIDLen)
	case !utf8.ValidString(v):
		return fmt.Errorf("field %s: must be UTF-8", name)
	}
	return nil
}

// Seal returns an envelope (JSON) that carries the tenant of ctx and job.
// It fails with an error wrapping [ErrNoTenant] when ctx carries no
// tenant (a job is never queued without one), and names the field of job
// that is missing or invalid (ID, Audience, Expires).
func (c *JobCarrier) Seal(ctx context.Context, job Job) ([]byte, error) {
	macs := c.keys()
	if len(macs) == 0 {
		return nil, errors.New("tenant: seal job: the JobCarrier has no key (make it with tenant.NewJobCarrier)")
	}
	id, err := Require(ctx, "tenant: seal job")
	if err != nil {
		return nil, err
	}
	var errs []error
	errs = append(errs, validJobField("ID", job.ID, true), validJobField("Audience", job.Audience, false))
	switch {
	case job.Expires.IsZero():
		errs = append(errs, errors.New("field Expires: must be set (when the job stops being accepted)"))
	case !job.Expires.After(time.Now()):
		errs = append(errs, fmt.Errorf("field Expires: %s is not in the future", job.Expires.UTC().Format(time.RFC3339)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("tenant: seal job: %w", err)
	}
	env := jobEnvelope{V: jobEnvelopeVersion, Tenant: id.s, ID: job.ID, Audience: job.Audience,
		Expires: job.Expires.UnixNano(), Payload: job.Payload}
	env.Tag = tag(macs[0], &env)
	return json.Marshal(env)
}

// Open verifies envelope and returns ctx carrying the envelope's tenant,
// together with the job. It rejects, in this order:
//
//   - an envelope that is malformed, of another version, names an invalid
//     tenant, or whose tag does not verify under any of the carrier's keys:
//     [ErrJobTampered] (the error does not echo the envelope's contents);
//   - an envelope past its expiry: [ErrJobExpired];
//   - an envelope for another audience than opts.Audience:
//     [ErrJobMisdirected];
//   - a job opts.Seen has seen before: [ErrJobReplayed].
//
// If ctx already carries a tenant and it differs from the envelope's, Open
// fails with an error wrapping [ErrCrossTenant]: a worker bound to one
// tenant does not run another tenant's job.
func (c *JobCarrier) Open(ctx context.Context, envelope []byte, opts OpenOptions) (context.Context, Job, error) {
	var env jobEnvelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		return ctx, Job{}, fmt.Errorf("%w: not a job envelope", ErrJobTampered)
	}
	if env.V != jobEnvelopeVersion {
		return ctx, Job{}, fmt.Errorf("%w: unsupported envelope version %d (want %d)", ErrJobTampered, env.V, jobEnvelopeVersion)
	}
	ok := false
	for _, mac := range c.keys() {
		if hmac.Equal(tag(mac, &env), env.Tag) {
			ok = true
			break
		}
	}
	if !ok {
		return ctx, Job{}, fmt.Errorf("%w: integrity tag does not verify (edited tenant, job or payload, or unknown key)", ErrJobTampered)
	}
	id, err := ParseID(env.Tenant)
	if err != nil {
		return ctx, Job{}, fmt.Errorf("%w: %w", ErrJobTampered, err)
	}
	job := Job{ID: env.ID, Audience: env.Audience, Expires: time.Unix(0, env.Expires).UTC(), Payload: env.Payload}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	if t := now(); !t.Before(job.Expires) {
		return ctx, Job{}, fmt.Errorf("tenant: open job %q: %w at %s (%s ago)", job.ID, ErrJobExpired,
			job.Expires.Format(time.RFC3339), t.Sub(job.Expires).Round(time.Second))
	}
	if job.Audience != opts.Audience {
		return ctx, Job{}, fmt.Errorf("tenant: open job %q: %w: sealed for audience %q, opened for %q", job.ID, ErrJobMisdirected, job.Audience, opts.Audience)
	}
	if cur, has := FromContext(ctx); has && cur != id {
		return ctx, Job{}, fmt.Errorf("tenant: open job: %w: the worker's context is bound to another tenant", ErrCrossTenant)
	}
	if opts.Seen != nil {
		seen, err := opts.Seen(ctx, id, job.ID)
		if err != nil {
			return ctx, Job{}, fmt.Errorf("tenant: open job %q: replay check: %w", job.ID, err)
		}
		if seen {
			return ctx, Job{}, fmt.Errorf("tenant: open job %q: %w", job.ID, ErrJobReplayed)
		}
	}
	return NewContext(ctx, id), job, nil
}
