package keys_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

// MemStore keeps the Store contract that store.Keysets keeps on PostgreSQL
// (see store/keysets_test.go), so that packages testing with it see the
// same behaviour.
func TestMemStoreKeepsTheStoreContract(t *testing.T) {
	ctx := ctxT(t)
	s := keys.NewMemStore()
	set := func(id tenant.ID, p keys.Purpose, kek string, v int64) keys.WrappedKeyset {
		return keys.WrappedKeyset{Tenant: id, Purpose: p, KEKURI: kek, Wrapped: []byte("w"), Version: v}
	}
	a, b := tenant.MustParseID("a"), tenant.MustParseID("b")

	_, err := s.Get(ctx, a, keys.PurposeData)
	require.ErrorIs(t, err, keys.ErrNoKeys)

	require.NoError(t, s.Put(ctx, set(a, keys.PurposeAudit, "k1", 0)))
	err = s.Put(ctx, set(a, keys.PurposeData, "k1", 0), set(a, keys.PurposeAudit, "k1", 0))
	require.ErrorIs(t, err, keys.ErrConflict)
	_, err = s.Get(ctx, a, keys.PurposeData)
	require.ErrorIs(t, err, keys.ErrNoKeys, "a failed Put wrote something")

	require.NoError(t, s.Put(ctx, set(a, keys.PurposeData, "k1", 0), set(a, keys.PurposeBlob, "k1", 0)))
	w, err := s.Get(ctx, a, keys.PurposeData)
	require.NoError(t, err)
	require.EqualValues(t, 1, w.Version)
	w.Wrapped[0] = 'X' // callers' copies are their own
	w2, _ := s.Get(ctx, a, keys.PurposeData)
	require.Equal(t, []byte("w"), w2.Wrapped)
	w.KEKURI = "k2"
	require.NoError(t, s.Put(ctx, w))
	require.ErrorIs(t, s.Put(ctx, w), keys.ErrConflict, "stale version")
	w3, _ := s.Get(ctx, a, keys.PurposeData)
	require.EqualValues(t, 2, w3.Version)
	require.Equal(t, "k2", w3.KEKURI)

	require.NoError(t, s.Put(ctx, set(b, keys.PurposeData, "k1", 0)))
	var got []string
	opts := keys.ListOptions{KEKURI: "k1", Limit: 1}
	for {
		page, err := s.List(ctx, opts)
		require.NoError(t, err)
		for _, w := range page {
			got = append(got, fmt.Sprint(w.Tenant, "/", w.Purpose))
			opts.AfterTenant, opts.AfterPurpose = w.Tenant, w.Purpose
		}
		if len(page) < opts.Limit {
			break
		}
	}
	require.Equal(t, []string{"a/audit", "a/blob", "b/data"}, got)
	for prefix, want := range map[string]int{"k": 4, "k1": 3, "k2": 1, "x": 0, "": 4} {
		page, err := s.List(ctx, keys.ListOptions{KEKURIPrefix: prefix, Limit: 10})
		require.NoError(t, err)
		require.Len(t, page, want, "prefix %q", prefix)
	}
	page, err := s.List(ctx, keys.ListOptions{KEKURIPrefix: "k", KEKURI: "k2", Limit: 10})
	require.NoError(t, err)
	require.Len(t, page, 1)
	_, err = s.List(ctx, keys.ListOptions{})
	require.ErrorIs(t, err, keys.ErrInvalidArgument)

	own := set(b, keys.PurposeBlob, "own", 0)
	own.TenantKEK = true
	require.NoError(t, s.Put(ctx, own))
	tomb, err := s.Delete(ctx, b)
	require.NoError(t, err)
	require.Equal(t, []string{"own"}, tomb.TenantKEKs)
	tomb2, err := s.Delete(ctx, b)
	require.NoError(t, err)
	require.Equal(t, tomb.DestroyedAt, tomb2.DestroyedAt)
	_, err = s.Get(ctx, b, keys.PurposeData)
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
	require.ErrorIs(t, s.Put(ctx, set(b, keys.PurposeData, "k1", 0)), keys.ErrKeyDestroyed)
	_, err = s.Get(ctx, a, keys.PurposeBlob)
	require.NoError(t, err, "another tenant's keys survive")
}

func TestMemStoreKEKURIsListsDistinctKeysOfOtherTenants(t *testing.T) {
	ctx := ctxT(t)
	s := keys.NewMemStore()
	a, b := tenant.MustParseID("a"), tenant.MustParseID("b")
	w := func(id tenant.ID, p keys.Purpose, kek string) keys.WrappedKeyset {
		return keys.WrappedKeyset{Tenant: id, Purpose: p, KEKURI: kek, Wrapped: []byte("w")}
	}
	require.NoError(t, s.Put(ctx, w(a, keys.PurposeData, "ka"), w(a, keys.PurposeBlob, "ka")))
	require.NoError(t, s.Put(ctx, w(b, keys.PurposeData, "kb"), w(b, keys.PurposeBlob, "ka")))
	all, err := s.KEKURIs(ctx, tenant.ID{})
	require.NoError(t, err)
	require.Equal(t, []string{"ka", "kb"}, all)
	notB, err := s.KEKURIs(ctx, b)
	require.NoError(t, err)
	require.Equal(t, []string{"ka"}, notB)
}
