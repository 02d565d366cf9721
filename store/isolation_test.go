package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func reqIDs(t *testing.T, db *store.DB, ctx context.Context, sql string, args ...any) ([]string, error) {
	t.Helper()
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func TestTenantACannotReadTenantBRowsByUnqualifiedName(t *testing.T) {
	db := newStore(t)
	_, ctxA := newTenant(t, db, "a")
	_, ctxB := newTenant(t, db, "b")
	insertReq(t, db, ctxA, "REQ-A-1", "only A")
	insertReq(t, db, ctxB, "REQ-B-1", "only B")
	insertReq(t, db, ctxB, "REQ-B-2", "only B")

	gotA, err := reqIDs(t, db, ctxA, `SELECT req_id FROM requirements ORDER BY req_id`)
	require.NoError(t, err)
	assert.Equal(t, []string{"REQ-A-1"}, gotA)
	gotB, err := reqIDs(t, db, ctxB, `SELECT req_id FROM requirements ORDER BY req_id`)
	require.NoError(t, err)
	assert.Equal(t, []string{"REQ-B-1", "REQ-B-2"}, gotB)

	// Asking for B's key by name from A finds nothing: A's table has no such row.
	var text string
	err = db.QueryRow(ctxA, `SELECT requirement_text FROM requirements WHERE req_id = $1`, "REQ-B-1").Scan(&text)
	assert.ErrorIs(t, err, pgx.ErrNoRows)
}

func TestTenantACannotReadTenantBRowsByQualifiedName(t *testing.T) {
	db := newStore(t)
	_, ctxA := newTenant(t, db, "a")
	idB, ctxB := newTenant(t, db, "b")
	insertReq(t, db, ctxB, "REQ-B-1", "secret of B")

	qualified := pgx.Identifier{idB.SchemaName(), "requirements"}.Sanitize()
	for name, run := range map[string]func() error{
		"Query": func() error { _, err := reqIDs(t, db, ctxA, `SELECT req_id FROM `+qualified); return err },
		"Exec":  func() error { _, err := db.Exec(ctxA, `DELETE FROM `+qualified); return err },
		"Tx": func() error {
			return db.Tx(ctxA, func(tx *store.Tx) error {
				_, err := tx.Exec(ctxA, `UPDATE `+qualified+` SET requirement_text = 'pwned'`)
				return err
			})
		},
		"SearchPathOverride": func() error {
			// Even pointing search_path at B inside A's transaction does not help.
			return db.Tx(ctxA, func(tx *store.Tx) error {
				if _, err := tx.Exec(ctxA, `SELECT set_config('search_path', $1, true)`, idB.SchemaName()); err != nil {
					return err
				}
				_, err := tx.Exec(ctxA, `SELECT count(*) FROM requirements`)
				return err
			})
		},
	} {
		t.Run(name, func(t *testing.T) {
			err := run()
			require.Error(t, err)
			// insufficient_privilege; or, where B's schema was put on the
			// search_path, PostgreSQL skips a schema without USAGE: undefined_table.
			assert.Contains(t, []string{"42501", "42P01"}, pgCode(err), "want permission denied, got %v", err)
		})
	}
	got, err := reqIDs(t, db, ctxB, `SELECT requirement_text FROM requirements`)
	require.NoError(t, err)
	assert.Equal(t, []string{"secret of B"}, got, "B's data must be untouched")
}

func TestTenantACannotReadTenantBRowsThroughSharedTable(t *testing.T) {
	db := newStore(t)
	shared := store.Table{Name: "req_index", Columns: `req_id text NOT NULL, title text NOT NULL, PRIMARY KEY (tenant_id, req_id)`}
	sch := uniqueName("shared")
	require.NoError(t, db.CreateSharedTable(ctxT(t), sch, shared))
	tbl := pgx.Identifier{sch, "req_index"}.Sanitize()
	idA, ctxA := newTenant(t, db, "a")
	idB, ctxB := newTenant(t, db, "b")
	for _, c := range []struct {
		ctx context.Context
		id  string
	}{{ctxA, "A-1"}, {ctxB, "B-1"}, {ctxB, "B-2"}} {
		_, err := db.Exec(c.ctx, `INSERT INTO `+tbl+` (req_id, title) VALUES ($1, 'x')`, c.id)
		require.NoError(t, err)
	}
	got, err := reqIDs(t, db, ctxA, `SELECT req_id FROM `+tbl+` ORDER BY 1`)
	require.NoError(t, err)
	assert.Equal(t, []string{"A-1"}, got)

	var tenants []string
	rows, err := db.Query(ctxB, `SELECT DISTINCT tenant_id FROM `+tbl)
	require.NoError(t, err)
	tenants, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	assert.Equal(t, []string{idB.String()}, tenants, "tenant_id is filled from the transaction")

	t.Run("CannotWriteRowForOtherTenant", func(t *testing.T) {
		_, err := db.Exec(ctxA, `INSERT INTO `+tbl+` (tenant_id, req_id, title) VALUES ($1, 'X', 'forged')`, idB.String())
		require.Error(t, err)
		assert.Equal(t, "42501", pgCode(err), "row-level security WITH CHECK: %v", err)
	})
	t.Run("CannotUpdateOrDeleteOtherTenantsRows", func(t *testing.T) {
		ct, err := db.Exec(ctxA, `UPDATE `+tbl+` SET title = 'pwned' WHERE req_id LIKE 'B-%'`)
		require.NoError(t, err)
		assert.Zero(t, ct.RowsAffected())
		ct, err = db.Exec(ctxA, `DELETE FROM `+tbl)
		require.NoError(t, err)
		assert.EqualValues(t, 1, ct.RowsAffected(), "A deletes only its own row")
		got, err := reqIDs(t, db, ctxB, `SELECT req_id FROM `+tbl+` WHERE title = 'x' ORDER BY 1`)
		require.NoError(t, err)
		assert.Equal(t, []string{"B-1", "B-2"}, got)
	})
	t.Run("CannotSpoofTenantSetting", func(t *testing.T) {
		// A transaction of A that rewrites app.tenant_id to B fails instead of
		// reading B's rows: the guard binds the setting to the assumed role.
		err := db.Tx(ctxA, func(tx *store.Tx) error {
			if _, err := tx.Exec(ctxA, `SELECT set_config('app.tenant_id', $1, true)`, idB.String()); err != nil {
				return err
			}
			_, err := tx.Exec(ctxA, `SELECT count(*) FROM `+tbl)
			return err
		})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "does not match the tenant role")
	})
	_ = idA
}

