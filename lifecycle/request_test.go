package lifecycle_test

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/lifecycle"
	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

const (
	testARN  = "arn:aws-us-gov:kms:us-gov-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	omit     = "\x00omit"
	seedYAML = `# Tenant provisioning request
tenant:
  id: "abc123"
  name: "Acme Defense Corp"
  tier: "enterprise"
  region: "us-gov-east-1"
  admin_email: "admin@acme.defense"
  settings:
    encryption: "customer-managed"
    kms_key_arn: "` + testARN + `"
`
)

// doc returns the seed request with the given fields (id, name, ...,
// encryption, kms_key_arn) set to raw YAML values, or left out if the value
// is omit.
func doc(t testing.TB, kv ...string) string {
	t.Helper()
	require.Zero(t, len(kv)%2, "doc takes field, value pairs")
	fields := []string{"id", "name", "tier", "region", "admin_email", "encryption", "kms_key_arn"}
	values := map[string]string{
		"id": `"abc123"`, "name": `"Acme Defense Corp"`, "tier": `"enterprise"`, "region": `"us-gov-east-1"`,
		"admin_email": `"admin@acme.defense"`, "encryption": `"customer-managed"`, "kms_key_arn": `"` + testARN + `"`,
	}
	for i := 0; i < len(kv); i += 2 {
		_, ok := values[kv[i]]
		require.True(t, ok, "doc: unknown field %q", kv[i])
		values[kv[i]] = kv[i+1]
	}
	var b strings.Builder
	b.WriteString("tenant:\n")
	for _, f := range fields {
		indent := "  "
		if f == "encryption" {
			b.WriteString("  settings:\n")
		}
		if f == "encryption" || f == "kms_key_arn" {
			indent = "    "
		}
		if values[f] != omit {
			b.WriteString(indent + f + ": " + values[f] + "\n")
		}
	}
	return b.String()
}

func parse(t testing.TB, s string) (*lifecycle.Request, error) {
	t.Helper()
	return lifecycle.ParseRequest(strings.NewReader(s))
}

func TestParseRequestSeed(t *testing.T) {
	req, err := parse(t, seedYAML)
	require.NoError(t, err)
	require.Equal(t, &lifecycle.Request{
		ID:         tenant.MustParseID("abc123"),
		Name:       "Acme Defense Corp",
		Tier:       tenant.TierEnterprise,
		Region:     "us-gov-east-1",
		AdminEmail: "admin@acme.defense",
		Settings:   lifecycle.Settings{Encryption: lifecycle.EncryptionCustomer, KMSKeyARN: testARN},
	}, req)
	require.Equal(t, seedYAML[strings.Index(seedYAML, "tenant:"):], doc(t), "doc() builds the seed request")
}

