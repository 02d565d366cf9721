package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/template"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/rtmx-ai/tenancy/tenant"
)

const componentResources = "resources"

// maxManifestBytes bounds what one manifest may render to.
const maxManifestBytes = 1 << 20

// manifest is a parsed Config.Manifests entry.
type manifest struct {
	field string // "Manifests[1] (\"web.yaml\")"
	tmpl  *template.Template
}

// templateData is what a template sees. Every field but Name follows a
// strict grammar (a tenant ID, a DNS label, a tier name); Name, free text,
// renders as a double-quoted YAML string, so that it cannot add YAML of
// its own.
type templateData struct {
	ID        string
	DNSLabel  string
	Namespace string
	Tier      string
	Region    string
	Name      quoted
}

// quoted renders (through fmt, as text/template prints values) as a JSON
// string, which YAML reads as a double-quoted scalar.
type quoted string

func (q quoted) String() string {
	b, _ := json.Marshal(string(q)) // a string always marshals
	return string(b)
}

func dataFor(info tenant.Info) templateData {
	return templateData{
		ID:        info.ID.String(),
		DNSLabel:  info.ID.DNSLabel(),
		Namespace: NamespaceName(info.ID),
		Tier:      string(info.Tier),
		Region:    info.Region,
		Name:      quoted(info.Name),
	}
}

// samples are the tenants New renders every template for: one per tier,
// and two IDs, so that a host template that ignores the tenant is caught.
func samples() []tenant.Info {
	var out []tenant.Info
	for i, id := range []string{"sample", "other_sample"} {
		for _, t := range tenant.Tiers() {
			out = append(out, tenant.Info{
				ID: tenant.MustParseID(id), Tier: t, Region: []string{"us-east-1", "us-gov-west-1"}[i],
				Name: []string{"Sample Tenant", `O'Brien: "quoted" #1`}[i],
			})
		}
	}
	return out
}

// sampleIDs are the IDs New renders the ingress host for, with everything
// else of a sample tenant kept: each must get a host of its own. Some are
// prefixes of others, and two differ in their last character only.
func sampleIDs() []tenant.ID {
	var out []tenant.ID
	for _, s := range []string{"sample", "sample1", "sample2", "sample_a", "a", "ab", "zz9"} {
		out = append(out, tenant.MustParseID(s))
	}
	return out
}

// object is one object a manifest renders to.
type object struct {
	where string // field and document, for errors
	gvk   schema.GroupVersionKind
	u     *unstructured.Unstructured
}

func (o object) String() string { return o.gvk.Kind + " " + o.u.GetNamespace() + "/" + o.u.GetName() }

// parseManifests parses the templates of cfg.Manifests and renders them
// for every sample tenant, recording the kinds they make.
func (c *Cluster) parseManifests(p *problems, cfg Config) {
	names := map[string]bool{}
	for i, m := range cfg.Manifests {
		field := fmt.Sprintf("Manifests[%d] (%q)", i, m.Name)
		if m.Name == "" {
			field = fmt.Sprintf("Manifests[%d]", i)
			p.add(field+".Name", "is required")
		} else if names[m.Name] {
			p.add(field+".Name", "is used by another manifest")
		}
		names[m.Name] = true
		t, err := template.New(m.Name).Option("missingkey=error").Parse(m.Template)
		if err != nil {
			p.add(field+".Template", err.Error())
			continue
		}
		c.manifests = append(c.manifests, &manifest{field: field, tmpl: t})
	}
	if len(*p) > 0 {
		return
	}
	kinds := map[schema.GroupVersionKind]bool{}
	for _, info := range samples() {
		objs, err := c.render(info, cfg)
		if err != nil {
			p.add("Manifests", fmt.Sprintf("for a sample %s tenant: %s", info.Tier, strings.TrimPrefix(err.Error(), ErrInvalidConfig.Error()+": ")))
			return
		}
		for _, o := range objs {
			kinds[o.gvk] = true
		}
	}
	c.kinds = slices.SortedFunc(func(yield func(schema.GroupVersionKind) bool) {
		for k := range kinds {
			if !yield(k) {
				return
			}
		}
	}, func(a, b schema.GroupVersionKind) int { return strings.Compare(a.String(), b.String()) })
}

