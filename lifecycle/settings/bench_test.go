package settings_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/tenant"
)

// BenchmarkGet reads the latest integrations of one tenant (one query,
// the value parsed and checked again).
func BenchmarkGet(b *testing.B) {
	e := newEnv(b, tenant.TierStandard)
	_, ctx := e.newTenant(b, "benchget")
	_, err := e.s.Put(ctx, sampleIntegrations("bench-0123456789"), 0, "alice@acme.example")
	require.NoError(b, err)
	for b.Loop() {
		if _, err := e.s.Get(ctx, settings.SectionIntegrations); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSecret opens one secret (one query, one AEAD open).
func BenchmarkSecret(b *testing.B) {
	e := newEnv(b, tenant.TierStandard)
	_, ctx := e.newTenant(b, "benchsecret")
	_, err := e.s.Put(ctx, sampleIntegrations("bench-0123456789"), 0, "alice@acme.example")
	require.NoError(b, err)
	for b.Loop() {
		if _, err := e.s.Secret(ctx, settings.SecretGitHubToken); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPut adds a revision of integrations that keeps its secrets
// (a query, an open, a seal, an insert).
func BenchmarkPut(b *testing.B) {
	e := newEnv(b, tenant.TierStandard)
	_, ctx := e.newTenant(b, "benchput")
	v, err := e.s.Put(ctx, sampleIntegrations("bench-0123456789"), 0, "alice@acme.example")
	require.NoError(b, err)
	rev, err := e.s.Get(ctx, settings.SectionIntegrations)
	require.NoError(b, err)
	for b.Loop() {
		if v, err = e.s.Put(ctx, rev.Value, v, "alice@acme.example"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidateCustomFields checks a record's custom fields against
// the tenant's schema (one query; the compiled schema is cached).
func BenchmarkValidateCustomFields(b *testing.B) {
	e := newEnv(b, tenant.TierStandard)
	_, ctx := e.newTenant(b, "benchcf")
	_, err := e.s.Put(ctx, settings.CustomFields{Schema: json.RawMessage(aSchema)}, 0, "alice@acme.example")
	require.NoError(b, err)
	doc := []byte(`{"severity":"high","due":"2027-01-31","owner":"carol@a.example","tags":["gov"]}`)
	for b.Loop() {
		if err := e.s.ValidateCustomFields(ctx, doc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseValue decodes and checks a users section of 1000 users,
// without the database.
func BenchmarkParseValue(b *testing.B) {
	u := settings.Users{}
	for i := range 1000 {
		u.Users = append(u.Users, settings.User{Email: "user" + string(rune('a'+i%26)) + itoa(i) + "@acme.example", Roles: []string{"editor"}})
	}
	u.Users[0].Roles = []string{"owner"}
	doc, err := json.Marshal(u)
	require.NoError(b, err)
	b.SetBytes(int64(len(doc)))
	for b.Loop() {
		if _, err := settings.ParseValue(settings.SectionUsers, doc); err != nil {
			b.Fatal(err)
		}
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}
