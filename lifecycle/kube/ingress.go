package kube

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"text/template"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"

	"github.com/rtmx-ai/tenancy/tenant"
)

const componentIngress = "ingress"

// parseIngress checks ic and parses its templates, rendering them for the
// sample tenants.
func (c *Cluster) parseIngress(p *problems, ic *IngressConfig) {
	if ic == nil {
		return
	}
	for _, e := range validation.IsDNS1123Subdomain(ic.Name) {
		p.add("Ingress.Name", e)
	}
	for _, e := range validation.IsDNS1123Subdomain(ic.ClassName) {
		p.add("Ingress.ClassName", e)
	}
	for _, e := range validation.IsDNS1035Label(ic.Service) {
		p.add("Ingress.Service", e)
	}
	if ic.Port < 1 || ic.Port > 65535 {
		p.add("Ingress.Port", "must be a port number, 1 to 65535")
	}
	parse := func(field, text string) *template.Template {
		t, err := template.New(field).Option("missingkey=error").Parse(text)
		if err != nil {
			p.add(field, err.Error())
			return nil
		}
		return t
	}
	if ic.Host == "" {
		p.add("Ingress.Host", "is required")
	} else if c.host = parse("Ingress.Host", ic.Host); c.host != nil {
	hosts:
		for _, info := range samples() {
			// Tenants that differ in their ID only (the tier, region and
			// name are shared) must get different hosts: a template on
			// the tier or region alone would route tenants to each
			// other's ingress.
			seen := map[string]tenant.ID{}
			for _, id := range sampleIDs() {
				info.ID = id
				h, err := renderName(c.host, info)
				if err != nil {
					p.add("Ingress.Host", err.Error())
					break hosts
				}
				if err := checkHost(h); err != nil {
					p.add("Ingress.Host", fmt.Sprintf("for a sample tenant: %v", err))
					break hosts
				}
				if other, dup := seen[h]; dup {
					p.add("Ingress.Host", fmt.Sprintf("must differ from tenant to tenant (use {{.DNSLabel}}): tenants %s and %s of one tier and region both get %q", other, id, h))
					break hosts
				}
				seen[h] = id
			}
		}
	}
	if ic.TLSSecret != "" {
		if c.tlsSecret = parse("Ingress.TLSSecret", ic.TLSSecret); c.tlsSecret != nil {
			for _, info := range samples() {
				s, err := renderName(c.tlsSecret, info)
				if err == nil {
					if errs := validation.IsDNS1123Subdomain(s); len(errs) > 0 {
						err = fmt.Errorf("for a sample tenant, %q: %s", s, strings.Join(errs, "; "))
					}
				}
				if err != nil {
					p.add("Ingress.TLSSecret", err.Error())
					break
				}
			}
		}
	}
}

// renderName executes a one-line template (a host, a secret name) for info.
func renderName(t *template.Template, info tenant.Info) (string, error) {
	var b bytes.Buffer
	if err := t.Execute(&limitedWriter{w: &b, n: 1024}, dataFor(info)); err != nil {
		return "", err
	}
	return b.String(), nil
}

func checkHost(h string) error {
	if strings.Contains(h, "*") {
		return fmt.Errorf("host %q: a wildcard host is not taken", h)
	}
	if errs := validation.IsDNS1123Subdomain(h); len(errs) > 0 {
		return fmt.Errorf("host %q: %s", h, strings.Join(errs, "; "))
	}
	return nil
}

