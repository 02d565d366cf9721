package pgtest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func startForTest(t *testing.T) *cluster {
	t.Helper()
	if _, _, err := findPGBin(); err != nil {
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	c, err := startThrowawayCluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("throwaway cluster started in %v", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() { c.stop() })
	return c
}

// answers reports whether the server at connString accepts a query.
func answers(connString string) bool {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return false
	}
	cfg.ConnectTimeout = 2 * time.Second
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		return false
	}
	defer conn.Close(context.Background())
	var one int
	return conn.QueryRow(context.Background(), "SELECT 1").Scan(&one) == nil
}

func TestStartThrowawayCluster(t *testing.T) {
	c := startForTest(t)
	conn, err := pgx.Connect(t.Context(), c.url)
	if err != nil {
		t.Fatal(err)
	}
	var listen, hba string
	var super bool
	if err := conn.QueryRow(t.Context(), `SELECT current_setting('listen_addresses'), current_setting('is_superuser') = 'on'`).Scan(&listen, &super); err != nil {
		t.Fatal(err)
	}
	if listen != "127.0.0.1" || !super {
		t.Errorf("listen_addresses = %q, superuser %v; want 127.0.0.1 and true", listen, super)
	}
	if err := conn.QueryRow(t.Context(), `SELECT string_agg(type || ' ' || coalesce(address, ''), ', ' ORDER BY line_number) FROM pg_hba_file_rules`).Scan(&hba); err != nil {
		t.Fatal(err)
	}
	if hba != "local , host 127.0.0.1" {
		t.Errorf("pg_hba rules %q, want local and 127.0.0.1 only", hba)
	}
	conn.Close(t.Context())

	if err := c.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := os.Stat(c.dir); !os.IsNotExist(err) {
		t.Errorf("cluster directory %s still there after stop (%v)", c.dir, err)
	}
	if answers(c.url) {
		t.Error("server still answers after stop")
	}
	if err := c.stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
}

// TestThrowawayClusterWatchdog closes the watchdog's pipe, as the kernel
// does when the test process dies, and expects the cluster to go away.
func TestThrowawayClusterWatchdog(t *testing.T) {
	c := startForTest(t)
	if !answers(c.url) {
		t.Fatal("server does not answer")
	}
	c.watchdogPipe.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := os.Stat(c.dir)
		if os.IsNotExist(err) && !answers(c.url) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster %s still there 20 s after its watchdog was released", c.dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestVersionLess(t *testing.T) {
	if !versionLess("/usr/lib/postgresql/9.6/bin", "/usr/lib/postgresql/15/bin") ||
		versionLess("/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin") {
		t.Error("versionLess orders PostgreSQL versions wrongly")
	}
}

// TestLoginBaseAvoidsPeerSocket sets up what Debian does (no password
// logins on the local socket) and expects login roles to be sent to
// 127.0.0.1 while the superuser keeps the socket.
func TestLoginBaseAvoidsPeerSocket(t *testing.T) {
	c := startForTest(t)
	hba := "local all postgres trust\nlocal all all reject\nhost all all 127.0.0.1/32 trust\n"
	if err := os.WriteFile(filepath.Join(c.dataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &server{url: buildURL(c.dir, uint16(c.port), "postgres", "", "postgres")}
	defer s.close("unused")
	if err := s.adminExec(t.Context(), "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the postmaster reloads asynchronously
	base, err := s.loginBase("pgtx_", "postgres")
	if err != nil {
		t.Fatal(err)
	}
	if want := "127.0.0.1:" + strconv.Itoa(c.port); base.Host != want || base.Query().Get("host") != "" {
		t.Errorf("login base %s, want host %s", base, want)
	}

	// With logins allowed on the socket, roles stay on it.
	hba = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
	if err := os.WriteFile(filepath.Join(c.dataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.adminExec(t.Context(), "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	s2 := &server{url: s.url}
	defer s2.close("unused")
	base, err = s2.loginBase("pgty_", "postgres")
	if err != nil || base != s2.url {
		t.Errorf("login base %v (%v), want the socket URL %s", base, err, s2.url)
	}
}
