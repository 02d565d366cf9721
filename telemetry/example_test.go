package telemetry_test

import (
	"fmt"

	"github.com/rtmx-ai/tenancy/telemetry"
	"github.com/rtmx-ai/tenancy/tenant"
)

// A guard that always labels acme, admits two more tenants first come,
// and aggregates the rest under "_other".
func ExampleGuard() {
	g, err := telemetry.NewGuard(telemetry.GuardConfig{
		Allow: []tenant.ID{tenant.MustParseID("acme")},
		Admit: 2,
	})
	if err != nil {
		panic(err)
	}
	for _, name := range []string{"globex", "initech", "umbrella", "acme", "globex"} {
		fmt.Println(name, "->", g.Label(tenant.MustParseID(name)))
	}
	fmt.Println(g.Attribute(tenant.MustParseID("hooli")).Value.AsString())
	// Output:
	// globex -> globex
	// initech -> initech
	// umbrella -> _other
	// acme -> acme
	// globex -> globex
	// _other
}
