package store

import (
	"context"

	"github.com/rtmx-ai/tenancy/tenant"
)

// LoginOf returns the login role of tenant id and its password, so that
// tests can connect as the tenant directly, as an attacker with the
// tenant's credentials would.
func LoginOf(ctx context.Context, a *Admin, id tenant.ID) (role, password string, err error) {
	var version int
	err = a.pool.QueryRow(ctx, `SELECT role_name, secret_version FROM tenancy.tenant_logins WHERE tenant_id = $1`, id.String()).Scan(&role, &version)
	if err != nil {
		return "", "", err
	}
	password, err = a.secrets.password(version, role)
	return role, password, err
}

// SharedLogin returns the shared login of a ModeSharedPool database and
// its password.
func SharedLogin(a *Admin) (role, password string, err error) {
	role = a.sharedRole()
	password, err = a.secrets.password(a.secrets.current, role)
	return role, password, err
}
