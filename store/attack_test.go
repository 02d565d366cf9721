package store_test

// Attacks a hostile tenant (or one injected value in a tenant's
// statement) would try, through the public API and with the tenant's own
// credentials. Each names what it tries; each must leave the other
// tenant's canary unseen.

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// victim creates tenant B with a canary row, and an attacker A.
func victim(t *testing.T, e *env) (idA tenant.ID, ctxA context.Context, idB tenant.ID, ctxB context.Context, canary string) {
	t.Helper()
	idA, ctxA = e.newTenant(t, "atk")
	idB, ctxB = e.newTenant(t, "vic")
	canary = "CANARY-" + idB.String()
	e.insertReq(t, ctxB, "REQ-B-1", canary)
	e.insertReq(t, ctxA, "REQ-A-1", "attacker's own")
	return idA, ctxA, idB, ctxB, canary
}

// noCanary fails the test if any value in rows (as text) holds canary.
func noCanary(t *testing.T, canary string) func(rows pgx.Rows, err error) error {
	return func(rows pgx.Rows, err error) error { return checkNoCanary(t, canary, rows, err) }
}

func checkNoCanary(t *testing.T, canary string, rows pgx.Rows, err error) error {
	t.Helper()
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		vals, err := rows.Values()
		require.NoError(t, err)
		for _, v := range vals {
			require.NotContains(t, strings.ToLower(toText(v)), strings.ToLower(canary), "LEAK")
		}
	}
	return rows.Err()
}

func toText(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	default:
		return strings.TrimSpace(strings.ReplaceAll(reflect.ValueOf(v).String(), "\n", " "))
	}
}

func TestAttackInjectedRoleAndSettingSwitch(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		_, ctxA, idB, _, canary := victim(t, e)
		role, _, err := store.LoginOf(t.Context(), e.admin, idB)
		if !e.logins() {
			role = "whatever"
			err = nil
		}
		require.NoError(t, err)
		other := pgx.Identifier{idB.SchemaName(), "requirements"}.Sanitize()
		err = e.db.Tx(ctxA, func(tx *store.Tx) error {
			if _, err := tx.Exec(ctxA, `SELECT set_config('role', $1, true), set_config('app.tenant_id', $2, true)`, role, idB.String()); err != nil {
				return err
			}
			return noCanary(t, canary)(tx.Query(ctxA, `SELECT * FROM `+other))
		})
		require.Error(t, err, "the switch must fail")
		assert.Equal(t, "42501", pgCode(err), "permission denied: %v", err)

		// The same without the switch: B's schema by name. A tenant login
		// has no privilege on it (or, in a database of its own, no such
		// schema exists); the shared login has, and row level security
		// shows it none of B's rows.
		err = noCanary(t, canary)(e.db.Query(ctxA, `SELECT * FROM `+other))
		if e.logins() {
			require.Error(t, err)
			assert.Equal(t, e.foreignSchemaCode(), pgCode(err), "%v", err)
		} else {
			require.NoError(t, err)
		}
	})
}

func TestAttackOneInjectedValueQueryToXML(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		_, ctxA, idB, _, canary := victim(t, e)
		// The injected value closes the literal and unions in a query of
		// B's table run by query_to_xml: a statement built by string
		// concatenation, as a careless service would.
		inj := `x' UNION ALL SELECT query_to_xml('SELECT * FROM ` + idB.SchemaName() + `.requirements', true, false, '')::text --`
		err := noCanary(t, canary)(e.db.Query(ctxA, `SELECT requirement_text FROM requirements WHERE req_id = '`+inj+`'`))
		if e.logins() {
			require.Error(t, err)
			assert.Equal(t, e.foreignSchemaCode(), pgCode(err), "%v", err)
		} else {
			require.NoError(t, err, "RLS filters B's rows for tenant A")
		}
		// And the variant that tries to switch tenants from inside: the
		// shared-pool mode revokes set_config; a tenant login may set
		// app.tenant_id, which nothing reads.
		inj = `x' UNION ALL SELECT set_config('app.tenant_id', '` + idB.String() + `', true) || (SELECT string_agg(requirement_text, ',') FROM requirements) --`
		err = noCanary(t, canary)(e.db.Query(ctxA, `SELECT requirement_text FROM requirements WHERE req_id = '`+inj+`'`))
		if !e.logins() {
			require.Error(t, err)
			assert.Equal(t, "42501", pgCode(err), "%v", err)
		} else {
			require.NoError(t, err)
		}
		inj = `x' UNION ALL SELECT query_to_xml('SET app.tenant_id = ''` + idB.String() + `''', true, false, '')::text --`
		err = noCanary(t, canary)(e.db.Query(ctxA, `SELECT requirement_text FROM requirements WHERE req_id = '`+inj+`'`))
		require.Error(t, err)
	})
}

