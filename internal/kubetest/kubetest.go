package kubetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/rtmx-ai/tenancy/internal/testenv"
)

// BinDirEnv names the environment variable that may hold the directory of
// the etcd, kube-apiserver and kube-controller-manager binaries.
const BinDirEnv = "TENANCY_TEST_KUBE_BIN"

// CacheEnv names the environment variable .ci/kube-build builds into
// (its directory plus Version); kubetest looks there too.
const CacheEnv = "TENANCY_KUBE_CACHE"

// Version is the Kubernetes version .ci/kube-build builds, and the
// subdirectory of the cache kubetest looks in.
const Version = "v1.37.2"

// startTimeout bounds how long a start waits for each process to serve.
const startTimeout = 2 * time.Minute

// Options configure [Start].
type Options struct {
	// ControllerManager starts kube-controller-manager with the
	// namespace, garbage-collector and resource-quota controllers, so
	// that a deleted namespace goes away and quotas are enforced.
	ControllerManager bool
}

// Cluster is a running etcd and kube-apiserver (and, if asked for,
// kube-controller-manager). Its methods are safe for concurrent use.
type Cluster struct {
	dir     string
	bins    binaries
	pki     *pki
	etcdURL string
	host    string // https://127.0.0.1:<port>
	port    int
	cfg     *rest.Config

	watchdog     *exec.Cmd
	watchdogPipe *os.File // write end; see startWatchdog

	mu                  sync.Mutex // guards the processes and stopped
	etcd, apiserver, cm *proc
	stopped             bool
}

// proc is one process of the cluster.
type proc struct {
	name    string
	cmd     *exec.Cmd
	pgid    int
	exited  chan struct{} // closed once cmd has been waited for
	logPath string
}

type binaries struct{ etcd, apiserver, controllerManager string }

var shared struct {
	once sync.Once
	c    *Cluster
	err  error
}

