package store_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/storetest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

var ksSeq atomic.Int64

// ksEnv is an env with the admin's read-write keyset store, and a superuser
// pool that looks at the keyset tables behind the store's back.
type ksEnv struct {
	*env
	ks *store.Keysets
	su *pgxpool.Pool
}

// newKsEnv opens an env (keysets live in the control plane, whatever the
// mode) with its admin's keyset store.
func newKsEnv(t testing.TB) *ksEnv {
	t.Helper()
	e := newEnv(t, store.ModeTenantLogin)
	su, err := pgxpool.New(t.Context(), e.d.AdminURL())
	require.NoError(t, err)
	t.Cleanup(su.Close)
	return &ksEnv{env: e, ks: e.admin.Keysets(), su: su}
}

// grantedKeysets returns a keyset store whose pool connects as a new
// role holding only what store.GrantKeysets grants with access (CONNECT
// included: OpenAdmin revoked it from PUBLIC).
func (e *ksEnv) grantedKeysets(t testing.TB, access store.KeysetAccess) (*store.Keysets, string) {
	t.Helper()
	name := fmt.Sprintf("keysets%d", ksSeq.Add(1))
	url := e.d.CreateRole(t, name, "NOINHERIT")
	role := e.d.Prefix() + name
	require.NoError(t, store.GrantKeysets(t.Context(), e.su, role, access))
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return store.NewKeysets(pool), role
}

// ksTenant returns a tenant ID no other test uses.
func ksTenant(name string) tenant.ID {
	return tenant.MustParseID(fmt.Sprintf("ks_%s%d", name, ksSeq.Add(1)))
}

func ksSet(id tenant.ID, p keys.Purpose, kek keys.URI, version int64) keys.WrappedKeyset {
	return keys.WrappedKeyset{Tenant: id, Purpose: p, KEKURI: kek, KEKKind: keys.KEKPlatform, Wrapped: []byte("wrapped:" + id.String() + "/" + string(p)), Version: version}
}

// count returns the keysets and tombstones of id in the tables.
func (e *ksEnv) count(t testing.TB, id tenant.ID) (keysets, tombstones int) {
	t.Helper()
	require.NoError(t, e.su.QueryRow(t.Context(), `SELECT
		(SELECT count(*) FROM tenancy.tenant_keysets WHERE tenant_id = $1),
		(SELECT count(*) FROM tenancy.tenant_keyset_tombstones WHERE tenant_id = $1)`, id.String()).Scan(&keysets, &tombstones))
	return keysets, tombstones
}

// store.Keysets keeps the keys.Store contract, on
// the package's shared database: through the admin's pool, and through a
// role holding only what GrantKeysets(KeysetsReadWrite) grants.
func TestKeysetsKeepTheStoreContract(t *testing.T) {
	e := newKsEnv(t)
	storetest.TestStore(t, func(*testing.T) keys.Store { return e.ks })
}

func TestGrantKeysetsReadWriteKeepsTheStoreContract(t *testing.T) {
	e := newKsEnv(t)
	rw, _ := e.grantedKeysets(t, store.KeysetsReadWrite)
	storetest.TestStore(t, func(*testing.T) keys.Store { return rw })
}

// The tables behind the store hold what it says: a failed Put leaves no
// row, a Delete leaves no keyset row and exactly one tombstone row (after
// a second Delete, a Put after it, and concurrent Puts and Deletes too).
func TestKeysetsTablesHoldWhatTheStoreSays(t *testing.T) {
	e := newKsEnv(t)
	ctx, id := t.Context(), ksTenant("rows")
	require.NoError(t, e.ks.Put(ctx, ksSet(id, keys.PurposeAudit, "local:///k", 0)))
	err := e.ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///k", 0), ksSet(id, keys.PurposeBlob, "local:///k", 0),
		ksSet(id, keys.PurposeAudit, "local:///k", 0))
	require.ErrorIs(t, err, keys.ErrConflict)
	n, _ := e.count(t, id)
	require.Equal(t, 1, n, "a failed Put left rows behind")

	for range 2 {
		_, err = e.ks.Delete(ctx, id)
		require.NoError(t, err)
		n, tombs := e.count(t, id)
		require.Equal(t, 0, n)
		require.Equal(t, 1, tombs)
	}
	require.ErrorIs(t, e.ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///k", 0)), keys.ErrKeyDestroyed)
	n, _ = e.count(t, id)
	require.Equal(t, 0, n)

	for range 10 {
		id := ksTenant("race")
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				err := e.ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///k", 0), ksSet(id, keys.PurposeBlob, "local:///k", 0))
				if err != nil && !errors.Is(err, keys.ErrConflict) && !errors.Is(err, keys.ErrKeyDestroyed) {
					t.Error(err)
				}
			})
			wg.Go(func() {
				if _, err := e.ks.Delete(ctx, id); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		n, tombs := e.count(t, id)
		require.Equal(t, 1, tombs)
		require.Equal(t, 0, n, "keysets written beside a tombstone")
	}
}

