package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/keys"
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

func ksSet(id tenant.ID, p keys.Purpose, kek string, version int64) keys.WrappedKeyset {
	return keys.WrappedKeyset{Tenant: id, Purpose: p, KEKURI: kek, Wrapped: []byte("wrapped:" + id.String() + "/" + string(p)), Version: version}
}

// count returns the keysets and tombstones of id in the tables.
func (e *ksEnv) count(t testing.TB, id tenant.ID) (keysets, tombstones int) {
	t.Helper()
	require.NoError(t, e.su.QueryRow(t.Context(), `SELECT
		(SELECT count(*) FROM tenancy.tenant_keysets WHERE tenant_id = $1),
		(SELECT count(*) FROM tenancy.tenant_keyset_tombstones WHERE tenant_id = $1)`, id.String()).Scan(&keysets, &tombstones))
	return keysets, tombstones
}

func TestKeysetsPutCreatesAndGetReadsBack(t *testing.T) {
	e := newKsEnv(t)
	ctx, id := t.Context(), ksTenant("a")
	var sets []keys.WrappedKeyset
	for _, p := range keys.Purposes() {
		sets = append(sets, ksSet(id, p, "local:///k", 0))
	}
	sets[2].TenantKEK = true
	require.NoError(t, e.ks.Put(ctx, sets...))
	for i, p := range keys.Purposes() {
		w, err := e.ks.Get(ctx, id, p)
		require.NoError(t, err)
		require.Equal(t, id, w.Tenant)
		require.Equal(t, p, w.Purpose)
		require.Equal(t, "local:///k", w.KEKURI)
		require.Equal(t, i == 2, w.TenantKEK)
		require.Equal(t, sets[i].Wrapped, w.Wrapped)
		require.EqualValues(t, 1, w.Version)
		require.False(t, w.CreatedAt.IsZero())
		require.False(t, w.UpdatedAt.IsZero())
	}
}

func TestKeysetsPutIsAllOrNothing(t *testing.T) {
	e := newKsEnv(t)
	ctx, id := t.Context(), ksTenant("atomic")
	require.NoError(t, e.ks.Put(ctx, ksSet(id, keys.PurposeAudit, "local:///k", 0)))
	// data and blob are new, audit exists: nothing may be written.
	err := e.ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///k", 0), ksSet(id, keys.PurposeBlob, "local:///k", 0),
		ksSet(id, keys.PurposeAudit, "local:///k", 0))
	require.ErrorIs(t, err, keys.ErrConflict)
	n, _ := e.count(t, id)
	require.Equal(t, 1, n, "a failed Put left rows behind")
}

func TestKeysetsPutCompareAndSwapsOnVersion(t *testing.T) {
	e := newKsEnv(t)
	ctx, id := t.Context(), ksTenant("cas")
	require.NoError(t, e.ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///old", 0)))
	w, err := e.ks.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)

	w.KEKURI, w.Wrapped = "local:///new", []byte("rewrapped")
	require.NoError(t, e.ks.Put(ctx, w))
	got, err := e.ks.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)
	require.EqualValues(t, 2, got.Version)
	require.Equal(t, "local:///new", got.KEKURI)
	require.Equal(t, []byte("rewrapped"), got.Wrapped)
	require.False(t, got.UpdatedAt.Before(got.CreatedAt))

	// w still says version 1: a stale writer loses.
	w.Wrapped = []byte("stale")
	require.ErrorIs(t, e.ks.Put(ctx, w), keys.ErrConflict)
	// An update of a keyset that does not exist loses too.
	require.ErrorIs(t, e.ks.Put(ctx, ksSet(id, keys.PurposeBlob, "local:///k", 3)), keys.ErrConflict)
	// Creating one that exists loses.
	require.ErrorIs(t, e.ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///k", 0)), keys.ErrConflict)
	got, err = e.ks.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)
	require.Equal(t, []byte("rewrapped"), got.Wrapped)
}

