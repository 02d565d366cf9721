package tenanttest_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"

	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/rtmx-ai/tenancy/tenant/tenanttest"
)

// toy is a small in-memory service of notes, each with a file, for the
// flawed variants of the suite's own tests: each flaw is one way a
// service leaks that a weaker suite let pass. Its tokens are
// "toy.<tenant>.signature-of-<tenant>" (toyToken).
type toy struct {
	flaws map[string]bool

	mu    sync.Mutex
	notes map[string]map[string]string // tenant, note ID: text
	files map[string]map[string]string // tenant, note ID: the file's content
	seq   int
	conns map[*websocket.Conn]string // the feed's connections: their tenant
	last  string                     // the text of the last note planted, in any tenant
}

func newToy(flaws ...string) *toy {
	t := &toy{flaws: map[string]bool{}, notes: map[string]map[string]string{}, files: map[string]map[string]string{}, conns: map[*websocket.Conn]string{}}
	for _, f := range flaws {
		t.flaws[f] = true
	}
	return t
}

// toyToken is the toy's token of tenant id: three dot-separated
// segments, so that the suite forges its signature.
func toyToken(id string) string { return "toy." + id + ".signature-of-" + id }

// tokenTenant returns the tenant of r's token; with checkSig false (the
// flaw "feedNoSignature" on the feed), its signature is not checked.
func tokenTenant(r *http.Request, checkSig bool) (string, bool) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	parts := strings.Split(raw, ".")
	if !ok || len(parts) != 3 || parts[0] != "toy" || (checkSig && parts[2] != "signature-of-"+parts[1]) {
		return "", false
	}
	return parts[1], true
}

// tenantOf returns the tenant of r's token if it is the tenant of r's
// path; it answers the refusal otherwise.
func (t *toy) tenantOf(w http.ResponseWriter, r *http.Request) (string, bool) {
	who, ok := tokenTenant(r, true)
	if !ok || who != r.PathValue("tenant") {
		http.Error(w, "forbidden", http.StatusForbidden)
		return "", false
	}
	return who, true
}

// feed is the toy's feed of the notes planted in the tenant. A client
// sends "join" and gets "joined", then each note's text. With the flaw
// "feedRefusalLeak" a refusal tells the last note planted in any tenant.
func (t *toy) feed(w http.ResponseWriter, r *http.Request) {
	who, ok := tokenTenant(r, !t.flaws["feedNoSignature"])
	if !ok || who != r.PathValue("tenant") {
		msg := "forbidden"
		if t.flaws["feedRefusalLeak"] {
			t.mu.Lock()
			msg += "; the last note was " + t.last
			t.mu.Unlock()
		}
		http.Error(w, msg, http.StatusForbidden)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	if _, msg, err := c.Read(r.Context()); err != nil || string(msg) != "join" {
		return
	}
	t.mu.Lock()
	t.conns[c] = who
	t.mu.Unlock()
	defer func() { t.mu.Lock(); delete(t.conns, c); t.mu.Unlock() }()
	if err := c.Write(r.Context(), websocket.MessageText, []byte("joined")); err != nil {
		return
	}
	_, _, _ = c.Read(r.Context()) // until the client goes
}

func (t *toy) plant(ctx context.Context, tn tenanttest.Tenant, canary string) (tenanttest.Planted, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	id, note := tn.ID.String(), fmt.Sprintf("n%d", t.seq)
	if t.notes[id] == nil {
		t.notes[id], t.files[id] = map[string]string{}, map[string]string{}
	}
	t.notes[id][note], t.files[id][note] = canary, "file of "+canary
	t.last = canary
	for c, who := range t.conns {
		if who == id {
			_ = c.Write(ctx, websocket.MessageText, []byte(canary))
		}
	}
	return tenanttest.Planted{Values: map[string]string{"note": note}}, nil
}

func (t *toy) get(w http.ResponseWriter, r *http.Request) {
	id, ok := t.tenantOf(w, r)
	if !ok {
		return
	}
	t.mu.Lock()
	text, ok := t.notes[id][r.PathValue("note")]
	t.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	fmt.Fprintln(w, text)
}

// search answers the notes whose text holds the body; with the flaw
// "searchAll", every tenant's.
func (t *toy) search(w http.ResponseWriter, r *http.Request) {
	id, ok := t.tenantOf(w, r)
	if !ok {
		return
	}
	q, _ := io.ReadAll(r.Body)
	t.mu.Lock()
	defer t.mu.Unlock()
	for tn, ns := range t.notes {
		if tn != id && !t.flaws["searchAll"] {
			continue
		}
		for note, text := range ns {
			if len(q) > 0 && (strings.Contains(text, string(q)) || note == string(q)) {
				fmt.Fprintln(w, text)
			}
		}
	}
}

func (t *toy) file(w http.ResponseWriter, r *http.Request) {
	id, ok := t.tenantOf(w, r)
	if !ok {
		return
	}
	t.mu.Lock()
	text, ok := t.files[id][r.PathValue("note")]
	t.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	fmt.Fprintln(w, text)
}

// deleteFile deletes the file of a note; with the flaw "deleteAny", the
// file of that note ID in whichever tenant has it, answering 404 where it
// is not the caller's.
func (t *toy) deleteFile(w http.ResponseWriter, r *http.Request) {
	id, ok := t.tenantOf(w, r)
	if !ok {
		return
	}
	note := r.PathValue("note")
	t.mu.Lock()
	defer t.mu.Unlock()
	for tn, fs := range t.files {
		if tn == id || t.flaws["deleteAny"] {
			delete(fs, note)
		}
	}
	if _, ok := t.notes[id][note]; !ok {
		http.NotFound(w, r)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// encodings are the toy's flaws that put the last note planted, of any
// tenant, in every answer, encoded: "<encoding>-<k>" is the encoding of
// the text after k other bytes, in the header X-Last-Note; "upper" is the
// text in upper case, in the body.
var encodings = map[string]*base64.Encoding{"std": base64.StdEncoding, "url": base64.URLEncoding, "rawstd": base64.RawStdEncoding}

// handler is the toy's HTTP handler.
func (t *toy) handler() http.Handler {
	mux := t.mux()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.mu.Lock()
		last := t.last
		t.mu.Unlock()
		for f := range t.flaws {
			name, k, ok := strings.Cut(f, "-")
			if e := encodings[name]; ok && e != nil && last != "" {
				w.Header().Set("X-Last-Note", e.EncodeToString([]byte(strings.Repeat("x", int(k[0]-'0'))+last+" and more")))
			}
		}
		if t.flaws["upper"] && last != "" {
			fmt.Fprintln(w, strings.ToUpper(last))
		}
		mux.ServeHTTP(w, r)
	})
}

func (t *toy) mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /t/{tenant}/notes/{note}", t.get)
	mux.HandleFunc("POST /t/{tenant}/search", t.search)
	mux.HandleFunc("GET /t/{tenant}/files/{note}", t.file)
	mux.HandleFunc("DELETE /t/{tenant}/files/{note}", t.deleteFile)
	mux.HandleFunc("GET /t/{tenant}/ws", t.feed)
	return mux
}

