package keys_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
)

// localAliases returns other spellings of the local key file at path, all
// naming the same file.
func localAliases(path string) []string {
	dir, name := filepath.Dir(path), filepath.Base(path)
	return []string{
		"local://" + dir + "/./" + name,
		"local://" + dir + "//" + name,
		"local://" + dir + "/x/../" + name,
		"local://" + filepath.Dir(dir) + "/../" + filepath.Base(filepath.Dir(dir)) + "/" + filepath.Base(dir) + "/" + name,
	}
}

// A tenant cannot name the platform master key as its own under another
// spelling: it would be recorded as the tenant's key and destroyed when the
// tenant is shredded, and every tenant's data with it.
func TestAliasOfThePlatformKEKIsRefusedAndShredNeverDestroysIt(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	_, victimCtx := provision(t, m, "victim")
	ct, err := m.Seal(victimCtx, []byte("secret"), field)
	require.NoError(t, err)

	for _, alias := range append(localAliases(e.platformPath), e.platform) {
		attacker := newID("attacker")
		err := m.Provision(ctxT(t), attacker, keys.ProvisionOptions{KEKURI: alias})
		require.ErrorIs(t, err, keys.ErrInvalidArgument, alias)
		require.ErrorIs(t, err, keys.ErrKEKInUse, alias)
		require.Contains(t, err.Error(), "ProvisionOptions.KEKURI")
		require.Contains(t, err.Error(), "platform master key")
		n, tombs := e.rows(t, attacker)
		require.Zero(t, n+tombs, "nothing may be written for a refused tenant")
		_, err = m.Shred(ctxT(t), attacker)
		require.NoError(t, err)
	}
	requirePlatformKEKServes(t, e, m, victimCtx, ct)
}

// The reviewer's reproduction, on a Manager whose Config.PlatformKEK is
// itself spelled unusually: identity, not spelling, decides.
func TestAliasKEKShredDoesNotDestroyPlatformKey(t *testing.T) {
	e := newEnv(t)
	odd := localAliases(e.platformPath)[0]
	m := e.manager(t, func(c *keys.Config) { c.PlatformKEK = odd })
	victim, victimCtx := provision(t, m, "victim")
	for _, uri := range e.kekOf(t, victim) {
		require.Equal(t, e.platform, uri, "keysets record the canonical URI of their master key")
	}
	ct, err := m.Seal(victimCtx, []byte("secret"), field)
	require.NoError(t, err)
	err = m.Provision(ctxT(t), newID("attacker"), keys.ProvisionOptions{KEKURI: e.platform})
	require.ErrorIs(t, err, keys.ErrKEKInUse)
	m.PurgeAll()
	_, err = m.Open(victimCtx, ct, field)
	require.NoError(t, err)
}

// Nor can a tenant name another tenant's own master key: its Shred would
// destroy it, and the other tenant's Shred could no longer destroy it.
func TestAliasOfAnotherTenantsKEKIsRefused(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	custURI, custPath := e.keyURI(t, "acme-own.key")
	owner, ownerCtx := provision(t, m, "owner", keys.ProvisionOptions{KEKURI: custURI})
	ct, err := m.Seal(ownerCtx, []byte("owner's"), field)
	require.NoError(t, err)

	for _, alias := range append(localAliases(custPath), custURI) {
		other := newID("other")
		err := m.Provision(ctxT(t), other, keys.ProvisionOptions{KEKURI: alias})
		require.ErrorIs(t, err, keys.ErrInvalidArgument, alias)
		require.ErrorIs(t, err, keys.ErrKEKInUse, alias)
		require.Contains(t, err.Error(), "ProvisionOptions.KEKURI")
		require.NotContains(t, err.Error(), owner.String(), "the error must not name the other tenant")
		n, _ := e.rows(t, other)
		require.Zero(t, n)
	}
	// The owner re-running its provisioning under any spelling is a no-op.
	for _, alias := range localAliases(custPath) {
		require.NoError(t, m.Provision(ctxT(t), owner, keys.ProvisionOptions{KEKURI: alias}))
	}
	got, err := m.Open(ownerCtx, ct, field)
	require.NoError(t, err)
	require.Equal(t, "owner's", string(got))
	for _, uri := range e.kekOf(t, owner) {
		require.Equal(t, custURI, uri)
	}

	res, err := m.Shred(ctxT(t), owner)
	require.NoError(t, err)
	require.Equal(t, []string{custURI}, res.DestroyedKEKs)
}

