package kube_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/rtmx-ai/tenancy/internal/kubetest"
	"github.com/rtmx-ai/tenancy/lifecycle/kube"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// webManifest makes a ConfigMap and a Service from the tenant's fields.
const webManifest = `apiVersion: v1
kind: ConfigMap
metadata:
  name: tenant-settings
  namespace: {{.Namespace}}
  labels:
    app: web
data:
  id: {{.ID}}
  label: {{.DNSLabel}}
  tier: {{.Tier}}
  region: {{.Region}}
  name: {{.Name}}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
`

var (
	paGVR = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}
)

// env is a kube.Cluster on the package's real cluster.
type env struct {
	k   *kube.Cluster
	c   kubernetes.Interface
	dyn dynamic.Interface
	cfg kube.Config
}

// newEnv returns a kube.Cluster on the shared cluster with the default
// configuration, PeerAuthentication, the web manifest and a dedicated
// ingress, changed by each of mods.
func newEnv(t testing.TB, mods ...func(*kube.Config)) *env {
	t.Helper()
	kc := kubetest.Shared(t)
	return newEnvOn(t, kc, mods...)
}

func newEnvOn(t testing.TB, kc *kubetest.Cluster, mods ...func(*kube.Config)) *env {
	t.Helper()
	e := &env{c: kc.Client(t), dyn: kc.Dynamic(t)}
	cfg := kube.DefaultConfig(e.c, e.dyn)
	cfg.AllowRules = append(cfg.AllowRules, kube.AllowFromNamespace("allow-from-ingress", "ingress-nginx"))
	cfg.PeerAuthentication = true
	cfg.Manifests = []kube.Manifest{{Name: "web.yaml", Template: webManifest}}
	cfg.Ingress = &kube.IngressConfig{
		Name: "dedicated", Host: "{{.DNSLabel}}.rtmx.example", ClassName: "nginx",
		Service: "web", Port: 80, TLSSecret: "{{.DNSLabel}}-tls",
	}
	cfg.RemoveTimeout = time.Minute
	for _, m := range mods {
		m(&cfg)
	}
	k, err := kube.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.k, e.cfg = k, cfg
	return e
}

// info returns a tenant of tier with a fresh ID (the shared cluster keeps
// every test's namespaces).
func info(t *testing.T, tier tenant.Tier) tenant.Info {
	t.Helper()
	id := fmt.Sprintf("t%s%d", strings.NewReplacer("/", "", "_", "", "-", "").Replace(strings.ToLower(t.Name())), time.Now().UnixNano()%100000)
	if len(id) > tenant.MaxIDLen {
		id = id[:tenant.MaxIDLen-6] + fmt.Sprint(time.Now().UnixNano()%100000)
	}
	return tenant.Info{ID: tenant.MustParseID(id), Name: `Acme "Corp": #1`, Tier: tier, Region: "us-gov-east-1"}
}

func applyAll(t *testing.T, e *env, in tenant.Info) {
	t.Helper()
	for _, g := range []*kube.Group{e.k.Namespace(), e.k.Resources(), e.k.Ingress()} {
		if err := g.Apply(t.Context(), in); err != nil {
			t.Fatalf("%s.Apply: %v", g.Name(), err)
		}
	}
}

func removeAll(t *testing.T, e *env, id tenant.ID) {
	t.Helper()
	for _, g := range []*kube.Group{e.k.Ingress(), e.k.Resources(), e.k.Namespace()} {
		if err := g.Remove(t.Context(), id); err != nil {
			t.Fatalf("%s.Remove: %v", g.Name(), err)
		}
	}
}

func remains(t *testing.T, e *env, id tenant.ID) []string {
	t.Helper()
	var all []string
	for _, g := range []*kube.Group{e.k.Namespace(), e.k.Resources(), e.k.Ingress()} {
		left, err := g.Remains(t.Context(), id)
		if err != nil {
			t.Fatalf("%s.Remains: %v", g.Name(), err)
		}
		all = append(all, left...)
	}
	return all
}

