package kube

import (
	"context"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
	"k8s.io/client-go/dynamic"

	"github.com/rtmx-ai/tenancy/tenant"
)

// peerAuthenticationGVR is the Istio API Config.PeerAuthentication writes
// through the dynamic client.
var peerAuthenticationGVR = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}

const componentNamespace = "namespace"

func (c *Cluster) applyNamespace(ctx context.Context, info tenant.Info) error {
	name := NamespaceName(info.ID)
	l := tenantLabels(info)
	maps.Copy(l, c.cfg.NamespaceLabels)
	maps.Copy(l, tenantLabels(info)) // New refuses NamespaceLabels under tenancy.rtmx.ai/; belt and braces
	for attempt := 1; ; attempt++ {
		ns, err := c.claimNamespace(ctx, info)
		if err != nil {
			return err
		}
		// The resource version makes the apply fail, rather than label a
		// namespace someone else made, if the namespace changed since it
		// was found to be the tenant's.
		nsAC := corev1ac.Namespace(name).WithLabels(l).WithResourceVersion(ns.ResourceVersion)
		_, err = c.cfg.Client.CoreV1().Namespaces().Apply(ctx, nsAC, c.applyOptions())
		if err == nil {
			break
		}
		if !apierrors.IsConflict(err) {
			return fmt.Errorf("apply namespace %s: %w", name, err)
		}
		if attempt == 3 {
			return fmt.Errorf("apply namespace %s: it changed each time it was applied: %w", name, err)
		}
	}

	cl := componentLabels(info, componentNamespace)
	nps := c.cfg.Client.NetworkingV1().NetworkPolicies(name)
	if err := c.applyDefaultDeny(ctx, name, cl); err != nil {
		return err
	}
	want := map[string]bool{DefaultDenyName: true}
	for i, r := range c.cfg.AllowRules {
		spec, err := toApply[networkingv1ac.NetworkPolicySpecApplyConfiguration](r.Spec)
		if err != nil {
			return fmt.Errorf("AllowRules[%d] (%s): %w", i, r.Name, err)
		}
		ac := networkingv1ac.NetworkPolicy(r.Name, name).WithLabels(cl).WithSpec(spec)
		if _, err := nps.Apply(ctx, ac, c.applyOptions()); err != nil {
			return fmt.Errorf("apply NetworkPolicy %s/%s: %w", name, r.Name, err)
		}
		want[r.Name] = true
	}
	// Allow rules the configuration no longer has.
	list, err := nps.List(ctx, metav1.ListOptions{LabelSelector: selector(info.ID, componentNamespace)})
	if err != nil {
		return fmt.Errorf("list NetworkPolicies in %s: %w", name, err)
	}
	for _, np := range list.Items {
		if !want[np.Name] {
			if err := nps.Delete(ctx, np.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &np.UID}}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete NetworkPolicy %s/%s, no longer configured: %w", name, np.Name, err)
			}
			c.log.InfoContext(ctx, "kube: deleted a network policy no longer configured", "tenant", info.ID.String(), "namespace", name, "name", np.Name)
		}
	}

	limits := c.cfg.Limits[info.Tier]
	quota, err := toApply[corev1ac.ResourceQuotaSpecApplyConfiguration](limits.Quota)
	if err != nil {
		return fmt.Errorf("Limits[%s].Quota: %w", info.Tier, err)
	}
	quotaAC := corev1ac.ResourceQuota(QuotaName, name).WithLabels(cl).WithSpec(quota)
	if _, err := c.cfg.Client.CoreV1().ResourceQuotas(name).Apply(ctx, quotaAC, c.applyOptions()); err != nil {
		return fmt.Errorf("apply ResourceQuota %s/%s: %w", name, QuotaName, err)
	}
	lr, err := toApply[corev1ac.LimitRangeSpecApplyConfiguration](limits.LimitRange)
	if err != nil {
		return fmt.Errorf("Limits[%s].LimitRange: %w", info.Tier, err)
	}
	lrAC := corev1ac.LimitRange(LimitRangeName, name).WithLabels(cl).WithSpec(lr)
	if _, err := c.cfg.Client.CoreV1().LimitRanges(name).Apply(ctx, lrAC, c.applyOptions()); err != nil {
		return fmt.Errorf("apply LimitRange %s/%s: %w", name, LimitRangeName, err)
	}

	pa := c.cfg.Dynamic.Resource(peerAuthenticationGVR).Namespace(name)
	if c.cfg.PeerAuthentication {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "security.istio.io/v1",
			"kind":       "PeerAuthentication",
			"metadata":   map[string]any{"name": PeerAuthenticationName, "namespace": name, "labels": toAny(cl)},
			"spec":       map[string]any{"mtls": map[string]any{"mode": "STRICT"}},
		}}
		if _, err := pa.Apply(ctx, PeerAuthenticationName, obj, c.applyOptions()); err != nil {
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("apply PeerAuthentication %s/%s: the cluster does not serve security.istio.io/v1 (is Istio installed?): %w", name, PeerAuthenticationName, err)
			}
			return fmt.Errorf("apply PeerAuthentication %s/%s: %w", name, PeerAuthenticationName, err)
		}
	} else if err := c.deleteOwned(ctx, pa, PeerAuthenticationName, info.ID); err != nil {
		return fmt.Errorf("delete PeerAuthentication %s/%s, no longer configured: %w", name, PeerAuthenticationName, err)
	}
	c.log.InfoContext(ctx, "kube: applied the tenant namespace", "tenant", info.ID.String(), "namespace", name, "tier", string(info.Tier))
	return nil
}

