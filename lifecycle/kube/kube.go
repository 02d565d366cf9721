package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/discovery"

	"github.com/rtmx-ai/tenancy/tenant"
)

// The labels tenancy puts on every object it makes. A namespace is the
// tenant's only if it carries LabelTenant with the tenant's ID and
// LabelManagedBy with ManagedBy.
const (
	labelDomain = "tenancy.rtmx.ai"
	// LabelTenant holds the tenant's ID (tenant.ID.String).
	LabelTenant = labelDomain + "/tenant"
	// LabelTier holds the tenant's tier.
	LabelTier = labelDomain + "/tier"
	// LabelManagedBy holds ManagedBy.
	LabelManagedBy = labelDomain + "/managed-by"
	// LabelComponent, on the objects inside the namespace, names the
	// group that made the object: "namespace", "resources" or "ingress".
	LabelComponent = labelDomain + "/component"
	// ManagedBy is the value of LabelManagedBy.
	ManagedBy = "tenancy"
)

// The names of the fixed objects of a tenant namespace.
const (
	// DefaultDenyName is the NetworkPolicy denying all ingress and egress.
	DefaultDenyName = "default-deny"
	// QuotaName is the ResourceQuota of the tenant's tier.
	QuotaName = "tenant-quota"
	// LimitRangeName is the LimitRange of the tenant's tier.
	LimitRangeName = "tenant-limits"
	// PeerAuthenticationName is the Istio PeerAuthentication (mTLS
	// STRICT); "default" makes it apply to the whole namespace.
	PeerAuthenticationName = "default"
)

// Errors, matchable with errors.Is. Each comes wrapped in a message that
// starts with "kube: " and names the operation, the tenant and the object.
var (
	// ErrInvalidConfig is wrapped by New's errors for a Config it refuses,
	// and by Apply's for a manifest that comes out of its template
	// aimed outside the tenant namespace (another namespace, a
	// cluster-scoped kind). The message names the field and the rule.
	ErrInvalidConfig = errors.New("invalid configuration")
	// ErrInvalidTenant is wrapped by errors for a tenant.Info (or ID) that
	// cannot be provisioned: the zero ID, an unknown tier, a region that
	// is not a DNS label.
	ErrInvalidTenant = errors.New("invalid tenant")
	// ErrForeignNamespace is wrapped by Apply's errors when the tenant's
	// namespace name is taken by a namespace that is not labelled as
	// that tenant's. Nothing is changed.
	ErrForeignNamespace = errors.New("namespace exists and is not the tenant's")
	// ErrNamespaceExists is wrapped by Check's errors when a namespace of
	// a new tenant's name exists already, labelled as that tenant's: what
	// an earlier tenant of the ID (on a cluster shared with another
	// platform, say) left. Nothing is changed.
	ErrNamespaceExists = errors.New("namespace exists already")
	// ErrNamespaceNotReady is wrapped by errors of an Apply that needs
	// the tenant namespace (Resources, Ingress) when it does not exist
	// yet, or of any Apply while it is being deleted.
	ErrNamespaceNotReady = errors.New("tenant namespace not ready")
	// ErrNotRemoved is wrapped by Remove's errors when what it deleted
	// is still there after Config.RemoveTimeout.
	ErrNotRemoved = errors.New("not removed in time")
)

// NamespaceName returns the name of the Kubernetes namespace of tenant id:
// "tenant-" followed by id.DNSLabel(). It returns "" for the zero ID.
func NamespaceName(id tenant.ID) string {
	if id.IsZero() {
		return ""
	}
	return "tenant-" + id.DNSLabel()
}

// Cluster provisions tenants into one Kubernetes cluster. Its three
// groups of resources are [Cluster.Namespace], [Cluster.Resources] and
// [Cluster.Ingress]; apply them in that order and remove them in the
// reverse order. A Cluster is safe for concurrent use; concurrent calls
// for the same tenant converge (server-side apply) but are best avoided.
type Cluster struct {
	cfg       Config
	log       *slog.Logger
	disc      discovery.DiscoveryInterfaceWithContext
	manifests []*manifest
	kinds     []schema.GroupVersionKind // every kind the manifests make, sorted
	host      *template.Template        // nil without Config.Ingress
	tlsSecret *template.Template        // nil without a TLS secret

	mu        sync.Mutex                              // guards resources
	resources map[schema.GroupVersionKind]apiResource // discovered kinds

	namespace, tenantResources, ingress *Group
}