func TestParseRequestAccepts(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		check     func(t *testing.T, r *lifecycle.Request)
	}{
		{"platform-managed without an ARN", doc(t, "encryption", "platform-managed", "kms_key_arn", omit), func(t *testing.T, r *lifecycle.Request) {
			require.Equal(t, lifecycle.EncryptionPlatform, r.Settings.Encryption)
			require.Empty(t, r.Settings.KMSKeyARN)
		}},
		{"dedicated without an ARN", doc(t, "encryption", "dedicated", "kms_key_arn", omit), func(t *testing.T, r *lifecycle.Request) {
			require.Equal(t, lifecycle.EncryptionDedicated, r.Settings.Encryption)
		}},
		{"unquoted strings", doc(t, "id", "abc123", "name", "Acme Defense Corp", "tier", "standard", "region", "eu-west-2"), func(t *testing.T, r *lifecycle.Request) {
			require.Equal(t, "abc123", r.ID.String())
			require.Equal(t, tenant.TierStandard, r.Tier)
		}},
		{"single-quoted strings", doc(t, "name", `'O''Brien & Sons'`), func(t *testing.T, r *lifecycle.Request) {
			require.Equal(t, "O'Brien & Sons", r.Name)
		}},
		{"unicode name", doc(t, "name", `"Société Générale — Défense"`), func(t *testing.T, r *lifecycle.Request) {
			require.Equal(t, "Société Générale — Défense", r.Name)
		}},
		{"alias ARN", doc(t, "kms_key_arn", `"arn:aws:kms:us-east-1:111122223333:alias/acme/tenancy"`, "region", "us-east-1"), func(t *testing.T, r *lifecycle.Request) {
			require.Equal(t, "arn:aws:kms:us-east-1:111122223333:alias/acme/tenancy", r.Settings.KMSKeyARN)
		}},
		{"multi-region key ARN", doc(t, "kms_key_arn", `"arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"`), nil},
		{"aws-cn partition", doc(t, "kms_key_arn", `"arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"`), nil},
		{"plus address and subdomain", doc(t, "admin_email", `"ops+tenancy@mail.acme-defense.example"`), nil},
		{"flow style", `{tenant: {id: abc123, name: Acme, tier: government, region: us-gov-west-1, admin_email: a@acme.gov, settings: {encryption: dedicated}}}`, func(t *testing.T, r *lifecycle.Request) {
			require.Equal(t, tenant.TierGovernment, r.Tier)
		}},
		{"CRLF line endings and comments", strings.ReplaceAll(seedYAML, "\n", " # note\r\n"), nil},
		{"document markers", "---\n" + seedYAML + "...\n", nil},
		{"exactly MaxRequestSize bytes", pad(seedYAML, lifecycle.MaxRequestSize), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parse(t, tc.doc)
			require.NoError(t, err)
			require.NotNil(t, r)
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

// pad pads a document with a comment to n bytes.
func pad(s string, n int) string {
	return s + "#" + strings.Repeat("x", n-len(s)-2) + "\n"
}

const billionLaughs = `a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
tenant: *i
`

// hostileCases are requests ParseRequest must refuse, each with the exact
// set of field paths it must report ("" is the whole document).
func hostileCases(t testing.TB) []struct {
	name, doc string
	paths     []string
} {
	t.Helper()
	long := strings.Repeat("a", 65) + "@acme.defense"
	return []struct {
		name, doc string
		paths     []string
	}{
		// IDs.
		{"id upper case", doc(t, "id", `"Acme"`), []string{"tenant.id"}},
		{"id reserved", doc(t, "id", `"public"`), []string{"tenant.id"}},
		{"id reserved prefix pg_", doc(t, "id", `"pg_catalog"`), []string{"tenant.id"}},
		{"id reserved prefix tenant_", doc(t, "id", `"tenant_abc"`), []string{"tenant.id"}},
		{"id starts with a digit", doc(t, "id", `"1abc"`), []string{"tenant.id"}},
		{"id with a hyphen", doc(t, "id", `"abc-123"`), []string{"tenant.id"}},
		{"id too long", doc(t, "id", strings.Repeat("a", tenant.MaxIDLen+1)), []string{"tenant.id"}},
		{"id SQL injection", doc(t, "id", `"abc; DROP SCHEMA public"`), []string{"tenant.id"}},
		{"id empty", doc(t, "id", `""`), []string{"tenant.id"}},
		{"id null", doc(t, "id", `null`), []string{"tenant.id"}},
		{"id a number", doc(t, "id", `123`), []string{"tenant.id"}},
		// Tiers.
		{"tier unknown", doc(t, "tier", `"gold"`), []string{"tenant.tier"}},
		{"tier capitalised", doc(t, "tier", `"Enterprise"`), []string{"tenant.tier"}},
		{"tier a number", doc(t, "tier", `5`), []string{"tenant.tier"}},
		// Regions.
		{"region without a number", doc(t, "region", `"us-east"`), []string{"tenant.region"}},
		{"region upper case", doc(t, "region", `"US-EAST-1"`), []string{"tenant.region"}},
		{"region path traversal", doc(t, "region", `"../us-east-1"`), []string{"tenant.region"}},
		{"region a list", doc(t, "region", `["us-east-1"]`), []string{"tenant.region"}},
		// E-mail addresses.
		{"email display name", doc(t, "admin_email", `"Admin <admin@acme.defense>"`), []string{"tenant.admin_email"}},
		{"email angle brackets", doc(t, "admin_email", `"<admin@acme.defense>"`), []string{"tenant.admin_email"}},
		{"email two @", doc(t, "admin_email", `"admin@evil.example@acme.defense"`), []string{"tenant.admin_email"}},
		{"email no @", doc(t, "admin_email", `"admin.acme.defense"`), []string{"tenant.admin_email"}},
		{"email unicode local part", doc(t, "admin_email", `"ädmin@acme.defense"`), []string{"tenant.admin_email"}},
		{"email unicode domain", doc(t, "admin_email", `"admin@аcme.defense"`), []string{"tenant.admin_email"}},
		{"email header injection", doc(t, "admin_email", `"admin@acme.defense\nBcc: all@evil.example"`), []string{"tenant.admin_email"}},
		{"email CRLF injection", doc(t, "admin_email", `"admin@acme.defense\r\nBcc: all@evil.example"`), []string{"tenant.admin_email"}},
		{"email comment", doc(t, "admin_email", `"admin(boss)@acme.defense"`), []string{"tenant.admin_email"}},
		{"email quoted local part", doc(t, "admin_email", `'"ad min"@acme.defense'`), []string{"tenant.admin_email"}},
		{"email list", doc(t, "admin_email", `"a@acme.defense, b@acme.defense"`), []string{"tenant.admin_email"}},
		{"email domain without a dot", doc(t, "admin_email", `"admin@localhost"`), []string{"tenant.admin_email"}},
		{"email IP literal", doc(t, "admin_email", `"admin@[127.0.0.1]"`), []string{"tenant.admin_email"}},
		{"email numeric domain", doc(t, "admin_email", `"admin@127.0.0.1"`), []string{"tenant.admin_email"}},
		{"email local part too long", doc(t, "admin_email", `"`+long+`"`), []string{"tenant.admin_email"}},
		{"email too long", doc(t, "admin_email", `"a@`+strings.Repeat("b", 63)+"."+strings.Repeat("c", 63)+"."+strings.Repeat("d", 63)+"."+strings.Repeat("e", 63)+`.com"`), []string{"tenant.admin_email"}},
		{"email trailing dot in local part", doc(t, "admin_email", `"admin.@acme.defense"`), []string{"tenant.admin_email"}},
		{"email leading space", doc(t, "admin_email", `" admin@acme.defense"`), []string{"tenant.admin_email"}},
		{"email hyphen at label start", doc(t, "admin_email", `"admin@-acme.defense"`), []string{"tenant.admin_email"}},
		{"email mailto", doc(t, "admin_email", `"mailto:admin@acme.defense"`), []string{"tenant.admin_email"}},
		// Names.
		{"name a list", doc(t, "name", `["Acme"]`), []string{"tenant.name"}},
		{"name a mapping", doc(t, "name", `{first: Acme}`), []string{"tenant.name"}},
		{"name a number", doc(t, "name", `1984`), []string{"tenant.name"}},
		{"name a boolean", doc(t, "name", `true`), []string{"tenant.name"}},
		{"name with a newline", doc(t, "name", `"Acme\nINFO forged log line"`), []string{"tenant.name"}},
		{"name with a tab", doc(t, "name", `"Acme\tCorp"`), []string{"tenant.name"}},
		{"name with a right-to-left override", doc(t, "name", `"Acme\u202eproC"`), []string{"tenant.name"}},
		{"name with NUL escaped", doc(t, "name", `"Acme\0"`), []string{"tenant.name"}},
		{"name block scalar", strings.Replace(doc(t), `name: "Acme Defense Corp"`, "name: |\n    Acme\n    Corp", 1), []string{"tenant.name"}},
		{"name leading space", doc(t, "name", `" Acme"`), []string{"tenant.name"}},
		{"name too long", doc(t, "name", strings.Repeat("n", 201)), []string{"tenant.name"}},
		{"name explicit binary tag", doc(t, "name", `!!binary QWNtZQ==`), []string{"tenant.name"}},
		{"name explicit str tag", doc(t, "name", `!!str Acme`), []string{"tenant.name"}},
		{"name custom tag", doc(t, "name", `!env HOME`), []string{"tenant.name"}},
		// Unknown fields at each level.
		{"unknown top-level field", seedYAML + "extra: 1\n", []string{"extra"}},
		{"unknown tenant field", doc(t) + "  owner: mallory\n", []string{"tenant.owner"}},
		{"unknown settings field", doc(t) + "    kms_key: x\n", []string{"tenant.settings.kms_key"}},
		{"unknown field with a hostile name", doc(t) + "  \"bad\\nkey\\u001b[31m\": x\n", []string{`tenant["bad\nkey\x1b[31m"]`}},
		{"field name in upper case", strings.Replace(doc(t), "  name:", "  Name:", 1), []string{`tenant["Name"]`, "tenant.name"}},
		{"merge key", "base: {id: abc123}\ntenant:\n  <<: {id: abc123}\n", []string{"base", `tenant["<<"]`, "tenant.id", "tenant.name", "tenant.tier", "tenant.region", "tenant.admin_email", "tenant.settings"}},
		{"non-string key", doc(t) + "  1: x\n", []string{"tenant"}},
		// Missing fields, all reported together.
		{"empty tenant", "tenant: {}\n", []string{"tenant.id", "tenant.name", "tenant.tier", "tenant.region", "tenant.admin_email", "tenant.settings"}},
		{"null tenant", "tenant:\n", []string{"tenant"}},
		{"no tenant", "other: x\n", []string{"other", "tenant"}},
		{"empty settings", doc(t, "encryption", omit, "kms_key_arn", omit) + "", []string{"tenant.settings"}},
		{"settings without encryption", doc(t, "encryption", omit), []string{"tenant.settings.encryption"}},
		{"everything wrong at once", doc(t, "id", `"Acme"`, "name", `[x]`, "tier", `"gold"`, "region", `"mars"`, "admin_email", `"x"`, "encryption", `"aes"`, "kms_key_arn", `"local:///etc/key"`),
			[]string{"tenant.id", "tenant.name", "tenant.tier", "tenant.region", "tenant.admin_email", "tenant.settings.encryption", "tenant.settings.kms_key_arn"}},
		// Wrong shapes.
		{"tenant a list", "tenant:\n  - id: abc123\n", []string{"tenant"}},
		{"tenant a string", "tenant: abc123\n", []string{"tenant"}},
		{"settings a string", strings.Replace(doc(t, "encryption", omit, "kms_key_arn", omit), "settings:", "settings: platform-managed", 1), []string{"tenant.settings"}},
		{"root a list", "- " + strings.ReplaceAll(strings.TrimSuffix(doc(t), "\n"), "\n", "\n  ") + "\n", []string{""}},
		{"root a list of two requests", "- tenant: {}\n- tenant: {}\n", []string{""}},
		{"root a string", "tenant\n", []string{""}},
		// Duplicate keys.
		{"duplicate id", doc(t) + "  id: \"other\"\n", []string{"tenant.id"}},
		{"duplicate tenant", doc(t) + "tenant: {}\n", []string{"tenant"}},
		{"duplicate encryption", doc(t) + "    encryption: platform-managed\n", []string{"tenant.settings.encryption"}},
		// Documents.
		{"two documents", seedYAML + "---\n" + seedYAML, []string{""}},
		{"second document invalid", seedYAML + "---\n: : :\n", []string{""}},
		{"empty document", "", []string{""}},
		{"only white space", " \n\n\t\n", []string{""}},
		{"only a comment", "# nothing\n", []string{""}},
		{"malformed YAML", "tenant: {id: abc123\n", []string{""}},
		{"tab indentation", strings.ReplaceAll(doc(t), "  ", "\t"), []string{""}},
		{"invalid UTF-8", doc(t, "name", "\"Acme \xff\xfe Corp\""), []string{""}},
		{"UTF-16", "\xff\xfet\x00e\x00", []string{""}},
		{"byte order mark", "\ufeff" + seedYAML, []string{""}},
		{"NUL byte", doc(t, "name", "\"Acme\x00\""), []string{""}},
		{"escape byte", doc(t, "name", "\"Acme\x1b[2J\""), []string{""}},
		{"larger than MaxRequestSize", pad(seedYAML, lifecycle.MaxRequestSize+1), []string{""}},
		{"10 MiB document", pad(seedYAML, 10<<20), []string{""}},
		{"deeply nested", "tenant: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n", []string{""}},
		// Anchors and aliases.
		{"anchor and alias", strings.Replace(doc(t, "name", `&n "Acme"`), `region: "us-gov-east-1"`, "region: *n", 1), []string{""}},
		{"anchor alone", doc(t, "name", `&n "Acme"`), []string{""}},
		{"alias merge", "base: &b {id: abc123}\ntenant:\n  <<: *b\n", []string{""}},
		{"billion laughs", billionLaughs, []string{""}},
		{"undefined alias", doc(t, "name", `*nothing`), []string{""}},
		// Encryption and the KMS key.
		{"encryption unknown", doc(t, "encryption", `"aes-256"`, "kms_key_arn", omit), []string{"tenant.settings.encryption"}},
		{"encryption a list", doc(t, "encryption", `[customer-managed]`), []string{"tenant.settings.encryption"}},
		{"customer-managed without ARN", doc(t, "kms_key_arn", omit), []string{"tenant.settings.kms_key_arn"}},
		{"customer-managed with empty ARN", doc(t, "kms_key_arn", `""`), []string{"tenant.settings.kms_key_arn"}},
		{"customer-managed with null ARN", doc(t, "kms_key_arn", `null`), []string{"tenant.settings.kms_key_arn"}},
		{"customer-managed with empty ARN value", doc(t, "kms_key_arn", ``), []string{"tenant.settings.kms_key_arn"}},
		{"platform-managed with null ARN", doc(t, "encryption", "platform-managed", "kms_key_arn", `null`), []string{"tenant.settings.kms_key_arn"}},
		{"ARN tagged null", doc(t, "encryption", "platform-managed", "kms_key_arn", `!!null ""`), []string{"tenant.settings.kms_key_arn", "tenant.settings.kms_key_arn"}},
		{"platform-managed with ARN", doc(t, "encryption", "platform-managed"), []string{"tenant.settings.kms_key_arn"}},
		{"dedicated with ARN", doc(t, "encryption", "dedicated"), []string{"tenant.settings.kms_key_arn"}},
		{"ARN of S3", doc(t, "kms_key_arn", `"arn:aws:s3:::acme-bucket"`), []string{"tenant.settings.kms_key_arn"}},
		{"ARN of IAM", doc(t, "kms_key_arn", `"arn:aws:iam::111122223333:role/admin"`), []string{"tenant.settings.kms_key_arn"}},
		{"ARN of another cloud", doc(t, "kms_key_arn", `"arn:azure:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"`), []string{"tenant.settings.kms_key_arn"}},
		{"local URI", doc(t, "kms_key_arn", `"local:///etc/tenancy/master.key"`), []string{"tenant.settings.kms_key_arn"}},
		{"pkcs11 URI", doc(t, "kms_key_arn", `"pkcs11:token=platform;object=master?module-path=/tmp/evil.so"`), []string{"tenant.settings.kms_key_arn"}},
		{"gcp-kms URI", doc(t, "kms_key_arn", `"gcp-kms://projects/p/locations/global/keyRings/r/cryptoKeys/k"`), []string{"tenant.settings.kms_key_arn"}},
		{"aws-kms URI instead of ARN", doc(t, "kms_key_arn", `"aws-kms://`+testARN+`"`), []string{"tenant.settings.kms_key_arn"}},
		{"hcvault URI", doc(t, "kms_key_arn", `"hcvault://vault.example/transit/keys/k"`), []string{"tenant.settings.kms_key_arn"}},
		{"fake-kms URI", doc(t, "kms_key_arn", `"fake-kms://CM2b3_MDElQKSAowdHlwZS5nb29nbGVhcGlzLmNvbS9nb29nbGUuY3J5cHRvLnRpbmsuQWVzR2NtS2V5EhIaEIK75t5L-adlUwVhWvRuWUwYARABGM2b3_MDIAE"`), []string{"tenant.settings.kms_key_arn"}},
		{"ARN region outside its partition", doc(t, "kms_key_arn", `"arn:aws:kms:us-gov-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"`), []string{"tenant.settings.kms_key_arn"}},
		{"ARN gov partition, commercial region", doc(t, "kms_key_arn", `"arn:aws-us-gov:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"`), []string{"tenant.settings.kms_key_arn"}},
		{"ARN account of 11 digits", doc(t, "kms_key_arn", `"arn:aws:kms:us-east-1:11112222333:key/1234abcd-12ab-34cd-56ef-1234567890ab"`), []string{"tenant.settings.kms_key_arn"}},
		{"ARN key not a UUID", doc(t, "kms_key_arn", `"arn:aws:kms:us-east-1:111122223333:key/../../x"`), []string{"tenant.settings.kms_key_arn"}},
		{"ARN key upper-case UUID", doc(t, "kms_key_arn", `"arn:aws:kms:us-east-1:111122223333:key/1234ABCD-12AB-34CD-56EF-1234567890AB"`), []string{"tenant.settings.kms_key_arn"}},
		{"ARN AWS-managed alias", doc(t, "kms_key_arn", `"arn:aws:kms:us-east-1:111122223333:alias/aws/ebs"`), []string{"tenant.settings.kms_key_arn"}},
		{"ARN with a query", doc(t, "kms_key_arn", `"`+testARN+`?endpoint=http://evil.example"`), []string{"tenant.settings.kms_key_arn"}},
		{"ARN with a trailing newline", doc(t, "kms_key_arn", `"`+testARN+`\n"`), []string{"tenant.settings.kms_key_arn"}},
		{"ARN a number", doc(t, "kms_key_arn", `42`), []string{"tenant.settings.kms_key_arn"}},
	}
}

func TestParseRequestRefusesHostileRequests(t *testing.T) {
	cases := hostileCases(t)
	require.GreaterOrEqual(t, len(cases), 40)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := parse(t, tc.doc)
			require.Error(t, err)
			require.Nil(t, req, "a refused request returns no value")
			require.ErrorIs(t, err, lifecycle.ErrInvalidRequest)
			var re *lifecycle.RequestError
			require.ErrorAs(t, err, &re)
			paths := make([]string, len(re.Problems))
			for i, p := range re.Problems {
				paths[i] = p.Path
				require.NotEmpty(t, p.Rule)
			}
			require.ElementsMatch(t, tc.paths, paths, "problems: %v", err)
			requireSafeMessage(t, err.Error())
		})
	}
}

