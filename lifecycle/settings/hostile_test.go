package settings_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/mailaddr"
	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/tenant"
)

func deep(n int) string { return strings.Repeat(`{"a":`, n) + `1` + strings.Repeat(`}`, n) }

// hostileValues are documents each section refuses, with the paths of
// the problems expected.
var hostileValues = []struct {
	name    string
	section settings.Section
	doc     string
	paths   []string
}{
	{"empty", settings.SectionRTM, ``, []string{""}},
	{"not json", settings.SectionRTM, `{"requirement_id_pattern":`, []string{""}},
	{"two documents", settings.SectionRTM, `{} {}`, []string{""}},
	{"invalid utf-8", settings.SectionBranding, "{\"product_name\":\"\xff\"}", []string{""}},
	{"huge", settings.SectionBranding, `{"product_name":"` + strings.Repeat("x", settings.MaxValueBytes) + `"}`, []string{""}},
	{"deep nesting", settings.SectionRTM, deep(settings.MaxDepth + 1), []string{strings.TrimSuffix(strings.Repeat("a.", settings.MaxDepth), ".")}},
	{"not an object", settings.SectionRTM, `[]`, []string{""}},
	{"unknown fields", settings.SectionRTM, `{"requirement_id_pattern":"^R$","categories":["A"],"statuses":["S"],"priorities":["P"],"colour":1,"Statuses":[]}`, []string{`["Statuses"]`, "colour"}},
	{"duplicate key", settings.SectionBranding, `{"product_name":"A","product_name":"B"}`, []string{"product_name"}},
	{"wrong types", settings.SectionRTM, `{"requirement_id_pattern":1,"categories":"A","statuses":[1],"priorities":null,"phases":[{"number":1.5,"name":"x"}]}`,
		[]string{"categories", "phases[0].number", "requirement_id_pattern", "statuses[0]"}},
	{"rtm rules", settings.SectionRTM, `{"requirement_id_pattern":"REQ-[0-9]+","categories":[],"statuses":["OK","OK"],"priorities":["1st"],"phases":[{"number":0,"name":""}]}`,
		[]string{"requirement_id_pattern", "categories", "statuses[1]", "priorities[0]", "phases[0].number", "phases[0].name"}},
	{"bad regexp", settings.SectionRTM, `{"requirement_id_pattern":"^(REQ$","categories":["A"],"statuses":["S"],"priorities":["P"]}`, []string{"requirement_id_pattern"}},
	{"unknown section", settings.Section("secrets"), `{}`, []string{""}},
	{"schema missing", settings.SectionCustomFields, `{}`, []string{"schema"}},
	{"schema not a schema", settings.SectionCustomFields, `{"schema":{"type":"object","properties":{"a":{"type":"strin"}}}}`, []string{"schema"}},
	{"schema bad pattern", settings.SectionCustomFields, `{"schema":{"type":"object","properties":{"a":{"type":"string","pattern":"(?<=x)"}}}}`, []string{"schema"}},
	{"schema not an object schema", settings.SectionCustomFields, `{"schema":{"type":"array"}}`, []string{"schema.type"}},
	{"schema of another draft", settings.SectionCustomFields, `{"schema":{"$schema":"http://json-schema.org/draft-07/schema#","type":"object"}}`, []string{`schema["$schema"]`}},
	{"schema remote ref", settings.SectionCustomFields, `{"schema":{"type":"object","properties":{"a":{"$ref":"https://evil.example/s.json"}}}}`, []string{"schema"}},
	{"schema file ref", settings.SectionCustomFields, `{"schema":{"type":"object","properties":{"a":{"$ref":"file:///etc/passwd"}}}}`, []string{"schema"}},
	{"schema relative ref", settings.SectionCustomFields, `{"schema":{"$id":"https://evil.example/","type":"object","properties":{"a":{"$ref":"other.json"}}}}`, []string{"schema"}},
	{"schema too deep", settings.SectionCustomFields, `{"schema":` + strings.Repeat(`{"type":"object","properties":{"a":`, 20) + `{}` + strings.Repeat(`}}`, 20) + `}`, []string{"schema." + strings.Repeat("properties.a.", 15) + "properties"}},
	{"schema too large", settings.SectionCustomFields, `{"schema":{"type":"object","description":"` + strings.Repeat("x", settings.MaxSchemaBytes) + `"}}`, []string{"schema"}},
	{"users rules", settings.SectionUsers, `{"users":[{"email":"Alice <alice@a.example>","roles":["owner"]},{"email":"bob@a.example","roles":["admin"]},{"email":"BOB@a.example","roles":[]}]}`,
		[]string{"users[0].email", "users[1].roles[0]", "users[2].email", "users[2].roles"}},
	{"users without owner", settings.SectionUsers, `{"users":[{"email":"bob@a.example","roles":["viewer","viewer"]}]}`, []string{"users[0].roles[1]", "users"}},
	{"users circular roles", settings.SectionUsers, `{"users":[{"email":"bob@a.example","roles":["x"]}],"roles":{"x":{"implies":["y"]},"y":{"implies":["x"]}}}`, []string{"roles"}},
	{"integrations http and more", settings.SectionIntegrations, `{"jira":{"base_url":"http://acme.atlassian.net","project":"rtm","user":"bot","api_token":null},"github":{"owner":"-acme","token":"Sntl1GitHubToken","app_id":1,"installation_id":2,"private_key":"Sntl2GitHubKey"}}`,
		[]string{"jira.base_url", "jira.project", "jira.user", "jira.api_token", "github.owner", "github"}},
	{"integrations local hosts", settings.SectionIntegrations, `{"jira":{"base_url":"https://127.0.0.1","project":"RTM","user":"b@a.example","api_token":"Sntl3JiraToken"},"github":{"base_url":"https://user:Sntl4URLPassword@ghe.acme.example/api","owner":"acme","token":"Sntl5GitHubToken"}}`,
		[]string{"jira.base_url", "github.base_url"}},
	{"github app key not pem", settings.SectionIntegrations, `{"github":{"owner":"acme","app_id":1,"installation_id":2,"private_key":"Sntl6NotAKey"}}`, []string{"github.private_key"}},
	{"webhooks", settings.SectionNotifications, `{"email":{"enabled":true,"recipients":["x"],"events":["requirement.created","nope"],"digest":"hourly"},"webhooks":[{"name":"ci","url":"http://hooks.acme.example/x","signing_secret":"Sntl7Short"},{"name":"ci","url":"https://localhost/x"},{"name":"Bad","url":"https://10.0.0.1/x"},{"name":"ok","url":"https://[::1]/x"},{"name":"meta","url":"https://169.254.169.254/latest"},{"name":"frag","url":"https://hooks.acme.example/#x"},{"name":"short","url":"https://127.1/x"},{"name":"hex","url":"https://0x7f.0.0.1/x"},{"name":"octal","url":"https://0177.0.0.01/x"},{"name":"mapped","url":"https://[::ffff:10.1.2.3]/x"}]}`,
		[]string{"email.recipients[0]", "email.events[1]", "email.digest", "webhooks[0].url", "webhooks[0].signing_secret", "webhooks[1].name", "webhooks[1].url", "webhooks[2].name", "webhooks[2].url", "webhooks[3].url", "webhooks[4].url", "webhooks[5].url",
			"webhooks[6].url", "webhooks[7].url", "webhooks[8].url", "webhooks[9].url"}},
	{"branding", settings.SectionBranding, `{"product_name":"Acme\u0007","logo_url":"ftp://cdn.acme.example/logo.png","primary_color":"red","accent_color":"#12345g"}`,
		[]string{"product_name", "logo_url", "primary_color", "accent_color"}},
	{"duplicate key in an array's object", settings.SectionRTM, `{"requirement_id_pattern":"^R$","categories":["A"],"statuses":["S"],"priorities":["P"],"phases":[{"number":1,"name":"a"},{"number":2,"number":3,"name":"b"}]}`, []string{"phases[1].number"}},
	{"unknown fields and rules at once", settings.SectionBranding, `{"product_name":" Acme","logo":"x","primary_color":"#12"}`, []string{"logo", "product_name", "primary_color"}},
	{"huge numbers", settings.SectionRTM, `{"requirement_id_pattern":"^R$","categories":["A"],"statuses":["S"],"priorities":["P"],"phases":[{"number":1e1000000,"name":"a"},{"number":` + strings.Repeat("1", 101) + `,"name":"b"}]}`, []string{"phases[0].number", "phases[1].number"}},
	{"secret as a number", settings.SectionIntegrations, `{"jira":{"base_url":"https://acme.atlassian.net","project":"RTM","user":"b@a.example","api_token":86753090}}`, []string{"jira.api_token"}},
}