// claimNamespace returns info's namespace, creating it if there is none.
// A namespace of that name that is not labelled as the tenant's is refused
// with ErrForeignNamespace, one being deleted with ErrNamespaceNotReady.
func (c *Cluster) claimNamespace(ctx context.Context, info tenant.Info) (*corev1.Namespace, error) {
	name := NamespaceName(info.ID)
	for range 2 {
		ns, err := c.getNamespace(ctx, info.ID)
		if err != nil {
			return nil, err
		}
		if ns != nil {
			if !owned(ns, info.ID) {
				c.log.WarnContext(ctx, "kube: refused a namespace of the tenant's name that is not the tenant's",
					"tenant", info.ID.String(), "namespace", name)
				return nil, foreign(name, info.ID)
			}
			if ns.DeletionTimestamp != nil {
				return nil, fmt.Errorf("%w: namespace %s is being deleted; apply again once it is gone", ErrNamespaceNotReady, name)
			}
			return ns, nil
		}
		// Create, not apply: an apply would take over a namespace someone
		// made since the Get.
		ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: tenantLabels(info)}}
		created, err := c.cfg.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{FieldManager: c.cfg.FieldManager})
		switch {
		case apierrors.IsAlreadyExists(err):
			continue // someone made it meanwhile: look at it again
		case err != nil:
			return nil, fmt.Errorf("create namespace %s: %w", name, err)
		}
		c.log.InfoContext(ctx, "kube: created the tenant namespace", "tenant", info.ID.String(), "namespace", name)
		return created, nil
	}
	return nil, fmt.Errorf("create namespace %s: it keeps appearing and disappearing", name)
}

// applyDefaultDeny applies the default-deny policy. A policy of that name
// that someone widened (rules or a pod selector another field manager
// added, which an apply leaves in place) is deleted and applied again.
func (c *Cluster) applyDefaultDeny(ctx context.Context, ns string, l map[string]string) error {
	nps := c.cfg.Client.NetworkingV1().NetworkPolicies(ns)
	ac := networkingv1ac.NetworkPolicy(DefaultDenyName, ns).WithLabels(l).WithSpec(
		networkingv1ac.NetworkPolicySpec().
			WithPodSelector(metav1ac.LabelSelector()).
			WithPolicyTypes(networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress))
	for range 2 {
		np, err := nps.Apply(ctx, ac, c.applyOptions())
		if err != nil {
			return fmt.Errorf("apply NetworkPolicy %s/%s: %w", ns, DefaultDenyName, err)
		}
		if denies(np) {
			return nil
		}
		c.log.WarnContext(ctx, "kube: the default-deny policy was widened; replacing it", "namespace", ns)
		err = nps.Delete(ctx, DefaultDenyName, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &np.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete widened NetworkPolicy %s/%s: %w", ns, DefaultDenyName, err)
		}
	}
	return fmt.Errorf("apply NetworkPolicy %s/%s: it is widened again as soon as it is replaced", ns, DefaultDenyName)
}

// denies reports whether np denies all ingress and egress of every pod.
func denies(np *networkingv1.NetworkPolicy) bool {
	s := np.Spec
	return len(s.PodSelector.MatchLabels) == 0 && len(s.PodSelector.MatchExpressions) == 0 &&
		len(s.Ingress) == 0 && len(s.Egress) == 0 &&
		slices.Contains(s.PolicyTypes, networkingv1.PolicyTypeIngress) &&
		slices.Contains(s.PolicyTypes, networkingv1.PolicyTypeEgress)
}

