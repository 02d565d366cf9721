// Package awskmstest gives tests a real AWS KMS API: a local-kms server
// (github.com/nsmithuk/local-kms, an AWS-KMS-compatible server), one per
// [Start] call, with a data directory of its own, stopped and removed when
// the test ends.
//
// Tests talk to it with the AWS SDK for Go v2 ([Server.KMS]) and through
// Tink's own AWS KMS client ([Server.TinkClient],
// github.com/tink-crypto/tink-go-awskms/v3), exactly as production code
// talks to AWS KMS; only the endpoint and the (static, fake) credentials
// differ. Keys are created with [Server.CreateKey] and named, for Tink, by
// [KeyURI]: "aws-kms://arn:aws:kms:<region>:<account>:key/<id>".
// [Server.DisableKey], [Server.EnableKey] and [Server.ScheduleKeyDeletion]
// do what a customer does to its own key (revoke it, restore it, delete
// it); [Server.Stop] makes the KMS unreachable.
//
// # Installing local-kms
//
// The helper runs the local-kms binary: $TENANCY_TEST_LOCAL_KMS if set
// (then nothing else is tried), else local-kms on PATH, else in $GOBIN,
// $GOPATH/bin, ~/go/bin or `go env GOPATH`/bin. Install it with
//
//	go install github.com/nsmithuk/local-kms@v0.0.0-20260228092603-2a5e92d09ab6
//
// (the version [Version] names, which .ci/run installs). When it is
// missing, a test calling [Start] is skipped with a message saying so —
// unless the environment variable CI is true (any value strconv.ParseBool
// takes as true, as for internal/pgtest and internal/softhsmtest), in
// which case it fails: CI must run the KMS tests, not skip them. A
// TENANCY_TEST_LOCAL_KMS naming a missing file counts as local-kms not
// being installed.
//
// # The server
//
// local-kms is started with PORT=0, so that it binds a port the kernel
// chooses (no race for a "free" port), and the helper reads the port from
// its log. It listens on all interfaces (it has no setting for the
// address), without authentication: it holds test keys only. Requests are
// sent to 127.0.0.1. The server runs in a process group of its own; a
// watchdog process kills that group and removes the data directory if the
// test process dies without running its cleanups (a panic, a -timeout, a
// kill), as internal/pgtest's does for its throwaway clusters.
//
// Servers are independent: tests may start several (on different ports)
// and may run in parallel.
package awskmstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/tink-crypto/tink-go-awskms/v3/integration/awskms"
	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/internal/testenv"
)

// BinaryEnv names the environment variable that may hold the path of the
// local-kms binary.
const BinaryEnv = "TENANCY_TEST_LOCAL_KMS"

// Module and Version name the local-kms this helper is tested with, and
// which .ci/run installs: go install Module@Version.
const (
	Module  = "github.com/nsmithuk/local-kms"
	Version = "v0.0.0-20260228092603-2a5e92d09ab6"
)

// Default region and account of a server started by [Start]. The account
// is the one AWS's documentation uses in examples.
const (
	DefaultRegion    = "us-east-1"
	DefaultAccountID = "111122223333"
)

// Key states, as [Server.KeyState] returns them (types.KeyState values).
const (
	StateEnabled         = string(types.KeyStateEnabled)
	StateDisabled        = string(types.KeyStateDisabled)
	StatePendingDeletion = string(types.KeyStatePendingDeletion)
)

// startTimeout bounds how long Start waits for the server to answer.
const startTimeout = 30 * time.Second

// Options configure [StartWith].
type Options struct {
	// Region is the server's AWS region (KMS_REGION); DefaultRegion if
	// empty. It appears in every key ARN.
	Region string
	// AccountID is the server's AWS account (KMS_ACCOUNT_ID);
	// DefaultAccountID if empty. It appears in every key ARN.
	AccountID string
}

// Server is a running local-kms. Its methods are safe for concurrent use.
type Server struct {
	endpoint  string
	region    string
	accountID string
	dir       string // temporary directory: data/ and the server log
	logPath   string

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	pgid   int

	watchdog     *exec.Cmd
	watchdogPipe *os.File // write end; see startWatchdog

	client *kms.Client

	stopOnce sync.Once
	stopErr  error
}

// Start starts a local-kms with the default region and account, waits until
// it answers, and registers a cleanup that stops it and removes its data.
// It skips or fails tb (see the package documentation) when local-kms is
// not installed.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWith(tb, Options{})
}

