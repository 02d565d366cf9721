package settings_test

import (
	"encoding/json"
	"strings"
	"testing"

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
	_, err = e.s.Put(actx, settings.CustomFields{Schema: json.RawMessage(`{"type":"object"}`)}, 1, "alice@a.example")
	require.NoError(t, err)
	require.NoError(t, e.s.ValidateCustomFields(actx, []byte(`{"anything":[1,2,3]}`)))
}
