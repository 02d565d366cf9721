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

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

var (
	ksOnce  sync.Once
	ksURL   string
	ksSetup error
	ksSeq   atomic.Int64

	ksReadOnce sync.Once
	ksReadURL  string
	ksReadErr  error
)

// ksPool returns a pool of the superuser and a keyset store whose pool
// connects as a role holding only the grants of store.GrantKeysets.
func ksPool(t testing.TB) (admin *pgxpool.Pool, ks *store.Keysets) {
	t.Helper()
	d := pgtest.DB(t)
	admin, err := pgxpool.New(ctxT(t), d.AdminURL())
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	ksOnce.Do(func() {
		ksURL = d.CreateRole(t, "keysets", "NOINHERIT")
		if ksSetup = store.EnsureKeysetsSchema(ctxT(t), admin); ksSetup == nil {
			ksSetup = store.GrantKeysets(ctxT(t), admin, d.Prefix()+"keysets", store.KeysetsReadWrite)
		}
	})
	require.NoError(t, ksSetup)
	pool, err := pgxpool.New(ctxT(t), ksURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return admin, store.NewKeysets(pool)
}

// ksTenant returns a tenant ID no other test uses.
func ksTenant(name string) tenant.ID {
	return tenant.MustParseID(fmt.Sprintf("ks_%s%d", name, ksSeq.Add(1)))
}

func ksSet(id tenant.ID, p keys.Purpose, kek string, version int64) keys.WrappedKeyset {
	return keys.WrappedKeyset{Tenant: id, Purpose: p, KEKURI: kek, Wrapped: []byte("wrapped:" + id.String() + "/" + string(p)), Version: version}
}

func ksCount(t testing.TB, admin *pgxpool.Pool, id tenant.ID) (keysets, tombstones int) {
	t.Helper()
	require.NoError(t, admin.QueryRow(ctxT(t), `SELECT
		(SELECT count(*) FROM tenancy.tenant_keysets WHERE tenant_id = $1),
		(SELECT count(*) FROM tenancy.tenant_keyset_tombstones WHERE tenant_id = $1)`, id.String()).Scan(&keysets, &tombstones))
	return keysets, tombstones
}

func TestKeysetsPutCreatesAndGetReadsBack(t *testing.T) {
	_, ks := ksPool(t)
	ctx, id := ctxT(t), ksTenant("a")
	var sets []keys.WrappedKeyset
	for _, p := range keys.Purposes() {
		sets = append(sets, ksSet(id, p, "local:///k", 0))
	}
	sets[2].TenantKEK = true
	require.NoError(t, ks.Put(ctx, sets...))
	for i, p := range keys.Purposes() {
		w, err := ks.Get(ctx, id, p)
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
	admin, ks := ksPool(t)
	ctx, id := ctxT(t), ksTenant("atomic")
	require.NoError(t, ks.Put(ctx, ksSet(id, keys.PurposeAudit, "local:///k", 0)))
	// data and blob are new, audit exists: nothing may be written.
	err := ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///k", 0), ksSet(id, keys.PurposeBlob, "local:///k", 0),
		ksSet(id, keys.PurposeAudit, "local:///k", 0))
	require.ErrorIs(t, err, keys.ErrConflict)
	n, _ := ksCount(t, admin, id)
	require.Equal(t, 1, n, "a failed Put left rows behind")
}

func TestKeysetsPutCompareAndSwapsOnVersion(t *testing.T) {
	_, ks := ksPool(t)
	ctx, id := ctxT(t), ksTenant("cas")
	require.NoError(t, ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///old", 0)))
	w, err := ks.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)

	w.KEKURI, w.Wrapped = "local:///new", []byte("rewrapped")
	require.NoError(t, ks.Put(ctx, w))
	got, err := ks.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)
	require.EqualValues(t, 2, got.Version)
	require.Equal(t, "local:///new", got.KEKURI)
	require.Equal(t, []byte("rewrapped"), got.Wrapped)
	require.False(t, got.UpdatedAt.Before(got.CreatedAt))

	// w still says version 1: a stale writer loses.
	w.Wrapped = []byte("stale")
	require.ErrorIs(t, ks.Put(ctx, w), keys.ErrConflict)
	// An update of a keyset that does not exist loses too.
	require.ErrorIs(t, ks.Put(ctx, ksSet(id, keys.PurposeBlob, "local:///k", 3)), keys.ErrConflict)
	// Creating one that exists loses.
	require.ErrorIs(t, ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///k", 0)), keys.ErrConflict)
	got, err = ks.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)
	require.Equal(t, []byte("rewrapped"), got.Wrapped)
}

