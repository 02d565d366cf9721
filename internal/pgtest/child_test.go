package pgtest_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/internal/testenv"
)

// The tests in this file run this test binary again, as a child process
// with a chosen environment, to see what Main and DB do end to end.

const (
	envChild  = "PGTEST_CHILD_PROBE" // makes TestChildProbe run
	envNoMain = "PGTEST_CHILD_NO_MAIN"
	envCrash  = "PGTEST_CHILD_CRASH" // makes TestChildProbe exit without cleanup
)

// TestChildProbe is the child's test: it asks for the database and prints
// its admin URL. It does nothing in a normal run.
func TestChildProbe(t *testing.T) {
	if os.Getenv(envChild) == "" {
		t.Skip("only runs as the child of the process tests")
	}
	db := pgtest.DB(t)
	conn, err := pgx.Connect(t.Context(), db.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var one int
	if err := conn.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	t.Logf("PGTEST_ADMIN_URL=%s", db.AdminURL())
	if os.Getenv(envCrash) != "" {
		fmt.Printf("PGTEST_ADMIN_URL=%s\n", db.AdminURL())
		os.Exit(3) // no cleanup by Main
	}
}

// runChild runs TestChildProbe in a child process whose environment has no
// PG*, TENANCY_TEST_* or CI variables but those given.
func runChild(t *testing.T, env ...string) (out string, exitCode int) {
	t.Helper()
	return testenv.RunTest(t, "TestChildProbe", []string{"PG", "TENANCY_TEST_"}, append([]string{envChild + "=1"}, env...)...)
}

// closedPort returns a loopback port nothing listens on (most likely).
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	return port
}

func requireInitdb(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("initdb"); err != nil && os.Getenv("TENANCY_TEST_PG_BIN") == "" {
		if matches, _ := pgtest.GlobPGBin(); len(matches) == 0 {
			skipOrFail(t, "initdb not installed")
		}
	}
}

// throwawayChild runs the child with no server reachable by the libpq
// defaults, so that it starts a throwaway cluster, and returns the
// cluster's admin URL.
func throwawayChild(t *testing.T, wantCode int, env ...string) *pgx.ConnConfig {
	t.Helper()
	requireInitdb(t)
	port := closedPort(t)
	start := time.Now()
	out, code := runChild(t, append([]string{"PGHOST=127.0.0.1", "PGPORT=" + port}, env...)...)
	t.Logf("child ran for %v", time.Since(start).Round(time.Millisecond))
	if code != wantCode {
		t.Fatalf("child exit %d, want %d:\n%s", code, wantCode, out)
	}
	m := regexp.MustCompile(`PGTEST_ADMIN_URL=(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no admin URL in the child's output:\n%s", out)
	}
	cfg, err := pgx.ParseConfig(m[1])
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "127.0.0.1" || strconv.Itoa(int(cfg.Port)) == port {
		t.Fatalf("child used %s:%d, want a throwaway cluster on 127.0.0.1, not port %s", cfg.Host, cfg.Port, port)
	}
	cfg.ConnectTimeout = 2 * time.Second
	return cfg
}

func serverAnswers(cfg *pgx.ConnConfig) bool {
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		return false
	}
	conn.Close(context.Background())
	return true
}

func TestMainStartsThrowawayCluster(t *testing.T) {
	cfg := throwawayChild(t, 0)
	if serverAnswers(cfg) {
		t.Errorf("the child's throwaway cluster still answers at %s:%d", cfg.Host, cfg.Port)
	}
}

// TestThrowawayClusterGoneAfterCrash checks that a test process that dies
// without cleaning up does not leave its throwaway cluster running.
func TestThrowawayClusterGoneAfterCrash(t *testing.T) {
	cfg := throwawayChild(t, 3, envCrash+"=1")
	deadline := time.Now().Add(20 * time.Second)
	for serverAnswers(cfg) {
		if time.Now().After(deadline) {
			t.Fatalf("the crashed child's cluster still answers at %s:%d after 20 s", cfg.Host, cfg.Port)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestNoServerSkips(t *testing.T) {
	out, code := runChild(t, "PGHOST=127.0.0.1", "PGPORT="+closedPort(t), "TENANCY_TEST_PG_BIN=/nonexistent")
	if code != 0 || !strings.Contains(out, "--- SKIP: TestChildProbe") ||
		!strings.Contains(out, "TENANCY_TEST_DATABASE_URL") || !strings.Contains(out, "initdb") {
		t.Fatalf("child exit %d, want 0 and a skip saying how to get a server:\n%s", code, out)
	}
}

func TestNoServerFailsInCI(t *testing.T) {
	out, code := runChild(t, "PGHOST=127.0.0.1", "PGPORT="+closedPort(t), "TENANCY_TEST_PG_BIN=/nonexistent", "CI=true")
	if code != 1 || !strings.Contains(out, "--- FAIL: TestChildProbe") || !strings.Contains(out, "CI=true") {
		t.Fatalf("child exit %d, want 1 and a failure naming CI=true:\n%s", code, out)
	}
}

func TestUnusableURLFails(t *testing.T) {
	out, code := runChild(t, "TENANCY_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:"+closedPort(t)+"/postgres")
	if code != 1 || !strings.Contains(out, "--- FAIL: TestChildProbe") || !strings.Contains(out, "TENANCY_TEST_DATABASE_URL") {
		t.Fatalf("child exit %d, want 1 and a failure naming TENANCY_TEST_DATABASE_URL:\n%s", code, out)
	}
}

func TestDBWithoutMainFails(t *testing.T) {
	out, code := runChild(t, envNoMain+"=1")
	if code != 1 || !strings.Contains(out, "call pgtest.Main from TestMain") {
		t.Fatalf("child exit %d, want 1 and a failure saying to call pgtest.Main:\n%s", code, out)
	}
}

func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
