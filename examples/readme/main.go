// Command readme is the store snippet of the README, as a program: it
// runs as copied, given a database, its admin role and a platform login.
//
//	TENANCY_ADMIN_URL=postgres://admin@127.0.0.1/rtmx \
//	TENANCY_PLATFORM_URL=postgres://platform:secret@127.0.0.1/rtmx \
//	TENANCY_GOV_ADMIN_URL=postgres://admin@10.1.2.3/postgres \
//	TENANCY_LOGIN_SECRET=$(openssl rand -hex 32) go run ./examples/readme
//
// It creates the tenants acme (standard), initech (enterprise) and dod
// (government, on the cluster of TENANCY_GOV_ADMIN_URL); TENANCY_TENANTS
// names three others ("a,b,c").
//
// Its test runs it against a scratch database and checks that the README
// shows this file's code.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

func main() {
	ids := [3]string{"acme", "initech", "dod"}
	if s := os.Getenv("TENANCY_TENANTS"); s != "" {
		parts := strings.Split(s, ",")
		if len(parts) != 3 {
			log.Fatalf("TENANCY_TENANTS: want three tenant IDs separated by commas, got %q", s)
		}
		copy(ids[:], parts)
	}
	if err := run(context.Background(), os.Getenv("TENANCY_ADMIN_URL"), os.Getenv("TENANCY_PLATFORM_URL"),
		os.Getenv("TENANCY_GOV_ADMIN_URL"), os.Getenv("TENANCY_LOGIN_SECRET"), ids); err != nil {
		log.Fatal(err)
	}
}

// README: begin
func run(ctx context.Context, adminURL, platformURL, govAdminURL, loginSecret string, tenantIDs [3]string) error {
	secret := store.LoginSecret{Version: 1, Key: []byte(loginSecret)} // 32 bytes or more, kept secret

	// Administration: the control plane, and tenants with their own schema
	// (or database), table and PostgreSQL login. Never handed to request
	// handling.
	acfg, err := store.ParseAdminConfig(adminURL)
	if err != nil {
		return err
	}
	pcfg, err := pgx.ParseConfig(platformURL)
	if err != nil {
		return err
	}
	acfg.PlatformRole = pcfg.User // the request path's least-privilege login
	acfg.LoginSecrets = []store.LoginSecret{secret}
	acfg.Tables = []store.Table{{
		Name:    "requirements",
		Columns: "req_id text PRIMARY KEY, requirement_text text NOT NULL, status text NOT NULL DEFAULT 'MISSING'",
	}}
	if err := acfg.AddCluster("gov_east", govAdminURL); err != nil { // a dedicated cluster's admin connection
		return err
	}
	admin, err := store.OpenAdmin(ctx, acfg)
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := admin.RegisterCluster(ctx, "gov_east"); err != nil {
		return err
	}
	// One tenant of each tier: a schema in the shared database, a database
	// of its own on the shared cluster, a database on the dedicated cluster.
	tiers := [3]tenant.Tier{tenant.TierStandard, tenant.TierEnterprise, tenant.TierGovernment}
	var ids []tenant.ID
	for i, s := range tenantIDs {
		id, err := tenant.ParseID(s) // parse at the boundary
		if err != nil {
			return err
		}
		var opts []store.CreateOption
		if tiers[i] == tenant.TierGovernment {
			opts = append(opts, store.OnCluster("gov_east"))
		}
		if err := admin.CreateTenant(ctx, tenant.Info{ID: id, Name: "Tenant " + s, Tier: tiers[i]}, opts...); err != nil {
			return err
		}
		ids = append(ids, id)
	}

	// The request path: statements for the tenant in the context, on
	// connections logged in as that tenant, wherever it lives.
	cfg, err := store.ParseConfig(platformURL, secret)
	if err != nil {
		return err
	}
	if err := cfg.AddCluster("gov_east", govAdminURL); err != nil { // host, port, TLS: tenants log in as themselves
		return err
	}
	db, err := store.Open(ctx, cfg) // refuses an unsafe platform role, saying why
	if err != nil {
		return err
	}
	defer db.Close()
	for i, id := range ids {
		ctx := tenant.NewContext(ctx, id) // the tenant travels in the context only
		err = db.Tx(ctx, func(tx *store.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO requirements (req_id, requirement_text) VALUES ($1, $2)`, "REQ-1", "isolate tenants")
			return err
		})
		if err != nil {
			return err
		}
		var n int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM requirements`).Scan(&n); err != nil {
			return err
		}
		fmt.Printf("%s tenant %s has %d requirement(s)\n", tiers[i], id, n)
	}
	return nil
}

// README: end