// harness is the suite's Harness of the toy: its note route, and the
// search with the note's ID as the body.
func (t *toy) harness() *tenanttest.Harness {
	var tenants []tenanttest.Tenant
	for _, s := range []string{"acme", "globex"} {
		tenants = append(tenants, tenanttest.Tenant{ID: tenant.MustParseID(s), Token: func(string) (string, error) { return toyToken(s), nil }})
	}
	return &tenanttest.Harness{
		Tenants: tenants,
		Handler: t.handler(),
		Plant:   t.plant,
		Routes: []tenanttest.Route{
			{Method: http.MethodGet, Path: "/t/{tenant}/notes/{note}", Reads: true},
			{Method: http.MethodPost, Path: "/t/{tenant}/search", Body: func(p tenanttest.Planted) (string, []byte) {
				return "text/plain", []byte(p.Values["note"])
			}},
			{Method: http.MethodGet, Path: "/t/{tenant}/files/{note}", Reads: true},
			{Method: http.MethodDelete, Path: "/t/{tenant}/files/{note}"},
		},
	}
}

// TestSetupRefusesValuesAndBodiesThatCarryTheCanary: a harness whose
// Planted.Values or Route.Body carry the canary would let a service that
// searches every tenant by it pass (the suite cannot tell an echo of the
// request from a leak), so Setup refuses it, naming the field; searched
// by ID, the same service fails the API check.
func TestSetupRefusesValuesAndBodiesThatCarryTheCanary(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(h *tenanttest.Harness, ty *toy)
		want   string
	}{
		{"the canary as a value", func(h *tenanttest.Harness, ty *toy) {
			plant := h.Plant
			h.Plant = func(ctx context.Context, tn tenanttest.Tenant, canary string) (tenanttest.Planted, error) {
				p, err := plant(ctx, tn, canary)
				p.Values["text"] = canary
				return p, err
			}
			h.Routes[1].Body = func(p tenanttest.Planted) (string, []byte) { return "text/plain", []byte(p.Values["text"]) }
		}, `Harness.Plant for tenant acme: Planted.Values["text"] holds the canary: values must be IDs, not the canary`},
		{"the canary in a body", func(h *tenanttest.Harness, ty *toy) {
			h.Routes[1].Body = func(p tenanttest.Planted) (string, []byte) {
				ty.mu.Lock()
				defer ty.mu.Unlock()
				for _, ns := range ty.notes {
					if text, ok := ns[p.Values["note"]]; ok {
						return "text/plain", []byte(text)
					}
				}
				return "text/plain", nil
			}
		}, "route POST /t/{tenant}/search: Harness.Routes[1].Body of the values Harness.Plant returned for tenant acme holds the canary: a body must name things by their IDs, not carry the canary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ty := newToy("searchAll")
			h := ty.harness()
			tc.change(h, ty)
			_, err := tenanttest.Check(t.Context(), h)
			if !errors.Is(err, tenanttest.ErrInvalidHarness) || !strings.Contains(err.Error(), "tenanttest: invalid harness: "+tc.want) {
				t.Errorf("got %v, want an invalid harness saying %q", err, tc.want)
			}
		})
	}
	_, err := tenanttest.Check(t.Context(), newToy("searchAll").harness())
	want := []string{"tenanttest: VerificationTest1_APITokenOfAnotherTenant: route POST /t/{tenant}/search: tenant acme's token on its own path with tenant globex's values (POST /t/acme/search): tenant globex's canary tenanttest-canary-", "in the body"}
	if err == nil || !anyLine(strings.Split(err.Error(), "\n"), want, "", "") {
		t.Errorf("the search of every tenant: got %v, want a line holding %q", err, want)
	}
	if _, err := tenanttest.Check(t.Context(), newToy().harness()); err != nil {
		t.Errorf("the isolated toy failed:\n%v", err)
	}
}

