package testenv_test

import (
	"os"
	"strings"
	"testing"

	"github.com/rtmx-ai/tenancy/internal/testenv"
)

func TestInCI(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "1": true, "TRUE": true, "t": true, "false": false, "0": false, "": false, "yes": false} {
		t.Setenv("CI", v)
		if got := testenv.InCI(); got != want {
			t.Errorf("CI=%q: InCI() = %v, want %v", v, got, want)
		}
	}
}

// TestChildEnv is the child of TestRunTest: it prints what it was given.
func TestChildEnv(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "" {
		t.Skip("only runs as the child of TestRunTest")
	}
	t.Logf("CI=%q DROPME=%q KEEP=%q", os.Getenv("CI"), os.Getenv("TESTENV_DROPME"), os.Getenv("TESTENV_KEEP"))
	if os.Getenv("TESTENV_FAIL") != "" {
		t.Fatal("asked to fail")
	}
}

func TestRunTest(t *testing.T) {
	t.Setenv("CI", "true")
	t.Setenv("TESTENV_DROPME", "x")
	t.Setenv("TESTENV_KEEP", "kept")
	out, code := testenv.RunTest(t, "TestChildEnv", []string{"TESTENV_DROP"}, "TESTENV_CHILD=1")
	if code != 0 || !strings.Contains(out, `CI="" DROPME="" KEEP="kept"`) {
		t.Fatalf("exit %d, want 0 and CI and the dropped variable gone:\n%s", code, out)
	}
	_, code = testenv.RunTest(t, "TestChildEnv", nil, "TESTENV_CHILD=1", "TESTENV_FAIL=1")
	if code != 1 {
		t.Fatalf("a failing child exits %d, want 1", code)
	}
}
