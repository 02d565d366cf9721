package store_test

// Admin.CreateSharedTable: tables whose rows belong to many tenants,
// isolated by row level security alone, and what DropTenant does to them.

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

var sharedSeq atomic.Int64

// sharedSchema returns a schema name for shared tables, starting with
// name, that no other test of this package run uses.
func sharedSchema(name string) string { return fmt.Sprintf("shared_%s%d", name, sharedSeq.Add(1)) }

// reqIndex is a shared table: a cross-tenant index of requirement keys.
var reqIndex = store.Table{Name: "req_index", Columns: `req_id text NOT NULL, title text NOT NULL, PRIMARY KEY (tenant_id, req_id)`}

// createShared creates table in a new shared schema and returns its
// qualified name.
func createShared(t *testing.T, e *env, table store.Table) string {
	t.Helper()
	schema := sharedSchema(table.Name)
	require.NoError(t, e.admin.CreateSharedTable(t.Context(), schema, table))
	return pgx.Identifier{schema, table.Name}.Sanitize()
}

// indexRow writes one row of reqIndex as the tenant of ctx.
func indexRow(t *testing.T, e *env, ctx context.Context, table, reqID, title string) {
	t.Helper()
	_, err := e.db.Exec(ctx, `INSERT INTO `+table+` (req_id, title) VALUES ($1, $2)`, reqID, title)
	require.NoError(t, err)
}

// sharedObjects counts what CreateSharedTable makes: schemas, relations,
// policies and the control plane's record of shared tables.
type sharedObjects struct{ schemas, relations, policies, recorded int }

