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

// CrashCreateAfter makes CreateTenant of a tenant with a database of its
// own stop after step n (1: directory, 2: database, 3: its contents) as a
// crash would, without undoing anything, until the returned func is
// called. Tests using it must not run in parallel.
func CrashCreateAfter(n int) (restore func()) {
	crashAfter = func(step int) bool { return step == n }
	return func() { crashAfter = nil }
}

// ErrCrashed is the error of a CreateTenant stopped by CrashCreateAfter.
var ErrCrashed = errCrashed

// AllowTxControlInMigrations makes OpenAdmin accept migration files that
// control their transaction (COMMIT, ...), so that tests reach the check
// made after such a file has run, until the returned func is called.
// Tests using it must not run in parallel.
func AllowTxControlInMigrations() (restore func()) {
	skipTxControlCheck.Store(true)
	return func() { skipTxControlCheck.Store(false) }
}