func (c *Cluster) applyIngress(ctx context.Context, info tenant.Info) error {
	ic := c.cfg.Ingress
	if ic == nil || info.Tier != tenant.TierEnterprise {
		return nil
	}
	host, err := renderName(c.host, info)
	if err == nil {
		err = checkHost(host)
	}
	if err != nil {
		return fmt.Errorf("%w: Ingress.Host: %v", ErrInvalidConfig, err)
	}
	ns, err := c.readyNamespace(ctx, info.ID)
	if err != nil {
		return err
	}
	backend := networkingv1ac.IngressBackend().WithService(
		networkingv1ac.IngressServiceBackend().WithName(ic.Service).
			WithPort(networkingv1ac.ServiceBackendPort().WithNumber(ic.Port)))
	spec := networkingv1ac.IngressSpec().WithIngressClassName(ic.ClassName).WithRules(
		networkingv1ac.IngressRule().WithHost(host).WithHTTP(
			networkingv1ac.HTTPIngressRuleValue().WithPaths(
				networkingv1ac.HTTPIngressPath().WithPath("/").WithPathType(networkingv1.PathTypePrefix).WithBackend(backend))))
	if c.tlsSecret != nil {
		secret, err := renderName(c.tlsSecret, info)
		if err == nil && len(validation.IsDNS1123Subdomain(secret)) > 0 {
			err = fmt.Errorf("%q is not a DNS-1123 subdomain", secret)
		}
		if err != nil {
			return fmt.Errorf("%w: Ingress.TLSSecret: %v", ErrInvalidConfig, err)
		}
		spec = spec.WithTLS(networkingv1ac.IngressTLS().WithHosts(host).WithSecretName(secret))
	}
	ac := networkingv1ac.Ingress(ic.Name, ns.Name).WithLabels(componentLabels(info, componentIngress)).WithSpec(spec)
	ings := c.cfg.Client.NetworkingV1().Ingresses(ns.Name)
	if _, err := ings.Apply(ctx, ac, c.applyOptions()); err != nil {
		return fmt.Errorf("apply Ingress %s/%s: %w", ns.Name, ic.Name, err)
	}
	// A dedicated ingress of an earlier name.
	list, err := ings.List(ctx, metav1.ListOptions{LabelSelector: selector(info.ID, componentIngress)})
	if err != nil {
		return fmt.Errorf("list Ingresses in %s: %w", ns.Name, err)
	}
	for _, ing := range list.Items {
		if ing.Name != ic.Name {
			if err := c.deleteIngress(ctx, &ing); err != nil {
				return err
			}
		}
	}
	c.log.InfoContext(ctx, "kube: applied the dedicated ingress", "tenant", info.ID.String(), "namespace", ns.Name, "host", host)
	return nil
}

func (c *Cluster) deleteIngress(ctx context.Context, ing *networkingv1.Ingress) error {
	err := c.cfg.Client.NetworkingV1().Ingresses(ing.Namespace).Delete(ctx, ing.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &ing.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete Ingress %s/%s: %w", ing.Namespace, ing.Name, err)
	}
	return nil
}

func (c *Cluster) listIngresses(ctx context.Context, id tenant.ID) ([]networkingv1.Ingress, error) {
	ns, err := c.ownNamespace(ctx, id)
	if err != nil || ns == nil {
		return nil, err
	}
	list, err := c.cfg.Client.NetworkingV1().Ingresses(ns.Name).List(ctx, metav1.ListOptions{LabelSelector: selector(id, componentIngress)})
	if err != nil {
		return nil, fmt.Errorf("list Ingresses in %s: %w", ns.Name, err)
	}
	return list.Items, nil
}

func (c *Cluster) removeIngress(ctx context.Context, id tenant.ID) error {
	ings, err := c.listIngresses(ctx, id)
	if err != nil || len(ings) == 0 {
		return err
	}
	for i := range ings {
		if err := c.deleteIngress(ctx, &ings[i]); err != nil {
			return err
		}
	}
	c.log.InfoContext(ctx, "kube: deleting the dedicated ingress", "tenant", id.String())
	return c.waitGone(ctx, "the dedicated ingress", func(ctx context.Context) (bool, []string, error) {
		left, err := c.ingressRemains(ctx, id)
		return len(left) == 0 && err == nil, left, err
	})
}

func (c *Cluster) ingressRemains(ctx context.Context, id tenant.ID) ([]string, error) {
	ings, err := c.listIngresses(ctx, id)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ing := range ings {
		out = append(out, "Ingress "+ing.Namespace+"/"+ing.Name)
	}
	return out, nil
}