func countSharedObjects(t testing.TB, c *pgx.Conn) sharedObjects {
	t.Helper()
	var o sharedObjects
	require.NoError(t, c.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM pg_namespace), (SELECT count(*) FROM pg_class),
		(SELECT count(*) FROM pg_policy), (SELECT count(*) FROM tenancy.shared_tables)`).
		Scan(&o.schemas, &o.relations, &o.policies, &o.recorded))
	return o
}

func TestSharedTableShowsEachTenantOnlyItsOwnRows(t *testing.T) {
	forModes(t, func(t *testing.T, e *env) {
		c := superuser(t, e.d)
		tbl := createShared(t, e, reqIndex)
		idA, ctxA := e.newTenant(t, "sha")
		idB, ctxB := e.newTenant(t, "shb")
		indexRow(t, e, ctxA, tbl, "A-1", "a")
		indexRow(t, e, ctxB, tbl, "B-1", "b")
		indexRow(t, e, ctxB, tbl, "B-2", "b")

		got, err := reqIDs(t, e.db, ctxA, `SELECT req_id FROM `+tbl+` ORDER BY 1`)
		require.NoError(t, err)
		assert.Equal(t, []string{"A-1"}, got)
		got, err = reqIDs(t, e.db, ctxB, `SELECT req_id FROM `+tbl+` ORDER BY 1`)
		require.NoError(t, err)
		assert.Equal(t, []string{"B-1", "B-2"}, got)
		var title string
		err = e.db.QueryRow(ctxA, `SELECT title FROM `+tbl+` WHERE req_id = $1`, "B-1").Scan(&title)
		assert.ErrorIs(t, err, pgx.ErrNoRows, "B's key by name")
		require.NoError(t, e.db.Tx(ctxA, func(tx *store.Tx) error {
			rows, err := tx.Query(ctxA, `SELECT req_id FROM `+tbl+` ORDER BY 1`)
			if err != nil {
				return err
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[string])
			assert.Equal(t, []string{"A-1"}, got, "in a transaction too")
			return err
		}))

		// tenant_id is filled in with the session's tenant.
		assert.Equal(t, 1, count(t, c, `SELECT count(*) FROM `+tbl+` WHERE tenant_id = $1`, idA.String()))
		assert.Equal(t, 2, count(t, c, `SELECT count(*) FROM `+tbl+` WHERE tenant_id = $1`, idB.String()))

		// A names B as the row's tenant: refused by the policy's WITH CHECK.
		_, err = e.db.Exec(ctxA, `INSERT INTO `+tbl+` (tenant_id, req_id, title) VALUES ($1, 'FORGED', 'forged')`, idB.String())
		require.Error(t, err)
		assert.Equal(t, "42501", pgCode(err), "%v", err)
		assert.Contains(t, err.Error(), "row-level security")
		_, err = e.db.Exec(ctxA, `UPDATE `+tbl+` SET tenant_id = $1 WHERE req_id = 'A-1'`, idB.String())
		require.Error(t, err, "nor can A hand its row to B")
		assert.Equal(t, "42501", pgCode(err), "%v", err)

		// A's UPDATE and DELETE reach its own rows only.
		ct, err := e.db.Exec(ctxA, `UPDATE `+tbl+` SET title = 'pwned' WHERE req_id LIKE 'B-%'`)
		require.NoError(t, err)
		assert.Zero(t, ct.RowsAffected(), "UPDATE of B's rows")
		ct, err = e.db.Exec(ctxA, `DELETE FROM `+tbl)
		require.NoError(t, err)
		assert.EqualValues(t, 1, ct.RowsAffected(), "DELETE of every row deletes A's only")

		assert.Zero(t, count(t, c, `SELECT count(*) FROM `+tbl+` WHERE tenant_id = $1 OR req_id = 'FORGED'`, idA.String()))
		assert.Equal(t, 2, count(t, c, `SELECT count(*) FROM `+tbl+` WHERE tenant_id = $1 AND title = 'b'`, idB.String()),
			"B's rows are untouched")
	})
}

// In ModeTenantLogin the guard of a shared table finds the tenant from the
// session's login, so nothing a tenant's statements set changes it: not
// app.tenant_id, not SET ROLE to a role it belongs to.
func TestSharedTableGuardIgnoresWhatTheSessionSets(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	tbl := createShared(t, e, reqIndex)
	idA, ctxA := e.newTenant(t, "sga")
	idB, ctxB := e.newTenant(t, "sgb")
	indexRow(t, e, ctxA, tbl, "A-1", "a")
	indexRow(t, e, ctxB, tbl, "B-1", "b")
	var group string
	require.NoError(t, e.db.QueryRow(ctxA, `SELECT rolname FROM pg_roles WHERE pg_has_role(session_user, oid, 'MEMBER') AND rolname <> session_user`).Scan(&group))

	for name, set := range map[string]string{
		"app.tenant_id": `SET LOCAL app.tenant_id = ` + literalSQL(idB.String()),
		"role":          `SET LOCAL ROLE ` + pgx.Identifier{group}.Sanitize(),
	} {
		t.Run(name, func(t *testing.T) {
			err := e.db.Tx(ctxA, func(tx *store.Tx) error {
				if _, err := tx.Exec(ctxA, set); err != nil {
					return err
				}
				if _, err := tx.Exec(ctxA, `INSERT INTO `+tbl+` (req_id, title) VALUES ('A-2', 'a')`); err != nil {
					return err
				}
				rows, err := tx.Query(ctxA, `SELECT tenant_id || '/' || req_id FROM `+tbl+` ORDER BY 1`)
				if err != nil {
					return err
				}
				got, err := pgx.CollectRows(rows, pgx.RowTo[string])
				assert.Equal(t, []string{idA.String() + "/A-1", idA.String() + "/A-2"}, got)
				return err
			})
			if err != nil {
				// PostgreSQL 16+ refuses SET ROLE to the group (SET FALSE).
				assert.Equal(t, "42501", pgCode(err), "%v", err)
			}
			_, err = e.db.Exec(ctxA, `DELETE FROM `+tbl+` WHERE req_id = 'A-2'`)
			require.NoError(t, err)
		})
	}
	got, err := reqIDs(t, e.db, ctxB, `SELECT req_id FROM `+tbl)
	require.NoError(t, err)
	assert.Equal(t, []string{"B-1"}, got)
}

// A session that is not a tenant's gets no row of a shared table: the
// platform role has no privilege on it, and the shared login without the
// tenant setting gets an error, even where the table is empty.
func TestSharedTableRefusesSessionsWithoutATenant(t *testing.T) {
	forModes(t, func(t *testing.T, e *env) {
		tbl := createShared(t, e, reqIndex)
		empty := createShared(t, e, reqIndex)
		_, ctxA := e.newTenant(t, "sna")
		indexRow(t, e, ctxA, tbl, "A-1", "a")

		p, err := pgx.Connect(t.Context(), platform(t, e.d))
		require.NoError(t, err)
		defer p.Close(context.Background())
		for _, sql := range []string{`SELECT * FROM ` + tbl, `INSERT INTO ` + tbl + ` (tenant_id, req_id, title) VALUES ('x', 'X', 'x')`} {
			_, err = p.Exec(t.Context(), sql)
			require.Error(t, err, "platform role: %s", sql)
			assert.Equal(t, "42501", pgCode(err), "%s: %v", sql, err)
		}
		if e.mode != store.ModeSharedPool {
			return
		}
		role, pw, err := store.SharedLogin(e.admin)
		require.NoError(t, err)
		s, err := connectAs(t, e.d, role, pw)
		require.NoError(t, err)
		for _, table := range []string{tbl, empty} {
			_, err = s.Exec(t.Context(), `SELECT * FROM `+table)
			require.Error(t, err, "shared login without app.tenant_id: %s", table)
			assert.Equal(t, "42501", pgCode(err), "%v", err)
			assert.Contains(t, err.Error(), "no tenant")
		}
	})
}

// A unique or exclusion key without tenant_id would tell a tenant, by a
// violation, which keys other tenants hold: CreateSharedTable refuses the
// table and creates nothing. With tenant_id in the key, tenants may use
// the same keys.
func TestSharedTableUniqueKeysMustIncludeTenantID(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	c := superuser(t, e.d)
	e.d.Exec(t, `CREATE EXTENSION IF NOT EXISTS btree_gist`)
	for name, cols := range map[string]string{
		// With <>, one tenant's row conflicts with every other tenant's:
		// a probe of their keys.
		"exclusion with tenant_id unequal": `title text NOT NULL, EXCLUDE USING gist (tenant_id WITH <>, title WITH =)`,
		"primary key":                      `req_id text PRIMARY KEY, title text`,
		"unique":                           `req_id text NOT NULL, title text, UNIQUE (title)`,
		"tenant_id included, not key":      `email text, UNIQUE (email) INCLUDE (tenant_id)`,
		"exclusion":                        `title text, EXCLUDE USING btree (title WITH =)`,
		"one good key and one bad key":     `title text, code text, UNIQUE (tenant_id, title), UNIQUE (code)`,
	} {
		t.Run(name, func(t *testing.T) {
			schema := sharedSchema("uniq")
			before := countSharedObjects(t, c)
			err := e.admin.CreateSharedTable(t.Context(), schema, store.Table{Name: "idx", Columns: cols})
			require.ErrorIs(t, err, store.ErrInvalidTable)
			assert.Contains(t, err.Error(), "tenant_id")
			assert.Equal(t, before, countSharedObjects(t, c), "nothing created")
			assert.Zero(t, count(t, c, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, schema))
		})
	}

	_, ctxA := e.newTenant(t, "uqa")
	_, ctxB := e.newTenant(t, "uqb")
	for name, tc := range map[string]struct{ cols, code string }{
		"primary key with tenant_id":         {`k text NOT NULL, PRIMARY KEY (tenant_id, k)`, "23505"},
		"unique with tenant_id last":         {`k text NOT NULL, UNIQUE (k, tenant_id)`, "23505"},
		"exclusion with tenant_id equal":     {`k text NOT NULL, EXCLUDE USING btree (tenant_id WITH =, k WITH =)`, "23P01"},
		"unique with tenant_id among others": {`k text NOT NULL, other text NOT NULL DEFAULT '', UNIQUE (other, tenant_id, k)`, "23505"},
	} {
		t.Run(name, func(t *testing.T) {
			tbl := createShared(t, e, store.Table{Name: "idx", Columns: tc.cols})
			for _, ctx := range []context.Context{ctxA, ctxB} {
				_, err := e.db.Exec(ctx, `INSERT INTO `+tbl+` (k) VALUES ('SAME-KEY')`)
				require.NoError(t, err, "each tenant may use the same key")
			}
			_, err := e.db.Exec(ctxA, `INSERT INTO `+tbl+` (k) VALUES ('SAME-KEY')`)
			assert.Equal(t, tc.code, pgCode(err), "but not twice: %v", err)
		})
	}
}

// Hostile or careless names for a shared table's schema and table are
// refused with ErrInvalidTable before anything is created.
func TestCreateSharedTableRefusesBadNamesAndCreatesNothing(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	c := superuser(t, e.d)
	ok := store.Table{Name: "notes", Columns: "body text"}
	for name, tc := range map[string]struct {
		schema string
		table  store.Table
	}{
		"tenant schema":       {"tenant_acme", ok},
		"an existing tenant":  {freshSchemaOfTenant(t, e), ok},
		"control plane":       {"tenancy", ok},
		"system schema":       {"pg_catalog", ok},
		"system prefix":       {"pg_x", ok},
		"upper case":          {"Shared", ok},
		"quote injection":     {`s"; DROP SCHEMA tenancy CASCADE; --`, ok},
		"empty schema":        {"", ok},
		"leading digit":       {"1shared", ok},
		"space":               {"shared notes", ok},
		"overlong schema":     {"s" + strings.Repeat("x", 63), ok},
		"bad table name":      {sharedSchema("bad"), store.Table{Name: "No-Dash", Columns: "body text"}},
		"empty table name":    {sharedSchema("bad"), store.Table{Columns: "body text"}},
		"system table name":   {sharedSchema("bad"), store.Table{Name: "pg_notes", Columns: "body text"}},
		"no columns":          {sharedSchema("bad"), store.Table{Name: "notes", Columns: "  "}},
		"statement in column": {sharedSchema("bad"), store.Table{Name: "notes", Columns: "body text); DROP SCHEMA tenancy CASCADE; --"}},
	} {
		t.Run(name, func(t *testing.T) {
			before := countSharedObjects(t, c)
			err := e.admin.CreateSharedTable(t.Context(), tc.schema, tc.table)
			require.ErrorIs(t, err, store.ErrInvalidTable)
			assert.Equal(t, before, countSharedObjects(t, c), "nothing created")
		})
	}
}