// Main runs the tests of m and then stops the package's shared cluster
// ([Shared]), if one was started. Use it as
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if err := cleanup(); err != nil {
		fmt.Fprintf(os.Stderr, "kubetest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// Cleanup stops the shared cluster, if one was started. A package whose
// TestMain is another harness's passes it there: pgtest.Main(m,
// kubetest.Cleanup). Without it the watchdog still stops the cluster when
// the test process ends.
func Cleanup() {
	if err := cleanup(); err != nil {
		fmt.Fprintf(os.Stderr, "kubetest: %v\n", err)
	}
}

func cleanup() error {
	shared.once.Do(func() { shared.err = errors.New("kubetest: the tests have finished") })
	if shared.c != nil {
		return shared.c.Stop()
	}
	return nil
}

// Shared returns the test package's cluster, with the controller manager,
// starting it on first use; [Main] or [Cleanup] stops it. Tests share it:
// each should work in namespaces of its own, and none may stop it. It
// skips or fails tb (see the package documentation) when the binaries are
// missing.
func Shared(tb testing.TB) *Cluster {
	tb.Helper()
	shared.once.Do(func() {
		bins, err := findBinaries(true)
		if err != nil {
			shared.err = err
			return
		}
		if !processGroupsSupported {
			shared.err = errors.New("process groups are not supported on this OS")
			return
		}
		c, err := startRetrying(bins, Options{ControllerManager: true})
		if err != nil {
			if c != nil {
				err = errors.Join(err, c.Stop())
			}
			shared.err = fmt.Errorf("starting the shared cluster: %w", err)
			return
		}
		shared.c = c
	})
	if shared.err != nil {
		unavailable(tb, shared.err)
	}
	return shared.c
}

// Start starts a cluster of the test's own, which it may stop and start
// again, and registers a cleanup that stops it and removes its files. It
// skips or fails tb (see the package documentation) when the binaries are
// missing.
func Start(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	bins, err := findBinaries(opts.ControllerManager)
	if err != nil {
		unavailable(tb, err)
	}
	if !processGroupsSupported {
		unavailable(tb, errors.New("process groups are not supported on this OS"))
	}
	c, err := startRetrying(bins, opts)
	if c != nil {
		tb.Cleanup(func() {
			if tb.Failed() {
				tb.Logf("kubetest: logs:\n%s", c.logTails(4<<10))
			}
			if err := c.Stop(); err != nil {
				tb.Errorf("kubetest: %v", err)
			}
		})
	}
	if err != nil {
		tb.Fatalf("kubetest: starting a cluster: %v", err)
	}
	return c
}

// findBinaries returns the paths of etcd, kube-apiserver and (when
// controllerManager) kube-controller-manager: in $TENANCY_TEST_KUBE_BIN if
// set (then nowhere else), else in .ci/kube-build's cache directory.
func findBinaries(controllerManager bool) (binaries, error) {
	dir := os.Getenv(BinDirEnv)
	where := BinDirEnv + "=" + dir
	if dir == "" {
		cache := os.Getenv(CacheEnv)
		if cache == "" {
			base := os.Getenv("XDG_CACHE_HOME")
			if base == "" {
				home, err := os.UserHomeDir()
				if err != nil {
					return binaries{}, fmt.Errorf("no cache directory: %w", err)
				}
				base = filepath.Join(home, ".cache")
			}
			cache = filepath.Join(base, "tenancy", "kube")
		}
		dir = filepath.Join(cache, Version)
		where = dir
	}
	names := []string{"etcd", "kube-apiserver"}
	if controllerManager {
		names = append(names, "kube-controller-manager")
	}
	var missing []string
	for _, n := range names {
		if err := checkExecutable(filepath.Join(dir, n)); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return binaries{}, fmt.Errorf("%s not found in %s (run .ci/kube-build, or set %s to the directory holding them)",
			strings.Join(missing, ", "), where, BinDirEnv)
	}
	b := binaries{etcd: filepath.Join(dir, "etcd"), apiserver: filepath.Join(dir, "kube-apiserver")}
	if controllerManager {
		b.controllerManager = filepath.Join(dir, "kube-controller-manager")
	}
	return b, nil
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
	if testenv.InCI() {
		tb.Fatalf("kubetest: a Kubernetes API server is required in CI (CI=%s): %v", os.Getenv("CI"), err)
	}
	tb.Skipf("kubetest: no Kubernetes API server, skipping: %v", err)
}

// startRetrying is start, tried again (on new ports) when a port it chose
// was taken before the process bound it. A failed attempt is stopped
// before the next; the last one is returned as start returns it.
func startRetrying(bins binaries, opts Options) (*Cluster, error) {
	for attempt := 1; ; attempt++ {
		c, err := start(bins, opts)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return c, err
		}
		if c != nil {
			_ = c.Stop()
		}
	}
}

// start starts the watchdog, etcd, kube-apiserver and, if asked,
// kube-controller-manager, and installs the CRDs. A non-nil Cluster is
// returned whenever something was started, with an error or not, for the
// caller to stop.
func start(bins binaries, opts Options) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "kubetest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, bins: bins}
	if err := c.startWatchdog(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("starting the cleanup watchdog: %w", err)
	}
	if c.pki, err = newPKI(dir); err != nil {
		return c, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return c, err
	}
	c.etcdURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
	c.port = ports[2]
	c.host = "https://127.0.0.1:" + strconv.Itoa(c.port)
	c.cfg = &rest.Config{
		Host: c.host,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: c.pki.caCert, CertData: c.pki.adminCert, KeyData: c.pki.adminKey,
		},
		QPS: 200, Burst: 400,
		Timeout: 30 * time.Second,
	}
	if err := c.startEtcd(ports[1]); err != nil {
		return c, err
	}
	if err := c.StartAPIServer(); err != nil {
		return c, err
	}
	if opts.ControllerManager {
		kubeconfig, err := c.writeKubeconfig()
		if err != nil {
			return c, err
		}
		p, err := c.startProc("kube-controller-manager", bins.controllerManager,
			"--kubeconfig="+kubeconfig,
			"--controllers=namespace,garbagecollector,resourcequota",
			"--leader-elect=false",
			"--secure-port=0",
			"--concurrent-namespace-syncs=4",
		)
		c.mu.Lock()
		c.cm = p
		c.mu.Unlock()
		if err != nil {
			return c, err
		}
	}
	if err := installCRDs(c.cfg); err != nil {
		return c, err
	}
	return c, nil
}

func (c *Cluster) startEtcd(peerPort int) error {
	p, err := c.startProc("etcd", c.bins.etcd,
		"-data-dir="+filepath.Join(c.dir, "etcd"),
		"-listen-client-urls="+c.etcdURL,
		"-listen-peer-urls=http://127.0.0.1:"+strconv.Itoa(peerPort),
	)
	c.mu.Lock()
	c.etcd = p
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return waitReady(p, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.etcdURL+"/health", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/health: %s", resp.Status)
		}
		return nil
	})
}

