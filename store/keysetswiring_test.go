package store_test

import (
	"testing"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestOpenGivesAppRoleReadOnlyKeysets checks the wiring of Open: the keyset
// tables exist, the application role serves (reads) them, and only the
// admin role may write or shred.
func TestOpenGivesAppRoleReadOnlyKeysets(t *testing.T) {
	db := newStore(t)
	ctx := ctxT(t)
	id := tenant.MustParseID(uniqueName("wiring"))
	w := keys.WrappedKeyset{Tenant: id, Purpose: keys.PurposeData, KEKURI: "local:///nonexistent", Wrapped: []byte{1, 2, 3}}
	require.NoError(t, db.Keysets(store.KeysetsReadWrite).Put(ctx, w))

	read := db.Keysets(store.KeysetsRead)
	got, err := read.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)
	assert.Equal(t, []byte{1, 2, 3}, got.Wrapped)

	got.Wrapped = []byte("overwritten")
	assert.ErrorContains(t, read.Put(ctx, got), "permission denied")
	_, err = read.Delete(ctx, id)
	assert.ErrorContains(t, err, "permission denied")
	again, err := read.Get(ctx, id, keys.PurposeData)
	require.NoError(t, err)
	assert.Equal(t, []byte{1, 2, 3}, again.Wrapped, "nothing changed")
}
