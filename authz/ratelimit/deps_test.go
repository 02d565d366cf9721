package ratelimit_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/internal/testenv"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestImportsNoPostgreSQL: ratelimit (used by services that may keep no
// PostgreSQL at all) imports neither store nor pgx.
func TestImportsNoPostgreSQL(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("CI: no go command in PATH to list dependencies with: %v", err)
		}
		t.Skip("no go command in PATH to list dependencies with")
	}
	out, err := exec.CommandContext(t.Context(), gobin, "list", "-deps", "github.com/rtmx-ai/tenancy/authz/ratelimit").Output()
	require.NoError(t, err, "go list -deps")
	deps := strings.Fields(string(out))
	require.Contains(t, deps, "github.com/rtmx-ai/tenancy/tenant", "the listing is of ratelimit's dependencies")
	for _, dep := range deps {
		require.False(t, strings.HasPrefix(dep, "github.com/jackc/pgx"), "ratelimit depends on %s", dep)
		require.NotEqual(t, "github.com/rtmx-ai/tenancy/store", dep, "ratelimit depends on store")
	}
}

// TestErrQuotaExceededIsTenants: ratelimit's sentinel is tenant's, which
// blob and store use too.
func TestErrQuotaExceededIsTenants(t *testing.T) {
	require.Same(t, tenant.ErrQuotaExceeded, ratelimit.ErrQuotaExceeded)
	require.ErrorIs(t, &ratelimit.QuotaError{Tenant: tenant.MustParseID("acme")}, tenant.ErrQuotaExceeded)
}
