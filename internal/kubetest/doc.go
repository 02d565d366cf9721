// Package kubetest gives tests a real Kubernetes API: etcd and
// kube-apiserver on loopback, and kube-controller-manager with the
// namespace, garbage-collector and resource-quota controllers, so that a
// deleted namespace is really deleted and quotas are enforced.
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		c := kubetest.Shared(t)            // one cluster per test package
//		client := c.Client(t)              // kubernetes.Interface
//		cfg := c.Config()                  // *rest.Config, administrator
//		...
//	}
//
// [Shared] starts the package's cluster on first use; [Main] (or
// [Cleanup], from another harness's TestMain: pgtest.Main(m,
// kubetest.Cleanup)) stops it. [Start] starts a cluster of the test's own,
// which [Cluster.StopAPIServer] and [Cluster.StartAPIServer] take down and
// bring back, for tests of an API server that is down.
//
// # Binaries
//
// kubetest runs the etcd, kube-apiserver and kube-controller-manager that
// .ci/kube-build builds from the Go module proxy (version [Version]):
// from the directory $TENANCY_TEST_KUBE_BIN if set (then nothing else is
// tried), else from .ci/kube-build's cache,
// ${TENANCY_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tenancy/kube}/v1.37.2.
// When they are missing, a test calling Shared or Start is skipped with a
// message saying to run .ci/kube-build — unless CI is true (any value
// strconv.ParseBool takes as true), in which case it fails.
//
// # The cluster
//
// Each cluster has a temporary directory: a CA, a serving certificate for
// 127.0.0.1, an administrator's client certificate (group
// system:masters, under RBAC), a service-account signing key, etcd's data
// and the processes' logs. Ports are free loopback ports; kube-apiserver
// runs with --endpoint-reconciler-type=none. Each process runs in a
// process group of its own; a watchdog process kills them and removes the
// directory if the test process dies without stopping the cluster (a
// panic, a -timeout, a kill), as internal/pgtest's does for its clusters.
// A minimal CustomResourceDefinition of Istio's security.istio.io/v1
// PeerAuthentication is installed in every cluster.
//
// # Security
//
// For tests only: the administrator can do everything, and the keys are
// written unencrypted into the temporary directory.
package kubetest
