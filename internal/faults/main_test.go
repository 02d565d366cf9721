package faults_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/internal/softhsmtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial of its pool; the tests kill Redis.
	redis.SetLogger(quietRedis{})
	pgtest.Main(m, softhsmtest.Cleanup)
}

// quietRedis discards go-redis's log.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// fixture is an Admin and a DB over one database, with tenants.
type fixture struct {
	d     *pgtest.Database
	admin *store.Admin
	db    *store.DB
	ids   []tenant.ID
}

// adjustment changes the configs of a fixture before they are opened.
type adjustment func(*store.AdminConfig, *store.Config)

// quickConnect makes connection attempts time out after a second, so that
// an outage's errors come quickly.
func quickConnect(_ *store.AdminConfig, c *store.Config) {
	c.Platform.ConnConfig.ConnectTimeout = time.Second
}

var roleSeq atomic.Int64

// newFixture opens an Admin of mode m on database d (with the writes and
// pairs tables and a platform role of its own), creates n tenants named
// after prefix, and opens a DB; adjust changes the configs first.
func newFixture(t testing.TB, d *pgtest.Database, m store.Mode, prefix string, n int, adjust ...adjustment) *fixture {
	t.Helper()
	platformURL := d.CreateRole(t, fmt.Sprintf("platform%d", roleSeq.Add(1)), "")
	pcfg, err := pgx.ParseConfig(platformURL)
	if err != nil {
		t.Fatal(err)
	}
	acfg, err := store.ParseAdminConfig(d.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	acfg.Mode, acfg.RolePrefix = m, d.Prefix()
	acfg.LoginSecrets = []store.LoginSecret{loginSecret}
	acfg.Tables = []store.Table{writesTable, pairsTable}
	acfg.PlatformRole = pcfg.User
	cfg, err := store.ParseConfig(platformURL, loginSecret)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range adjust {
		a(acfg, cfg)
	}
	f := &fixture{d: d}
	if f.admin, err = store.OpenAdmin(t.Context(), acfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.admin.Close)
	for i := range n {
		id := tenant.MustParseID(fmt.Sprintf("%s%d", prefix, i))
		if err := f.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Tenant " + id.String(), Tier: tenant.TierStandard}); err != nil {
			t.Fatal(err)
		}
		f.ids = append(f.ids, id)
	}
	if f.db, err = store.Open(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.db.Close)
	return f
}

var (
	dbsMu sync.Mutex
	dbs   = map[store.Mode]*pgtest.Database{}
)

// databaseFor returns the package's database for mode m on the package's
// server: the mode is fixed per database, so each has its own.
func databaseFor(t testing.TB, m store.Mode) *pgtest.Database {
	t.Helper()
	dbsMu.Lock()
	defer dbsMu.Unlock()
	if d, ok := dbs[m]; ok {
		return d
	}
	d := pgtest.DB(t)
	if len(dbs) > 0 {
		d = d.NewDatabase(t)
	}
	dbs[m] = d
	return d
}

var tenantSeq atomic.Int64

// uniquePrefix returns name followed by a number no other call returned,
// for tenant IDs on the package's databases (tests may run more than once).
func uniquePrefix(name string) string { return fmt.Sprintf("%s%dx", name, tenantSeq.Add(1)) }