// apiResource is what discovery says of a kind.
type apiResource struct {
	gvr        schema.GroupVersionResource
	namespaced bool
}

// Group is one group of a tenant's Kubernetes objects, as one provisioning
// step applies them and one deprovisioning step removes them. Each method
// is idempotent.
type Group struct {
	name    string
	check   func(context.Context, tenant.Info) error // nil: nothing to check
	apply   func(context.Context, tenant.Info) error
	remove  func(context.Context, tenant.ID) error
	remains func(context.Context, tenant.ID) ([]string, error)
}

// Name returns the group's name: "namespace", "resources" or "ingress".
func (g *Group) Name() string { return g.name }

// Apply creates or updates the group's objects for the tenant, with
// server-side apply (forcing tenancy's field manager), so that running it
// again converges on the configuration and creates nothing new; objects of
// the group that the configuration no longer names are deleted.
func (g *Group) Apply(ctx context.Context, info tenant.Info) error {
	if err := checkInfo(info); err != nil {
		return fmt.Errorf("kube: apply %s: %w", g.name, err)
	}
	if err := g.apply(ctx, info); err != nil {
		return fmt.Errorf("kube: apply %s of tenant %s: %w", g.name, info.ID, err)
	}
	return nil
}

// Check reports whether the group can be made for a new tenant, before
// anything of the tenant is made, changing nothing. The namespace group
// refuses a namespace of the tenant's name that exists already, with an
// error wrapping ErrForeignNamespace (not labelled as the tenant's) or
// ErrNamespaceExists (labelled as the tenant's: a leftover); the other
// groups have nothing to check.
func (g *Group) Check(ctx context.Context, info tenant.Info) error {
	if err := checkInfo(info); err != nil {
		return fmt.Errorf("kube: check %s: %w", g.name, err)
	}
	if g.check == nil {
		return nil
	}
	if err := g.check(ctx, info); err != nil {
		return fmt.Errorf("kube: check %s of tenant %s: %w", g.name, info.ID, err)
	}
	return nil
}

// Remove deletes the group's objects of tenant id, and waits (up to
// Config.RemoveTimeout, or ctx) until they are gone. It deletes only what
// is labelled as the tenant's: a namespace of the tenant's name that is
// someone else's is left alone (and logged). Removing what is not there
// succeeds.
func (g *Group) Remove(ctx context.Context, id tenant.ID) error {
	if id.IsZero() {
		return fmt.Errorf("kube: remove %s: %w: the zero ID", g.name, ErrInvalidTenant)
	}
	if err := g.remove(ctx, id); err != nil {
		return fmt.Errorf("kube: remove %s of tenant %s: %w", g.name, id, err)
	}
	return nil
}

// Remains lists what is left of the group's objects of tenant id, one
// human-readable entry each ("NetworkPolicy tenant-acme/default-deny");
// it is empty when nothing is. A namespace of the tenant's name that is
// not labelled as the tenant's is listed too (Remove leaves it alone, but
// it may hold what was the tenant's, its labels edited).
func (g *Group) Remains(ctx context.Context, id tenant.ID) ([]string, error) {
	if id.IsZero() {
		return nil, fmt.Errorf("kube: list remains of %s: %w: the zero ID", g.name, ErrInvalidTenant)
	}
	left, err := g.remains(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("kube: list remains of %s of tenant %s: %w", g.name, id, err)
	}
	return left, nil
}

// Namespace is the group of the tenant namespace ([NamespaceName]) and what
// guards it: a default-deny NetworkPolicy for ingress and egress of every
// pod, the allow rules of Config.AllowRules, the ResourceQuota and
// LimitRange of the tenant's tier, and, when configured, an Istio
// PeerAuthentication requiring mTLS (STRICT). Apply refuses, changing
// nothing, a namespace of that name that is not labelled as the tenant's.
// Remove deletes the namespace (and so everything in it).
func (c *Cluster) Namespace() *Group { return c.namespace }

