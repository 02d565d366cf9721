package store_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestSuspendedTenantCannotLogIn(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin, func(_ *store.AdminConfig, c *store.Config) { c.MaxConns, c.MinResidency = 1, 0 })
	idA, ctxA := e.newTenant(t, "susp")
	_, ctxB := e.newTenant(t, "other")
	e.insertReq(t, ctxA, "REQ-1", "x")
	require.NoError(t, e.admin.SetState(t.Context(), idA, tenant.StateSuspended))
	e.insertReq(t, ctxB, "REQ-1", "y") // takes the one connection: A's next call must log in anew
	_, err := e.db.Exec(ctxA, `SELECT 1`)
	require.Error(t, err, "PostgreSQL refuses a suspended tenant's login")
	assert.Contains(t, err.Error(), "not permitted to log in")
	require.NoError(t, e.admin.SetState(t.Context(), idA, tenant.StateActive))
	_, err = e.db.Exec(ctxA, `SELECT 1`)
	require.NoError(t, err, "active again")
}

func TestDroppedTenantIsUnknown(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		idA, ctxA := e.newTenant(t, "drop")
		e.insertReq(t, ctxA, "REQ-1", "x")
		require.NoError(t, e.admin.SetState(t.Context(), idA, tenant.StateDecommissioning))
		require.NoError(t, e.admin.DropTenant(t.Context(), idA))
		// The first call may meet its connection ended by DropTenant; after
		// that, calls fail as an unknown tenant (tenant logins) or with no
		// schema to find (the shared pool).
		_, _ = e.db.Exec(ctxA, `SELECT count(*) FROM requirements`)
		_, err := e.db.Exec(ctxA, `SELECT count(*) FROM requirements`)
		require.Error(t, err)
		if e.logins() {
			assert.ErrorIs(t, err, store.ErrUnknownTenant)
		}
		info, err := e.admin.Tenant(t.Context(), idA)
		require.NoError(t, err)
		assert.Equal(t, tenant.StateDeleted, info.State, "the directory keeps the ID, never reused")
		err = e.admin.CreateTenant(t.Context(), tenant.Info{ID: idA, Name: "again", Tier: tenant.TierStandard})
		assert.ErrorIs(t, err, store.ErrTenantExists)
		err = e.admin.DropTenant(t.Context(), idA)
		assert.ErrorIs(t, err, store.ErrUnknownTenant)
	})
}

func TestSimpleProtocolIsRefused(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		_, ctxA := e.newTenant(t, "simple")
		_, err := e.db.Exec(ctxA, `SELECT 1; SELECT 2`, pgx.QueryExecModeSimpleProtocol)
		assert.ErrorIs(t, err, store.ErrSimpleProtocol)
		_, err = e.db.Query(ctxA, `SELECT 1; SELECT 2`, pgx.QueryExecModeSimpleProtocol)
		assert.ErrorIs(t, err, store.ErrSimpleProtocol)
		err = e.db.Tx(ctxA, func(tx *store.Tx) error {
			_, err := tx.Exec(ctxA, `SELECT 1; SELECT 2`, pgx.QueryExecModeSimpleProtocol)
			return err
		})
		assert.ErrorIs(t, err, store.ErrSimpleProtocol)
		// pgx reads every leading option: the simple protocol behind another.
		formats := pgx.QueryResultFormats{pgx.TextFormatCode}
		_, err = e.db.Exec(ctxA, `SELECT 1; SELECT 2`, formats, pgx.QueryExecModeSimpleProtocol)
		assert.ErrorIs(t, err, store.ErrSimpleProtocol)
		_, err = e.db.Query(ctxA, `SELECT 1; SELECT 2`, formats, pgx.QueryExecModeSimpleProtocol)
		assert.ErrorIs(t, err, store.ErrSimpleProtocol)
	})
	d := databaseFor(t, store.ModeTenantLogin)
	cfg, err := store.ParseConfig(platform(t, d), secret)
	require.NoError(t, err)
	cfg.Platform.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	_, err = store.Open(t.Context(), cfg)
	assert.ErrorIs(t, err, store.ErrInvalidConfig)
}

func TestTenantCannotReadTheControlPlane(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		_, ctxA := e.newTenant(t, "cp")
		_, _ = e.newTenant(t, "cpother")
		for _, sql := range []string{
			`SELECT * FROM tenancy.tenants`,
			`SELECT * FROM tenancy.meta`,
			`SELECT * FROM tenancy.tenant_keysets`,
			`UPDATE tenancy.tenant_logins SET tenant_id = tenant_id`,
		} {
			_, err := e.db.Exec(ctxA, sql)
			require.Error(t, err, sql)
			if e.ownDB() {
				// A database of its own holds no control plane.
				assert.Equal(t, "42P01", pgCode(err), "%s: %v", sql, err)
			} else {
				assert.Equal(t, "42501", pgCode(err), "%s: %v", sql, err)
			}
		}
		if e.mode == store.ModeTenantLogin && !e.ownDB() {
			var n int
			require.NoError(t, e.db.QueryRow(ctxA, `SELECT count(*) FROM tenancy.tenant_logins`).Scan(&n))
			assert.Equal(t, 1, n, "a login reads its own row only")
		}
	})
}