// TestReplaysAreReadBackThroughEveryReadsRoute: a DELETE of a file that
// answers 404 to another tenant's note ID but deletes that tenant's file
// changes nothing the first Reads route (the note) shows; the suite reads
// the file back too, and finds it gone.
func TestReplaysAreReadBackThroughEveryReadsRoute(t *testing.T) {
	_, err := tenanttest.Check(t.Context(), newToy("deleteAny").harness())
	want := []string{"tenanttest: VerificationTest1_APITokenOfAnotherTenant: route DELETE /t/{tenant}/files/{note}: tenant globex's data changed during the replays of the other tenants: GET /t/globex/files/n", "answered 200 \"file of tenanttest-canary-", "before them and 404"}
	if err == nil || !anyLine(strings.Split(err.Error(), "\n"), want, "", "") {
		t.Errorf("the DELETE that deletes any tenant's file: got %v, want a line holding %q", err, want)
	}
}

// TestEncodedCanariesAreFound: another tenant's canary in base64 (standard
// or URL-safe, padded or not, after 0, 1 or 2 other bytes) or in upper
// case is found as a leak.
func TestEncodedCanariesAreFound(t *testing.T) {
	for flaw, where := range map[string]string{
		"std-0": "in header X-Last-Note (base64)", "std-1": "in header X-Last-Note (base64)", "std-2": "in header X-Last-Note (base64)",
		"url-1": "in header X-Last-Note", "rawstd-2": "in header X-Last-Note (base64)",
		"upper": "in the body (in upper case)",
	} {
		_, err := tenanttest.Check(t.Context(), newToy(flaw).harness())
		want := []string{"tenanttest: VerificationTest1_APITokenOfAnotherTenant: route GET /t/{tenant}/notes/{note}: tenant acme's token on its own path and values", "tenant globex's canary tenanttest-canary-", where}
		if err == nil || !anyLine(strings.Split(err.Error(), "\n"), want, "", "") {
			t.Errorf("flaw %s: got %v, want a line holding %q", flaw, err, want)
		}
	}
}

// TestFeedRefusalsAreJudged: a feed whose refusal tells another tenant's
// data, or that does not check the token's signature, fails the feed
// check; the toy's own feed passes it.
func TestFeedRefusalsAreJudged(t *testing.T) {
	feed := func(ty *toy) *tenanttest.Harness {
		h := ty.harness()
		h.WebSocket = &tenanttest.WebSocket{Path: "/t/{tenant}/ws", Join: []string{"join"}, Joined: func(_ int, msg []byte) bool { return string(msg) == "joined" }}
		return h
	}
	if _, err := tenanttest.Check(t.Context(), feed(newToy())); err != nil {
		t.Errorf("the isolated toy with its feed failed:\n%v", err)
	}
	for flaw, want := range map[string][]string{
		"feedRefusalLeak": {"tenanttest: VerificationTest4_WebSocketScopedToTenantRoom: no token on tenant acme's feed (GET /t/acme/ws): tenant globex's canary tenanttest-canary-", "in the refusal's body"},
		"feedNoSignature": {"tenanttest: VerificationTest4_WebSocketScopedToTenantRoom: tenant acme's token with its signature changed on its own feed (GET /t/acme/ws): status 101: the feed opened, want a refusal"},
	} {
		_, err := tenanttest.Check(t.Context(), feed(newToy(flaw)))
		if err == nil || !anyLine(strings.Split(err.Error(), "\n"), want, "", "") {
			t.Errorf("flaw %s: got %v, want a line holding %q", flaw, err, want)
		}
	}
}
