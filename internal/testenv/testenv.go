// Package testenv holds what the test harnesses of tenancy (internal/pgtest,
// internal/softhsmtest, internal/pgbouncertest, internal/awskmstest) share:
// whether the tests run in CI, where a missing backend is a failure rather
// than a skip, and a way to run one of a test binary's tests in a child
// process, to test that behaviour.
package testenv

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// InCI reports whether the environment variable CI is set to a value
// strconv.ParseBool takes as true (true, 1, TRUE, t, ...).
func InCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// RunTest runs the test named test of this test binary in a child process,
// verbose, once, with a 60-second timeout, and returns its combined output
// and exit code. The child's environment is this process's without CI and
// without every variable whose name starts with one of drop, plus env.
func RunTest(tb testing.TB, test string, drop []string, env ...string) (out string, exitCode int) {
	tb.Helper()
	cmd := exec.CommandContext(tb.Context(), os.Args[0],
		"-test.run=^"+test+"$", "-test.v", "-test.count=1", "-test.timeout=60s")
next:
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CI=") {
			continue
		}
		for _, d := range drop {
			if strings.HasPrefix(kv, d) {
				continue next
			}
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, env...)
	b, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		tb.Fatalf("running the child: %v", err)
	}
	return string(b), cmd.ProcessState.ExitCode()
}