func (c *Cluster) removeNamespace(ctx context.Context, id tenant.ID) error {
	ns, err := c.ownNamespace(ctx, id)
	if err != nil || ns == nil {
		return err
	}
	if ns.DeletionTimestamp == nil {
		err := c.cfg.Client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &ns.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete namespace %s: %w", ns.Name, err)
		}
		c.log.InfoContext(ctx, "kube: deleting the tenant namespace", "tenant", id.String(), "namespace", ns.Name)
	}
	return c.waitGone(ctx, "namespace "+ns.Name, func(ctx context.Context) (bool, []string, error) {
		now, err := c.getNamespace(ctx, id)
		if err != nil {
			return false, nil, err
		}
		if now == nil || now.UID != ns.UID {
			return true, nil, nil
		}
		return false, []string{describeNamespace(now)}, nil
	})
}

// checkNamespace refuses a namespace of a new tenant's name that exists.
func (c *Cluster) checkNamespace(ctx context.Context, info tenant.Info) error {
	ns, err := c.getNamespace(ctx, info.ID)
	switch {
	case err != nil:
		return err
	case ns == nil:
		return nil
	case !owned(ns, info.ID):
		return foreign(ns.Name, info.ID)
	}
	return fmt.Errorf("%w: namespace %s is labelled as tenant %s's, but the tenant is new: delete what an earlier tenant of this ID left, or choose another ID",
		ErrNamespaceExists, ns.Name, info.ID)
}

func (c *Cluster) namespaceRemains(ctx context.Context, id tenant.ID) ([]string, error) {
	ns, err := c.getNamespace(ctx, id)
	if err != nil || ns == nil {
		return nil, err
	}
	if !owned(ns, id) {
		return []string{describeNamespace(ns) + ", not labelled as the tenant's: left alone (delete it, or label it as the tenant's, if it held the tenant's workloads)"}, nil
	}
	left := []string{describeNamespace(ns)}
	opts := metav1.ListOptions{LabelSelector: selector(id, componentNamespace)}
	nps, err := c.cfg.Client.NetworkingV1().NetworkPolicies(ns.Name).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list NetworkPolicies in %s: %w", ns.Name, err)
	}
	for _, o := range nps.Items {
		left = append(left, "NetworkPolicy "+ns.Name+"/"+o.Name)
	}
	qs, err := c.cfg.Client.CoreV1().ResourceQuotas(ns.Name).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list ResourceQuotas in %s: %w", ns.Name, err)
	}
	for _, o := range qs.Items {
		left = append(left, "ResourceQuota "+ns.Name+"/"+o.Name)
	}
	lrs, err := c.cfg.Client.CoreV1().LimitRanges(ns.Name).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list LimitRanges in %s: %w", ns.Name, err)
	}
	for _, o := range lrs.Items {
		left = append(left, "LimitRange "+ns.Name+"/"+o.Name)
	}
	pas, err := c.cfg.Dynamic.Resource(peerAuthenticationGVR).Namespace(ns.Name).List(ctx, opts)
	switch {
	case apierrors.IsNotFound(err):
		// No Istio API: no PeerAuthentication.
	case err != nil:
		return nil, fmt.Errorf("list PeerAuthentications in %s: %w", ns.Name, err)
	default:
		for _, o := range pas.Items {
			left = append(left, "PeerAuthentication "+ns.Name+"/"+o.GetName())
		}
	}
	return left, nil
}

// deleteOwned deletes the object name of r if it is labelled as tenant
// id's. An object, or an API, that is not there is nothing to delete.
func (c *Cluster) deleteOwned(ctx context.Context, r dynamic.ResourceInterface, name string, id tenant.ID) error {
	obj, err := r.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return err
	}
	l := obj.GetLabels()
	if l[LabelTenant] != id.String() || l[LabelManagedBy] != ManagedBy {
		return nil
	}
	uid := obj.GetUID()
	err = r.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// describeNamespace names ns and its phase (Active, Terminating) if it
// has one.
func describeNamespace(ns *corev1.Namespace) string {
	if ns.Status.Phase == "" {
		return "Namespace " + ns.Name
	}
	return fmt.Sprintf("Namespace %s (%s)", ns.Name, ns.Status.Phase)
}

// toAny converts a label map for an unstructured object.
func toAny(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
