package settings_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/tenant"
)

const aSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "severity": {"enum": ["low", "medium", "high"]},
    "due": {"type": "string", "format": "date"},
    "owner": {"$ref": "#/$defs/email"},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 5}
  },
  "required": ["severity"],
  "additionalProperties": false,
  "$defs": {"email": {"type": "string", "format": "email"}}
}`

// TestValidateCustomFields: a record's custom fields are checked against
// the schema of the tenant of the context, and no other: A's schema does
// not apply to B, which has none (only {} passes) and then one of its own.
func TestValidateCustomFields(t *testing.T) {
	e := newEnv(t, tenant.TierStandard)
	_, actx := e.newTenant(t, "cfa")
	_, bctx := e.newTenant(t, "cfb")
	_, err := e.s.Put(actx, settings.CustomFields{Schema: json.RawMessage(aSchema)}, 0, "alice@a.example")
	require.NoError(t, err)

	good := []byte(`{"severity":"high","due":"2027-01-31","owner":"carol@a.example","tags":["gov"]}`)
	require.NoError(t, e.s.ValidateCustomFields(actx, good))
	require.NoError(t, e.s.ValidateCustomFields(actx, []byte(`{"severity":"low"}`)))

	err = e.s.ValidateCustomFields(actx, []byte(`{"severity":"urgent","due":"31/01/2027","owner":"carol","tags":["`+strings.Repeat("x", 21)+`"],"colour":"red"}`))
	require.ErrorIs(t, err, settings.ErrInvalidCustomFields)
	require.NotErrorIs(t, err, settings.ErrInvalid)
	require.Subset(t, problemPaths(t, err), []string{"/severity", "/due", "/owner", "/tags/0"})
	err = e.s.ValidateCustomFields(actx, []byte(`{}`))
	require.ErrorIs(t, err, settings.ErrInvalidCustomFields)
	require.Equal(t, []string{""}, problemPaths(t, err), "severity is required")

	for _, doc := range []string{
		``, `{`, `{"severity":"low","severity":"high"}`, "{\"severity\":\"\xff\"}",
		`{"tags":` + strings.Repeat("[", settings.MaxDepth+1) + strings.Repeat("]", settings.MaxDepth+1) + `}`,
		`{"severity":"low","tags":["` + strings.Repeat("x", settings.MaxCustomFieldsBytes) + `"]}`,
	} {
		require.ErrorIs(t, e.s.ValidateCustomFields(actx, []byte(doc)), settings.ErrInvalidCustomFields, "%.40q", doc)
	}

	// Numbers that exact arithmetic would choke on are refused before
	// the schema sees them: 6,000 of 1e1000000 would take minutes.
	_, err = e.s.Put(actx, settings.CustomFields{Schema: json.RawMessage(`{"type":"object","properties":{"n":{"type":"array","items":{"maximum":5,"multipleOf":0.5}}}}`)}, 1, "alice@a.example")
	require.NoError(t, err)
	huge := `{"n":[` + strings.TrimSuffix(strings.Repeat(`1e1000000,`, 6000), ",") + `]}`
	start := time.Now()
	err = e.s.ValidateCustomFields(actx, []byte(huge))
	require.ErrorIs(t, err, settings.ErrInvalidCustomFields)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Equal(t, "/n/0", problemPaths(t, err)[0])
	err = e.s.ValidateCustomFields(actx, []byte(`{"n":[1],"a~b/c":1,"a~b/c":2}`))
	require.Equal(t, []string{"/a~0b~1c"}, problemPaths(t, err), "a key given twice, at its JSON pointer")
	require.NoError(t, e.s.ValidateCustomFields(actx, []byte(`{"n":[4.5,1e0,-2E+2]}`)))
	_, err = e.s.Put(actx, settings.CustomFields{Schema: json.RawMessage(`{"type":"object","properties":{"n":{"maximum":1e-1000000}}}`)}, 2, "alice@a.example")
	require.ErrorIs(t, err, settings.ErrInvalid)
	require.Equal(t, []string{"schema.properties.n.maximum"}, problemPaths(t, err))
	_, err = e.s.Put(actx, settings.CustomFields{Schema: json.RawMessage(aSchema)}, 2, "alice@a.example")
	require.NoError(t, err)

	// B has no schema: B defines no custom fields.
	require.NoError(t, e.s.ValidateCustomFields(bctx, []byte(`{}`)))
	require.NoError(t, e.s.ValidateCustomFields(bctx, []byte(`null`)))
	err = e.s.ValidateCustomFields(bctx, good)
	require.ErrorIs(t, err, settings.ErrInvalidCustomFields)
	// B's own schema is B's, A's stays A's.
	_, err = e.s.Put(bctx, settings.CustomFields{Schema: json.RawMessage(`{"type":"object","properties":{"severity":{"type":"integer"}}}`)}, 0, "bob@b.example")
	require.NoError(t, err)
	require.NoError(t, e.s.ValidateCustomFields(bctx, []byte(`{"severity":3}`)))
	require.ErrorIs(t, e.s.ValidateCustomFields(bctx, good), settings.ErrInvalidCustomFields)
	require.ErrorIs(t, e.s.ValidateCustomFields(actx, []byte(`{"severity":3}`)), settings.ErrInvalidCustomFields)
	require.NoError(t, e.s.ValidateCustomFields(actx, good))

	// A new version of A's schema applies at once.
	_, err = e.s.Put(actx, settings.CustomFields{Schema: json.RawMessage(`{"type":"object"}`)}, 3, "alice@a.example")
	require.NoError(t, err)
	require.NoError(t, e.s.ValidateCustomFields(actx, []byte(`{"anything":[1,2,3]}`)))
}
