package store_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/stretchr/testify/require"
)

// syncBuffer is a bytes.Buffer that a logger may write from several
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const manyRolesWarning = "the application role is a member of many roles"

func TestOpenWarnsWhenAppRoleHasManyMemberships(t *testing.T) {
	// Two tenants make the application role a member of at least two roles.
	db := newStore(t)
	newTenant(t, db, "memberwarn")
	newTenant(t, db, "memberwarn")

	var logs syncBuffer
	warned := newStore(t, func(c *store.Config) {
		c.WarnMemberships = 1
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	require.Equal(t, 1, strings.Count(logs.String(), manyRolesWarning), "Open warns once: %s", logs.String())
	require.Contains(t, logs.String(), `"memberships":`)
	require.Contains(t, logs.String(), `"warn_above":1`)

	// Once per DB: creating another tenant does not repeat it.
	newTenant(t, warned, "memberwarn")
	require.Equal(t, 1, strings.Count(logs.String(), manyRolesWarning), logs.String())
}

func appRoleMemberships(t *testing.T, db *store.DB) int {
	t.Helper()
	var n int
	require.NoError(t, db.UnscopedPool().QueryRow(ctxT(t), `SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = current_user`).Scan(&n))
	return n
}

func TestCreateTenantWarnsWhenAppRoleCrossesWarnMemberships(t *testing.T) {
	// No test in this package runs in parallel, so the count moves only
	// with the tenants this test creates.
	var logs syncBuffer
	n := appRoleMemberships(t, newStore(t, func(c *store.Config) { c.WarnMemberships = -1 }))
	db := newStore(t, func(c *store.Config) {
		c.WarnMemberships = n + 1
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	require.NotContains(t, logs.String(), manyRolesWarning, "n memberships are not above n+1")
	newTenant(t, db, "membercross")
	require.NotContains(t, logs.String(), manyRolesWarning, "n+1 memberships are not above n+1")
	newTenant(t, db, "membercross")
	require.Equal(t, 1, strings.Count(logs.String(), manyRolesWarning), "n+2 are: %s", logs.String())
}

func TestDefaultWarnMembershipsStaysSilentForFewTenants(t *testing.T) {
	var logs syncBuffer
	db := newStore(t, func(c *store.Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	newTenant(t, db, "memberdefault")
	require.Less(t, appRoleMemberships(t, db), store.DefaultWarnMemberships, "this test needs fewer tenants than the default")
	require.NotContains(t, logs.String(), manyRolesWarning)
	require.Contains(t, logs.String(), "tenant created", "the logger is wired: other records arrive")
}

func TestNegativeWarnMembershipsTurnsTheWarningOff(t *testing.T) {
	db := newStore(t)
	newTenant(t, db, "memberoff")
	newTenant(t, db, "memberoff")
	var logs syncBuffer
	off := newStore(t, func(c *store.Config) {
		c.WarnMemberships = -1
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	newTenant(t, off, "memberoff")
	require.NotContains(t, logs.String(), manyRolesWarning)
	require.Contains(t, logs.String(), "tenant created", "the logger is wired: other records arrive")
}