func TestTxCommitsOrRollsBack(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		_, ctxA := e.newTenant(t, "txa")
		count := func() int {
			var n int
			require.NoError(t, e.db.QueryRow(ctxA, `SELECT count(*) FROM requirements`).Scan(&n))
			return n
		}
		insert := func(tx *store.Tx, id string) error {
			_, err := tx.Exec(ctxA, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ($1, 'C', 'T')`, id)
			return err
		}
		require.NoError(t, e.db.Tx(ctxA, func(tx *store.Tx) error { return insert(tx, "R1") }))
		assert.Equal(t, 1, count(), "committed")

		errBoom := errors.New("boom")
		err := e.db.Tx(ctxA, func(tx *store.Tx) error {
			if err := insert(tx, "R2"); err != nil {
				return err
			}
			return errBoom
		})
		assert.ErrorIs(t, err, errBoom)
		assert.Equal(t, 1, count(), "rolled back on error")

		assert.Panics(t, func() {
			_ = e.db.Tx(ctxA, func(tx *store.Tx) error {
				if err := insert(tx, "R3"); err != nil {
					return err
				}
				panic("in fn")
			})
		})
		assert.Equal(t, 1, count(), "rolled back on panic")

		// A first statement that fails: the transaction is rolled back and
		// the connection serves the next one.
		err = e.db.Tx(ctxA, func(tx *store.Tx) error { return insert(tx, "R1") })
		assert.Equal(t, "23505", pgCode(err), "%v", err)
		err = e.db.Tx(ctxA, func(tx *store.Tx) error {
			rows, err := tx.Query(ctxA, `SELECT req_id FROM requirements`)
			if err != nil {
				return err
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			assert.Equal(t, []string{"R1"}, got)
			return insert(tx, "R4")
		})
		require.NoError(t, err)
		assert.Equal(t, 2, count())
		require.NoError(t, e.db.Tx(ctxA, func(*store.Tx) error { return nil }), "no statement, no transaction")
	})
}

func TestNoServerWarnings(t *testing.T) {
	var mu sync.Mutex
	var notices []string
	forPlacements(t, func(t *testing.T, e *env) {
		_, ctxA := e.newTenant(t, "warn")
		e.insertReq(t, ctxA, "REQ-1", "x")
		_, err := reqIDs(t, e.db, ctxA, `SELECT req_id FROM requirements`)
		require.NoError(t, err)
		require.NoError(t, e.db.Tx(ctxA, func(tx *store.Tx) error {
			_, err := tx.Exec(ctxA, `UPDATE requirements SET status = 'PARTIAL'`)
			return err
		}))
		_, err = e.db.Exec(ctxA, `SELECT 1/0`)
		require.Error(t, err)
		_, err = e.db.Exec(ctxA, `SELECT 1`)
		require.NoError(t, err, "the connection survives a failed statement")
		mu.Lock()
		defer mu.Unlock()
		assert.Empty(t, notices, "PostgreSQL sent no warnings (every one is a line in its log)")
	}, func(_ *store.AdminConfig, c *store.Config) {
		c.Platform.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
			mu.Lock()
			defer mu.Unlock()
			notices = append(notices, n.Severity+": "+n.Message)
		}
	})
}

// A Tx's first statement normally shares the round trip of BEGIN, in a
// batch, which takes no per-query option: one with an option still runs.
func TestTxFirstStatementWithAnOption(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	_, ctxA := e.newTenant(t, "opt")
	e.insertReq(t, ctxA, "REQ-1", "x")
	var n int
	err := e.db.Tx(ctxA, func(tx *store.Tx) error {
		if _, err := tx.Exec(ctxA, `UPDATE requirements SET status = $1`, pgx.QueryExecModeExec, "PARTIAL"); err != nil {
			return err
		}
		return nil
	})
	require.NoError(t, err)
	err = e.db.Tx(ctxA, func(tx *store.Tx) error {
		return tx.QueryRow(ctxA, `SELECT count(*) FROM requirements WHERE status = $1`, pgx.QueryExecModeExec, "PARTIAL").Scan(&n)
	})
	require.NoError(t, err)
	assert.Equal(t, 1, n)
}

func TestFailTenantRemovesThePlacementAndKeepsTheTenantFailed(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		id := tenant.MustParseID(fmt.Sprintf("fail%d", tenantSeq.Add(1)))
		var opts []store.CreateOption
		if e.tier == tenant.TierGovernment {
			opts = append(opts, store.OnCluster(govCluster))
		}
		require.NoError(t, e.admin.CreateTenant(ctx, tenant.Info{ID: id, Name: "Failing", Tier: e.tier, State: tenant.StateProvisioning}, opts...))
		tctx := tenant.NewContext(ctx, id)
		e.insertReq(t, tctx, "REQ-1", "half-provisioned")

		require.NoError(t, e.admin.FailTenant(ctx, id))
		info, err := e.admin.Tenant(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, tenant.StateFailed, info.State)
		_, _ = e.db.Exec(tctx, `SELECT count(*) FROM requirements`)
		_, err = e.db.Exec(tctx, `SELECT count(*) FROM requirements`)
		require.Error(t, err, "the failed tenant's placement is gone")
		require.NoError(t, e.admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
			var schemas, logins int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, id.SchemaName()).Scan(&schemas); err != nil {
				return err
			}
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM tenancy.tenant_logins WHERE tenant_id = $1`, id.String()).Scan(&logins); err != nil {
				return err
			}
			assert.Zero(t, schemas, "no schema left in the primary database")
			assert.Zero(t, logins, "no login left")
			return nil
		}))

		require.NoError(t, e.admin.FailTenant(ctx, id), "again: nothing to do")
		err = e.admin.CreateTenant(ctx, tenant.Info{ID: id, Name: "again", Tier: e.tier}, opts...)
		assert.ErrorIs(t, err, store.ErrTenantExists, "a failed ID is not given to another tenant")
	})
}