func TestKeysetsGetTellsDestroyedFromNeverProvisioned(t *testing.T) {
	_, ks := ksPool(t)
	ctx := ctxT(t)
	never, shredded := ksTenant("never"), ksTenant("shredded")
	_, err := ks.Get(ctx, never, keys.PurposeData)
	require.ErrorIs(t, err, keys.ErrNoKeys)
	require.NotErrorIs(t, err, keys.ErrKeyDestroyed)

	require.NoError(t, ks.Put(ctx, ksSet(shredded, keys.PurposeData, "local:///k", 0)))
	_, err = ks.Delete(ctx, shredded)
	require.NoError(t, err)
	for _, p := range keys.Purposes() {
		_, err = ks.Get(ctx, shredded, p)
		require.ErrorIs(t, err, keys.ErrKeyDestroyed)
		require.NotErrorIs(t, err, keys.ErrNoKeys)
	}
}

func TestKeysetsDeleteRecordsTombstoneWithTenantKEKsIdempotently(t *testing.T) {
	admin, ks := ksPool(t)
	ctx, id := ctxT(t), ksTenant("del")
	sets := []keys.WrappedKeyset{
		ksSet(id, keys.PurposeData, "aws-kms://own-b", 0),
		ksSet(id, keys.PurposeBlob, "aws-kms://own-a", 0),
		ksSet(id, keys.PurposeAudit, "aws-kms://own-b", 0),
	}
	for i := range sets {
		sets[i].TenantKEK = true
	}
	require.NoError(t, ks.Put(ctx, sets...))

	t1, err := ks.Delete(ctx, id)
	require.NoError(t, err)
	require.Equal(t, id, t1.Tenant)
	require.Equal(t, []string{"aws-kms://own-a", "aws-kms://own-b"}, t1.TenantKEKs)
	require.False(t, t1.DestroyedAt.IsZero())
	n, tombs := ksCount(t, admin, id)
	require.Equal(t, 0, n)
	require.Equal(t, 1, tombs)

	t2, err := ks.Delete(ctx, id)
	require.NoError(t, err)
	require.Equal(t, t1.TenantKEKs, t2.TenantKEKs)
	require.True(t, t1.DestroyedAt.Equal(t2.DestroyedAt))

	// A shredded tenant is never provisioned again.
	require.ErrorIs(t, ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///k", 0)), keys.ErrKeyDestroyed)
	n, _ = ksCount(t, admin, id)
	require.Equal(t, 0, n)

	// Platform-wrapped keysets leave no KEK to destroy; a tenant that never
	// had keys gets a tombstone too.
	plat := ksTenant("plat")
	require.NoError(t, ks.Put(ctx, ksSet(plat, keys.PurposeData, "local:///platform", 0)))
	tp, err := ks.Delete(ctx, plat)
	require.NoError(t, err)
	require.Empty(t, tp.TenantKEKs)
	never := ksTenant("never")
	_, err = ks.Delete(ctx, never)
	require.NoError(t, err)
	_, err = ks.Get(ctx, never, keys.PurposeData)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
}

func TestKeysetsConcurrentPutAndDeleteNeverLeaveKeysBesideATombstone(t *testing.T) {
	admin, ks := ksPool(t)
	ctx := ctxT(t)
	for range 20 {
		id := ksTenant("race")
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(2)
			go func() {
				defer wg.Done()
				err := ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///k", 0), ksSet(id, keys.PurposeBlob, "local:///k", 0))
				if err != nil && !errors.Is(err, keys.ErrConflict) && !errors.Is(err, keys.ErrKeyDestroyed) {
					t.Error(err)
				}
			}()
			go func() {
				defer wg.Done()
				if _, err := ks.Delete(ctx, id); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		n, tombs := ksCount(t, admin, id)
		require.Equal(t, 1, tombs)
		require.Equal(t, 0, n, "keysets written beside a tombstone")
	}
}

func TestKeysetsListPaginatesInOrderAndFiltersByKEK(t *testing.T) {
	_, ks := ksPool(t)
	ctx := ctxT(t)
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
			require.NoError(t, ks.Put(ctx, ksSet(id, p, kek, 0)))
			if kek == kekA {
				want = append(want, id.String()+"/"+string(p))
			}
		}
	}
	var got []string
	opts := keys.ListOptions{KEKURI: kekA, Limit: 4}
	for {
		page, err := ks.List(ctx, opts)
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

	page, err := ks.List(ctx, keys.ListOptions{KEKURI: kekB, Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 1)

	all, err := ks.List(ctx, keys.ListOptions{Limit: 1})
	require.NoError(t, err)
	require.Len(t, all, 1)
}

// A KEK URI prefix selects the keysets of every URI that starts with it,
// byte by byte: LIKE wildcards and collation play no part.
func TestKeysetsListFiltersByKEKPrefix(t *testing.T) {
	_, ks := ksPool(t)
	ctx := ctxT(t)
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
		require.NoError(t, ks.Put(ctx, ksSet(ids[name], keys.PurposeData, kek, 0)))
	}
	list := func(opts keys.ListOptions) []tenant.ID {
		t.Helper()
		opts.Limit = 100
		page, err := ks.List(ctx, opts)
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
	first, err := ks.List(ctx, keys.ListOptions{KEKURIPrefix: base, Limit: 1})
	require.NoError(t, err)
	require.Len(t, first, 1)
	rest, err := ks.List(ctx, keys.ListOptions{KEKURIPrefix: base, AfterTenant: first[0].Tenant, AfterPurpose: first[0].Purpose, Limit: 10})
	require.NoError(t, err)
	require.Len(t, rest, 1)
	require.NotEqual(t, first[0].Tenant, rest[0].Tenant)
}

func TestKeysetsRejectInvalidInputNamingTheField(t *testing.T) {
	_, ks := ksPool(t)
	ctx, id := ctxT(t), ksTenant("bad")
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
			err := ks.Put(ctx, tc.w)
			require.ErrorIs(t, err, keys.ErrInvalidArgument)
			require.Contains(t, err.Error(), tc.field)
		})
	}
	err := ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///k", 0), ksSet(id, keys.PurposeData, "local:///k", 0))
	require.ErrorIs(t, err, keys.ErrInvalidArgument)
	_, err = ks.Get(ctx, tenant.ID{}, keys.PurposeData)
	require.ErrorIs(t, err, keys.ErrInvalidArgument)
	_, err = ks.Delete(ctx, tenant.ID{})
	require.ErrorIs(t, err, keys.ErrInvalidArgument)
	_, err = ks.List(ctx, keys.ListOptions{})
	require.ErrorIs(t, err, keys.ErrInvalidArgument)
}

