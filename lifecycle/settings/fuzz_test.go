package settings_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/lifecycle/settings"
)

// FuzzParseValue: whatever the document, ParseValue does not panic;
// it either refuses it with an *Error of one printable line, or accepts
// it, and then the value's JSON parses back to the same value.
func FuzzParseValue(f *testing.F) {
	for _, c := range hostileValues {
		f.Add(string(c.section), c.doc)
	}
	good := map[settings.Section]any{
		settings.SectionRTM:           settings.DefaultRTM(),
		settings.SectionUsers:         sampleUsers(),
		settings.SectionIntegrations:  sampleIntegrations("fuzz"),
		settings.SectionCustomFields:  settings.CustomFields{Schema: json.RawMessage(aSchema)},
		settings.SectionNotifications: settings.Notifications{Webhooks: []settings.Webhook{{Name: "ci", URL: "https://hooks.acme.example/x"}}},
		settings.SectionBranding:      settings.Branding{ProductName: "Acme", PrimaryColor: "#000000"},
	}
	for s, v := range good {
		b, err := json.Marshal(v)
		require.NoError(f, err)
		f.Add(string(s), string(b))
	}
	f.Fuzz(func(t *testing.T, section, doc string) {
		v, err := settings.ParseValue(settings.Section(section), []byte(doc))
		if err != nil {
			var se *settings.Error
			if !errors.As(err, &se) || !errors.Is(err, settings.ErrInvalid) {
				t.Fatalf("not an *Error: %v", err)
			}
			for _, r := range err.Error() {
				if r < 0x20 || r >= 0x7f {
					t.Fatalf("message not printable ASCII: %q", err.Error())
				}
			}
			return
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		again, err := settings.ParseValue(settings.Section(section), b)
		if err != nil {
			t.Fatalf("%s does not parse back: %v", b, err)
		}
		b2, _ := json.Marshal(again)
		if string(b) != string(b2) {
			t.Fatalf("round trip changed %s to %s", b, b2)
		}
	})
}
