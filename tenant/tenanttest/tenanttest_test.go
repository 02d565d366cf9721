package tenanttest_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/rtmx-ai/tenancy/internal/testenv"
	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/rtmx-ai/tenancy/tenant/tenanttest"
)

// TestRunPassesOnAnIsolatedService runs the suite, as a service's own test
// does, on the service built right: every check runs (Strict) and passes.
func TestRunPassesOnAnIsolatedService(t *testing.T) {
	s := newService(t, isolated)
	tenanttest.Run(t, s.harness())
}

// TestCheckPassesOnAnIsolatedService is the same through Check: nil, and
// nothing skipped.
func TestCheckPassesOnAnIsolatedService(t *testing.T) {
	s := newService(t, isolated)
	skipped, err := tenanttest.Check(t.Context(), s.harness())
	if err != nil {
		t.Fatalf("Check of the isolated service:\n%v", err)
	}
	if len(skipped) > 0 {
		t.Fatalf("Check skipped %v with every field set", skipped)
	}
}

// TestCheckFindsEachLeak builds the service with one flaw at a time and
// checks that Check reports it, in the check that proves the part of
// REQ-DEPLOY-004 the flaw breaks, naming the route or feed and the
// tenants.
func TestCheckFindsEachLeak(t *testing.T) {
	for _, tc := range []struct {
		name string
		flaw flaw
		// want are substrings of one line of the error each, with {a} and
		// {b} for the two tenants.
		want [][]string
	}{
		{"handler trusts the path's tenant over the token's", pathTenant, [][]string{
			{"tenanttest: VerificationTest1_APITokenOfAnotherTenant: route GET /t/{tenant}/requirements/{req}: tenant {a}'s token on tenant {b}'s path and values (GET /t/{b}/requirements/REQ-", "status 200, which grants access; tenant {b}'s canary tenanttest-canary-", "in the body"},
			{"tenanttest: VerificationTest1_APITokenOfAnotherTenant: route DELETE /t/{tenant}/requirements/{req}: tenant {b}'s token on tenant {a}'s path and values", "status 204, which grants access"},
			{"tenanttest: VerificationTest1_APITokenOfAnotherTenant: route PUT /t/{tenant}/requirements/{req}: tenant {a}'s data changed during the replays of the other tenants"},
		}},
		{"answers carry another tenant's change in a header", lastChangeHeader, [][]string{
			{"tenanttest: VerificationTest1_APITokenOfAnotherTenant: route GET /t/{tenant}/requirements/{req}: tenant {a}'s token on its own path and values (GET /t/{a}/requirements/REQ-", "tenant {b}'s canary tenanttest-canary-", "in header X-Last-Change"},
		}},
		{"feed broadcasts to every tenant", broadcastFeed, [][]string{
			{"tenanttest: VerificationTest4_WebSocketScopedToTenantRoom: tenant {a}'s feed (GET /t/{a}/ws): tenant {b}'s canary tenanttest-canary-", "in a message"},
			{"tenanttest: VerificationTest4_WebSocketScopedToTenantRoom: tenant {b}'s feed (GET /t/{b}/ws): tenant {a}'s canary tenanttest-canary-"},
		}},
		{"bucket view made from the raw bucket", rawBucketView, [][]string{
			{"tenanttest: VerificationTest3_ObjectStorageAcrossTenants: tenant {a} reading tenant {b}'s object key \"REQ-", "in its own view got tenant {b}'s object"},
			{"tenanttest: VerificationTest3_ObjectStorageAcrossTenants: listing tenant {a}'s view: [tenant {b}'s canary tenanttest-canary-", "listed in tenant {a}'s view"},
			{"tenanttest: VerificationTest1_APITokenOfAnotherTenant: route GET /t/{tenant}/files/{file}: tenant {a}'s token on its own path with tenant {b}'s values (GET /t/{a}/files/REQ-", "status 200, which grants access; tenant {b}'s canary"},
		}},
		{"handler ignores the quota", noQuota, [][]string{
			{"tenanttest: TestCase7_QuotaPerTenant: route GET /t/{tenant}/requirements/{req}: tenant {a} sent 360 requests (Harness.Quota.Requests) and none was refused with 429"},
		}},
		{"one quota shared by every tenant", sharedQuota, [][]string{
			{"tenanttest: TestCase7_QuotaPerTenant: route GET /t/{tenant}/requirements/{req}: tenant {b} right after tenant {a} was limited (GET /t/{b}/requirements/REQ-", "status 429, want 2xx: one tenant's limit took from another's"},
		}},
		{"SQL text built from the values", sqlText, [][]string{
			{"tenanttest: VerificationTest2_DatabaseQueryWithoutTenant: Harness.Plant for tenant {a} of the canary \"tenanttest-canary-", "'; DROP TABLE tenanttest_canary; --\", which holds SQL metacharacters: "},
		}},
		{"token's signature not verified", unverifiedToken, [][]string{
			{"tenanttest: VerificationTest1_APITokenOfAnotherTenant: route GET /t/{tenant}/requirements/{req}: tenant {a}'s token with its signature changed on its own path and values (GET /t/{a}/requirements/REQ-", "status 200, which grants access; tenant {a}'s canary tenanttest-canary-"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newService(t, tc.flaw)
			_, err := tenanttest.Check(t.Context(), s.harness())
			if err == nil {
				t.Fatal("Check found nothing wrong")
			}
			a, b := s.tenants[0].ID.String(), s.tenants[1].ID.String()
			lines := strings.Split(err.Error(), "\n")
			for _, want := range tc.want {
				if !anyLine(lines, want, a, b) {
					t.Errorf("no line of the error holds %q (in that order); the error:\n%v", want, err)
				}
			}
			if errors.Is(err, tenanttest.ErrInvalidHarness) {
				t.Errorf("the leak was reported as an invalid harness: %v", err)
			}
		})
	}
}

// anyLine reports whether one of lines holds every part of want, in order,
// with {a} and {b} replaced.
func anyLine(lines, want []string, a, b string) bool {
	r := strings.NewReplacer("{a}", a, "{b}", b)
next:
	for _, l := range lines {
		rest := l
		for _, w := range want {
			w = r.Replace(w)
			i := strings.Index(rest, w)
			if i < 0 {
				continue next
			}
			rest = rest[i+len(w):]
		}
		return true
	}
	return false
}

// TestSetupRefusesAnInvalidHarness gives Check harnesses that break one
// rule each: the error wraps ErrInvalidHarness and names the field and the
// rule, and no check runs (Plant is not called for a field that is wrong
// before any call).
func TestSetupRefusesAnInvalidHarness(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(h *tenanttest.Harness, n *notes)
		want   string
		plants bool // Setup gets as far as Plant
	}{
		{"one tenant", func(h *tenanttest.Harness, n *notes) { h.Tenants = h.Tenants[:1] }, "Harness.Tenants: 1 tenant(s), need at least 2", false},
		{"same tenant twice", func(h *tenanttest.Harness, n *notes) { h.Tenants[1].ID = h.Tenants[0].ID }, "Harness.Tenants[1].ID acme is also Harness.Tenants[0].ID: IDs must be distinct", false},
		{"zero ID", func(h *tenanttest.Harness, n *notes) { h.Tenants[1].ID = tenant.ID{} }, "Harness.Tenants[1].ID is the zero ID", false},
		{"no token maker", func(h *tenanttest.Harness, n *notes) { h.Tenants[0].Token = nil }, "Harness.Tenants[0].Token is nil", false},
		{"no handler", func(h *tenanttest.Harness, n *notes) { h.Handler = nil }, "Harness.Handler is nil", false},
		{"no plant", func(h *tenanttest.Harness, n *notes) { h.Plant = nil }, "Harness.Plant is nil", false},
		{"no method", func(h *tenanttest.Harness, n *notes) { h.Routes[0].Method = "" }, `Harness.Routes[0].Method "": must be an HTTP method`, false},
		{"relative path", func(h *tenanttest.Harness, n *notes) { h.Routes[0].Path = "t/{tenant}" }, `Harness.Routes[0].Path "t/{tenant}": must start with /`, false},
		{"unbalanced braces", func(h *tenanttest.Harness, n *notes) { h.Routes[0].Path = "/t/{tenant/x" }, `Harness.Routes[0].Path "/t/{tenant/x": unbalanced braces`, false},
		{"quota of no requests", func(h *tenanttest.Harness, n *notes) {
			h.Quota = &tenanttest.Quota{Route: h.Routes[0]}
		}, "Harness.Quota.Requests is 0: must be at least 1", false},
		{"feed path with a value", func(h *tenanttest.Harness, n *notes) {
			h.WebSocket = &tenanttest.WebSocket{Path: "/t/{tenant}/ws/{room}"}
		}, `Harness.WebSocket.Path "/t/{tenant}/ws/{room}": placeholder {room}: the feed's path may hold {tenant} only`, false},
		{"tables without a DB", func(h *tenanttest.Harness, n *notes) { h.Tables = []string{"notes"} }, "Harness.Tables is set without Harness.DB", false},
		{"negative timeout", func(h *tenanttest.Harness, n *notes) { h.Timeout = -1 }, "Harness.Timeout is -1ns: must not be negative", false},
		{"a placeholder Plant does not fill", func(h *tenanttest.Harness, n *notes) { h.Routes[0].Path = "/t/{tenant}/notes/{note}/{rev}" },
			"route GET /t/{tenant}/notes/{note}/{rev}: the values Harness.Plant returned for tenant acme do not fill its path: no value for {rev} in Planted.Values", true},
		{"plant fails", func(h *tenanttest.Harness, n *notes) {
			h.Plant = func(context.Context, tenanttest.Tenant, string) (tenanttest.Planted, error) {
				n.seq++
				return tenanttest.Planted{}, errors.New("the service is down")
			}
		}, "Harness.Plant for tenant acme: the service is down", true},
		{"token maker fails", func(h *tenanttest.Harness, n *notes) {
			h.Tenants[1].Token = func(string) (string, error) { return "", errors.New("no key") }
		}, `Harness.Tenants: tenant globex: Token(""): no key`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &notes{notes: map[string]map[string]string{}}
			h := notesHarness(n)
			tc.change(h, n)
			skipped, err := tenanttest.Check(t.Context(), h)
			if !errors.Is(err, tenanttest.ErrInvalidHarness) {
				t.Fatalf("got %v, want an error wrapping ErrInvalidHarness", err)
			}
			if !strings.Contains(err.Error(), "tenanttest: invalid harness: "+tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if skipped != nil {
				t.Errorf("skipped %v: an invalid harness runs no check", skipped)
			}
			if planted := n.seq > 0; planted != tc.plants {
				t.Errorf("Plant called %d times", n.seq)
			}
			if strings.Contains(err.Error(), "VerificationTest") {
				t.Errorf("a check ran: %v", err)
			}
		})
	}
	if _, err := tenanttest.Check(t.Context(), nil); !errors.Is(err, tenanttest.ErrInvalidHarness) {
		t.Errorf("Check of a nil Harness: %v", err)
	}
}

