package settings_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/tenant"
)

// fill gives the tenant of ctx a history in every section.
func fill(t *testing.T, e *env, ctx context.Context) {
	t.Helper()
	put := func(v settings.Value, expect int64) {
		t.Helper()
		_, err := e.s.Put(ctx, v, expect, "alice@acme.example")
		require.NoError(t, err)
	}
	rtm := settings.DefaultRTM()
	put(rtm, 0)
	rtm.Phases = []settings.Phase{{Number: 13, Name: "Managed service"}}
	put(rtm, 1)
	put(settings.CustomFields{Schema: json.RawMessage(aSchema)}, 0)
	put(sampleUsers(), 0)
	put(sampleIntegrations("v1-token-0123456789"), 0)
	put(sampleIntegrations("v2-token-0123456789"), 1)
	put(settings.Notifications{
		Email:    settings.EmailNotifications{Enabled: true, Events: []settings.Event{settings.EventStatusChanged}, Digest: settings.DigestDaily},
		Webhooks: []settings.Webhook{{Name: "ci", URL: "https://hooks.acme.example/rtm?team=qa", SigningSecret: settings.NewSecret("whsec-0123456789abcdef")}},
	}, 0)
	put(settings.Branding{ProductName: "Acme RTM", PrimaryColor: "#0a2540"}, 0)
}

// TestExportImportRoundTrip: a tenant's settings exported (every
// version, secrets opened), through JSON as a backup holds them, and
// imported into a fresh tenant come back the same, with the secrets
// sealed again under the new tenant's key: other ciphertext, which opens
// for the new tenant only.
func TestExportImportRoundTrip(t *testing.T) {
	e := newEnv(t, tenant.TierEnterprise)
	a, actx := e.newTenant(t, "expa")
	c, cctx := e.newTenant(t, "impc")
	fill(t, e, actx)

	recs, err := e.s.Export(actx)
	require.NoError(t, err)
	require.Len(t, recs, 8)
	var ints []settings.Record
	for _, r := range recs {
		if r.Section == settings.SectionIntegrations {
			ints = append(ints, r)
		}
	}
	require.Len(t, ints, 2)
	require.Equal(t, "jira-v1-token-0123456789", plain(t, ints[0], settings.SecretJiraAPIToken))
	require.Equal(t, "ghp_v2-token-0123456789", plain(t, ints[1], settings.SecretGitHubToken))
	for _, s := range printed(t, ints[1]) {
		require.NotContains(t, s, "v2-token", "a Record prints and logs its secrets redacted")
	}

	// encoding/json, alone or in a slice (as a log handler would
	// marshal it), shows the secrets redacted.
	logged, err := json.Marshal(recs)
	require.NoError(t, err)
	require.NotContains(t, string(logged), "v2-token", "json.Marshal of []Record redacts")
	require.NotContains(t, string(logged), "jira-v1-token")

	// Through the archive encoding, as the backup archive holds it.
	var archive bytes.Buffer
	require.NoError(t, settings.EncodeArchive(&archive, recs))
	require.Contains(t, archive.String(), "ghp_v2-token-0123456789")
	restored, err := settings.DecodeArchive(&archive)
	require.NoError(t, err)
	require.NoError(t, e.s.Import(cctx, restored))

	again, err := e.s.Export(cctx)
	require.NoError(t, err)
	require.Equal(t, len(recs), len(again))
	for i := range recs {
		require.Equal(t, recs[i].Section, again[i].Section)
		require.Equal(t, recs[i].Version, again[i].Version)
		require.JSONEq(t, string(recs[i].Value), string(again[i].Value))
		require.Equal(t, recs[i].Actor, again[i].Actor)
		require.True(t, recs[i].Time.Equal(again[i].Time))
		require.Equal(t, archiveOf(t, recs[i]), archiveOf(t, again[i]))
	}
	for _, sec := range settings.Sections() {
		ra, err := e.s.Get(actx, sec)
		require.NoError(t, err)
		rc, err := e.s.Get(cctx, sec)
		require.NoError(t, err)
		require.Equal(t, ra.Value, rc.Value, sec)
		require.Equal(t, ra.Version, rc.Version, sec)
	}
	tok, err := e.s.Secret(cctx, settings.WebhookSecret("ci"))
	require.NoError(t, err)
	require.Equal(t, "whsec-0123456789abcdef", tok)
	require.NoError(t, e.s.ValidateCustomFields(cctx, []byte(`{"severity":"low"}`)))

	// Sealed again: C's ciphertext differs from A's, and A's copied into
	// C's row does not open there.
	asu, atbl := e.superuser(t, a)
	csu, ctbl := e.superuser(t, c)
	var as, cs []byte
	require.NoError(t, asu.QueryRow(t.Context(), `SELECT sealed FROM `+atbl+` WHERE section = 'integrations' AND version = 2`).Scan(&as))
	require.NoError(t, csu.QueryRow(t.Context(), `SELECT sealed FROM `+ctbl+` WHERE section = 'integrations' AND version = 2`).Scan(&cs))
	require.NotEmpty(t, cs)
	require.False(t, bytes.Equal(as, cs))
	_, err = csu.Exec(t.Context(), `INSERT INTO `+ctbl+` (tenant_id, section, version, value, sealed, actor) SELECT tenant_id, section, 3, value, $1, actor FROM `+ctbl+` WHERE section = 'integrations' AND version = 2`, as)
	require.NoError(t, err)
	_, err = e.s.Secret(cctx, settings.SecretGitHubToken)
	require.ErrorIs(t, err, keys.ErrDecrypt)

	// Import only into a tenant without settings.
	require.ErrorIs(t, e.s.Import(actx, restored), settings.ErrNotEmpty)
}