// render executes every manifest for info and checks each object it makes,
// in an error wrapping ErrInvalidConfig that names the manifest, the
// document and the rule. cfg is the configuration being checked (New
// calls render before c.cfg is set).
func (c *Cluster) render(info tenant.Info, cfg Config) ([]object, error) {
	data := dataFor(info)
	var objs []object
	seen := map[string]string{}
	for _, m := range c.manifests {
		var buf bytes.Buffer
		if err := m.tmpl.Execute(&limitedWriter{w: &buf, n: maxManifestBytes}, data); err != nil {
			return nil, fmt.Errorf("%w: %s.Template: %v", ErrInvalidConfig, m.field, err)
		}
		dec := yaml.NewYAMLOrJSONDecoder(&buf, 4096)
		for doc := 1; ; doc++ {
			var raw map[string]any
			err := dec.Decode(&raw)
			if errors.Is(err, io.EOF) {
				break
			}
			where := fmt.Sprintf("%s document %d", m.field, doc)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: not YAML of an object: %v", ErrInvalidConfig, where, err)
			}
			if len(raw) == 0 {
				continue // an empty document
			}
			o, err := checkObject(where, raw, data.Namespace, cfg)
			if err != nil {
				return nil, err
			}
			key := o.gvk.GroupKind().String() + "/" + o.u.GetName()
			if prev, dup := seen[key]; dup {
				return nil, fmt.Errorf("%w: %s: %s %s is made by %s too", ErrInvalidConfig, o.where, o.gvk.Kind, o.u.GetName(), prev)
			}
			seen[key] = o.where
			lbl := o.u.GetLabels()
			if lbl == nil {
				lbl = map[string]string{}
			}
			for k, v := range componentLabels(info, componentResources) {
				lbl[k] = v
			}
			o.u.SetLabels(lbl)
			o.u.SetNamespace(data.Namespace)
			objs = append(objs, o)
		}
	}
	return objs, nil
}

// checkObject checks one rendered document: a namespaced-looking object
// with a name, in the tenant namespace or none, not one of the objects the
// other groups own.
func checkObject(where string, raw map[string]any, namespace string, cfg Config) (object, error) {
	u := &unstructured.Unstructured{Object: raw}
	bad := func(rule string, args ...any) (object, error) {
		return object{}, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, where, fmt.Sprintf(rule, args...))
	}
	apiVersion, _ := raw["apiVersion"].(string)
	kind, _ := raw["kind"].(string)
	if apiVersion == "" || kind == "" {
		return bad("apiVersion and kind are required")
	}
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return bad("apiVersion %q: %v", apiVersion, err)
	}
	gvk := gv.WithKind(kind)
	where = fmt.Sprintf("%s (%s)", where, kind)
	md, ok := raw["metadata"].(map[string]any)
	if !ok && raw["metadata"] != nil {
		return bad("metadata must be a mapping")
	}
	for _, f := range []string{"name", "namespace", "generateName"} {
		if v, set := md[f]; set {
			if _, isString := v.(string); !isString {
				return bad("metadata.%s must be a string, not %v (quote it: YAML reads y, no, on, 1 as other types)", f, v)
			}
		}
	}
	if _, isList := raw["items"]; isList || strings.HasSuffix(kind, "List") {
		return bad("lists are not taken: write one document per object")
	}
	if gvk.Group == "" && kind == "Namespace" {
		return bad("a Namespace is cluster-scoped: the tenant namespace is made by the namespace group")
	}
	if u.GetGenerateName() != "" {
		return bad("metadata.generateName is not taken: name the object, so that applying again finds it")
	}
	name := u.GetName()
	if name == "" {
		return bad("metadata.name is required")
	}
	for _, e := range validation.IsDNS1123Subdomain(name) {
		return bad("metadata.name %q: %s", name, e)
	}
	if ns := u.GetNamespace(); ns != "" && ns != namespace {
		return bad("metadata.namespace %q is not the tenant namespace %s: a tenant's resources go into its own namespace only (leave it out, or write {{.Namespace}})", ns, namespace)
	}
	for k := range u.GetLabels() {
		if reservedLabel(k) {
			return bad("label %s: labels under %s/ are set by tenancy", k, labelDomain)
		}
	}
	reserved := map[schema.GroupKind][]string{
		{Group: "networking.k8s.io", Kind: "NetworkPolicy"}:      {DefaultDenyName},
		{Kind: "ResourceQuota"}:                                  {QuotaName},
		{Kind: "LimitRange"}:                                     {LimitRangeName},
		{Group: "security.istio.io", Kind: "PeerAuthentication"}: {PeerAuthenticationName},
	}
	for _, r := range cfg.AllowRules {
		gk := schema.GroupKind{Group: "networking.k8s.io", Kind: "NetworkPolicy"}
		reserved[gk] = append(reserved[gk], r.Name)
	}
	if cfg.Ingress != nil {
		gk := schema.GroupKind{Group: "networking.k8s.io", Kind: "Ingress"}
		reserved[gk] = append(reserved[gk], cfg.Ingress.Name)
	}
	if slices.Contains(reserved[gvk.GroupKind()], name) {
		return bad("%s %s is one of the objects tenancy makes in every tenant namespace: choose another name", kind, name)
	}
	if gvk.Group == "networking.k8s.io" && kind == "NetworkPolicy" {
		// One policy allowing all would undo the default-deny policy;
		// Config.AllowRules are checked for that, manifests are not.
		return bad("a NetworkPolicy is not taken in a manifest: network rules are Config.AllowRules, which New checks")
	}
	return object{where: where, gvk: gvk, u: u}, nil
}

