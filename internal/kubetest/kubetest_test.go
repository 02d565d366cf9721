package kubetest_test

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rtmx-ai/tenancy/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

func TestStartPrivate(t *testing.T) {
	t0 := time.Now()
	c := kubetest.Start(t, kubetest.Options{})
	t.Logf("etcd + kube-apiserver ready in %v", time.Since(t0))
	ns, err := c.Client(t).CoreV1().Namespaces().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d namespaces", len(ns.Items))
}
