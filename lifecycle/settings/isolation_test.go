package settings_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

var tiers = []tenant.Tier{tenant.TierStandard, tenant.TierEnterprise, tenant.TierGovernment}

// TestTenantConfigurationIsolation is REQ-DEPLOY-004's "Tenant
// configuration isolation" on every placement: through the API, A's
// context reads and writes A's settings only; at the SQL level, A's
// connections can neither read nor change B's table, and may only SELECT
// and INSERT (the next version) in their own; a call without a tenant
// fails.
// rtmx:req REQ-TEN-003
func TestTenantConfigurationIsolation(t *testing.T) {
	for _, tier := range tiers {
		t.Run(string(tier), func(t *testing.T) {
			e := newEnv(t, tier)
			a, actx := e.newTenant(t, "cfga")
			b, bctx := e.newTenant(t, "cfgb")

			_, err := e.s.Put(bctx, sampleIntegrations("b-token-0123456789"), 0, "bob@b.example")
			require.NoError(t, err)
			busers := settings.Users{Users: []settings.User{{Email: "owner@b.example", Roles: []string{"owner"}}}}
			_, err = e.s.Put(bctx, busers, 0, "bob@b.example")
			require.NoError(t, err)

			// A sees none of B's settings, and A's writes start A's own
			// history at version 1, leaving B's as it was.
			_, err = e.s.Get(actx, settings.SectionIntegrations)
			require.ErrorIs(t, err, settings.ErrNotFound)
			_, err = e.s.Secret(actx, settings.SecretJiraAPIToken)
			require.ErrorIs(t, err, settings.ErrNotFound)
			hist, err := e.s.History(actx, settings.SectionUsers)
			require.NoError(t, err)
			require.Empty(t, hist)
			v, err := e.s.Put(actx, sampleUsers(), 0, "alice@acme.example")
			require.NoError(t, err)
			require.Equal(t, int64(1), v)
			_, err = e.s.Put(actx, sampleUsers(), 1, "alice@acme.example")
			require.NoError(t, err)
			brev, err := e.s.Get(bctx, settings.SectionUsers)
			require.NoError(t, err)
			require.Equal(t, int64(1), brev.Version)
			require.Equal(t, busers, brev.Value)
			tok, err := e.s.Secret(bctx, settings.SecretJiraAPIToken)
			require.NoError(t, err)
			require.Equal(t, "jira-b-token-0123456789", tok)
			export, err := e.s.Export(actx)
			require.NoError(t, err)
			for _, r := range export {
				require.NotContains(t, string(r.Value), "b.example")
				require.Empty(t, r.Secrets)
			}

			// A's connections cannot name B's table.
			foreign := b.SchemaName() + ".tenant_settings"
			for _, sql := range []string{
				`SELECT count(*) FROM ` + foreign,
				`UPDATE ` + foreign + ` SET actor = 'mallory'`,
				`DELETE FROM ` + foreign,
				`INSERT INTO ` + foreign + ` (section, version, value, actor) VALUES ('users', 2, '{}', 'mallory')`,
			} {
				_, err := e.db.Exec(actx, sql)
				require.Error(t, err, sql)
				code := pgCode(err)
				require.True(t, code == "42501" || code == "42P01" || code == "3F000", "%s: %v", sql, err)
				// And in a transaction of A's.
				err = e.db.Tx(actx, func(tx *store.Tx) error {
					_, err := tx.Exec(actx, sql)
					return err
				})
				code = pgCode(err)
				require.True(t, code == "42501" || code == "42P01" || code == "3F000", "tx %s: %v", sql, err)
			}
			require.Equal(t, int64(2), e.rows(t, b), "B's settings are as B wrote them")

			// A's own history is append-only for A's role.
			for _, priv := range []string{"UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"} {
				var has bool
				require.NoError(t, e.db.QueryRow(actx, `SELECT has_table_privilege(current_user, 'tenant_settings', '`+priv+`')`).Scan(&has))
				require.False(t, has, priv)
			}
			for _, sql := range []string{`UPDATE tenant_settings SET actor = 'x'`, `DELETE FROM tenant_settings`, `TRUNCATE tenant_settings`} {
				_, err := e.db.Exec(actx, sql)
				require.Equal(t, "42501", pgCode(err), "%s: %v", sql, err)
			}
			// An INSERT that does not continue the section's versions is
			// refused by the database, whoever sends it.
			for _, ver := range []string{"1", "2", "4"} {
				_, err = e.db.Exec(actx, `INSERT INTO tenant_settings (section, version, value, actor) VALUES ('users', `+ver+`, '{}', 'x')`)
				require.Error(t, err, ver)
				require.Contains(t, []string{"TS001", "23505"}, pgCode(err), "%v", err)
			}
			// Not even the table's owner rewrites history.
			su, tbl := e.superuser(t, a)
			_, err = su.Exec(t.Context(), `UPDATE `+tbl+` SET actor = 'x'`)
			require.Equal(t, "42501", pgCode(err), "%v", err)
			_, err = su.Exec(t.Context(), `DELETE FROM `+tbl)
			require.Equal(t, "42501", pgCode(err), "%v", err)
			require.Equal(t, int64(2), e.rows(t, a))

			// No tenant, no settings.
			for _, call := range []func() error{
				func() error { _, err := e.s.Get(t.Context(), settings.SectionUsers); return err },
				func() error { _, err := e.s.Put(t.Context(), sampleUsers(), 0, "x"); return err },
				func() error { _, err := e.s.History(t.Context(), settings.SectionUsers); return err },
				func() error { _, err := e.s.Secret(t.Context(), settings.SecretJiraAPIToken); return err },
				func() error { _, err := e.s.Export(t.Context()); return err },
				func() error { return e.s.Import(t.Context(), nil) },
				func() error { return e.s.ValidateCustomFields(t.Context(), []byte(`{}`)) },
			} {
				require.ErrorIs(t, call(), tenant.ErrNoTenant)
			}
		})
	}
}