func wantLabels(t *testing.T, what string, got map[string]string, in tenant.Info) {
	t.Helper()
	for k, v := range map[string]string{kube.LabelTenant: in.ID.String(), kube.LabelTier: string(in.Tier), kube.LabelManagedBy: kube.ManagedBy} {
		if got[k] != v {
			t.Errorf("%s: label %s = %q, want %q (labels %v)", what, k, got[k], v, got)
		}
	}
}

// TestApplyCreatesEveryObject applies all three groups for a tenant of each
// tier and checks every object and its labels; quota and limit range are
// the tier's; only the enterprise tenant gets the dedicated ingress.
func TestApplyCreatesEveryObject(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tier := range tenant.Tiers() {
		t.Run(string(tier), func(t *testing.T) {
			t.Parallel()
			in := info(t, tier)
			applyAll(t, e, in)
			ctx := t.Context()
			name := kube.NamespaceName(in.ID)

			ns, err := e.c.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantLabels(t, "Namespace", ns.Labels, in)
			if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
				t.Errorf("namespace labels %v lack the restricted Pod Security Standard", ns.Labels)
			}

			deny, err := e.c.NetworkingV1().NetworkPolicies(name).Get(ctx, kube.DefaultDenyName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantLabels(t, "default-deny", deny.Labels, in)
			if len(deny.Spec.PodSelector.MatchLabels)+len(deny.Spec.PodSelector.MatchExpressions) != 0 ||
				len(deny.Spec.Ingress)+len(deny.Spec.Egress) != 0 ||
				!slices.Equal(deny.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}) {
				t.Errorf("default-deny spec %+v does not deny all ingress and egress of every pod", deny.Spec)
			}
			nps, err := e.c.NetworkingV1().NetworkPolicies(name).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var npNames []string
			for _, np := range nps.Items {
				npNames = append(npNames, np.Name)
				wantLabels(t, "NetworkPolicy "+np.Name, np.Labels, in)
			}
			slices.Sort(npNames)
			if want := []string{"allow-dns-egress", "allow-from-ingress", "allow-within-namespace", "default-deny"}; !slices.Equal(npNames, want) {
				t.Errorf("network policies %v, want %v", npNames, want)
			}
			fromIngress, err := e.c.NetworkingV1().NetworkPolicies(name).Get(ctx, "allow-from-ingress", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := fromIngress.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels[corev1.LabelMetadataName]; got != "ingress-nginx" {
				t.Errorf("allow-from-ingress allows namespace %q, want ingress-nginx", got)
			}

			limits := kube.DefaultLimits(tier)
			quota, err := e.c.CoreV1().ResourceQuotas(name).Get(ctx, kube.QuotaName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantLabels(t, "ResourceQuota", quota.Labels, in)
			for r, q := range limits.Quota.Hard {
				if got := quota.Spec.Hard[r]; got.Cmp(q) != 0 {
					t.Errorf("quota %s = %s, want %s", r, got.String(), q.String())
				}
			}
			lr, err := e.c.CoreV1().LimitRanges(name).Get(ctx, kube.LimitRangeName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantLabels(t, "LimitRange", lr.Labels, in)
			if got, want := lr.Spec.Limits[0].Max[corev1.ResourceMemory], limits.LimitRange.Limits[0].Max[corev1.ResourceMemory]; got.Cmp(want) != 0 {
				t.Errorf("limit range max memory %s, want %s", got.String(), want.String())
			}

			pa, err := e.dyn.Resource(paGVR).Namespace(name).Get(ctx, kube.PeerAuthenticationName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantLabels(t, "PeerAuthentication", pa.GetLabels(), in)
			if mode, _, _ := unstructuredString(pa.Object, "spec", "mtls", "mode"); mode != "STRICT" {
				t.Errorf("PeerAuthentication mtls mode %q, want STRICT", mode)
			}

			cm, err := e.c.CoreV1().ConfigMaps(name).Get(ctx, "tenant-settings", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantLabels(t, "ConfigMap", cm.Labels, in)
			if cm.Labels["app"] != "web" {
				t.Errorf("the manifest's own label app=web was lost: %v", cm.Labels)
			}
			want := map[string]string{"id": in.ID.String(), "label": in.ID.DNSLabel(), "tier": string(tier), "region": in.Region, "name": in.Name}
			if !maps.Equal(cm.Data, want) {
				t.Errorf("templated data %v, want %v", cm.Data, want)
			}
			svc, err := e.c.CoreV1().Services(name).Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantLabels(t, "Service", svc.Labels, in)

			ings, err := e.c.NetworkingV1().Ingresses(name).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tier != tenant.TierEnterprise {
				if len(ings.Items) != 0 {
					t.Fatalf("a %s tenant got %d ingresses, want none", tier, len(ings.Items))
				}
				return
			}
			if len(ings.Items) != 1 {
				t.Fatalf("an enterprise tenant got %d ingresses, want 1", len(ings.Items))
			}
			ing := ings.Items[0]
			wantLabels(t, "Ingress", ing.Labels, in)
			host := in.ID.DNSLabel() + ".rtmx.example"
			if ing.Name != "dedicated" || *ing.Spec.IngressClassName != "nginx" || ing.Spec.Rules[0].Host != host ||
				ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Name != "web" ||
				ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port.Number != 80 ||
				ing.Spec.TLS[0].SecretName != in.ID.DNSLabel()+"-tls" {
				t.Errorf("ingress %s: %+v, want host %s to web:80, class nginx, TLS secret %s-tls", ing.Name, ing.Spec, host, in.ID.DNSLabel())
			}
		})
	}
}

func unstructuredString(obj map[string]any, fields ...string) (string, bool, error) {
	var cur any = obj
	for _, f := range fields {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		cur = m[f]
	}
	s, ok := cur.(string)
	return s, ok, nil
}

// objectVersions returns kind/name -> uid/resourceVersion of every object
// in namespace ns that the groups make.
func objectVersions(t *testing.T, e *env, ns string) map[string]string {
	t.Helper()
	ctx := t.Context()
	out := map[string]string{}
	add := func(kind string, m metav1.Object) {
		out[kind+"/"+m.GetName()] = string(m.GetUID()) + "@" + m.GetResourceVersion()
	}
	n, err := e.c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	add("Namespace", n)
	nps, _ := e.c.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{})
	for i := range nps.Items {
		add("NetworkPolicy", &nps.Items[i])
	}
	qs, _ := e.c.CoreV1().ResourceQuotas(ns).List(ctx, metav1.ListOptions{})
	for i := range qs.Items {
		add("ResourceQuota", &qs.Items[i])
	}
	lrs, _ := e.c.CoreV1().LimitRanges(ns).List(ctx, metav1.ListOptions{})
	for i := range lrs.Items {
		add("LimitRange", &lrs.Items[i])
	}
	cms, _ := e.c.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: kube.LabelManagedBy})
	for i := range cms.Items {
		add("ConfigMap", &cms.Items[i])
	}
	svcs, _ := e.c.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	for i := range svcs.Items {
		add("Service", &svcs.Items[i])
	}
	ings, _ := e.c.NetworkingV1().Ingresses(ns).List(ctx, metav1.ListOptions{})
	for i := range ings.Items {
		add("Ingress", &ings.Items[i])
	}
	pas, _ := e.dyn.Resource(paGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
	for i := range pas.Items {
		add("PeerAuthentication", &pas.Items[i])
	}
	return out
}

// TestApplyAgainConverges applies twice and finds the same objects,
// unchanged; then it converges on drift (a quota someone raised) and on a
// changed configuration (an allow rule dropped, a manifest object
// dropped, PeerAuthentication turned off).
func TestApplyAgainConverges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	in := info(t, tenant.TierEnterprise)
	ns := kube.NamespaceName(in.ID)
	applyAll(t, e, in)
	first := objectVersions(t, e, ns)
	applyAll(t, e, in)
	second := objectVersions(t, e, ns)
	if !maps.Equal(first, second) {
		t.Errorf("a second Apply changed objects:\nfirst  %v\nsecond %v", first, second)
	}
	if len(first) < 10 {
		t.Errorf("only %d objects: %v", len(first), first)
	}

	ctx := t.Context()
	quotas := e.c.CoreV1().ResourceQuotas(ns)
	q, err := quotas.Get(ctx, kube.QuotaName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	q.Spec.Hard[corev1.ResourcePods] = resource.MustParse("100000")
	if _, err := quotas.Update(ctx, q, metav1.UpdateOptions{FieldManager: "someone-else"}); err != nil {
		t.Fatal(err)
	}
	if err := e.k.Namespace().Apply(ctx, in); err != nil {
		t.Fatal(err)
	}
	q, err = quotas.Get(ctx, kube.QuotaName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := q.Spec.Hard[corev1.ResourcePods], kube.DefaultLimits(tenant.TierEnterprise).Quota.Hard[corev1.ResourcePods]; got.Cmp(want) != 0 {
		t.Errorf("after Apply, pods quota %s, want %s again", got.String(), want.String())
	}

	// The configuration changes.
	e2 := newEnvOn(t, kubetest.Shared(t), func(c *kube.Config) {
		c.AllowRules = c.AllowRules[:1]
		c.PeerAuthentication = false
		c.Manifests = []kube.Manifest{{Name: "web.yaml", Template: strings.SplitN(webManifest, "---", 2)[1]}}
	})
	if err := e2.k.Namespace().Apply(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := e2.k.Resources().Apply(ctx, in); err != nil {
		t.Fatal(err)
	}
	now := objectVersions(t, e, ns)
	for _, gone := range []string{"NetworkPolicy/allow-within-namespace", "NetworkPolicy/allow-from-ingress", "PeerAuthentication/default", "ConfigMap/tenant-settings"} {
		if _, ok := now[gone]; ok {
			t.Errorf("%s is no longer configured but still there", gone)
		}
	}
	for _, kept := range []string{"NetworkPolicy/default-deny", "NetworkPolicy/allow-dns-egress", "Service/web", "Ingress/dedicated"} {
		if _, ok := now[kept]; !ok {
			t.Errorf("%s is gone", kept)
		}
	}
}

// TestForeignNamespaceRefused creates the tenant's namespace as someone
// else would (unlabelled, and labelled for another tenant): Check and
// Apply refuse each with ErrForeignNamespace and leave it as it was;
// Remove leaves it alone, and Remains lists it (it may hold what was the
// tenant's, its labels edited), so a deprovisioning cannot call the
// tenant gone while it is there.
func TestForeignNamespaceRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for name, labels := range map[string]map[string]string{
		"unlabelled":     {"owner": "someone"},
		"other-tenant":   {kube.LabelTenant: "other", kube.LabelManagedBy: kube.ManagedBy},
		"not-managed-by": {kube.LabelTenant: "", kube.LabelManagedBy: "someone"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			in := info(t, tenant.TierStandard)
			if name == "not-managed-by" {
				labels[kube.LabelTenant] = in.ID.String()
			}
			nsName := kube.NamespaceName(in.ID)
			before, err := e.c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName, Labels: labels}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.c.CoreV1().ConfigMaps(nsName).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "theirs"}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := e.k.Namespace().Check(ctx, in); !errors.Is(err, kube.ErrForeignNamespace) || !strings.Contains(err.Error(), nsName) {
				t.Fatalf("Namespace().Check: %v, want ErrForeignNamespace naming %s", err, nsName)
			}
			for _, g := range []*kube.Group{e.k.Namespace(), e.k.Resources(), e.k.Ingress()} {
				in := in
				in.Tier = tenant.TierEnterprise // so that Ingress does not skip it
				err := g.Apply(ctx, in)
				if !errors.Is(err, kube.ErrForeignNamespace) {
					t.Fatalf("%s.Apply: %v, want ErrForeignNamespace", g.Name(), err)
				}
				if !strings.Contains(err.Error(), nsName) {
					t.Errorf("%s.Apply: %q does not name the namespace", g.Name(), err)
				}
			}
			after, err := e.c.CoreV1().Namespaces().Get(ctx, nsName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if after.ResourceVersion != before.ResourceVersion || !maps.Equal(after.Labels, before.Labels) {
				t.Errorf("the foreign namespace changed: labels %v -> %v, version %s -> %s", before.Labels, after.Labels, before.ResourceVersion, after.ResourceVersion)
			}
			nps, err := e.c.NetworkingV1().NetworkPolicies(nsName).List(ctx, metav1.ListOptions{})
			if err != nil || len(nps.Items) != 0 {
				t.Errorf("network policies in the foreign namespace: %d, %v", len(nps.Items), err)
			}
			cms, err := e.c.CoreV1().ConfigMaps(nsName).List(ctx, metav1.ListOptions{LabelSelector: kube.LabelManagedBy})
			if err != nil || len(cms.Items) != 0 {
				t.Errorf("tenant config maps in the foreign namespace: %d, %v", len(cms.Items), err)
			}

			removeAll(t, e, in.ID)
			if _, err := e.c.CoreV1().ConfigMaps(nsName).Get(ctx, "theirs", metav1.GetOptions{}); err != nil {
				t.Errorf("Remove touched the foreign namespace: %v", err)
			}
			if left := remains(t, e, in.ID); len(left) != 1 || !strings.HasPrefix(left[0], "Namespace "+nsName) || !strings.Contains(left[0], "not labelled as the tenant's") {
				t.Errorf("Remains: %q, want the foreign namespace, said not to be labelled as the tenant's", left)
			}
		})
	}
}

// TestCheckRefusesAnExistingNamespace: Check passes for a tenant whose
// namespace does not exist, and refuses, with ErrNamespaceExists, one
// labelled as the tenant's that is there already (what an earlier tenant
// of the ID left), changing nothing.
func TestCheckRefusesAnExistingNamespace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	in := info(t, tenant.TierStandard)
	for _, g := range []*kube.Group{e.k.Namespace(), e.k.Resources(), e.k.Ingress()} {
		if err := g.Check(ctx, in); err != nil {
			t.Fatalf("%s.Check of a new tenant: %v", g.Name(), err)
		}
	}
	applyAll(t, e, in)
	before := objectVersions(t, e, kube.NamespaceName(in.ID))
	err := e.k.Namespace().Check(ctx, in)
	if !errors.Is(err, kube.ErrNamespaceExists) || !strings.Contains(err.Error(), kube.NamespaceName(in.ID)) {
		t.Fatalf("Check with the tenant's namespace there: %v, want ErrNamespaceExists naming it", err)
	}
	if after := objectVersions(t, e, kube.NamespaceName(in.ID)); !maps.Equal(before, after) {
		t.Errorf("Check changed objects: %v -> %v", before, after)
	}
	if err := e.k.Namespace().Check(ctx, tenant.Info{}); !errors.Is(err, kube.ErrInvalidTenant) {
		t.Errorf("Check of the zero Info: %v, want ErrInvalidTenant", err)
	}
	removeAll(t, e, in.ID)
}