func TestQueryWithoutTenantFailsThroughAPI(t *testing.T) {
	db := newStore(t)
	newTenant(t, db, "a")
	ctx := ctxT(t) // no tenant
	_, err := db.Exec(ctx, `SELECT 1`)
	assert.ErrorIs(t, err, tenant.ErrNoTenant)
	_, err = db.Query(ctx, `SELECT 1`)
	assert.ErrorIs(t, err, tenant.ErrNoTenant)
	var one int
	assert.ErrorIs(t, db.QueryRow(ctx, `SELECT 1`).Scan(&one), tenant.ErrNoTenant)
	called := false
	err = db.Tx(ctx, func(*store.Tx) error { called = true; return nil })
	assert.ErrorIs(t, err, tenant.ErrNoTenant)
	assert.False(t, called, "fn must not run without a tenant")
	// A zero ID put in a context is no tenant either.
	_, err = db.Exec(tenant.NewContext(ctx, tenant.ID{}), `SELECT 1`)
	assert.ErrorIs(t, err, tenant.ErrNoTenant)
}

func TestUnknownTenantFails(t *testing.T) {
	db := newStore(t)
	ctx := tenant.NewContext(ctxT(t), tenant.MustParseID("neverprovisioned"))
	_, err := db.Exec(ctx, `SELECT 1`)
	assert.ErrorIs(t, err, store.ErrUnknownTenant)
	err = db.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.Exec(ctx, `SELECT 1`)
		return err
	})
	assert.ErrorIs(t, err, store.ErrUnknownTenant)
}

