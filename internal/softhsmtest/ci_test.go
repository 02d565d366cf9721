package softhsmtest_test

import (
	"os"
	"strings"
	"testing"

	"github.com/rtmx-ai/tenancy/internal/softhsmtest"
	"github.com/rtmx-ai/tenancy/internal/testenv"
)

// envProbe makes TestUnavailableProbe run; the parent sets it in the child.
const envProbe = "SOFTHSMTEST_CHILD_PROBE"

// TestUnavailableProbe is the child's test: it asks for the module, which
// the parent made unavailable. It does nothing in a normal run.
func TestUnavailableProbe(t *testing.T) {
	if os.Getenv(envProbe) == "" {
		t.Skip("only runs as the child of TestMissingModuleInCI")
	}
	softhsmtest.ModulePath(t)
	t.Log("module found")
}

// TestMissingModuleInCI checks that a missing SoftHSM2 skips the test
// outside CI and fails it in CI, with CI read as internal/pgtest reads it
// (strconv.ParseBool): CI=1 is CI too.
func TestMissingModuleInCI(t *testing.T) {
	for _, tc := range []struct {
		ci       string // "" leaves CI unset
		wantFail bool
	}{
		{"", false},
		{"false", false},
		{"0", false},
		{"yes", false}, // not a ParseBool value, as in pgtest
		{"true", true},
		{"TRUE", true},
		{"1", true},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			env := []string{envProbe + "=1", softhsmtest.ModuleEnv + "=/nonexistent/libsofthsm2.so"}
			if tc.ci != "" {
				env = append(env, "CI="+tc.ci)
			}
			out, code := runProbe(t, env...)
			switch {
			case tc.wantFail && (code != 1 || !strings.Contains(out, "--- FAIL: TestUnavailableProbe") || !strings.Contains(out, "required in CI")):
				t.Fatalf("child exit %d, want 1 and a failure saying SoftHSM2 is required in CI:\n%s", code, out)
			case !tc.wantFail && (code != 0 || !strings.Contains(out, "--- SKIP: TestUnavailableProbe") || !strings.Contains(out, "apt-get install softhsm2")):
				t.Fatalf("child exit %d, want 0 and a skip saying how to install SoftHSM2:\n%s", code, out)
			}
			if !strings.Contains(out, "/nonexistent/libsofthsm2.so") {
				t.Fatalf("the message does not name the module path it tried:\n%s", out)
			}
		})
	}
}

// runProbe runs TestUnavailableProbe in a child process whose environment
// has no CI or TENANCY_TEST_* variables but those given.
func runProbe(t *testing.T, env ...string) (out string, exitCode int) {
	t.Helper()
	return testenv.RunTest(t, "TestUnavailableProbe", []string{"TENANCY_TEST_", envProbe + "="}, env...)
}