// StartWith is [Start] with a region and account of the caller's choosing,
// e.g. a second server standing for a customer's own AWS account.
func StartWith(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.Region == "" {
		opts.Region = DefaultRegion
	}
	if opts.AccountID == "" {
		opts.AccountID = DefaultAccountID
	}
	bin, err := FindBinary()
	if err != nil {
		unavailable(tb, err)
	}
	if !processGroupsSupported {
		unavailable(tb, errors.New("process groups are not supported on this OS"))
	}
	s, err := start(bin, opts)
	if s != nil {
		tb.Cleanup(func() {
			if tb.Failed() {
				tb.Logf("awskmstest: log of local-kms at %s:\n%s", s.endpoint, s.logTail(8<<10))
			}
			if err := s.Stop(); err != nil {
				tb.Errorf("awskmstest: %v", err)
			}
		})
	}
	if err != nil {
		tb.Fatalf("awskmstest: starting %s: %v", bin, err)
	}
	return s
}

var startedRE = regexp.MustCompile(`Local KMS started on [^\s]*:([0-9]+)`)

// start starts the watchdog, then the server, and waits until the server
// answers. A non-nil Server is returned whenever something was started,
// with an error or not, for the caller to stop.
func start(bin string, opts Options) (*Server, error) {
	dir, err := os.MkdirTemp("", "awskmstest-")
	if err != nil {
		return nil, err
	}
	s := &Server{
		region:    opts.Region,
		accountID: opts.AccountID,
		dir:       dir,
		logPath:   filepath.Join(dir, "local-kms.log"),
		exited:    make(chan struct{}),
	}
	if err := s.startWatchdog(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("starting the cleanup watchdog: %w", err)
	}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return s, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(childEnv(),
		"PORT=0",
		"KMS_REGION="+opts.Region,
		"KMS_ACCOUNT_ID="+opts.AccountID,
		"KMS_DATA_PATH="+filepath.Join(dir, "data"),
		// No seed: a missing file is skipped (the default is /init/seed.yaml).
		"KMS_SEED_PATH="+filepath.Join(dir, "no-seed.yaml"),
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = newGroupAttr()
	if err := cmd.Start(); err != nil {
		return s, err
	}
	s.cmd, s.pgid = cmd, cmd.Process.Pid
	go func() { _ = cmd.Wait(); close(s.exited) }()
	// Tell the watchdog which process group to kill if this process dies.
	if _, err := fmt.Fprintf(s.watchdogPipe, "%d\n", s.pgid); err != nil {
		return s, fmt.Errorf("arming the cleanup watchdog: %w", err)
	}

	deadline := time.Now().Add(startTimeout)
	port := ""
	for port == "" {
		if b, err := os.ReadFile(s.logPath); err == nil {
			if m := startedRE.FindSubmatch(b); m != nil {
				port = string(m[1])
				break
			}
		}
		select {
		case <-s.exited:
			return s, fmt.Errorf("local-kms exited (%v) before listening:\n%s", cmd.ProcessState, s.logTail(4<<10))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("local-kms did not listen within %v:\n%s", startTimeout, s.logTail(4<<10))
		}
	}
	s.endpoint = "http://" + net.JoinHostPort("127.0.0.1", port)
	s.client = s.newClient()

	// It listens before it logs the port; check that it answers the API.
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if _, err := s.client.ListKeys(ctx, &kms.ListKeysInput{}); err != nil {
		return s, fmt.Errorf("local-kms at %s does not answer ListKeys: %w\n%s", s.endpoint, err, s.logTail(4<<10))
	}
	return s, nil
}

// startWatchdog starts a shell that reads the server's process group ID
// from a pipe held only by this process, then waits for end-of-file. A line
// after the ID (written by Stop) dismisses it; end-of-file without one
// means this process ended without stopping the server (the kernel closes
// the pipe however a process ends): the shell then kills the server's
// process group and removes the directory. It runs in a process group of
// its own so that a terminal's Ctrl-C, which ends the test process, does
// not end it too.
func (s *Server) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	const script = `if read -r pg; then
  if read -r _; then exit 0; fi
  kill -KILL "-$pg" 2>/dev/null  # dash takes no "--" after -KILL
fi
rm -rf "$1"`
	cmd := exec.Command("/bin/sh", "-c", script, "awskmstest-watchdog", s.dir)
	cmd.Env = childEnv()
	cmd.Stdin = r
	cmd.SysProcAttr = newGroupAttr()
	if err := cmd.Start(); err != nil {
		w.Close()
		return err
	}
	s.watchdog, s.watchdogPipe = cmd, w
	return nil
}