// requireSafeMessage checks that an error message is one line of
// printable ASCII, bounded in length.
func requireSafeMessage(t testing.TB, msg string) {
	t.Helper()
	require.True(t, strings.HasPrefix(msg, "lifecycle: invalid provisioning request: "), msg)
	require.Less(t, len(msg), 4096)
	for i := 0; i < len(msg); i++ {
		require.Truef(t, msg[i] >= ' ' && msg[i] < 0x7f, "byte %d of %q is not printable ASCII", i, msg)
	}
}

func TestParseRequestMessages(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string // substrings of the message
		not       []string // values it must not repeat
	}{
		{"rule and line", doc(t, "admin_email", `"Admin <admin@acme.defense>"`),
			[]string{"tenant.admin_email: must be a bare e-mail address", "without a display name", "(line 6)"}, []string{"Admin <"}},
		{"null ARN", doc(t, "kms_key_arn", `null`), []string{"tenant.settings.kms_key_arn: is required with encryption customer-managed (it is empty) (line 9)"}, nil},
		{"id rule from tenant", doc(t, "id", `"public"`), []string{"tenant.id: is not a tenant ID: is reserved"}, nil},
		{"size names the limit", pad(seedYAML, lifecycle.MaxRequestSize+1), []string{"larger than 65536 bytes"}, nil},
		{"unsupported scheme", doc(t, "kms_key_arn", `"pkcs11:token=platform"`),
			[]string{"tenant.settings.kms_key_arn: has an unsupported scheme"}, []string{"token=platform"}},
		{"wrong type", doc(t, "name", `[x]`), []string{"tenant.name: must be a string, not a list"}, nil},
		{"duplicate key", doc(t) + "  id: \"other\"\n", []string{"tenant.id: is given twice (first on line 2) (line 10)"}, []string{"other"}},
		{"aliases", billionLaughs, []string{"must not use YAML anchors (&) or aliases (*) (line 1)"}, []string{"lol"}},
		{"two documents", seedYAML + "---\n" + seedYAML, []string{"exactly one YAML document"}, nil},
		{"missing", "tenant: {}\n", []string{"tenant.id: is required; tenant.name: is required"}, nil},
		{"customer without ARN", doc(t, "kms_key_arn", omit), []string{"tenant.settings.kms_key_arn: is required with encryption customer-managed"}, nil},
		{"hostile key escaped", doc(t) + "  \"x\\ny\": 1\n", []string{`tenant["x\ny"]: is not a known field`}, nil},
		{"long hostile key truncated", doc(t) + "  \"" + strings.Repeat("Z", 1000) + "\": 1\n", []string{`tenant["ZZZZ`, `"...]`}, []string{strings.Repeat("Z", 41)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.doc)
			require.Error(t, err)
			msg := err.Error()
			requireSafeMessage(t, msg)
			for _, w := range tc.want {
				require.Contains(t, msg, w)
			}
			for _, n := range tc.not {
				require.NotContains(t, msg, n)
			}
		})
	}
}

