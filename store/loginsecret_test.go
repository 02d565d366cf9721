package store_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/store"
)

func TestLoginSecretNeverPrintsItsKey(t *testing.T) {
	key := "THE-KEY-MATERIAL-0123456789abcdefghij"
	s := store.LoginSecret{Version: 3, Key: []byte(key)}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		for _, v := range []any{s, &s, []store.LoginSecret{s}, struct{ S store.LoginSecret }{s}} {
			out := fmt.Sprintf(verb, v)
			assert.NotContains(t, out, key, verb)
			assert.NotContains(t, out, fmt.Sprintf("%x", key), verb)
		}
	}
	js, err := json.Marshal(map[string]any{"s": s})
	require.NoError(t, err)
	assert.NotContains(t, string(js), key)
	assert.Contains(t, string(js), `"version":3`)
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "secret", s)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "secret", s)
	assert.NotContains(t, buf.String(), key)
	assert.Contains(t, buf.String(), "redacted")
}

func TestLoginSecretRules(t *testing.T) {
	long := []byte("0123456789abcdef0123456789abcdef")
	for name, secrets := range map[string][]store.LoginSecret{
		"none":      nil,
		"short key": {{Version: 1, Key: long[:31]}},
		"version 0": {{Version: 0, Key: long}},
		"twice":     {{Version: 1, Key: long}, {Version: 1, Key: long}},
	} {
		cfg, err := store.ParseConfig("postgres://platform@127.0.0.1:1/db", secrets...)
		require.NoError(t, err)
		_, err = store.Open(t.Context(), cfg)
		assert.ErrorIs(t, err, store.ErrInvalidConfig, name)
		assert.Contains(t, err.Error(), "Config.LoginSecrets", name)
	}
}
