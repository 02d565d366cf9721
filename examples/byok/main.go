// Command byok shows a customer-managed master key (BYOK) end to end: a
// tenant provisioned as REQ-DEPLOY-004's provisioning request names one,
//
//	encryption: customer-managed
//	kms_key_arn: "arn:aws:kms:..."
//
// whose keysets are wrapped by a key in the customer's own AWS KMS, beside
// a tenant on the platform's master key; the keys a request may not name;
// the customer disabling its key (the tenant's data unreadable, the other
// tenant unaffected) and enabling it again; and shredding the tenant, which
// leaves the customer's key where it was, enabled.
//
//	go run ./examples/byok
//
// It needs an AWS KMS API. By default it starts local-kms
// (github.com/nsmithuk/local-kms, an AWS-KMS-compatible server), found on
// PATH, in `go env GOBIN` or in `go env GOPATH`/bin, on a port the kernel
// chooses, with its data in a temporary directory, and stops it at the
// end. Install it with
//
//	go install github.com/nsmithuk/local-kms@v0.0.0-20260228092603-2a5e92d09ab6
//
// local-kms listens on all interfaces (it has no setting for the address),
// without authentication; the example sends its requests to 127.0.0.1, and
// the server holds the one key the example creates. If the example is
// killed (SIGKILL) the server outlives it; Ctrl-C stops both.
//
// -aws-endpoint URL (or TENANCY_BYOK_AWS_ENDPOINT) uses an AWS KMS API that
// is running already instead, with keys in -aws-region. The example signs
// its requests with AWS's documented example credentials, which local-kms
// accepts (it accepts any). It creates one key there, and at the end the
// customer side schedules that key's deletion (after 7 days, AWS's
// shortest waiting period).
//
// The platform's master key is a local key file (keys/localkms, in the
// temporary directory) and the keysets are kept in memory (keys.MemStore);
// a service keeps them in PostgreSQL (store.Keysets) and its master key in
// an HSM or a KMS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/tink-crypto/tink-go-awskms/v3/integration/awskms"
	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/tenant"
)

// localKMSInstall is the command that installs the local-kms this example
// is tested with (internal/awskmstest's Module and Version).
const localKMSInstall = "go install github.com/nsmithuk/local-kms@v0.0.0-20260228092603-2a5e92d09ab6"

// customerAccount is the AWS account of the local-kms the example starts:
// the customer's, one of the account IDs AWS's documentation uses.
const customerAccount = "444455556666"

// cacheMaxAge is keys.Config.CacheMaxAge here: short, so that the example
// sees the customer's revocation within a second. The default is
// keys.DefaultCacheMaxAge (5 minutes): the longest a replica keeps serving
// a tenant after its key is disabled.
const cacheMaxAge = time.Second

