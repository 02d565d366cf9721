package store_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestErrorsSayStoreOnce: every error of the package's API names the
// package once, at its start, and still matches its sentinel.
func TestErrorsSayStoreOnce(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	idA, _ := e.newTenant(t, "errs")
	ghost := tenant.NewContext(t.Context(), freshID("errghost"))
	cfg, err := store.ParseConfig(platform(t, e.d), secret)
	require.NoError(t, err)
	cfg.MaxConns = 0
	_, openErr := store.Open(t.Context(), cfg)
	_, parseErr := store.ParseConfig("postgres://%zz", secret)
	acfg, err := store.ParseAdminConfig(e.d.AdminURL())
	require.NoError(t, err)
	_, adminErr := store.OpenAdmin(t.Context(), acfg) // no PlatformRole, no secrets
	_, queryErr := e.db.Exec(ghost, `SELECT 1`)
	for name, c := range map[string]struct {
		err  error
		want error
	}{
		"Open with a bad config":      {openErr, store.ErrInvalidConfig},
		"ParseConfig":                 {parseErr, store.ErrInvalidConfig},
		"OpenAdmin with a bad config": {adminErr, store.ErrInvalidConfig},
		"CreateTenant twice":          {e.admin.CreateTenant(t.Context(), tenant.Info{ID: idA, Name: "again", Tier: tenant.TierStandard}), store.ErrTenantExists},
		"DropTenant unknown":          {e.admin.DropTenant(t.Context(), freshID("errnone")), store.ErrUnknownTenant},
		"SetState unknown":            {e.admin.SetState(t.Context(), freshID("errnone"), tenant.StateSuspended), store.ErrUnknownTenant},
		"Exec for an unknown tenant":  {queryErr, store.ErrUnknownTenant},
		"CreateSharedTable bad name":  {e.admin.CreateSharedTable(t.Context(), "tenancy", store.Table{Name: "x", Columns: "a int"}), store.ErrInvalidTable},
		"CreateSharedTable bad table": {e.admin.CreateSharedTable(t.Context(), "okschema", store.Table{Name: "X", Columns: "a int"}), store.ErrInvalidTable},
	} {
		require.Error(t, c.err, name)
		assert.ErrorIs(t, c.err, c.want, name)
		msg := c.err.Error()
		assert.True(t, strings.HasPrefix(msg, "store: "), "%s: %q starts with store:", name, msg)
		assert.Equal(t, 1, strings.Count(msg, "store:"), "%s: %q says store: once", name, msg)
	}
}