// freshSchemaOfTenant places a tenant and returns its schema name.
func freshSchemaOfTenant(t *testing.T, e *env) string {
	t.Helper()
	id, _ := e.newTenant(t, "shown")
	return id.SchemaName()
}

// A shared table that exists already is not replaced: the second
// CreateSharedTable fails and the first table keeps its rows.
func TestCreateSharedTableTwiceKeepsTheFirst(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	c := superuser(t, e.d)
	schema := sharedSchema("twice")
	require.NoError(t, e.admin.CreateSharedTable(t.Context(), schema, reqIndex))
	tbl := pgx.Identifier{schema, reqIndex.Name}.Sanitize()
	_, ctxA := e.newTenant(t, "twa")
	indexRow(t, e, ctxA, tbl, "A-1", "a")
	before := countSharedObjects(t, c)
	err := e.admin.CreateSharedTable(t.Context(), schema, store.Table{Name: reqIndex.Name, Columns: `other text`})
	require.Error(t, err)
	assert.Equal(t, "42P07", pgCode(err), "relation exists: %v", err)
	assert.Equal(t, before, countSharedObjects(t, c))
	got, err := reqIDs(t, e.db, ctxA, `SELECT req_id FROM `+tbl)
	require.NoError(t, err)
	assert.Equal(t, []string{"A-1"}, got)
}

