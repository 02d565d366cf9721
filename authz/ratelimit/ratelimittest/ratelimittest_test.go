package ratelimittest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/authz/ratelimit/ratelimittest"
	"github.com/rtmx-ai/tenancy/tenant"
)

// brokenEnv names the broken limiter TestBrokenLimiter runs the suite on,
// in the subprocess TestSuiteCatchesBrokenLimiters starts.
const brokenEnv = "RATELIMITTEST_BROKEN_LIMITER"

// flaw is one way to break the Limiter contract.
type flaw int

const (
	correct flaw = iota
	noLimit
	refusalTakes
	slowRefill
	sharedBudget
	keyConcat // the budget of "a_b" is that of "a" (keys cut at the first '_')
	acceptsZeroID
	ignoresContext
	racy
)

// brokenLimiters are Limiters that each break one clause of the contract,
// and the subtest of TestLimiter that must fail on each.
var brokenLimiters = map[string]struct {
	flaw   flaw
	clause string
}{
	"Correct":        {correct, ""},
	"NoLimit":        {noLimit, "BurstAllowedThenRefused"},
	"RefusalTakes":   {refusalTakes, "RefusalTakesNothing"},
	"SlowRefill":     {slowRefill, "RefillsAtTheRate"},
	"SharedBudget":   {sharedBudget, "TenantsHaveBudgetsApart"},
	"KeyCutAtUnder":  {keyConcat, "TenantsHaveBudgetsApart"},
	"AcceptsZeroID":  {acceptsZeroID, "ZeroIDIsRefused"},
	"IgnoresContext": {ignoresContext, "CancelledContextTakesNothing"},
	"Racy":           {racy, "ConcurrentCallsTakeFromOneBudget"},
}

// limiter is a simple Limiter, correct but for its flaw.
type limiter struct {
	flaw flaw
	q    ratelimit.Quota
	mu   sync.Mutex // guards m
	m    map[string]*rate.Limiter
}

func newLimiter(f flaw, q ratelimit.Quota) *limiter {
	return &limiter{flaw: f, q: q, m: map[string]*rate.Limiter{}}
}

func (l *limiter) Allow(ctx context.Context, id tenant.ID) (ratelimit.Decision, error) {
	if id.IsZero() && l.flaw != acceptsZeroID {
		return ratelimit.Decision{}, fmt.Errorf("ratelimit: %w", tenant.ErrNoTenant)
	}
	if err := ctx.Err(); err != nil && l.flaw != ignoresContext {
		return ratelimit.Decision{}, err
	}
	key := id.String()
	switch l.flaw {
	case sharedBudget:
		key = ""
	case keyConcat:
		key, _, _ = strings.Cut(key, "_")
	}
	r := rate.Limit(l.q.Rate)
	if l.flaw == slowRefill {
		r /= 10
	}
	l.mu.Lock()
	lim := l.m[key]
	if lim == nil {
		lim = rate.NewLimiter(r, l.q.Burst)
		l.m[key] = lim
	}
	l.mu.Unlock()
	d := ratelimit.Decision{Limit: l.q.Rate, Burst: l.q.Burst}
	now := time.Now()
	if l.flaw == racy {
		// Looks, then takes: two goroutines can both see the last token,
		// and ReserveN takes it even when it is gone.
		ok := lim.TokensAt(now) >= 1
		time.Sleep(100 * time.Microsecond)
		if ok {
			lim.ReserveN(now, 1)
			d.Allowed = true
			d.Remaining = max(0, int(lim.TokensAt(now)))
			return d, nil
		}
	} else if l.flaw == noLimit || lim.AllowN(now, 1) {
		d.Allowed = true
		d.Remaining = max(0, int(lim.TokensAt(now)))
		if l.flaw == noLimit {
			d.Remaining = l.q.Burst - 1
		}
		return d, nil
	}
	if l.flaw == refusalTakes {
		lim.ReserveN(now, 1) // and never cancelled
	}
	d.RetryAfter = max(time.Nanosecond, time.Duration((1-lim.TokensAt(now))/float64(r)*float64(time.Second)))
	return d, nil
}

func TestReferenceLimiter(t *testing.T) {
	ratelimittest.TestLimiter(t, func(t *testing.T, q ratelimit.Quota) ratelimit.Limiter {
		return newLimiter(correct, q)
	})
}

// TestBrokenLimiter runs the suite on the broken limiter brokenEnv names;
// only in the subprocess.
func TestBrokenLimiter(t *testing.T) {
	name := os.Getenv(brokenEnv)
	if name == "" {
		t.Skip("runs only as the subprocess of TestSuiteCatchesBrokenLimiters")
	}
	b, ok := brokenLimiters[name]
	if !ok {
		t.Fatalf("no broken limiter %q", name)
	}
	ratelimittest.TestLimiter(t, func(t *testing.T, q ratelimit.Quota) ratelimit.Limiter {
		return newLimiter(b.flaw, q)
	})
}

// TestSuiteCatchesBrokenLimiters runs the suite on each broken limiter in
// a subprocess (this test binary, running only TestBrokenLimiter) and
// checks that it fails, in the subtest of the clause that limiter breaks.
func TestSuiteCatchesBrokenLimiters(t *testing.T) {
	if os.Getenv(brokenEnv) != "" {
		t.Skip("in the subprocess")
	}
	for name, b := range brokenLimiters {
		t.Run(name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestBrokenLimiter$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), brokenEnv+"="+name)
			out, err := cmd.CombinedOutput()
			if b.clause == "" {
				if err != nil || !strings.Contains(string(out), "--- PASS: TestBrokenLimiter ") {
					t.Fatalf("the suite did not pass on a correct limiter (err %v):\n%s", err, out)
				}
				return
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("the suite passed on a limiter that breaks %s (err %v):\n%s", b.clause, err, out)
			}
			if want := "--- FAIL: TestBrokenLimiter/" + b.clause + " "; !strings.Contains(string(out), want) {
				t.Fatalf("the suite failed, but not in %s:\n%s", b.clause, out)
			}
		})
	}
}