func TestKeysetsRejectInvalidInputNamingTheField(t *testing.T) {
	e := newKsEnv(t)
	ctx, id := t.Context(), ksTenant("bad")
	for name, tc := range map[string]struct {
		w     keys.WrappedKeyset
		field string
	}{
		"zero tenant":   {ksSet(tenant.ID{}, keys.PurposeData, "local:///k", 0), "Tenant"},
		"bad purpose":   {ksSet(id, "backup", "local:///k", 0), "Purpose"},
		"empty KEK":     {ksSet(id, keys.PurposeData, "", 0), "KEKURI"},
		"empty wrapped": {keys.WrappedKeyset{Tenant: id, Purpose: keys.PurposeData, KEKURI: "local:///k", KEKKind: keys.KEKPlatform}, "Wrapped"},
		"no KEK kind":   {keys.WrappedKeyset{Tenant: id, Purpose: keys.PurposeData, KEKURI: "local:///k", Wrapped: []byte{1}}, "KEKKind"},
		"neg version":   {ksSet(id, keys.PurposeData, "local:///k", -1), "Version"},
	} {
		t.Run(name, func(t *testing.T) {
			err := e.ks.Put(ctx, tc.w)
			require.ErrorIs(t, err, keys.ErrInvalidArgument)
			require.Contains(t, err.Error(), tc.field)
		})
	}
	err := e.ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///k", 0), ksSet(id, keys.PurposeData, "local:///k", 0))
	require.ErrorIs(t, err, keys.ErrInvalidArgument)
	_, err = e.ks.Get(ctx, tenant.ID{}, keys.PurposeData)
	require.ErrorIs(t, err, keys.ErrInvalidArgument)
	_, err = e.ks.Delete(ctx, tenant.ID{})
	require.ErrorIs(t, err, keys.ErrInvalidArgument)
	_, err = e.ks.List(ctx, keys.ListOptions{})
	require.ErrorIs(t, err, keys.ErrInvalidArgument)
	n, tombs := e.count(t, id)
	require.Zero(t, n+tombs, "a rejected call wrote")
}

