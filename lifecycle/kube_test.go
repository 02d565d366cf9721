package lifecycle_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rtmx-ai/tenancy/internal/kubetest"
	"github.com/rtmx-ai/tenancy/lifecycle"
	"github.com/rtmx-ai/tenancy/lifecycle/kube"
	"github.com/rtmx-ai/tenancy/tenant"
)

func (e *env) kubeClients(t testing.TB) (kubernetes.Interface, dynamic.Interface) {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", e.spec.Kubeconfig)
	require.NoError(t, err)
	c, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	d, err := dynamic.NewForConfig(rc)
	require.NoError(t, err)
	return c, d
}

// assertNamespace checks, on the API server, the namespace of tenant id
// and every object provisioning puts in it.
func (e *env) assertNamespace(t testing.TB, id tenant.ID, tier tenant.Tier) {
	t.Helper()
	ctx := t.Context()
	c, d := e.kubeClients(t)
	name := kube.NamespaceName(id)
	ns, err := c.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err, "namespace %s", name)
	assert.Equal(t, "tenant-"+id.DNSLabel(), name)
	assert.Equal(t, id.String(), ns.Labels["tenancy.rtmx.ai/tenant"])
	assert.Equal(t, string(tier), ns.Labels["tenancy.rtmx.ai/tier"])

	pols, err := c.NetworkingV1().NetworkPolicies(name).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	var deny bool
	for _, p := range pols.Items {
		if len(p.Spec.PodSelector.MatchLabels) == 0 && len(p.Spec.PodSelector.MatchExpressions) == 0 &&
			len(p.Spec.Ingress) == 0 && len(p.Spec.Egress) == 0 && len(p.Spec.PolicyTypes) == 2 {
			deny = true
		}
	}
	assert.True(t, deny, "a default-deny NetworkPolicy (ingress and egress, every pod): %d policies", len(pols.Items))
	assert.Greater(t, len(pols.Items), 1, "and the platform's allow rules")

	quotas, err := c.CoreV1().ResourceQuotas(name).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, quotas.Items, 1, "a ResourceQuota")
	limits, err := c.CoreV1().LimitRanges(name).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, limits.Items, 1, "a LimitRange")

	pa, err := d.Resource(schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}).
		Namespace(name).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, pa.Items, 1, "an Istio PeerAuthentication")
	mode, _, _ := unstructuredString(pa.Items[0].Object, "spec", "mtls", "mode")
	assert.Equal(t, "STRICT", mode)

	cm, err := c.CoreV1().ConfigMaps(name).Get(ctx, "rtmx-config", metav1.GetOptions{})
	require.NoError(t, err, "the tenant's manifest")
	assert.Equal(t, id.String(), cm.Data["tenant"])

	ings, err := c.NetworkingV1().Ingresses(name).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	if tier == tenant.TierEnterprise {
		require.Len(t, ings.Items, 1, "the enterprise tier's dedicated ingress")
		assert.Equal(t, id.DNSLabel()+".dedicated.rtmx.example", ings.Items[0].Spec.Rules[0].Host)
	} else {
		assert.Empty(t, ings.Items, "no dedicated ingress for the %s tier", tier)
	}
}

func unstructuredString(obj map[string]any, path ...string) (string, bool, error) {
	cur := any(obj)
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		cur = m[p]
	}
	s, ok := cur.(string)
	return s, ok, nil
}