// StartAPIServer starts kube-apiserver (again, after [Cluster.StopAPIServer])
// on the cluster's port, and waits until it is ready.
func (c *Cluster) StartAPIServer() error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return errors.New("kubetest: the cluster is stopped")
	}
	if c.apiserver != nil {
		select {
		case <-c.apiserver.exited:
		default:
			c.mu.Unlock()
			return errors.New("kubetest: kube-apiserver is running")
		}
	}
	c.mu.Unlock()
	p, err := c.startProc("kube-apiserver", c.bins.apiserver,
		"--etcd-servers="+c.etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(c.port),
		"--tls-cert-file="+c.pki.serverCertFile,
		"--tls-private-key-file="+c.pki.serverKeyFile,
		"--client-ca-file="+c.pki.caFile,
		"--cert-dir="+filepath.Join(c.dir, "certs"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+c.pki.saPubFile,
		"--service-account-signing-key-file="+c.pki.saKeyFile,
		"--authorization-mode=RBAC",
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=10.96.0.0/24",
		"--profiling=false",
	)
	c.mu.Lock()
	c.apiserver = p
	c.mu.Unlock()
	if err != nil {
		return err
	}
	probe := rest.CopyConfig(c.cfg)
	probe.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(probe)
	if err != nil {
		return err
	}
	return waitReady(p, func(ctx context.Context) error {
		return cs.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	})
}

// StopAPIServer kills kube-apiserver (SIGKILL): clients get connection
// errors until [Cluster.StartAPIServer]. etcd and the data stay.
func (c *Cluster) StopAPIServer() error {
	c.mu.Lock()
	p := c.apiserver
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.kill()
}

// Stop stops every process (SIGKILL), removes the cluster's files and
// dismisses the watchdog. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	already := c.stopped
	c.stopped = true
	procs := []*proc{c.cm, c.apiserver, c.etcd}
	c.mu.Unlock()
	if already {
		return nil
	}
	var errs []error
	for _, p := range procs {
		if p != nil {
			errs = append(errs, p.kill())
		}
	}
	if c.watchdog != nil {
		_, _ = c.watchdogPipe.WriteString("stopped\n")
		c.watchdogPipe.Close()
		done := make(chan struct{})
		go func() { _ = c.watchdog.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = c.watchdog.Process.Kill()
			<-done
		}
	}
	errs = append(errs, os.RemoveAll(c.dir))
	return errors.Join(errs...)
}

// Config returns a copy of the administrator's client configuration
// (a client certificate in group system:masters).
func (c *Cluster) Config() *rest.Config { return rest.CopyConfig(c.cfg) }

// Client returns a typed client for the cluster.
func (c *Cluster) Client(tb testing.TB) kubernetes.Interface {
	tb.Helper()
	cs, err := kubernetes.NewForConfig(c.Config())
	if err != nil {
		tb.Fatalf("kubetest: %v", err)
	}
	return cs
}

// Dynamic returns a dynamic client for the cluster.
func (c *Cluster) Dynamic(tb testing.TB) dynamic.Interface {
	tb.Helper()
	d, err := dynamic.NewForConfig(c.Config())
	if err != nil {
		tb.Fatalf("kubetest: %v", err)
	}
	return d
}

// Dir returns the cluster's temporary directory (keys, data, logs).
func (c *Cluster) Dir() string { return c.dir }

// startProc starts one process of the cluster in a process group of its
// own, logging to <dir>/<name>.log, and tells the watchdog about it.
func (c *Cluster) startProc(name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(c.dir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Dir = c.dir
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = newGroupAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, pgid: cmd.Process.Pid, exited: make(chan struct{}), logPath: logPath}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	if _, err := fmt.Fprintf(c.watchdogPipe, "%d\n", p.pgid); err != nil {
		return p, fmt.Errorf("arming the cleanup watchdog: %w", err)
	}
	return p, nil
}

// kill kills p's process group and waits for p to exit.
func (p *proc) kill() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	if err := killGroup(p.pgid); err != nil {
		_ = p.cmd.Process.Kill()
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s (pid %d) still running 30 s after SIGKILL", p.name, p.pgid)
	}
}

