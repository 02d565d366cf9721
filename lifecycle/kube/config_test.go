package kube_test

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rtmx-ai/tenancy/lifecycle/kube"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestNewRefusesHostileConfig gives New one bad field at a time: each is
// refused with ErrInvalidConfig, naming the field and the rule.
func TestNewRefusesHostileConfig(t *testing.T) {
	t.Parallel()
	cm := func(meta string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n" + meta
	}
	ingress := func(mod func(*kube.IngressConfig)) func(*kube.Config) {
		return func(c *kube.Config) {
			ic := kube.IngressConfig{Name: "dedicated", Host: "{{.DNSLabel}}.rtmx.example", ClassName: "nginx", Service: "web", Port: 80}
			mod(&ic)
			c.Ingress = &ic
		}
	}
	manifest := func(tmpl string) func(*kube.Config) {
		return func(c *kube.Config) { c.Manifests = []kube.Manifest{{Name: "m.yaml", Template: tmpl}} }
	}
	for _, tc := range []struct {
		name string
		mod  func(*kube.Config)
		want string // in the message
	}{
		{"no client", func(c *kube.Config) { c.Client = nil }, "Client: is required"},
		{"no dynamic client", func(c *kube.Config) { c.Dynamic = nil }, "Dynamic: is required"},
		{"no field manager", func(c *kube.Config) { c.FieldManager = "" }, "FieldManager: is required"},
		{"field manager with a newline", func(c *kube.Config) { c.FieldManager = "a\nb" }, "FieldManager: must be printable ASCII"},
		{"no remove timeout", func(c *kube.Config) { c.RemoveTimeout = 0 }, "RemoveTimeout: must be positive"},
		{"namespace label of tenancy's", func(c *kube.Config) { c.NamespaceLabels = map[string]string{kube.LabelTenant: "other"} }, `NamespaceLabels["tenancy.rtmx.ai/tenant"]: keys under tenancy.rtmx.ai/ are set by tenancy`},
		{"namespace label bad value", func(c *kube.Config) { c.NamespaceLabels = map[string]string{"a": "b c"} }, `NamespaceLabels["a"]: value`},
		{"allow rule named default-deny", func(c *kube.Config) { c.AllowRules[0].Name = kube.DefaultDenyName }, "AllowRules[0].Name: must not be default-deny"},
		{"allow rules with one name", func(c *kube.Config) { c.AllowRules[1].Name = c.AllowRules[0].Name }, "AllowRules[1].Name: \"allow-dns-egress\" is used by another rule"},
		{"allow rule bad name", func(c *kube.Config) { c.AllowRules[0].Name = "Bad_Name" }, "AllowRules[0].Name: a lowercase RFC 1123 subdomain"},
		{"allow rule without policy types", func(c *kube.Config) { c.AllowRules[0].Spec.PolicyTypes = nil }, "AllowRules[0].Spec.PolicyTypes: must name Ingress, Egress or both"},
		{"allow rule bad policy type", func(c *kube.Config) {
			c.AllowRules[0].Spec.PolicyTypes = []networkingv1.PolicyType{"Sideways"}
		}, `AllowRules[0].Spec.PolicyTypes: "Sideways" is neither`},
		{"tier without limits", func(c *kube.Config) { delete(c.Limits, tenant.TierGovernment) }, "Limits[government]: is required for every tier"},
		{"empty quota", func(c *kube.Config) {
			l := c.Limits[tenant.TierStandard]
			l.Quota.Hard = nil
			c.Limits[tenant.TierStandard] = l
		}, "Limits[standard].Quota.Hard: must not be empty"},
		{"negative quota", func(c *kube.Config) {
			l := kube.DefaultLimits(tenant.TierStandard)
			l.Quota.Hard[corev1.ResourcePods] = resource.MustParse("-1")
			c.Limits[tenant.TierStandard] = l
		}, "Limits[standard].Quota.Hard[pods]: must not be negative"},
		{"limits of no tier", func(c *kube.Config) { c.Limits["platinum"] = kube.DefaultLimits(tenant.TierStandard) }, `Limits["platinum"]: is not a tier`},
		{"manifest without a name", func(c *kube.Config) { c.Manifests = []kube.Manifest{{Template: cm("  name: x\n")}} }, "Manifests[0].Name: is required"},
		{"manifests with one name", func(c *kube.Config) {
			c.Manifests = []kube.Manifest{{Name: "a", Template: cm("  name: x\n")}, {Name: "a", Template: cm("  name: y\n")}}
		}, `Manifests[1] ("a").Name: is used by another manifest`},
		{"template that does not parse", manifest("{{.ID"), `Manifests[0] ("m.yaml").Template: template: m.yaml:1: unclosed action`},
		{"template of an unknown field", manifest(cm("  name: {{.Password}}\n")), `can't evaluate field Password`},
		{"template that calls a function it lacks", manifest(cm("  name: {{env \"HOME\"}}\n")), `function "env" not defined`},
		{"not YAML", manifest("a: [b"), `Manifests[0] ("m.yaml") document 1: not YAML of an object`},
		{"YAML that is not an object", manifest("- a\n- b\n"), `Manifests[0] ("m.yaml") document 1: not YAML of an object`},
		{"no kind", manifest("apiVersion: v1\nmetadata:\n  name: x\n"), "document 1: apiVersion and kind are required"},
		{"no name", manifest(cm("  labels: {a: b}\n")), "document 1 (ConfigMap): metadata.name is required"},
		{"generateName", manifest(cm("  generateName: x-\n")), "metadata.generateName is not taken"},
		{"namespace kube-system", manifest(cm("  name: x\n  namespace: kube-system\n")), `document 1 (ConfigMap): metadata.namespace "kube-system" is not the tenant namespace tenant-sample`},
		{"namespace of another tenant", manifest(cm("  name: x\n  namespace: tenant-{{.DNSLabel}}x\n")), `metadata.namespace "tenant-samplex" is not the tenant namespace`},
		{"a Namespace", manifest("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: evil\n"), "a Namespace is cluster-scoped"},
		{"a list", manifest("apiVersion: v1\nkind: List\nitems: []\n"), "lists are not taken"},
		{"a second default-deny", manifest("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: default-deny\nspec:\n  podSelector: {}\n  ingress: [{}]\n"),
			"NetworkPolicy default-deny is one of the objects tenancy makes"},
		{"an allow rule's name", manifest("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: allow-dns-egress\n"), "NetworkPolicy allow-dns-egress is one of the objects"},
		{"a NetworkPolicy of the tenant's own", manifest("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: allow-all\nspec:\n  podSelector: {}\n  ingress: [{}]\n"),
			"a NetworkPolicy is not taken in a manifest: network rules are Config.AllowRules"},
		{"an allow rule from every source", func(c *kube.Config) {
			c.AllowRules = append(c.AllowRules, kube.AllowRule{Name: "open", Spec: networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress:     []networkingv1.NetworkPolicyIngressRule{{}},
			}})
		}, "AllowRules[2].Spec.Ingress[0].From: must name its sources: an empty list admits every pod of every namespace"},
		{"an allow rule from every namespace", func(c *kube.Config) {
			c.AllowRules = append(c.AllowRules, kube.AllowRule{Name: "open", Spec: networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{}},
					{NamespaceSelector: &metav1.LabelSelector{}},
				}}},
			}})
		}, "AllowRules[2].Spec.Ingress[0].From[1].NamespaceSelector: must select namespaces: an empty selector admits every namespace, other tenants' too"},
		{"an allow rule from an IP block", func(c *kube.Config) {
			c.AllowRules = append(c.AllowRules, kube.AllowRule{Name: "open", Spec: networkingv1.NetworkPolicySpec{
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}},
				}}},
			}})
		}, "AllowRules[2].Spec.Ingress[0].From[0].IPBlock: is not taken: an IP block may hold other tenants' pods"},
		{"the quota's name", manifest("apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: tenant-quota\n"), "ResourceQuota tenant-quota is one of the objects"},
		{"a tenancy label", manifest(cm("  name: x\n  labels:\n    tenancy.rtmx.ai/tenant: other\n")), "label tenancy.rtmx.ai/tenant: labels under tenancy.rtmx.ai/ are set by tenancy"},
		{"one object twice", manifest(cm("  name: x\n") + "---\n" + cm("  name: x\n")), `document 2 (ConfigMap): ConfigMap x is made by Manifests[0] ("m.yaml") document 1 (ConfigMap) too`},
		{"a kind for one tier only", manifest(cm("  name: x\n") + "{{if eq .Tier \"government\"}}---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: yy\n{{end}}"), ""},
		{"a name YAML reads as a boolean", manifest(cm("  name: y\n")), "metadata.name must be a string, not true"},
		{"a namespace YAML reads as a number", manifest(cm("  name: x\n  namespace: 12\n")), "metadata.namespace must be a string, not 12"},
		{"ingress without a host", ingress(func(ic *kube.IngressConfig) { ic.Host = "" }), "Ingress.Host: is required"},
		{"ingress host of every tenant", ingress(func(ic *kube.IngressConfig) { ic.Host = "app.rtmx.example" }), "Ingress.Host: must differ from tenant to tenant"},
		{"ingress host of a tier", ingress(func(ic *kube.IngressConfig) { ic.Host = "{{.Tier}}.rtmx.example" }), "Ingress.Host: must differ from tenant to tenant (use {{.DNSLabel}}): tenants sample and sample1 of one tier and region both get"},
		{"ingress host of a region", ingress(func(ic *kube.IngressConfig) { ic.Host = "{{.Region}}.rtmx.example" }), "Ingress.Host: must differ from tenant to tenant"},
		{"ingress host of an ID's first letter", ingress(func(ic *kube.IngressConfig) { ic.Host = "{{slice .DNSLabel 0 1}}.rtmx.example" }), "tenants sample and sample1 of one tier and region both get \"s.rtmx.example\""},
		{"ingress wildcard host", ingress(func(ic *kube.IngressConfig) { ic.Host = "*.{{.DNSLabel}}.rtmx.example" }), "a wildcard host is not taken"},
		{"ingress host with the name", ingress(func(ic *kube.IngressConfig) { ic.Host = "{{.Name}}.rtmx.example" }), "Ingress.Host: for a sample tenant: host"},
		{"ingress host template", ingress(func(ic *kube.IngressConfig) { ic.Host = "{{.Nope}}" }), "Ingress.Host: template: Ingress.Host:1:2: executing"},
		{"ingress bad port", ingress(func(ic *kube.IngressConfig) { ic.Port = 0 }), "Ingress.Port: must be a port number"},
		{"ingress bad service", ingress(func(ic *kube.IngressConfig) { ic.Service = "Web" }), "Ingress.Service:"},
		{"ingress bad class", ingress(func(ic *kube.IngressConfig) { ic.ClassName = "" }), "Ingress.ClassName:"},
		{"ingress bad TLS secret", ingress(func(ic *kube.IngressConfig) { ic.TLSSecret = "{{.ID}}_tls" }), `Ingress.TLSSecret: for a sample tenant, "sample_tls"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := kube.DefaultConfig(fake.NewClientset(), dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()))
			tc.mod(&cfg)
			_, err := kube.New(cfg)
			if tc.want == "" {
				// A kind for one tier only is New's to accept and Apply's
				// to refuse (TestKindForOneTenantOnlyRefused).
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if !errors.Is(err, kube.ErrInvalidConfig) {
				t.Fatalf("New: %v, want ErrInvalidConfig", err)
			}
			if !strings.HasPrefix(err.Error(), "kube: invalid configuration: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %q, want it to say %q", err, tc.want)
			}
		})
	}
}

// TestNewReportsEveryProblem: several bad fields give one error naming
// each.
func TestNewReportsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := kube.New(kube.Config{})
	if !errors.Is(err, kube.ErrInvalidConfig) {
		t.Fatalf("New of the zero Config: %v", err)
	}
	for _, want := range []string{"Client: is required", "Dynamic: is required", "FieldManager: is required", "RemoveTimeout: must be positive",
		"Limits[standard]: is required", "Limits[enterprise]: is required", "Limits[government]: is required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}

// TestDefaultLimitsGrowByTier: every quota of the default limits is larger
// for enterprise than for standard, and for government than enterprise,
// save those that are zero for every tier.
func TestDefaultLimitsGrowByTier(t *testing.T) {
	t.Parallel()
	tiers := tenant.Tiers()
	for i := 1; i < len(tiers); i++ {
		lo, hi := kube.DefaultLimits(tiers[i-1]), kube.DefaultLimits(tiers[i])
		for r, q := range lo.Quota.Hard {
			h := hi.Quota.Hard[r]
			if q.IsZero() && h.IsZero() {
				continue
			}
			if h.Cmp(q) <= 0 {
				t.Errorf("%s quota %s = %s, not above %s's %s", tiers[i], r, h.String(), tiers[i-1], q.String())
			}
		}
		for r, q := range lo.LimitRange.Limits[0].Max {
			if h := hi.LimitRange.Limits[0].Max[r]; h.Cmp(q) <= 0 {
				t.Errorf("%s container max %s = %s, not above %s's %s", tiers[i], r, h.String(), tiers[i-1], q.String())
			}
		}
	}
	if l := kube.DefaultLimits("platinum"); len(l.Quota.Hard) != 0 {
		t.Errorf("DefaultLimits of no tier: %v, want the zero Limits", l)
	}
}

func TestNamespaceName(t *testing.T) {
	t.Parallel()
	if got := kube.NamespaceName(tenant.MustParseID("acme_corp")); got != "tenant-acme-corp" {
		t.Errorf("NamespaceName(acme_corp) = %q", got)
	}
	if got := kube.NamespaceName(tenant.ID{}); got != "" {
		t.Errorf("NamespaceName of the zero ID = %q, want \"\"", got)
	}
}
