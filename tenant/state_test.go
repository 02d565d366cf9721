package tenant_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/rtmx-ai/tenancy/tenant"
)

// allowedMoves is the lifecycle of REQ-DEPLOY-004 written out by hand:
// Request -> Provision -> Active -> (Suspended) -> Decommission -> Deleted,
// with Failed for a provisioning that could not finish. It is deliberately
// not derived from the package's own table.
var allowedMoves = map[[2]tenant.State]bool{
	{tenant.StateRequested, tenant.StateProvisioning}:    true,
	{tenant.StateRequested, tenant.StateFailed}:          true,
	{tenant.StateProvisioning, tenant.StateActive}:       true,
	{tenant.StateProvisioning, tenant.StateFailed}:       true,
	{tenant.StateActive, tenant.StateSuspended}:          true,
	{tenant.StateActive, tenant.StateDecommissioning}:    true,
	{tenant.StateSuspended, tenant.StateActive}:          true,
	{tenant.StateSuspended, tenant.StateDecommissioning}: true,
	{tenant.StateDecommissioning, tenant.StateDeleted}:   true,
	{tenant.StateFailed, tenant.StateProvisioning}:       true,
	{tenant.StateFailed, tenant.StateDecommissioning}:    true,
}

func TestStates(t *testing.T) {
	want := []tenant.State{"requested", "provisioning", "active", "suspended", "decommissioning", "deleted", "failed"}
	got := tenant.States()
	if !slices.Equal(got, want) {
		t.Fatalf("States() = %v, want %v", got, want)
	}
	got[0] = "mutated"
	if tenant.States()[0] != tenant.StateRequested {
		t.Error("States() returns shared storage")
	}
	for _, s := range want {
		if !s.Valid() {
			t.Errorf("%s.Valid() = false", s)
		}
	}
	for _, s := range []tenant.State{"", "Active", "ACTIVE", "gone", "active "} {
		if s.Valid() {
			t.Errorf("State(%q).Valid() = true", s)
		}
	}
}

func TestStateTransitions(t *testing.T) {
	for _, from := range tenant.States() {
		for _, to := range tenant.States() {
			want := allowedMoves[[2]tenant.State{from, to}]
			if got := from.CanTransition(to); got != want {
				t.Errorf("%s.CanTransition(%s) = %v, want %v", from, to, got, want)
			}
			if got := slices.Contains(from.Next(), to); got != want {
				t.Errorf("%s.Next() contains %s = %v, want %v", from, to, got, want)
			}
			next, err := from.Transition(to)
			if want {
				if err != nil || next != to {
					t.Errorf("%s.Transition(%s) = %s, %v; want %s, nil", from, to, next, err, to)
				}
				continue
			}
			if err == nil {
				t.Errorf("%s.Transition(%s) = %s, nil; want an error", from, to, next)
				continue
			}
			if next != from {
				t.Errorf("illegal %s.Transition(%s) returned %s, want the unchanged state", from, to, next)
			}
			if !errors.Is(err, tenant.ErrIllegalTransition) {
				t.Errorf("%s.Transition(%s) error %v does not wrap ErrIllegalTransition", from, to, err)
			}
			if msg := err.Error(); !strings.Contains(msg, string(from)+" -> "+string(to)) {
				t.Errorf("%s.Transition(%s) error %q does not name both states", from, to, msg)
			}
		}
	}
	// Every move of the expected table is between defined states.
	for m := range allowedMoves {
		if !m[0].Valid() || !m[1].Valid() {
			t.Errorf("expected table names an undefined state: %v", m)
		}
	}
}

func TestStateDeletedIsTerminal(t *testing.T) {
	if n := tenant.StateDeleted.Next(); len(n) != 0 {
		t.Errorf("deleted.Next() = %v, want none", n)
	}
}

func TestStateNextIsACopy(t *testing.T) {
	n := tenant.StateActive.Next()
	if len(n) == 0 {
		t.Fatal("active.Next() is empty")
	}
	n[0] = tenant.StateDeleted
	if tenant.StateActive.CanTransition(tenant.StateDeleted) {
		t.Error("mutating the slice from Next() changed the state machine")
	}
}

func TestStateUndefined(t *testing.T) {
	bogus := tenant.State("bogus")
	for _, to := range tenant.States() {
		if bogus.CanTransition(to) {
			t.Errorf("undefined state may move to %s", to)
		}
		if tenant.StateActive.CanTransition(bogus) || to.CanTransition(bogus) {
			t.Errorf("a move to an undefined state is allowed")
		}
	}
	if _, err := bogus.Transition(tenant.StateActive); !errors.Is(err, tenant.ErrIllegalTransition) {
		t.Errorf("bogus.Transition(active) = %v, want ErrIllegalTransition", err)
	}
}

func TestParseState(t *testing.T) {
	for _, s := range tenant.States() {
		got, err := tenant.ParseState(string(s))
		if err != nil || got != s {
			t.Errorf("ParseState(%q) = %q, %v", s, got, err)
		}
	}
	for _, in := range []string{"", "Active", "ACTIVE", " active", "activ", "deleted\n", "request"} {
		got, err := tenant.ParseState(in)
		if err == nil {
			t.Errorf("ParseState(%q) = %q, want an error", in, got)
			continue
		}
		if got != "" {
			t.Errorf("ParseState(%q) returned %q with its error", in, got)
		}
		msg := err.Error()
		for _, s := range tenant.States() {
			if !strings.Contains(msg, string(s)) {
				t.Errorf("ParseState(%q) error %q does not name the allowed value %s", in, msg, s)
			}
		}
		assertPrintableASCII(t, msg)
	}
}

func TestTiers(t *testing.T) {
	want := []tenant.Tier{"standard", "enterprise", "government"}
	if got := tenant.Tiers(); !slices.Equal(got, want) {
		t.Fatalf("Tiers() = %v, want %v (in order of increasing isolation)", got, want)
	}
	for _, tier := range want {
		if !tier.Valid() {
			t.Errorf("%s.Valid() = false", tier)
		}
	}
	for _, tier := range []tenant.Tier{"", "Standard", "free", "premium", "gov"} {
		if tier.Valid() {
			t.Errorf("Tier(%q).Valid() = true", tier)
		}
	}
}

func TestParseTier(t *testing.T) {
	for _, tier := range tenant.Tiers() {
		got, err := tenant.ParseTier(string(tier))
		if err != nil || got != tier {
			t.Errorf("ParseTier(%q) = %q, %v", tier, got, err)
		}
	}
	for _, in := range []string{"", "Standard", "ENTERPRISE", "gov", "standard ", "free", "standard\r\nx"} {
		got, err := tenant.ParseTier(in)
		if err == nil {
			t.Errorf("ParseTier(%q) = %q, want an error", in, got)
			continue
		}
		if got != "" {
			t.Errorf("ParseTier(%q) returned %q with its error", in, got)
		}
		msg := err.Error()
		for _, tier := range tenant.Tiers() {
			if !strings.Contains(msg, string(tier)) {
				t.Errorf("ParseTier(%q) error %q does not name the allowed value %s", in, msg, tier)
			}
		}
		if !strings.HasPrefix(msg, "tenant: ") {
			t.Errorf("ParseTier error %q does not start with the package name", msg)
		}
		assertPrintableASCII(t, msg)
	}
}
