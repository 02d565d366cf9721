package audit_test

import (
	"errors"
	"fmt"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestMigrateAddsTheLogToExistingTenants: tenants made before the audit
// migration get their log from Admin.Migrate, on both tiers of the shared
// cluster; a later migration (which store follows by granting every table
// again) leaves the log SELECT and INSERT only; and DropTenant removes
// the log with the tenant.
func TestMigrateAddsTheLogToExistingTenants(t *testing.T) {
	d := pgtest.DB(t).NewDatabase(t) // its own ledger of migrations
	platformOnce.Do(func() { platformURL = pgtest.DB(t).CreateRole(t, "platform", "") })
	pcfg, err := pgx.ParseConfig(platformURL)
	require.NoError(t, err)
	open := func(migrations fstest.MapFS, withAudit bool) *store.Admin {
		acfg, err := store.ParseAdminConfig(d.AdminURL())
		require.NoError(t, err)
		acfg.RolePrefix, acfg.PlatformRole, acfg.LoginSecrets = d.Prefix(), pcfg.User, []store.LoginSecret{secret}
		acfg.Migrations = migrations
		if withAudit {
			acfg.Migrations, err = audit.WithMigration(migrations, 2)
			require.NoError(t, err)
		}
		a, err := store.OpenAdmin(t.Context(), acfg)
		require.NoError(t, err)
		t.Cleanup(a.Close)
		return a
	}
	app := fstest.MapFS{"0001_requirements.sql": {Data: []byte(`CREATE TABLE requirements (tenant_id text NOT NULL, req_id text PRIMARY KEY)`)}}
	admin := open(app, false)
	var ids []tenant.ID
	for _, tier := range []tenant.Tier{tenant.TierStandard, tenant.TierEnterprise} {
		id := tenant.MustParseID(fmt.Sprintf("mig%s%d", tier[:3], tenantSeq.Add(1)))
		require.NoError(t, admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Old " + string(tier), Tier: tier}))
		ids = append(ids, id)
	}
	admin.Close()

	later := fstest.MapFS{
		"0001_requirements.sql": app["0001_requirements.sql"],
		"0003_notes.sql":        {Data: []byte(`CREATE TABLE notes (tenant_id text NOT NULL, note text NOT NULL)`)},
	}
	admin = open(later, true)
	require.NoError(t, audit.Install(t.Context(), admin))
	rep, err := admin.Migrate(t.Context(), store.MigrateOptions{})
	require.NoError(t, err)
	require.ElementsMatch(t, ids, rep.Migrated)

	cfg, err := store.ParseConfig(d.URL(pcfg.User, pcfg.Password), secret)
	require.NoError(t, err)
	db, err := store.Open(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	kek := t.TempDir() + "/platform.key"
	prov := newManager(t, kek, admin.Keysets())
	lcfg := audit.DefaultConfig()
	lcfg.DB, lcfg.Keys = db, newManager(t, kek, db.Keysets())
	logs, err := audit.New(lcfg)
	require.NoError(t, err)
	defer logs.Close(t.Context())
	for _, id := range ids {
		ctx := tenant.NewContext(t.Context(), id)
		require.NoError(t, prov.Provision(t.Context(), id, keys.ProvisionOptions{}))
		_, err := logs.Append(ctx, audit.Event{Actor: "a", Action: "migrated", Outcome: audit.OutcomeSuccess})
		require.NoError(t, err)
		_, err = logs.Verify(ctx)
		require.NoError(t, err)
		for priv, want := range map[string]bool{"SELECT": true, "INSERT": true, "UPDATE": false, "DELETE": false, "TRUNCATE": false} {
			var has bool
			require.NoError(t, db.QueryRow(ctx, `SELECT has_table_privilege(current_user, 'audit_log', '`+priv+`')`).Scan(&has))
			require.Equal(t, want, has, "%s %s", id, priv)
		}
		var notes bool
		require.NoError(t, db.QueryRow(ctx, `SELECT has_table_privilege(current_user, 'notes', 'UPDATE')`).Scan(&notes))
		require.True(t, notes, "other tables keep their grants")
	}

	// A new tenant gets the log from CreateTenant.
	fresh := tenant.MustParseID(fmt.Sprintf("migfresh%d", tenantSeq.Add(1)))
	require.NoError(t, admin.CreateTenant(t.Context(), tenant.Info{ID: fresh, Name: "New", Tier: tenant.TierStandard}))
	require.NoError(t, prov.Provision(t.Context(), fresh, keys.ProvisionOptions{}))
	_, err = logs.Append(tenant.NewContext(t.Context(), fresh), audit.Event{Actor: "a", Action: "created", Outcome: audit.OutcomeSuccess})
	require.NoError(t, err)

	// Dropped with the tenant: the schema (or the database) goes, the log with it.
	su, err := pgx.Connect(t.Context(), d.AdminURL())
	require.NoError(t, err)
	defer su.Close(t.Context())
	for _, id := range append(ids, fresh) {
		require.NoError(t, admin.DropTenant(t.Context(), id))
		var left bool
		require.NoError(t, su.QueryRow(t.Context(), `SELECT to_regclass($1) IS NOT NULL OR EXISTS (SELECT 1 FROM pg_database WHERE datname = $2)`,
			id.SchemaName()+".audit_log", d.Prefix()+id.SchemaName()).Scan(&left))
		require.False(t, left, id)
		// (The first call may meet a pooled connection DropTenant ended.)
		require.Eventually(t, func() bool {
			_, err := logs.Append(tenant.NewContext(t.Context(), id), audit.Event{Actor: "a", Action: "after", Outcome: audit.OutcomeSuccess})
			return errors.Is(err, store.ErrUnknownTenant)
		}, 10*time.Second, 10*time.Millisecond)
	}
}