func TestFailTenantRefusesATenantThatWasActive(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	for _, st := range []tenant.State{tenant.StateActive, tenant.StateSuspended, tenant.StateDecommissioning} {
		t.Run(string(st), func(t *testing.T) {
			id, ctx := e.newTenant(t, "keep")
			e.insertReq(t, ctx, "REQ-1", "precious")
			if st != tenant.StateActive {
				require.NoError(t, e.admin.SetState(t.Context(), id, st))
			}
			err := e.admin.FailTenant(t.Context(), id)
			require.ErrorIs(t, err, tenant.ErrIllegalTransition)
			assert.Contains(t, err.Error(), "DropTenant")
			info, err := e.admin.Tenant(t.Context(), id)
			require.NoError(t, err)
			assert.Equal(t, st, info.State, "nothing changed")
			if st == tenant.StateActive {
				var n int
				require.NoError(t, e.db.QueryRow(ctx, `SELECT count(*) FROM requirements`).Scan(&n))
				assert.Equal(t, 1, n, "the data is still there")
			}
		})
	}
	require.ErrorIs(t, e.admin.FailTenant(t.Context(), tenant.MustParseID("nosuchtenant")), store.ErrUnknownTenant)
}

func TestRemainsSeesThePlacementUntilItIsDropped(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		id, ctx := e.newTenant(t, "remains")
		e.insertReq(t, ctx, "REQ-1", "x")
		var shared string
		if !e.ownDB() {
			shared = createShared(t, e, reqIndex)
			indexRow(t, e, ctx, shared, "REQ-1", "x")
		}
		left, err := e.admin.Remains(t.Context(), id)
		require.NoError(t, err)
		if shared != "" {
			assert.True(t, containsPrefix(left, "1 rows in shared table "), "its row of the shared table: %q", left)
		}
		if e.ownDB() {
			assert.True(t, containsPrefix(left, "database "), "a database of its own: %q", left)
		} else {
			assert.Contains(t, left, "schema "+id.SchemaName())
		}
		if e.logins() {
			assert.True(t, containsPrefix(left, "login role "), "its login: %q", left)
		}
		require.NoError(t, e.admin.SetState(t.Context(), id, tenant.StateDecommissioning))
		require.NoError(t, e.admin.DropTenant(t.Context(), id))
		left, err = e.admin.Remains(t.Context(), id)
		require.NoError(t, err)
		assert.Empty(t, left)
	})
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func TestListTenantsPages(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	var made []string
	for range 5 {
		id, _ := e.newTenant(t, "list")
		made = append(made, id.String())
	}
	var seen []string
	var after tenant.ID
	for {
		page, err := e.admin.ListTenants(t.Context(), after, 2)
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		assert.LessOrEqual(t, len(page), 2)
		for _, info := range page {
			seen = append(seen, info.ID.String())
			if slices.Contains(made, info.ID.String()) {
				assert.Equal(t, tenant.StateActive, info.State)
			}
		}
		after = page[len(page)-1].ID
	}
	for _, id := range made {
		assert.Contains(t, seen, id)
	}
	assert.IsNonDecreasing(t, seen)
	for _, bad := range []int{-1, store.MaxListTenants + 1} {
		_, err := e.admin.ListTenants(t.Context(), tenant.ID{}, bad)
		assert.ErrorIs(t, err, store.ErrInvalidConfig)
	}
}
