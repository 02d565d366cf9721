package main

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rtmx-ai/tenancy/internal/kubetest"
	"github.com/rtmx-ai/tenancy/lifecycle/kube"
)

// tenantManifest is a tenant-specific resource, templated with the tenant.
const tenantManifest = `apiVersion: v1
kind: ConfigMap
metadata:
  name: rtmx-config
data:
  tenant: "{{.ID}}"
  tier: "{{.Tier}}"
`

// TestKubernetesSteps: with a kubernetes section, provisioning the seed
// tenant makes its namespace (tenant labels, default-deny policy, quota,
// STRICT PeerAuthentication), its manifest and its dedicated ingress on a
// real kube-apiserver, and deprovisioning removes the namespace.
func TestKubernetesSteps(t *testing.T) {
	cluster := kubetest.Shared(t)
	client := cluster.Client(t)
	d := newDev(t)
	manifest := writeFile(t, "rtmx.yaml", tenantManifest)
	f, err := os.OpenFile(d.config, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(`kubernetes:
  kubeconfig: ` + cluster.KubeconfigPath(t) + `
  peer_authentication: true
  allow_from_namespaces: [ingress-nginx]
  manifests: [` + manifest + `]
  ingress: {name: rtmx, host: "{{.DNSLabel}}.dedicated.rtmx.example", class_name: nginx, service: rtmx-api, port: 8080}
`)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	plan := jsonOut[planJSON](t, d.run("provision", "-f", seedRequest, "--dry-run", "--output", "json"))
	var names []string
	for _, s := range plan.Steps {
		names = append(names, s.Step)
	}
	assert.Equal(t, []string{"validate", "placement", "keys", "objects", "namespace", "resources", "routes", "ingress", "audit", "activate"}, names)
	_, err = client.CoreV1().Namespaces().Get(t.Context(), "tenant-abc123", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "a dry run makes no namespace: %v", err)

	r := d.run("provision", "-f", seedRequest)
	require.Equal(t, 0, r.code, "%s", r)
	ns, err := client.CoreV1().Namespaces().Get(t.Context(), "tenant-abc123", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "abc123", ns.Labels[kube.LabelTenant])
	assert.Equal(t, "enterprise", ns.Labels[kube.LabelTier])
	pols, err := client.NetworkingV1().NetworkPolicies("tenant-abc123").List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	var polNames []string
	for _, p := range pols.Items {
		polNames = append(polNames, p.Name)
	}
	assert.Contains(t, polNames, "allow-from-ingress-nginx")
	assert.GreaterOrEqual(t, len(polNames), 2, "default-deny and the allow rules: %v", polNames)
	quotas, err := client.CoreV1().ResourceQuotas("tenant-abc123").List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	assert.NotEmpty(t, quotas.Items)
	cm, err := client.CoreV1().ConfigMaps("tenant-abc123").Get(t.Context(), "rtmx-config", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"tenant": "abc123", "tier": "enterprise"}, cm.Data)
	ing, err := client.NetworkingV1().Ingresses("tenant-abc123").Get(t.Context(), "rtmx", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, ing.Spec.Rules, 1)
	assert.Equal(t, "abc123.dedicated.rtmx.example", ing.Spec.Rules[0].Host)

	r = d.run("deprovision", "abc123")
	require.Equal(t, 0, r.code, "%s", r)
	_, err = client.CoreV1().Namespaces().Get(t.Context(), "tenant-abc123", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the namespace is gone: %v", err)
}