func TestKeysetsSchemaIsIdempotentAndConstrained(t *testing.T) {
	admin, _ := ksPool(t)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := store.EnsureKeysetsSchema(ctx, admin); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// The database refuses rows the Go code would never write.
	for _, sql := range []string{
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, wrapped, version) VALUES ('Bad', 'data', 'k', '\x01', 1)`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, wrapped, version) VALUES ('ok', 'other', 'k', '\x01', 1)`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, wrapped, version) VALUES ('ok', 'data', '', '\x01', 1)`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, wrapped, version) VALUES ('ok', 'data', 'k', '', 1)`,
		`INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, wrapped, version) VALUES ('ok', 'data', 'k', '\x01', 0)`,
	} {
		_, err := admin.Exec(ctx, sql)
		require.Error(t, err, sql)
	}
}

func TestKeysetsKeepWrappedBytesExactly(t *testing.T) {
	// The store is a dumb holder of wrapped bytes: what goes in comes out
	// byte for byte, including bytes that are not valid UTF-8.
	_, ks := ksPool(t)
	ctx, id := ctxT(t), ksTenant("bytes")
	w := ksSet(id, keys.PurposeData, "local:///k", 0)
	w.Wrapped = []byte{0, 0xff, 0xfe, '\'', '\\', 0}
	require.NoError(t, ks.Put(ctx, w))
	got, err := ks.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)
	require.True(t, bytes.Equal(w.Wrapped, got.Wrapped))
}

