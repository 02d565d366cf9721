// Package kube provisions a tenant's Kubernetes objects: its namespace
// and what guards it, its tenant-specific resources, and the dedicated
// ingress of an enterprise tenant (steps 4, 5 and part of 6 of
// REQ-DEPLOY-004's provisioning). Package lifecycle wraps each group in a
// journaled step; kube itself keeps no state outside the cluster.
//
// [New] checks a [Config] (start from [DefaultConfig]) and returns a
// [Cluster] with three groups, each a [Group] with Apply, Remove and
// Remains, each idempotent:
//
//   - [Cluster.Namespace]: the namespace "tenant-<dns label>"
//     ([NamespaceName]), a default-deny NetworkPolicy (ingress and egress
//     of every pod), the platform's allow rules ([AllowRule]), the
//     ResourceQuota and LimitRange of the tenant's tier ([DefaultLimits]),
//     and, when configured, an Istio PeerAuthentication with mTLS STRICT.
//   - [Cluster.Resources]: the manifests of Config.Manifests, templated
//     with the tenant, applied into the tenant namespace.
//   - [Cluster.Ingress]: for enterprise tenants, a networking.k8s.io/v1
//     Ingress for the host Config.Ingress.Host names.
//
// Apply uses server-side apply with Config.FieldManager, forcing
// ownership, so running it again creates nothing new and converges on the
// configuration; objects of a group the configuration no longer names
// are deleted. Remove waits (Config.RemoveTimeout, or the context) until
// what it deleted is gone, so that Remains, which lists what is left, can
// prove a tenant deprovisioned.
//
// Every object carries the labels tenancy.rtmx.ai/tenant (the tenant ID),
// tenancy.rtmx.ai/tier and tenancy.rtmx.ai/managed-by=tenancy; objects
// inside the namespace also carry tenancy.rtmx.ai/component, the group
// that made them.
//
// # Templates
//
// A manifest (and the ingress host and TLS secret name) is a Go
// text/template, executed with these fields:
//
//	.ID         the tenant ID, "acme_corp"
//	.DNSLabel   its DNS label, "acme-corp"
//	.Namespace  the tenant namespace, "tenant-acme-corp"
//	.Tier       "standard", "enterprise" or "government"
//	.Region     the tenant's region, a DNS label ("us-gov-east-1") or ""
//	.Name       the tenant's display name, as a double-quoted YAML string
//
// Every field but .Name follows a strict grammar, checked before the
// template runs. .Name is free text, so it renders quoted ("Acme \"Corp\"")
// and can only ever be one YAML scalar: write "name: {{.Name}}", not
// "name: \"{{.Name}}\"". Templates run with missingkey=error. New renders
// every template for sample tenants of every tier, so that a template that
// fails, YAML that is not objects, or an object that names another
// namespace is an error of New, not of a tenant's provisioning.
//
// # Errors
//
// Errors start with "kube: " and name the operation, the tenant and the
// object. They wrap, for errors.Is, [ErrInvalidConfig] (a Config New
// refuses, or a manifest Apply refuses; the message names the field and
// the rule), [ErrInvalidTenant], [ErrForeignNamespace], [ErrNamespaceExists],
// [ErrNamespaceNotReady] and [ErrNotRemoved], and the client-go error of
// a failed API call (k8s.io/apimachinery/pkg/api/errors tells them apart;
// a server that is down gives a connection error).
//
// # Security
//
// A namespace is the tenant's only if it is labelled so. Apply refuses,
// changing nothing, a namespace of the tenant's name that is not (a name
// collision, someone else's namespace): it creates the namespace with
// Create, never an apply that would take over one made meanwhile, and
// applies its labels with the resource version it checked. Remove deletes
// only a namespace labelled as the tenant's, with a UID precondition; one
// that is someone else's is left alone and logged, and Remains does not
// count it.
//
// A tenant's manifests land in its namespace only: an object naming
// another namespace, a cluster-scoped kind (as discovery reports it: a
// ClusterRoleBinding, a CRD, a Namespace), a list, or a name that one of
// tenancy's own objects has (default-deny, the quota) is refused before
// anything is written. The kinds the manifests make are fixed by New (the
// sample tenants), so that Remove knows every kind to look for; an object
// of another kind is refused at Apply. Manifests are the platform's
// trusted configuration: what they may do inside the tenant namespace
// (a RoleBinding, say) is theirs to decide.
//
// An apply keeps fields that another field manager owns. For the
// default-deny policy that would let a policy widened by someone else
// stand, so Apply checks the policy it gets back and replaces it if it is
// not deny-all.
//
// # Tests
//
// The tests run against a real etcd, kube-apiserver and
// kube-controller-manager (internal/kubetest), built by .ci/kube-build
// into its cache directory, or found in the directory named by
// TENANCY_TEST_KUBE_BIN. Without them the tests that need a server are
// skipped, or fail when CI=true.
package kube
