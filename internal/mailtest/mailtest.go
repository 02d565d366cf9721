// Package mailtest gives tests a real SMTP server that they can read back:
// a mailpit (github.com/axllent/mailpit), one per [Start] call, on
// loopback ports of its own, with its message store in the test's
// temporary directory, stopped when the test ends.
//
// Mail is sent to [Server.SMTPAddr] with any SMTP client, exactly as to a
// production relay; the test reads what arrived through mailpit's HTTP
// API ([Server.Messages], [Server.Message], [Server.Headers],
// [Server.Raw]) and empties the mailbox with [Server.DeleteAll].
// [Server.Stop] takes the SMTP server down (clients get connection
// errors) and [Server.Restart] brings it back on the same ports with the
// same messages. [Server.RefuseRecipients] makes it refuse every RCPT
// with a given code (mailpit's "chaos" triggers).
//
// The server accepts any SMTP authentication, or none
// (--smtp-auth-accept-any), over clear text too
// (--smtp-auth-allow-insecure). With Options.STARTTLS it offers STARTTLS
// with a certificate made for 127.0.0.1 ([Server.CertPool] trusts it);
// with Options.RequireSTARTTLS it refuses mail, and authentication, from
// clients that do not use it.
//
// # Installing mailpit
//
// The helper runs the mailpit binary: $TENANCY_TEST_MAILPIT if set (then
// nothing else is tried), else mailpit on PATH, else in $GOBIN,
// $GOPATH/bin, ~/go/bin or `go env GOPATH`/bin. Install it with
//
//	go install github.com/axllent/mailpit@v1.33.1
//
// (the version [Version] names; it builds in about two minutes). When it
// is missing, a test calling [Start] is skipped with a message saying so,
// unless the environment variable CI is true (any value strconv.ParseBool
// takes as true, as for internal/pgtest), in which case it fails. A
// TENANCY_TEST_MAILPIT naming a missing file counts as mailpit not being
// installed.
//
// # The process
//
// mailpit listens on two ports of 127.0.0.1 (SMTP and HTTP) that the
// helper picks free just before starting it; a start that loses the race
// for a port is retried on other ports. Its POP3 server stays off (it
// needs an auth file) and it makes no outside connections (no version
// check, no reverse DNS). On Linux the process gets SIGKILL when the test
// process dies (Pdeathsig, from a thread kept for the child's life), so a
// test killed by -timeout leaves no server behind. The MP_* variables of
// the environment, which configure mailpit, are not passed on.
package mailtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rtmx-ai/tenancy/internal/testenv"
)

// BinaryEnv names the environment variable that may hold the path of the
// mailpit binary.
const BinaryEnv = "TENANCY_TEST_MAILPIT"

// Module and Version name the mailpit this helper is tested with, and
// which .ci/run installs: go install Module@Version.
const (
	Module  = "github.com/axllent/mailpit"
	Version = "v1.33.1"
)

const (
	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
	startTries   = 3
)

// Options configure [StartWith]. The zero value is a plain-text server.
type Options struct {
	// STARTTLS makes the server offer STARTTLS, with a certificate for
	// 127.0.0.1 that [Server.CertPool] trusts.
	STARTTLS bool
	// RequireSTARTTLS makes the server refuse mail from a client that did
	// not use STARTTLS (implies STARTTLS).
	RequireSTARTTLS bool
}

// Server is a mailpit. Its methods are safe for concurrent use.
type Server struct {
	bin      string
	dir      string
	opts     Options
	smtpAddr string
	apiURL   string
	certPool *x509.CertPool
	http     *http.Client

	mu   sync.Mutex // guards proc
	proc *process   // nil when stopped
}

// process is one run of mailpit.
type process struct {
	cmd  *exec.Cmd
	out  *logBuffer
	done chan struct{} // closed when cmd has been waited for
}