func TestQueryWithoutTenantFailsAtDatabase(t *testing.T) {
	db := newStore(t)
	idA, _ := newTenant(t, db, "a")
	shared := store.Table{Name: "notes", Columns: `body text NOT NULL`}
	notes := uniqueName("sharednotes")
	require.NoError(t, db.CreateSharedTable(ctxT(t), notes, shared))
	ctx := ctxT(t)
	table := pgx.Identifier{idA.SchemaName(), "requirements"}.Sanitize()
	pool := db.UnscopedPool()

	t.Run("AppRoleAloneIsDenied", func(t *testing.T) {
		_, err := pool.Exec(ctx, `SELECT count(*) FROM `+table)
		require.Error(t, err)
		assert.Equal(t, "42501", pgCode(err), "%v", err)
		_, err = pool.Exec(ctx, `SELECT count(*) FROM `+pgx.Identifier{notes, "notes"}.Sanitize())
		require.Error(t, err)
		assert.Equal(t, "42501", pgCode(err), "%v", err)
	})
	t.Run("TenantRoleWithoutSettingErrorsOnEmptyTable", func(t *testing.T) {
		// The table is empty: the error must come from the policy's one-time
		// gate, not from evaluating a row.
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('role', $1, true)`, db.TenantRole(idA)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `SELECT count(*) FROM `+table)
			return err
		})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "no tenant is set")
	})
	t.Run("OnPooledConnectionThatServedAnotherTenant", func(t *testing.T) {
		// A store with one connection: the raw transaction below runs on
		// the very connection that just served tenant A through store.
		one := newStore(t, func(c *store.Config) { c.App.MaxConns = 1 })
		idA, ctxA := newTenant(t, one, "pooled")
		insertReq(t, one, ctxA, "REQ-1", "x")
		tableA := pgx.Identifier{idA.SchemaName(), "requirements"}.Sanitize()
		var pidServed, pidRaw int
		require.NoError(t, one.QueryRow(ctxA, `SELECT pg_backend_pid() FROM requirements`).Scan(&pidServed))
		err := pgx.BeginFunc(ctx, one.UnscopedPool(), func(tx pgx.Tx) error {
			var s *string
			if err := tx.QueryRow(ctx, `SELECT current_setting('app.tenant_id', true), pg_backend_pid()`).Scan(&s, &pidRaw); err != nil {
				return err
			}
			require.NotNil(t, s)
			assert.Equal(t, "", *s, "after use the setting reads as empty, which the guard must treat as unset")
			if _, err := tx.Exec(ctx, `SELECT set_config('role', $1, true)`, one.TenantRole(idA)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `SELECT req_id FROM `+tableA)
			return err
		})
		require.Equal(t, pidServed, pidRaw, "same server connection")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "no tenant is set")
	})
}

// sessionState reads what a connection would carry into the next transaction.
type sessionState struct{ User, SearchPath, TenantID string }

func readSession(t *testing.T, ctx context.Context, p *pgxpool.Pool) sessionState {
	t.Helper()
	var s sessionState
	require.NoError(t, p.QueryRow(ctx, `SELECT current_user, current_setting('search_path'), coalesce(current_setting('app.tenant_id', true), '')`).
		Scan(&s.User, &s.SearchPath, &s.TenantID))
	return s
}

func TestPooledConnectionCarriesNothingIntoNextTransaction(t *testing.T) {
	// A store whose pool has one connection, so every call reuses it.
	db := newStore(t, func(c *store.Config) { c.App.MaxConns = 1 })
	id, ctx := newTenant(t, db, "a")
	before := readSession(t, ctx, db.UnscopedPool())
	require.Equal(t, db.AppRole(), before.User)
	require.NotContains(t, before.SearchPath, id.SchemaName())

	cases := map[string]func() error{
		"Commit": func() error {
			return db.Tx(ctx, func(tx *store.Tx) error {
				_, err := tx.Exec(ctx, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ('R1', 'C', 'T')`)
				return err
			})
		},
		"Rollback": func() error {
			err := db.Tx(ctx, func(tx *store.Tx) error {
				var n int
				if err := tx.QueryRow(ctx, `SELECT count(*) FROM requirements`).Scan(&n); err != nil {
					return err
				}
				return errors.New("roll back")
			})
			if err == nil || err.Error() != "roll back" {
				return fmt.Errorf("want the function's own error, got %v", err)
			}
			return nil
		},
		"FailedStatement": func() error {
			// Divides by zero whether or not the table has rows.
			_, err := db.Exec(ctx, `SELECT 1/(SELECT count(*) - count(*) FROM requirements)`)
			if pgCode(err) != "22012" {
				return fmt.Errorf("want division_by_zero, got %v", err)
			}
			return nil
		},
		"ImplicitQuery": func() error {
			var n int
			return db.QueryRow(ctx, `SELECT count(*) FROM requirements`).Scan(&n)
		},
		"ImplicitExecWarm": func() error {
			for range 3 { // the later runs take the one-round-trip path
				if _, err := db.Exec(ctx, `UPDATE requirements SET status = 'COMPLETE'`); err != nil {
					return err
				}
			}
			return nil
		},
	}
	for _, name := range []string{"Commit", "Rollback", "FailedStatement", "ImplicitQuery", "ImplicitExecWarm"} {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, cases[name]())
			after := readSession(t, ctx, db.UnscopedPool())
			assert.Equal(t, before, after, "role, search_path and app.tenant_id must be back to their defaults")
		})
	}
}
