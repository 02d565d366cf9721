package kube_test

import (
	"fmt"
	"testing"

	"github.com/rtmx-ai/tenancy/lifecycle/kube"
	"github.com/rtmx-ai/tenancy/tenant"
)

// BenchmarkApplyNewTenant applies the three groups for a new enterprise
// tenant per iteration, against the real API server.
func BenchmarkApplyNewTenant(b *testing.B) {
	e := benchEnv(b)
	n := 0
	for b.Loop() {
		n++
		in := tenant.Info{ID: tenant.MustParseID(fmt.Sprintf("bench%d", n)), Name: "Bench", Tier: tenant.TierEnterprise, Region: "us-east-1"}
		for _, g := range []*kube.Group{e.k.Namespace(), e.k.Resources(), e.k.Ingress()} {
			if err := g.Apply(b.Context(), in); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkApplyAgain applies the three groups for a tenant that has them
// already: what a resumed provisioning costs.
func BenchmarkApplyAgain(b *testing.B) {
	e := benchEnv(b)
	in := tenant.Info{ID: tenant.MustParseID("bench_again"), Name: "Bench", Tier: tenant.TierEnterprise, Region: "us-east-1"}
	for b.Loop() {
		for _, g := range []*kube.Group{e.k.Namespace(), e.k.Resources(), e.k.Ingress()} {
			if err := g.Apply(b.Context(), in); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func benchEnv(b *testing.B) *env {
	b.Helper()
	return newEnv(b)
}