// limitedWriter fails writes past n bytes.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(b []byte) (int, error) {
	if len(b) > l.n {
		return 0, fmt.Errorf("renders to more than %d bytes", maxManifestBytes)
	}
	l.n -= len(b)
	return l.w.Write(b)
}

// resolve returns what discovery says of gvk: its resource and scope, and
// false if the cluster does not serve it.
func (c *Cluster) resolve(ctx context.Context, gvk schema.GroupVersionKind) (apiResource, bool, error) {
	c.mu.Lock()
	r, ok := c.resources[gvk]
	c.mu.Unlock()
	if ok {
		return r, true, nil
	}
	list, err := c.disc.ServerResourcesForGroupVersionWithContext(ctx, gvk.GroupVersion().String())
	switch {
	case apierrors.IsNotFound(err):
		return apiResource{}, false, nil
	case err != nil:
		return apiResource{}, false, fmt.Errorf("discover the API of %s: %w", gvk.Kind, err)
	}
	for _, res := range list.APIResources {
		if res.Kind == gvk.Kind && !strings.Contains(res.Name, "/") {
			r = apiResource{gvr: gvk.GroupVersion().WithResource(res.Name), namespaced: res.Namespaced}
			c.mu.Lock()
			c.resources[gvk] = r
			c.mu.Unlock()
			return r, true, nil
		}
	}
	return apiResource{}, false, nil
}

func (c *Cluster) applyResources(ctx context.Context, info tenant.Info) error {
	objs, err := c.render(info, c.cfg)
	if err != nil {
		return err
	}
	// Check every object before writing any.
	gvrs := make([]schema.GroupVersionResource, len(objs))
	for i, o := range objs {
		if !slices.Contains(c.kinds, o.gvk) {
			return fmt.Errorf("%w: %s: kind %s is made for this tenant only; the manifests must make the same kinds for every tenant (they make %v for the sample tenants)", ErrInvalidConfig, o.where, o.gvk, c.kinds)
		}
		r, ok, err := c.resolve(ctx, o.gvk)
		switch {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("%s: the cluster does not serve %s", o.where, o.gvk)
		case !r.namespaced:
			return fmt.Errorf("%w: %s: %s is cluster-scoped: a tenant's resources go into its own namespace only", ErrInvalidConfig, o.where, o.gvk)
		}
		gvrs[i] = r.gvr
	}
	ns, err := c.readyNamespace(ctx, info.ID)
	if err != nil {
		return err
	}
	// Record the kinds first, so that a Remove after a crash, or after the
	// configuration dropped a kind, still looks for every kind made.
	kinds := c.kindsFor(ns)
	if err := c.recordKinds(ctx, ns, kinds); err != nil {
		return err
	}
	want := map[string]bool{}
	for i, o := range objs {
		if _, err := c.cfg.Dynamic.Resource(gvrs[i]).Namespace(ns.Name).Apply(ctx, o.u.GetName(), o.u, c.applyOptions()); err != nil {
			return fmt.Errorf("apply %s (%s): %w", o, o.where, err)
		}
		want[o.gvk.GroupKind().String()+"/"+o.u.GetName()] = true
	}
	// Objects the manifests no longer make.
	stale, err := c.listResources(ctx, ns.Name, info.ID, kinds)
	if err != nil {
		return err
	}
	for _, s := range stale {
		if want[s.gvk.GroupKind().String()+"/"+s.u.GetName()] {
			continue
		}
		if err := c.deleteObject(ctx, s); err != nil {
			return err
		}
		c.log.InfoContext(ctx, "kube: deleted a resource the manifests no longer make", "tenant", info.ID.String(), "object", s.String())
	}
	if len(kinds) != len(c.kinds) {
		if err := c.recordKinds(ctx, ns, c.kinds); err != nil {
			return err
		}
	}
	c.log.InfoContext(ctx, "kube: applied the tenant resources", "tenant", info.ID.String(), "namespace", ns.Name, "objects", len(objs))
	return nil
}

// annotationKinds, on the tenant namespace, records the kinds of the
// tenant's resources: "v1/ConfigMap,apps/v1/Deployment".
const annotationKinds = labelDomain + "/resource-kinds"