// Stop stops the server (SIGKILL to its process group: nothing in it is
// worth keeping), removes its data directory and dismisses the watchdog.
// Clients see connection errors from then on. Start registers it as a
// cleanup; tests call it themselves to make the KMS unreachable. It is safe
// to call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		var errs []error
		if s.cmd != nil {
			if err := killGroup(s.pgid); err != nil {
				// ESRCH when it exited (and was reaped) already: its Wait
				// returns at once then.
				select {
				case <-s.exited:
				case <-time.After(5 * time.Second):
					errs = append(errs, fmt.Errorf("killing local-kms (process group %d): %w", s.pgid, err))
					_ = s.cmd.Process.Kill()
				}
			}
			select {
			case <-s.exited:
			case <-time.After(30 * time.Second):
				errs = append(errs, fmt.Errorf("local-kms (pid %d) still running 30 s after SIGKILL", s.pgid))
			}
		}
		if s.watchdog != nil {
			_, _ = s.watchdogPipe.WriteString("stopped\n") // dismissed: nothing left to kill
			s.watchdogPipe.Close()
			done := make(chan struct{})
			go func() { _ = s.watchdog.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = s.watchdog.Process.Kill()
				<-done
			}
		}
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, err)
		}
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}

// Endpoint returns the server's base URL, "http://127.0.0.1:<port>", for
// the AWS SDK's BaseEndpoint.
func (s *Server) Endpoint() string { return s.endpoint }

// Region returns the server's AWS region.
func (s *Server) Region() string { return s.region }

// AccountID returns the server's AWS account ID.
func (s *Server) AccountID() string { return s.accountID }

// URIPrefix returns the Tink key URI prefix of every key of this server,
// "aws-kms://arn:aws:kms:<region>:<account>:".
func (s *Server) URIPrefix() string {
	return "aws-kms://arn:aws:kms:" + s.region + ":" + s.accountID + ":"
}

// KeyURI returns the Tink key URI of the key with ARN arn:
// "aws-kms://" + arn.
func KeyURI(arn string) string { return "aws-kms://" + arn }

// Credentials are the static credentials clients of the server use.
// local-kms accepts any; these are AWS's documented example keys.
var Credentials = aws.Credentials{
	AccessKeyID:     "AKIAIOSFODNN7EXAMPLE",
	SecretAccessKey: "wJalrXUtnFDEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	Source:          "awskmstest",
}

// KMS returns an AWS SDK v2 KMS client for the server: its region, its
// endpoint, static [Credentials], nothing read from the environment or
// ~/.aws. It is shared; do not change it.
func (s *Server) KMS() *kms.Client { return s.client }

