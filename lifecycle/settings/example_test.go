package settings_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Example needs PostgreSQL and a master key, so it is compiled, not run;
// the tests of this package run the same calls.
//
// Provisioning gives every tenant the settings table (a tenant
// migration); the request path then reads and writes the settings of
// the request's tenant only.
func Example() {
	ctx := context.Background()
	var (
		acfg *store.AdminConfig // from store.ParseAdminConfig, with the platform role and login secrets
		db   *store.DB          // from store.Open
		km   *keys.Manager      // the request path's keys.Manager (db.Keysets())
	)
	var err error
	if acfg.Migrations, err = settings.WithMigration(acfg.Migrations, 101); err != nil {
		log.Fatal(err)
	}

	s, err := settings.New(db, km)
	if err != nil {
		log.Fatal(err)
	}
	// The users section's roles are authz's: Settings is a RoleSource.
	mcfg := authz.DefaultConfig()
	mcfg.Roles = s
	_ = mcfg // with a Verifier and a Directory, to authz.NewMiddleware

	ctx = tenant.NewContext(ctx, tenant.MustParseID("acme")) // from the request's token

	// Connect Jira: the token is sealed with acme's key.
	in := settings.Integrations{Jira: &settings.Jira{
		BaseURL: "https://acme.atlassian.net", Project: "RTM", User: "bot@acme.example",
		APIToken: settings.NewSecret("the-api-token"),
	}}
	v, err := s.Put(ctx, in, 0, "alice@acme.example")
	var invalid *settings.Error
	switch {
	case errors.As(err, &invalid):
		for _, p := range invalid.Problems {
			fmt.Println(p) // "jira.base_url: must be an https URL (https://...)"
		}
		return
	case errors.Is(err, settings.ErrConflict):
		return // changed meanwhile: Get, apply the change again, Put with the new version
	case err != nil:
		log.Fatal(err)
	}

	// Read it back: the token is redacted, and putting the value back
	// keeps it.
	rev, err := s.Get(ctx, settings.SectionIntegrations)
	if err != nil {
		log.Fatal(err)
	}
	in = rev.Value.(settings.Integrations)
	fmt.Println(in.Jira.APIToken) // [redacted]
	in.Jira.Project = "OPS"
	if _, err := s.Put(ctx, in, v, "alice@acme.example"); err != nil {
		log.Fatal(err)
	}

	// The Jira client opens it.
	token, err := s.Secret(ctx, settings.SecretJiraAPIToken)
	if err != nil {
		log.Fatal(err)
	}
	_ = token // never log it

	// Before writing a requirement, check its custom fields.
	if err := s.ValidateCustomFields(ctx, json.RawMessage(`{"severity":"high"}`)); err != nil {
		log.Print(err) // settings.ErrInvalidCustomFields, naming "/severity"
	}
}

// ParseValue reads a section's JSON strictly and names every problem.
func ExampleParseValue() {
	_, err := settings.ParseValue(settings.SectionBranding, []byte(`{
	  "product_name": "Acme RTM",
	  "logo_url": "http://cdn.acme.example/logo.svg",
	  "primary_color": "navy",
	  "font": "Comic Sans"
	}`))
	var e *settings.Error
	if errors.As(err, &e) {
		for _, p := range e.Problems {
			fmt.Println(p)
		}
	}
	// Output:
	// font: is not a known field
	// logo_url: must be an https URL (https://...)
	// primary_color: must be a colour as #rrggbb (six hexadecimal digits)
}

// A set secret prints, logs and marshals redacted.
func ExampleSecret() {
	s := settings.NewSecret("ghp_0123456789")
	b, _ := json.Marshal(s)
	fmt.Println(s, string(b))
	fmt.Printf("%#v %q\n", s, s)
	// Output:
	// [redacted] "[redacted]"
	// [redacted] [redacted]
}
