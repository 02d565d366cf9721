package kube_test

import (
	"context"
	"fmt"
	"log"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rtmx-ai/tenancy/lifecycle/kube"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Example provisions a tenant's namespace, lists what it made, and removes
// it. It runs on client-go's fake clients; against a cluster, make them
// with kubernetes.NewForConfig and dynamic.NewForConfig.
func Example() {
	ctx := context.Background()
	// The fake dynamic client must be told the list kind of each
	// resource it lists: here Istio's PeerAuthentication.
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		{Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"}: "PeerAuthenticationList",
	})
	cfg := kube.DefaultConfig(fake.NewClientset(), dyn)
	cfg.AllowRules = append(cfg.AllowRules, kube.AllowFromNamespace("allow-from-ingress", "ingress-nginx"))
	k, err := kube.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	acme := tenant.Info{ID: tenant.MustParseID("acme_corp"), Name: "Acme Corp", Tier: tenant.TierEnterprise, Region: "us-gov-east-1"}
	if err := k.Namespace().Apply(ctx, acme); err != nil {
		log.Fatal(err)
	}
	made, err := k.Namespace().Remains(ctx, acme.ID)
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range made {
		fmt.Println(m)
	}
	if err := k.Namespace().Remove(ctx, acme.ID); err != nil {
		log.Fatal(err)
	}
	left, err := k.Namespace().Remains(ctx, acme.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("left after Remove:", len(left))
	// Output:
	// Namespace tenant-acme-corp
	// NetworkPolicy tenant-acme-corp/allow-dns-egress
	// NetworkPolicy tenant-acme-corp/allow-from-ingress
	// NetworkPolicy tenant-acme-corp/allow-within-namespace
	// NetworkPolicy tenant-acme-corp/default-deny
	// ResourceQuota tenant-acme-corp/tenant-quota
	// LimitRange tenant-acme-corp/tenant-limits
	// left after Remove: 0
}
