// Package softhsmtest gives tests a real SoftHSM2 token.
//
// [NewToken] initialises a fresh token with a unique label and random PINs
// in a SoftHSM2 token directory private to the test process, and deletes it
// when the test ends. Tests then talk to it over PKCS#11 exactly as
// production code talks to a hardware HSM.
//
// # Installing SoftHSM2
//
// The helper needs the softhsm2-util tool and the libsofthsm2.so module
// (Debian/Ubuntu: apt-get install softhsm2). When they are missing, a test
// calling [NewToken] or [ModulePath] is skipped with a message saying so —
// unless the environment variable CI is true (any value strconv.ParseBool
// takes as true, such as "true" or "1", as for internal/pgtest), in which
// case it fails: CI must run the HSM tests, not skip them.
// TENANCY_TEST_SOFTHSM2_MODULE may name the module if it is not in one of
// the usual places.
//
// # One configuration per process
//
// SoftHSM2 reads its configuration file (named by SOFTHSM2_CONF) and scans
// its token directory once, in C_Initialize. The helper therefore creates one
// configuration and token directory per test process, the first time a token
// is asked for, and points SOFTHSM2_CONF at it for the whole process (and for
// the softhsm2-util it runs). Every [NewToken] adds one token to that
// directory.
//
// Because the scan happens only in C_Initialize, a token created while the
// module is loaded and initialised in this process is not visible to it
// until every user of the module has closed it (crypto11 finalises the
// module when its last Context closes). Consequently:
//
//   - create every token a test needs before opening any PKCS#11 client in
//     that test, and close clients before the test ends (t.Cleanup);
//   - do not run HSM tests with t.Parallel.
//
// Call [Main] from TestMain to remove the per-process directory when the
// tests are done; without it only an empty directory is left behind, since
// each token is deleted by its test's cleanup.
package softhsmtest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rtmx-ai/tenancy/internal/testenv"
)

// ModuleEnv names the environment variable that may hold the path of
// libsofthsm2.so when it is not installed in a usual place.
const ModuleEnv = "TENANCY_TEST_SOFTHSM2_MODULE"

// modulePaths are the places Debian, Ubuntu, Fedora and Homebrew install
// the SoftHSM2 PKCS#11 module, most common first.
var modulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/lib/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/opt/homebrew/lib/softhsm/libsofthsm2.so",
}

// Token is a SoftHSM2 token initialised for one test. Its fields are
// read-only.
type Token struct {
	// Module is the absolute path of libsofthsm2.so.
	Module string
	// Label is the token label, unique within the test process.
	Label string
	// PIN is the user PIN; PINFile holds the same PIN (mode 0600) so that
	// URIs can say pin-source=file:PINFile.
	PIN     string
	PINFile string

	soPIN   string
	deleted atomic.Bool
}

type procState struct {
	dir    string // holds softhsm2.conf and tokens/
	conf   string
	module string
	err    error // set when SoftHSM2 is not installed or setup failed
	skip   bool  // err means "not installed" rather than "broken"
}

var (
	procOnce sync.Once
	proc     procState
	// utilMu serialises softhsm2-util runs: --init-token --free picks "the
	// first free slot", which two concurrent runs could both pick.
	utilMu  sync.Mutex
	counter atomic.Uint64
)

// ModulePath returns the path of libsofthsm2.so, skipping or failing tb
// (see the package documentation) when SoftHSM2 is not installed. It does
// not create the per-process configuration.
func ModulePath(tb testing.TB) string {
	tb.Helper()
	m, err := findModule()
	if err != nil {
		unavailable(tb, err)
	}
	return m
}

// NewToken initialises a new token with a unique label and random PINs,
// and registers a cleanup that deletes it. See the package documentation
// for when a token becomes visible to a process that already uses SoftHSM2.
func NewToken(tb testing.TB) *Token {
	tb.Helper()
	procOnce.Do(setup)
	if proc.err != nil {
		if proc.skip {
			unavailable(tb, proc.err)
		}
		tb.Fatalf("softhsmtest: %v", proc.err)
	}
	tok := &Token{
		Module: proc.module,
		Label:  fmt.Sprintf("t%d-%d-%s", os.Getpid()%100000, counter.Add(1), randHex(4)),
		PIN:    randHex(8),
		soPIN:  randHex(8),
	}
	pinDir := tb.TempDir()
	tok.PINFile = filepath.Join(pinDir, "pin")
	if err := os.WriteFile(tok.PINFile, []byte(tok.PIN+"\n"), 0o600); err != nil {
		tb.Fatalf("softhsmtest: writing PIN file: %v", err)
	}
	if out, err := util("--init-token", "--free", "--label", tok.Label, "--pin", tok.PIN, "--so-pin", tok.soPIN); err != nil {
		tb.Fatalf("softhsmtest: softhsm2-util --init-token --label %s: %v\n%s", tok.Label, err, redact(out, tok))
	}
	tb.Cleanup(func() {
		if err := tok.Delete(); err != nil {
			tb.Errorf("%v", err)
		}
	})
	return tok
}