func TestKeysetsGetTellsDestroyedFromNeverProvisioned(t *testing.T) {
	e := newKsEnv(t)
	ctx := t.Context()
	never, shredded := ksTenant("never"), ksTenant("shredded")
	_, err := e.ks.Get(ctx, never, keys.PurposeData)
	require.ErrorIs(t, err, keys.ErrNoKeys)
	require.NotErrorIs(t, err, keys.ErrKeyDestroyed)

	require.NoError(t, e.ks.Put(ctx, ksSet(shredded, keys.PurposeData, "local:///k", 0)))
	_, err = e.ks.Delete(ctx, shredded)
	require.NoError(t, err)
	for _, p := range keys.Purposes() {
		_, err = e.ks.Get(ctx, shredded, p)
		require.ErrorIs(t, err, keys.ErrKeyDestroyed)
		require.NotErrorIs(t, err, keys.ErrNoKeys)
	}
}

func TestKeysetsDeleteRecordsTombstoneWithTenantKEKsIdempotently(t *testing.T) {
	e := newKsEnv(t)
	ctx, id := t.Context(), ksTenant("del")
	sets := []keys.WrappedKeyset{
		ksSet(id, keys.PurposeData, "aws-kms://own-b", 0),
		ksSet(id, keys.PurposeBlob, "aws-kms://own-a", 0),
		ksSet(id, keys.PurposeAudit, "aws-kms://own-b", 0),
	}
	for i := range sets {
		sets[i].TenantKEK = true
	}
	require.NoError(t, e.ks.Put(ctx, sets...))

	t1, err := e.ks.Delete(ctx, id)
	require.NoError(t, err)
	require.Equal(t, id, t1.Tenant)
	require.Equal(t, []string{"aws-kms://own-a", "aws-kms://own-b"}, t1.TenantKEKs)
	require.False(t, t1.DestroyedAt.IsZero())
	n, tombs := e.count(t, id)
	require.Equal(t, 0, n)
	require.Equal(t, 1, tombs)

	t2, err := e.ks.Delete(ctx, id)
	require.NoError(t, err)
	require.Equal(t, t1.TenantKEKs, t2.TenantKEKs)
	require.True(t, t1.DestroyedAt.Equal(t2.DestroyedAt))

	// A shredded tenant is never provisioned again.
	require.ErrorIs(t, e.ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///k", 0)), keys.ErrKeyDestroyed)
	n, _ = e.count(t, id)
	require.Equal(t, 0, n)

	// Platform-wrapped keysets leave no KEK to destroy; a tenant that never
	// had keys gets a tombstone too.
	plat := ksTenant("plat")
	require.NoError(t, e.ks.Put(ctx, ksSet(plat, keys.PurposeData, "local:///platform", 0)))
	tp, err := e.ks.Delete(ctx, plat)
	require.NoError(t, err)
	require.Empty(t, tp.TenantKEKs)
	never := ksTenant("never")
	_, err = e.ks.Delete(ctx, never)
	require.NoError(t, err)
	_, err = e.ks.Get(ctx, never, keys.PurposeData)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
}

func TestKeysetsConcurrentPutAndDeleteNeverLeaveKeysBesideATombstone(t *testing.T) {
	e := newKsEnv(t)
	ctx := t.Context()
	for range 20 {
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

func TestKeysetsListPaginatesInOrderAndFiltersByKEK(t *testing.T) {
	e := newKsEnv(t)
	ctx := t.Context()
	// A KEK URI unique to this test keeps other tests' rows out of the list.
	kekA := fmt.Sprintf("local:///list-a-%d", ksSeq.Add(1))
	kekB := kekA + "-b"
	var want []string
	for i := range 5 {
		id := ksTenant(fmt.Sprintf("list%c", 'e'-i)) // created out of order
		for _, p := range keys.Purposes() {
			kek := kekA
			if i == 2 && p == keys.PurposeBlob {
				kek = kekB
			}
			require.NoError(t, e.ks.Put(ctx, ksSet(id, p, kek, 0)))
			if kek == kekA {
				want = append(want, id.String()+"/"+string(p))
			}
		}
	}
	var got []string
	opts := keys.ListOptions{KEKURI: kekA, Limit: 4}
	for {
		page, err := e.ks.List(ctx, opts)
		require.NoError(t, err)
		for _, w := range page {
			require.Equal(t, kekA, w.KEKURI)
			require.NotEmpty(t, w.Wrapped)
			got = append(got, w.Tenant.String()+"/"+string(w.Purpose))
			opts.AfterTenant, opts.AfterPurpose = w.Tenant, w.Purpose
		}
		if len(page) < opts.Limit {
			break
		}
	}
	require.Len(t, got, len(want))
	require.ElementsMatch(t, want, got)
	require.IsIncreasing(t, got, "List must return (tenant, purpose) in byte order")

	page, err := e.ks.List(ctx, keys.ListOptions{KEKURI: kekB, Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 1)

	all, err := e.ks.List(ctx, keys.ListOptions{Limit: 1})
	require.NoError(t, err)
	require.Len(t, all, 1)
}

// A KEK URI prefix selects the keysets of every URI that starts with it,
// byte by byte: LIKE wildcards and collation play no part.
func TestKeysetsListFiltersByKEKPrefix(t *testing.T) {
	e := newKsEnv(t)
	ctx := t.Context()
	base := fmt.Sprintf("pkcs11:token=p%d;object=k?module-path=/m&pin-source=", ksSeq.Add(1))
	keks := map[string]string{
		"file": base + "file:/run/pin",
		"env":  base + "env:PIN",
		"wild": base[:len(base)-1] + "%_",                  // shares base minus its last byte
		"case": strings.ToUpper(base[:7]) + base[7:] + "x", // differs only in case
	}
	ids := map[string]tenant.ID{}
	for name, kek := range keks {
		ids[name] = ksTenant("prefix")
		require.NoError(t, e.ks.Put(ctx, ksSet(ids[name], keys.PurposeData, kek, 0)))
	}
	list := func(opts keys.ListOptions) []tenant.ID {
		t.Helper()
		opts.Limit = 100
		page, err := e.ks.List(ctx, opts)
		require.NoError(t, err)
		var out []tenant.ID
		for _, w := range page {
			require.True(t, strings.HasPrefix(w.KEKURI, opts.KEKURIPrefix), w.KEKURI)
			out = append(out, w.Tenant)
		}
		return out
	}
	require.ElementsMatch(t, []tenant.ID{ids["file"], ids["env"]}, list(keys.ListOptions{KEKURIPrefix: base}))
	require.ElementsMatch(t, []tenant.ID{ids["env"]}, list(keys.ListOptions{KEKURIPrefix: base, KEKURI: keks["env"]}))
	require.Empty(t, list(keys.ListOptions{KEKURIPrefix: base, KEKURI: keks["wild"]}))
	require.Empty(t, list(keys.ListOptions{KEKURIPrefix: base[:len(base)-1] + "_"}), "_ is not a wildcard")
	require.ElementsMatch(t, []tenant.ID{ids["wild"]}, list(keys.ListOptions{KEKURIPrefix: base[:len(base)-1] + "%"}), "% is not a wildcard")
	require.Empty(t, list(keys.ListOptions{KEKURIPrefix: strings.ToUpper(base)}), "the comparison is case-sensitive")
	// Paginated: the cursor and the prefix together.
	first, err := e.ks.List(ctx, keys.ListOptions{KEKURIPrefix: base, Limit: 1})
	require.NoError(t, err)
	require.Len(t, first, 1)
	rest, err := e.ks.List(ctx, keys.ListOptions{KEKURIPrefix: base, AfterTenant: first[0].Tenant, AfterPurpose: first[0].Purpose, Limit: 10})
	require.NoError(t, err)
	require.Len(t, rest, 1)
	require.NotEqual(t, first[0].Tenant, rest[0].Tenant)
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
		"empty wrapped": {keys.WrappedKeyset{Tenant: id, Purpose: keys.PurposeData, KEKURI: "local:///k"}, "Wrapped"},
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
	// The database refuses rows the Go code would never write.
	for _, sql := range []string{
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, wrapped, version) VALUES ('Bad', 'data', 'k', '\x01', 1)`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, wrapped, version) VALUES ('ok', 'other', 'k', '\x01', 1)`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, wrapped, version) VALUES ('ok', 'data', '', '\x01', 1)`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, wrapped, version) VALUES ('ok', 'data', 'k', '', 1)`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, wrapped, version) VALUES ('ok', 'data', 'k', '\x01', 0)`,
		`INSERT INTO tenancy.tenant_keyset_tombstones (tenant_id) VALUES ('Bad')`,
	} {
		_, err := e.su.Exec(ctx, sql)
		require.Error(t, err, sql)
	}
}

// The store is a dumb holder of wrapped bytes: what goes in comes out byte
// for byte, including bytes that are not valid UTF-8.
func TestKeysetsKeepWrappedBytesExactly(t *testing.T) {
	e := newKsEnv(t)
	ctx, id := t.Context(), ksTenant("bytes")
	w := ksSet(id, keys.PurposeData, "local:///k", 0)
	w.Wrapped = []byte{0, 0xff, 0xfe, '\'', '\\', 0}
	require.NoError(t, e.ks.Put(ctx, w))
	got, err := e.ks.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)
	require.True(t, bytes.Equal(w.Wrapped, got.Wrapped))
}

func TestKeysetsKEKURIsListsDistinctKeysOfOtherTenants(t *testing.T) {
	e := newKsEnv(t)
	ctx, a, b := t.Context(), ksTenant("kekuria"), ksTenant("kekurib")
	ka, kb := "local:///kekuris/"+a.String(), "local:///kekuris/"+b.String()
	var sets []keys.WrappedKeyset
	for _, p := range keys.Purposes() {
		sets = append(sets, ksSet(a, p, ka, 0))
	}
	require.NoError(t, e.ks.Put(ctx, sets...))
	require.NoError(t, e.ks.Put(ctx, ksSet(b, keys.PurposeData, kb, 0), ksSet(b, keys.PurposeBlob, ka, 0)))

	all, err := e.ks.KEKURIs(ctx, tenant.ID{})
	require.NoError(t, err)
	require.Contains(t, all, ka)
	require.Contains(t, all, kb)
	seen := map[string]int{}
	for _, u := range all {
		seen[u]++
	}
	require.Equal(t, 1, seen[ka], "distinct")

	notA, err := e.ks.KEKURIs(ctx, a)
	require.NoError(t, err)
	require.Contains(t, notA, kb)
	require.Contains(t, notA, ka, "b's blob keyset is on a's key")
	notB, err := e.ks.KEKURIs(ctx, b)
	require.NoError(t, err)
	require.NotContains(t, notB, kb, "only b uses kb")
}

// A role holding only what GrantKeysets(KeysetsReadWrite) grants (and
// CONNECT) can run the whole key lifecycle: provision, rotate, list, find
// the master keys in use, shred.
func TestGrantKeysetsReadWriteIsEnoughForTheLifecycle(t *testing.T) {
	e := newKsEnv(t)
	rw, _ := e.grantedKeysets(t, store.KeysetsReadWrite)
	ctx, id := t.Context(), ksTenant("rw")
	kek := "local:///granted/" + id.String()
	require.NoError(t, rw.Put(ctx, ksSet(id, keys.PurposeData, kek, 0), ksSet(id, keys.PurposeBlob, kek, 0)))
	w, err := rw.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)
	w.Wrapped = []byte("rotated")
	require.NoError(t, rw.Put(ctx, w))
	page, err := rw.List(ctx, keys.ListOptions{KEKURI: kek, Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 2)
	uris, err := rw.KEKURIs(ctx, tenant.ID{})
	require.NoError(t, err)
	require.Contains(t, uris, kek)
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
