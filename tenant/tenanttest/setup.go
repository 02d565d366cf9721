package tenanttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/rtmx-ai/tenancy/tenant"
)

// canaryPrefix starts every canary; the 32 hexadecimal digits after it
// are what the suite looks for, so that a canary is found even where a
// response escaped or quoted the rest.
const canaryPrefix = "tenanttest-canary-"

// hostileSQL is appended to the canary of the database check: SQL
// metacharacters that a service building SQL text from its input would
// break on (or run), and that one binding parameters stores as given. The
// statement it would inject drops a table no service has.
const hostileSQL = "'; DROP TABLE tenanttest_canary; --"

// newCanary returns a fresh canary: canaryPrefix and 128 random bits in
// hexadecimal (the needle the suite searches for).
func newCanary() (canary, needle string) {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	needle = hex.EncodeToString(b)
	return canaryPrefix + needle, needle
}

// placeholder matches a {name} of a path template.
var placeholder = regexp.MustCompile(`\{([^{}]*)\}`)

// validName is the form of a placeholder's name.
var validName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)

// tenantPlaceholder is the placeholder filled with the tenant's ID.
const tenantPlaceholder = "tenant"

// validate checks the fields of h that need no call of the service.
func validate(h *Harness) []string {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if h == nil {
		return []string{"the Harness is nil"}
	}
	if len(h.Tenants) < 2 {
		bad("Harness.Tenants: %d tenant(s), need at least 2", len(h.Tenants))
	}
	seen := map[tenant.ID]int{}
	for i, tn := range h.Tenants {
		if tn.ID.IsZero() {
			bad("Harness.Tenants[%d].ID is the zero ID", i)
		} else if j, dup := seen[tn.ID]; dup {
			bad("Harness.Tenants[%d].ID %s is also Harness.Tenants[%d].ID: IDs must be distinct", i, tn.ID, j)
		} else {
			seen[tn.ID] = i
		}
		if tn.Token == nil {
			bad("Harness.Tenants[%d].Token is nil", i)
		}
	}
	if h.Handler == nil {
		bad("Harness.Handler is nil")
	}
	if h.Plant == nil {
		bad("Harness.Plant is nil")
	}
	for i, rt := range h.Routes {
		errs = append(errs, validateRoute(fmt.Sprintf("Harness.Routes[%d]", i), rt)...)
	}
	if h.WebSocket != nil {
		ws := h.WebSocket
		if !strings.HasPrefix(ws.Path, "/") {
			bad("Harness.WebSocket.Path %q: must start with /", ws.Path)
		}
		for _, m := range placeholder.FindAllStringSubmatch(ws.Path, -1) {
			if m[1] != tenantPlaceholder {
				bad("Harness.WebSocket.Path %q: placeholder {%s}: the feed's path may hold {tenant} only", ws.Path, m[1])
			}
		}
	}
	if h.Quota != nil {
		errs = append(errs, validateRoute("Harness.Quota.Route", h.Quota.Route)...)
		if h.Quota.Requests < 1 {
			bad("Harness.Quota.Requests is %d: must be at least 1", h.Quota.Requests)
		}
	}
	if h.Raw != nil && h.Buckets == nil && h.BucketView == nil {
		bad("Harness.Raw is set without Harness.Buckets or Harness.BucketView: the raw bucket is checked only beside a tenant view")
	}
	if len(h.Tables) > 0 && h.DB == nil {
		bad("Harness.Tables is set without Harness.DB")
	}
	for i, tb := range h.Tables {
		if tb == "" {
			bad("Harness.Tables[%d] is empty", i)
		}
	}
	if h.Timeout < 0 {
		bad("Harness.Timeout is %s: must not be negative", h.Timeout)
	}
	return errs
}

func validateRoute(field string, rt Route) []string {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if rt.Method == "" || strings.ContainsAny(rt.Method, " \t\r\n/") {
		bad("%s.Method %q: must be an HTTP method", field, rt.Method)
	}
	if !strings.HasPrefix(rt.Path, "/") {
		bad("%s.Path %q: must start with /", field, rt.Path)
	}
	if strings.Count(rt.Path, "{") != strings.Count(rt.Path, "}") {
		bad("%s.Path %q: unbalanced braces", field, rt.Path)
	}
	for _, m := range placeholder.FindAllStringSubmatch(rt.Path, -1) {
		if !validName.MatchString(m[1]) {
			bad("%s.Path %q: placeholder {%s} is not a name", field, rt.Path, m[1])
		}
	}
	return errs
}

