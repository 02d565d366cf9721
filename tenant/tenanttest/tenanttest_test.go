package tenanttest_test

import (
	"errors"
	"strings"
	"testing"

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