// kindsFor returns the kinds the manifests make and those recorded on ns.
func (c *Cluster) kindsFor(ns *corev1.Namespace) []schema.GroupVersionKind {
	kinds := slices.Clone(c.kinds)
	for _, s := range strings.Split(ns.Annotations[annotationKinds], ",") {
		i := strings.LastIndex(s, "/")
		if i < 0 {
			continue
		}
		gv, err := schema.ParseGroupVersion(s[:i])
		if err != nil || s[i+1:] == "" {
			continue
		}
		if gvk := gv.WithKind(s[i+1:]); !slices.Contains(kinds, gvk) {
			kinds = append(kinds, gvk)
		}
	}
	return kinds
}

// recordKinds sets the annotation of ns to kinds. It is a merge patch, not
// an apply: the namespace group's apply (with the same field manager) must
// not drop it.
func (c *Cluster) recordKinds(ctx context.Context, ns *corev1.Namespace, kinds []schema.GroupVersionKind) error {
	var parts []string
	for _, k := range kinds {
		parts = append(parts, k.GroupVersion().String()+"/"+k.Kind)
	}
	value := strings.Join(parts, ",")
	if ns.Annotations[annotationKinds] == value {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{annotationKinds: value}}})
	if err != nil {
		return err
	}
	_, err = c.cfg.Client.CoreV1().Namespaces().Patch(ctx, ns.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: c.cfg.FieldManager})
	if err != nil {
		return fmt.Errorf("record the resource kinds on namespace %s: %w", ns.Name, err)
	}
	return nil
}

// listed is an object found in the cluster.
type listed struct {
	gvk schema.GroupVersionKind
	gvr schema.GroupVersionResource
	u   unstructured.Unstructured
}

func (l listed) String() string { return l.gvk.Kind + " " + l.u.GetNamespace() + "/" + l.u.GetName() }

// listResources lists the objects of kinds labelled as tenant id's
// resources in namespace ns.
func (c *Cluster) listResources(ctx context.Context, ns string, id tenant.ID, kinds []schema.GroupVersionKind) ([]listed, error) {
	var out []listed
	for _, gvk := range kinds {
		r, ok, err := c.resolve(ctx, gvk)
		if err != nil {
			return nil, err
		}
		if !ok || !r.namespaced {
			continue // nothing of a kind the cluster does not serve can remain
		}
		list, err := c.cfg.Dynamic.Resource(r.gvr).Namespace(ns).List(ctx, metav1.ListOptions{LabelSelector: selector(id, componentResources)})
		if err != nil {
			return nil, fmt.Errorf("list %s in %s: %w", r.gvr.Resource, ns, err)
		}
		for _, item := range list.Items {
			out = append(out, listed{gvk: gvk, gvr: r.gvr, u: item})
		}
	}
	return out, nil
}

func (c *Cluster) deleteObject(ctx context.Context, l listed) error {
	uid := l.u.GetUID()
	bg := metav1.DeletePropagationBackground
	err := c.cfg.Dynamic.Resource(l.gvr).Namespace(l.u.GetNamespace()).Delete(ctx, l.u.GetName(), metav1.DeleteOptions{
		Preconditions:     &metav1.Preconditions{UID: &uid},
		PropagationPolicy: &bg,
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete %s: %w", l, err)
	}
	return nil
}

func (c *Cluster) removeResources(ctx context.Context, id tenant.ID) error {
	ns, err := c.ownNamespace(ctx, id)
	if err != nil || ns == nil {
		return err
	}
	kinds := c.kindsFor(ns)
	objs, err := c.listResources(ctx, ns.Name, id, kinds)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if o.u.GetDeletionTimestamp() != nil {
			continue
		}
		if err := c.deleteObject(ctx, o); err != nil {
			return err
		}
	}
	if len(objs) > 0 {
		c.log.InfoContext(ctx, "kube: deleting the tenant resources", "tenant", id.String(), "namespace", ns.Name, "objects", len(objs))
	}
	return c.waitGone(ctx, "the tenant resources in "+ns.Name, func(ctx context.Context) (bool, []string, error) {
		left, err := c.listResources(ctx, ns.Name, id, kinds)
		return len(left) == 0 && err == nil, names(left), err
	})
}

func (c *Cluster) resourcesRemain(ctx context.Context, id tenant.ID) ([]string, error) {
	ns, err := c.ownNamespace(ctx, id)
	if err != nil || ns == nil {
		return nil, err
	}
	left, err := c.listResources(ctx, ns.Name, id, c.kindsFor(ns))
	return names(left), err
}

func names(l []listed) []string {
	var out []string
	for _, o := range l {
		out = append(out, o.String())
	}
	return out
}