// TestManifestAimedOutsideRefused: a cluster-scoped kind is refused at
// Apply (the cluster says it is cluster-scoped) before anything is
// written; a manifest naming kube-system is refused by New.
func TestManifestAimedOutsideRefused(t *testing.T) {
	t.Parallel()
	crb := `apiVersion: v1
kind: ConfigMap
metadata:
  name: first
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{.DNSLabel}}-admin
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cluster-admin
subjects:
- kind: ServiceAccount
  name: default
  namespace: {{.Namespace}}
`
	e := newEnv(t, func(c *kube.Config) { c.Manifests = []kube.Manifest{{Name: "crb.yaml", Template: crb}} })
	in := info(t, tenant.TierStandard)
	ctx := t.Context()
	if err := e.k.Namespace().Apply(ctx, in); err != nil {
		t.Fatal(err)
	}
	err := e.k.Resources().Apply(ctx, in)
	if !errors.Is(err, kube.ErrInvalidConfig) || !strings.Contains(err.Error(), `Manifests[0] ("crb.yaml") document 2 (ClusterRoleBinding)`) || !strings.Contains(err.Error(), "cluster-scoped") {
		t.Fatalf("Apply of a ClusterRoleBinding: %v, want ErrInvalidConfig naming the manifest, document and rule", err)
	}
	if _, err := e.c.RbacV1().ClusterRoleBindings().Get(ctx, in.ID.DNSLabel()+"-admin", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the ClusterRoleBinding exists: %v", err)
	}
	if _, err := e.c.CoreV1().ConfigMaps(kube.NamespaceName(in.ID)).Get(ctx, "first", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the ConfigMap before it was written: %v", err)
	}

	kc := kubetest.Shared(t)
	cfg := kube.DefaultConfig(kc.Client(t), kc.Dynamic(t))
	cfg.Manifests = []kube.Manifest{{Name: "evil.yaml", Template: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: kube-system\n"}}
	if _, err := kube.New(cfg); !errors.Is(err, kube.ErrInvalidConfig) || !strings.Contains(err.Error(), `"kube-system" is not the tenant namespace`) {
		t.Fatalf("New with a manifest in kube-system: %v", err)
	}
}

// TestRemoveRemovesEverything applies everything for a tenant of each
// tier, removes it, and finds nothing left, in Remains and in the cluster.
func TestRemoveRemovesEverything(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tier := range tenant.Tiers() {
		t.Run(string(tier), func(t *testing.T) {
			t.Parallel()
			in := info(t, tier)
			applyAll(t, e, in)
			left := remains(t, e, in.ID)
			// namespace, 4 policies, quota, limit range, PA, config map, service (+ ingress)
			want := 10
			if tier == tenant.TierEnterprise {
				want++
			}
			if len(left) != want {
				t.Errorf("before Remove, Remains lists %d objects, want %d: %v", len(left), want, left)
			}
			removeAll(t, e, in.ID)
			if left := remains(t, e, in.ID); len(left) != 0 {
				t.Fatalf("after Remove, Remains: %v", left)
			}
			if _, err := e.c.CoreV1().Namespaces().Get(t.Context(), kube.NamespaceName(in.ID), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Fatalf("the namespace is still there: %v", err)
			}
			removeAll(t, e, in.ID) // again: nothing to do
		})
	}
}

// TestAPIServerDown stops the API server of a private cluster: every
// operation fails with an error naming it and the tenant, and works again
// once the server is back.
func TestAPIServerDown(t *testing.T) {
	t.Parallel()
	kc := kubetest.Start(t, kubetest.Options{})
	e := newEnvOn(t, kc, func(c *kube.Config) { c.RemoveTimeout = 5 * time.Second })
	in := info(t, tenant.TierEnterprise)
	ctx := t.Context()
	if err := e.k.Namespace().Apply(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := kc.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	for _, g := range []*kube.Group{e.k.Namespace(), e.k.Resources(), e.k.Ingress()} {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := g.Apply(ctx, in)
		cancel()
		want := "kube: apply " + g.Name() + " of tenant " + in.ID.String() + ": "
		if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("%s.Apply with the API server down: %v, want %q ... connection refused", g.Name(), err, want)
		}
		err = g.Remove(ctx, in.ID)
		if err == nil || !strings.HasPrefix(err.Error(), "kube: remove "+g.Name()) {
			t.Errorf("%s.Remove with the API server down: %v", g.Name(), err)
		}
		if _, err := g.Remains(ctx, in.ID); err == nil || !strings.HasPrefix(err.Error(), "kube: list remains of "+g.Name()) {
			t.Errorf("%s.Remains with the API server down: %v", g.Name(), err)
		}
	}
	if err := kc.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	if err := e.k.Namespace().Apply(ctx, in); err != nil {
		t.Fatalf("Apply once the server is back: %v", err)
	}
	if err := e.k.Resources().Apply(ctx, in); err != nil {
		t.Fatalf("Apply once the server is back: %v", err)
	}
}

// TestWidenedDefaultDenyReplaced widens the default-deny policy as another
// field manager would (an ingress rule that an apply leaves alone): Apply
// puts the deny-all policy back.
func TestWidenedDefaultDenyReplaced(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	in := info(t, tenant.TierStandard)
	ctx := t.Context()
	if err := e.k.Namespace().Apply(ctx, in); err != nil {
		t.Fatal(err)
	}
	nps := e.c.NetworkingV1().NetworkPolicies(kube.NamespaceName(in.ID))
	np, err := nps.Get(ctx, kube.DefaultDenyName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{}} // allow all ingress
	if _, err := nps.Update(ctx, np, metav1.UpdateOptions{FieldManager: "intruder"}); err != nil {
		t.Fatal(err)
	}
	if err := e.k.Namespace().Apply(ctx, in); err != nil {
		t.Fatal(err)
	}
	np, err = nps.Get(ctx, kube.DefaultDenyName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(np.Spec.Ingress) != 0 || len(np.Spec.Egress) != 0 {
		t.Fatalf("default-deny after Apply: %+v, want no rules", np.Spec)
	}
}

// TestPeerAuthenticationOff: without PeerAuthentication configured, none
// is made.
func TestPeerAuthenticationOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *kube.Config) { c.PeerAuthentication = false })
	in := info(t, tenant.TierGovernment)
	if err := e.k.Namespace().Apply(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	_, err := e.dyn.Resource(paGVR).Namespace(kube.NamespaceName(in.ID)).Get(t.Context(), kube.PeerAuthenticationName, metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("PeerAuthentication without the option: %v, want not found", err)
	}
}

// TestResourcesNeedNamespace: Resources and Ingress refuse to run before
// the namespace group.
func TestResourcesNeedNamespace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	in := info(t, tenant.TierEnterprise)
	for _, g := range []*kube.Group{e.k.Resources(), e.k.Ingress()} {
		if err := g.Apply(t.Context(), in); !errors.Is(err, kube.ErrNamespaceNotReady) {
			t.Errorf("%s.Apply before the namespace: %v, want ErrNamespaceNotReady", g.Name(), err)
		}
	}
}