// TestStrictFailsWhereAFieldIsMissing: with Strict, a check whose field is
// zero is an error naming the field, not a skip.
func TestStrictFailsWhereAFieldIsMissing(t *testing.T) {
	h := notesHarness(&notes{notes: map[string]map[string]string{}})
	h.Strict = true
	skipped, err := tenanttest.Check(t.Context(), h)
	forged := "VerificationTest1_APITokenOfAnotherTenant: the replays with a token whose signature is changed (the tokens are not JWS: the suite cannot forge them)"
	if len(skipped) != 1 || skipped[0] != forged {
		t.Errorf("Strict skipped %q, want only %q (no field makes the toy's tokens JWS)", skipped, forged)
	}
	for _, want := range []string{
		"tenanttest: VerificationTest2_DatabaseQueryWithoutTenant: Harness.DB is not set, and Harness.Strict asks for every check",
		"tenanttest: VerificationTest3_ObjectStorageAcrossTenants: Harness.Buckets is not set",
		"tenanttest: VerificationTest4_WebSocketScopedToTenantRoom: Harness.WebSocket is not set",
		"tenanttest: TestCase5_EncryptionKeysPerTenant: Harness.Keys is not set",
		"tenanttest: TestCase6_AuditLogsPerTenant: Harness.Audit is not set",
		"tenanttest: TestCase7_QuotaPerTenant: Harness.Quota is not set",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "VerificationTest1") {
		t.Errorf("the API check failed on the isolated toy service: %v", err)
	}
}

