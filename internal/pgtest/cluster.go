package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// envPGBin names a directory holding initdb and pg_ctl. When it is set, only
// that directory is searched for the throwaway cluster's binaries.
const envPGBin = "TENANCY_TEST_PG_BIN"

// binGlobs are the places searched for initdb and pg_ctl after PATH, newest
// version first within each pattern.
var binGlobs = []string{
	"/usr/lib/postgresql/*/bin", // Debian, Ubuntu
	"/usr/pgsql-*/bin",          // RHEL, Fedora (PGDG)
	"/usr/local/pgsql/bin",      // built from source
}

// cluster is a throwaway PostgreSQL cluster: a fresh data directory in a
// temporary directory, a server listening on one loopback port with trust
// authentication, stopped and removed by stop.
//
// A watchdog process removes the cluster if the test process dies without
// calling stop (a panic, a -timeout, a kill): it blocks reading a pipe whose
// only writer is this process, and the kernel closes that pipe when the
// process ends, however it ends.
type cluster struct {
	dir     string // temporary directory: data/, the socket, the server log
	dataDir string
	port    int
	url     string // superuser on the postgres database, URL form
	pgCtl   string
	runAs   *osUser // the OS user running the server; nil: this process's user

	watchdog     *exec.Cmd
	watchdogPipe *os.File // write end; closing it releases the watchdog

	stopOnce sync.Once
	stopErr  error
}

// findPGBin returns the paths of initdb and pg_ctl: from $TENANCY_TEST_PG_BIN
// if set, else from PATH, else from the usual installation directories.
func findPGBin() (initdb, pgCtl string, err error) {
	inDir := func(dir string) (string, string, bool) {
		i, p := filepath.Join(dir, "initdb"), filepath.Join(dir, "pg_ctl")
		return i, p, isExecutable(i) && isExecutable(p)
	}
	if dir := os.Getenv(envPGBin); dir != "" {
		if i, p, ok := inDir(dir); ok {
			return i, p, nil
		}
		return "", "", fmt.Errorf("initdb and pg_ctl not found in %s=%s", envPGBin, dir)
	}
	if i, err := exec.LookPath("initdb"); err == nil {
		// Take pg_ctl from the same installation when it is there.
		if _, p, ok := inDir(filepath.Dir(i)); ok {
			return i, p, nil
		}
		if p, err := exec.LookPath("pg_ctl"); err == nil {
			return i, p, nil
		}
	}
	for _, pattern := range binGlobs {
		dirs, _ := filepath.Glob(pattern)
		sort.Slice(dirs, func(a, b int) bool { return versionLess(dirs[b], dirs[a]) })
		for _, dir := range dirs {
			if i, p, ok := inDir(dir); ok {
				return i, p, nil
			}
		}
	}
	return "", "", fmt.Errorf("initdb and pg_ctl not found on PATH or in %s", strings.Join(binGlobs, ", "))
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// versionLess orders paths like /usr/lib/postgresql/9.6/bin and
// /usr/lib/postgresql/15/bin by the first number in them.
func versionLess(a, b string) bool {
	num := func(s string) float64 {
		start := strings.IndexAny(s, "0123456789")
		if start < 0 {
			return -1
		}
		end := start
		for end < len(s) && (s[end] == '.' || s[end] >= '0' && s[end] <= '9') {
			end++
		}
		f, err := strconv.ParseFloat(strings.TrimSuffix(s[start:end], "."), 64)
		if err != nil {
			return -1
		}
		return f
	}
	return num(a) < num(b)
}

// startThrowawayCluster runs initdb in a new temporary directory and starts
// a server on a free port of 127.0.0.1 with trust authentication. When this
// process runs as root, initdb and the server run as the OS user postgres
// (PostgreSQL refuses to run as root) and the directory is owned by it.
// The caller must call stop.
func startThrowawayCluster(ctx context.Context, hbaRules ...string) (_ *cluster, err error) {
	if !throwawaySupported {
		return nil, fmt.Errorf("no throwaway cluster on %s", runtime.GOOS)
	}
	initdb, pgCtl, err := findPGBin()
	if err != nil {
		return nil, err
	}
	c := &cluster{pgCtl: pgCtl}
	tmp := os.TempDir()
	if os.Geteuid() == 0 {
		c.runAs, err = lookupOSUser("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, the throwaway cluster needs an OS user to run PostgreSQL as: %w", err)
		}
		// The postgres user must reach the directory.
		if fi, err := os.Stat(tmp); err != nil || fi.Mode().Perm()&0o001 == 0 {
			tmp = "/tmp"
		}
	}

	c.dir, err = os.MkdirTemp(tmp, "pgtest-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if stopErr := c.stop(); stopErr != nil {
				err = fmt.Errorf("%w (and cleaning up: %v)", err, stopErr)
			}
		}
	}()
	if c.runAs != nil {
		if err := os.Chown(c.dir, c.runAs.uid, c.runAs.gid); err != nil {
			return nil, err
		}
	}
	c.dataDir = filepath.Join(c.dir, "data")
	if err := c.startWatchdog(); err != nil {
		return nil, fmt.Errorf("starting the cleanup watchdog: %w", err)
	}

	out, err := c.command(ctx, initdb,
		"-D", c.dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "-N").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	hba := "# pgtest: trust, loopback and the private socket only\n" +
		"local all all trust\n" +
		"host  all all 127.0.0.1/32 trust\n"
	if len(hbaRules) > 0 {
		hba = "# pgtest: the test's own rules, loopback and the private socket only\n" + strings.Join(hbaRules, "\n") + "\n"
	}
	if err := os.WriteFile(filepath.Join(c.dataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("\n# pgtest\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n"+
		"fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
		strings.ReplaceAll(c.dir, "'", "''"))
	if err := appendFile(filepath.Join(c.dataDir, "postgresql.conf"), conf); err != nil {
		return nil, err
	}

	// Another process may take the free port between our probe and the
	// server's bind: try a few ports.
	logFile := filepath.Join(c.dir, "server.log")
	for attempt := 1; ; attempt++ {
		c.port, err = freePort()
		if err != nil {
			return nil, err
		}
		// A later setting wins, so each attempt appends its own port.
		if err := appendFile(filepath.Join(c.dataDir, "postgresql.conf"), fmt.Sprintf("port = %d\n", c.port)); err != nil {
			return nil, err
		}
		out, err = c.command(ctx, pgCtl, "start", "-D", c.dataDir, "-l", logFile, "-w", "-t", "60", "-s").CombinedOutput()
		if err == nil {
			break
		}
		if attempt == 3 || ctx.Err() != nil {
			log, _ := os.ReadFile(logFile)
			return nil, fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, tail(log, 2000))
		}
	}
	c.url = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
	return c, nil
}

