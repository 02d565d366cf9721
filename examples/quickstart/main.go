// Command quickstart shows tenancy's promise end to end on a local
// PostgreSQL: two tenants, each writing RTMX requirements and seeing only its
// own, each encrypting a secret under its own key, a cross-tenant query and
// a query without a tenant failing, and deprovisioning that deletes the data
// and shreds the keys.
//
//	go run ./examples/quickstart
//
// It needs a PostgreSQL superuser to set things up; by default
// postgres://postgres@127.0.0.1:5432/postgres (override with -admin-url or
// TENANCY_QUICKSTART_ADMIN_URL). It creates a scratch database
// tenancy_quickstart and the roles it needs, and removes all of them at the
// end.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/tink-crypto/tink-go/v2/core/registry"

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
	// AdminURL is the connection string of a PostgreSQL superuser, used
	// for setup and cleanup only.
	AdminURL string
	// Database is the scratch database, created and dropped.
	Database string
	// AppRole is the least-privilege login role the application uses.
	AppRole string
	// RolePrefix is store's Config.RolePrefix (at most 16 bytes); every
	// role whose name starts with it is dropped.
	RolePrefix string
}

// defaultOptions returns the names the package documentation promises.
func defaultOptions(adminURL string) options {
	return options{
		AdminURL:   adminURL,
		Database:   "tenancy_quickstart",
		AppRole:    "tenancy_quickstart_app",
		RolePrefix: "tenancy_qs_",
	}
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
	adminURL := flag.String("admin-url", def, "connection string of a PostgreSQL superuser (setup and cleanup only)")
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
	for _, name := range []string{o.Database, o.AppRole, o.RolePrefix} {
		if !isName(name) {
			return fmt.Errorf("%q is not a lower-case SQL name", name)
		}
	}

	// 1. Setup: a scratch database, a least-privilege application role.
	server, err := pgx.Connect(ctx, o.AdminURL)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL as superuser (%s): %w\n  start PostgreSQL or pass -admin-url", redact(o.AdminURL), err)
	}
	defer server.Close(context.WithoutCancel(ctx))
	password := randomHex()
	if err := cleanup(ctx, server, o); err != nil { // leftovers of an interrupted run
		return err
	}
	defer func() {
		if cerr := cleanup(context.WithoutCancel(ctx), server, o); cerr != nil && err == nil {
			err = cerr
		} else if cerr == nil {
			p("\ncleaned up: database %s and roles %s, %s* dropped", o.Database, o.AppRole, o.RolePrefix)
		}
	}()
	for _, sql := range []string{
		`CREATE DATABASE ` + o.Database,
		// NOINHERIT: the role reaches a tenant's data only by assuming that
		// tenant's role, which store does per transaction.
		`CREATE ROLE ` + o.AppRole + ` LOGIN NOINHERIT PASSWORD '` + password + `'`,
	} {
		if _, err := server.Exec(ctx, sql); err != nil {
			return fmt.Errorf("setup: %w", err)
		}
	}
	adminDB, appDB, err := urls(o, password)
	if err != nil {
		return err
	}

	cfg, err := store.ParseConfig(appDB, adminDB)
	if err != nil {
		return err
	}
	cfg.RolePrefix = o.RolePrefix
	cfg.Tables = []store.Table{requirements, integrations}
	db, err := store.OpenConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	p("tenancy quickstart: PostgreSQL database %s, application role %s\n", o.Database, db.AppRole())

	// Keys: a development master key in a file (an HSM or cloud KMS in
	// production), wrapping per-tenant keysets kept in the control plane.
	// The provisioning side writes keysets with the admin role; the serving
	// side only reads them.
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
		kc.Store, kc.KMS, kc.PlatformKEK = ks, []registry.KMSClient{local}, kek
		return keys.New(kc)
	}
	provisioner, err := newKeys(db.Keysets(store.KeysetsReadWrite))
	if err != nil {
		return err
	}
	serving, err := newKeys(db.Keysets(store.KeysetsRead))
	if err != nil {
		return err
	}

	// 2. Two standard-tier tenants, each in its own schema with its own role.
	ids := []tenant.ID{}
	for _, s := range []string{"abc123", "xyz789"} {
		id, err := tenant.ParseID(s) // every boundary parses
		if err != nil {
			return err
		}
		if err := db.CreateTenant(ctx, tenant.Info{ID: id, Name: "Tenant " + s, Tier: tenant.TierStandard, Region: "us-gov-east-1"}); err != nil {
			return err
		}
		if err := provisioner.Provision(ctx, id, keys.ProvisionOptions{}); err != nil {
			return err
		}
		ids = append(ids, id)
		p("provisioned tenant %-7s schema %s, role %s, own keysets wrapped by %s", id, id.SchemaName(), db.TenantRole(id), keys.DisplayURI(kek))
	}

	// 3. Each tenant writes its requirements. The tenant is in the context;
	//    store fills tenant_id and scopes the transaction.
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

	// 4. Each sees only its own, with the very same SQL.
	for _, id := range ids {
		ctx := tenant.NewContext(ctx, id)
		rows, err := db.Query(ctx, `SELECT tenant_id, req_id, status, priority, requirement_text FROM requirements ORDER BY req_id`)
		if err != nil {
			return err
		}
		p("\nas tenant %s: SELECT ... FROM requirements", id)
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

	// 5. One field per tenant encrypted under the tenant's own key, bound to
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
	if err == nil {
		return errors.New("isolation broken: another tenant's key opened the secret")
	}

	// 6. Reaching across: tenant abc123 names xyz789's table outright.
	a := tenant.NewContext(ctx, ids[0])
	_, err = db.Exec(a, `SELECT count(*) FROM `+pgx.Identifier{ids[1].SchemaName(), "requirements"}.Sanitize())
	p("\nas tenant %s: SELECT count(*) FROM %s.requirements\n  -> %v", ids[0], ids[1].SchemaName(), err)
	if err == nil {
		return errors.New("isolation broken: cross-tenant query succeeded")
	}

	// 7. No tenant in the context: refused before any SQL is sent.
	_, err = db.Query(ctx, `SELECT * FROM requirements`)
	p("\nwithout a tenant: SELECT * FROM requirements\n  -> %v", err)
	if !errors.Is(err, tenant.ErrNoTenant) {
		return fmt.Errorf("expected tenant.ErrNoTenant, got %v", err)
	}

	// 8. Deprovision both tenants: schema, role and data are gone, and the
	//    keys are shredded, so even a saved copy of a ciphertext is dead.
	p("")
	for _, id := range ids {
		if err := db.DropTenant(ctx, id); err != nil {
			return err
		}
		if _, err := provisioner.Shred(ctx, id); err != nil {
			return err
		}
		serving.Purge(id) // other replicas' caches expire within keys.Config.CacheMaxAge
		p("dropped tenant %s: schema, role and rows deleted, keys shredded", id)
	}
	_, err = serving.Open(tenant.NewContext(ctx, ids[0]), sealedOf[ids[0]], where)
	p("as tenant %s after deprovisioning: open a saved copy of its secret\n  -> %v", ids[0], err)
	if !errors.Is(err, keys.ErrKeyDestroyed) {
		return fmt.Errorf("expected keys.ErrKeyDestroyed, got %v", err)
	}
	return nil
}

