package keys

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/rtmx-ai/tenancy/tenant"
)

// probeAD is the associated data of the probes that compare master keys.
var probeAD = []byte("tenancy/keys: master key probe")

// errKEKGone is returned by probe for a key its KMS client says does not
// exist (KeyChecker).
var errKEKGone = errors.New("the master key does not exist")

// Two URIs that spell one key differently are caught by KeyIdentifier; two
// that reach one key by different ways are not: another PKCS#11 module file
// (a copy of the vendor's, or the p11-kit proxy) for the same token, a hard
// link to a key file. The probes below compare keys by what they do: a
// working key that decrypts what another key encrypted is that key.

// exists asks r's KMS client whether the key exists. known is false when
// the client cannot tell (it does not implement KeyChecker).
func (m *Manager) exists(ctx context.Context, r kekRef) (exists, known bool, err error) {
	kc, ok := r.client.(KeyChecker)
	if !ok {
		return false, false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, m.loadTimeout)
	defer cancel()
	err = protect(func() error {
		var err error
		exists, err = kc.KeyExists(ctx, r.uri)
		return err
	})
	if err != nil {
		return false, true, fmt.Errorf("%w: master key %s: %w", ErrUnwrap, DisplayURI(r.uri), err)
	}
	return exists, true, nil
}