func TestDropTenantDeletesItsRowsInSharedTablesOnly(t *testing.T) {
	forModes(t, func(t *testing.T, e *env) {
		c := superuser(t, e.d)
		tables := []string{createShared(t, e, reqIndex), createShared(t, e, store.Table{Name: "notes", Columns: `body text NOT NULL`})}
		gone, ctxGone := e.newTenant(t, "gone")
		keep, ctxKeep := e.newTenant(t, "keep")
		e.insertReq(t, ctxGone, "REQ-1", "gone's")
		e.insertReq(t, ctxKeep, "REQ-1", "keep's")
		for _, ctx := range []context.Context{ctxGone, ctxKeep} {
			indexRow(t, e, ctx, tables[0], "R-1", "x")
			indexRow(t, e, ctx, tables[0], "R-2", "x")
			_, err := e.db.Exec(ctx, `INSERT INTO `+tables[1]+` (body) VALUES ('n')`)
			require.NoError(t, err)
		}
		var login string
		if e.mode == store.ModeTenantLogin {
			var err error
			login, _, err = store.LoginOf(t.Context(), e.admin, gone)
			require.NoError(t, err)
		}

		require.NoError(t, e.admin.SetState(t.Context(), gone, tenant.StateDecommissioning))
		require.NoError(t, e.admin.DropTenant(t.Context(), gone))

		for i, tbl := range tables {
			assert.Zero(t, count(t, c, `SELECT count(*) FROM `+tbl+` WHERE tenant_id = $1`, gone.String()), "%s: the dropped tenant's rows", tbl)
			assert.Equal(t, 2-i, count(t, c, `SELECT count(*) FROM `+tbl+` WHERE tenant_id = $1`, keep.String()), "%s: the other tenant's rows", tbl)
		}
		assert.Zero(t, count(t, c, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, gone.SchemaName()), "schema dropped")
		assert.Equal(t, 1, count(t, c, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, keep.SchemaName()), "the other's kept")
		assert.Zero(t, count(t, c, `SELECT count(*) FROM tenancy.tenant_logins WHERE tenant_id = $1`, gone.String()), "login record deleted")
		if login != "" {
			assert.Zero(t, count(t, c, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, login), "login role dropped")
		}
		assert.Equal(t, 2, count(t, c, `SELECT count(*) FROM tenancy.shared_tables
			WHERE to_regclass(format('%I.%I', schema_name, table_name)) = ANY ($1::text[]::regclass[])`, tables),
			"the shared tables stay")

		got, err := reqIDs(t, e.db, ctxKeep, `SELECT req_id FROM `+tables[0]+` ORDER BY 1`)
		require.NoError(t, err)
		assert.Equal(t, []string{"R-1", "R-2"}, got, "the other tenant works on")
		got, err = reqIDs(t, e.db, ctxKeep, `SELECT requirement_text FROM requirements`)
		require.NoError(t, err)
		assert.Equal(t, []string{"keep's"}, got)
	})
}

