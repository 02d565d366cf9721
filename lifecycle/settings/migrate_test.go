package settings_test

import (
	"context"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestWithMigration: the settings migration is added beside the given
// ones, under the version asked for; a version taken already, or out of
// range, is refused.
func TestWithMigration(t *testing.T) {
	base := fstest.MapFS{"0001_app.sql": {Data: []byte("CREATE TABLE app (tenant_id text NOT NULL);")}}
	fsys, err := settings.WithMigration(base, 2)
	require.NoError(t, err)
	require.NoError(t, fstest.TestFS(fsys, "0001_app.sql", "0002_tenancy_settings.sql"))
	_, err = settings.WithMigration(base, 1)
	require.ErrorIs(t, err, settings.ErrInvalidConfig)
	for _, v := range []int{0, -1, 1_000_000_000} {
		_, err = settings.WithMigration(nil, v)
		require.ErrorIs(t, err, settings.ErrInvalidConfig, "%d", v)
	}
	// It composes with audit's.
	both, err := audit.WithMigration(fsys, 3)
	require.NoError(t, err)
	require.NoError(t, fstest.TestFS(both, "0001_app.sql", "0002_tenancy_settings.sql", "0003_tenancy_audit_log.sql"))
}

// TestMigrateAddsSettingsToExistingTenants: tenants placed before the
// settings migration existed get their table from Admin.Migrate, on the
// standard and enterprise tiers, and work like new ones.
func TestMigrateAddsSettingsToExistingTenants(t *testing.T) {
	d := pgtest.DB(t).NewDatabase(t)
	auditOnly, err := audit.WithMigration(nil, 1)
	require.NoError(t, err)
	before := newEnvOn(t, d, tenant.TierStandard, func(a *store.AdminConfig) { a.Migrations = auditOnly })
	_, sctx := before.newTenant(t, "oldstd")
	before.tier = tenant.TierEnterprise
	_, ectx := before.newTenant(t, "oldent")
	_, err = before.s.Get(sctx, settings.SectionRTM)
	require.ErrorIs(t, err, settings.ErrNotInstalled)

	withSettings, err := settings.WithMigration(auditOnly, 2)
	require.NoError(t, err)
	after := newEnvOn(t, d, tenant.TierStandard, func(a *store.AdminConfig) { a.Migrations = withSettings })
	rep, err := after.admin.Migrate(t.Context(), store.MigrateOptions{})
	require.NoError(t, err)
	require.Len(t, rep.Migrated, 2)
	s, err := settings.New(after.db, before.km) // the keys the tenants were provisioned with
	require.NoError(t, err)
	for _, ctx := range []context.Context{sctx, ectx} {
		_, err = s.Put(ctx, sampleIntegrations("migrated-0123456789"), 0, "alice@acme.example")
		require.NoError(t, err)
		tok, err := s.Secret(ctx, settings.SecretGitHubToken)
		require.NoError(t, err)
		require.Equal(t, "ghp_migrated-0123456789", tok)
	}
}

// TestSharedPoolModeKeepsSettingsApart runs in store's shared-pool mode
// (isolation by row-level security on a setting, see package store): a
// tenant that names another's table sees none of its rows, and what it
// inserts there is its own, invisible to the other and taking none of its
// versions.
func TestSharedPoolModeKeepsSettingsApart(t *testing.T) {
	e := newEnvOn(t, pgtest.DB(t).NewDatabase(t), tenant.TierStandard, func(a *store.AdminConfig) { a.Mode = store.ModeSharedPool })
	_, actx := e.newTenant(t, "spa")
	b, bctx := e.newTenant(t, "spb")
	_, err := e.s.Put(bctx, sampleUsers(), 0, "bob@b.example")
	require.NoError(t, err)
	foreign := b.SchemaName() + ".tenant_settings"
	var n int64
	require.NoError(t, e.db.QueryRow(actx, `SELECT count(*) FROM `+foreign).Scan(&n))
	require.Zero(t, n, "A sees none of B's rows")
	_, err = e.db.Exec(actx, `UPDATE `+foreign+` SET actor = 'mallory'`)
	require.Error(t, err)
	_, err = e.db.Exec(actx, `INSERT INTO `+foreign+` (section, version, value, actor) VALUES ('users', 1, '{}', 'mallory')`)
	require.NoError(t, err, "a row of A's own, in B's table")
	_, err = e.s.Put(bctx, sampleUsers(), 1, "bob@b.example")
	require.NoError(t, err)
	hist, err := e.s.History(bctx, settings.SectionUsers)
	require.NoError(t, err)
	require.Len(t, hist, 2)
	for _, r := range hist {
		require.Equal(t, "bob@b.example", r.Actor)
	}
	_, err = e.s.Get(actx, settings.SectionUsers)
	require.ErrorIs(t, err, settings.ErrNotFound, "A's own table is empty")

	// Secrets and custom fields work in this mode too.
	_, err = e.s.Put(bctx, sampleIntegrations("shared-0123456789"), 0, "bob@b.example")
	require.NoError(t, err)
	tok, err := e.s.Secret(bctx, settings.SecretJiraAPIToken)
	require.NoError(t, err)
	require.Equal(t, "jira-shared-0123456789", tok)
	_, err = e.s.Secret(actx, settings.SecretJiraAPIToken)
	require.ErrorIs(t, err, settings.ErrNotFound)
	_, err = e.s.Put(bctx, settings.CustomFields{Schema: []byte(aSchema)}, 0, "bob@b.example")
	require.NoError(t, err)
	require.NoError(t, e.s.ValidateCustomFields(bctx, []byte(`{"severity":"low"}`)))
	require.ErrorIs(t, e.s.ValidateCustomFields(actx, []byte(`{"severity":"low"}`)), settings.ErrInvalidCustomFields)
	recs, err := e.s.Export(bctx)
	require.NoError(t, err)
	require.Len(t, recs, 4)
}
