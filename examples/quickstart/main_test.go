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
	// Names under pgtest's prefix, never the fixed ones: a `go run` of the
	// quickstart on the same server at the same time keeps its database,
	// and whatever this run leaves behind pgtest drops.
	o := options{
		AdminURL:   d.AdminURL(),
		Database:   d.Prefix() + "quickstart",
		AppRole:    d.Prefix() + "quickstart_app",
		RolePrefix: d.Prefix() + "qs_",
	}
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out, o), out.String())
	s := out.String()
	assert.Contains(t, s, "abc123     REQ-DEPLOY-004")
	assert.Contains(t, s, "xyz789     REQ-UI-010")
	assert.Contains(t, s, "permission denied for schema tenant_xyz789")
	assert.Contains(t, s, "no tenant in context")
	assert.Contains(t, s, `opens to "ghp_token_of_abc123"`)
	assert.Contains(t, s, "open abc123's sealed secret\n  -> keys: decryption failed")
	assert.Contains(t, s, "tenant keys destroyed")
	assert.Contains(t, s, "cleaned up")
	assert.Contains(t, s, "PostgreSQL database "+o.Database+", application role "+o.AppRole)
	assert.NotContains(t, s, "tenancy_quickstart", "the test used the fixed names of `go run`")
	assert.NotContains(t, s, "abc123     REQ-UI-010", "xyz789's row shown to abc123")
}

// TestRunRejectsNames checks that run refuses names it would have to quote
// before it connects anywhere.
func TestRunRejectsNames(t *testing.T) {
	for _, bad := range []string{"", "Upper", "1db", "x; DROP DATABASE postgres", `x"y`} {
		o := defaultOptions("postgres://invalid.invalid/postgres")
		o.Database = bad
		err := run(context.Background(), &bytes.Buffer{}, o)
		require.ErrorContains(t, err, "not a lower-case SQL name", "database %q", bad)
	}
}