func TestAttackStackedStatementInOneValue(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		_, ctxA, idB, _, canary := victim(t, e)
		inj := `x'; SET app.tenant_id = '` + idB.String() + `'; SELECT requirement_text FROM ` + idB.SchemaName() + `.requirements; --`
		err := noCanary(t, canary)(e.db.Query(ctxA, `SELECT requirement_text FROM requirements WHERE req_id = '`+inj+`'`))
		require.Error(t, err, "one statement per Parse: the server refuses several")
	})
}

func TestAttackPreparedStatementHijack(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		_, ctxA, _, ctxB, canary := victim(t, e)
		// A plants a prepared statement on every connection it gets, that
		// would copy the rows of whoever runs it into a session setting.
		for range 8 {
			_, err := e.db.Exec(ctxA, `PREPARE hijack AS SELECT requirement_text FROM requirements`)
			if err != nil {
				assert.Equal(t, "42P05", pgCode(err), "only 'already exists' is expected: %v", err)
			}
		}
		for range 8 {
			err := noCanary(t, canary)(e.db.Query(ctxB, `EXECUTE hijack`))
			require.Error(t, err, "B must never run A's statement")
			assert.Equal(t, "26000", pgCode(err), "prepared statement does not exist: %v", err)
		}
		// And B's own queries still return B's rows.
		got, err := reqIDs(t, e.db, ctxB, `SELECT req_id FROM requirements`)
		require.NoError(t, err)
		assert.Equal(t, []string{"REQ-B-1"}, got)
	}, oneConn)
}

func TestAttackTempTablePlant(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		_, ctxA, _, _, _ := victim(t, e)
		for _, sql := range []string{
			`CREATE TEMP TABLE integrations (tenant_id text, secret text)`,
			`CREATE TABLE public.integrations (tenant_id text, secret text)`,
			`CREATE FUNCTION public.session_user() RETURNS name LANGUAGE sql AS 'SELECT ''x''::name'`,
			`CREATE FUNCTION pg_temp.current_tenant() RETURNS text LANGUAGE sql AS 'SELECT ''x'''`,
		} {
			_, err := e.db.Exec(ctxA, sql)
			require.Error(t, err, sql)
			assert.Equal(t, "42501", pgCode(err), "%s: %v", sql, err)
		}
	})
}

func TestAttackHeldCursor(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		_, ctxA, _, ctxB, canary := victim(t, e)
		// B leaves a cursor WITH HOLD over its rows on its connections.
		for range 4 {
			_, err := e.db.Exec(ctxB, `DECLARE held CURSOR WITH HOLD FOR SELECT requirement_text FROM requirements`)
			if pgCode(err) != "42P03" { // this connection has one already
				require.NoError(t, err)
			}
		}
		for range 8 {
			err := noCanary(t, canary)(e.db.Query(ctxA, `FETCH ALL FROM held`))
			require.Error(t, err, "A must never reach B's cursor")
			assert.Equal(t, "34000", pgCode(err), "cursor does not exist: %v", err)
		}
	}, oneConn)
}

func TestRowsDoNotHandOutTheirConnection(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		_, ctxA := e.newTenant(t, "rc")
		rows, err := e.db.Query(ctxA, `SELECT 1`)
		require.NoError(t, err)
		assert.Nil(t, rows.Conn(), "DB.Query rows")
		rows.Close()
		require.NoError(t, e.db.Tx(ctxA, func(tx *store.Tx) error {
			rows, err := tx.Query(ctxA, `SELECT 1`)
			if err != nil {
				return err
			}
			assert.Nil(t, rows.Conn(), "Tx.Query rows")
			rows.Close()
			b := &pgx.Batch{}
			b.Queue(`SELECT 1`)
			br := tx.SendBatch(ctxA, b)
			rows, err = br.Query()
			if err != nil {
				return err
			}
			assert.Nil(t, rows.Conn(), "Tx.SendBatch rows")
			rows.Close()
			return br.Close()
		}))
	})
}

func TestRequestPathHasNoAdministration(t *testing.T) {
	// The type request handlers get cannot change the directory: there is
	// no method to call, whatever the context holds.
	typ := reflect.TypeOf(&store.DB{})
	for _, name := range []string{"SetState", "CreateTenant", "DropTenant", "CreateSharedTable", "UnscopedPool", "Pool", "Admin"} {
		_, ok := typ.MethodByName(name)
		assert.False(t, ok, "store.DB must not have %s", name)
	}
	for _, name := range []string{"SetState", "CreateTenant", "DropTenant", "CreateSharedTable"} {
		_, ok := reflect.TypeOf(&store.Admin{}).MethodByName(name)
		assert.True(t, ok, "store.Admin has %s", name)
	}
}

