package store_test

import (
	"context"
	"fmt"
	"log"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Open a store with a least-privilege application role and an admin role,
// create a tenant, and work in its scope. (Needs a running PostgreSQL, so it
// is compiled but not run by go test; examples/quickstart runs the same.)
func ExampleOpenConfig() {
	ctx := context.Background()
	cfg, err := store.ParseConfig(
		"postgres://app@127.0.0.1:5432/rtmx",   // NOINHERIT, no superuser, no BYPASSRLS
		"postgres://admin@127.0.0.1:5432/rtmx", // DDL and provisioning only
	)
	if err != nil {
		log.Fatal(err)
	}
	cfg.Tables = []store.Table{{
		Name:    "requirements",
		Columns: "req_id text PRIMARY KEY, requirement_text text NOT NULL, status text NOT NULL DEFAULT 'MISSING'",
	}}
	db, err := store.OpenConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err) // e.g. store.ErrUnsafeAppRole, saying what to fix
	}
	defer db.Close()

	id, err := tenant.ParseID("abc123")
	if err != nil {
		log.Fatal(err)
	}
	if err := db.CreateTenant(ctx, tenant.Info{ID: id, Name: "Acme Defense Corp", Tier: tenant.TierStandard}); err != nil {
		log.Fatal(err)
	}
	ctx = tenant.NewContext(ctx, id)
	if _, err := db.Exec(ctx, `INSERT INTO requirements (req_id, requirement_text) VALUES ($1, $2)`, "REQ-1", "isolate tenants"); err != nil {
		log.Fatal(err)
	}
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM requirements`).Scan(&n); err != nil {
		log.Fatal(err)
	}
	fmt.Println(n)
}

// A transaction scoped to the tenant of the context: role, search_path and
// app.tenant_id are set transaction-locally, in the same round trip as BEGIN
// and the first statement.
func ExampleDB_Tx() {
	var db *store.DB // from store.OpenConfig
	ctx := tenant.NewContext(context.Background(), tenant.MustParseID("abc123"))
	err := db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE requirements SET status = 'COMPLETE' WHERE req_id = $1`, "REQ-1"); err != nil {
			return err // rolled back
		}
		_, err := tx.Exec(ctx, `INSERT INTO requirements (req_id, requirement_text) VALUES ($1, $2)`, "REQ-2", "audit per tenant")
		return err // nil commits
	})
	if err != nil {
		log.Print(err)
	}
}