// Start starts a mailpit without TLS, waits until it is ready, and
// registers a cleanup that stops it. It skips or fails tb (see the
// package documentation) when mailpit is not installed.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWith(tb, Options{})
}

// StartWith is [Start] with options.
func StartWith(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.RequireSTARTTLS {
		opts.STARTTLS = true
	}
	bin, err := FindBinary()
	if err != nil {
		unavailable(tb, err)
	}
	s := &Server{bin: bin, dir: tb.TempDir(), opts: opts, http: &http.Client{Timeout: 10 * time.Second}}
	if opts.STARTTLS {
		if err := s.writeCert(); err != nil {
			tb.Fatalf("mailtest: making the TLS certificate: %v", err)
		}
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("mailtest: log of mailpit at %s:\n%s", s.smtpAddr, s.logTail(8<<10))
		}
		if err := s.Stop(); err != nil {
			tb.Errorf("mailtest: %v", err)
		}
	})
	var errs []error
	for range startTries {
		smtpPort, err1 := freePort()
		httpPort, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			tb.Fatalf("mailtest: finding free ports: %v", err)
		}
		s.smtpAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(smtpPort))
		s.apiURL = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))
		err := s.start()
		if err == nil {
			return s
		}
		errs = append(errs, err)
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	tb.Fatalf("mailtest: starting %s: %v", bin, errors.Join(errs...))
	return nil
}

var (
	errExited    = errors.New("mailpit exited before it was ready")
	errPortTaken = errors.New("a port was taken")
)

