package tenanttest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/rtmx-ai/tenancy/tenant"
)

// maxBody is the most of a response body the suite reads and searches.
const maxBody = 16 << 20

// answer is a response as the suite judges it.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// request is one request the suite sends, and how to name it.
type request struct {
	method, path string // path filled, such as /t/b/items/42
	token        string // "" sends no Authorization header
	contentType  string
	body         []byte
}

func (q request) String() string { return q.method + " " + q.path }

// newRequest fills rt for tenant id's path with values p and the body of
// rt.Body(p).
func newRequest(rt Route, id tenant.ID, p Planted, token string) (request, error) {
	path, err := fill(rt.Path, id, p.Values)
	if err != nil {
		return request{}, err
	}
	q := request{method: rt.Method, path: path, token: token}
	if rt.Body != nil {
		q.contentType, q.body = rt.Body(p)
	}
	return q, nil
}

// do sends q to the Handler, over loopback, and reads the answer.
func (s *suite) do(ctx context.Context, q request) (answer, error) {
	srv, client := s.server()
	var body io.Reader
	if q.body != nil {
		body = bytes.NewReader(q.body)
	}
	req, err := http.NewRequestWithContext(ctx, q.method, srv.URL+q.path, body)
	if err != nil {
		return answer{}, err
	}
	if q.token != "" {
		req.Header.Set("Authorization", "Bearer "+q.token)
	}
	if q.contentType != "" {
		req.Header.Set("Content-Type", q.contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return answer{}, fmt.Errorf("reading the body of %s: %w", q, err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// grants reports whether status is one that grants access.
func grants(status int) bool { return status < 400 }

// leaksIn returns where a holds a needle of needles. Setup refuses
// Planted.Values and Route.Body that carry a canary, so a request never
// sends one and a canary in the answer came from the service's data.
func leaksIn(needles map[tenant.ID][]string, a answer) []string {
	return leaks(needles, "the body", a.body, a.header)
}

// checkAPI is verification test 1 and test case 2: a tenant's token
// reaches its own data through every route, and no replay of a route with
// another tenant's path, values or no token is granted or carries the
// other's canary.
func (s *suite) checkAPI(ctx context.Context, r *report) {
	for _, rt := range s.h.Routes {
		if ctx.Err() != nil {
			return
		}
		s.checkRoute(ctx, r, rt)
	}
}

func (s *suite) checkRoute(ctx context.Context, r *report, rt Route) {
	h := s.h
	name := routeName(rt)
	// Fresh canaries in every tenant, for this route alone: a route that
	// changes or deletes data leaves the next route data of its own.
	planted := map[tenant.ID]Planted{}
	needle := map[tenant.ID]string{}
	for _, tn := range h.Tenants {
		p, n, err := s.plant(ctx, tn)
		if err != nil {
			r.failf("route %s: Harness.Plant for tenant %s: %v", name, tn.ID, err)
			return
		}
		planted[tn.ID], needle[tn.ID] = p, n
	}
	// B's data is read back through every Reads route, before the replays
	// and after them: a replay that answers 404 but changes an attachment
	// shows only through the route that reads the attachment.
	reads := s.readsRoutes()
	before := map[tenant.ID][]answer{}
	for _, tn := range h.Tenants {
		got := make([]answer, len(reads))
		ok := true
		for i, rd := range reads {
			a, q, read := s.readBack(ctx, r, rd, tn, planted[tn.ID], name, "before the replays", true)
			if read && !bytes.Contains(a.body, []byte(needle[tn.ID])) {
				r.failf("route %s: tenant %s reading its own data with %s before the replays (%s): the body does not hold its canary %s%s",
					name, tn.ID, routeName(rd), q, canaryPrefix, needle[tn.ID])
				read = false
			}
			got[i], ok = a, ok && read
		}
		if ok && len(reads) > 0 {
			before[tn.ID] = got
		}
	}

	// The replays: A's token on B's path and values, A's token on A's
	// path with B's values, no token on B's path and values.
	sentNoToken := map[string]bool{}
	for _, a := range h.Tenants {
		tok, err := a.Token(rt.Role)
		if err != nil {
			r.failf("route %s: tenant %s: Token(%q): %v", name, a.ID, rt.Role, err)
			continue
		}
		for _, b := range h.Tenants {
			if a.ID == b.ID {
				continue
			}
			pb := planted[b.ID]
			type replay struct {
				what string
				id   tenant.ID
				tok  string
				// own is A's own request the replay differs from: a
				// replay on A's path is judged by its status only if its
				// path differs from own's (it names B's things), and not
				// sent at all if its body is the same too.
				own *request
			}
			own, err := newRequest(rt, a.ID, planted[a.ID], tok)
			if err != nil {
				r.failf("route %s: tenant %s on its own data: %v", name, a.ID, err)
				continue
			}
			replays := []replay{
				{fmt.Sprintf("tenant %s's token on tenant %s's path and values", a.ID, b.ID), b.ID, tok, nil},
				{fmt.Sprintf("tenant %s's token on its own path with tenant %s's values", a.ID, b.ID), a.ID, tok, &own},
				{fmt.Sprintf("no token on tenant %s's path and values", b.ID), b.ID, "", nil},
			}
			sent := map[string]bool{}
			for _, rp := range replays {
				q, err := newRequest(rt, rp.id, pb, rp.tok)
				if err != nil {
					r.failf("route %s: %s: %v", name, rp.what, err)
					continue
				}
				key := q.String() + "\x00" + q.token
				if sent[key] || (q.token == "" && sentNoToken[key]) {
					continue // the route names no tenant: one replay is the other
				}
				judgeStatus := true
				if rp.own != nil {
					if q.path == rp.own.path && bytes.Equal(q.body, rp.own.body) {
						continue // B's values change nothing in the request
					}
					// B's values in the body only: A may make things of its
					// own with them (a POST); and values of B's that Plant
					// also gave A name A's own things. What leaks is still
					// judged, and B's data read back.
					judgeStatus = q.path != rp.own.path && !s.namesOwn(a.ID, rt, q.path)
				}
				sent[key] = true
				if q.token == "" {
					sentNoToken[key] = true
				}
				ans, err := s.do(ctx, q)
				if err != nil {
					r.failf("route %s: %s (%s): %v", name, rp.what, q, err)
					continue
				}
				var wrong []string
				if judgeStatus && grants(ans.status) {
					wrong = append(wrong, fmt.Sprintf("status %d, which grants access", ans.status))
				}
				others := s.othersNeedles(a.ID)
				if q.token == "" {
					others = s.othersNeedles(tenant.ID{})
				}
				wrong = append(wrong, leaksIn(others, ans)...)
				if len(wrong) > 0 {
					r.failf("route %s: %s (%s): %s", name, rp.what, q, strings.Join(wrong, "; "))
				}
			}
		}
	}

	// A token whose signature was changed reaches nothing, not even its
	// own tenant's data.
	for _, a := range h.Tenants {
		tok, err := a.Token(rt.Role)
		if err != nil {
			continue // reported with the replays
		}
		forged := forgeSignature(tok)
		if forged == "" {
			r.skip("the replays with a token whose signature is changed", "the tokens are not JWS: the suite cannot forge them")
			continue
		}
		q, err := newRequest(rt, a.ID, planted[a.ID], forged)
		if err != nil {
			continue // reported with the positive control
		}
		ans, err := s.do(ctx, q)
		if err != nil {
			r.failf("route %s: tenant %s's token with its signature changed (%s): %v", name, a.ID, q, err)
			continue
		}
		var wrong []string
		if grants(ans.status) {
			wrong = append(wrong, fmt.Sprintf("status %d, which grants access", ans.status))
		}
		wrong = append(wrong, leaksIn(s.othersNeedles(tenant.ID{}), ans)...)
		if len(wrong) > 0 {
			r.failf("route %s: tenant %s's token with its signature changed on its own path and values (%s): %s", name, a.ID, q, strings.Join(wrong, "; "))
		}
	}

	// What was planted reads back as it was, through every Reads route.
	for _, tn := range h.Tenants {
		was, ok := before[tn.ID]
		if !ok {
			continue
		}
		for i, rd := range reads {
			a, q, ok := s.readBack(ctx, r, rd, tn, planted[tn.ID], name, "after the replays", false)
			if !ok {
				continue
			}
			if b := was[i]; a.status != b.status || !bytes.Equal(a.body, b.body) {
				r.failf("route %s: tenant %s's data changed during the replays of the other tenants: %s answered %d %q before them and %d %q after",
					name, tn.ID, q, b.status, abbrev(b.body), a.status, abbrev(a.body))
			}
		}
	}

	// The positive control: each tenant reaches its own data, and nothing
	// of another's comes with it.
	for _, tn := range h.Tenants {
		tok, err := tn.Token(rt.Role)
		if err != nil {
			continue // reported with the replays
		}
		q, err := newRequest(rt, tn.ID, planted[tn.ID], tok)
		if err != nil {
			r.failf("route %s: tenant %s on its own data: %v", name, tn.ID, err)
			continue
		}
		ans, err := s.do(ctx, q)
		if err != nil {
			r.failf("route %s: tenant %s on its own data (%s): %v", name, tn.ID, q, err)
			continue
		}
		var wrong []string
		if ans.status < 200 || ans.status > 299 {
			wrong = append(wrong, fmt.Sprintf("status %d, want 2xx (a tenant must reach its own data: %q)", ans.status, abbrev(ans.body)))
		} else if rt.Reads && !bytes.Contains(ans.body, []byte(needle[tn.ID])) {
			wrong = append(wrong, fmt.Sprintf("the body does not hold its canary %s%s (the route has Reads)", canaryPrefix, needle[tn.ID]))
		}
		wrong = append(wrong, leaksIn(s.othersNeedles(tn.ID), ans)...)
		if len(wrong) > 0 {
			r.failf("route %s: tenant %s's token on its own path and values (%s): %s", name, tn.ID, q, strings.Join(wrong, "; "))
		}
	}
}

// readBack reads tn's data with the Reads route rt as tn; it reports a
// failure (and returns false) if the request fails or, with want2xx, the
// answer is not 2xx.
func (s *suite) readBack(ctx context.Context, r *report, rt Route, tn Tenant, p Planted, route, when string, want2xx bool) (answer, request, bool) {
	tok, err := tn.Token(rt.Role)
	if err != nil {
		r.failf("route %s: tenant %s: Token(%q): %v", route, tn.ID, rt.Role, err)
		return answer{}, request{}, false
	}
	q, err := newRequest(rt, tn.ID, p, tok)
	if err != nil {
		r.failf("route %s: tenant %s reading its own data %s: %v", route, tn.ID, when, err)
		return answer{}, q, false
	}
	a, err := s.do(ctx, q)
	if err != nil {
		r.failf("route %s: tenant %s reading its own data %s (%s): %v", route, tn.ID, when, q, err)
		return answer{}, q, false
	}
	if want2xx && (a.status < 200 || a.status > 299) {
		r.failf("route %s: tenant %s reading its own data %s (%s): status %d, want 2xx: %q", route, tn.ID, when, q, a.status, abbrev(a.body))
		return a, q, false
	}
	return a, q, true
}

// abbrev returns at most 200 bytes of b, for messages.
func abbrev(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

// forgeSignature returns token with one character in the middle of its
// signature changed, if token is a JWS in compact form (three segments
// separated by dots, a signature of at least 8 characters), else "". The
// character changed is not the last, whose low bits base64url decoders
// may ignore.
func forgeSignature(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(parts[2]) < 8 {
		return ""
	}
	sig := []byte(parts[2])
	i := len(sig) / 2
	if sig[i] == 'A' {
		sig[i] = 'B'
	} else {
		sig[i] = 'A'
	}
	return parts[0] + "." + parts[1] + "." + string(sig)
}