// waitReady polls ready until it succeeds, p exits, or startTimeout passes.
func waitReady(p *proc, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var last error
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
		last = ready(attempt)
		cancelAttempt()
		if last == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited (%v) before it was ready:\n%s", p.name, p.cmd.ProcessState, tail(p.logPath, 4<<10))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %v: %v\n%s", p.name, startTimeout, last, tail(p.logPath, 4<<10))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startWatchdog starts a shell that reads process group IDs, one a line,
// from a pipe held only by this process, until end-of-file. A line
// "stopped" (written by Stop) dismisses it; end-of-file without one means
// this process ended without stopping the cluster (the kernel closes the
// pipe however a process ends): the shell then kills every process group
// it was told of and removes the directory. It runs in a process group of
// its own so that a terminal's Ctrl-C, which ends the test process, does
// not end it too.
func (c *Cluster) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	const script = `pgs=""
while read -r line; do
  if [ "$line" = stopped ]; then exit 0; fi
  pgs="$pgs $line"
done
for pg in $pgs; do kill -KILL "-$pg" 2>/dev/null; done
rm -rf "$1"`
	cmd := exec.Command("/bin/sh", "-c", script, "kubetest-watchdog", c.dir)
	cmd.Env = childEnv()
	cmd.Stdin = r
	cmd.SysProcAttr = newGroupAttr()
	if err := cmd.Start(); err != nil {
		w.Close()
		return err
	}
	c.watchdog, c.watchdogPipe = cmd, w
	return nil
}

// writeKubeconfig writes the administrator's kubeconfig, for the
// controller manager, and returns its path.
func (c *Cluster) writeKubeconfig() (string, error) {
	path := filepath.Join(c.dir, "kubeconfig")
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: kubetest
  context:
    cluster: kubetest
    user: admin
current-context: kubetest
`, c.host, c.pki.caFile, c.pki.adminCertFile, c.pki.adminKeyFile)
	return path, os.WriteFile(path, []byte(text), 0o600)
}

// KubeconfigPath writes the administrator's kubeconfig (for kubectl,
// say) if it is not written yet, and returns its path.
func (c *Cluster) KubeconfigPath(tb testing.TB) string {
	tb.Helper()
	p, err := c.writeKubeconfig()
	if err != nil {
		tb.Fatalf("kubetest: %v", err)
	}
	return p
}

// freePorts returns n distinct free TCP ports of 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// childEnv is this process's environment without the variables that would
// point a child at another cluster or change etcd's configuration.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name == "KUBECONFIG" || strings.HasPrefix(name, "ETCD_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// tail returns the last n bytes of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// logTails returns the end of every process's log.
func (c *Cluster) logTails(n int) string {
	var b strings.Builder
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		p := filepath.Join(c.dir, name+".log")
		if _, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "--- %s ---\n%s\n", name, tail(p, n))
		}
	}
	return b.String()
}

// peerAuthenticationCRD is a minimal CustomResourceDefinition of Istio's
// security.istio.io/v1 PeerAuthentication: the names and scope Istio's
// own has, and a schema that keeps whatever spec it is given.
var peerAuthenticationCRD = map[string]any{
	"apiVersion": "apiextensions.k8s.io/v1",
	"kind":       "CustomResourceDefinition",
	"metadata":   map[string]any{"name": "peerauthentications.security.istio.io"},
	"spec": map[string]any{
		"group": "security.istio.io",
		"scope": "Namespaced",
		"names": map[string]any{
			"plural": "peerauthentications", "singular": "peerauthentication",
			"kind": "PeerAuthentication", "listKind": "PeerAuthenticationList",
			"shortNames": []any{"pa"},
		},
		"versions": []any{map[string]any{
			"name": "v1", "served": true, "storage": true,
			"schema": map[string]any{"openAPIV3Schema": map[string]any{
				"type": "object",
				"properties": map[string]any{
					"spec": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true},
				},
			}},
		}},
	},
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installCRDs creates the PeerAuthentication CRD and waits until it is
// served.
func installCRDs(cfg *rest.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	d, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	_, err = d.Resource(crdGVR).Create(ctx, &unstructured.Unstructured{Object: peerAuthenticationCRD}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the PeerAuthentication CRD: %w", err)
	}
	pa := schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}
	for {
		_, err := d.Resource(pa).Namespace("default").List(ctx, metav1.ListOptions{})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the PeerAuthentication CRD is not served: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