// A customer-managed URI is stored in canonical form, and Shred destroys
// that key.
func TestCustomerKEKIsStoredCanonical(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	custURI, custPath := e.keyURI(t, "byok.key")
	id, _ := provision(t, m, "byok", keys.ProvisionOptions{KEKURI: localAliases(custPath)[2]})
	for p, uri := range e.kekOf(t, id) {
		require.Equal(t, custURI, uri, p)
	}
	res, err := m.Shred(ctxT(t), id)
	require.NoError(t, err)
	require.Equal(t, []string{custURI}, res.DestroyedKEKs)
	_, err = os.Stat(custPath)
	require.True(t, os.IsNotExist(err))
}

// Rows written before master keys were compared by identity (and before
// links were resolved) may record, as a tenant's own key, the platform key
// under another spelling or through a linked directory. Shred must not
// destroy it.
func TestShredKeepsALegacyTenantKEKThatAliasesThePlatformKey(t *testing.T) {
	for name, aliasOf := range map[string]func(t *testing.T, platformPath string) string{
		"Spelling":        func(_ *testing.T, p string) string { return localAliases(p)[1] },
		"LinkedDirectory": func(t *testing.T, p string) string { return linkedAliases(t, p)[0] },
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			m := e.manager(t)
			victim, victimCtx := provision(t, m, "victim")
			ct, err := m.Seal(victimCtx, []byte("secret"), field)
			require.NoError(t, err)
			legacy := newID("legacy")
			alias := aliasOf(t, e.platformPath)
			// The rows as the old Provision wrote them: wrapped by the
			// platform key, recorded under the alias as the tenant's own key.
			var sets []keys.WrappedKeyset
			for _, p := range keys.Purposes() {
				w, err := e.store.Get(ctxT(t), victim, p)
				require.NoError(t, err)
				sets = append(sets, keys.WrappedKeyset{Tenant: legacy, Purpose: p, KEKURI: alias, TenantKEK: true, Wrapped: w.Wrapped})
			}
			require.NoError(t, e.store.Put(ctxT(t), sets...))

			res, err := m.Shred(ctxT(t), legacy)
			require.NoError(t, err)
			require.Equal(t, []string{alias}, res.Tombstone.TenantKEKs)
			require.Empty(t, res.DestroyedKEKs)
			require.Equal(t, []string{alias}, res.RetainedKEKs)
			requirePlatformKEKServes(t, e, m, victimCtx, ct)
		})
	}
}

// requirePlatformKEKServes checks that the platform key file still exists
// and that, with every cache dropped, the victim's ciphertext still opens.
func requirePlatformKEKServes(t *testing.T, e *env, m *keys.Manager, victimCtx context.Context, ct []byte) {
	t.Helper()
	_, err := os.Stat(e.platformPath)
	require.NoError(t, err, "the platform master key file was destroyed")
	m.PurgeAll()
	got, err := m.Open(victimCtx, ct, field)
	require.NoError(t, err)
	require.Equal(t, "secret", string(got))
}

// Rewrap finds the keysets of a master key by identity: from may be
// spelled any way, and to may not be from under another spelling.
func TestRewrapComparesMasterKeysByIdentity(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	id, ctx := provision(t, m, "rw")
	ct, err := m.Seal(ctx, []byte("v"), field)
	require.NoError(t, err)

	_, err = m.Rewrap(ctxT(t), e.platform, localAliases(e.platformPath)[0])
	require.ErrorIs(t, err, keys.ErrInvalidArgument)
	require.Contains(t, err.Error(), "same master key")

	newURI, newPath := e.keyURI(t, "platform-2.key")
	res, err := m.Rewrap(ctxT(t), localAliases(e.platformPath)[2], localAliases(newPath)[1])
	require.NoError(t, err)
	require.Equal(t, keys.RewrapResult{Rewrapped: 3}, res, "keysets on an aliased master key were skipped")
	for _, uri := range e.kekOf(t, id) {
		require.Equal(t, newURI, uri, "keysets record the canonical URI of the new master key")
	}
	removeFile(t, e.platformPath)
	m.PurgeAll()
	got, err := m.Open(ctx, ct, field)
	require.NoError(t, err)
	require.Equal(t, "v", string(got))
}