// setup validates the Harness and plants a canary in each tenant, to see
// that Plant works and that its values fill every route template.
func (s *suite) setup(ctx context.Context, r *report) {
	h := s.h
	if errs := validate(h); len(errs) > 0 {
		for _, e := range errs {
			r.errs = append(r.errs, errors.New(e))
		}
		return
	}
	for _, tn := range h.Tenants {
		p, needle, err := s.plant(ctx, tn)
		if err != nil {
			r.failf("Harness.Plant for tenant %s: %v", tn.ID, err)
			continue
		}
		names := make([]string, 0, len(p.Values))
		for name := range p.Values {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			if strings.Contains(p.Values[name], needle) {
				r.failf("Harness.Plant for tenant %s: Planted.Values[%q] holds the canary: values must be IDs, not the canary", tn.ID, name)
			}
		}
		fields := make([]string, 0, len(h.Routes)+1)
		routes := slices.Clone(h.Routes)
		for i := range h.Routes {
			fields = append(fields, fmt.Sprintf("Harness.Routes[%d]", i))
		}
		if h.Quota != nil {
			routes = append(routes, h.Quota.Route)
			fields = append(fields, "Harness.Quota.Route")
		}
		for i, rt := range routes {
			if _, err := fill(rt.Path, tn.ID, p.Values); err != nil {
				r.failf("route %s: the values Harness.Plant returned for tenant %s do not fill its path: %v", routeName(rt), tn.ID, err)
			}
			if rt.Body != nil {
				if _, body := rt.Body(p); bytes.Contains(body, []byte(needle)) {
					r.failf("route %s: %s.Body of the values Harness.Plant returned for tenant %s holds the canary: a body must name things by their IDs, not carry the canary", routeName(rt), fields[i], tn.ID)
				}
			}
		}
		if _, err := tn.Token(""); err != nil {
			r.failf("Harness.Tenants: tenant %s: Token(\"\"): %v", tn.ID, err)
		}
	}
	if len(h.Routes) > 0 && s.readsRoute() == nil {
		r.missing("reading a tenant's data back after the replays", "no route of Harness.Routes has Reads set")
	}
}

// plantWith plants a fresh canary in tn (with suffix appended) and records it
// as tn's before Plant runs, so that even a Plant that fails half-way
// leaves a canary the suite knows. ctx given to Plant carries tn's tenant.
func (s *suite) plantWith(ctx context.Context, tn Tenant, suffix string) (Planted, string, string, error) {
	canary, needle := newCanary()
	canary += suffix
	s.mu.Lock()
	s.planted[tn.ID] = append(s.planted[tn.ID], needle)
	s.mu.Unlock()
	p, err := s.h.Plant(tenant.NewContext(ctx, tn.ID), tn, canary)
	if err != nil {
		return Planted{}, canary, needle, err
	}
	s.mu.Lock()
	s.values[tn.ID] = append(s.values[tn.ID], p.Values)
	s.mu.Unlock()
	return p, canary, needle, nil
}

// namesOwn reports whether path, route rt's on tenant id's path filled
// with another tenant's values, is also the path of something Plant made
// for id (a per-tenant serial ID, a fixed name): then it names id's own
// thing.
func (s *suite) namesOwn(id tenant.ID, rt Route, path string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.values[id] {
		if own, err := fill(rt.Path, id, v); err == nil && own == path {
			return true
		}
	}
	return false
}

// plant is plantWith without a suffix; it returns the needle.
func (s *suite) plant(ctx context.Context, tn Tenant) (Planted, string, error) {
	p, _, needle, err := s.plantWith(ctx, tn, "")
	return p, needle, err
}

// othersNeedles returns the needles planted so far in every tenant but
// id (every tenant's if id is zero), by tenant.
func (s *suite) othersNeedles(id tenant.ID) map[tenant.ID][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[tenant.ID][]string{}
	for t, ns := range s.planted {
		if t != id {
			out[t] = slices.Clone(ns)
		}
	}
	return out
}

