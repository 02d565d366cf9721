package tenanttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

// checkKeys is test case 5: data sealed for one tenant opens for it and
// for no other, and one plaintext sealed for two tenants gives two
// different ciphertexts.
func (s *suite) checkKeys(ctx context.Context, r *report) {
	km := s.h.Keys
	canary, needle := newCanary()
	bind := keys.Binding{Table: "tenanttest", Column: "canary", RowKey: needle}
	if _, err := km.Seal(tenant.NewContext(ctx, tenant.ID{}), []byte(canary), bind); !errors.Is(err, tenant.ErrNoTenant) {
		r.failf("Keys.Seal with a context without a tenant: got %v, want an error wrapping tenant.ErrNoTenant", err)
	}
	sealed := map[tenant.ID][]byte{}
	for _, a := range s.h.Tenants {
		ct, err := km.Seal(tenant.NewContext(ctx, a.ID), []byte(canary), bind)
		if err != nil {
			r.failf("Keys.Seal as tenant %s: %v", a.ID, err)
			continue
		}
		if bytes.Contains(ct, []byte(canary)) {
			r.failf("Keys.Seal as tenant %s: the ciphertext holds the plaintext", a.ID)
		}
		for id, other := range sealed {
			if bytes.Equal(ct, other) {
				r.failf("Keys.Seal of one plaintext as tenants %s and %s gave the same ciphertext", id, a.ID)
			}
		}
		sealed[a.ID] = ct
	}
	for _, a := range s.h.Tenants {
		ct, ok := sealed[a.ID]
		if !ok {
			continue
		}
		for _, b := range s.h.Tenants {
			got, err := km.Open(tenant.NewContext(ctx, b.ID), ct, bind)
			switch {
			case a.ID == b.ID && err != nil:
				r.failf("Keys.Open as tenant %s of what it sealed: %v", a.ID, err)
			case a.ID == b.ID && string(got) != canary:
				r.failf("Keys.Open as tenant %s of what it sealed gave %q, want %q", a.ID, got, canary)
			case a.ID != b.ID && err == nil:
				r.failf("Keys.Open as tenant %s of what tenant %s sealed succeeded (%d bytes): the keys are not tenant-specific", b.ID, a.ID, len(got))
			case a.ID != b.ID && !errors.Is(err, keys.ErrDecrypt):
				r.failf("Keys.Open as tenant %s of what tenant %s sealed: got %v, want an error wrapping keys.ErrDecrypt", b.ID, a.ID, err)
			}
		}
	}
}

// checkAudit is test case 6: an entry appended as one tenant is in its
// export and in no other tenant's, and every tenant's chain verifies.
func (s *suite) checkAudit(ctx context.Context, r *report) {
	l := s.h.Audit
	if _, err := l.Append(tenant.NewContext(ctx, tenant.ID{}), canaryEvent("tenanttest-no-tenant")); !errors.Is(err, tenant.ErrNoTenant) {
		r.failf("Audit.Append with a context without a tenant: got %v, want an error wrapping tenant.ErrNoTenant", err)
	}
	own := map[tenant.ID]string{}
	for _, tn := range s.h.Tenants {
		canary, needle := newCanary()
		s.mu.Lock()
		s.planted[tn.ID] = append(s.planted[tn.ID], needle)
		s.mu.Unlock()
		if _, err := l.Append(tenant.NewContext(ctx, tn.ID), canaryEvent(canary)); err != nil {
			r.failf("Audit.Append as tenant %s: %v", tn.ID, err)
			continue
		}
		own[tn.ID] = needle
	}
	for _, tn := range s.h.Tenants {
		tctx := tenant.NewContext(ctx, tn.ID)
		var buf bytes.Buffer
		if _, err := l.Export(tctx, &buf); err != nil {
			r.failf("Audit.Export as tenant %s: %v", tn.ID, err)
			continue
		}
		if n, ok := own[tn.ID]; ok && !bytes.Contains(buf.Bytes(), []byte(n)) {
			r.failf("Audit.Export as tenant %s: its entry with canary %s%s is not there", tn.ID, canaryPrefix, n)
		}
		for _, ls := range leaks(s.othersNeedles(tn.ID), "its export", buf.Bytes(), nil) {
			r.failf("Audit.Export as tenant %s: %s", tn.ID, ls)
		}
		if _, err := l.Verify(tctx); err != nil {
			r.failf("Audit.Verify as tenant %s: %v", tn.ID, err)
		}
	}
}

// canaryEvent is the audit event holding canary.
func canaryEvent(canary string) audit.Event {
	return audit.Event{
		Actor:    "tenanttest",
		Action:   "tenanttest.canary",
		Resource: canary,
		Outcome:  audit.OutcomeSuccess,
		Details:  map[string]string{"canary": canary},
	}
}

// checkQuota is test case 7: one tenant driven over its limit is refused
// with 429 and Retry-After, and the others are served at once.
func (s *suite) checkQuota(ctx context.Context, r *report) {
	q := s.h.Quota
	rt := q.Route
	name := routeName(rt)
	planted := map[tenant.ID]Planted{}
	for _, tn := range s.h.Tenants {
		p, _, err := s.plant(ctx, tn)
		if err != nil {
			r.failf("Harness.Plant for tenant %s: %v", tn.ID, err)
			return
		}
		planted[tn.ID] = p
	}
	send := func(tn Tenant) (request, answer, error) {
		tok, err := tn.Token(rt.Role)
		if err != nil {
			return request{}, answer{}, fmt.Errorf("Token(%q): %w", rt.Role, err)
		}
		req, err := newRequest(rt, tn.ID, planted[tn.ID], tok)
		if err != nil {
			return req, answer{}, err
		}
		a, err := s.do(ctx, req)
		return req, a, err
	}
	a, others := s.h.Tenants[0], s.h.Tenants[1:]
	var limited *answer
	sent := 0
	for sent < q.Requests {
		req, ans, err := send(a)
		sent++
		if err != nil {
			r.failf("route %s: tenant %s's request %d (%s): %v", name, a.ID, sent, req, err)
			return
		}
		if ans.status == http.StatusTooManyRequests {
			limited = &ans
			break
		}
		if ans.status < 200 || ans.status > 299 {
			r.failf("route %s: tenant %s's request %d (%s): status %d, want 2xx until the limit, then 429: %q", name, a.ID, sent, req, ans.status, abbrev(ans.body))
			return
		}
	}
	if limited == nil {
		r.failf("route %s: tenant %s sent %d requests (Harness.Quota.Requests) and none was refused with 429: no per-tenant limit", name, a.ID, sent)
		return
	}
	if ra := limited.header.Get("Retry-After"); !validRetryAfter(ra) {
		r.failf("route %s: tenant %s's 429 after %d requests has Retry-After %q, want delay-seconds or an HTTP date", name, a.ID, sent, ra)
	}
	for _, b := range others {
		req, ans, err := send(b)
		if err != nil {
			r.failf("route %s: tenant %s right after tenant %s was limited (%s): %v", name, b.ID, a.ID, req, err)
			continue
		}
		if ans.status < 200 || ans.status > 299 {
			r.failf("route %s: tenant %s right after tenant %s was limited (%s): status %d, want 2xx: one tenant's limit took from another's", name, b.ID, a.ID, req, ans.status)
		}
	}
}

// validRetryAfter reports whether v is a Retry-After value (RFC 9110
// 10.2.3).
func validRetryAfter(v string) bool {
	v = strings.TrimSpace(v)
	if v == "" {
		return false
	}
	if n, err := strconv.Atoi(v); err == nil {
		return n >= 0
	}
	_, err := http.ParseTime(v)
	return err == nil
}