// TestForeignNamespaceIsRefused: a namespace of the tenant's name that
// someone else made refuses the provisioning before anything is made
// (ErrRefused, naming the namespace): no tenant, no run, and the namespace
// left alone.
func TestForeignNamespaceIsRefused(t *testing.T) {
	e := newEnv(t, withKube())
	req := request(t, "nokube", tenant.TierStandard)
	c, _ := e.kubeClients(t)
	ns, err := c.CoreV1().Namespaces().Create(t.Context(), namespaceNamed(kube.NamespaceName(req.ID)), metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = e.lc.Provision(t.Context(), req)
	require.ErrorIs(t, err, lifecycle.ErrRefused)
	require.ErrorIs(t, err, kube.ErrForeignNamespace)
	assert.Contains(t, err.Error(), "step namespace: ")
	assert.Contains(t, err.Error(), kube.NamespaceName(req.ID))
	_, err = e.admin.Tenant(t.Context(), req.ID)
	assert.ErrorIs(t, err, lifecycle.ErrUnknownTenant)
	runs, err := e.lc.Runs(t.Context(), req.ID)
	require.NoError(t, err)
	assert.Empty(t, runs)
	after, err := c.CoreV1().Namespaces().Get(t.Context(), kube.NamespaceName(req.ID), metav1.GetOptions{})
	require.NoError(t, err, "the foreign namespace is left alone")
	assert.Equal(t, ns.ResourceVersion, after.ResourceVersion)
}

func namespaceNamed(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// TestKubernetesDownCompensatesOnResume: with the API server stopped, the
// namespace step fails and so does undoing it (the API server is still
// down): the run stays compensating, with the placement and keys removed
// so far journaled. Once the API server is back, Resume finishes the
// compensation: the tenant is failed and nothing of it remains.
func TestKubernetesDownCompensatesOnResume(t *testing.T) {
	e := newEnv(t, withKube())
	cluster := kubetest.Shared(t)
	require.NoError(t, cluster.StopAPIServer())
	t.Cleanup(func() { _ = cluster.StartAPIServer() })
	req := request(t, "kubedown", tenant.TierStandard)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	run, err := e.lc.Provision(ctx, req)
	var re *lifecycle.RunError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "namespace", re.Step)
	assert.False(t, re.Compensated)
	require.Error(t, re.CompensationErr)
	assert.Contains(t, err.Error(), "tenantctl resume "+req.ID.String())
	assert.Equal(t, lifecycle.RunCompensating, run.State)

	require.NoError(t, cluster.StartAPIServer())
	run, err = e.lc.Resume(t.Context(), req.ID)
	require.ErrorAs(t, err, &re)
	assert.True(t, re.Compensated, "%v", err)
	assert.Equal(t, lifecycle.RunFailed, run.State)
	info, err := e.admin.Tenant(t.Context(), req.ID)
	require.NoError(t, err)
	assert.Equal(t, tenant.StateFailed, info.State)
	assert.Empty(t, e.remains(t, req.ID))
}

// TestAPIServerRefusingCompensates: the API server refuses the namespace
// step (its identity may make namespaces, quotas and limit ranges but not
// network policies, by RBAC): provisioning fails at that step with the
// server's Forbidden, removes the half-made namespace and everything
// before it, and leaves the tenant failed with nothing of it remaining.
func TestAPIServerRefusingCompensates(t *testing.T) {
	e := newEnv(t, withKube())
	ctx := t.Context()
	cluster := kubetest.Shared(t)
	admin := cluster.Client(t)
	user := "lifecycle-limited-" + tenantSuffix()
	_, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces", "resourcequotas", "limitranges"},
			Verbs: []string{"get", "list", "create", "patch", "update", "delete"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: user},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	rc := cluster.Config()
	rc.Impersonate.UserName = user
	client, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(rc)
	require.NoError(t, err)
	limited, err := kube.New(kube.DefaultConfig(client, dyn))
	require.NoError(t, err)
	steps := []lifecycle.Step{e.steps[0], e.steps[1], &lifecycle.KubeStep{Group: limited.Namespace()}}
	lc, err := lifecycle.New(ctx, lifecycle.Config{Admin: e.admin, Steps: steps})
	require.NoError(t, err)

	// RBAC takes a moment to see a new binding: until then the namespace
	// itself is refused. Either way the step fails and is compensated.
	var forbiddenAtPolicy bool
	for range 50 {
		req := request(t, "refused", tenant.TierStandard)
		run, err := lc.Provision(ctx, req)
		var re *lifecycle.RunError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, "namespace", re.Step)
		assert.True(t, apierrors.IsForbidden(re.Err) || strings.Contains(re.Err.Error(), "forbidden"), "the server's refusal: %v", re.Err)
		assert.True(t, re.Compensated, "%v", err)
		assert.Equal(t, lifecycle.RunFailed, run.State)
		info, err := e.admin.Tenant(ctx, req.ID)
		require.NoError(t, err)
		assert.Equal(t, tenant.StateFailed, info.State)
		left := []string{}
		for _, s := range steps {
			r, err := s.Remains(ctx, &lifecycle.Target{Info: tenant.Info{ID: req.ID}})
			require.NoError(t, err)
			left = append(left, r...)
		}
		assert.Empty(t, left, "nothing of the tenant remains")
		_, err = admin.CoreV1().Namespaces().Get(ctx, kube.NamespaceName(req.ID), metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "no namespace left: %v", err)
		if strings.Contains(re.Err.Error(), "NetworkPolicy") {
			forbiddenAtPolicy = true // the namespace was made, then undone
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	assert.True(t, forbiddenAtPolicy, "the API server refused a network policy after the namespace was made")
}
