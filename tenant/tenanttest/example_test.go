package tenanttest_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/rtmx-ai/tenancy/tenant/tenanttest"
)

// notes is a toy service for the examples: each tenant's notes in memory,
// one bearer token per tenant. A real service gives the suite its
// store.DB, buckets, keys, audit log, feed and quota too.
type notes struct {
	trustPath bool // the flaw of the second example: the path's tenant is believed
	always    int  // if set, the status of every answer, with no body
	serial    bool // note IDs count per tenant (n1, n2, ...), not over all

	mu    sync.Mutex                   // guards notes and seq
	notes map[string]map[string]string // tenant, note ID: text
	seq   int
}

func (n *notes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if n.always != 0 {
		w.WriteHeader(n.always)
		return
	}
	who, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer token-of-")
	if !ok {
		http.Error(w, "no token", http.StatusUnauthorized)
		return
	}
	id := r.PathValue("tenant")
	if id != who && !n.trustPath {
		http.Error(w, "another tenant", http.StatusForbidden)
		return
	}
	n.mu.Lock()
	text, ok := n.notes[id][r.PathValue("note")]
	n.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	fmt.Fprintln(w, text)
}

func (n *notes) plant(_ context.Context, tn tenanttest.Tenant, canary string) (tenanttest.Planted, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.seq++
	if n.notes[tn.ID.String()] == nil {
		n.notes[tn.ID.String()] = map[string]string{}
	}
	note := "n" + strconv.Itoa(n.seq)
	if n.serial {
		note = "n" + strconv.Itoa(len(n.notes[tn.ID.String()])+1)
	}
	n.notes[tn.ID.String()][note] = canary
	return tenanttest.Planted{Values: map[string]string{"note": note}}, nil
}

func notesHarness(n *notes) *tenanttest.Harness {
	mux := http.NewServeMux()
	mux.Handle("GET /t/{tenant}/notes/{note}", n)
	var tenants []tenanttest.Tenant
	for _, s := range []string{"acme", "globex"} {
		tenants = append(tenants, tenanttest.Tenant{
			ID:    tenant.MustParseID(s),
			Token: func(string) (string, error) { return "token-of-" + s, nil },
		})
	}
	return &tenanttest.Harness{
		Tenants: tenants,
		Handler: mux,
		Plant:   n.plant,
		Routes:  []tenanttest.Route{{Method: http.MethodGet, Path: "/t/{tenant}/notes/{note}", Reads: true}},
	}
}

// A service's harness, run by Check: the checks its fields reach pass,
// and those whose fields it left zero are skipped, as is the part its
// tokens, which are not JWS, cannot reach. In a test, call
// tenanttest.Run(t, h) instead, for a subtest per check.
func ExampleCheck() {
	n := &notes{notes: map[string]map[string]string{}}
	skipped, err := tenanttest.Check(context.Background(), notesHarness(n))
	fmt.Println("error:", err)
	for _, s := range skipped {
		fmt.Println("skipped:", s)
	}
	// Output:
	// error: <nil>
	// skipped: VerificationTest1_APITokenOfAnotherTenant: the replays with a token whose signature is changed (the tokens are not JWS: the suite cannot forge them)
	// skipped: VerificationTest2_DatabaseQueryWithoutTenant
	// skipped: VerificationTest3_ObjectStorageAcrossTenants
	// skipped: VerificationTest4_WebSocketScopedToTenantRoom
	// skipped: TestCase5_EncryptionKeysPerTenant
	// skipped: TestCase6_AuditLogsPerTenant
	// skipped: TestCase7_QuotaPerTenant
}

// A service that believes the tenant of the path rather than the token's:
// Check names the route, the tenants, the request and what leaked.
func ExampleCheck_leak() {
	n := &notes{notes: map[string]map[string]string{}, trustPath: true}
	_, err := tenanttest.Check(context.Background(), notesHarness(n))
	first, _, _ := strings.Cut(err.Error(), "\n")
	upToCanary, _, _ := strings.Cut(first, " tenanttest-canary-")
	fmt.Println(upToCanary)
	// Output:
	// tenanttest: VerificationTest1_APITokenOfAnotherTenant: route GET /t/{tenant}/notes/{note}: tenant acme's token on tenant globex's path and values (GET /t/globex/notes/n4): status 200, which grants access; tenant globex's canary
}