func TestParseRequestManyProblemsBoundedMessage(t *testing.T) {
	var b strings.Builder
	b.WriteString(doc(t))
	for i := range 1000 {
		b.WriteString("  \"\\u001b[31m" + strings.Repeat("k", 40) + strconv.Itoa(i) + "\": x\n")
	}
	require.Less(t, b.Len(), lifecycle.MaxRequestSize)
	_, err := parse(t, b.String())
	var re *lifecycle.RequestError
	require.ErrorAs(t, err, &re)
	require.Len(t, re.Problems, 1000, "every problem is in Problems")
	requireSafeMessage(t, err.Error())
	require.Contains(t, err.Error(), "; and 990 more")
	require.Equal(t, 10, strings.Count(err.Error(), "is not a known field"))
}

func TestParseRequestReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	req, err := lifecycle.ParseRequest(iotest.ErrReader(boom))
	require.Nil(t, req)
	require.ErrorIs(t, err, boom)
	require.NotErrorIs(t, err, lifecycle.ErrInvalidRequest, "a read error is not the request's fault")
}

func TestParseRequestReadsAtMostTheLimit(t *testing.T) {
	r := &countingReader{}
	_, err := lifecycle.ParseRequest(r)
	require.ErrorIs(t, err, lifecycle.ErrInvalidRequest)
	require.Equal(t, lifecycle.MaxRequestSize+1, r.n, "reads one byte past the limit, no more")
}