// leaks returns where body, or headers (nil: none), hold a needle of
// needles, one line per tenant and place: "tenant b's canary
// tenanttest-canary-… in the body", with how many more of its canaries
// are there too. where names what body is ("the body", "a message").
func leaks(needles map[tenant.ID][]string, where string, body []byte, header http.Header) []string {
	var out []string
	ids := make([]tenant.ID, 0, len(needles))
	for id := range needles {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	for _, id := range ids {
		found := map[string][]string{} // place: needles found there
		var places []string
		add := func(place, n string) {
			if len(found[place]) == 0 {
				places = append(places, place)
			}
			found[place] = append(found[place], n)
		}
		names := make([]string, 0, len(header))
		for name := range header {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, n := range needles[id] {
			for _, f := range encodings(n) {
				if bytes.Contains(body, []byte(f.text)) {
					add(where+f.how, n)
				}
				for _, name := range names {
					for _, v := range header[name] {
						if strings.Contains(name, f.text) || strings.Contains(v, f.text) {
							add("header "+name+f.how, n)
							break
						}
					}
				}
			}
		}
		for _, place := range places {
			ns := found[place]
			more := ""
			if len(ns) > 1 {
				more = fmt.Sprintf(" (and %d more of its canaries)", len(ns)-1)
			}
			out = append(out, fmt.Sprintf("tenant %s's canary %s%s%s in %s", id, canaryPrefix, ns[0], more, place))
		}
	}
	return out
}

// form is a text the suite searches for a needle by, and how it encodes
// the needle (" (base64)"; "" for the needle as it is).
type form struct{ text, how string }

// encodings returns the forms a needle is searched by: as it is, in upper
// case, and in standard and URL-safe base64 at each of the 3 byte
// alignments it can have in the encoded text (the needle, and it after
// 1 and 2 other bytes), each cut to the characters that depend on the
// needle's bytes alone. Each base64 form holds 30 of the needle's 32
// hexadecimal digits, 120 of its 128 random bits.
func encodings(needle string) []form {
	out := []form{{needle, ""}, {strings.ToUpper(needle), " (in upper case)"}}
	seen := map[string]bool{needle: true, strings.ToUpper(needle): true}
	for _, enc := range []struct {
		e   *base64.Encoding
		how string
	}{{base64.RawStdEncoding, " (base64)"}, {base64.RawURLEncoding, " (URL-safe base64)"}} {
		for k := range 3 {
			b := append(make([]byte, k), needle...)
			text := enc.e.EncodeToString(b)
			start := 0
			if k > 0 {
				start = 4 // the first group of 3 bytes holds other bytes too
			}
			text = text[start : 4*(len(b)/3)] // the last, partial group may hold what follows
			if !seen[text] {
				seen[text] = true
				out = append(out, form{text, enc.how})
			}
		}
	}
	return out
}

// fill fills template with id for {tenant} and values for every other
// placeholder, each escaped as one path segment.
func fill(template string, id tenant.ID, values map[string]string) (string, error) {
	var missing []string
	out := placeholder.ReplaceAllStringFunc(template, func(m string) string {
		name := m[1 : len(m)-1]
		if name == tenantPlaceholder {
			return url.PathEscape(id.String())
		}
		v, ok := values[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return url.PathEscape(v)
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("no value for {%s} in Planted.Values", strings.Join(missing, "}, {"))
	}
	return out, nil
}

// routeName names a route in messages: "GET /t/{tenant}/items/{id}".
func routeName(rt Route) string { return rt.Method + " " + rt.Path }

// readsRoute returns the first route with Reads, or nil.
func (s *suite) readsRoute() *Route {
	for i := range s.h.Routes {
		if s.h.Routes[i].Reads {
			return &s.h.Routes[i]
		}
	}
	return nil
}

// readsRoutes returns the routes B's data is read back through after the
// replays: every route with Reads whose path names a planted thing (a
// placeholder besides {tenant}, filled with B's values), in order, or the
// first route with Reads if none does. A route that names no planted
// thing, such as a list, may rightly change when A makes things of its
// own with B's values. Setup has seen that the values of Plant fill each.
func (s *suite) readsRoutes() []Route {
	var out []Route
	for _, rt := range s.h.Routes {
		if rt.Reads && namesPlanted(rt.Path) {
			out = append(out, rt)
		}
	}
	if len(out) == 0 {
		if rt := s.readsRoute(); rt != nil {
			out = append(out, *rt)
		}
	}
	return out
}

// namesPlanted reports whether template has a placeholder besides
// {tenant}.
func namesPlanted(template string) bool {
	for _, m := range placeholder.FindAllStringSubmatch(template, -1) {
		if m[1] != tenantPlaceholder {
			return true
		}
	}
	return false
}
