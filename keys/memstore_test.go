package keys_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/storetest"
	"github.com/rtmx-ai/tenancy/tenant"
)

// MemStore keeps the Store contract that store.Keysets keeps on PostgreSQL
// (both run storetest.TestStore), so that packages testing with it see the
// same behaviour: a new one, and the zero MemStore.
func TestMemStoreKeepsTheStoreContract(t *testing.T) {
	storetest.TestStore(t, func(*testing.T) keys.Store { return keys.NewMemStore() })
}

func TestZeroMemStoreKeepsTheStoreContract(t *testing.T) {
	storetest.TestStore(t, func(*testing.T) keys.Store { return new(keys.MemStore) })
}

// MemStore keeps no slice of its callers': the bytes Put was given and
// those Get and List return are the caller's own to change.
func TestMemStoreCopiesWrappedBytes(t *testing.T) {
	ctx := ctxT(t)
	s := keys.NewMemStore()
	a := tenant.MustParseID("a")
	in := keys.WrappedKeyset{Tenant: a, Purpose: keys.PurposeData, KEKURI: "k1", KEKKind: keys.KEKPlatform, Wrapped: []byte("w")}
	require.NoError(t, s.Put(ctx, in))
	in.Wrapped[0] = 'P'
	w, err := s.Get(ctx, a, keys.PurposeData)
	require.NoError(t, err)
	require.Equal(t, []byte("w"), w.Wrapped, "Put kept the caller's slice")
	w.Wrapped[0] = 'X'
	w2, err := s.Get(ctx, a, keys.PurposeData)
	require.NoError(t, err)
	require.Equal(t, []byte("w"), w2.Wrapped, "Get returned the store's slice")
	page, err := s.List(ctx, keys.ListOptions{Limit: 1})
	require.NoError(t, err)
	page[0].Wrapped[0] = 'L'
	w3, err := s.Get(ctx, a, keys.PurposeData)
	require.NoError(t, err)
	require.Equal(t, []byte("w"), w3.Wrapped, "List returned the store's slice")
}

// MemStore refuses a List without a Limit as invalid input (the suite asks
// only for an error), as store.Keysets does.
func TestMemStoreListWithoutLimitIsInvalid(t *testing.T) {
	_, err := keys.NewMemStore().List(ctxT(t), keys.ListOptions{})
	require.ErrorIs(t, err, keys.ErrInvalidArgument)
}