// start runs mailpit on s's ports and waits until it is ready.
func (s *Server) start() error {
	args := []string{
		"--smtp", s.smtpAddr,
		"--listen", strings.TrimPrefix(s.apiURL, "http://"),
		"--database", filepath.Join(s.dir, "mailpit.db"),
		"--smtp-auth-accept-any",
		"--smtp-disable-rdns", "--disable-version-check",
		"--enable-chaos",
		"--max", "0", // keep every message
	}
	if s.opts.STARTTLS {
		args = append(args, "--smtp-tls-cert", filepath.Join(s.dir, "cert.pem"), "--smtp-tls-key", filepath.Join(s.dir, "key.pem"))
	}
	if s.opts.RequireSTARTTLS {
		args = append(args, "--smtp-require-starttls")
	} else {
		// mailpit refuses clear-text authentication with this flag
		// only, and the flag together with --smtp-require-starttls.
		args = append(args, "--smtp-auth-allow-insecure")
	}
	p := &process{out: &logBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(s.bin, args...)
	p.cmd.Dir = s.dir
	p.cmd.Env = childEnv()
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = sysProcAttr()
	started := make(chan error, 1)
	go func() {
		// On Linux the child gets SIGKILL when the thread that started it
		// ends (Pdeathsig), not only the process: keep this thread for the
		// child's whole life.
		runtime.LockOSThread()
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = p.cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return err
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()

	deadline := time.Now().Add(startTimeout)
	var lastErr error
	for {
		select {
		case <-p.done:
			log := p.out.tail(4 << 10)
			if strings.Contains(log, "address already in use") {
				return fmt.Errorf("%w (%w):\n%s", errExited, errPortTaken, log)
			}
			return fmt.Errorf("%w (%v):\n%s", errExited, p.cmd.ProcessState, log)
		default:
		}
		if lastErr = s.ready(); lastErr == nil {
			return nil
		}
		if time.Now().After(deadline) {
			_ = s.Stop()
			return fmt.Errorf("mailpit was not ready within %v: %v\n%s", startTimeout, lastErr, p.out.tail(4<<10))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ready checks that the API says ready and the SMTP port greets.
func (s *Server) ready() error {
	resp, err := s.http.Get(s.apiURL + "/readyz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz: %s", resp.Status)
	}
	c, err := net.DialTimeout("tcp", s.smtpAddr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line := make([]byte, 4)
	if _, err := io.ReadFull(c, line); err != nil || string(line[:3]) != "220" {
		return fmt.Errorf("SMTP greeting %q: %v", line, err)
	}
	return nil
}

// Stop stops the server (SIGTERM, SIGKILL after 10 s); its messages are
// kept for [Server.Restart]. SMTP clients get connection errors from then
// on. It is safe to call more than once, and on a stopped server.
func (s *Server) Stop() error {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("mailpit (pid %d) still running %v after SIGKILL", p.cmd.Process.Pid, stopTimeout)
	}
}

// Restart starts a stopped server again, on the same ports, with the
// messages it had; it fails tb if the server is running or does not come
// up.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	running := s.proc != nil
	s.mu.Unlock()
	if running {
		tb.Fatalf("mailtest: Restart of a running server (Stop it first)")
	}
	if err := s.start(); err != nil {
		tb.Fatalf("mailtest: restarting mailpit on %s: %v", s.smtpAddr, err)
	}
}

// SMTPAddr returns the SMTP server's address, "127.0.0.1:<port>".
func (s *Server) SMTPAddr() string { return s.smtpAddr }

// APIURL returns the base URL of mailpit's HTTP API and web UI,
// "http://127.0.0.1:<port>".
func (s *Server) APIURL() string { return s.apiURL }

// CertPool returns a pool that trusts the server's STARTTLS certificate
// (made for IP 127.0.0.1 and localhost), or nil without Options.STARTTLS.
func (s *Server) CertPool() *x509.CertPool { return s.certPool }

// Address is a mail address as mailpit reports it.
type Address struct {
	Name    string
	Address string
}

// Summary is one message of [Server.Messages].
type Summary struct {
	// ID is mailpit's ID of the message, for [Server.Message] and the
	// others.
	ID        string
	MessageID string // the Message-ID header, without angle brackets
	From      Address
	To        []Address
	Subject   string // decoded
	Created   time.Time
}

// Message is one message with its decoded text (from [Server.Message]).
type Message struct {
	ID        string
	MessageID string // without angle brackets
	From      Address
	To        []Address
	Subject   string // decoded
	Date      time.Time
	Text      string // the text/plain part, transfer encoding undone
	HTML      string
}

// Messages returns every message the server holds, newest first.
func (s *Server) Messages(tb testing.TB) []Summary {
	tb.Helper()
	var out []Summary
	for start := 0; ; {
		var page struct {
			Total    int       `json:"total"`
			Messages []Summary `json:"messages"`
		}
		s.getJSON(tb, "/api/v1/messages?limit=500&start="+strconv.Itoa(start), &page)
		out = append(out, page.Messages...)
		start += len(page.Messages)
		if len(page.Messages) == 0 || start >= page.Total {
			return out
		}
	}
}

// Message returns the message with mailpit ID id.
func (s *Server) Message(tb testing.TB, id string) Message {
	tb.Helper()
	var m Message
	s.getJSON(tb, "/api/v1/message/"+url.PathEscape(id), &m)
	return m
}

// Headers returns the headers of the message with mailpit ID id, by name,
// as they were sent (not decoded).
func (s *Server) Headers(tb testing.TB, id string) map[string][]string {
	tb.Helper()
	var h map[string][]string
	s.getJSON(tb, "/api/v1/message/"+url.PathEscape(id)+"/headers", &h)
	return h
}

// Raw returns the message with mailpit ID id as it arrived.
func (s *Server) Raw(tb testing.TB, id string) []byte {
	tb.Helper()
	return s.do(tb, http.MethodGet, "/api/v1/message/"+url.PathEscape(id)+"/raw", nil)
}

// DeleteAll deletes every message.
func (s *Server) DeleteAll(tb testing.TB) {
	tb.Helper()
	s.do(tb, http.MethodDelete, "/api/v1/messages", []byte(`{"IDs":[]}`))
}

// RefuseRecipients makes the server answer every RCPT TO with code (400 to
// 599) from now on; code 0 makes it accept them again. It does not last
// across [Server.Restart].
func (s *Server) RefuseRecipients(tb testing.TB, code int) {
	tb.Helper()
	prob := 100
	if code == 0 {
		code, prob = 451, 0
	} else if code < 400 || code > 599 {
		tb.Fatalf("mailtest: RefuseRecipients(%d): the code must be 400 to 599", code)
	}
	body, _ := json.Marshal(map[string]any{"Recipient": map[string]int{"ErrorCode": code, "Probability": prob}})
	s.do(tb, http.MethodPut, "/api/v1/chaos", body)
}

func (s *Server) getJSON(tb testing.TB, path string, v any) {
	tb.Helper()
	b := s.do(tb, http.MethodGet, path, nil)
	if err := json.Unmarshal(b, v); err != nil {
		tb.Fatalf("mailtest: GET %s: decoding %q: %v", path, truncate(b, 512), err)
	}
}

func (s *Server) do(tb testing.TB, method, path string, body []byte) []byte {
	tb.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.WithoutCancel(tb.Context()), method, s.apiURL+path, rd)
	if err != nil {
		tb.Fatalf("mailtest: %s %s: %v", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.http.Do(req)
	if err != nil {
		tb.Fatalf("mailtest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		tb.Fatalf("mailtest: %s %s: reading the answer: %v", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("mailtest: %s %s: %s: %q", method, path, resp.Status, truncate(b, 512))
	}
	return b
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// writeCert makes a self-signed certificate for 127.0.0.1 and localhost,
// writes it and its key for mailpit, and keeps a pool trusting it.
func (s *Server) writeCert() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "mailtest"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(s.dir, "cert.pem"), certPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.dir, "key.pem"), keyPEM, 0o600); err != nil {
		return err
	}
	s.certPool = x509.NewCertPool()
	s.certPool.AddCert(cert)
	return nil
}

// FindBinary returns the path of the mailpit binary (see the package
// documentation for where it looks), or an error naming where it looked.
func FindBinary() (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", BinaryEnv, p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p, nil
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range filepath.SplitList(os.Getenv("GOPATH")) {
		if d != "" {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	// Last, ask the go command (GOENV settings, a GOROOT-relative default).
	if goCmd, err := exec.LookPath("go"); err == nil {
		if out, err := exec.Command(goCmd, "env", "GOBIN", "GOPATH").Output(); err == nil {
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) == 2 {
				if gobin := strings.TrimSpace(lines[0]); gobin != "" {
					dirs = append(dirs, gobin)
				}
				for _, d := range filepath.SplitList(strings.TrimSpace(lines[1])) {
					if d != "" {
						dirs = append(dirs, filepath.Join(d, "bin"))
					}
				}
			}
		}
	}
	for _, d := range dirs {
		if p := filepath.Join(d, "mailpit"); checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("mailpit not found on PATH nor in %s (set %s to its path)", strings.Join(dirs, ", "), BinaryEnv)
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

func unavailable(tb testing.TB, err error) {
	tb.Helper()
	install := "go install " + Module + "@" + Version
	if testenv.InCI() {
		tb.Fatalf("mailtest: mailpit is required in CI (CI=%s): %v (%s)", os.Getenv("CI"), err, install)
	}
	tb.Skipf("mailtest: mailpit not available, skipping (%s): %v", install, err)
}

// childEnv is this process's environment without mailpit's own settings
// (MP_*).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MP_") {
			env = append(env, kv)
		}
	}
	return env
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) logTail(n int) string {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return "(stopped)"
	}
	return p.out.tail(n)
}

// logBuffer collects a process's output; it is written by the process's
// copying goroutines and read by the test.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() > 1<<20 {
		l.buf.Reset() // a runaway log: keep memory bounded
	}
	return l.buf.Write(p)
}

func (l *logBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