func TestKeysetsReadOnlyRoleCanServeButNotWriteOrShred(t *testing.T) {
	admin, ks := ksPool(t)
	d := pgtest.DB(t)
	ksReadOnce.Do(func() {
		ksReadURL = d.CreateRole(t, "keysets_ro", "NOINHERIT")
		ksReadErr = store.GrantKeysets(ctxT(t), admin, d.Prefix()+"keysets_ro", store.KeysetsRead)
	})
	require.NoError(t, ksReadErr)
	pool, err := pgxpool.New(ctxT(t), ksReadURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	ro := store.NewKeysets(pool)

	ctx, id := ctxT(t), ksTenant("ro")
	require.NoError(t, ks.Put(ctx, ksSet(id, keys.PurposeData, "local:///k", 0)))
	w, err := ro.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)
	_, err = ro.List(ctx, keys.ListOptions{Limit: 1})
	require.NoError(t, err)

	w.Wrapped = []byte("overwritten")
	require.ErrorContains(t, ro.Put(ctx, w), "permission denied")
	_, err = ro.Delete(ctx, id)
	require.ErrorContains(t, err, "permission denied")
	n, tombs := ksCount(t, admin, id)
	require.Equal(t, 1, n)
	require.Zero(t, tombs)

	require.ErrorIs(t, store.GrantKeysets(ctx, admin, d.Prefix()+"keysets_ro", 0), store.ErrInvalidConfig)
	require.ErrorIs(t, store.GrantKeysets(ctx, admin, "", store.KeysetsRead), store.ErrInvalidConfig)
}

func TestKeysetsKEKURIsListsDistinctKeysOfOtherTenants(t *testing.T) {
	_, ks := ksPool(t)
	ctx, a, b := ctxT(t), ksTenant("kekuria"), ksTenant("kekurib")
	ka, kb := "local:///kekuris/"+a.String(), "local:///kekuris/"+b.String()
	var sets []keys.WrappedKeyset
	for _, p := range keys.Purposes() {
		sets = append(sets, ksSet(a, p, ka, 0))
	}
	require.NoError(t, ks.Put(ctx, sets...))
	require.NoError(t, ks.Put(ctx, ksSet(b, keys.PurposeData, kb, 0), ksSet(b, keys.PurposeBlob, ka, 0)))

	all, err := ks.KEKURIs(ctx, tenant.ID{})
	require.NoError(t, err)
	require.Contains(t, all, ka)
	require.Contains(t, all, kb)
	seen := map[string]int{}
	for _, u := range all {
		seen[u]++
	}
	require.Equal(t, 1, seen[ka], "distinct")

	notA, err := ks.KEKURIs(ctx, a)
	require.NoError(t, err)
	require.Contains(t, notA, kb)
	require.Contains(t, notA, ka, "b's blob keyset is on a's key")
	notB, err := ks.KEKURIs(ctx, b)
	require.NoError(t, err)
	require.NotContains(t, notB, kb, "only b uses kb")
}