func (s *Server) newClient() *kms.Client {
	return kms.New(kms.Options{
		Region:       s.region,
		BaseEndpoint: aws.String(s.endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(
			Credentials.AccessKeyID, Credentials.SecretAccessKey, ""),
	})
}

// TinkClient returns Tink's AWS KMS client (tink-go-awskms/v3
// awskms.NewClientWithOptions with awskms.WithKMS) talking to this server,
// for key URIs starting with uriPrefix; "" means [Server.URIPrefix]. It
// uses Tink's default encryption context name (awskms.AssociatedData), as
// awskms.NewClientWithOptions does against AWS.
func (s *Server) TinkClient(tb testing.TB, uriPrefix string) registry.KMSClient {
	tb.Helper()
	if uriPrefix == "" {
		uriPrefix = s.URIPrefix()
	}
	c, err := awskms.NewClientWithOptions(context.Background(), uriPrefix, awskms.WithKMS(s.client))
	if err != nil {
		tb.Fatalf("awskmstest: awskms.NewClientWithOptions(%q): %v", uriPrefix, err)
	}
	return c
}

// CreateKey creates a symmetric encryption key (SYMMETRIC_DEFAULT,
// ENCRYPT_DECRYPT) and returns its ARN; [KeyURI] makes it a Tink key URI.
func (s *Server) CreateKey(tb testing.TB) (arn string) {
	tb.Helper()
	out, err := s.client.CreateKey(tb.Context(), &kms.CreateKeyInput{
		KeySpec:     types.KeySpecSymmetricDefault,
		KeyUsage:    types.KeyUsageTypeEncryptDecrypt,
		Description: aws.String("awskmstest " + tb.Name()),
	})
	if err != nil {
		tb.Fatalf("awskmstest: CreateKey: %v", err)
	}
	if out.KeyMetadata == nil || out.KeyMetadata.Arn == nil {
		tb.Fatalf("awskmstest: CreateKey returned no key ARN")
	}
	return *out.KeyMetadata.Arn
}

// DisableKey disables the key (a customer revoking it): encrypting and
// decrypting with it fail with a *types.DisabledException until
// [Server.EnableKey].
func (s *Server) DisableKey(tb testing.TB, arn string) {
	tb.Helper()
	if _, err := s.client.DisableKey(tb.Context(), &kms.DisableKeyInput{KeyId: aws.String(arn)}); err != nil {
		tb.Fatalf("awskmstest: DisableKey %s: %v", arn, err)
	}
}

// EnableKey enables a disabled key.
func (s *Server) EnableKey(tb testing.TB, arn string) {
	tb.Helper()
	if _, err := s.client.EnableKey(tb.Context(), &kms.EnableKeyInput{KeyId: aws.String(arn)}); err != nil {
		tb.Fatalf("awskmstest: EnableKey %s: %v", arn, err)
	}
}

// ScheduleKeyDeletion schedules the key's deletion with the shortest
// waiting period AWS allows (7 days), as a customer deleting its key does:
// the key is PendingDeletion at once, and encrypting and decrypting with it
// fail with a *types.KMSInvalidStateException. (local-kms never deletes
// it: the waiting period outlasts any test.)
func (s *Server) ScheduleKeyDeletion(tb testing.TB, arn string) {
	tb.Helper()
	_, err := s.client.ScheduleKeyDeletion(tb.Context(), &kms.ScheduleKeyDeletionInput{
		KeyId:               aws.String(arn),
		PendingWindowInDays: aws.Int32(7),
	})
	if err != nil {
		tb.Fatalf("awskmstest: ScheduleKeyDeletion %s: %v", arn, err)
	}
}

// KeyState returns the key's state from DescribeKey: [StateEnabled],
// [StateDisabled], [StatePendingDeletion], or another types.KeyState.
func (s *Server) KeyState(tb testing.TB, arn string) string {
	tb.Helper()
	out, err := s.client.DescribeKey(tb.Context(), &kms.DescribeKeyInput{KeyId: aws.String(arn)})
	if err != nil {
		tb.Fatalf("awskmstest: DescribeKey %s: %v", arn, err)
	}
	if out.KeyMetadata == nil {
		tb.Fatalf("awskmstest: DescribeKey %s returned no metadata", arn)
	}
	return string(out.KeyMetadata.KeyState)
}

// FindBinary returns the path of the local-kms binary (see the package
// documentation for where it looks), or an error naming where it looked.
func FindBinary() (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", BinaryEnv, p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("local-kms"); err == nil {
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
	for _, d := range dirs {
		if p := filepath.Join(d, "local-kms"); checkExecutable(p) == nil {
			return p, nil
		}
	}
	// Last, ask the go command (GOENV settings, a GOROOT-relative default).
	if goCmd, err := exec.LookPath("go"); err == nil {
		if out, err := exec.Command(goCmd, "env", "GOBIN", "GOPATH").Output(); err == nil {
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) == 2 {
				var more []string
				if gobin := strings.TrimSpace(lines[0]); gobin != "" {
					more = append(more, gobin)
				}
				for _, d := range filepath.SplitList(strings.TrimSpace(lines[1])) {
					if d != "" {
						more = append(more, filepath.Join(d, "bin"))
					}
				}
				for _, d := range more {
					if p := filepath.Join(d, "local-kms"); checkExecutable(p) == nil {
						return p, nil
					}
				}
				dirs = append(dirs, more...)
			}
		}
	}
	return "", fmt.Errorf("local-kms not found on PATH nor in %s (set %s to its path)", strings.Join(dirs, ", "), BinaryEnv)
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
	if inCI() {
		tb.Fatalf("awskmstest: local-kms is required in CI (CI=%s): %v (%s)", os.Getenv("CI"), err, install)
	}
	tb.Skipf("awskmstest: local-kms not available, skipping (%s): %v", install, err)
}

func inCI() bool { return testenv.InCI() }

// childEnv is this process's environment without the AWS and local-kms
// variables that would change the server's configuration.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "PORT", "KMS_REGION", "REGION", "KMS_ACCOUNT_ID", "ACCOUNT_ID",
			"KMS_DATA_PATH", "DATA_PATH", "KMS_SEED_PATH", "SEED_PATH":
			continue
		}
		env = append(env, kv)
	}
	return env
}

var ansiRE = regexp.MustCompile("\x1b\\[[0-9;]*m")

// logTail returns the last n bytes of the server's log, without the
// terminal colour codes local-kms always writes.
func (s *Server) logTail(n int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return ansiRE.ReplaceAllString(string(b), "")
}