// hostileSecrets are the secret values of hostileValues (tokens, keys,
// signing secrets, a URL's password), each distinctive, so that an error
// repeating any of them is found.
var hostileSecrets = []string{"Sntl1GitHubToken", "Sntl2GitHubKey", "Sntl3JiraToken", "Sntl4URLPassword", "Sntl5GitHubToken", "Sntl6NotAKey", "Sntl7Short", "86753090"}

// TestHostileValuesAreRefused: each hostile document gets an *Error
// naming exactly the expected fields, with one-line printable messages
// that repeat no secret value of any document.
func TestHostileValuesAreRefused(t *testing.T) {
	for _, c := range hostileValues {
		t.Run(c.name, func(t *testing.T) {
			_, err := settings.ParseValue(c.section, []byte(c.doc))
			require.ErrorIs(t, err, settings.ErrInvalid)
			require.ElementsMatch(t, c.paths, problemPaths(t, err), "%v", err)
			msg := err.Error()
			require.Less(t, len(msg), 4096)
			for _, r := range msg {
				require.True(t, r >= 0x20 && r < 0x7f, "message %q", msg)
			}
			for _, secret := range hostileSecrets {
				require.NotContains(t, msg, secret)
			}
			require.NotContains(t, msg, "Sntl")
			require.NotContains(t, msg, "evil.example")
		})
	}
}

