package awskmstest_test

import (
	"bytes"
	"errors"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/rtmx-ai/tenancy/internal/awskmstest"
)

// aead returns the Tink AEAD of key arn on s, through Tink's AWS client.
func aead(t *testing.T, s *awskmstest.Server, arn string) tink.AEAD {
	t.Helper()
	c := s.TinkClient(t, "")
	uri := awskmstest.KeyURI(arn)
	if !c.Supported(uri) {
		t.Fatalf("Tink client for %s does not support %s", s.URIPrefix(), uri)
	}
	a, err := c.GetAEAD(uri)
	if err != nil {
		t.Fatalf("GetAEAD(%s): %v", uri, err)
	}
	return a
}

func TestEncryptDecryptThroughTink(t *testing.T) {
	t.Parallel()
	s := awskmstest.Start(t)
	arn := s.CreateKey(t)
	if want := "arn:aws:kms:" + s.Region() + ":" + s.AccountID() + ":key/"; !strings.HasPrefix(arn, want) {
		t.Fatalf("key ARN %q does not start with %q", arn, want)
	}
	if got := s.KeyState(t, arn); got != awskmstest.StateEnabled {
		t.Fatalf("new key's state %q, want %q", got, awskmstest.StateEnabled)
	}
	a := aead(t, s, arn)
	plain, ad := []byte("a tenant keyset"), []byte("tenancy/v1/keyset/acme/data")
	ct, err := a.Encrypt(plain, ad)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if bytes.Contains(ct, plain) {
		t.Fatalf("ciphertext contains the plaintext")
	}
	got, err := a.Decrypt(ct, ad)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Decrypt = %q, %v; want %q", got, err, plain)
	}
	// The associated data is bound (as the encryption context).
	if _, err := a.Decrypt(ct, []byte("tenancy/v1/keyset/other/data")); err == nil {
		t.Fatalf("Decrypt with other associated data succeeded")
	}
	if _, err := a.Decrypt(ct, nil); err == nil {
		t.Fatalf("Decrypt without the associated data succeeded")
	}
	// Another key of the same server does not open it.
	other := aead(t, s, s.CreateKey(t))
	if _, err := other.Decrypt(ct, ad); err == nil {
		t.Fatalf("Decrypt with another key succeeded")
	}
}

func TestDisableEnableKey(t *testing.T) {
	t.Parallel()
	s := awskmstest.Start(t)
	arn := s.CreateKey(t)
	a := aead(t, s, arn)
	plain, ad := []byte("secret"), []byte("ad")
	ct, err := a.Encrypt(plain, ad)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}

	s.DisableKey(t, arn)
	if got := s.KeyState(t, arn); got != awskmstest.StateDisabled {
		t.Fatalf("state after DisableKey %q, want %q", got, awskmstest.StateDisabled)
	}
	_, err = a.Decrypt(ct, ad)
	var disabled *types.DisabledException
	if !errors.As(err, &disabled) || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("Decrypt with a disabled key: %v (%T), want a DisabledException saying the key is disabled", err, err)
	}
	t.Logf("decrypt with a disabled key: %v", err)
	if _, err := a.Encrypt(plain, ad); !errors.As(err, &disabled) {
		t.Fatalf("Encrypt with a disabled key: %v, want a DisabledException", err)
	}

	s.EnableKey(t, arn)
	if got := s.KeyState(t, arn); got != awskmstest.StateEnabled {
		t.Fatalf("state after EnableKey %q, want %q", got, awskmstest.StateEnabled)
	}
	got, err := a.Decrypt(ct, ad)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Decrypt after EnableKey = %q, %v; want %q", got, err, plain)
	}
}

func TestScheduleKeyDeletion(t *testing.T) {
	t.Parallel()
	s := awskmstest.Start(t)
	arn := s.CreateKey(t)
	a := aead(t, s, arn)
	ct, err := a.Encrypt([]byte("secret"), []byte("ad"))
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	s.ScheduleKeyDeletion(t, arn)
	if got := s.KeyState(t, arn); got != awskmstest.StatePendingDeletion {
		t.Fatalf("state after ScheduleKeyDeletion %q, want %q", got, awskmstest.StatePendingDeletion)
	}
	_, err = a.Decrypt(ct, []byte("ad"))
	var invalid *types.KMSInvalidStateException
	if !errors.As(err, &invalid) || !strings.Contains(err.Error(), "pending deletion") {
		t.Fatalf("Decrypt with a key pending deletion: %v (%T), want a KMSInvalidStateException", err, err)
	}
	t.Logf("decrypt with a key pending deletion: %v", err)
}

func TestUnknownKey(t *testing.T) {
	t.Parallel()
	s := awskmstest.Start(t)
	arn := "arn:aws:kms:" + s.Region() + ":" + s.AccountID() + ":key/00000000-0000-4000-8000-000000000000"
	_, err := aead(t, s, arn).Encrypt([]byte("x"), nil)
	var nf *types.NotFoundException
	if !errors.As(err, &nf) {
		t.Fatalf("Encrypt with an unknown key: %v (%T), want a NotFoundException", err, err)
	}
}

