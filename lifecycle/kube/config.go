package kube

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Config configures a [Cluster]. Start from [DefaultConfig]: a zero field
// is not a default, and [New] refuses a Config that leaves a required field
// empty (the one exception is Logger, where nil means discard).
type Config struct {
	// Client is the typed client for the cluster: namespaces, network
	// policies, quotas, limit ranges, ingresses, and discovery of the
	// kinds a manifest names. Required.
	Client kubernetes.Interface
	// Dynamic is the dynamic client for the same cluster: the Istio
	// PeerAuthentication and the objects of Manifests. Required.
	Dynamic dynamic.Interface

	// FieldManager is the server-side apply field manager of every object
	// tenancy writes. Required; DefaultConfig sets DefaultFieldManager.
	FieldManager string

	// NamespaceLabels are labels put on the tenant namespace besides the
	// tenant labels ([LabelTenant], [LabelTier], [LabelManagedBy]), e.g.
	// Pod Security admission or a service mesh's injection label.
	// Keys under tenancy.rtmx.ai/ are tenancy's own and refused here.
	// DefaultConfig enforces the "restricted" Pod Security Standard.
	NamespaceLabels map[string]string

	// AllowRules are the network policies the platform allows beside the
	// namespace's default-deny policy, one NetworkPolicy each. Every
	// rule's pod selector and peers are the platform's: tenancy adds
	// nothing to them. DefaultConfig allows DNS egress and traffic within
	// the namespace; add [AllowFromNamespace] for the ingress controller.
	AllowRules []AllowRule

	// Limits holds the ResourceQuota and LimitRange of each tier. Every
	// tier of tenant.Tiers must be present. DefaultConfig sets
	// [DefaultLimits] of each tier.
	Limits map[tenant.Tier]Limits

	// PeerAuthentication makes [Cluster.Namespace] create an Istio
	// PeerAuthentication (security.istio.io/v1) named "default" in the
	// namespace with mTLS mode STRICT, through the dynamic client. The
	// cluster must serve that API (Istio's CRDs installed).
	PeerAuthentication bool

	// Manifests are the tenant-specific resources [Cluster.Resources]
	// applies into the tenant namespace.
	Manifests []Manifest

	// Ingress, when not nil, is the dedicated ingress of enterprise
	// tenants, applied by [Cluster.Ingress].
	Ingress *IngressConfig

	// RemoveTimeout bounds how long a Remove waits for what it deleted to
	// be gone (a namespace is gone only once the namespace controller has
	// deleted its contents). Required, positive; DefaultConfig sets
	// DefaultRemoveTimeout.
	RemoveTimeout time.Duration

	// Logger receives a record for every object created, changed, refused
	// or deleted. nil discards. Records carry tenant IDs, namespace and
	// object names, never object contents.
	Logger *slog.Logger
}

// DefaultFieldManager is the field manager DefaultConfig sets.
const DefaultFieldManager = "tenancy"

// DefaultRemoveTimeout is the RemoveTimeout DefaultConfig sets.
const DefaultRemoveTimeout = 2 * time.Minute

// DefaultConfig returns a Config for the cluster behind client and dyn,
// with DefaultFieldManager, the restricted Pod Security Standard on the
// namespace, the allow rules [AllowDNSEgress] and [AllowWithinNamespace],
// [DefaultLimits] for every tier, DefaultRemoveTimeout, no
// PeerAuthentication, no manifests and no dedicated ingress.
func DefaultConfig(client kubernetes.Interface, dyn dynamic.Interface) Config {
	limits := map[tenant.Tier]Limits{}
	for _, t := range tenant.Tiers() {
		limits[t] = DefaultLimits(t)
	}
	return Config{
		Client:       client,
		Dynamic:      dyn,
		FieldManager: DefaultFieldManager,
		NamespaceLabels: map[string]string{
			"pod-security.kubernetes.io/enforce": "restricted",
		},
		AllowRules:    []AllowRule{AllowDNSEgress(), AllowWithinNamespace()},
		Limits:        limits,
		RemoveTimeout: DefaultRemoveTimeout,
	}
}

// AllowRule is one NetworkPolicy beside the default-deny policy of a tenant
// namespace.
type AllowRule struct {
	// Name is the NetworkPolicy's name: a DNS-1123 subdomain, unique among
	// the rules, and not "default-deny".
	Name string
	// Spec is the policy. Its PolicyTypes must be set (Ingress, Egress or
	// both), so that what the rule opens is explicit.
	Spec networkingv1.NetworkPolicySpec
}

// AllowDNSEgress returns the rule "allow-dns-egress": egress from every pod
// of the namespace to the cluster DNS (pods labelled k8s-app=kube-dns in
// kube-system) on port 53, UDP and TCP.
func AllowDNSEgress() AllowRule {
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	port := intstr.FromInt32(53)
	return AllowRule{
		Name: "allow-dns-egress",
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "kube-system"}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
				}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &port}, {Protocol: &tcp, Port: &port}},
			}},
		},
	}
}

// AllowWithinNamespace returns the rule "allow-within-namespace": ingress
// to every pod of the namespace from every pod of the same namespace, and
// egress the same way. Nothing from or to other namespaces.
func AllowWithinNamespace() AllowRule {
	same := []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}
	return AllowRule{
		Name: "allow-within-namespace",
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: same}},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{To: same}},
		},
	}
}