// exampleCredentials are AWS's documented example access keys.
var exampleCredentials = credentials.NewStaticCredentialsProvider(
	"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFDEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "")

// options says which AWS KMS API the example uses.
type options struct {
	// AWSEndpoint is the base URL of an AWS KMS API that is running
	// already; empty starts local-kms.
	AWSEndpoint string
	// AWSRegion is the region of the requests and of the keys' ARNs.
	AWSRegion string
	// LocalKMS is the path of the local-kms binary; empty looks for it on
	// PATH and in `go env GOBIN` and `go env GOPATH`/bin.
	LocalKMS string
}

func main() {
	endpoint := flag.String("aws-endpoint", os.Getenv("TENANCY_BYOK_AWS_ENDPOINT"),
		"base URL of an AWS KMS API to use (default: start local-kms)")
	region := flag.String("aws-region", "us-east-1", "AWS region of the customer's key")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout, options{AWSEndpoint: *endpoint, AWSRegion: *region}); err != nil {
		fmt.Fprintln(os.Stderr, "byok:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer, o options) (err error) {
	p := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	if o.AWSRegion == "" {
		return errors.New("no AWS region (-aws-region)")
	}
	bin := ""
	if o.AWSEndpoint == "" {
		if bin, err = findLocalKMS(o.LocalKMS); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "tenancy-byok-")
	if err != nil {
		return err
	}
	var cleaned []string
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, rerr)
			return
		}
		p("\ncleaned up: %s", strings.Join(append(cleaned, dir+" removed"), ", "))
	}()

	// The customer's AWS KMS: local-kms, started here, or one given.
	endpoint := o.AWSEndpoint
	if endpoint == "" {
		srv, err := startLocalKMS(ctx, bin, filepath.Join(dir, "local-kms"), o.AWSRegion, customerAccount)
		if err != nil {
			return err
		}
		defer func() {
			if serr := srv.stop(); serr != nil {
				err = errors.Join(err, serr)
				return
			}
			cleaned = append(cleaned, "local-kms stopped")
		}()
		endpoint = srv.endpoint
		p("customer's AWS KMS: local-kms at %s, account %s, region %s", endpoint, customerAccount, o.AWSRegion)
	} else {
		p("customer's AWS KMS: %s, region %s", endpoint, o.AWSRegion)
	}
	awsKMS := kms.New(kms.Options{
		Region:       o.AWSRegion,
		BaseEndpoint: aws.String(endpoint),
		Credentials:  exampleCredentials,
	})

	// 1. The platform: its master key in a local key file (development
	//    only), keysets in memory (a service uses store.Keysets on
	//    PostgreSQL: Admin.Keysets() to provision, DB.Keysets() to serve),
	//    and a Manager whose CustomerKMS is Tink's own AWS KMS client, for
	//    customer keys in this region, whichever account holds them. In
	//    production that client has the access the customers grant the
	//    platform's AWS role.
	kek, err := localkms.KeyURI(filepath.Join(dir, "platform-master.key"))
	if err != nil {
		return err
	}
	local, err := localkms.NewClient(localkms.Scheme)
	if err != nil {
		return err
	}
	customerPrefix := "aws-kms://arn:aws:kms:" + o.AWSRegion + ":"
	customerKMS, err := awskms.NewClientWithOptions(ctx, customerPrefix, awskms.WithKMS(awsKMS))
	if err != nil {
		return fmt.Errorf("creating Tink's AWS KMS client: %w", err)
	}
	keysets := keys.NewMemStore()
	kc := keys.DefaultConfig()
	kc.Store = keysets
	kc.KMS, kc.PlatformKEK = []registry.KMSClient{local}, keys.URI(kek) // the platform's keys only
	kc.CustomerKMS = []registry.KMSClient{customerKMS}                  // customer keys only
	kc.CacheMaxAge = cacheMaxAge
	m, err := keys.New(kc)
	if err != nil {
		return err
	}
	defer m.Close()
	p("\nplatform master key: %s", keys.URI(kek))
	p("customer keys: %s* through Tink's AWS KMS client (Config.CustomerKMS)", customerPrefix)
	p("keysets: keys.MemStore; cached for %v (Config.CacheMaxAge; %v by default)", cacheMaxAge, keys.DefaultCacheMaxAge)

	// 2. The customer, in its own AWS KMS: a symmetric key, whose ARN goes
	//    into its provisioning request.
	created, err := awsKMS.CreateKey(ctx, &kms.CreateKeyInput{
		KeySpec:     types.KeySpecSymmetricDefault,
		KeyUsage:    types.KeyUsageTypeEncryptDecrypt,
		Description: aws.String("acme's tenancy master key (tenancy examples/byok)"),
	})
	if err != nil {
		return fmt.Errorf("the customer's CreateKey at %s: %w", endpoint, err)
	}
	if created.KeyMetadata == nil || created.KeyMetadata.Arn == nil {
		return errors.New("the customer's CreateKey returned no key ARN")
	}
	arn := *created.KeyMetadata.Arn
	if o.AWSEndpoint != "" {
		// Not the platform: the customer, done with the example, deletes
		// its key.
		defer func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			_, derr := awsKMS.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{
				KeyId:               aws.String(arn),
				PendingWindowInDays: aws.Int32(7),
			})
			if derr != nil {
				err = errors.Join(err, fmt.Errorf("the customer's ScheduleKeyDeletion %s: %w", arn, derr))
				return
			}
			cleaned = append(cleaned, "the customer scheduled its key's deletion (7 days)")
		}()
	}
	if !strings.HasPrefix("aws-kms://"+arn, customerPrefix) {
		return fmt.Errorf("the KMS at %s made key %s, outside region %s: pass its region as -aws-region", endpoint, arn, o.AWSRegion)
	}
	p("\ncustomer acme creates a key in its AWS KMS: %s", arn)

	// 3. Two provisioning requests: acme's names its key, globex's none.
	//    kms_key_arn becomes ProvisionOptions.CustomerKEK as a Tink key URI.
	ids, err := parseIDs("acme", "globex", "initech")
	if err != nil {
		return err
	}
	acme, globex, initech := ids[0], ids[1], ids[2]
	customerKEK := keys.URI("aws-kms://" + arn)
	p("\nprovisioning request: tenant_id: acme, encryption: customer-managed, kms_key_arn: %q", arn)
	if err := m.Provision(ctx, acme, keys.ProvisionOptions{CustomerKEK: customerKEK}); err != nil {
		return err
	}
	p("  -> provisioned acme: keysets wrapped by CustomerKEK %s", customerKEK)
	p("provisioning request: tenant_id: globex, encryption: platform-managed")
	if err := m.Provision(ctx, globex, keys.ProvisionOptions{}); err != nil {
		return err
	}
	p("  -> provisioned globex: keysets wrapped by the platform master key")
	// Each stored keyset records whose key wraps it.
	for _, t := range []struct {
		id   tenant.ID
		kind keys.KEKKind
		uri  keys.URI
	}{{acme, keys.KEKCustomer, customerKEK}, {globex, keys.KEKPlatform, keys.URI(kek)}} {
		var purposes []string
		var recorded keys.URI
		for _, purpose := range keys.Purposes() {
			w, err := keysets.Get(ctx, t.id, purpose)
			if err != nil {
				return err
			}
			// The platform's local key is recorded under its canonical
			// URI (symbolic links resolved); an AWS key as given.
			if w.KEKKind != t.kind || (t.kind == keys.KEKCustomer && w.KEKURI != t.uri) {
				return fmt.Errorf("%s's %s keyset records master key %s (%s), not %s (%s)", t.id, purpose, w.KEKURI, w.KEKKind, t.uri, t.kind)
			}
			purposes = append(purposes, string(purpose))
			recorded = w.KEKURI
		}
		p("  %s's keysets (%s) in the store: KEKKind %s, KEKURI %s", t.id, strings.Join(purposes, ", "), t.kind, recorded)
	}

	where := keys.Binding{Table: "integrations", Column: "secret", RowKey: "github"}
	sealed := map[tenant.ID][]byte{}
	for _, id := range []tenant.ID{acme, globex} {
		ctx := tenant.NewContext(ctx, id)
		s, err := m.Seal(ctx, []byte("ghp_token_of_"+id.String()), where)
		if err != nil {
			return err
		}
		sealed[id] = s
		p("as tenant %s: seal its GitHub token (%d bytes sealed)", id, len(s))
	}
	open := func(id tenant.ID) (string, error) {
		plain, err := m.Open(tenant.NewContext(ctx, id), sealed[id], where)
		return string(plain), err
	}
	expectOpens := func(id tenant.ID) error {
		plain, err := open(id)
		if err != nil {
			return fmt.Errorf("as tenant %s: open its secret: %w", id, err)
		}
		p("as tenant %s: open its secret -> %q", id, plain)
		return nil
	}

	// 4. What a request may not name as its key: a key file on the
	//    platform's machines, or the platform's own master key. Each is
	//    refused, and nothing is written.
	p("")
	for _, bad := range []struct {
		uri  keys.URI
		what string
	}{
		{"local:///var/lib/tenancy/master.key", "a file on the platform's machines"},
		{keys.URI(kek), "the platform master key"},
	} {
		err := m.Provision(ctx, initech, keys.ProvisionOptions{CustomerKEK: bad.uri})
		p("provisioning request: tenant_id: initech, encryption: customer-managed, key: %s (%s)\n  -> %v", bad.uri, bad.what, err)
		if !errors.Is(err, keys.ErrInvalidArgument) {
			return fmt.Errorf("customer key %s: expected keys.ErrInvalidArgument, got: %w", bad.uri, err)
		}
	}
	if _, err := keysets.Get(ctx, initech, keys.PurposeData); !errors.Is(err, keys.ErrNoKeys) {
		return fmt.Errorf("a refused Provision wrote keys: expected keys.ErrNoKeys, got: %w", err)
	}
	p("  nothing written: initech has no keys")

	// 5. The customer disables its key. Once acme's cached keysets expire
	//    (CacheMaxAge), every read of acme's data fails, naming the
	//    customer's key; globex, on the platform key, is served as ever.
	if _, err := awsKMS.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(arn)}); err != nil {
		return fmt.Errorf("the customer's DisableKey %s: %w", arn, err)
	}
	p("\nthe customer disables its key (DisableKey); acme's cached keysets expire within %v", cacheMaxAge)
	err = poll(ctx, func() bool { _, err := open(acme); return err != nil })
	if err != nil {
		return fmt.Errorf("acme's data still opens with the customer's key disabled: %w", err)
	}
	_, err = open(acme)
	p("as tenant %s: open its secret\n  -> %v", acme, err)
	if !errors.Is(err, keys.ErrUnwrap) || !strings.Contains(err.Error(), arn) {
		return fmt.Errorf("expected keys.ErrUnwrap naming %s, got: %w", arn, err)
	}
	if err := expectOpens(globex); err != nil {
		return err
	}
	if _, err := awsKMS.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(arn)}); err != nil {
		return fmt.Errorf("the customer's EnableKey %s: %w", arn, err)
	}
	p("the customer enables its key again (EnableKey)")
	if err := poll(ctx, func() bool { _, err := open(acme); return err == nil }); err != nil {
		return fmt.Errorf("acme's data does not open with the customer's key enabled again: %w", err)
	}
	if err := expectOpens(acme); err != nil {
		return err
	}

	// 6. Shredding acme deletes its keysets: its data is gone, saved
	//    copies included. The customer's key is the customer's: the
	//    platform never destroys it.
	res, err := m.Shred(ctx, acme)
	if err != nil {
		return err
	}
	p("\nshredded tenant acme: keysets deleted, tombstone recorded, master keys destroyed: %s", orNone(res.DestroyedKEKs))
	_, err = open(acme)
	p("as tenant %s: open a saved copy of its secret\n  -> %v", acme, err)
	if !errors.Is(err, keys.ErrKeyDestroyed) {
		return fmt.Errorf("expected keys.ErrKeyDestroyed, got: %w", err)
	}
	desc, err := awsKMS.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(arn)})
	if err != nil {
		return fmt.Errorf("the customer's DescribeKey %s: %w", arn, err)
	}
	if desc.KeyMetadata == nil {
		return fmt.Errorf("the customer's DescribeKey %s returned no metadata", arn)
	}
	state := desc.KeyMetadata.KeyState
	p("the customer's key %s (DescribeKey): %s; the platform never destroys a customer's key", arn, state)
	if state != types.KeyStateEnabled {
		return fmt.Errorf("the customer's key is %s after the shred, not %s", state, types.KeyStateEnabled)
	}
	return expectOpens(globex)
}