// TestHostileSecretsAreEachInADocument: every sentinel of hostileSecrets
// is in a hostile document, so TestHostileValuesAreRefused looks for each.
func TestHostileSecretsAreEachInADocument(t *testing.T) {
	for _, secret := range hostileSecrets {
		found := false
		for _, c := range hostileValues {
			found = found || strings.Contains(c.doc, secret)
		}
		require.True(t, found, "%s is in no hostile document", secret)
	}
}

// TestEmailAddressesFollowMailaddr: the e-mail fields of the settings
// (users, the Jira user, notification recipients) take exactly the
// addresses internal/mailaddr takes, and refuse the others with its rule.
func TestEmailAddressesFollowMailaddr(t *testing.T) {
	for _, addr := range []string{
		"alice@acme.example", "a.b+c@sub.acme.example", "a`b@acme.example", "x{y}@acme.example",
		"user@acme.123", "alice@acme", "Alice <alice@acme.example>", "alice@acme.example, bob@acme.example",
		"al ice@acme.example", "alice@-acme.example", ".alice@acme.example", "ä@acme.example", "alice@[10.0.0.1]",
		strings.Repeat("a", 65) + "@acme.example",
	} {
		rule := mailaddr.Check(addr)
		for _, c := range []struct {
			section settings.Section
			path    string
			doc     string
		}{
			{settings.SectionUsers, "users[0].email", `{"users":[{"email":` + quote(addr) + `,"roles":["owner"]}]}`},
			{settings.SectionIntegrations, "jira.user", `{"jira":{"base_url":"https://acme.atlassian.net","project":"RTM","user":` + quote(addr) + `,"api_token":"t0ken"}}`},
			{settings.SectionNotifications, "email.recipients[0]", `{"email":{"enabled":true,"recipients":[` + quote(addr) + `]}}`},
		} {
			_, err := settings.ParseValue(c.section, []byte(c.doc))
			if rule == "" {
				require.NoError(t, err, "%s %q", c.path, addr)
				continue
			}
			require.ErrorIs(t, err, settings.ErrInvalid, "%s %q", c.path, addr)
			require.Equal(t, []string{c.path}, problemPaths(t, err), "%q: %v", addr, err)
			require.Contains(t, err.Error(), rule, "%s %q", c.path, addr)
		}
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestHostilePutsWriteNothing: typed values that break rules, a missing
// actor or a negative version are refused by Put and nothing is
// written.
func TestHostilePutsWriteNothing(t *testing.T) {
	e := newEnv(t, tenant.TierStandard)
	id, ctx := e.newTenant(t, "hostile")
	bad := []settings.Value{
		settings.RTM{},
		settings.Branding{PrimaryColor: "#fff"},
		settings.Notifications{Webhooks: []settings.Webhook{{Name: "w", URL: "http://hooks.acme.example"}}},
		settings.Integrations{Jira: &settings.Jira{BaseURL: "https://acme.atlassian.net", Project: "RTM", User: "b@a.example", APIToken: settings.NewSecret("[redacted]")}},
		settings.Users{Users: []settings.User{{Email: "a@a.example", Roles: []string{"viewer"}}}},
		settings.CustomFields{Schema: []byte(`{"type":"object","$ref":"https://evil.example/x"}`)},
	}
	for _, v := range bad {
		_, err := e.s.Put(ctx, v, 0, "alice@acme.example")
		require.ErrorIs(t, err, settings.ErrInvalid, "%T", v)
	}
	_, err := e.s.Put(ctx, nil, 0, "alice@acme.example")
	require.ErrorIs(t, err, settings.ErrInvalid)
	_, err = e.s.Put(ctx, settings.DefaultRTM(), 0, "")
	require.ErrorIs(t, err, settings.ErrInvalid)
	_, err = e.s.Put(ctx, settings.DefaultRTM(), 0, "line\nbreak")
	require.ErrorIs(t, err, settings.ErrInvalid)
	_, err = e.s.Put(ctx, settings.DefaultRTM(), -1, "alice@acme.example")
	require.ErrorIs(t, err, settings.ErrInvalid)
	_, err = e.s.Get(ctx, settings.Section("nope"))
	require.ErrorIs(t, err, settings.ErrInvalid)
	require.Zero(t, e.rows(t, id))
}

// TestStaleVersionConflicts: a Put with a version that is not the
// latest fails with ErrConflict and writes nothing; of concurrent Puts
// from one version, exactly one wins.
func TestStaleVersionConflicts(t *testing.T) {
	e := newEnv(t, tenant.TierStandard)
	id, ctx := e.newTenant(t, "conflict")
	_, err := e.s.Put(ctx, settings.DefaultRTM(), 0, "alice@acme.example")
	require.NoError(t, err)
	for _, stale := range []int64{0, 2, 7} {
		_, err = e.s.Put(ctx, settings.DefaultRTM(), stale, "bob@acme.example")
		require.ErrorIs(t, err, settings.ErrConflict, "%d", stale)
	}
	require.Equal(t, int64(1), e.rows(t, id))

	const n = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		won  int
		lost int
	)
	for range n {
		wg.Go(func() {
			_, err := e.s.Put(ctx, settings.DefaultRTM(), 1, "racer@acme.example")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errorsIs(err, settings.ErrConflict):
				lost++
			default:
				t.Errorf("unexpected error: %v", err)
			}
		})
	}
	wg.Wait()
	require.Equal(t, 1, won)
	require.Equal(t, n-1, lost)
	require.Equal(t, int64(2), e.rows(t, id))
}