// Resources is the group of Config.Manifests, applied into the tenant
// namespace, which must exist ([Cluster.Namespace]). Apply refuses, before
// it writes anything, an object that comes out of its template aimed at
// another namespace or of a cluster-scoped kind.
func (c *Cluster) Resources() *Group { return c.tenantResources }

// Ingress is the group of the dedicated ingress of an enterprise tenant
// (Config.Ingress). For other tiers, and without Config.Ingress, Apply does
// nothing; Remove removes the tenant's dedicated ingress whatever its tier.
func (c *Cluster) Ingress() *Group { return c.ingress }

// New checks cfg and returns a Cluster, which keeps a copy of cfg (later
// changes to cfg's maps and slices do not reach it). Every problem is
// reported at once, each naming the field and the rule, in an error
// wrapping ErrInvalidConfig. Templates are parsed, and rendered for sample
// tenants of every tier, here. New makes no API call.
func New(cfg Config) (*Cluster, error) {
	var p problems
	if cfg.Client == nil {
		p.add("Client", "is required")
	}
	if cfg.Dynamic == nil {
		p.add("Dynamic", "is required")
	}
	checkFieldManager(&p, cfg.FieldManager)
	for _, k := range slices.Sorted(maps.Keys(cfg.NamespaceLabels)) {
		checkLabel(&p, fmt.Sprintf("NamespaceLabels[%q]", k), k, cfg.NamespaceLabels[k])
	}
	checkAllowRules(&p, cfg.AllowRules)
	checkLimits(&p, cfg.Limits)
	if cfg.RemoveTimeout <= 0 {
		p.add("RemoveTimeout", "must be positive (DefaultConfig sets DefaultRemoveTimeout)")
	}
	c := &Cluster{log: cfg.Logger, resources: map[schema.GroupVersionKind]apiResource{}}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.parseIngress(&p, cfg.Ingress)
	c.parseManifests(&p, cfg)
	if err := p.err(); err != nil {
		return nil, err
	}
	cfg.NamespaceLabels = maps.Clone(cfg.NamespaceLabels)
	rules := make([]AllowRule, len(cfg.AllowRules))
	for i, r := range cfg.AllowRules {
		rules[i] = AllowRule{Name: r.Name, Spec: *r.Spec.DeepCopy()}
	}
	cfg.AllowRules = rules
	limits := make(map[tenant.Tier]Limits, len(cfg.Limits))
	for t, l := range cfg.Limits {
		limits[t] = Limits{Quota: *l.Quota.DeepCopy(), LimitRange: *l.LimitRange.DeepCopy()}
	}
	cfg.Limits = limits
	cfg.Manifests = slices.Clone(cfg.Manifests)
	if cfg.Ingress != nil {
		ing := *cfg.Ingress
		cfg.Ingress = &ing
	}
	c.cfg = cfg
	c.disc = discovery.ToDiscoveryInterfaceWithContext(cfg.Client.Discovery())
	c.namespace = &Group{name: "namespace", check: c.checkNamespace, apply: c.applyNamespace, remove: c.removeNamespace, remains: c.namespaceRemains}
	c.tenantResources = &Group{name: "resources", apply: c.applyResources, remove: c.removeResources, remains: c.resourcesRemain}
	c.ingress = &Group{name: "ingress", apply: c.applyIngress, remove: c.removeIngress, remains: c.ingressRemains}
	return c, nil
}

// problems collects configuration problems, each "field: rule".
type problems []string

func (p *problems) add(field, rule string) { *p = append(*p, field+": "+rule) }

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return fmt.Errorf("kube: %w: %s", ErrInvalidConfig, strings.Join(p, "; "))
}

