package store_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

// OpenAdmin creates the keyset tables; Admin.Keysets writes them and
// DB.Keysets, on the platform role, serves from them but can neither
// overwrite, provision nor shred.
func TestDBKeysetsServeButCannotWriteOrShred(t *testing.T) {
	forModes(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		id := ksTenant("wiring")
		kek := keys.URI("local:///wiring/" + id.String())
		w := keys.WrappedKeyset{Tenant: id, Purpose: keys.PurposeData, KEKURI: kek, KEKKind: keys.KEKPlatform, Wrapped: []byte{1, 2, 3}}
		require.NoError(t, e.admin.Keysets().Put(ctx, w))

		read := e.db.Keysets()
		got, err := read.Get(ctx, id, keys.PurposeData)
		require.NoError(t, err)
		assert.Equal(t, []byte{1, 2, 3}, got.Wrapped)
		page, err := read.List(ctx, keys.ListOptions{KEKURI: kek, Limit: 10})
		require.NoError(t, err)
		assert.Len(t, page, 1)

		got.Wrapped = []byte("overwritten")
		err = read.Put(ctx, got) // UPDATE
		assert.Equal(t, "42501", pgCode(err), "permission denied: %v", err)
		err = read.Put(ctx, keys.WrappedKeyset{Tenant: id, Purpose: keys.PurposeBlob, KEKURI: kek, KEKKind: keys.KEKPlatform, Wrapped: []byte{4}}) // INSERT
		assert.Equal(t, "42501", pgCode(err), "permission denied: %v", err)
		_, err = read.Delete(ctx, id) // DELETE and the tombstone's INSERT
		assert.Equal(t, "42501", pgCode(err), "permission denied: %v", err)
		_, err = read.Delete(ctx, ksTenant("wiringnever")) // the tombstone's INSERT alone
		assert.Equal(t, "42501", pgCode(err), "permission denied: %v", err)

		again, err := e.admin.Keysets().Get(ctx, id, keys.PurposeData)
		require.NoError(t, err)
		assert.Equal(t, []byte{1, 2, 3}, again.Wrapped, "nothing changed")
		assert.EqualValues(t, 1, again.Version)
		_, err = e.admin.Keysets().Get(ctx, id, keys.PurposeBlob)
		assert.ErrorIs(t, err, keys.ErrNoKeys)
	})
}

// The platform role's own connection, used directly, holds SELECT on the
// keyset tables and nothing more: it cannot write keysets, shred a tenant,
// nor remove a tombstone to provision a shredded tenant again.
func TestPlatformRoleOnlyReadsKeysets(t *testing.T) {
	forModes(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		live, shredded := ksTenant("plive"), ksTenant("pshred")
		require.NoError(t, e.admin.Keysets().Put(ctx, ksSet(live, keys.PurposeData, "local:///k", 0)))
		_, err := e.admin.Keysets().Delete(ctx, shredded)
		require.NoError(t, err)

		pool, err := pgxpool.New(ctx, platform(t, e.d))
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tenancy.tenant_keysets WHERE tenant_id = $1`, live.String()).Scan(&n))
		assert.Equal(t, 1, n)
		for _, stmt := range []struct {
			sql string
			id  tenant.ID
		}{
			{`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, wrapped, version) VALUES ($1, 'blob', 'k', '\x01', 1)`, live},
			{`UPDATE tenancy.tenant_keysets SET wrapped = '\x00' WHERE tenant_id = $1`, live},
			{`DELETE FROM tenancy.tenant_keysets WHERE tenant_id = $1`, live},
			{`INSERT INTO tenancy.tenant_keyset_tombstones (tenant_id) VALUES ($1)`, live},
			{`UPDATE tenancy.tenant_keyset_tombstones SET tenant_keks = '{}' WHERE tenant_id = $1`, shredded},
			{`DELETE FROM tenancy.tenant_keyset_tombstones WHERE tenant_id = $1`, shredded},
		} {
			_, err := pool.Exec(ctx, stmt.sql, stmt.id.String())
			assert.Equal(t, "42501", pgCode(err), "%s: %v", stmt.sql, err)
		}
		for _, table := range []string{"tenancy.tenant_keysets", "tenancy.tenant_keyset_tombstones"} {
			_, err := pool.Exec(ctx, `TRUNCATE `+table)
			assert.Equal(t, "42501", pgCode(err), "TRUNCATE %s: %v", table, err)
		}

		got, err := e.admin.Keysets().Get(ctx, live, keys.PurposeData)
		require.NoError(t, err)
		assert.Equal(t, ksSet(live, keys.PurposeData, "", 0).Wrapped, got.Wrapped)
		_, err = e.admin.Keysets().Get(ctx, shredded, keys.PurposeData)
		assert.ErrorIs(t, err, keys.ErrKeyDestroyed)
	})
}

// Tenant SQL reaches no wrapped keyset and no tombstone, its own or
// another tenant's.
func TestTenantSQLCannotReachKeysets(t *testing.T) {
	forModes(t, func(t *testing.T, e *env) {
		idA, ctxA := e.newTenant(t, "ksa")
		idB, _ := e.newTenant(t, "ksb")
		for _, id := range []tenant.ID{idA, idB} {
			require.NoError(t, e.admin.Keysets().Put(t.Context(), ksSet(id, keys.PurposeData, "local:///k", 0)))
		}
		_, err := reqIDs(t, e.db, ctxA, `SELECT req_id FROM requirements`)
		require.NoError(t, err, "the tenant's own tables")
		for _, sql := range []string{
			`SELECT wrapped FROM tenancy.tenant_keysets`,
			`SELECT tenant_id FROM tenancy.tenant_keyset_tombstones`,
			`DELETE FROM tenancy.tenant_keysets WHERE tenant_id = '` + idB.String() + `'`,
			`INSERT INTO tenancy.tenant_keyset_tombstones (tenant_id) VALUES ('` + idB.String() + `')`,
		} {
			rows, err := e.db.Query(ctxA, sql)
			if err == nil {
				rows.Close()
				err = rows.Err()
			}
			assert.Equal(t, "42501", pgCode(err), "%s: %v", sql, err)
		}
		got, err := e.admin.Keysets().Get(t.Context(), idB, keys.PurposeData)
		require.NoError(t, err)
		assert.EqualValues(t, 1, got.Version)
	})
}
