package telemetry_test

import (
	"fmt"
	"testing"

	"github.com/rtmx-ai/tenancy/telemetry"
	"github.com/rtmx-ai/tenancy/tenant"
)

// BenchmarkLabel is Guard.Label beside the same lookup without the guard
// (mode=map: a read of a map of the admitted tenants), for an admitted
// tenant (the hot path) and one that gets Other (the guard full).
func BenchmarkLabel(b *testing.B) {
	ids := make([]tenant.ID, 1000)
	set := make(map[tenant.ID]struct{}, len(ids))
	for i := range ids {
		ids[i] = tenant.MustParseID(fmt.Sprintf("tenant%d", i))
		set[ids[i]] = struct{}{}
	}
	g, err := telemetry.NewGuard(telemetry.GuardConfig{Admit: len(ids)})
	if err != nil {
		b.Fatal(err)
	}
	for _, id := range ids {
		g.Label(id)
	}
	outside := tenant.MustParseID("outside")
	var sink string
	b.Run("tenant=admitted/mode=map", func(b *testing.B) {
		i := 0
		for b.Loop() {
			id := ids[i%len(ids)]
			if _, ok := set[id]; ok {
				sink = id.String()
			}
			i++
		}
	})
	b.Run("tenant=admitted/mode=guard", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			sink = g.Label(ids[i%len(ids)])
			i++
		}
	})
	b.Run("tenant=other/mode=map", func(b *testing.B) {
		for b.Loop() {
			if _, ok := set[outside]; !ok {
				sink = telemetry.Other
			}
		}
	})
	b.Run("tenant=other/mode=guard", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink = g.Label(outside)
		}
	})
	b.Run("tenant=admitted/mode=guard/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				_ = g.Label(ids[i%len(ids)])
				i++
			}
		})
	})
	_ = sink
}
