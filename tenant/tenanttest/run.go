package tenanttest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

// ErrInvalidHarness is wrapped by the error of Setup when the Harness
// cannot be used: a required field is missing, a field breaks its rule, or
// Plant fails or returns values that do not fill the route templates. The
// message names the field and the rule.
var ErrInvalidHarness = errors.New("tenanttest: invalid harness")

// defaultTimeout bounds each check when Harness.Timeout is zero.
const defaultTimeout = 30 * time.Second

// Names of the checks, as Run names its subtests and Check reports them.
const (
	checkSetup   = "Setup"
	checkAPI     = "VerificationTest1_APITokenOfAnotherTenant"
	checkDB      = "VerificationTest2_DatabaseQueryWithoutTenant"
	checkObjects = "VerificationTest3_ObjectStorageAcrossTenants"
	checkWS      = "VerificationTest4_WebSocketScopedToTenantRoom"
	checkKeys    = "TestCase5_EncryptionKeysPerTenant"
	checkAudit   = "TestCase6_AuditLogsPerTenant"
	checkQuota   = "TestCase7_QuotaPerTenant"
)

// A check is one part of the suite. needs names the Harness field the
// check cannot run without when that field is zero ("" when it can run).
type check struct {
	name  string
	needs func(h *Harness) string
	run   func(s *suite, ctx context.Context, r *report)
}

// checks are the suite's checks after Setup, in the order they run: the
// quota check last, so that the tenant it drives over its limit is not
// refused in the other checks.
var checks = []check{
	{checkAPI, func(h *Harness) string { return zeroIf(len(h.Routes) == 0, "Routes") }, (*suite).checkAPI},
	{checkDB, func(h *Harness) string { return zeroIf(h.DB == nil, "DB") }, (*suite).checkDB},
	{checkObjects, func(h *Harness) string { return zeroIf(h.Buckets == nil && h.BucketView == nil, "Buckets") }, (*suite).checkObjects},
	{checkWS, func(h *Harness) string { return zeroIf(h.WebSocket == nil, "WebSocket") }, (*suite).checkWebSocket},
	{checkKeys, func(h *Harness) string { return zeroIf(h.Keys == nil, "Keys") }, (*suite).checkKeys},
	{checkAudit, func(h *Harness) string { return zeroIf(h.Audit == nil, "Audit") }, (*suite).checkAudit},
	{checkQuota, func(h *Harness) string { return zeroIf(h.Quota == nil, "Quota") }, (*suite).checkQuota},
}

func zeroIf(zero bool, field string) string {
	if zero {
		return field
	}
	return ""
}

// Run runs the isolation conformance suite against h, each check a
// subtest of t named after the part of REQ-DEPLOY-004 it proves (such as
// "VerificationTest1_APITokenOfAnotherTenant"). A failure names the
// check, the route, the tenants and what leaked.
//
// The first subtest, "Setup", validates h and plants a canary in each
// tenant; if it fails, no other check runs. A check whose Harness field
// is zero is skipped with a message naming the field, or fails when
// h.Strict is set. The subtests run one after another, never in parallel.
func Run(t *testing.T, h *Harness) {
	t.Helper()
	if h == nil {
		t.Fatalf("%v: the Harness is nil", ErrInvalidHarness)
	}
	s := newSuite(h)
	defer s.close()
	if !t.Run(checkSetup, func(t *testing.T) {
		r := s.runCheck(t.Context(), check{name: checkSetup, run: (*suite).setup})
		r.toT(t)
	}) {
		return
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if f := c.needs(h); f != "" {
				if h.Strict {
					t.Fatalf("Harness.%s is not set, and Harness.Strict asks for every check", f)
				}
				t.Skipf("Harness.%s is not set", f)
			}
			s.runCheck(t.Context(), c).toT(t)
		})
	}
}

