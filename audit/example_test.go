package audit_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net/netip"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// The examples need a PostgreSQL and a master key, so they are compiled,
// not run; the tests of this package run the same calls.

// A service's audit log: set up once by provisioning (the tenant
// migration and the control-plane tables), then appended to through a
// Writer on the request path, verified, and exported for offline
// verification.
func Example() {
	ctx := context.Background()
	var (
		acfg *store.AdminConfig // from store.ParseAdminConfig, with the platform role and login secrets
		cfg  *store.Config      // from store.ParseConfig
		km   *keys.Manager      // the request path's keys.Manager (store.DB.Keysets)
	)

	// Provisioning: every tenant's schema gets its audit log (version 100
	// of the tenant migrations, after the application's own), and the
	// control plane gets the checkpoints and the platform's trail.
	var err error
	if acfg.Migrations, err = audit.WithMigration(acfg.Migrations, 100); err != nil {
		log.Fatal(err)
	}
	admin, err := store.OpenAdmin(ctx, acfg)
	if err != nil {
		log.Fatal(err)
	}
	defer admin.Close()
	if err := audit.Install(ctx, admin); err != nil {
		log.Fatal(err)
	}

	// The request path.
	db, err := store.Open(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	lcfg := audit.DefaultConfig()
	lcfg.DB, lcfg.Keys = db, km
	logs, err := audit.New(lcfg)
	if err != nil {
		log.Fatal(err)
	}
	defer logs.Close(ctx)
	w, err := logs.NewWriter(audit.DefaultWriterConfig())
	if err != nil {
		log.Fatal(err)
	}

	ctx = tenant.NewContext(ctx, tenant.MustParseID("acme")) // from the request's token
	_, err = w.Append(ctx, audit.Event{
		Actor: "user:alice", Action: "requirement.update", Resource: "REQ-DEPLOY-004", Outcome: audit.OutcomeSuccess,
		Details: map[string]any{"field": "status", "to": "COMPLETE"}, SourceIP: netip.MustParseAddr("198.51.100.7"),
	})
	if err != nil {
		log.Fatal(err) // an invalid event (audit.ErrInvalidEvent), or a full writer
	}
	if err := w.Close(ctx); err != nil { // or Flush: every entry written, or an error saying which were not
		log.Fatal(err)
	}

	rep, err := logs.Verify(ctx)
	if err != nil {
		log.Fatal(err) // audit.ErrTampered: a *audit.ChainError names the first broken entry
	}
	fmt.Println(rep.Entries, "entries verify")

	var export bytes.Buffer
	if _, err := logs.Export(ctx, &export); err != nil {
		log.Fatal(err)
	}
	mac, err := km.MAC(ctx) // the tenant's audit key: all offline verification needs
	if err != nil {
		log.Fatal(err)
	}
	if _, err := audit.VerifyExport(&export, mac); err != nil {
		log.Fatal(err)
	}
}

// The platform's own trail, in the control plane, under the platform's
// audit key (keys provisioned for an ID that is never a tenant's).
func ExampleNewPlatform() {
	ctx := context.Background()
	var (
		admin *store.Admin
		prov  *keys.Manager // provisioning's keys.Manager (store.Admin.Keysets)
	)
	keyID := tenant.MustParseID("rtmx_platform_audit")
	if err := prov.Provision(ctx, keyID, keys.ProvisionOptions{}); err != nil {
		log.Fatal(err)
	}
	trail, err := audit.NewPlatform(ctx, audit.PlatformConfig{Admin: admin, Keys: prov, KeyID: keyID})
	if err != nil {
		log.Fatal(err)
	}
	_, err = trail.Append(ctx, audit.Event{Actor: "service:provisioner", Action: "tenant.provision", Resource: "tenant/acme", Outcome: audit.OutcomeSuccess,
		Details: map[string]any{"tier": "enterprise"}})
	if err != nil {
		log.Fatal(err)
	}
}