// probe encrypts a random value with the master key r, bounded by
// Config.LoadTimeout. A key its client says does not exist gives an error
// wrapping errKEKGone, and is not used (a local key file would be created),
// unless create: for a key about to be used (a new tenant's own key,
// created by its first use).
func (m *Manager) probe(ctx context.Context, r kekRef, create bool) (pt, ct []byte, err error) {
	if !create {
		ok, known, err := m.exists(ctx, r)
		if err != nil {
			return nil, nil, err
		}
		if known && !ok {
			return nil, nil, fmt.Errorf("%w: %s", errKEKGone, DisplayURI(r.uri))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, m.loadTimeout)
	defer cancel()
	k, err := m.kekCounted(r.uri, &m.kekProbes)
	if err != nil {
		return nil, nil, err
	}
	pt = make([]byte, 16)
	if _, err := rand.Read(pt); err != nil {
		return nil, nil, err
	}
	if ct, err = k.EncryptWithContext(ctx, pt, probeAD); err != nil {
		return nil, nil, fmt.Errorf("%w: master key %s: %w", ErrUnwrap, DisplayURI(r.uri), err)
	}
	return pt, ct, nil
}

// decrypts reports whether the master key r decrypts ct to pt. Only for a
// key known to work (see works) does false mean "another key".
func (m *Manager) decrypts(ctx context.Context, r kekRef, pt, ct []byte) bool {
	ctx, cancel := context.WithTimeout(ctx, m.loadTimeout)
	defer cancel()
	k, err := m.kekCounted(r.uri, &m.kekProbes)
	if err != nil {
		return false
	}
	got, err := k.DecryptWithContext(ctx, ct, probeAD)
	return err == nil && bytes.Equal(got, pt)
}

// opensProbeOf reports whether the working master key r decrypts a probe
// that the master key o encrypted: whether they are one key. It fails when
// o does not answer (wrapping errKEKGone when o does not exist).
func (m *Manager) opensProbeOf(ctx context.Context, r, o kekRef) (bool, error) {
	pt, ct, err := m.probe(ctx, o, false)
	if err != nil {
		return false, err
	}
	return m.decrypts(ctx, r, pt, ct), nil
}

// eachKeyset calls fn for every keyset opts selects (opts.Limit is the
// page size, 500 if 0), in (tenant, purpose) order, until fn returns false
// or an error.
func (m *Manager) eachKeyset(ctx context.Context, opts ListOptions, fn func(WrappedKeyset) (bool, error)) error {
	if opts.Limit <= 0 {
		opts.Limit = 500
	}
	for {
		batch, err := m.store.List(ctx, opts)
		if err != nil {
			return fmt.Errorf("list keysets: %w", err)
		}
		for _, w := range batch {
			opts.AfterTenant, opts.AfterPurpose = w.Tenant, w.Purpose
			if more, err := fn(w); err != nil || !more {
				return err
			}
		}
		if len(batch) < opts.Limit {
			return nil
		}
	}
}

// works checks that the master key r encrypts and decrypts its own probe.
// Its error wraps errKEKGone for a key its client says does not exist,
// unless create (see probe).
func (m *Manager) works(ctx context.Context, r kekRef, create bool) error {
	pt, ct, err := m.probe(ctx, r, create)
	if err != nil {
		return err
	}
	if !m.decrypts(ctx, r, pt, ct) {
		return fmt.Errorf("%w: master key %s does not decrypt what it encrypted", ErrUnwrap, DisplayURI(r.uri))
	}
	return nil
}

// aliasOf tells whether the master key r, about to become tenant id's own
// or to be destroyed as its own, is in fact the platform master key, a
// retired one, or a key of another tenant (its own, or one the platform
// wrapped it with) reached another way. It returns a description of the
// key r is, or "" if none. r must work: call works first.
//
// Each other key encrypts a probe that r must not decrypt. The platform
// key must answer (or its client must say it does not exist), or aliasOf
// fails; with strict (before destroying r), so must the retired platform
// keys. Another tenant's key that does not answer cannot be told apart and
// is passed over with a warning. A key its client says does not exist is
// passed over: r works, so it is not that key.
func (m *Manager) aliasOf(ctx context.Context, r kekRef, id tenant.ID, strict bool) (string, error) {
	if m.isRetired(r) {
		return "a retired platform master key (Config.RetiredKEKs)", nil
	}
	if m.platform.uri != "" {
		is, err := m.opensProbeOf(ctx, r, m.platform)
		if errors.Is(err, errKEKGone) {
			is, err = false, nil // not made yet (a local key is made by its first use): r works, so it is not r
		}
		if err != nil {
			return "", fmt.Errorf("cannot tell master key %s from the platform master key, which does not answer: %w", DisplayURI(r.uri), err)
		}
		if is {
			return "the platform master key (Config.PlatformKEK)", nil
		}
	}
	others, err := m.otherKEKs(ctx, r, id)
	if err != nil {
		return "", err
	}
	for i, o := range append(append([]kekRef(nil), m.retired...), others...) {
		retired := i < len(m.retired)
		is, err := m.opensProbeOf(ctx, r, o)
		if errors.Is(err, errKEKGone) {
			continue
		}
		if err != nil && strict && retired {
			return "", fmt.Errorf("cannot tell master key %s from retired platform master key %s, which does not answer: %w", DisplayURI(r.uri), DisplayURI(o.uri), err)
		}
		if err != nil {
			// Another tenant's key that does not answer (its customer
			// revoked it, a PIN source gone) cannot be compared; failing
			// here would let one such key block every Shred in the fleet.
			m.log.WarnContext(ctx, "keys: a master key does not answer and cannot be compared", "kek", DisplayURI(o.uri), "compared_with", DisplayURI(r.uri), "err", err)
			continue
		}
		if is {
			if retired {
				return "a retired platform master key (Config.RetiredKEKs)", nil
			}
			return "another tenant's master key", nil
		}
	}
	return "", nil
}

// otherKEKs lists the distinct master keys, own or platform-managed, that
// wrap keysets of tenants other than id, other than r, the platform key
// and the retired ones, that a KMS client serves.
func (m *Manager) otherKEKs(ctx context.Context, r kekRef, id tenant.ID) ([]kekRef, error) {
	seen := map[string]bool{r.identity: true} // identities
	if m.platform.identity != "" {
		seen[m.platform.identity] = true
	}
	for _, o := range m.retired {
		seen[o.identity] = true
	}
	uris, err := m.kekURIs(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("list master keys in use: %w", err)
	}
	var out []kekRef
	for _, uri := range uris {
		o, err := m.resolve(uri)
		if err != nil || seen[o.identity] {
			continue
		}
		seen[o.identity] = true
		out = append(out, o)
	}
	return out, nil
}

// kekURIs returns the distinct master key URIs of the keysets of tenants
// other than except, through the Store's KEKLister if it has one, else by
// listing every keyset.
func (m *Manager) kekURIs(ctx context.Context, except tenant.ID) ([]string, error) {
	if l, ok := m.store.(KEKLister); ok {
		return l.KEKURIs(ctx, except)
	}
	stored := map[string]bool{}
	var out []string
	err := m.eachKeyset(ctx, ListOptions{}, func(w WrappedKeyset) (bool, error) {
		if w.Tenant != except && !stored[w.KEKURI] {
			stored[w.KEKURI] = true
			out = append(out, w.KEKURI)
		}
		return true, nil
	})
	return out, err
}

// checkNotOwnKEK fails, with an error wrapping ErrInvalidArgument and
// ErrKEKInUse, if r is some tenant's own master key (by identity, or by a
// probe), unless from is not a platform key and that tenant's keysets are
// all on r or from, some on from (a customer rotating its own key from
// from to r, resumed).
func (m *Manager) checkNotOwnKEK(ctx context.Context, r, from kekRef) error {
	err := m.eachKeyset(ctx, r.filter(), func(w WrappedKeyset) (bool, error) {
		if !w.TenantKEK {
			return true, nil
		}
		ok := false
		if !m.isPlatform(from) && !m.isRetired(from) {
			var err error
			if ok, err = m.onlyOn(ctx, w.Tenant, r, from); err != nil {
				return false, err
			}
		}
		if !ok {
			return false, fmt.Errorf("%w: %w: master key %s is tenant %s's own", ErrInvalidArgument, ErrKEKInUse, DisplayURI(r.uri), w.Tenant)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	if err := m.works(ctx, r, true); err != nil {
		return err
	}
	others, err := m.otherKEKs(ctx, r, tenant.ID{})
	if err != nil {
		return err
	}
	for _, o := range others {
		if o.identity == from.identity {
			continue
		}
		is, err := m.opensProbeOf(ctx, r, o)
		if err != nil {
			continue // r is checked against keys that answer
		}
		if is {
			return fmt.Errorf("%w: %w: master key %s reaches a key that wraps other keysets by another way", ErrInvalidArgument, ErrKEKInUse, DisplayURI(r.uri))
		}
	}
	return nil
}

// onlyOn reports whether every keyset of tenant id is wrapped by a or b,
// and at least one by b.
func (m *Manager) onlyOn(ctx context.Context, id tenant.ID, a, b kekRef) (bool, error) {
	onB := false
	for _, p := range Purposes() {
		w, err := m.store.Get(ctx, id, p)
		if errors.Is(err, ErrNoKeys) {
			continue
		}
		if err != nil {
			return false, err
		}
		switch {
		case m.sameKEK(w.KEKURI, b):
			onB = true
		case !m.sameKEK(w.KEKURI, a):
			return false, nil
		}
	}
	return onB, nil
}
