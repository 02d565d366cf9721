package settings_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/lifecycle/settings"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestRolesServeAuthz: Settings is the authz.RoleSource of the tenant's
// users section: RTMX's roles until the tenant defines its own, each
// tenant its own, and never for a context of another tenant.
func TestRolesServeAuthz(t *testing.T) {
	e := newEnv(t, tenant.TierStandard)
	a, actx := e.newTenant(t, "rolesa")
	b, _ := e.newTenant(t, "rolesb")
	r, err := e.s.Roles(t.Context(), a)
	require.NoError(t, err)
	require.Equal(t, authz.DefaultRoles(), r)

	users := settings.Users{
		Users: []settings.User{{Email: "alice@a.example", Roles: []string{"admin"}}, {Email: "qa@a.example", Roles: []string{"auditor"}}},
		Roles: map[string]settings.RoleDef{
			"admin":   {Implies: []string{"auditor"}, Permissions: []string{authz.PermManage, authz.PermWrite}},
			"auditor": {Permissions: []string{authz.PermRead}},
		},
	}
	_, err = e.s.Put(actx, users, 0, "alice@a.example")
	require.NoError(t, err)
	r, err = e.s.Roles(t.Context(), a)
	require.NoError(t, err)
	require.Equal(t, []string{"admin", "auditor"}, r.Defined())
	require.True(t, r.Grants("admin", authz.PermRead))
	require.False(t, r.Grants("auditor", authz.PermWrite))

	rb, err := e.s.Roles(t.Context(), b)
	require.NoError(t, err)
	require.Equal(t, authz.DefaultRoles(), rb, "A's roles are not B's")
	_, err = e.s.Roles(actx, b)
	require.ErrorIs(t, err, tenant.ErrCrossTenant)
	_, err = e.s.Roles(t.Context(), tenant.ID{})
	require.ErrorIs(t, err, tenant.ErrNoTenant)
}
