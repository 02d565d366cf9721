package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTemporaryTableCannotShadowTenantTable: a temporary table that one
// tenant's transaction leaves on a pooled connection (even granted to
// PUBLIC) must not catch the next tenant's unqualified statements: the
// tenant schema comes before pg_temp on the search_path.
func TestTemporaryTableCannotShadowTenantTable(t *testing.T) {
	db := newStore(t, func(c *store.Config) { c.App.MaxConns = 1 })
	_, ctxA := newTenant(t, db, "tmpa")
	_, ctxB := newTenant(t, db, "tmpb")
	insertReq(t, db, ctxB, "B-1", "b's row")
	require.NoError(t, db.Tx(ctxA, func(tx *store.Tx) error {
		if _, err := tx.Exec(ctxA, `CREATE TEMP TABLE requirements (req_id text, category text, requirement_text text)`); err != nil {
			return err
		}
		_, err := tx.Exec(ctxA, `GRANT ALL ON pg_temp.requirements TO PUBLIC`)
		return err
	}))
	_, err := db.Exec(ctxB, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ('B-2', 'C', 'written by B')`)
	require.NoError(t, err)
	got, err := reqIDs(t, db, ctxB, `SELECT req_id FROM requirements ORDER BY 1`)
	require.NoError(t, err)
	assert.Equal(t, []string{"B-1", "B-2"}, got, "B's statements reach B's own table")
	got, err = reqIDs(t, db, ctxA, `SELECT req_id FROM requirements ORDER BY 1`)
	require.NoError(t, err)
	assert.Empty(t, got, "A sees neither B's rows nor anything B wrote")
}

// TestFailedStatementDoesNotPoisonConnection: after a statement fails on the
// one-round-trip path, later calls of the same SQL on that connection work,
// even when a same-named table appeared on the application role's own
// search_path after Open.
func TestFailedStatementDoesNotPoisonConnection(t *testing.T) {
	d := pgtest.DB(t)
	name := uniqueName("poison")
	tbl := store.Table{Name: name, Columns: `req_id text PRIMARY KEY, phase int NOT NULL`}
	db := newStore(t, func(c *store.Config) {
		c.App.MaxConns = 1
		c.Tables = append(c.Tables, tbl)
	})
	_, ctx := newTenant(t, db, "poison")
	_, err := db.Exec(ctx, `INSERT INTO `+name+` (req_id, phase) VALUES ('R', 1)`)
	require.NoError(t, err)
	// A decoy with another shape, visible to the application role.
	d.Exec(t, `CREATE TABLE public.`+name+` (req_id int, phase int)`)
	t.Cleanup(func() { d.Exec(t, `DROP TABLE public.`+name) })

	q := `SELECT req_id FROM ` + name + ` WHERE phase / $1 = 1`
	for i, arg := range []int{1, 1, 0, 1, 1, 1} {
		var s string
		err := db.QueryRow(ctx, q, arg).Scan(&s)
		if arg == 0 {
			assert.Equal(t, "22012", pgCode(err), "call %d: division by zero expected, got %v", i, err)
			continue
		}
		require.NoError(t, err, "call %d", i)
		assert.Equal(t, "R", s)
	}
}

// TestEncodingErrorIsNotUnknownTenant: an argument pgx cannot encode is the
// caller's error, not a failure to assume the tenant.
func TestEncodingErrorIsNotUnknownTenant(t *testing.T) {
	db := newStore(t)
	_, ctx := newTenant(t, db, "enc")
	q := `UPDATE requirements SET phase = $1 WHERE req_id = 'x'`
	for range 2 { // warm: the second call takes the one-round-trip path
		_, err := db.Exec(ctx, q, 1)
		require.NoError(t, err)
	}
	for name, sql := range map[string]string{"warm": q, "cold": `UPDATE requirements SET phase = $1 WHERE req_id = 'y'`} {
		_, err := db.Exec(ctx, sql, struct{ X chan int }{})
		require.Error(t, err, name)
		assert.False(t, errors.Is(err, store.ErrUnknownTenant), "%s: %v", name, err)
		assert.NotContains(t, err.Error(), "assume tenant", name)
	}
	// The connection still works.
	_, err := db.Exec(ctx, q, 2)
	require.NoError(t, err)
}

// TestSharedTableUniqueKeysMustIncludeTenant: a shared table whose unique
// key lacks tenant_id would let tenants probe each other's keys; it is
// refused and nothing is created.
func TestSharedTableUniqueKeysMustIncludeTenant(t *testing.T) {
	db := newStore(t)
	sch := uniqueName("uniq")
	for _, cols := range []string{
		`req_id text PRIMARY KEY, title text`,
		`req_id text NOT NULL, title text, UNIQUE (title)`,
		`req_id text NOT NULL, email text, UNIQUE (email) INCLUDE (tenant_id)`, // INCLUDE is not part of the key
	} {
		err := db.CreateSharedTable(ctxT(t), sch, store.Table{Name: "idx", Columns: cols})
		require.ErrorIs(t, err, store.ErrInvalidTable, cols)
		assert.Contains(t, err.Error(), "tenant_id")
		assert.False(t, exists(t, admin(t), `SELECT 1 FROM pg_namespace WHERE nspname = $1`, sch), "nothing created")
	}
	require.NoError(t, db.CreateSharedTable(ctxT(t), sch, store.Table{Name: "idx", Columns: `req_id text NOT NULL, PRIMARY KEY (tenant_id, req_id)`}))
	_, ctxA := newTenant(t, db, "uniqa")
	_, ctxB := newTenant(t, db, "uniqb")
	tbl := pgx.Identifier{sch, "idx"}.Sanitize()
	for _, ctx := range []context.Context{ctxA, ctxB} {
		_, err := db.Exec(ctx, `INSERT INTO `+tbl+` (req_id) VALUES ('SAME-KEY')`)
		require.NoError(t, err, "each tenant may use the same key")
	}
}

// TestOpenRefusesTenantTableNameOnAppSearchPath: a table named like a
// tenant table that the application role finds on its own search_path
// could be prepared against before the tenant is assumed; Open refuses.
func TestOpenRefusesTenantTableNameOnAppSearchPath(t *testing.T) {
	d := pgtest.DB(t)
	name := uniqueName("decoy")
	d.Exec(t, `CREATE TABLE public.`+name+` (x int)`)
	t.Cleanup(func() { d.Exec(t, `DROP TABLE public.`+name) })
	cfg, err := store.ParseConfig(appRole(t), d.AdminURL())
	require.NoError(t, err)
	cfg.RolePrefix = d.Prefix()
	cfg.Tables = []store.Table{{Name: name, Columns: "x int"}}
	db, err := store.OpenConfig(ctxT(t), cfg)
	if err == nil {
		db.Close()
	}
	require.ErrorIs(t, err, store.ErrUnsafeAppRole)
	assert.Contains(t, err.Error(), "search_path finds a table")
}