// TestSealedSecretsAreBoundToTenantAndRevision: a sealed secret copied
// (by someone with the database's superuser, as an attacker with the
// disks would) into another tenant's row, or into another version of the
// same tenant's section, does not open; and no secret's bytes are in the
// table in the clear.
func TestSealedSecretsAreBoundToTenantAndRevision(t *testing.T) {
	for _, tier := range []tenant.Tier{tenant.TierStandard, tenant.TierEnterprise} {
		t.Run(string(tier), func(t *testing.T) {
			e := newEnv(t, tier)
			a, actx := e.newTenant(t, "seala")
			b, bctx := e.newTenant(t, "sealb")
			const aTok = "A-SECRET-TOKEN-d41d8cd98f00b204"
			_, err := e.s.Put(actx, sampleIntegrations(aTok), 0, "alice@a.example")
			require.NoError(t, err)
			_, err = e.s.Put(bctx, sampleIntegrations("b-own-token-123456"), 0, "bob@b.example")
			require.NoError(t, err)

			// Nowhere in A's table in the clear.
			asu, atbl := e.superuser(t, a)
			var dump string
			require.NoError(t, asu.QueryRow(t.Context(), `SELECT string_agg(t::text || encode(t.sealed, 'escape'), ' ') FROM `+atbl+` t`).Scan(&dump))
			require.NotContains(t, dump, aTok)
			require.NotContains(t, dump, "d41d8cd98f00b204")
			require.Contains(t, dump, settings.SecretJiraAPIToken[:4], "the dump is of the right table")

			var value, sealed []byte
			require.NoError(t, asu.QueryRow(t.Context(), `SELECT value, sealed FROM `+atbl+` WHERE section = 'integrations' AND version = 1`).Scan(&value, &sealed))

			// Into B's table, as B's next version.
			bsu, btbl := e.superuser(t, b)
			_, err = bsu.Exec(t.Context(), `INSERT INTO `+btbl+` (tenant_id, section, version, value, sealed, actor) VALUES ($1, 'integrations', 2, $2, $3, 'mallory')`,
				b.String(), value, sealed)
			require.NoError(t, err)
			rev, err := e.s.Get(bctx, settings.SectionIntegrations)
			require.NoError(t, err)
			require.Equal(t, int64(2), rev.Version, "the copied row is B's latest")
			_, err = e.s.Secret(bctx, settings.SecretJiraAPIToken)
			require.ErrorIs(t, err, keys.ErrDecrypt)
			_, err = e.s.Export(bctx)
			require.ErrorIs(t, err, keys.ErrDecrypt)
			// Nor does B keep it by putting the value back.
			_, err = e.s.Put(bctx, rev.Value, 2, "bob@b.example")
			require.ErrorIs(t, err, keys.ErrDecrypt)

			// Into A's own next version: bound to version 1, it does not
			// open as version 2 (a secret cannot be rolled back so).
			_, err = asu.Exec(t.Context(), `INSERT INTO `+atbl+` (tenant_id, section, version, value, sealed, actor) VALUES ($1, 'integrations', 2, $2, $3, 'mallory')`,
				a.String(), value, sealed)
			require.NoError(t, err)
			_, err = e.s.Secret(actx, settings.SecretJiraAPIToken)
			require.ErrorIs(t, err, keys.ErrDecrypt)
		})
	}
}

