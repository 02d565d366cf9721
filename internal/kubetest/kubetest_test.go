package kubetest_test

import (
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/rtmx-ai/tenancy/internal/kubetest"
	"github.com/rtmx-ai/tenancy/internal/testenv"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// TestSharedDeletesNamespaces: the shared cluster's controller manager
// finishes a namespace's deletion, contents and all, and the
// PeerAuthentication CRD is served.
func TestSharedDeletesNamespaces(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	c := kubetest.Shared(t)
	t.Logf("shared cluster ready in %v", time.Since(t0))
	if kubetest.Shared(t) != c {
		t.Fatal("a second Shared call returned another cluster")
	}
	ctx := t.Context()
	cs := c.Client(t)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "doomed"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps("doomed").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pa := schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}
	if _, err := c.Dynamic(t).Resource(pa).Namespace("doomed").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("PeerAuthentications are not served: %v", err)
	}
	t1 := time.Now()
	if err := cs.CoreV1().Namespaces().Delete(ctx, "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := cs.CoreV1().Namespaces().Get(ctx, "doomed", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Since(t1) > time.Minute {
			t.Fatalf("namespace still there a minute after its deletion: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("namespace deleted in %v", time.Since(t1))
}

// TestStopAndStartAPIServer: a stopped API server refuses connections, and
// once started again serves what was stored before.
func TestStopAndStartAPIServer(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	c := kubetest.Start(t, kubetest.Options{})
	t.Logf("etcd + kube-apiserver ready in %v", time.Since(t0))
	ctx := t.Context()
	cs := c.Client(t)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kept"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "kept", metav1.GetOptions{}); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Get with the API server stopped: %v, want connection refused", err)
	}
	if err := c.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	if err := c.StartAPIServer(); err == nil {
		t.Error("StartAPIServer of a running server succeeded")
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Fatalf("Get after the restart: %v", err)
	}
	dir := c.Dir()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still there after Stop: %v", dir, err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// envProbe makes TestUnavailableProbe run; the parent sets it in the child.
const envProbe = "KUBETEST_CHILD_PROBE"

// TestUnavailableProbe is the child's test: it asks for a cluster whose
// binaries the parent made unavailable. It does nothing in a normal run.
func TestUnavailableProbe(t *testing.T) {
	if os.Getenv(envProbe) == "" {
		t.Skip("only runs as the child of TestMissingBinariesInCI")
	}
	if os.Getenv(envProbe) == "shared" {
		kubetest.Shared(t)
	} else {
		kubetest.Start(t, kubetest.Options{})
	}
	t.Log("cluster started")
}

// TestMissingBinariesInCI: missing binaries skip the test outside CI and
// fail it in CI, with a message saying where kubetest looked and to run
// .ci/kube-build.
func TestMissingBinariesInCI(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ci       string // "" leaves CI unset
		wantFail bool
	}{
		{"", false}, {"false", false}, {"true", true}, {"1", true},
	} {
		for _, which := range []string{"shared", "start"} {
			t.Run(which+"/CI="+tc.ci, func(t *testing.T) {
				t.Parallel()
				env := []string{envProbe + "=" + which, kubetest.BinDirEnv + "=/nonexistent/kube"}
				if tc.ci != "" {
					env = append(env, "CI="+tc.ci)
				}
				out, code := testenv.RunTest(t, "TestUnavailableProbe", []string{"TENANCY_TEST_", "TENANCY_KUBE_", "KUBETEST_"}, env...)
				switch {
				case tc.wantFail && (code != 1 || !strings.Contains(out, "--- FAIL: TestUnavailableProbe") || !strings.Contains(out, "required in CI")):
					t.Fatalf("child exit %d, want 1 and a failure saying the API server is required in CI:\n%s", code, out)
				case !tc.wantFail && (code != 0 || !strings.Contains(out, "--- SKIP: TestUnavailableProbe")):
					t.Fatalf("child exit %d, want 0 and a skip:\n%s", code, out)
				}
				for _, want := range []string{"etcd, kube-apiserver", kubetest.BinDirEnv + "=/nonexistent/kube", "run .ci/kube-build"} {
					if !strings.Contains(out, want) {
						t.Fatalf("the message does not say %q:\n%s", want, out)
					}
				}
			})
		}
	}
}
