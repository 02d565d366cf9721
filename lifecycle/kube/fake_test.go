package kube_test

// Fast tests on client-go's fake clientset, beside the real API server's.

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/rtmx-ai/tenancy/lifecycle/kube"
	"github.com/rtmx-ai/tenancy/tenant"
)

// fakeEnv is a kube.Cluster on fake clients whose discovery knows
// ConfigMaps (namespaced) and ClusterRoleBindings (cluster-scoped).
func fakeEnv(t *testing.T, mods ...func(*kube.Config)) (*kube.Cluster, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset()
	cs.Resources = []*metav1.APIResourceList{
		{GroupVersion: "v1", APIResources: []metav1.APIResource{
			{Name: "configmaps", Kind: "ConfigMap", Namespaced: true},
			{Name: "secrets", Kind: "Secret", Namespaced: true},
		}},
		{GroupVersion: "rbac.authorization.k8s.io/v1", APIResources: []metav1.APIResource{
			{Name: "clusterrolebindings", Kind: "ClusterRoleBinding", Namespaced: false},
		}},
	}
	s := runtime.NewScheme()
	if err := scheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	cfg := kube.DefaultConfig(cs, dynamicfake.NewSimpleDynamicClientWithCustomListKinds(s, map[schema.GroupVersionResource]string{paGVR: "PeerAuthenticationList"}))
	for _, m := range mods {
		m(&cfg)
	}
	k, err := kube.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k, cs
}

var acme = tenant.Info{ID: tenant.MustParseID("acme"), Name: "Acme", Tier: tenant.TierStandard, Region: "us-east-1"}

func TestFakeNamespaceApply(t *testing.T) {
	t.Parallel()
	k, cs := fakeEnv(t)
	ctx := t.Context()
	if err := k.Namespace().Apply(ctx, acme); err != nil {
		t.Fatal(err)
	}
	if err := k.Namespace().Apply(ctx, acme); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	ns, err := cs.CoreV1().Namespaces().Get(ctx, "tenant-acme", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantLabels(t, "Namespace", ns.Labels, acme)
	nps, err := cs.NetworkingV1().NetworkPolicies("tenant-acme").List(ctx, metav1.ListOptions{})
	if err != nil || len(nps.Items) != 3 {
		t.Fatalf("network policies: %d, %v; want default-deny and the two default allow rules", len(nps.Items), err)
	}
	for _, get := range []func() (metav1.Object, error){
		func() (metav1.Object, error) {
			return cs.CoreV1().ResourceQuotas("tenant-acme").Get(ctx, kube.QuotaName, metav1.GetOptions{})
		},
		func() (metav1.Object, error) {
			return cs.CoreV1().LimitRanges("tenant-acme").Get(ctx, kube.LimitRangeName, metav1.GetOptions{})
		},
	} {
		o, err := get()
		if err != nil {
			t.Fatal(err)
		}
		wantLabels(t, o.GetName(), o.GetLabels(), acme)
	}
}

func TestFakeForeignNamespaceRefused(t *testing.T) {
	t.Parallel()
	k, cs := fakeEnv(t)
	ctx := t.Context()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tenant-acme"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := k.Namespace().Apply(ctx, acme); !errors.Is(err, kube.ErrForeignNamespace) {
		t.Fatalf("Apply: %v, want ErrForeignNamespace", err)
	}
	if err := k.Namespace().Remove(ctx, acme.ID); err != nil {
		t.Fatalf("Remove of a foreign namespace: %v, want nothing done", err)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "tenant-acme", metav1.GetOptions{}); err != nil {
		t.Fatalf("the foreign namespace was removed: %v", err)
	}
	for _, a := range cs.Actions() {
		if v := a.GetVerb(); v != "get" && v != "create" && v != "list" {
			t.Errorf("a %s of %s on a foreign namespace", v, a.GetResource().Resource)
		}
	}
}

