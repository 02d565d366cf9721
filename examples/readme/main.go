// Command readme is the store snippet of the README, as a program: it
// runs as copied, given a database, its admin role and a platform login.
//
//	TENANCY_ADMIN_URL=postgres://admin@127.0.0.1/rtmx \
//	TENANCY_PLATFORM_URL=postgres://platform:secret@127.0.0.1/rtmx \
//	TENANCY_LOGIN_SECRET=$(openssl rand -hex 32) go run ./examples/readme
//
// Its test runs it against a scratch database and checks that the README
// shows this file's code.
package main

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

func main() {
	if err := run(context.Background(), os.Getenv("TENANCY_ADMIN_URL"), os.Getenv("TENANCY_PLATFORM_URL"),
		os.Getenv("TENANCY_LOGIN_SECRET"), os.Getenv("TENANCY_TENANT")); err != nil {
		log.Fatal(err)
	}
}

// README: begin
func run(ctx context.Context, adminURL, platformURL, loginSecret, tenantID string) error {
	secret := store.LoginSecret{Version: 1, Key: []byte(loginSecret)} // 32 bytes or more, kept secret

	// Administration: the control plane, and a tenant with its own schema,
	// table and PostgreSQL login. Never handed to request handling.
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
	admin, err := store.OpenAdmin(ctx, acfg)
	if err != nil {
		return err
	}
	defer admin.Close()
	id, err := tenant.ParseID(tenantID) // parse at the boundary
	if err != nil {
		return err
	}
	if err := admin.CreateTenant(ctx, tenant.Info{ID: id, Name: "Acme Defense Corp", Tier: tenant.TierStandard}); err != nil {
		return err
	}

	// The request path: statements for the tenant in the context, on
	// connections logged in as that tenant.
	cfg, err := store.ParseConfig(platformURL, secret)
	if err != nil {
		return err
	}
	db, err := store.Open(ctx, cfg) // refuses an unsafe platform role, saying why
	if err != nil {
		return err
	}
	defer db.Close()
	ctx = tenant.NewContext(ctx, id) // the tenant travels in the context only
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
	fmt.Printf("tenant %s has %d requirement(s)\n", id, n)
	return nil
}

// README: end