// envRunChild makes TestRunChild run the suite on the toy service, with
// the flaw of believing the path's tenant if it is "leaky".
const envRunChild = "TENANTTEST_RUN_CHILD"

// TestRunChild is the child of TestRunReportsSubtests; it does nothing in
// a normal run.
func TestRunChild(t *testing.T) {
	v := os.Getenv(envRunChild)
	if v == "" {
		t.Skip("only runs as the child of TestRunReportsSubtests")
	}
	tenanttest.Run(t, notesHarness(&notes{notes: map[string]map[string]string{}, trustPath: v == "leaky"}))
}

// TestRunReportsSubtests runs Run in a child process: a check per subtest,
// the leak failing the API check with the route and tenants named, the
// checks without their field skipped naming it.
func TestRunReportsSubtests(t *testing.T) {
	out, code := testenv.RunTest(t, "TestRunChild", []string{"TENANTTEST_"}, envRunChild+"=leaky")
	if code != 1 {
		t.Fatalf("the leaky child exited %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{
		"--- PASS: TestRunChild/Setup",
		"--- FAIL: TestRunChild/VerificationTest1_APITokenOfAnotherTenant",
		"route GET /t/{tenant}/notes/{note}: tenant acme's token on tenant globex's path and values (GET /t/globex/notes/",
		"--- SKIP: TestRunChild/VerificationTest2_DatabaseQueryWithoutTenant",
		"Harness.DB is not set",
		"--- SKIP: TestRunChild/TestCase7_QuotaPerTenant",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the child's output does not hold %q:\n%s", want, out)
		}
	}
	out, code = testenv.RunTest(t, "TestRunChild", []string{"TENANTTEST_"}, envRunChild+"=isolated")
	if code != 0 || !strings.Contains(out, "--- PASS: TestRunChild/VerificationTest1_APITokenOfAnotherTenant") {
		t.Fatalf("the isolated child exited %d, want 0 and the API check passed:\n%s", code, out)
	}
}