// TestTwoServers runs two servers at once, one in another region and
// account (a customer's own AWS account): different ports, and a key of
// one is unknown to the other.
func TestTwoServers(t *testing.T) {
	t.Parallel()
	a := awskmstest.Start(t)
	b := awskmstest.StartWith(t, awskmstest.Options{Region: "eu-west-1", AccountID: "444455556666"})
	if a.Endpoint() == b.Endpoint() {
		t.Fatalf("both servers at %s", a.Endpoint())
	}
	if b.Region() != "eu-west-1" || b.AccountID() != "444455556666" {
		t.Fatalf("second server: region %q account %q", b.Region(), b.AccountID())
	}
	keyA, keyB := a.CreateKey(t), b.CreateKey(t)
	if !strings.HasPrefix(keyB, "arn:aws:kms:eu-west-1:444455556666:key/") {
		t.Fatalf("second server's key ARN %q", keyB)
	}
	ctA, err := aead(t, a, keyA).Encrypt([]byte("on a"), nil)
	if err != nil {
		t.Fatalf("Encrypt on a: %v", err)
	}
	ctB, err := aead(t, b, keyB).Encrypt([]byte("on b"), nil)
	if err != nil {
		t.Fatalf("Encrypt on b: %v", err)
	}
	if got, err := aead(t, b, keyB).Decrypt(ctB, nil); err != nil || string(got) != "on b" {
		t.Fatalf("Decrypt on b = %q, %v", got, err)
	}
	// a's client does not serve b's URIs, and b does not know a's key.
	if a.TinkClient(t, "").Supported(awskmstest.KeyURI(keyB)) {
		t.Fatalf("a's Tink client supports b's key %s", keyB)
	}
	if _, err := b.KMS().Decrypt(t.Context(), &kms.DecryptInput{KeyId: aws.String(keyA), CiphertextBlob: ctA}); err == nil {
		t.Fatalf("b decrypted a's ciphertext with a's key ARN")
	}
	// Disabling a key on one server leaves the other alone.
	a.DisableKey(t, keyA)
	if got := b.KeyState(t, keyB); got != awskmstest.StateEnabled {
		t.Fatalf("b's key %q after disabling a's", got)
	}
}

// TestServerGoneAfterTest checks that the server is stopped, its port
// closed and its directory removed when the test that started it ends.
func TestServerGoneAfterTest(t *testing.T) {
	t.Parallel()
	var endpoint string
	t.Run("server", func(t *testing.T) {
		s := awskmstest.Start(t)
		endpoint = s.Endpoint()
		s.CreateKey(t)
		if !portOpen(t, endpoint) {
			t.Fatalf("nothing listening at %s", endpoint)
		}
	})
	if endpoint == "" {
		t.Fatal("the subtest did not start a server")
	}
	if portOpen(t, endpoint) {
		t.Fatalf("%s still answers after the test that started it ended", endpoint)
	}
}

// TestStop: a stopped server does not answer; Stop again is a no-op.
func TestStop(t *testing.T) {
	t.Parallel()
	s := awskmstest.Start(t)
	arn := s.CreateKey(t)
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if portOpen(t, s.Endpoint()) {
		t.Fatalf("%s answers after Stop", s.Endpoint())
	}
	if _, err := aead(t, s, arn).Encrypt([]byte("x"), nil); err == nil {
		t.Fatalf("Encrypt on a stopped server succeeded")
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

// envCrashChild makes TestCrashChild run; TestNoServerLeftAfterCrash sets it.
const envCrashChild = "AWSKMSTEST_CHILD_CRASH"

// TestCrashChild starts a server, prints where it is, and exits without
// running any cleanup, as a test process killed by -timeout would.
func TestCrashChild(t *testing.T) {
	if os.Getenv(envCrashChild) == "" {
		t.Skip("only runs as the child of TestNoServerLeftAfterCrash")
	}
	s := awskmstest.Start(t)
	dir := awskmstest.Dir(s)
	os.Stdout.WriteString("\nENDPOINT=" + s.Endpoint() + " DIR=" + dir + "\n")
	os.Exit(3)
}

// TestNoServerLeftAfterCrash checks the watchdog: when the test process
// dies without stopping its server, the server is killed and its directory
// removed anyway.
func TestNoServerLeftAfterCrash(t *testing.T) {
	t.Parallel()
	if _, err := awskmstest.FindBinary(); err != nil {
		awskmstest.Start(t) // skips, or fails in CI
	}
	out, code := runChild(t, "TestCrashChild", envCrashChild+"=1")
	m := regexp.MustCompile(`ENDPOINT=(\S+) DIR=(\S+)`).FindStringSubmatch(out)
	if code != 3 || m == nil {
		t.Fatalf("child exit %d, want 3 and its server's endpoint:\n%s", code, out)
	}
	endpoint, dir := m[1], m[2]
	deadline := time.Now().Add(20 * time.Second)
	for portOpen(t, endpoint) || exists(dir) {
		if time.Now().After(deadline) {
			t.Fatalf("20 s after its test process died, %s answers (%v) or %s exists (%v)",
				endpoint, portOpen(t, endpoint), dir, exists(dir))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCIRunInstallsThisVersion(t *testing.T) {
	b, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Skipf("no .ci/run: %v", err)
	}
	if want := "go install " + awskmstest.Module + "@" + awskmstest.Version; !strings.Contains(string(b), want) {
		t.Fatalf(".ci/run does not run %q", want)
	}
}

func portOpen(t *testing.T, endpoint string) bool {
	t.Helper()
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatalf("endpoint %q: %v", endpoint, err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
