package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/awskmstest"
	"github.com/rtmx-ai/tenancy/internal/testenv"
)

// localKMSBinary returns the local-kms binary internal/awskmstest finds
// (TENANCY_TEST_LOCAL_KMS, PATH, GOPATH/bin...). Without one the test is
// skipped, or fails in CI.
func localKMSBinary(t *testing.T) string {
	t.Helper()
	bin, err := awskmstest.FindBinary()
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("local-kms is required in CI: %v (%s)", err, localKMSInstall)
		}
		t.Skipf("local-kms not available, skipping (%s): %v", localKMSInstall, err)
	}
	return bin
}

func runExample(t *testing.T, o options) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out, o), out.String())
	return out.String()
}

var arnRE = regexp.MustCompile(`kms_key_arn: "(arn:aws:kms:[^"]+)"`)

// checkSteps checks what the example shows, step by step, and returns the
// customer key's ARN.
func checkSteps(t *testing.T, s, region, account string) string {
	t.Helper()
	// 1. The platform.
	assert.Regexp(t, `(?m)^platform master key: local://\S+/platform-master.key$`, s)
	assert.Contains(t, s, "customer keys: aws-kms://arn:aws:kms:"+region+":* through Tink's AWS KMS client (Config.CustomerKMS)")
	assert.Contains(t, s, "cached for 1s (Config.CacheMaxAge")

	// 2. The customer's key.
	m := arnRE.FindStringSubmatch(s)
	require.NotNil(t, m, "no kms_key_arn in:\n%s", s)
	arn := m[1]
	assert.True(t, strings.HasPrefix(arn, "arn:aws:kms:"+region+":"+account+":key/"), "ARN %s", arn)
	assert.Contains(t, s, "customer acme creates a key in its AWS KMS: "+arn)

	// 3. Provisioning: acme's keysets record the customer's key.
	assert.Contains(t, s, "provisioned acme: keysets wrapped by CustomerKEK aws-kms://"+arn)
	assert.Contains(t, s, "acme's keysets (data, blob, audit) in the store: KEKKind customer, KEKURI aws-kms://"+arn+"\n")
	assert.Regexp(t, `globex's keysets \(data, blob, audit\) in the store: KEKKind platform, KEKURI local://\S+/platform-master.key\n`, s)
	assert.Contains(t, s, `as tenant acme: seal its GitHub token`)
	assert.Contains(t, s, `as tenant globex: seal its GitHub token`)

	// 4. The refusals.
	assert.Contains(t, s, "key: local:///var/lib/tenancy/master.key (a file on the platform's machines)\n"+
		"  -> keys: Provision tenant initech: invalid argument: ProvisionOptions.CustomerKEK local:///var/lib/tenancy/master.key is a local key file")
	assert.Regexp(t, `key: local://(\S+)/platform-master.key \(the platform master key\)\n`+
		`  -> keys: Provision tenant initech: invalid argument: ProvisionOptions.CustomerKEK local://\S+/platform-master.key is a local key file`, s)
	assert.Contains(t, s, "nothing written: initech has no keys")

	// 5. The customer disables its key: acme's read fails naming the key,
	//    globex is unaffected; enabled again, acme reads again.
	disabled := strings.Index(s, "the customer disables its key (DisableKey)")
	enabled := strings.Index(s, "the customer enables its key again (EnableKey)")
	require.True(t, disabled >= 0 && enabled > disabled, "no disable, then enable, in:\n%s", s)
	between := s[disabled:enabled]
	assert.Contains(t, between, "as tenant acme: open its secret\n  -> keys: load data keyset of tenant acme: unwrap data keyset with customer master key aws-kms://"+arn+
		" (held in the customer's KMS: the customer may have disabled it or revoked the grant): master key operation failed:")
	assert.Contains(t, between, "DisabledException: "+arn+" is disabled")
	assert.Contains(t, between, `as tenant globex: open its secret -> "ghp_token_of_globex"`)
	assert.Contains(t, s[enabled:], `as tenant acme: open its secret -> "ghp_token_of_acme"`)

	// 6. The shred: acme's data is gone, the customer's key is not.
	assert.Contains(t, s, "shredded tenant acme: keysets deleted, tombstone recorded, master keys destroyed: none")
	assert.Contains(t, s, "open a saved copy of its secret\n  -> keys: load data keyset of tenant acme: tenant acme: tenant keys destroyed")
	assert.Contains(t, s, "the customer's key "+arn+" (DescribeKey): Enabled; the platform never destroys a customer's key")
	return arn
}

