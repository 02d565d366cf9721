package telemetry_test

import (
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/telemetry"
	"github.com/rtmx-ai/tenancy/tenant"
)

func ids(prefix string, n int) []tenant.ID {
	out := make([]tenant.ID, n)
	for i := range out {
		out[i] = tenant.MustParseID(fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func newGuard(t testing.TB, cfg telemetry.GuardConfig) *telemetry.Guard {
	t.Helper()
	g, err := telemetry.NewGuard(cfg)
	require.NoError(t, err)
	return g
}

func TestGuardAllowedThenFirstComeThenOther(t *testing.T) {
	top := tenant.MustParseID("acme")
	g := newGuard(t, telemetry.GuardConfig{Allow: []tenant.ID{top}, Admit: 3})
	first := ids("early", 3)
	for _, id := range first {
		require.Equal(t, id.String(), g.Label(id))
	}
	for _, id := range ids("late", 50) {
		require.Equal(t, telemetry.Other, g.Label(id))
	}
	// An allowed tenant is labeled even when it comes after the others
	// filled Admit, and the admitted keep their labels.
	require.Equal(t, "acme", g.Label(top))
	for _, id := range first {
		require.Equal(t, id.String(), g.Label(id))
	}
	require.Equal(t, telemetry.Key.String("early0"), g.Attribute(first[0]))
	require.Equal(t, telemetry.Key.String(telemetry.Other), g.Attribute(tenant.MustParseID("late0")))
}

func TestGuardZeroID(t *testing.T) {
	g := newGuard(t, telemetry.GuardConfig{Admit: 1})
	require.Equal(t, telemetry.Other, g.Label(tenant.ID{}))
	// The zero ID took no place: the first tenant still gets one.
	require.Equal(t, "acme", g.Label(tenant.MustParseID("acme")))
	require.Equal(t, telemetry.Other, g.Label(tenant.MustParseID("globex")))
}

func TestGuardZeroConfigLabelsEveryoneOther(t *testing.T) {
	g := newGuard(t, telemetry.GuardConfig{})
	for _, id := range ids("t", 10) {
		require.Equal(t, telemetry.Other, g.Label(id))
	}
	g = newGuard(t, telemetry.GuardConfig{Allow: []tenant.ID{tenant.MustParseID("acme")}})
	require.Equal(t, "acme", g.Label(tenant.MustParseID("acme")))
	require.Equal(t, telemetry.Other, g.Label(tenant.MustParseID("globex")))
}

func TestDefaultGuardConfig(t *testing.T) {
	g := newGuard(t, telemetry.DefaultGuardConfig())
	labels := map[string]int{}
	for _, id := range ids("t", telemetry.DefaultAdmit+10) {
		labels[g.Label(id)]++
	}
	require.Len(t, labels, telemetry.DefaultAdmit+1)
	require.Equal(t, 10, labels[telemetry.Other])
}

func TestNewGuardRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  telemetry.GuardConfig
		want string
	}{
		{telemetry.GuardConfig{Admit: -1}, "GuardConfig.Admit must be between 0 and 1048576, got -1"},
		{telemetry.GuardConfig{Admit: telemetry.MaxAdmit + 1}, "GuardConfig.Admit must be between 0 and 1048576, got 1048577"},
		{telemetry.GuardConfig{Allow: []tenant.ID{tenant.MustParseID("acme"), {}}}, "GuardConfig.Allow[1] is the zero ID"},
	} {
		_, err := telemetry.NewGuard(tc.cfg)
		require.ErrorIs(t, err, telemetry.ErrInvalidConfig)
		require.ErrorContains(t, err, tc.want)
		require.Equal(t, 1, countPrefix(err.Error(), "telemetry:"), err.Error())
	}
	g, err := telemetry.NewGuard(telemetry.GuardConfig{Admit: telemetry.MaxAdmit})
	require.NoError(t, err)
	require.NotNil(t, g)
}

func countPrefix(s, p string) (n int) {
	for i := 0; i+len(p) <= len(s); i++ {
		if s[i:i+len(p)] == p {
			n++
		}
	}
	return n
}

// TestGuardConcurrentAdmission: many goroutines racing to be admitted get
// exactly Admit labels between them, and every goroutine sees the same
// label for the same tenant.
func TestGuardConcurrentAdmission(t *testing.T) {
	const admit = 7
	g := newGuard(t, telemetry.GuardConfig{Admit: admit})
	all := ids("t", 200)
	var mu sync.Mutex
	seen := map[tenant.ID]string{}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range all {
				id := all[(i*(w+1))%len(all)]
				l := g.Label(id)
				mu.Lock()
				if prev, ok := seen[id]; ok {
					require.Equal(t, prev, l, "tenant %s", id)
				}
				seen[id] = l
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	own := 0
	for id, l := range seen {
		if l != telemetry.Other {
			require.Equal(t, id.String(), l)
			own++
		}
	}
	require.Equal(t, admit, own)
}

// TestGuardMemoryBoundedUnder100kTenants: 100,000 distinct tenants
// through a full guard allocate nothing (so the guard cannot grow), get
// Other, and leave the admitted tenants' labels in place.
func TestGuardMemoryBoundedUnder100kTenants(t *testing.T) {
	const admit = 1000
	g := newGuard(t, telemetry.GuardConfig{Admit: admit})
	many := ids("tenant", 100_000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	labels := map[string]struct{}{}
	for _, id := range many {
		l := g.Label(id)
		if l != telemetry.Other {
			labels[l] = struct{}{}
		}
	}
	runtime.ReadMemStats(&after)
	require.Len(t, labels, admit)
	// What the guard kept: the admitted tenants (a map entry each) and
	// the labels map of this test; nothing per tenant after them.
	grew := after.TotalAlloc - before.TotalAlloc
	require.Less(t, grew, uint64(admit*1024), "allocated %d bytes for 100k tenants", grew)

	fresh := ids("fresh", 1000)
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		if g.Label(fresh[i%len(fresh)]) != telemetry.Other {
			t.Fatal("a tenant was admitted past Admit")
		}
		i++
	})
	require.Zero(t, allocs)
	require.Equal(t, "tenant0", g.Label(many[0]))
	require.Equal(t, "tenant999", g.Label(many[999]))
	require.Equal(t, telemetry.Other, g.Label(many[1000]))
}

func TestAttributeIsExact(t *testing.T) {
	require.Equal(t, "tenant.id", string(telemetry.Key))
	require.Equal(t, telemetry.Key.String("acme"), telemetry.Attribute(tenant.MustParseID("acme")))
}

// FuzzGuard: whatever tenant IDs come, in any order, a label is the
// tenant itself or Other, a tenant's label never changes, and at most
// Admit tenants get one of their own.
func FuzzGuard(f *testing.F) {
	f.Add("acme globex initech acme umbrella hooli", uint8(2))
	f.Add("a b c d e f g h", uint8(0))
	f.Add("x x x x", uint8(1))
	f.Fuzz(func(t *testing.T, names string, admit uint8) {
		g, err := telemetry.NewGuard(telemetry.GuardConfig{Admit: int(admit)})
		require.NoError(t, err)
		seen := map[tenant.ID]string{}
		own := 0
		start := 0
		for i := 0; i <= len(names); i++ {
			if i < len(names) && names[i] != ' ' {
				continue
			}
			id, err := tenant.ParseID(names[start:i])
			start = i + 1
			if err != nil {
				continue
			}
			l := g.Label(id)
			require.True(t, l == id.String() || l == telemetry.Other, "label %q of %s", l, id)
			if prev, ok := seen[id]; ok {
				require.Equal(t, prev, l)
				continue
			}
			seen[id] = l
			if l != telemetry.Other {
				own++
			}
		}
		require.LessOrEqual(t, own, int(admit))
		if len(seen) >= int(admit) {
			require.Equal(t, int(admit), own)
		}
	})
}

// A nil Guard (declared, never made by NewGuard) labels every tenant
// Other instead of panicking in a request's path.
func TestNilGuardLabelsOther(t *testing.T) {
	var g *telemetry.Guard
	id := tenant.MustParseID("acme")
	require.Equal(t, telemetry.Other, g.Label(id))
	require.Equal(t, telemetry.Key.String(telemetry.Other), g.Attribute(id))
}