// cleanup drops what the quickstart creates with o's names; it is safe to
// run repeatedly.
func cleanup(ctx context.Context, server *pgx.Conn, o options) error {
	if _, err := server.Exec(ctx, `DROP DATABASE IF EXISTS `+o.Database+` WITH (FORCE)`); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	rows, err := server.Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname = $1 OR rolname LIKE $2 ORDER BY rolname = $1`,
		o.AppRole, strings.ReplaceAll(o.RolePrefix, "_", `\_`)+"%")
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	for _, r := range roles {
		if _, err := server.Exec(ctx, `DROP ROLE `+pgx.Identifier{r}.Sanitize()); err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
	}
	return nil
}

// urls derives the admin and application connection strings for the
// scratch database from the superuser's.
func urls(o options, password string) (admin, app string, err error) {
	cfg, err := pgx.ParseConfig(o.AdminURL)
	if err != nil {
		return "", "", err
	}
	hostport := fmt.Sprintf("%s:%d", cfg.Host, cfg.Port)
	if strings.HasPrefix(cfg.Host, "/") {
		hostport = ""
	}
	mk := func(user, pass string) string {
		u := url.URL{Scheme: "postgres", Host: hostport, Path: "/" + o.Database}
		if pass != "" {
			u.User = url.UserPassword(user, pass)
		} else {
			u.User = url.User(user)
		}
		q := url.Values{}
		if hostport == "" {
			q.Set("host", cfg.Host)
			q.Set("port", fmt.Sprint(cfg.Port))
		}
		q.Set("sslmode", "prefer")
		u.RawQuery = q.Encode()
		return u.String()
	}
	return mk(cfg.User, cfg.Password), mk(o.AppRole, password), nil
}

// isName reports whether s can be written into SQL unquoted: [a-z_][a-z0-9_]*,
// at most 63 bytes.
func isName(s string) bool {
	if s == "" || len(s) > 63 || ('0' <= s[0] && s[0] <= '9') {
		return false
	}
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

func redact(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return s
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
