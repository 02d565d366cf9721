package keys

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"

	"github.com/rtmx-ai/tenancy/tenant"
)

// probeAD is the associated data of the probes that compare master keys.
var probeAD = []byte("tenancy/keys: master key probe")

// Two URIs that spell one key differently are caught by KeyIdentifier; two
// that reach one key by different ways are not: another PKCS#11 module file
// (a copy of the vendor's, or the p11-kit proxy) for the same token, a hard
// link to a key file. The probes below compare keys by what they do: a key
// that decrypts what another encrypted is that key.

// probe encrypts a random value with the master key r, bounded by
// Config.LoadTimeout.
func (m *Manager) probe(ctx context.Context, r kekRef) (pt, ct []byte, err error) {
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

// opens reports whether the master key r decrypts ct to pt. A key that
// cannot be reached, or fails, does not.
func (m *Manager) opens(ctx context.Context, r kekRef, pt, ct []byte) bool {
	ctx, cancel := context.WithTimeout(ctx, m.loadTimeout)
	defer cancel()
	k, err := m.kekCounted(r.uri, &m.kekProbes)
	if err != nil {
		return false
	}
	got, err := k.DecryptWithContext(ctx, ct, probeAD)
	return err == nil && bytes.Equal(got, pt)
}

// aliasOf tells whether the master key r, about to become tenant id's own
// or to be destroyed as its own, is in fact the platform master key, a
// retired one, or another tenant's own key reached another way. It returns a description
// of the key r is, or "" if none.
//
// The platform key is probed first and must answer: if it cannot encrypt,
// r cannot be told apart from it, and aliasOf fails. Other tenants' own
// keys are probed with one value that r encrypts; a key that cannot be
// reached (its customer revoked it, say) cannot be told apart and is
// passed over.
func (m *Manager) aliasOf(ctx context.Context, r kekRef, id tenant.ID) (string, error) {
	if m.platform.uri != "" {
		pt, ct, err := m.probe(ctx, m.platform)
		if err != nil {
			return "", fmt.Errorf("cannot tell master key %s from the platform master key, which does not answer: %w", DisplayURI(r.uri), err)
		}
		if m.opens(ctx, r, pt, ct) {
			return "the platform master key (Config.PlatformKEK)", nil
		}
	}
	if m.isRetired(r) {
		return "a retired platform master key (Config.RetiredKEKs)", nil
	}
	others, err := m.othersOwnKEKs(ctx, r, id)
	if err != nil {
		return "", err
	}
	if len(others) == 0 && len(m.retired) == 0 {
		return "", nil
	}
	pt, ct, err := m.probe(ctx, r)
	if err != nil {
		// r does not work (a key Shred destroyed already, a URI that
		// cannot log in): through it no one else's key can be used or
		// destroyed either.
		return "", nil
	}
	for _, o := range m.retired {
		if m.opens(ctx, o, pt, ct) {
			return "a retired platform master key (Config.RetiredKEKs)", nil
		}
	}
	for _, o := range others {
		if m.opens(ctx, o, pt, ct) {
			return "the own master key of another tenant", nil
		}
	}
	return "", nil
}

// othersOwnKEKs lists the distinct own (customer-managed) master keys of
// tenants other than id, other than r, that a KMS client serves.
func (m *Manager) othersOwnKEKs(ctx context.Context, r kekRef, id tenant.ID) ([]kekRef, error) {
	seen := map[string]bool{r.identity: true} // identities
	stored := map[string]bool{}               // URIs as stored
	var out []kekRef
	opts := ListOptions{Limit: 500}
	for {
		batch, err := m.store.List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("list master keys in use: %w", err)
		}
		for _, w := range batch {
			opts.AfterTenant, opts.AfterPurpose = w.Tenant, w.Purpose
			if !w.TenantKEK || w.Tenant == id || stored[w.KEKURI] {
				continue
			}
			stored[w.KEKURI] = true
			o, err := m.resolve(w.KEKURI)
			if err != nil || seen[o.identity] {
				continue
			}
			seen[o.identity] = true
			out = append(out, o)
		}
		if len(batch) < opts.Limit {
			return out, nil
		}
	}
}

// checkNotOwnKEK fails, with an error wrapping ErrInvalidArgument and
// ErrKEKInUse, if r is some tenant's own master key: by identity, or by a
// probe that the other key opens.
func (m *Manager) checkNotOwnKEK(ctx context.Context, r kekRef) error {
	opts := r.filter()
	opts.Limit = 500
	for {
		batch, err := m.store.List(ctx, opts)
		if err != nil {
			return fmt.Errorf("list keysets of master key %s: %w", DisplayURI(r.uri), err)
		}
		for _, w := range batch {
			if w.TenantKEK {
				return fmt.Errorf("%w: %w: master key %s is tenant %s's own", ErrInvalidArgument, ErrKEKInUse, DisplayURI(r.uri), w.Tenant)
			}
			opts.AfterTenant, opts.AfterPurpose = w.Tenant, w.Purpose
		}
		if len(batch) < opts.Limit {
			break
		}
	}
	owned, err := m.othersOwnKEKs(ctx, r, tenant.ID{})
	if err != nil || len(owned) == 0 {
		return err
	}
	pt, ct, err := m.probe(ctx, r)
	if err != nil {
		return err
	}
	for _, o := range owned {
		if m.opens(ctx, o, pt, ct) {
			return fmt.Errorf("%w: %w: master key %s reaches a tenant's own master key by another way", ErrInvalidArgument, ErrKEKInUse, DisplayURI(r.uri))
		}
	}
	return nil
}