func checkFieldManager(p *problems, fm string) {
	switch {
	case fm == "":
		p.add("FieldManager", "is required (DefaultConfig sets DefaultFieldManager)")
	case len(fm) > 128:
		p.add("FieldManager", "must be at most 128 bytes")
	case strings.IndexFunc(fm, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0:
		p.add("FieldManager", "must be printable ASCII without spaces")
	}
}

func checkLabel(p *problems, field, key, value string) {
	if reservedLabel(key) {
		p.add(field, "keys under "+labelDomain+"/ are set by tenancy")
		return
	}
	for _, e := range validation.IsQualifiedName(key) {
		p.add(field, "key "+e)
	}
	for _, e := range validation.IsValidLabelValue(value) {
		p.add(field, "value "+e)
	}
}

func checkAllowRules(p *problems, rules []AllowRule) {
	seen := map[string]bool{}
	for i, r := range rules {
		f := fmt.Sprintf("AllowRules[%d]", i)
		switch {
		case r.Name == DefaultDenyName:
			p.add(f+".Name", "must not be "+DefaultDenyName+", the name of the default-deny policy")
		case seen[r.Name]:
			p.add(f+".Name", fmt.Sprintf("%q is used by another rule", r.Name))
		default:
			for _, e := range validation.IsDNS1123Subdomain(r.Name) {
				p.add(f+".Name", e)
			}
		}
		seen[r.Name] = true
		if len(r.Spec.PolicyTypes) == 0 {
			p.add(f+".Spec.PolicyTypes", "must name Ingress, Egress or both")
		}
		for _, t := range r.Spec.PolicyTypes {
			if t != "Ingress" && t != "Egress" {
				p.add(f+".Spec.PolicyTypes", fmt.Sprintf("%q is neither Ingress nor Egress", t))
			}
		}
		checkIngressSources(p, f+".Spec", r.Spec.Ingress)
	}
}

// checkIngressSources refuses ingress rules that would let other tenants'
// pods in past the default-deny policy: a rule without sources (every pod
// of every namespace), a peer whose namespace selector is empty (every
// namespace), and an IP block (which may hold pods of any namespace).
// Egress is not checked: another tenant's pods take only what their own
// namespace's ingress rules admit.
func checkIngressSources(p *problems, field string, rules []networkingv1.NetworkPolicyIngressRule) {
	for i, r := range rules {
		f := fmt.Sprintf("%s.Ingress[%d].From", field, i)
		if len(r.From) == 0 {
			p.add(f, "must name its sources: an empty list admits every pod of every namespace")
		}
		for j, peer := range r.From {
			pf := fmt.Sprintf("%s[%d]", f, j)
			if ns := peer.NamespaceSelector; ns != nil && len(ns.MatchLabels) == 0 && len(ns.MatchExpressions) == 0 {
				p.add(pf+".NamespaceSelector", "must select namespaces: an empty selector admits every namespace, other tenants' too")
			}
			if peer.IPBlock != nil {
				p.add(pf+".IPBlock", "is not taken: an IP block may hold other tenants' pods")
			}
		}
	}
}

func checkLimits(p *problems, limits map[tenant.Tier]Limits) {
	for _, t := range tenant.Tiers() {
		l, ok := limits[t]
		f := fmt.Sprintf("Limits[%s]", t)
		switch {
		case !ok:
			p.add(f, "is required for every tier (DefaultConfig sets DefaultLimits)")
			continue
		case len(l.Quota.Hard) == 0:
			p.add(f+".Quota.Hard", "must not be empty")
		case len(l.LimitRange.Limits) == 0:
			p.add(f+".LimitRange.Limits", "must not be empty")
		}
		for name, q := range l.Quota.Hard {
			if q.Sign() < 0 {
				p.add(fmt.Sprintf("%s.Quota.Hard[%s]", f, name), "must not be negative")
			}
		}
	}
	for t := range limits {
		if !t.Valid() {
			p.add(fmt.Sprintf("Limits[%q]", string(t)), "is not a tier")
		}
	}
}

// checkInfo checks what Apply takes from a tenant.Info.
func checkInfo(info tenant.Info) error {
	switch {
	case info.ID.IsZero():
		return fmt.Errorf("%w: the zero ID", ErrInvalidTenant)
	case !info.Tier.Valid():
		return fmt.Errorf("%w: tenant %s: tier %q is not one of standard, enterprise, government", ErrInvalidTenant, info.ID, string(info.Tier))
	case info.Region != "" && len(validation.IsDNS1123Label(info.Region)) > 0:
		return fmt.Errorf("%w: tenant %s: region %q is not a DNS label", ErrInvalidTenant, info.ID, info.Region)
	}
	return nil
}

// tenantLabels are the labels of every object of info's tenant.
func tenantLabels(info tenant.Info) map[string]string {
	return map[string]string{
		LabelTenant:    info.ID.String(),
		LabelTier:      string(info.Tier),
		LabelManagedBy: ManagedBy,
	}
}

// componentLabels are the labels of an object of group component.
func componentLabels(info tenant.Info, component string) map[string]string {
	l := tenantLabels(info)
	l[LabelComponent] = component
	return l
}

// selector selects the objects of tenant id made by group component.
func selector(id tenant.ID, component string) string {
	return labels.SelectorFromSet(labels.Set{
		LabelTenant:    id.String(),
		LabelManagedBy: ManagedBy,
		LabelComponent: component,
	}).String()
}

// owned reports whether ns is labelled as tenant id's.
func owned(ns *corev1.Namespace, id tenant.ID) bool {
	return ns.Labels[LabelTenant] == id.String() && ns.Labels[LabelManagedBy] == ManagedBy
}

func (c *Cluster) applyOptions() metav1.ApplyOptions {
	return metav1.ApplyOptions{FieldManager: c.cfg.FieldManager, Force: true}
}

// getNamespace returns tenant id's namespace, nil if there is none.
func (c *Cluster) getNamespace(ctx context.Context, id tenant.ID) (*corev1.Namespace, error) {
	name := NamespaceName(id)
	ns, err := c.cfg.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("get namespace %s: %w", name, err)
	}
	return ns, nil
}

