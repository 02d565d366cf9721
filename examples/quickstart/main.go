// Command quickstart shows tenancy's promise end to end on a local
// PostgreSQL: two tenants, each writing RTMX requirements and seeing only its
// own, each encrypting a secret under its own key, storing an encrypted
// object in its own prefix and writing a verified audit entry, a
// cross-tenant query, a copied object and a query without a tenant
// failing, and deprovisioning that deletes the data and objects and shreds
// the keys.
//
//	go run ./examples/quickstart
//
// It needs a PostgreSQL superuser; by default
// postgres://postgres@127.0.0.1:5432/postgres (override with -admin-url or
// TENANCY_QUICKSTART_ADMIN_URL). It creates a scratch database
// tenancy_quickstart and the login role tenancy_qs_platform, and store
// creates the tenants' roles, all named tenancy_qs_*. At the start and at
// the end it drops the database and every role whose name starts with
// tenancy_qs_, so a run that was killed is cleaned up by the next.
//
// The superuser also serves as store's admin role (provisioning, DDL); in
// production the admin is a role with CREATEROLE that owns the database.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/internal/scratchdb"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// options says where the quickstart runs and which cluster-wide names it
// creates. Everything so named is dropped before and after a run, so two
// runs at the same time on one server need different names: main uses the
// fixed names documented above, the test names derived from its pgtest
// prefix.
type options struct {
	// AdminURL is the connection string of a PostgreSQL superuser: setup,
	// cleanup, and store's admin role on the scratch database.
	AdminURL string
	// Database is the scratch database, created and dropped.
	Database string
	// RolePrefix is store's AdminConfig.RolePrefix and the prefix of the
	// platform role: [a-z][a-z0-9_]*, 3 to 16 bytes, ending in "_", not
	// starting with "pg_".
	// Every role whose name starts with it is dropped.
	RolePrefix string
}

// defaultOptions returns the names the package documentation promises.
func defaultOptions(adminURL string) options {
	return options{
		AdminURL:   adminURL,
		Database:   "tenancy_quickstart",
		RolePrefix: "tenancy_qs_",
	}
}

// platformRole is the least-privilege login role of the request path.
func (o options) platformRole() string { return o.RolePrefix + "platform" }

// createPlatformRole is the statement that creates the platform role with
// password. The password goes as a SCRAM-SHA-256 verifier computed in Go,
// never in clear text, which the server's log_statement and
// pg_stat_statements would keep.
func (o options) createPlatformRole(password string) (string, error) {
	return scratchdb.LoginRole(o.platformRole(), password)
}

func (o options) validate() error {
	if err := scratchdb.CheckNames(o.Database, o.RolePrefix); err != nil {
		return err
	}
	return nil
}

// requirements has the core columns of RTMX's database.csv.
var requirements = store.Table{
	Name: "requirements",
	Columns: `req_id text PRIMARY KEY,
		category text NOT NULL,
		subcategory text NOT NULL DEFAULT '',
		requirement_text text NOT NULL,
		status text NOT NULL DEFAULT 'MISSING',
		priority text NOT NULL DEFAULT 'MEDIUM',
		phase int NOT NULL DEFAULT 1`,
}

// integrations holds each tenant's integration secrets, sealed under the
// tenant's own data key.
var integrations = store.Table{
	Name:    "integrations",
	Columns: `name text PRIMARY KEY, secret bytea NOT NULL`,
}

type requirement struct {
	ReqID, Category, Subcategory, Text, Status, Priority string
	Phase                                                int
}

var seed = map[string][]requirement{
	"abc123": {
		{"REQ-DEPLOY-004", "DEPLOYMENT", "MULTI_TENANT", "Multi-tenant isolation for the managed service", "MISSING", "HIGH", 13},
		{"REQ-SEC-002", "SECURITY", "ENCRYPTION", "E2E encryption for tenant keys", "PARTIAL", "HIGH", 12},
	},
	"xyz789": {
		{"REQ-UI-010", "INTERFACE", "DASHBOARD", "Traceability matrix dashboard", "COMPLETE", "MEDIUM", 4},
	},
}