func TestDirectoryReadIsTheContextsTenantOnly(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	idA, ctxA := e.newTenant(t, "da")
	info, err := e.db.Tenant(ctxA)
	require.NoError(t, err)
	assert.Equal(t, idA, info.ID)
	_, err = e.db.Tenant(t.Context())
	assert.ErrorIs(t, err, tenant.ErrNoTenant)
}

func TestTxNeedsItsTenantInTheContext(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		_, ctxA := e.newTenant(t, "ta")
		_, ctxB := e.newTenant(t, "tb")
		var kept *store.Tx
		err := e.db.Tx(ctxA, func(tx *store.Tx) error {
			kept = tx
			if _, err := tx.Exec(ctxB, `SELECT 1`); !assert.ErrorIs(t, err, tenant.ErrCrossTenant) {
				return err
			}
			if _, err := tx.Exec(t.Context(), `SELECT 1`); !assert.ErrorIs(t, err, tenant.ErrNoTenant) {
				return err
			}
			_, err := tx.Exec(ctxA, `SELECT 1`)
			return err
		})
		require.NoError(t, err)
		_, err = kept.Exec(ctxA, `SELECT 1`)
		assert.ErrorIs(t, err, pgx.ErrTxClosed)
	})
}

func TestAttackSignalAnotherTenantsBackend(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	_, ctxA, idB, ctxB, _ := victim(t, e)
	roleB, _, err := store.LoginOf(t.Context(), e.admin, idB)
	require.NoError(t, err)
	// B holds a connection busy; A tries to see its query and to end it.
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- e.db.Tx(ctxB, func(tx *store.Tx) error {
			if _, err := tx.Exec(ctxB, `SELECT requirement_text FROM requirements`); err != nil {
				return err
			}
			close(started)
			_, err := tx.Exec(ctxB, `SELECT pg_sleep(1), 'SECRET-QUERY-OF-B'`)
			return err
		})
	}()
	<-started
	var pid int
	var query string
	require.Eventually(t, func() bool {
		err := e.db.QueryRow(ctxA, `SELECT pid, coalesce(query, '') || coalesce(state, '') FROM pg_stat_activity WHERE usename = $1 LIMIT 1`, roleB).Scan(&pid, &query)
		return err == nil
	}, 5*time.Second, 20*time.Millisecond, "A sees that B's role is connected")
	assert.NotContains(t, query, "SECRET-QUERY-OF-B", "but not B's query text")
	for _, fn := range []string{"pg_cancel_backend", "pg_terminate_backend"} {
		_, err := e.db.Exec(ctxA, `SELECT `+fn+`($1)`, pid)
		require.Error(t, err, fn)
		assert.Equal(t, "42501", pgCode(err), "%s: %v", fn, err)
	}
	require.NoError(t, <-done, "B's work went through")
}

func TestAttackStackedStatementsInATransaction(t *testing.T) {
	forPlacements(t, func(t *testing.T, e *env) {
		_, ctxA, idB, _, canary := victim(t, e)
		// pgx sends an Exec without arguments over the simple protocol,
		// where one string may hold several statements: store must not.
		inj := `x'; SET LOCAL app.tenant_id = '` + idB.String() + `'; SET LOCAL search_path = ` + idB.SchemaName() + `; SELECT '`
		var leaked string
		err := e.db.Tx(ctxA, func(tx *store.Tx) error {
			if _, err := tx.Exec(ctxA, `SELECT 1`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctxA, `UPDATE requirements SET status = 'X' WHERE req_id = '`+inj+`'`); err != nil {
				return err
			}
			return tx.QueryRow(ctxA, `SELECT string_agg(requirement_text, ',') FROM requirements`).Scan(&leaked)
		})
		require.Error(t, err, "several statements in one string are refused")
		assert.NotContains(t, leaked, canary)
		_, err = e.db.Exec(ctxA, `UPDATE requirements SET status = 'X' WHERE req_id = '`+inj+`'`)
		require.Error(t, err, "DB.Exec too")
	})
}

func TestMistakenGrantDoesNotLeak(t *testing.T) {
	e := newEnv(t, store.ModeTenantLogin)
	idA, ctxA, idB, _, canary := victim(t, e)
	roleA, _, err := store.LoginOf(t.Context(), e.admin, idA)
	require.NoError(t, err)
	// An operator grants A's login B's schema and table by mistake: row
	// level security still shows A none of B's rows, and says why.
	schemaB := pgx.Identifier{idB.SchemaName()}.Sanitize()
	e.d.Exec(t, `GRANT USAGE ON SCHEMA `+schemaB+` TO `+pgx.Identifier{roleA}.Sanitize()+`;
		GRANT SELECT ON ALL TABLES IN SCHEMA `+schemaB+` TO `+pgx.Identifier{roleA}.Sanitize())
	err = noCanary(t, canary)(e.db.Query(ctxA, `SELECT * FROM `+schemaB+`.requirements`))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no tenant", "the policy of B's table refuses A's session: %v", err)
}