// TestBrandingIsForEnterpriseAndGovernment: the standard tier is refused
// with ErrTier and nothing written; the enterprise tier stores it.
func TestBrandingIsForEnterpriseAndGovernment(t *testing.T) {
	b := settings.Branding{ProductName: "Acme RTM", LogoURL: "https://cdn.acme.example/logo.svg", PrimaryColor: "#0a2540", AccentColor: "#FFB000"}
	std := newEnv(t, tenant.TierStandard)
	id, ctx := std.newTenant(t, "brandstd")
	_, err := std.s.Put(ctx, b, 0, "alice@acme.example")
	require.ErrorIs(t, err, settings.ErrTier)
	require.Contains(t, err.Error(), "standard")
	require.Zero(t, std.rows(t, id))

	for _, tier := range []tenant.Tier{tenant.TierEnterprise, tenant.TierGovernment} {
		ent := newEnv(t, tier)
		_, ectx := ent.newTenant(t, "brand")
		_, err = ent.s.Put(ectx, b, 0, "alice@acme.example")
		require.NoError(t, err, tier)
		rev, err := ent.s.Get(ectx, settings.SectionBranding)
		require.NoError(t, err)
		require.Equal(t, b, rev.Value)
	}
}

// TestStoredValuesAreCheckedWhenRead: a revision written around Put
// (by SQL on the tenant's own connection, as injected SQL could) that
// breaks the section's rules is reported by Get as invalid, not handed
// to the service.
func TestStoredValuesAreCheckedWhenRead(t *testing.T) {
	e := newEnv(t, tenant.TierStandard)
	_, ctx := e.newTenant(t, "tamper")
	_, err := e.db.Exec(ctx, `INSERT INTO tenant_settings (section, version, value, actor) VALUES ('notifications', 1, $1, 'mallory')`,
		`{"email":{"enabled":true},"webhooks":[{"name":"x","url":"http://169.254.169.254/latest/meta-data"}]}`)
	require.NoError(t, err)
	_, err = e.s.Get(ctx, settings.SectionNotifications)
	require.ErrorIs(t, err, settings.ErrInvalid)
	require.Equal(t, []string{"webhooks[0].url"}, problemPaths(t, err))
	require.Equal(t, "settings: invalid settings (notifications version 1 as stored): webhooks[0].url: must be an https URL (https://...)", err.Error())
	_, err = e.s.History(ctx, settings.SectionNotifications)
	require.ErrorIs(t, err, settings.ErrInvalid)
	// A value the tenant's role inserts under another section name is
	// refused by the table itself.
	_, err = e.db.Exec(ctx, `INSERT INTO tenant_settings (section, version, value, actor) VALUES ('Bad Section', 1, '{}', 'mallory')`)
	require.Equal(t, "23514", pgCode(err), "%v", err)
	_, err = e.db.Exec(ctx, `INSERT INTO tenant_settings (section, version, value, actor) VALUES ('rtm', 1, '[]', 'mallory')`)
	require.Equal(t, "23514", pgCode(err), "%v", err)
}

