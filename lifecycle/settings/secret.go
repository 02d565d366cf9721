package settings

import (
	"encoding/json"
	"fmt"
	"log/slog"
)

// redacted is what a Secret prints, logs and marshals as, and what a
// stored secret reads as in a section's JSON.
const redacted = "[redacted]"

// secretState says what a Secret holds.
type secretState uint8

const (
	secretNone secretState = iota // no secret
	secretNew                     // a value to store
	secretKept                    // the value stored already: keep it
)

// Secret is a secret setting: a Jira API token, a GitHub token or App
// private key, a webhook's signing secret. It is sealed with the tenant's
// data key when stored (package keys), and never comes back in the clear
// from [Settings.Get], [Settings.At] or [Settings.History]: there it
// stands for the stored value, and putting it back keeps that value. Only
// [Settings.Secret] opens one.
//
// It has three states:
//
//   - the zero Secret: none (putting it removes a stored one);
//   - NewSecret(v): a new value v, to be sealed and stored;
//   - stored: what Get returns for a secret that is set; putting it keeps
//     the stored value.
//
// In JSON a Secret is null (none) or a string: the string "[redacted]"
// stands for the stored value (so that a document read, edited and put
// back keeps its secrets), any other string is a new value. It marshals
// as "[redacted]" whenever it is set, and prints and logs so whatever the
// verb: nothing formats its value.
type Secret struct {
	state secretState
	value string
}

// NewSecret returns a Secret holding v, to be stored.
func NewSecret(v string) Secret { return Secret{state: secretNew, value: v} }

// IsSet reports whether s stands for a secret (new or stored).
func (s Secret) IsSet() bool { return s.state != secretNone }

// String returns "[redacted]" for a set secret, "" for none.
func (s Secret) String() string {
	if s.state == secretNone {
		return ""
	}
	return redacted
}

// GoString is String, so that %#v prints no secret either.
func (s Secret) GoString() string { return s.String() }

// Format prints String under every verb.
func (s Secret) Format(f fmt.State, _ rune) { fmt.Fprint(f, s.String()) }

// LogValue logs String.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON encodes null for none, "[redacted]" otherwise.
func (s Secret) MarshalJSON() ([]byte, error) {
	if s.state == secretNone {
		return []byte("null"), nil
	}
	return []byte(`"` + redacted + `"`), nil
}

// UnmarshalJSON decodes null as none, "[redacted]" as the stored value
// and any other string as a new value.
func (s *Secret) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*s = Secret{}
		return nil
	}
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("a secret must be a string or null")
	}
	if v == redacted {
		*s = Secret{state: secretKept}
		return nil
	}
	*s = NewSecret(v)
	return nil
}

// SecretName names one secret of a tenant's settings: a field of the
// integrations section, or the signing secret of a webhook.
type SecretName string

// The secrets of the integrations section.
const (
	SecretJiraAPIToken     SecretName = "jira.api_token"
	SecretGitHubToken      SecretName = "github.token"
	SecretGitHubPrivateKey SecretName = "github.private_key"
)

// WebhookSecret names the signing secret of the webhook called name in
// the notifications section.
func WebhookSecret(name string) SecretName {
	return SecretName("webhooks." + name + ".signing_secret")
}

// maxSecretBytes bounds one secret (an RSA-4096 private key in PEM is
// about 3.3 KB).
const maxSecretBytes = 16 << 10