func main() {
	def := os.Getenv("TENANCY_QUICKSTART_ADMIN_URL")
	if def == "" {
		def = "postgres://postgres@127.0.0.1:5432/postgres"
	}
	adminURL := flag.String("admin-url", def, "connection string of a PostgreSQL superuser")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout, defaultOptions(*adminURL)); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer, o options) (err error) {
	p := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	if err := o.validate(); err != nil {
		return err
	}

	// 1. Setup as superuser: a scratch database and the platform role, a
	//    login with no privileges of its own (OpenAdmin grants it the
	//    control-plane reads). Leftovers of a killed run go first.
	superuser, err := pgx.ParseConfig(o.AdminURL)
	if err != nil {
		return fmt.Errorf("admin URL: %w", err)
	}
	server, err := pgx.ConnectConfig(ctx, superuser)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL as superuser (%s): %w\n  start PostgreSQL or pass -admin-url", scratchdb.TargetOf(&superuser.Config), err)
	}
	defer server.Close(context.WithoutCancel(ctx))
	if err := cleanup(ctx, server, o); err != nil {
		return err
	}
	defer func() {
		if cerr := cleanup(context.WithoutCancel(ctx), server, o); cerr != nil {
			err = errors.Join(err, cerr)
		} else {
			p("\ncleaned up: database %s and roles %s* dropped", o.Database, o.RolePrefix)
		}
	}()
	password := randomHex(16)
	createRole, err := o.createPlatformRole(password)
	if err != nil {
		return err
	}
	for _, sql := range []string{`CREATE DATABASE ` + o.Database, createRole} {
		if _, err := server.Exec(ctx, sql); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	// The login secret from which store derives every tenant login's
	// password: in production it is kept with the platform's other secrets
	// and given to the Admin and to every DB.
	secret := store.LoginSecret{Version: 1, Key: randomBytes(32)}

	// 2. The admin side (provisioning) and the request path: a DB logged in
	//    as the platform role, which opens a pool per tenant logged in as
	//    that tenant's own role. Both connect to the scratch database with
	//    the host and TLS settings of AdminURL.
	acfg, err := store.ParseAdminConfig(o.AdminURL)
	if err != nil {
		return err
	}
	acfg.Pool.ConnConfig.Database = o.Database
	acfg.PlatformRole = o.platformRole()
	acfg.RolePrefix = o.RolePrefix
	acfg.LoginSecrets = []store.LoginSecret{secret}
	acfg.Tables = []store.Table{requirements, integrations}
	// Every tenant gets a tamper-evident audit log in its own schema: a
	// tenant migration of package audit.
	if acfg.Migrations, err = audit.WithMigration(nil, 1); err != nil {
		return err
	}
	admin, err := store.OpenAdmin(ctx, acfg)
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := audit.Install(ctx, admin); err != nil { // the control plane's audit checkpoints
		return err
	}
	cfg, err := store.ParseConfig(o.AdminURL, secret)
	if err != nil {
		return err
	}
	cfg.Platform.ConnConfig.Database = o.Database
	cfg.Platform.ConnConfig.User, cfg.Platform.ConnConfig.Password = o.platformRole(), password
	db, err := store.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	p("tenancy quickstart: database %s, platform role %s, mode %s\n", o.Database, o.platformRole(), db.Mode())

	// Keys: a development master key in a file (an HSM or cloud KMS in
	// production), wrapping per-tenant keysets kept in the control plane.
	// Provisioning writes keysets through the Admin; serving only reads
	// them, through the DB.
	keyDir, err := os.MkdirTemp("", "tenancy-quickstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(keyDir)
	kek, err := localkms.KeyURI(filepath.Join(keyDir, "master.key"))
	if err != nil {
		return err
	}
	local, err := localkms.NewClient(localkms.Scheme)
	if err != nil {
		return err
	}
	newKeys := func(ks keys.Store) (*keys.Manager, error) {
		kc := keys.DefaultConfig()
		kc.Store, kc.KMS, kc.PlatformKEK = ks, []registry.KMSClient{local}, keys.URI(kek)
		return keys.New(kc)
	}
	provisioner, err := newKeys(admin.Keysets())
	if err != nil {
		return err
	}
	serving, err := newKeys(db.Keysets())
	if err != nil {
		return err
	}
	acf := audit.DefaultConfig()
	acf.DB, acf.Keys = db, serving
	auditLog, err := audit.New(acf)
	if err != nil {
		return err
	}
	defer auditLog.Close(context.WithoutCancel(ctx))
	// Object storage: the platform's bucket (s3://, gs://, azblob:// in
	// production; a local directory here), each tenant's view narrowed to
	// tenants/<id>/ and every object encrypted with the tenant's keys.
	bucketDir := filepath.Join(keyDir, "objects")
	if err := os.Mkdir(bucketDir, 0o700); err != nil {
		return err
	}
	buckets, err := blob.Open(ctx, "file://"+filepath.ToSlash(bucketDir), serving)
	if err != nil {
		return err
	}
	defer buckets.Close()

	// 3. Two standard-tier tenants, each with its own schema, login role
	//    and keysets.
	var ids []tenant.ID
	for _, s := range []string{"abc123", "xyz789"} {
		id, err := tenant.ParseID(s) // every boundary parses
		if err != nil {
			return err
		}
		if err := admin.CreateTenant(ctx, tenant.Info{ID: id, Name: "Tenant " + s, Tier: tenant.TierStandard, Region: "us-gov-east-1"}); err != nil {
			return err
		}
		if err := provisioner.Provision(ctx, id, keys.ProvisionOptions{}); err != nil {
			return err
		}
		ids = append(ids, id)
		p("provisioned tenant %s: schema %s, a login role of its own, keysets wrapped by %s", id, id.SchemaName(), keys.URI(kek))
	}

	// 4. Each tenant writes its requirements. The tenant is in the context;
	//    store runs the transaction on a connection logged in as that
	//    tenant, and fills in tenant_id.
	for _, id := range ids {
		ctx := tenant.NewContext(ctx, id)
		err := db.Tx(ctx, func(tx *store.Tx) error {
			for _, r := range seed[id.String()] {
				if _, err := tx.Exec(ctx, `INSERT INTO requirements
					(req_id, category, subcategory, requirement_text, status, priority, phase)
					VALUES ($1, $2, $3, $4, $5, $6, $7)`,
					r.ReqID, r.Category, r.Subcategory, r.Text, r.Status, r.Priority, r.Phase); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}

	// 5. Each sees only its own, with the very same SQL.
	logins := map[tenant.ID]string{}
	for _, id := range ids {
		ctx := tenant.NewContext(ctx, id)
		var login string
		if err := db.QueryRow(ctx, `SELECT session_user`).Scan(&login); err != nil {
			return err
		}
		logins[id] = login
		rows, err := db.Query(ctx, `SELECT tenant_id, req_id, status, priority, requirement_text FROM requirements ORDER BY req_id`)
		if err != nil {
			return err
		}
		p("\nas tenant %s (logged in as %s): SELECT ... FROM requirements", id, login)
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  tenant_id\treq_id\tstatus\tpriority\trequirement_text")
		var tid, reqID, status, prio, text string
		_, err = pgx.ForEachRow(rows, []any{&tid, &reqID, &status, &prio, &text}, func() error {
			if tid != id.String() {
				return fmt.Errorf("isolation broken: tenant %s saw a row of %s", id, tid)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", tid, reqID, status, prio, text)
			return nil
		})
		if err != nil {
			return err
		}
		tw.Flush()
	}

	// 6. One field per tenant encrypted under the tenant's own key, bound to
	//    tenant, table, column and row: copied elsewhere it does not open.
	sealedOf := map[tenant.ID][]byte{}
	where := keys.Binding{Table: "integrations", Column: "secret", RowKey: "github"}
	p("")
	for _, id := range ids {
		ctx := tenant.NewContext(ctx, id)
		sealed, err := serving.Seal(ctx, []byte("ghp_token_of_"+id.String()), where)
		if err != nil {
			return err
		}
		if _, err := db.Exec(ctx, `INSERT INTO integrations (name, secret) VALUES ('github', $1)`, sealed); err != nil {
			return err
		}
		var stored []byte
		if err := db.QueryRow(ctx, `SELECT secret FROM integrations WHERE name = 'github'`).Scan(&stored); err != nil {
			return err
		}
		plain, err := serving.Open(ctx, stored, where)
		if err != nil {
			return err
		}
		sealedOf[id] = stored
		p("as tenant %s: integrations.secret stored sealed (%d bytes), opens to %q", id, len(stored), plain)
	}
	_, err = serving.Open(tenant.NewContext(ctx, ids[1]), sealedOf[ids[0]], where)
	p("as tenant %s: open %s's sealed secret\n  -> %v", ids[1], ids[0], err)
	if !errors.Is(err, keys.ErrDecrypt) {
		return fmt.Errorf("isolation broken: another tenant's key opening the secret gave %v, not keys.ErrDecrypt", err)
	}

	// 6b. Each tenant stores an attachment and audits it: the object is
	//     encrypted under the tenant's key in its own prefix, and the audit
	//     entry is chained by the tenant's audit key in its own schema.
	p("")
	for _, id := range ids {
		ctx := tenant.NewContext(ctx, id)
		bucket, err := buckets.For(ctx)
		if err != nil {
			return err
		}
		content := "attachment of " + id.String()
		if err := bucket.WriteAll(ctx, "attachments/spec.txt", []byte(content), nil); err != nil {
			return err
		}
		got, err := bucket.ReadAll(ctx, "attachments/spec.txt")
		if err != nil {
			return err
		}
		raw, err := os.ReadFile(filepath.Join(bucketDir, "tenants", id.String(), "attachments", "spec.txt"))
		if err != nil {
			return err
		}
		if strings.Contains(string(raw), content) {
			return fmt.Errorf("isolation broken: tenant %s's object is stored in the clear", id)
		}
		if err := bucket.Close(); err != nil {
			return err
		}
		p("as tenant %s: attachments/spec.txt stored at tenants/%s/attachments/spec.txt, %d bytes encrypted, reads back %q", id, id, len(raw), got)
		if _, err := auditLog.Append(ctx, audit.Event{Actor: "alice@" + id.String(), Action: "attachment.upload", Resource: "attachments/spec.txt", Outcome: audit.OutcomeSuccess}); err != nil {
			return err
		}
		rep, err := auditLog.Verify(ctx)
		if err != nil {
			return err
		}
		p("as tenant %s: audit entry %d written to %s.audit_log; chain verified (%d entries)", id, rep.HeadSeq, id.SchemaName(), rep.Entries)
	}
	// A storage admin copies abc123's object into xyz789's prefix: it does
	// not decrypt there.
	stolen, err := os.ReadFile(filepath.Join(bucketDir, "tenants", ids[0].String(), "attachments", "spec.txt"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(bucketDir, "tenants", ids[1].String(), "attachments", "spec.txt"), stolen, 0o600); err != nil {
		return err
	}
	xb, err := buckets.For(tenant.NewContext(ctx, ids[1]))
	if err != nil {
		return err
	}
	_, err = xb.ReadAll(tenant.NewContext(ctx, ids[1]), "attachments/spec.txt")
	_ = xb.Close()
	p("as tenant %s: read its attachment after %s's bytes were copied over it in storage\n  -> %v", ids[1], ids[0], err)
	if !errors.Is(err, keys.ErrDecrypt) {
		return fmt.Errorf("isolation broken: another tenant's object copied in storage gave %v, not keys.ErrDecrypt", err)
	}

	// 7. Reaching across: tenant abc123 names xyz789's table outright. Its
	//    connection is logged in as abc123, which has no privilege on
	//    xyz789's schema.
	a := tenant.NewContext(ctx, ids[0])
	_, err = db.Exec(a, `SELECT count(*) FROM `+pgx.Identifier{ids[1].SchemaName(), "requirements"}.Sanitize())
	p("\nas tenant %s: SELECT count(*) FROM %s.requirements\n  -> %v", ids[0], ids[1].SchemaName(), err)
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		return fmt.Errorf("isolation broken: the cross-tenant query gave %v, not permission denied", err)
	}

	// 8. No tenant in the context: refused before any SQL is sent.
	_, err = db.Query(ctx, `SELECT * FROM requirements`)
	p("\nwithout a tenant: SELECT * FROM requirements\n  -> %v", err)
	if !errors.Is(err, tenant.ErrNoTenant) {
		return fmt.Errorf("expected tenant.ErrNoTenant, got %v", err)
	}

	// 9. Deprovision both tenants: decommissioning stops the tenant's
	//    logins, DropTenant deletes its schema (its rows and audit log) and
	//    login role, Purge deletes its objects, Shred destroys its keys, so
	//    even a saved copy of a ciphertext is dead.
	p("")
	for _, id := range ids {
		if err := admin.SetState(ctx, id, tenant.StateDecommissioning); err != nil {
			return err
		}
		if err := admin.DropTenant(ctx, id); err != nil {
			return err
		}
		purged, err := buckets.Purge(ctx, id)
		if err != nil {
			return err
		}
		if _, err := provisioner.Shred(ctx, id); err != nil {
			return err
		}
		serving.Purge(id) // other replicas' caches expire within keys.Config.CacheMaxAge
		if err := checkDropped(ctx, server, admin, id, logins[id]); err != nil {
			return err
		}
		p("dropped tenant %s: schema, rows, audit log and login role deleted, %d object(s) purged, keys shredded", id, purged.Deleted)
	}
	_, err = serving.Open(tenant.NewContext(ctx, ids[0]), sealedOf[ids[0]], where)
	p("as tenant %s after deprovisioning: open a saved copy of its secret\n  -> %v", ids[0], err)
	if !errors.Is(err, keys.ErrKeyDestroyed) {
		return fmt.Errorf("expected keys.ErrKeyDestroyed, got %v", err)
	}
	return nil
}

// checkDropped checks, as superuser, that a dropped tenant's schema and
// login role are gone and the directory records it deleted.
func checkDropped(ctx context.Context, server *pgx.Conn, admin *store.Admin, id tenant.ID, login string) error {
	info, err := admin.Tenant(ctx, id)
	if err != nil {
		return err
	}
	var schemaLeft, roleLeft bool
	err = server.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1),
		EXISTS (SELECT FROM pg_roles WHERE rolname = $2)`, id.SchemaName(), login).Scan(&schemaLeft, &roleLeft)
	switch {
	case err != nil:
		return err
	case info.State != tenant.StateDeleted || schemaLeft || roleLeft:
		return fmt.Errorf("tenant %s not deleted: state %s, schema left %t, login role left %t", id, info.State, schemaLeft, roleLeft)
	}
	return nil
}

// cleanup drops the database and every role named with o's prefix; it is
// safe to run repeatedly.
func cleanup(ctx context.Context, server *pgx.Conn, o options) error {
	return scratchdb.Drop(ctx, server, o.Database, o.RolePrefix)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return b
}

func randomHex(n int) string { return hex.EncodeToString(randomBytes(n)) }