// linkedAliases returns URIs that reach the local key file at path through
// symbolic links made in a temporary directory: a linked directory (as
// /lib -> usr/lib), the key path under it with "./", and a link to the key
// file itself (made when the file exists).
func linkedAliases(t *testing.T, path string) []string {
	t.Helper()
	dir := t.TempDir()
	linkDir := filepath.Join(dir, "alias")
	require.NoError(t, os.Symlink(filepath.Dir(path), linkDir))
	aliases := []string{
		"local://" + filepath.Join(linkDir, filepath.Base(path)),
		"local://" + linkDir + "/./" + filepath.Base(path),
	}
	if _, err := os.Stat(path); err == nil {
		fileLink := filepath.Join(dir, "tenant.key")
		require.NoError(t, os.Symlink(path, fileLink))
		aliases = append(aliases, "local://"+fileLink)
	}
	return aliases
}

// The reviewer's reproduction with a symbolic link: a tenant naming the
// platform key through a linked directory (or a link to the file) is
// refused as the platform key, and Shred never destroys the platform key.
func TestLinkedAliasOfThePlatformKEKIsRefusedAndShredNeverDestroysIt(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	_, victimCtx := provision(t, m, "victim")
	ct, err := m.Seal(victimCtx, []byte("secret"), field)
	require.NoError(t, err)
	aliases := linkedAliases(t, e.platformPath)
	require.Len(t, aliases, 3)
	for _, alias := range aliases {
		attacker := newID("attacker")
		err := m.Provision(ctxT(t), attacker, keys.ProvisionOptions{KEKURI: alias})
		require.ErrorIs(t, err, keys.ErrInvalidArgument, alias)
		require.ErrorIs(t, err, keys.ErrKEKInUse, alias)
		require.Contains(t, err.Error(), "platform master key")
		n, tombs := e.rows(t, attacker)
		require.Zero(t, n+tombs, "nothing may be written for a refused tenant")
		res, err := m.Shred(ctxT(t), attacker)
		require.NoError(t, err)
		require.Empty(t, res.DestroyedKEKs)
	}
	requirePlatformKEKServes(t, e, m, victimCtx, ct)
}

// A customer's own key named through a linked directory is stored under
// its canonical URI (links resolved), and Shred destroys it, twice over.
func TestLinkedCustomerKEKIsStoredCanonicalAndShredDestroysIt(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	custURI, custPath := e.keyURI(t, "byok-linked.key")
	// A link to a directory that does not exist yet names nothing for sure.
	dangling := linkedAliases(t, custPath)[0]
	err := m.Provision(ctxT(t), newID("byok"), keys.ProvisionOptions{KEKURI: dangling})
	require.ErrorIs(t, err, keys.ErrInvalidArgument)
	require.ErrorIs(t, err, localkms.ErrInvalidURI)
	require.Contains(t, err.Error(), "symbolic link to nothing")

	require.NoError(t, os.MkdirAll(filepath.Dir(custPath), 0o700))
	id, _ := provision(t, m, "byok", keys.ProvisionOptions{KEKURI: linkedAliases(t, custPath)[0]})
	for p, uri := range e.kekOf(t, id) {
		require.Equal(t, custURI, uri, p)
	}
	for i := range 2 {
		res, err := m.Shred(ctxT(t), id)
		require.NoError(t, err, "Shred #%d", i+1)
		require.Equal(t, []string{custURI}, res.DestroyedKEKs, "Shred #%d", i+1)
	}
	_, err = os.Stat(custPath)
	require.True(t, os.IsNotExist(err))
}