// TestFakeClusterScopedRefused: discovery says ClusterRoleBinding is
// cluster-scoped, so Apply refuses it, naming the manifest, and writes
// nothing, not even the ConfigMap before it.
func TestFakeClusterScopedRefused(t *testing.T) {
	t.Parallel()
	k, cs := fakeEnv(t, func(c *kube.Config) {
		c.Manifests = []kube.Manifest{{Name: "crb.yaml", Template: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n" +
			"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: b\n"}}
	})
	ctx := t.Context()
	if err := k.Namespace().Apply(ctx, acme); err != nil {
		t.Fatal(err)
	}
	before := len(cs.Actions())
	err := k.Resources().Apply(ctx, acme)
	if !errors.Is(err, kube.ErrInvalidConfig) || !strings.Contains(err.Error(), `Manifests[0] ("crb.yaml") document 2 (ClusterRoleBinding): rbac.authorization.k8s.io/v1, Kind=ClusterRoleBinding is cluster-scoped`) {
		t.Fatalf("Apply: %v", err)
	}
	for _, a := range cs.Actions()[before:] {
		if a.GetVerb() != "get" {
			t.Errorf("Apply refused the manifest but did a %s of %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
}

// TestKindForOneTenantOnlyRefused: a manifest whose kinds depend on the
// region makes a kind New did not see for the sample tenants: Apply
// refuses it, so that Remove never misses a kind.
func TestKindForOneTenantOnlyRefused(t *testing.T) {
	t.Parallel()
	k, _ := fakeEnv(t, func(c *kube.Config) {
		c.Manifests = []kube.Manifest{{Name: "m.yaml", Template: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n" +
			"{{if eq .Region \"eu-west-1\"}}---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: b\n{{end}}"}}
	})
	in := acme
	in.Region = "eu-west-1"
	if err := k.Namespace().Apply(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	err := k.Resources().Apply(t.Context(), in)
	if !errors.Is(err, kube.ErrInvalidConfig) || !strings.Contains(err.Error(), "kind /v1, Kind=Secret is made for this tenant only") {
		t.Fatalf("Apply: %v", err)
	}
}

// TestInvalidTenantRefused: Apply, Remove and Remains refuse what is not a
// tenant, before any API call.
func TestInvalidTenantRefused(t *testing.T) {
	t.Parallel()
	k, cs := fakeEnv(t)
	ctx := t.Context()
	for name, in := range map[string]tenant.Info{
		"zero ID":        {Tier: tenant.TierStandard},
		"unknown tier":   {ID: acme.ID, Tier: "platinum"},
		"region not DNS": {ID: acme.ID, Tier: tenant.TierStandard, Region: "us east\n1"},
	} {
		for _, g := range []*kube.Group{k.Namespace(), k.Resources(), k.Ingress()} {
			if err := g.Apply(ctx, in); !errors.Is(err, kube.ErrInvalidTenant) {
				t.Errorf("%s: %s.Apply: %v, want ErrInvalidTenant", name, g.Name(), err)
			}
		}
	}
	for _, g := range []*kube.Group{k.Namespace(), k.Resources(), k.Ingress()} {
		if err := g.Remove(ctx, tenant.ID{}); !errors.Is(err, kube.ErrInvalidTenant) {
			t.Errorf("%s.Remove of the zero ID: %v", g.Name(), err)
		}
		if _, err := g.Remains(ctx, tenant.ID{}); !errors.Is(err, kube.ErrInvalidTenant) {
			t.Errorf("%s.Remains of the zero ID: %v", g.Name(), err)
		}
	}
	if n := len(cs.Actions()); n != 0 {
		t.Errorf("%d API calls for invalid tenants: %v", n, cs.Actions())
	}
}

// TestIngressOnlyForEnterprise: for a standard tenant the ingress group
// makes no API call at all.
func TestIngressOnlyForEnterprise(t *testing.T) {
	t.Parallel()
	k, cs := fakeEnv(t, func(c *kube.Config) {
		c.Ingress = &kube.IngressConfig{Name: "dedicated", Host: "{{.DNSLabel}}.rtmx.example", ClassName: "nginx", Service: "web", Port: 80}
	})
	if err := k.Ingress().Apply(t.Context(), acme); err != nil {
		t.Fatal(err)
	}
	if n := len(cs.Actions()); n != 0 {
		t.Errorf("the ingress of a standard tenant made %d API calls", n)
	}
}