// TestAPICheckNeedsEachTenantToReachItsOwnData: a service that refuses
// every request, fails every request, or answers 2xx without the data,
// leaks nothing but fails the positive control of the API check.
func TestAPICheckNeedsEachTenantToReachItsOwnData(t *testing.T) {
	for status, want := range map[int]string{
		http.StatusForbidden:           "status 403, want 2xx (a tenant must reach its own data",
		http.StatusInternalServerError: "status 500, want 2xx (a tenant must reach its own data",
		http.StatusOK:                  "the body does not hold its canary tenanttest-canary-",
	} {
		_, err := tenanttest.Check(t.Context(), notesHarness(&notes{notes: map[string]map[string]string{}, always: status}))
		if err == nil {
			t.Errorf("a service answering %d to everything passed", status)
			continue
		}
		for _, id := range []string{"acme", "globex"} {
			if !anyLine(strings.Split(err.Error(), "\n"), []string{"tenanttest: VerificationTest1_APITokenOfAnotherTenant: route GET /t/{tenant}/notes/{note}: tenant " + id + "'s token on its own path and values (GET /t/" + id + "/notes/n", want}, "", "") {
				t.Errorf("answering %d: no line names tenant %s and says %q:\n%v", status, id, want, err)
			}
		}
	}
}

// TestCheckWithAnEndedContextFails: checks cut short prove nothing, so
// Check fails rather than pass on what it did not check.
func TestCheckWithAnEndedContextFails(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := tenanttest.Check(ctx, notesHarness(&notes{notes: map[string]map[string]string{}}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Check with a cancelled context: %v, want an error wrapping context.Canceled", err)
	}
}

// TestPerTenantSerialIDsAreNoLeak: where each tenant numbers its things
// from 1, another tenant's ID on a tenant's own path names its own thing;
// an isolated service with such IDs passes, and one that believes the
// path's tenant still fails. acme has a note more than globex, so that
// globex's nth note has the ID of acme's (n+1)th.
func TestPerTenantSerialIDsAreNoLeak(t *testing.T) {
	seeded := map[string]map[string]string{"acme": {"n1": "acme's first note"}}
	if _, err := tenanttest.Check(t.Context(), notesHarness(&notes{notes: seeded, serial: true})); err != nil {
		t.Errorf("an isolated service with per-tenant serial IDs failed:\n%v", err)
	}
	_, err := tenanttest.Check(t.Context(), notesHarness(&notes{notes: map[string]map[string]string{}, serial: true, trustPath: true}))
	if err == nil || !strings.Contains(err.Error(), "tenant acme's token on tenant globex's path and values (GET /t/globex/notes/n") {
		t.Errorf("a leaky service with per-tenant serial IDs: %v", err)
	}
}

// TestCheckListsThePartsItDidNotRun: without Strict, Check lists in
// skipped each part of a check it did not run, and why, beside the checks
// it skipped; with Strict, a part that a field would enable is an error.
func TestCheckListsThePartsItDidNotRun(t *testing.T) {
	h := notesHarness(&notes{notes: map[string]map[string]string{}})
	h.Routes[0].Reads = false
	skipped, err := tenanttest.Check(t.Context(), h)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	for _, want := range []string{
		"Setup: reading a tenant's data back after the replays (no route of Harness.Routes has Reads set)",
		"VerificationTest1_APITokenOfAnotherTenant: the replays with a token whose signature is changed (the tokens are not JWS: the suite cannot forge them)",
		"VerificationTest2_DatabaseQueryWithoutTenant",
	} {
		found := false
		for _, s := range skipped {
			found = found || s == want
		}
		if !found {
			t.Errorf("skipped %q does not list %q", skipped, want)
		}
	}
	h.Strict = true
	_, err = tenanttest.Check(t.Context(), h)
	want := "tenanttest: invalid harness: reading a tenant's data back after the replays was not checked (no route of Harness.Routes has Reads set), and Harness.Strict asks for every check"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("with Strict: %v, want %q", err, want)
	}
}