// poll calls done every 50 ms until it returns true, for up to 10 cache
// periods and 5 seconds; it fails if that time passes or ctx ends first.
func poll(ctx context.Context, done func() bool) error {
	deadline := time.Now().Add(10*cacheMaxAge + 5*time.Second)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if done() {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// parseIDs parses tenant IDs, as every boundary does.
func parseIDs(ss ...string) ([]tenant.ID, error) {
	ids := make([]tenant.ID, len(ss))
	for i, s := range ss {
		id, err := tenant.ParseID(s)
		if err != nil {
			return nil, err
		}
		ids[i] = id
	}
	return ids, nil
}

func orNone(u []keys.URI) string {
	if len(u) == 0 {
		return "none"
	}
	return fmt.Sprint(u)
}

// findLocalKMS returns bin if it is set and executable, else local-kms on
// PATH, in `go env GOBIN` or in `go env GOPATH`/bin, or an error saying how
// to install it.
func findLocalKMS(bin string) (string, error) {
	hint := "install it with\n  " + localKMSInstall + "\nor pass -aws-endpoint"
	if bin != "" {
		if err := checkExecutable(bin); err != nil {
			return "", fmt.Errorf("local-kms: %w: %s", err, hint)
		}
		return bin, nil
	}
	if p, err := exec.LookPath("local-kms"); err == nil {
		return p, nil
	}
	dirs := []string{"PATH"}
	if b, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.SplitN(strings.TrimSpace(string(b)), "\n", 2)
		var more []string
		if len(lines) == 2 && strings.TrimSpace(lines[0]) != "" {
			more = append(more, strings.TrimSpace(lines[0]))
		}
		for _, d := range filepath.SplitList(strings.TrimSpace(lines[len(lines)-1])) {
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
	return "", fmt.Errorf("local-kms not found on %s: %s", strings.Join(dirs, " nor in "), hint)
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

// localKMS is a running local-kms.
type localKMS struct {
	cmd      *exec.Cmd
	exited   chan struct{} // closed once cmd has been waited for
	endpoint string        // http://127.0.0.1:<port>
	logPath  string
}

var startedRE = regexp.MustCompile(`Local KMS started on \S*:([0-9]+)`)

// startLocalKMS starts bin with its data in dir, on a port the kernel
// chooses (PORT=0, read back from its log), and waits until it answers. On
// error, nothing is left running.
func startLocalKMS(ctx context.Context, bin, dir, region, account string) (_ *localKMS, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &localKMS{exited: make(chan struct{}), logPath: filepath.Join(dir, "local-kms.log")}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	s.cmd = exec.Command(bin)
	s.cmd.Dir = dir
	s.cmd.Env = append(childEnv(),
		"PORT=0",
		"KMS_REGION="+region,
		"KMS_ACCOUNT_ID="+account,
		"KMS_DATA_PATH="+filepath.Join(dir, "data"),
		"KMS_SEED_PATH="+filepath.Join(dir, "no-seed.yaml"), // none: a missing file is skipped
	)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	defer func() {
		if err != nil {
			err = errors.Join(err, s.stop())
		}
	}()

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for s.endpoint == "" {
		if b, err := os.ReadFile(s.logPath); err == nil {
			if m := startedRE.FindSubmatch(b); m != nil {
				s.endpoint = "http://" + net.JoinHostPort("127.0.0.1", string(m[1]))
				break
			}
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("local-kms exited (%v) before listening:\n%s", s.cmd.ProcessState, s.logTail())
		case <-ctx.Done():
			return nil, fmt.Errorf("local-kms did not listen: %w\n%s", ctx.Err(), s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
	c := kms.New(kms.Options{Region: region, BaseEndpoint: aws.String(s.endpoint), Credentials: exampleCredentials})
	if _, err := c.ListKeys(ctx, &kms.ListKeysInput{}); err != nil {
		return nil, fmt.Errorf("local-kms at %s does not answer: %w\n%s", s.endpoint, err, s.logTail())
	}
	return s, nil
}

// stop kills the server and waits for it to exit.
func (s *localKMS) stop() error {
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping local-kms (pid %d): %w", s.cmd.Process.Pid, err)
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("local-kms (pid %d) still running 10 s after SIGKILL", s.cmd.Process.Pid)
	}
}

var ansiRE = regexp.MustCompile("\x1b\\[[0-9;]*m")

// logTail returns the end of the server's log, without the colour codes
// local-kms writes.
func (s *localKMS) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > 4<<10 {
		b = b[len(b)-4<<10:]
	}
	return ansiRE.ReplaceAllString(string(b), "")
}

// childEnv is this process's environment without the variables that
// would change local-kms's configuration.
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