// tempDir returns the example's temporary directory, from the platform
// master key's path.
func tempDir(t *testing.T, s string) string {
	t.Helper()
	m := regexp.MustCompile(`platform master key: local://(\S+)/platform-master.key`).FindStringSubmatch(s)
	require.NotNil(t, m, "no platform master key in:\n%s", s)
	return m[1]
}

// requireCleanedUp checks that the example removed its directory and, if
// it started local-kms, stopped it.
func requireCleanedUp(t *testing.T, s string) {
	t.Helper()
	dir := tempDir(t, s)
	_, err := os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist, "%s left behind", dir)
	if m := regexp.MustCompile(`local-kms at (http://\S+),`).FindStringSubmatch(s); m != nil {
		u, err := url.Parse(m[1])
		require.NoError(t, err)
		c, err := net.DialTimeout("tcp", u.Host, time.Second)
		if err == nil {
			c.Close()
		}
		require.Error(t, err, "local-kms still answers at %s", u.Host)
	}
}

// TestBYOKRuns keeps `go run ./examples/byok` true: with local-kms started
// by the example, every step shows what it promises, and nothing is left.
func TestBYOKRuns(t *testing.T) {
	t.Parallel()
	s := runExample(t, options{AWSRegion: "us-east-1", LocalKMS: localKMSBinary(t)})
	checkSteps(t, s, "us-east-1", customerAccount)
	assert.Contains(t, s, "cleaned up: local-kms stopped, ")
	requireCleanedUp(t, s)
}

// TestBYOKOnAnExistingEndpoint runs the example against an AWS KMS API it
// did not start (-aws-endpoint): it starts no server, and the customer
// side schedules its key's deletion at the end.
func TestBYOKOnAnExistingEndpoint(t *testing.T) {
	t.Parallel()
	localKMSBinary(t) // skips or fails as the other tests do
	srv := awskmstest.StartWith(t, awskmstest.Options{Region: "eu-west-1", AccountID: "777788889999"})
	s := runExample(t, options{AWSEndpoint: srv.Endpoint(), AWSRegion: "eu-west-1", LocalKMS: "/nonexistent/local-kms"})
	arn := checkSteps(t, s, "eu-west-1", "777788889999")
	assert.Contains(t, s, "customer's AWS KMS: "+srv.Endpoint()+", region eu-west-1\n")
	assert.NotContains(t, s, "local-kms")
	assert.Contains(t, s, "cleaned up: the customer scheduled its key's deletion (7 days), ")
	assert.Equal(t, awskmstest.StatePendingDeletion, srv.KeyState(t, arn))
	requireCleanedUp(t, s)

	// Keys outside -aws-region are refused before anything is provisioned.
	var out bytes.Buffer
	err := run(t.Context(), &out, options{AWSEndpoint: srv.Endpoint(), AWSRegion: "us-west-2"})
	require.ErrorContains(t, err, "outside region us-west-2: pass its region as -aws-region")
	requireCleanedUp(t, out.String())
}

// TestBYOKCleansUpWhenInterrupted cancels the example while it waits for
// the disabled key to take effect: it stops local-kms and removes its
// directory all the same.
func TestBYOKCleansUpWhenInterrupted(t *testing.T) {
	t.Parallel()
	bin := localKMSBinary(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := &cancelAfter{marker: "the customer disables its key", cancel: cancel}
	err := run(ctx, w, options{AWSRegion: "us-east-1", LocalKMS: bin})
	require.ErrorIs(t, err, context.Canceled)
	s := w.String()
	assert.Contains(t, s, "cleaned up: local-kms stopped, ")
	requireCleanedUp(t, s)
}

// cancelAfter records what is written and calls cancel once a write
// contains marker.
type cancelAfter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	cancel context.CancelFunc
}

func (c *cancelAfter) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if bytes.Contains(b, []byte(c.marker)) {
		c.cancel()
	}
	return c.buf.Write(b)
}

func (c *cancelAfter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

var _ io.Writer = (*cancelAfter)(nil)

// TestMissingLocalKMSSaysHowToInstall checks the error of a run without
// local-kms, and that its install command is the one internal/awskmstest
// names (.ci/run installs that version).
func TestMissingLocalKMSSaysHowToInstall(t *testing.T) {
	assert.Equal(t, "go install "+awskmstest.Module+"@"+awskmstest.Version, localKMSInstall)
	missing := filepath.Join(t.TempDir(), "local-kms")
	err := run(t.Context(), io.Discard, options{AWSRegion: "us-east-1", LocalKMS: missing})
	require.ErrorContains(t, err, "install it with\n  "+localKMSInstall+"\nor pass -aws-endpoint")
	require.ErrorContains(t, err, missing)
}