// Check runs every check of the suite against h and returns what failed,
// joined (nil if nothing did), and which checks were skipped for want of
// a Harness field. It is Run without a testing.T, for a command or for a
// test of the suite itself.
//
// skipped holds the names of the checks skipped (Run's subtest names),
// and the parts of checks that were not run, each as "<check>: <part>
// (<why>)", such as "VerificationTest2_DatabaseQueryWithoutTenant: what
// each tenant's session reads of the tables (Harness.Tables is not set)"
// or the replays with a forged signature where the tokens are not JWS.
// With h.Strict no check or part is skipped for want of a field (a missing
// field is an error instead); skipped then lists only the parts no field
// can enable, such as the forged signatures of tokens that are not JWS.
// Each error reads "tenanttest: <check>: <what failed>"; an invalid
// Harness gives an error wrapping ErrInvalidHarness and runs no check.
func Check(ctx context.Context, h *Harness) (skipped []string, err error) {
	if h == nil {
		return nil, fmt.Errorf("%w: the Harness is nil", ErrInvalidHarness)
	}
	s := newSuite(h)
	defer s.close()
	r := s.runCheck(ctx, check{name: checkSetup, run: (*suite).setup})
	if len(r.errs) > 0 {
		return nil, r.err()
	}
	skipped = notes(checkSetup, r)
	var errs []error
	for _, c := range checks {
		if f := c.needs(h); f != "" {
			if h.Strict {
				errs = append(errs, fmt.Errorf("tenanttest: %s: Harness.%s is not set, and Harness.Strict asks for every check", c.name, f))
				continue
			}
			skipped = append(skipped, c.name)
			continue
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("tenanttest: %s: %w", c.name, err))
			break
		}
		r := s.runCheck(ctx, c)
		skipped = append(skipped, notes(c.name, r)...)
		errs = append(errs, r.err())
	}
	return skipped, errors.Join(errs...)
}

// notes returns the parts of check name that r records as not run, each
// as "<check>: <part> (<why>)".
func notes(name string, r *report) []string {
	var out []string
	for _, n := range r.notes {
		out = append(out, name+": "+n)
	}
	return out
}

// suite is one run of the checks against a Harness.
type suite struct {
	h      *Harness
	srv    *httptest.Server // serves h.Handler; made on first use
	client *http.Client

	mu      sync.Mutex                        // guards planted and values
	planted map[tenant.ID][]string            // every canary planted in each tenant so far
	values  map[tenant.ID][]map[string]string // every Planted.Values of each tenant so far
}

func newSuite(h *Harness) *suite {
	return &suite{h: h, planted: map[tenant.ID][]string{}, values: map[tenant.ID][]map[string]string{}}
}

func (s *suite) close() {
	if s.srv != nil {
		s.srv.Close()
	}
}

// server returns the loopback server of the Harness's Handler and a
// client that does not follow redirects (a 3xx is an answer to judge).
func (s *suite) server() (*httptest.Server, *http.Client) {
	if s.srv == nil {
		s.srv = httptest.NewServer(s.h.Handler)
		c := *s.srv.Client()
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		s.client = &c
	}
	return s.srv, s.client
}

// runCheck runs c with the Harness's timeout and returns its report.
func (s *suite) runCheck(ctx context.Context, c check) *report {
	timeout := s.h.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r := &report{check: c.name, strict: s.h.Strict}
	c.run(s, ctx, r)
	if err := ctx.Err(); err != nil {
		// A check cut short proves nothing, even if it found nothing.
		r.errs = append(r.errs, fmt.Errorf("the check did not finish (Harness.Timeout %s): %w", timeout, err))
	}
	return r
}

// report collects what one check found.
type report struct {
	check  string
	strict bool
	errs   []error
	notes  []string // parts not run for want of a field
}

// failf records a failure.
func (r *report) failf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf(format, args...))
}

// notRun records a part of the check not run because Harness.field is
// zero: a failure with Strict, a note otherwise.
func (r *report) notRun(field, part string) {
	r.missing(part, "Harness."+field+" is not set")
}

// missing records a part of the check not run for want of something the
// Harness can give (why): a failure with Strict, a note "part (why)"
// otherwise.
func (r *report) missing(part, why string) {
	if r.strict {
		r.failf("%s was not checked (%s), and Harness.Strict asks for every check", part, why)
		return
	}
	r.skip(part, why)
}

// skip records a part of the check not run for a reason no Harness field
// can change (why), such as tokens the suite cannot forge: a note, even
// with Strict.
func (r *report) skip(part, why string) {
	n := fmt.Sprintf("%s (%s)", part, why)
	if !slices.Contains(r.notes, n) {
		r.notes = append(r.notes, n)
	}
}

// err returns the failures as one error, each line prefixed with the
// package and the check.
func (r *report) err() error {
	var errs []error
	for _, e := range r.errs {
		ended := errors.Is(e, context.Canceled) || errors.Is(e, context.DeadlineExceeded)
		if r.check == checkSetup && !ended {
			errs = append(errs, fmt.Errorf("%w: %w", ErrInvalidHarness, e))
			continue
		}
		errs = append(errs, fmt.Errorf("tenanttest: %s: %w", r.check, e))
	}
	return errors.Join(errs...)
}

// toT reports r on t, the check's subtest.
func (r *report) toT(t *testing.T) {
	t.Helper()
	for _, n := range r.notes {
		t.Log(n)
	}
	for _, e := range r.errs {
		t.Error(e.Error())
	}
}
