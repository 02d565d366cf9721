package awskmstest_test

import (
	"os"
	"strings"
	"testing"

	"github.com/rtmx-ai/tenancy/internal/awskmstest"
	"github.com/rtmx-ai/tenancy/internal/testenv"
)

// envProbe makes TestUnavailableProbe run; the parent sets it in the child.
const envProbe = "AWSKMSTEST_CHILD_PROBE"

// TestUnavailableProbe is the child's test: it asks for a server, whose
// binary the parent made unavailable. It does nothing in a normal run.
func TestUnavailableProbe(t *testing.T) {
	if os.Getenv(envProbe) == "" {
		t.Skip("only runs as the child of TestMissingBinaryInCI")
	}
	awskmstest.Start(t)
	t.Log("server started")
}

// TestMissingBinaryInCI checks that a missing local-kms skips the test
// outside CI and fails it in CI, with CI read as internal/pgtest reads it
// (strconv.ParseBool): CI=1 is CI too.
func TestMissingBinaryInCI(t *testing.T) {
	t.Parallel()
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
			t.Parallel()
			env := []string{envProbe + "=1", awskmstest.BinaryEnv + "=/nonexistent/local-kms"}
			if tc.ci != "" {
				env = append(env, "CI="+tc.ci)
			}
			out, code := runChild(t, "TestUnavailableProbe", env...)
			switch {
			case tc.wantFail && (code != 1 || !strings.Contains(out, "--- FAIL: TestUnavailableProbe") || !strings.Contains(out, "required in CI")):
				t.Fatalf("child exit %d, want 1 and a failure saying local-kms is required in CI:\n%s", code, out)
			case !tc.wantFail && (code != 0 || !strings.Contains(out, "--- SKIP: TestUnavailableProbe")):
				t.Fatalf("child exit %d, want 0 and a skip:\n%s", code, out)
			}
			for _, want := range []string{"/nonexistent/local-kms", "go install " + awskmstest.Module + "@" + awskmstest.Version} {
				if !strings.Contains(out, want) {
					t.Fatalf("the message does not say %q:\n%s", want, out)
				}
			}
		})
	}
}

// runChild runs test (a test of this package) in a child process whose
// environment has no CI, TENANCY_TEST_* or AWSKMSTEST_* variables but those
// given.
func runChild(t *testing.T, test string, env ...string) (out string, exitCode int) {
	t.Helper()
	return testenv.RunTest(t, test, []string{"TENANCY_TEST_", "AWSKMSTEST_"}, env...)
}