// ownNamespace returns tenant id's namespace, nil if there is none or it is
// someone else's (which it logs).
func (c *Cluster) ownNamespace(ctx context.Context, id tenant.ID) (*corev1.Namespace, error) {
	ns, err := c.getNamespace(ctx, id)
	if err != nil || ns == nil {
		return nil, err
	}
	if !owned(ns, id) {
		c.log.WarnContext(ctx, "kube: namespace of the tenant's name is not the tenant's; leaving it alone",
			"tenant", id.String(), "namespace", ns.Name)
		return nil, nil
	}
	return ns, nil
}

// readyNamespace returns tenant id's namespace for an Apply of the objects
// inside it: it must exist, be the tenant's and not be being deleted.
func (c *Cluster) readyNamespace(ctx context.Context, id tenant.ID) (*corev1.Namespace, error) {
	ns, err := c.getNamespace(ctx, id)
	switch {
	case err != nil:
		return nil, err
	case ns == nil:
		return nil, fmt.Errorf("%w: namespace %s does not exist (apply the namespace group first)", ErrNamespaceNotReady, NamespaceName(id))
	case !owned(ns, id):
		return nil, foreign(ns.Name, id)
	case ns.DeletionTimestamp != nil:
		return nil, fmt.Errorf("%w: namespace %s is being deleted", ErrNamespaceNotReady, ns.Name)
	}
	return ns, nil
}

func foreign(name string, id tenant.ID) error {
	return fmt.Errorf("%w: namespace %s is not labelled %s=%s, %s=%s; it is left unchanged",
		ErrForeignNamespace, name, LabelTenant, id, LabelManagedBy, ManagedBy)
}

// waitGone polls gone until it reports true, for at most
// Config.RemoveTimeout. what describes what it waits for, for the error.
func (c *Cluster) waitGone(ctx context.Context, what string, gone func(context.Context) (bool, []string, error)) error {
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.RemoveTimeout, errWaitTimeout)
	defer cancel()
	delay := 50 * time.Millisecond
	var left []string
	for {
		ok, l, err := gone(ctx)
		switch {
		case ok:
			return nil
		case err != nil && ctx.Err() == nil:
			return err
		case err == nil:
			left = l
		}
		select {
		case <-ctx.Done():
			if context.Cause(ctx) == errWaitTimeout {
				return fmt.Errorf("%w: %s still present after %v: %s", ErrNotRemoved, what, c.cfg.RemoveTimeout, strings.Join(left, ", "))
			}
			return fmt.Errorf("waiting for %s to be gone: %w", what, context.Cause(ctx))
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

var errWaitTimeout = errors.New("Config.RemoveTimeout passed")

// toApply converts a typed value (a spec) into its apply configuration,
// whose JSON form is the same.
func toApply[T any](v any) (*T, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	t := new(T)
	if err := json.Unmarshal(b, t); err != nil {
		return nil, err
	}
	return t, nil
}