// TestNameCannotInjectYAML gives the tenant a display name that would add
// a namespace and more keys if it were pasted into the YAML: it stays one
// string.
func TestNameCannotInjectYAML(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	in := info(t, tenant.TierStandard)
	in.Name = "x\n  namespace: kube-system\nkind: ClusterRoleBinding\n---\napiVersion: v1\nkind: Secret"
	applyAll(t, e, in)
	cm, err := e.c.CoreV1().ConfigMaps(kube.NamespaceName(in.ID)).Get(t.Context(), "tenant-settings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["name"] != in.Name {
		t.Fatalf("name = %q, want the display name verbatim %q", cm.Data["name"], in.Name)
	}
}

// TestWithoutControllerManager runs on a private cluster with no
// controller manager, where a deleted namespace stays Terminating: Remove
// gives up after RemoveTimeout with ErrNotRemoved naming it, and Remains
// lists it. Then the Istio CRD is removed: Apply with PeerAuthentication
// says the API is not served.
func TestWithoutControllerManager(t *testing.T) {
	t.Parallel()
	kc := kubetest.Start(t, kubetest.Options{})
	e := newEnvOn(t, kc, func(c *kube.Config) { c.RemoveTimeout = 2 * time.Second })
	ctx := t.Context()

	in := info(t, tenant.TierStandard)
	if err := e.k.Namespace().Apply(ctx, in); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err := e.k.Namespace().Remove(ctx, in.ID)
	if !errors.Is(err, kube.ErrNotRemoved) || !strings.Contains(err.Error(), "Namespace "+kube.NamespaceName(in.ID)+" (Terminating)") {
		t.Fatalf("Remove: %v, want ErrNotRemoved naming the Terminating namespace", err)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("Remove took %v with a RemoveTimeout of 2s", d)
	}
	left, err := e.k.Namespace().Remains(ctx, in.ID)
	if err != nil || len(left) == 0 || !strings.Contains(left[0], "(Terminating)") {
		t.Fatalf("Remains: %v, %v; want the Terminating namespace", left, err)
	}
	if err := e.k.Namespace().Apply(ctx, in); !errors.Is(err, kube.ErrNamespaceNotReady) {
		t.Fatalf("Apply while the namespace is being deleted: %v, want ErrNamespaceNotReady", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := e.k.Namespace().Remove(cctx, in.ID); !errors.Is(err, context.Canceled) {
		t.Fatalf("Remove with a cancelled context: %v, want context.Canceled", err)
	}

	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if err := e.dyn.Resource(crds).Delete(ctx, "peerauthentications.security.istio.io", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := e.dyn.Resource(paGVR).Namespace("default").List(ctx, metav1.ListOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	other := info(t, tenant.TierStandard)
	err = e.k.Namespace().Apply(ctx, other)
	if err == nil || !strings.Contains(err.Error(), "the cluster does not serve security.istio.io/v1 (is Istio installed?)") {
		t.Fatalf("Apply with PeerAuthentication and no Istio: %v", err)
	}
}

// TestAPIServerRefuses runs as an identity RBAC lets create namespaces
// and quotas but not network policies: Apply fails at the first network
// policy with the server's Forbidden, wrapped with the operation and the
// object; Remove (as the administrator, as a compensation would) removes
// what it made, and Remains is empty.
func TestAPIServerRefuses(t *testing.T) {
	t.Parallel()
	kc := kubetest.Shared(t)
	admin := kc.Client(t)
	ctx := t.Context()
	user := "limited-" + fmt.Sprint(time.Now().UnixNano())
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"namespaces", "resourcequotas", "limitranges"},
			Verbs: []string{"get", "list", "create", "patch", "update", "delete"},
		}},
	}
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: user},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}},
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := kc.Config()
	cfg.Impersonate.UserName = user
	limited, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	limitedDyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	kcfg := kube.DefaultConfig(limited, limitedDyn)
	k, err := kube.New(kcfg)
	if err != nil {
		t.Fatal(err)
	}
	in := info(t, tenant.TierStandard)
	ns := kube.NamespaceName(in.ID)
	// RBAC caches bindings briefly: wait until the namespace can be made.
	for {
		err = k.Namespace().Apply(ctx, in)
		if _, gerr := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); gerr == nil {
			break
		}
		if !apierrors.IsForbidden(err) {
			t.Fatalf("Apply: %v, want Forbidden", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	want := "kube: apply namespace of tenant " + in.ID.String() + ": apply NetworkPolicy " + ns + "/default-deny: "
	if !apierrors.IsForbidden(err) || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("Apply: %v, want Forbidden, starting %q", err, want)
	}

	e := newEnvOn(t, kc)
	if left := remains(t, e, in.ID); len(left) == 0 {
		t.Fatal("Remains lists nothing of the half-made namespace")
	}
	removeAll(t, e, in.ID)
	if left := remains(t, e, in.ID); len(left) != 0 {
		t.Fatalf("after Remove, Remains: %v", left)
	}
}