// TestSecretsAreRedactedAndKept: Get shows set secrets as "[redacted]"
// under every printer; putting the value back (as Go or as JSON) keeps
// them, a new one replaces them, none removes them.
func TestSecretsAreRedactedAndKept(t *testing.T) {
	e := newEnv(t, tenant.TierStandard)
	_, ctx := e.newTenant(t, "redact")
	const tok = "tok-5f4dcc3b5aa765d61d8327deb882cf99"
	_, err := e.s.Put(ctx, sampleIntegrations(tok), 0, "alice@acme.example")
	require.NoError(t, err)
	rev, err := e.s.Get(ctx, settings.SectionIntegrations)
	require.NoError(t, err)
	in := rev.Value.(settings.Integrations)
	require.True(t, in.Jira.APIToken.IsSet())
	for _, v := range []any{rev, in, *in.Jira, *in.GitHub, in.Jira.APIToken} {
		for _, s := range printed(t, v) {
			require.NotContains(t, s, "5f4dcc3b")
		}
	}
	for _, s := range printed(t, *in.Jira) {
		require.Contains(t, s, "[redacted]")
	}

	// Back as Go, with the project changed: the token stays.
	in.Jira.Project = "OPS"
	_, err = e.s.Put(ctx, in, 1, "alice@acme.example")
	require.NoError(t, err)
	got, err := e.s.Secret(ctx, settings.SecretJiraAPIToken)
	require.NoError(t, err)
	require.Equal(t, "jira-"+tok, got)

	// Back as JSON (a CLI's get, edit, set).
	rev, err = e.s.Get(ctx, settings.SectionIntegrations)
	require.NoError(t, err)
	doc, err := json.Marshal(rev.Value)
	require.NoError(t, err)
	require.NotContains(t, string(doc), tok)
	v, err := settings.ParseValue(settings.SectionIntegrations, []byte(strings.Replace(string(doc), `"OPS"`, `"DEV"`, 1)))
	require.NoError(t, err)
	_, err = e.s.Put(ctx, v, 2, "alice@acme.example")
	require.NoError(t, err)
	got, err = e.s.Secret(ctx, settings.SecretGitHubToken)
	require.NoError(t, err)
	require.Equal(t, "ghp_"+tok, got)

	// A new token replaces it; none removes it.
	in = v.(settings.Integrations)
	in.GitHub.Token = settings.NewSecret("ghp_new-token-value")
	in.Jira = nil
	_, err = e.s.Put(ctx, in, 3, "alice@acme.example")
	require.NoError(t, err)
	got, err = e.s.Secret(ctx, settings.SecretGitHubToken)
	require.NoError(t, err)
	require.Equal(t, "ghp_new-token-value", got)
	_, err = e.s.Secret(ctx, settings.SecretJiraAPIToken)
	require.ErrorIs(t, err, settings.ErrNotFound)

	// A pointer to a value is the value, secrets and all.
	in.GitHub.Token = settings.NewSecret("ghp_by-pointer-0123")
	_, err = e.s.Put(ctx, &in, 4, "alice@acme.example")
	require.NoError(t, err)
	got, err = e.s.Secret(ctx, settings.SecretGitHubToken)
	require.NoError(t, err)
	require.Equal(t, "ghp_by-pointer-0123", got)
	_, err = e.s.Put(ctx, (*settings.Integrations)(nil), 5, "alice@acme.example")
	require.ErrorIs(t, err, settings.ErrInvalid)

	// Keeping a secret that is not stored is an error, and writes nothing.
	kept, err := settings.ParseValue(settings.SectionIntegrations, []byte(`{"jira":{"base_url":"https://acme.atlassian.net","project":"RTM","user":"bot@acme.example","api_token":"[redacted]"}}`))
	require.NoError(t, err)
	_, err = e.s.Put(ctx, kept, 5, "alice@acme.example")
	require.ErrorIs(t, err, settings.ErrInvalid)
	require.Equal(t, []string{"jira.api_token"}, problemPaths(t, err))
	_, err = e.s.At(ctx, settings.SectionIntegrations, 6)
	require.ErrorIs(t, err, settings.ErrNotFound)
	_, err = e.s.Secret(ctx, "nope.token")
	require.ErrorIs(t, err, settings.ErrInvalid)
}