// A transaction of the tenant that has written to a shared table and not
// yet committed when DropTenant starts: DropTenant waits for it and
// deletes what it wrote, instead of leaving the row behind.
func TestDropTenantWaitsForWritersOfSharedTables(t *testing.T) {
	forModes(t, func(t *testing.T, e *env) {
		c := superuser(t, e.d)
		tbl := createShared(t, e, store.Table{Name: "notes", Columns: `body text NOT NULL`})
		id, ctx := e.newTenant(t, "dropwait")

		inserted, release := make(chan struct{}), make(chan struct{})
		txErr, dropErr := make(chan error, 1), make(chan error, 1)
		go func() {
			txErr <- e.db.Tx(ctx, func(tx *store.Tx) error {
				if _, err := tx.Exec(ctx, `INSERT INTO `+tbl+` (body) VALUES ('written while the tenant is dropped')`); err != nil {
					close(inserted)
					return err
				}
				close(inserted)
				<-release
				return nil
			})
		}()
		<-inserted
		go func() { dropErr <- e.admin.DropTenant(t.Context(), id) }()

		// Let the writer commit once DropTenant waits for it, or once
		// DropTenant has returned without waiting.
		var waiting, returned bool
		for deadline := time.Now().Add(20 * time.Second); !waiting && !returned && time.Now().Before(deadline); {
			select {
			case err := <-dropErr:
				returned = true
				dropErr <- err
			case <-time.After(20 * time.Millisecond):
				waiting = count(t, c, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
					AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'`) > 0
			}
		}
		close(release)
		require.NoError(t, <-txErr, "the writer commits")
		require.NoError(t, <-dropErr)
		assert.True(t, waiting, "DropTenant waited for the writer")
		assert.Zero(t, count(t, c, `SELECT count(*) FROM `+tbl+` WHERE tenant_id = $1`, id.String()),
			"no row of the dropped tenant is left in the shared table")
	})
}

// TestSharedTableTakesRowsOfPlacedTenantsOnly: in the shared-pool mode the
// tenant is a setting, which can name any ID. A tenant never created, or
// already dropped, writes nothing into a shared table: no row waits there
// for a future tenant of that ID, and none outlives a dropped one.
func TestSharedTableTakesRowsOfPlacedTenantsOnly(t *testing.T) {
	forModes(t, func(t *testing.T, e *env) {
		tbl := createShared(t, e, store.Table{Name: "notes", Columns: `body text NOT NULL`})
		ghost := freshID("ghost")
		ctxG := tenant.NewContext(t.Context(), ghost)
		_, err := e.db.Exec(ctxG, `INSERT INTO `+tbl+` (body) VALUES ('planted before the tenant exists')`)
		require.Error(t, err, "a tenant that does not exist writes nothing")
		assert.ErrorIs(t, err, store.ErrUnknownTenant, "store knows it is not placed")
		if e.mode == store.ModeSharedPool {
			// And the database refuses it too, for SQL that sets the
			// tenant itself on the shared login's connection.
			role, pw, err := store.SharedLogin(e.admin)
			require.NoError(t, err)
			sc, err := connectAs(t, e.d, role, pw)
			require.NoError(t, err)
			tx, err := sc.Begin(t.Context())
			require.NoError(t, err)
			_, err = tx.Exec(t.Context(), `SET LOCAL app.tenant_id = `+pgx.Identifier{ghost.String()}.Sanitize())
			require.NoError(t, err)
			_, err = tx.Exec(t.Context(), `INSERT INTO `+tbl+` (body) VALUES ('planted before the tenant exists')`)
			assert.Equal(t, "42501", pgCode(err), "the policy's check refuses an unplaced tenant: %v", err)
			_ = tx.Rollback(t.Context())
		}
		require.NoError(t, e.admin.CreateTenant(t.Context(), tenant.Info{ID: ghost, Name: "G", Tier: tenant.TierStandard}))
		var n int
		require.NoError(t, e.db.QueryRow(ctxG, `SELECT count(*) FROM `+tbl).Scan(&n))
		assert.Zero(t, n, "the new tenant inherits nothing")

		idD, ctxD := e.newTenant(t, "gone")
		_, err = e.db.Exec(ctxD, `INSERT INTO `+tbl+` (body) VALUES ('before the drop')`)
		require.NoError(t, err)
		require.NoError(t, e.admin.SetState(t.Context(), idD, tenant.StateDecommissioning))
		require.NoError(t, e.admin.DropTenant(t.Context(), idD))
		_, _ = e.db.Exec(ctxD, `SELECT 1`) // a connection ended by the drop
		_, err = e.db.Exec(ctxD, `INSERT INTO `+tbl+` (body) VALUES ('after the drop')`)
		require.Error(t, err, "a dropped tenant writes nothing")
		if e.mode == store.ModeSharedPool {
			// Still known to this DB as served by the shared pool (until
			// idle): the database's check refuses the write.
			assert.Equal(t, "42501", pgCode(err), "%v", err)
		}
		c := superuser(t, e.d)
		assert.Zero(t, count(t, c, `SELECT count(*) FROM `+tbl+` WHERE tenant_id = $1`, idD.String()), "no row of the dropped tenant is left")
	})
}