// TestErrorsNameThePackageOnce: each error says "settings:" once, however
// deep its chain.
func TestErrorsNameThePackageOnce(t *testing.T) {
	e := newEnv(t, tenant.TierStandard)
	_, ctx := e.newTenant(t, "errmsg")
	_, err := e.s.Put(ctx, settings.DefaultRTM(), 0, "alice@acme.example")
	require.NoError(t, err)
	var errs []error
	_, err = e.s.Put(ctx, settings.DefaultRTM(), 0, "alice@acme.example")
	errs = append(errs, err)
	_, err = e.s.Put(ctx, settings.Branding{ProductName: "X"}, 0, "alice@acme.example")
	errs = append(errs, err)
	_, err = e.s.Get(ctx, settings.SectionUsers)
	errs = append(errs, err)
	_, err = e.s.Get(t.Context(), settings.SectionUsers)
	errs = append(errs, err)
	_, err = e.s.Secret(ctx, settings.SecretGitHubToken)
	errs = append(errs, err)
	errs = append(errs, e.s.Import(ctx, nil))
	errs = append(errs, e.s.ValidateCustomFields(ctx, []byte(`{"a":1}`)))
	_, err = settings.ParseSection("nope")
	errs = append(errs, err)
	for _, err := range errs {
		require.Error(t, err)
		require.NotContains(t, err.Error(), ": settings:")
		require.NotContains(t, err.Error(), "settings: settings")
		require.True(t, strings.HasPrefix(err.Error(), "settings: "), err.Error())
	}
}

// TestAcceptedURLs: public hosts, ports, queries and public addresses
// pass the URL rules the hostile cases break.
func TestAcceptedURLs(t *testing.T) {
	for _, u := range []string{
		"https://hooks.acme.example/rtm", "https://hooks.acme.example:8443/x?team=qa", "https://8.8.8.8/x",
		"https://[2606:4700:4700::1111]/x", "https://a.b.hooks.acme.example./", "https://xn--bcher-kva.example/",
	} {
		doc := `{"email":{"enabled":false},"webhooks":[{"name":"w","url":"` + u + `"}]}`
		_, err := settings.ParseValue(settings.SectionNotifications, []byte(doc))
		require.NoError(t, err, u)
	}
}
