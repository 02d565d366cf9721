package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestQuickstartRuns keeps the README's first command true: the quickstart
// runs against a real PostgreSQL and shows what it promises.
func TestQuickstartRuns(t *testing.T) {
	d := pgtest.DB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out, d.AdminURL()), out.String())
	s := out.String()
	assert.Contains(t, s, "abc123     REQ-DEPLOY-004")
	assert.Contains(t, s, "xyz789     REQ-UI-010")
	assert.Contains(t, s, "permission denied for schema tenant_xyz789")
	assert.Contains(t, s, "no tenant in context")
	assert.Contains(t, s, `opens to "ghp_token_of_abc123"`)
	assert.Contains(t, s, "open abc123's sealed secret\n  -> keys: decryption failed")
	assert.Contains(t, s, "tenant keys destroyed")
	assert.Contains(t, s, "cleaned up")
	assert.NotContains(t, s, "abc123     REQ-UI-010", "xyz789's row shown to abc123")
}