// EnsureKeysetsSchema may run again, from several processes at once, on a
// database whose control plane already holds the tables.
func TestKeysetsSchemaIsIdempotentAndConstrained(t *testing.T) {
	e := newKsEnv(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := store.EnsureKeysetsSchema(ctx, e.su); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// The database refuses rows the Go code would never write (the first
	// row is a good one, so each other fails for its own fault).
	good := `INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, kek_kind, wrapped, version) VALUES ('constrained', 'data', 'k', 'platform', '\x01', 1)`
	_, err := e.su.Exec(ctx, good)
	require.NoError(t, err)
	_, err = e.su.Exec(ctx, `DELETE FROM tenancy.tenant_keysets WHERE tenant_id = 'constrained'`)
	require.NoError(t, err)
	for _, sql := range []string{
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, kek_kind, wrapped, version) VALUES ('Bad', 'data', 'k', 'platform', '\x01', 1)`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, kek_kind, wrapped, version) VALUES ('ok', 'other', 'k', 'platform', '\x01', 1)`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, kek_kind, wrapped, version) VALUES ('ok', 'data', '', 'platform', '\x01', 1)`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, kek_kind, wrapped, version) VALUES ('ok', 'data', 'k', 'platform', '', 1)`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, kek_kind, wrapped, version) VALUES ('ok', 'data', 'k', 'platform', '\x01', 0)`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, kek_kind, wrapped, version) VALUES ('ok', 'data', 'k', 'Platform', '\x01', 1)`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, wrapped, version) VALUES ('ok', 'data', 'k', '\x01', 1)`,
		`INSERT INTO tenancy.tenant_keyset_tombstones (tenant_id) VALUES ('Bad')`,
	} {
		_, err := e.su.Exec(ctx, sql)
		require.Error(t, err, sql)
	}
}

// A role holding only what GrantKeysets(KeysetsReadWrite) grants (and
// CONNECT) can run the whole key lifecycle: provision, rotate, list, find
// the master keys in use, shred.
func TestGrantKeysetsReadWriteIsEnoughForTheLifecycle(t *testing.T) {
	e := newKsEnv(t)
	rw, _ := e.grantedKeysets(t, store.KeysetsReadWrite)
	ctx, id := t.Context(), ksTenant("rw")
	kek := keys.URI("local:///granted/" + id.String())
	require.NoError(t, rw.Put(ctx, ksSet(id, keys.PurposeData, kek, 0), ksSet(id, keys.PurposeBlob, kek, 0)))
	w, err := rw.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)
	w.Wrapped = []byte("rotated")
	require.NoError(t, rw.Put(ctx, w))
	page, err := rw.List(ctx, keys.ListOptions{KEKURI: kek, Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 2)
	_, err = rw.Delete(ctx, id)
	require.NoError(t, err)
	_, err = rw.Get(ctx, id, keys.PurposeData)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
}

// A role holding only what GrantKeysets(KeysetsRead) grants serves tenants
// (Get, List) but can neither overwrite nor shred their keys.
func TestGrantKeysetsReadServesButCannotWriteOrShred(t *testing.T) {
	e := newKsEnv(t)
	ro, role := e.grantedKeysets(t, store.KeysetsRead)
	ctx, id := t.Context(), ksTenant("ro")
	require.NoError(t, e.ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///k", 0)))
	w, err := ro.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)
	_, err = ro.List(ctx, keys.ListOptions{Limit: 1})
	require.NoError(t, err)

	w.Wrapped = []byte("overwritten")
	err = ro.Put(ctx, w)
	require.Equal(t, "42501", pgCode(err), "permission denied: %v", err)
	err = ro.Put(ctx, ksSet(id, keys.PurposeBlob, "local:///k", 0))
	require.Equal(t, "42501", pgCode(err), "permission denied: %v", err)
	_, err = ro.Delete(ctx, id)
	require.Equal(t, "42501", pgCode(err), "permission denied: %v", err)
	n, tombs := e.count(t, id)
	require.Equal(t, 1, n)
	require.Zero(t, tombs)
	got, err := e.ks.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)
	require.Equal(t, ksSet(id, keys.PurposeData, "", 0).Wrapped, got.Wrapped, "nothing changed")

	require.ErrorIs(t, store.GrantKeysets(ctx, e.su, role, 0), store.ErrInvalidConfig)
	require.ErrorIs(t, store.GrantKeysets(ctx, e.su, "", store.KeysetsRead), store.ErrInvalidConfig)
}

// Keyset tables made before master keys had kinds (a tenant_kek boolean,
// true for a key the provisioning request named, which Shred destroyed)
// are converted by EnsureKeysetsSchema: those keys become customer keys,
// which the platform never destroys, and the tombstones forget them.
func TestKeysetsSchemaConvertsTenantKEKToKinds(t *testing.T) {
	d := pgtest.DB(t).NewDatabase(t)
	ctx := t.Context()
	su, err := pgxpool.New(ctx, d.AdminURL())
	require.NoError(t, err)
	t.Cleanup(su.Close)
	for _, sql := range []string{
		`CREATE SCHEMA tenancy`,
		`CREATE TABLE tenancy.tenant_keysets (
			tenant_id text COLLATE "C" NOT NULL, purpose text COLLATE "C" NOT NULL,
			kek_uri text NOT NULL, tenant_kek boolean NOT NULL DEFAULT false,
			wrapped bytea NOT NULL, version bigint NOT NULL,
			created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (tenant_id, purpose))`,
		`CREATE TABLE tenancy.tenant_keyset_tombstones (
			tenant_id text COLLATE "C" PRIMARY KEY, destroyed_at timestamptz NOT NULL DEFAULT now(),
			tenant_keks text[] NOT NULL DEFAULT '{}')`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, tenant_kek, wrapped, version) VALUES
			('plat', 'data', 'local:///platform', false, '\x01', 1),
			('own', 'data', 'aws-kms://arn:aws:kms:eu-west-1:1:key/k', true, '\x02', 3)`,
		`INSERT INTO tenancy.tenant_keyset_tombstones (tenant_id, tenant_keks) VALUES ('gone', '{aws-kms://arn:aws:kms:eu-west-1:1:key/g}')`,
	} {
		_, err := su.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}
	for range 2 { // and again: idempotent
		require.NoError(t, store.EnsureKeysetsSchema(ctx, su))
	}
	ks := store.NewKeysets(su)
	plat, err := ks.Get(ctx, tenant.MustParseID("plat"), keys.PurposeData)
	require.NoError(t, err)
	assert.Equal(t, keys.KEKPlatform, plat.KEKKind)
	own, err := ks.Get(ctx, tenant.MustParseID("own"), keys.PurposeData)
	require.NoError(t, err)
	assert.Equal(t, keys.KEKCustomer, own.KEKKind)
	assert.EqualValues(t, 3, own.Version)
	tomb, err := ks.Delete(ctx, tenant.MustParseID("gone"))
	require.NoError(t, err)
	assert.Empty(t, tomb.TenantKEKs, "a customer key named by an old tombstone is not the platform's to destroy")
	var hasOld bool
	require.NoError(t, su.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'tenancy.tenant_keysets'::regclass AND attname = 'tenant_kek' AND NOT attisdropped)`).Scan(&hasOld))
	assert.False(t, hasOld, "tenant_kek is dropped")
	_, err = su.Exec(ctx, `INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, wrapped, version) VALUES ('nokind', 'data', 'k', '\x01', 1)`)
	require.Error(t, err, "a row without a kind is refused")
}
