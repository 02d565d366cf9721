package mailtest_test

import (
	"crypto/tls"
	"errors"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rtmx-ai/tenancy/internal/mailtest"
	"github.com/rtmx-ai/tenancy/internal/testenv"
)

const testMessage = "From: <sender@example.com>\r\n" +
	"To: <rcpt@example.com>\r\n" +
	"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n" +
	"Message-ID: <abc.123@example.com>\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"line one =C3=A4\r\n"

func send(addr string, tlsConfig *tls.Config) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if tlsConfig != nil {
		if err := c.StartTLS(tlsConfig); err != nil {
			return err
		}
	}
	if err := c.Mail("sender@example.com"); err != nil {
		return err
	}
	if err := c.Rcpt("rcpt@example.com"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(testMessage)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func TestSendAndRead(t *testing.T) {
	t.Parallel()
	s := mailtest.Start(t)
	if got := s.Messages(t); len(got) != 0 {
		t.Fatalf("a new server holds %d messages", len(got))
	}
	if err := send(s.SMTPAddr(), nil); err != nil {
		t.Fatalf("send: %v", err)
	}
	msgs := s.Messages(t)
	if len(msgs) != 1 {
		t.Fatalf("%d messages after one send, want 1", len(msgs))
	}
	sum := msgs[0]
	if sum.Subject != "Grüße" || sum.MessageID != "abc.123@example.com" || sum.From.Address != "sender@example.com" ||
		len(sum.To) != 1 || sum.To[0].Address != "rcpt@example.com" {
		t.Fatalf("summary %+v", sum)
	}
	m := s.Message(t, sum.ID)
	if m.Text != "line one ä" && m.Text != "line one ä\r\n" && m.Text != "line one ä\n" {
		t.Fatalf("text %q, want the decoded body", m.Text)
	}
	h := s.Headers(t, sum.ID)
	if got := h["Subject"]; len(got) != 1 || got[0] != "=?utf-8?q?Gr=C3=BC=C3=9Fe?=" {
		t.Fatalf("Subject header %q, want it as sent", got)
	}
	if raw := string(s.Raw(t, sum.ID)); !strings.Contains(raw, "line one =C3=A4") {
		t.Fatalf("raw message lacks the encoded body:\n%s", raw)
	}
	s.DeleteAll(t)
	if got := s.Messages(t); len(got) != 0 {
		t.Fatalf("%d messages after DeleteAll", len(got))
	}
}

// TestStopRestart: a stopped server refuses connections; restarted, it is
// on the same address with the messages it had, and takes new ones.
func TestStopRestart(t *testing.T) {
	t.Parallel()
	s := mailtest.Start(t)
	if err := send(s.SMTPAddr(), nil); err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := send(s.SMTPAddr(), nil); err == nil {
		t.Fatalf("send to a stopped server succeeded")
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	addr := s.SMTPAddr()
	s.Restart(t)
	if s.SMTPAddr() != addr {
		t.Fatalf("restarted on %s, was %s", s.SMTPAddr(), addr)
	}
	if got := s.Messages(t); len(got) != 1 {
		t.Fatalf("%d messages after restart, want the 1 from before", len(got))
	}
	if err := send(s.SMTPAddr(), nil); err != nil {
		t.Fatalf("send after restart: %v", err)
	}
	if got := s.Messages(t); len(got) != 2 {
		t.Fatalf("%d messages, want 2", len(got))
	}
}

func TestSTARTTLS(t *testing.T) {
	t.Parallel()
	s := mailtest.StartWith(t, mailtest.Options{RequireSTARTTLS: true})
	if s.CertPool() == nil {
		t.Fatal("no CertPool with STARTTLS")
	}
	// Without STARTTLS the server refuses the mail.
	if err := send(s.SMTPAddr(), nil); err == nil {
		t.Fatalf("a clear-text send to a server requiring STARTTLS succeeded")
	}
	// An untrusted certificate fails the handshake.
	if err := send(s.SMTPAddr(), &tls.Config{ServerName: "127.0.0.1"}); err == nil {
		t.Fatalf("STARTTLS without trusting the certificate succeeded")
	}
	if err := send(s.SMTPAddr(), &tls.Config{ServerName: "127.0.0.1", RootCAs: s.CertPool()}); err != nil {
		t.Fatalf("send with STARTTLS: %v", err)
	}
	if got := s.Messages(t); len(got) != 1 {
		t.Fatalf("%d messages, want 1", len(got))
	}
}

func TestRefuseRecipients(t *testing.T) {
	t.Parallel()
	s := mailtest.Start(t)
	s.RefuseRecipients(t, 550)
	err := send(s.SMTPAddr(), nil)
	var te *textproto.Error
	if !errors.As(err, &te) || te.Code != 550 {
		t.Fatalf("send while refusing: %v, want a 550 reply", err)
	}
	s.RefuseRecipients(t, 0)
	if err := send(s.SMTPAddr(), nil); err != nil {
		t.Fatalf("send after accepting again: %v", err)
	}
	if got := s.Messages(t); len(got) != 1 {
		t.Fatalf("%d messages, want 1", len(got))
	}
}

// TestServerGoneAfterTest: the server is stopped when the test that
// started it ends.
func TestServerGoneAfterTest(t *testing.T) {
	t.Parallel()
	var addr string
	t.Run("server", func(t *testing.T) {
		addr = mailtest.Start(t).SMTPAddr()
	})
	if addr == "" {
		t.Fatal("the subtest did not start a server")
	}
	if portOpen(addr) {
		t.Fatalf("%s still answers after the test that started it ended", addr)
	}
}

// envCrashChild makes TestCrashChild run; TestNoServerLeftAfterCrash sets it.
const envCrashChild = "MAILTEST_CHILD_CRASH"

// TestCrashChild starts a server, prints where it is, and exits without
// running any cleanup, as a test process killed by -timeout would.
func TestCrashChild(t *testing.T) {
	if os.Getenv(envCrashChild) == "" {
		t.Skip("only runs as the child of TestNoServerLeftAfterCrash")
	}
	s := mailtest.Start(t)
	os.Stdout.WriteString("\nSMTP=" + s.SMTPAddr() + " API=" + strings.TrimPrefix(s.APIURL(), "http://") + "\n")
	os.Exit(3)
}

// TestNoServerLeftAfterCrash: when the test process dies without stopping
// its server, the server dies too (Pdeathsig).
func TestNoServerLeftAfterCrash(t *testing.T) {
	t.Parallel()
	if _, err := mailtest.FindBinary(); err != nil {
		mailtest.Start(t) // skips, or fails in CI
	}
	out, code := runChild(t, "TestCrashChild", envCrashChild+"=1")
	m := regexp.MustCompile(`SMTP=(\S+) API=(\S+)`).FindStringSubmatch(out)
	if code != 3 || m == nil {
		t.Fatalf("child exit %d, want 3 and its server's address:\n%s", code, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for portOpen(m[1]) || portOpen(m[2]) {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after its test process died, mailpit still listens on %s or %s", m[1], m[2])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// envProbe makes TestUnavailableProbe run; the parent sets it in the child.
const envProbe = "MAILTEST_CHILD_PROBE"

// TestUnavailableProbe is the child's test: it asks for a server whose
// binary the parent made unavailable.
func TestUnavailableProbe(t *testing.T) {
	if os.Getenv(envProbe) == "" {
		t.Skip("only runs as the child of TestMissingBinary")
	}
	mailtest.Start(t)
	t.Log("server started")
}

// TestMissingBinary: a missing mailpit skips the test outside CI and fails
// it in CI, the message naming what was looked for and how to install it.
func TestMissingBinary(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ci       string // "" leaves CI unset
		wantFail bool
	}{{"", false}, {"false", false}, {"true", true}, {"1", true}} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Parallel()
			env := []string{envProbe + "=1", mailtest.BinaryEnv + "=/nonexistent/mailpit"}
			if tc.ci != "" {
				env = append(env, "CI="+tc.ci)
			}
			out, code := runChild(t, "TestUnavailableProbe", env...)
			switch {
			case tc.wantFail && (code != 1 || !strings.Contains(out, "--- FAIL: TestUnavailableProbe") || !strings.Contains(out, "required in CI")):
				t.Fatalf("child exit %d, want 1 and a failure saying mailpit is required in CI:\n%s", code, out)
			case !tc.wantFail && (code != 0 || !strings.Contains(out, "--- SKIP: TestUnavailableProbe")):
				t.Fatalf("child exit %d, want 0 and a skip:\n%s", code, out)
			}
			for _, want := range []string{"/nonexistent/mailpit", "go install " + mailtest.Module + "@" + mailtest.Version} {
				if !strings.Contains(out, want) {
					t.Fatalf("the message does not say %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestCIRunInstallsThisVersion(t *testing.T) {
	b, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Skipf("no .ci/run: %v", err)
	}
	if want := "go install " + mailtest.Module + "@" + mailtest.Version; !strings.Contains(string(b), want) {
		t.Fatalf(".ci/run does not run %q", want)
	}
}

func runChild(t *testing.T, test string, env ...string) (string, int) {
	t.Helper()
	return testenv.RunTest(t, test, []string{"TENANCY_TEST_", "MAILTEST_"}, env...)
}

func portOpen(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