// AllowFromNamespace returns a rule named name that lets every pod of the
// namespace named namespace (an ingress controller's, say) reach every pod
// of the tenant namespace.
func AllowFromNamespace(name, namespace string) AllowRule {
	return AllowRule{
		Name: name,
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: namespace}},
				}},
			}},
		},
	}
}

// Limits are the ResourceQuota ("tenant-quota") and LimitRange
// ("tenant-limits") of the namespaces of one tier.
type Limits struct {
	// Quota is the namespace's ResourceQuota; Hard must not be empty.
	Quota corev1.ResourceQuotaSpec
	// LimitRange is the namespace's LimitRange; it must have at least one
	// item. Give containers default requests and limits, so that pods
	// that set none still pass a quota on cpu and memory.
	LimitRange corev1.LimitRangeSpec
}

// DefaultLimits returns the default quota and limit range of tier t, each
// larger than the tier before it (standard < enterprise < government):
//
//	              requests cpu/mem  limits cpu/mem  pods  services  PVCs  storage  container max
//	standard      2 / 4Gi           4 / 8Gi         20    10        5     20Gi     2 / 4Gi
//	enterprise    8 / 16Gi          16 / 32Gi       100   50        20    200Gi    4 / 8Gi
//	government    16 / 32Gi         32 / 64Gi       200   100       50    500Gi    8 / 16Gi
//
// No tier may have LoadBalancer or NodePort services (those expose the
// tenant outside the platform's ingress). Containers default to requests
// of 100m / 128Mi and limits of 500m / 512Mi. An unknown tier gets the
// zero Limits, which New refuses.
func DefaultLimits(t tenant.Tier) Limits {
	var n int
	switch t {
	case tenant.TierStandard:
		n = 1
	case tenant.TierEnterprise:
		n = 4
	case tenant.TierGovernment:
		n = 8
	default:
		return Limits{}
	}
	q := func(s string) resource.Quantity { return resource.MustParse(s) }
	scaled := func(base int64, unit string) resource.Quantity { return q(fmt.Sprint(base*int64(n)) + unit) }
	counts := map[tenant.Tier][4]string{ // pods, services, PVCs, storage
		tenant.TierStandard:   {"20", "10", "5", "20Gi"},
		tenant.TierEnterprise: {"100", "50", "20", "200Gi"},
		tenant.TierGovernment: {"200", "100", "50", "500Gi"},
	}[t]
	maxFactor := map[tenant.Tier]int64{tenant.TierStandard: 2, tenant.TierEnterprise: 4, tenant.TierGovernment: 8}[t]
	return Limits{
		Quota: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{
			corev1.ResourceRequestsCPU:            scaled(2, ""),
			corev1.ResourceRequestsMemory:         scaled(4, "Gi"),
			corev1.ResourceLimitsCPU:              scaled(4, ""),
			corev1.ResourceLimitsMemory:           scaled(8, "Gi"),
			corev1.ResourcePods:                   q(counts[0]),
			corev1.ResourceServices:               q(counts[1]),
			corev1.ResourcePersistentVolumeClaims: q(counts[2]),
			corev1.ResourceRequestsStorage:        q(counts[3]),
			corev1.ResourceServicesLoadBalancers:  q("0"),
			corev1.ResourceServicesNodePorts:      q("0"),
		}},
		LimitRange: corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{{
			Type:           corev1.LimitTypeContainer,
			Default:        corev1.ResourceList{corev1.ResourceCPU: q("500m"), corev1.ResourceMemory: q("512Mi")},
			DefaultRequest: corev1.ResourceList{corev1.ResourceCPU: q("100m"), corev1.ResourceMemory: q("128Mi")},
			Max: corev1.ResourceList{
				corev1.ResourceCPU:    q(fmt.Sprint(maxFactor)),
				corev1.ResourceMemory: q(fmt.Sprint(2*maxFactor) + "Gi"),
			},
		}}},
	}
}

// Manifest is one template of tenant-specific resources: YAML (one or more
// documents separated by "---"), a Go text/template executed with the
// tenant (see the package documentation for its fields).
type Manifest struct {
	// Name names the manifest in errors and logs (a file name, say).
	// Required, unique among the manifests.
	Name string
	// Template is the YAML template.
	Template string
}

// IngressConfig is the dedicated ingress of an enterprise tenant: a
// networking.k8s.io/v1 Ingress in the tenant namespace routing one host to
// one service of that namespace.
type IngressConfig struct {
	// Name is the Ingress's name: a DNS-1123 subdomain. Required.
	Name string
	// Host is a template of the host name, e.g. "{{.DNSLabel}}.rtmx.example".
	// It must give a DNS-1123 subdomain (no wildcard) that differs from
	// tenant to tenant.
	Host string
	// ClassName is the IngressClass (spec.ingressClassName). Required.
	ClassName string
	// Service and Port name the backend: a Service of the tenant
	// namespace and its port number. Required.
	Service string
	Port    int32
	// TLSSecret, when not empty, is a template of the name of the Secret
	// in the tenant namespace holding the host's certificate.
	TLSSecret string
}

// reservedLabel reports whether key is a label key of tenancy's own
// (under tenancy.rtmx.ai/ or a subdomain of it).
func reservedLabel(key string) bool {
	prefix, _, found := strings.Cut(key, "/")
	return found && (prefix == labelDomain || strings.HasSuffix(prefix, "."+labelDomain))
}