// Delete deletes the token with softhsm2-util --delete-token, as an
// operator removing it would. Clients that still use the token see errors
// from then on. Deleting a token twice is not an error.
func (t *Token) Delete() error {
	if t.deleted.Swap(true) {
		return nil
	}
	if out, err := util("--delete-token", "--token", t.Label); err != nil {
		return fmt.Errorf("softhsmtest: softhsm2-util --delete-token --token %s: %v\n%s", t.Label, err, redact(out, t))
	}
	return nil
}

// URI returns an RFC 7512 PKCS#11 URI naming the secret key labelled object
// in this token, with module-path set to Module and pin-source to
// file:PINFile. The PIN itself never appears in it.
func (t *Token) URI(object string) string {
	return fmt.Sprintf("pkcs11:token=%s;object=%s?module-path=%s&pin-source=file:%s",
		Escape(t.Label), Escape(object), escape(t.Module, true), escape(t.PINFile, true))
}

// Escape percent-encodes s for use as an RFC 7512 attribute value: every
// byte except the unreserved characters (ALPHA DIGIT - . _ ~) is encoded,
// which is valid in both the path and the query of a PKCS#11 URI.
func Escape(s string) string { return escape(s, false) }

// escape is Escape, optionally keeping '/' (legal in query values) literal.
func escape(s string, slash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', slash && c == '/':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// Main runs the tests of m and then removes the per-process SoftHSM2
// directory. Use it as
//
//	func TestMain(m *testing.M) { softhsmtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// Cleanup removes the per-process SoftHSM2 directory, if one was made. A
// package whose TestMain is another harness's (pgtest.Main) passes it
// there: pgtest.Main(m, softhsmtest.Cleanup).
func Cleanup() {
	if proc.dir != "" {
		_ = os.RemoveAll(proc.dir)
	}
}

func setup() {
	proc.module, proc.err = findModule()
	if proc.err != nil {
		proc.skip = true
		return
	}
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		proc.err, proc.skip = fmt.Errorf("softhsm2-util not found on PATH: %w", err), true
		return
	}
	dir, err := os.MkdirTemp("", "softhsmtest-")
	if err != nil {
		proc.err = err
		return
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		proc.err = err
		return
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := "# written by internal/softhsmtest\n" +
		"directories.tokendir = " + tokens + "\n" +
		"objectstore.backend = file\n" +
		"log.level = ERROR\n" +
		"slots.removable = false\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		proc.err = err
		return
	}
	// For the whole process: SoftHSM2 reads it at C_Initialize.
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		proc.err = err
		return
	}
	proc.dir, proc.conf = dir, conf
}

func findModule() (string, error) {
	if m := os.Getenv(ModuleEnv); m != "" {
		if _, err := os.Stat(m); err != nil {
			return "", fmt.Errorf("%s=%s: %w", ModuleEnv, m, err)
		}
		return m, nil
	}
	for _, m := range modulePaths {
		if _, err := os.Stat(m); err == nil {
			return m, nil
		}
	}
	return "", fmt.Errorf("libsofthsm2.so not found in %s (set %s to its path)", strings.Join(modulePaths, ", "), ModuleEnv)
}

func unavailable(tb testing.TB, err error) {
	tb.Helper()
	if inCI() {
		tb.Fatalf("softhsmtest: SoftHSM2 is required in CI (CI=%s): %v (apt-get install softhsm2)", os.Getenv("CI"), err)
	}
	tb.Skipf("softhsmtest: SoftHSM2 not available, skipping (apt-get install softhsm2): %v", err)
}

func inCI() bool { return testenv.InCI() }

func util(args ...string) ([]byte, error) {
	utilMu.Lock()
	defer utilMu.Unlock()
	cmd := exec.Command("softhsm2-util", args...)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+proc.conf)
	return cmd.CombinedOutput()
}

// redact removes the token's PINs from softhsm2-util output before it is
// put in a test log.
func redact(out []byte, t *Token) string {
	s := string(out)
	for _, p := range []string{t.PIN, t.soPIN} {
		if p != "" {
			s = strings.ReplaceAll(s, p, "<pin>")
		}
	}
	return s
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b)
}
