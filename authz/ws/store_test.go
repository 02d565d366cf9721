package ws_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/authz/ws"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

var (
	platformOnce sync.Once
	platformURL  string
	tenantSeq    atomic.Int64
)

// openStore returns an Admin and a DB on a fresh test database with two
// new active tenants.
func openStore(t *testing.T) (*store.Admin, *store.DB, tenant.ID, tenant.ID) {
	t.Helper()
	secret := store.LoginSecret{Version: 1, Key: []byte("tenancy ws test login secret, 32 bytes or more")}
	d := pgtest.DB(t)
	platformOnce.Do(func() { platformURL = d.CreateRole(t, "platform", "") })
	pcfg, err := pgx.ParseConfig(platformURL)
	require.NoError(t, err)
	acfg, err := store.ParseAdminConfig(d.AdminURL())
	require.NoError(t, err)
	acfg.RolePrefix, acfg.PlatformRole = d.Prefix(), pcfg.User
	acfg.LoginSecrets = []store.LoginSecret{secret}
	admin, err := store.OpenAdmin(t.Context(), acfg)
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	cfg, err := store.ParseConfig(d.URL(pcfg.User, pcfg.Password), secret)
	require.NoError(t, err)
	db, err := store.Open(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	n := tenantSeq.Add(1)
	a, b := tenant.MustParseID(fmt.Sprintf("alpha%d", n)), tenant.MustParseID(fmt.Sprintf("bravo%d", n))
	for _, id := range []tenant.ID{a, b} {
		require.NoError(t, admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Tenant " + id.String(), Tier: tenant.TierStandard}))
	}
	return admin, db, a, b
}

// A tenant suspended in the control plane (store.Admin.SetState) loses
// its connections within the check interval, whichever of store's
// directories the hub asks; the other tenant keeps its own; once active
// again, the tenant connects again.
func TestSuspensionInTheControlPlaneDisconnects(t *testing.T) {
	for _, which := range []string{"StoreDirectory", "Admin"} {
		t.Run(which, func(t *testing.T) {
			admin, db, a, b := openStore(t)
			dir := authz.StoreDirectory(db)
			if which == "Admin" {
				dir = admin
			}
			e := newEnvWith(t, testConfig(), dir, a, b)
			var as []*websocket.Conn
			for range 3 {
				c := e.connect(t, a)
				join(t, c, "x")
				as = append(as, c)
			}
			cb := e.connect(t, b)
			join(t, cb, "x")

			require.NoError(t, admin.SetState(t.Context(), a, tenant.StateSuspended))
			for _, c := range as {
				requireClosed(t, c, ws.StatusTenantNotActive, 5*time.Second)
			}
			require.Zero(t, e.clients(t, a))
			e.fence(t, cb, b, "x")

			// The middleware refuses A's upgrades while it is suspended.
			alpha := token(t, a, time.Now().Add(time.Hour), authz.RoleViewer)
			require.Eventually(t, func() bool {
				_, resp, err := dial(t, e.url(a.String()), alpha, nil)
				return err != nil && resp != nil && resp.StatusCode == 403
			}, 5*time.Second, 10*time.Millisecond)

			require.NoError(t, admin.SetState(t.Context(), a, tenant.StateActive))
			require.Eventually(t, func() bool {
				_, _, err := dial(t, e.url(a.String()), alpha, nil)
				return err == nil
			}, 5*time.Second, 20*time.Millisecond)
			e.fence(t, cb, b, "x")
		})
	}
}
