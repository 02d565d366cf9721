package store_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// The examples need a PostgreSQL, so they are compiled, not run. The
// connection strings name no password: pgx reads it from PGPASSWORD or
// ~/.pgpass. The login secret is 32 random bytes or more, kept with the
// platform's other secrets and given to the Admin and to every DB.

// The admin side: set up the control plane and create a tenant, with its
// schema, tables and login role. The admin role has CREATEROLE and owns
// the database; the platform role exists, with LOGIN and no privileges of
// its own.
func ExampleOpenAdmin() {
	ctx := context.Background()
	key, err := base64.StdEncoding.DecodeString(os.Getenv("TENANCY_LOGIN_SECRET"))
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := store.ParseAdminConfig("postgres://rtmx_admin@db.internal:5432/rtmx?sslmode=verify-full")
	if err != nil {
		log.Fatal(err)
	}
	cfg.PlatformRole = "rtmx_platform"
	cfg.RolePrefix = "rtmx_"
	cfg.LoginSecrets = []store.LoginSecret{{Version: 1, Key: key}}
	cfg.Tables = []store.Table{{
		Name:    "requirements",
		Columns: `req_id text PRIMARY KEY, requirement_text text NOT NULL, status text NOT NULL DEFAULT 'MISSING'`,
	}}
	admin, err := store.OpenAdmin(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer admin.Close()

	id, err := tenant.ParseID("abc123")
	if err != nil {
		log.Fatal(err)
	}
	err = admin.CreateTenant(ctx, tenant.Info{ID: id, Name: "Acme", Tier: tenant.TierStandard, Region: "us-gov-east-1"})
	if err != nil {
		log.Fatal(err)
	}
}

// The request path: a DB connects as the platform role and runs each
// tenant's work on connections logged in as that tenant. The tenant comes
// from the authenticated request, parsed at the boundary, and travels in
// the context only.
func ExampleOpen() {
	ctx := context.Background()
	key, err := base64.StdEncoding.DecodeString(os.Getenv("TENANCY_LOGIN_SECRET"))
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := store.ParseConfig("postgres://rtmx_platform@db.internal:5432/rtmx?sslmode=verify-full",
		store.LoginSecret{Version: 1, Key: key})
	if err != nil {
		log.Fatal(err)
	}
	db, err := store.Open(ctx, cfg) // refuses an unsafe platform role
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// In a request handler:
	id, err := tenant.ParseID("abc123")
	if err != nil {
		log.Fatal(err)
	}
	ctx = tenant.NewContext(ctx, id)
	rows, err := db.Query(ctx, `SELECT req_id, status FROM requirements ORDER BY req_id`)
	if err != nil {
		log.Fatal(err)
	}
	var reqID, status string
	_, err = pgx.ForEachRow(rows, []any{&reqID, &status}, func() error {
		fmt.Println(reqID, status) // abc123's rows only
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}

// A transaction of the tenant in the context: committed if the function
// returns nil, rolled back otherwise. Every statement in it takes the same
// context (or one carrying the same tenant).
func ExampleDB_Tx() {
	ctx := context.Background()
	key, err := base64.StdEncoding.DecodeString(os.Getenv("TENANCY_LOGIN_SECRET"))
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := store.ParseConfig("postgres://rtmx_platform@db.internal:5432/rtmx?sslmode=verify-full",
		store.LoginSecret{Version: 1, Key: key})
	if err != nil {
		log.Fatal(err)
	}
	db, err := store.Open(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	ctx = tenant.NewContext(ctx, tenant.MustParseID("abc123"))
	err = db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO requirements (req_id, requirement_text) VALUES ($1, $2)`,
			"REQ-SEC-002", "E2E encryption for tenant keys"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE requirements SET status = 'COMPLETE' WHERE req_id = $1`, "REQ-DEPLOY-004")
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
}

// Tenants of the other tiers: an enterprise tenant in a database of its
// own on the shared cluster, and a government tenant on a dedicated
// cluster registered by name. The DBs of request handling get the same
// cluster by name (Config.AddCluster: host, port and TLS; each tenant
// logs in as itself).
func ExampleOnCluster() {
	ctx := context.Background()
	cfg, err := store.ParseAdminConfig("postgres://rtmx_admin@db.internal:5432/rtmx?sslmode=verify-full")
	if err != nil {
		log.Fatal(err)
	}
	cfg.PlatformRole = "rtmx_platform"
	cfg.LoginSecrets = []store.LoginSecret{{Version: 1, Key: []byte(os.Getenv("TENANCY_LOGIN_SECRET"))}}
	if err := cfg.AddCluster("gov_east", "postgres://rtmx_admin@gov-east.internal:5432/postgres?sslmode=verify-full"); err != nil {
		log.Fatal(err)
	}
	admin, err := store.OpenAdmin(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer admin.Close()
	if err := admin.RegisterCluster(ctx, "gov_east"); err != nil {
		log.Fatal(err)
	}
	initech := tenant.MustParseID("initech")
	if err := admin.CreateTenant(ctx, tenant.Info{ID: initech, Name: "Initech", Tier: tenant.TierEnterprise}); err != nil {
		log.Fatal(err)
	}
	dod := tenant.MustParseID("dod")
	if err := admin.CreateTenant(ctx, tenant.Info{ID: dod, Name: "DoD", Tier: tenant.TierGovernment}, store.OnCluster("gov_east")); err != nil {
		log.Fatal(err)
	}
}

// Fleet migrations: the tenant schema as SQL files, here embedded in the
// binary from a directory migrations/ of 0001_requirements.sql,
// 0002_links.sql, ... Every new tenant gets them all; Migrate applies the
// new ones to every tenant, a canary of 10 first.
func ExampleAdmin_Migrate() {
	ctx := context.Background()
	cfg, err := store.ParseAdminConfig("postgres://rtmx_admin@db.internal:5432/rtmx?sslmode=verify-full")
	if err != nil {
		log.Fatal(err)
	}
	cfg.PlatformRole = "rtmx_platform"
	cfg.LoginSecrets = []store.LoginSecret{{Version: 1, Key: []byte(os.Getenv("TENANCY_LOGIN_SECRET"))}}
	cfg.Migrations = os.DirFS("migrations") // or an embed.FS, via fs.Sub
	admin, err := store.OpenAdmin(ctx, cfg) // fails if an applied file changed
	if err != nil {
		log.Fatal(err)
	}
	defer admin.Close()
	report, err := admin.Migrate(ctx, store.MigrateOptions{
		Canary: 10,
		Progress: func(p store.MigrateProgress) {
			fmt.Printf("\r%d/%d migrated, %d failed", p.Migrated, p.Total, p.Failed)
		},
	})
	if err != nil {
		if report == nil { // the options or the control plane, before any tenant
			log.Fatal(err)
		}
		for _, f := range report.Failed {
			log.Printf("tenant %s, migration %d (%s): %v", f.Tenant, f.Version, f.File, f.Err)
		}
		log.Fatal(err)
	}
}