// countingReader is an endless stream of spaces that counts what is read.
type countingReader struct{ n int }

func (c *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	c.n += len(p)
	return len(p), nil
}

func TestKeyOptions(t *testing.T) {
	for _, tc := range []struct {
		enc  lifecycle.Encryption
		want keys.ProvisionOptions
	}{
		{lifecycle.EncryptionPlatform, keys.ProvisionOptions{}},
		{lifecycle.EncryptionDedicated, keys.ProvisionOptions{TenantKEK: true}},
		{lifecycle.EncryptionCustomer, keys.ProvisionOptions{CustomerKEK: keys.URI("aws-kms://" + testARN)}},
	} {
		t.Run(string(tc.enc), func(t *testing.T) {
			d := doc(t, "encryption", string(tc.enc))
			if tc.enc != lifecycle.EncryptionCustomer {
				d = doc(t, "encryption", string(tc.enc), "kms_key_arn", omit)
			}
			req, err := parse(t, d)
			require.NoError(t, err)
			require.Equal(t, tc.want, req.Settings.KeyOptions())
		})
	}
}

func TestMarshalYAMLRoundTrip(t *testing.T) {
	for _, d := range []string{seedYAML, doc(t, "encryption", "dedicated", "kms_key_arn", omit, "name", `"yes"`, "id", "null_x")} {
		req, err := parse(t, d)
		require.NoError(t, err)
		out, err := yaml.Marshal(req)
		require.NoError(t, err)
		again, err := lifecycle.ParseRequest(bytes.NewReader(out))
		require.NoError(t, err, "%s", out)
		require.Equal(t, req, again)
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(seedYAML))
	f.Add([]byte(doc(f, "encryption", "platform-managed", "kms_key_arn", omit)))
	for _, tc := range hostileCases(f) {
		if len(tc.doc) <= 2*lifecycle.MaxRequestSize {
			f.Add([]byte(tc.doc))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := lifecycle.ParseRequest(bytes.NewReader(data))
		if err != nil {
			require.Nil(t, req)
			require.ErrorIs(t, err, lifecycle.ErrInvalidRequest)
			requireSafeMessage(t, err.Error())
			return
		}
		out, err := yaml.Marshal(req)
		require.NoError(t, err)
		again, err := lifecycle.ParseRequest(bytes.NewReader(out))
		require.NoError(t, err, "re-parse of %q", out)
		require.Equal(t, req, again)
	})
}