// command prepares a command run as the cluster's OS user, in the cluster's
// directory, without the PG* variables of this process.
func (c *cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.dir
	cmd.Env = childEnv()
	cmd.SysProcAttr = sysProcAttr(c.runAs, false)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// startWatchdog starts a shell that waits for end-of-file on a pipe held
// only by this process, then stops the server and removes the directory.
// It runs in its own process group so that a terminal's Ctrl-C, which ends
// the test process, does not end the watchdog too.
func (c *cluster) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	const script = `read _; "$1" stop -D "$2" -m immediate -w >/dev/null 2>&1; rm -rf "$3"`
	cmd := exec.Command("/bin/sh", "-c", script, "pgtest-watchdog", c.pgCtl, c.dataDir, c.dir)
	cmd.Dir = c.dir
	cmd.Env = childEnv()
	cmd.Stdin = r
	cmd.SysProcAttr = sysProcAttr(c.runAs, true)
	if err := cmd.Start(); err != nil {
		w.Close()
		return err
	}
	c.watchdog, c.watchdogPipe = cmd, w
	return nil
}

// stop stops the server (immediate mode: nothing in it is worth a
// checkpoint), removes the directory and dismisses the watchdog. It is safe
// to call more than once.
func (c *cluster) stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		pid := filepath.Join(c.dataDir, "postmaster.pid")
		if c.dataDir != "" && fileExists(pid) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, err := c.command(ctx, c.pgCtl, "stop", "-D", c.dataDir, "-m", "immediate", "-w", "-s").CombinedOutput()
			cancel()
			if err != nil && fileExists(pid) {
				errs = append(errs, fmt.Errorf("pg_ctl stop: %w\n%s", err, out))
			}
		}
		if c.dir != "" {
			if err := os.RemoveAll(c.dir); err != nil {
				errs = append(errs, err)
			}
		}
		if c.watchdog != nil {
			c.watchdogPipe.Close() // the watchdog finds nothing left to do
			done := make(chan struct{})
			go func() { c.watchdog.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				c.watchdog.Process.Kill()
				<-done
			}
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// osUser is an OS account commands can run as.
type osUser struct{ uid, gid int }

func lookupOSUser(name string) (*osUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, err
	}
	return &osUser{uid: uid, gid: gid}, nil
}

// childEnv is this process's environment without the PG* variables (which
// would otherwise steer initdb, pg_ctl and the server) and with the C locale.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LANG=C")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func appendFile(name, text string) error {
	f, err := os.OpenFile(name, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fileExists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// halt stops the server with pg_ctl stop in mode ("immediate", "fast"),
// leaving the data directory in place for resume.
func (c *cluster) halt(ctx context.Context, mode string) error {
	out, err := c.command(ctx, c.pgCtl, "stop", "-D", c.dataDir, "-m", mode, "-w", "-t", "60", "-s").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl stop -m %s: %w\n%s", mode, err, out)
	}
	return nil
}

// resume starts the server again on the same data directory and port.
func (c *cluster) resume(ctx context.Context) error {
	logFile := filepath.Join(c.dir, "server.log")
	out, err := c.command(ctx, c.pgCtl, "start", "-D", c.dataDir, "-l", logFile, "-w", "-t", "60", "-s").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(logFile)
		return fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, tail(log, 2000))
	}
	return nil
}