// TestImportRefusesBadRecords: records that break a rule are all named,
// and nothing is written; branding is refused on the standard tier.
func TestImportRefusesBadRecords(t *testing.T) {
	e := newEnv(t, tenant.TierEnterprise)
	_, actx := e.newTenant(t, "impsrc")
	d, dctx := e.newTenant(t, "impdst")
	fill(t, e, actx)
	recs, err := e.s.Export(actx)
	require.NoError(t, err)

	bad := make([]settings.Record, len(recs))
	copy(bad, recs)
	bad[0].Value = json.RawMessage(`{"nope":1}`) // branding v1
	bad[1].Section = "secrets"
	for i := range bad {
		if bad[i].Section == settings.SectionIntegrations && bad[i].Version == 2 {
			bad[i].Secrets = map[settings.SecretName]settings.Secret{settings.SecretJiraAPIToken: settings.NewSecret("x")}
		}
		if bad[i].Section == settings.SectionRTM && bad[i].Version == 2 {
			bad[i].Version = 3
			bad[i].Actor = ""
		}
	}
	kept := settings.Record{Section: settings.SectionNotifications, Version: 2, Actor: "x", Value: json.RawMessage(`{"email":{"enabled":false},"webhooks":[{"name":"ci","url":"https://hooks.acme.example/","signing_secret":"[redacted]"}]}`),
		Secrets: map[settings.SecretName]settings.Secret{settings.WebhookSecret("ci"): {}}}
	bad = append(bad, kept)
	err = e.s.Import(dctx, bad)
	require.ErrorIs(t, err, settings.ErrInvalid)
	paths := problemPaths(t, err)
	require.Subset(t, paths, []string{"records[0].value.nope", "records[1].section", "records", `records[8].secrets["webhooks.ci.signing_secret"]`})
	require.Contains(t, err.Error(), "the versions of rtm must be 1 to 2")
	require.Zero(t, e.rows(t, d))

	std := newEnv(t, tenant.TierStandard)
	s, sctx := std.newTenant(t, "impstd")
	require.ErrorIs(t, std.s.Import(sctx, recs), settings.ErrTier)
	require.Zero(t, std.rows(t, s))
}

// plain returns the value of secret n of r, as a backup holds it.
func plain(t *testing.T, r settings.Record, n settings.SecretName) string {
	t.Helper()
	var j []struct {
		Secrets map[settings.SecretName]string `json:"secrets"`
	}
	require.NoError(t, json.Unmarshal([]byte(archiveOf(t, r)), &j))
	return j[0].Secrets[n]
}

// archiveOf returns r as settings.EncodeArchive writes it.
func archiveOf(t *testing.T, r settings.Record) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, settings.EncodeArchive(&b, []settings.Record{r}))
	return b.String()
}

// TestShreddedTenantsSecretsDoNotOpen: after the tenant's keys are
// crypto-shredded (deprovisioning, after its backup), its sealed secrets
// fail with keys.ErrKeyDestroyed, and so does its export: back up first.
func TestShreddedTenantsSecretsDoNotOpen(t *testing.T) {
	e := newEnv(t, tenant.TierStandard)
	id, ctx := e.newTenant(t, "shred")
	s, err := settings.New(e.db, e.prov) // the Manager that shreds, whose cache Shred purges
	require.NoError(t, err)
	_, err = s.Put(ctx, sampleIntegrations("shred-0123456789"), 0, "alice@acme.example")
	require.NoError(t, err)
	recs, err := s.Export(ctx)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	_, err = e.prov.Shred(t.Context(), id)
	require.NoError(t, err)
	_, err = s.Secret(ctx, settings.SecretJiraAPIToken)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
	_, err = s.Export(ctx)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
	rev, err := s.Get(ctx, settings.SectionIntegrations)
	require.NoError(t, err, "what is not secret still reads")
	require.Equal(t, "RTM", rev.Value.(settings.Integrations).Jira.Project)
}
