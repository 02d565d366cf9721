package keys_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
)

// A hard link reaches a key file under another path: another URI, the
// same key. KeyIdentifier cannot see it; the probe can.
func TestProvisionRefusesAHardLinkToThePlatformOrAnotherTenantsKey(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	victimKEK, victimPath := e.keyURI(t, "victim.key")
	_, victimCtx := provision(t, m, "linkvictim", keys.ProvisionOptions{KEKURI: victimKEK})
	_, platformCtx := provision(t, m, "linkplatform")
	for name, target := range map[string]string{"platform key": e.platformPath, "another tenant's key": victimPath} {
		t.Run(name, func(t *testing.T) {
			link := e.dir + "/kek/link-" + newID("l").String() + ".key"
			require.NoError(t, os.Link(target, link))
			alias, err := localkms.KeyURI(link)
			require.NoError(t, err)
			attacker := newID("linkattacker")
			err = m.Provision(ctxT(t), attacker, keys.ProvisionOptions{KEKURI: alias})
			require.ErrorIs(t, err, keys.ErrKEKInUse)
			require.ErrorIs(t, err, keys.ErrInvalidArgument)
			n, _ := e.rows(t, attacker)
			require.Zero(t, n, "nothing written")
		})
	}
	// Both keys still serve their tenants.
	m.PurgeAll()
	for _, ctx := range []context.Context{victimCtx, platformCtx} {
		ct, err := m.Seal(ctx, []byte("still here"), field)
		require.NoError(t, err)
		_, err = m.Open(ctx, ct, field)
		require.NoError(t, err)
	}
}

// A tenant's own key file that became a hard link to the platform key
// after it was provisioned (or was provisioned before the probe existed):
// Shred keeps it.
func TestShredKeepsAnOwnKeyThatIsThePlatformKeyReachedAnotherWay(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	_, platformCtx := provision(t, m, "keepplatform")
	ct, err := m.Seal(platformCtx, []byte("platform tenant's secret"), field)
	require.NoError(t, err)

	own, ownPath := e.keyURI(t, "own.key")
	id, _ := provision(t, m, "keepattacker", keys.ProvisionOptions{KEKURI: own})
	require.NoError(t, os.Remove(ownPath))
	require.NoError(t, os.Link(e.platformPath, ownPath))

	res, err := m.Shred(ctxT(t), id)
	require.NoError(t, err, "the probe keeps the key before localkms would refuse the hard link")
	require.Empty(t, res.DestroyedKEKs)
	require.Len(t, res.RetainedKEKs, 1)

	m.PurgeAll()
	got, err := m.Open(platformCtx, ct, field)
	require.NoError(t, err, "the platform key must survive")
	require.Equal(t, "platform tenant's secret", string(got))
}

// Provision with an own key cannot tell it from the platform key while the
// platform key does not answer: it fails and writes nothing.
func TestProvisionWithOwnKeyFailsWhileThePlatformKeyIsUnavailable(t *testing.T) {
	e := newEnv(t)
	provision(t, e.manager(t), "unavailplatform") // the platform key exists
	// The Provision below encrypts first to check the tenant's own key
	// works, then to probe the platform key; the KMS refuses the second.
	down := &hookClient{KMSClient: e.local}
	down.setHook(func(op string, n int64) error {
		if op == "encrypt" && n == 2 {
			return errors.New("CKR_DEVICE_REMOVED")
		}
		return nil
	})
	m := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{down} })
	own, _ := e.keyURI(t, "own2.key")
	id := newID("unavailown")
	err := m.Provision(ctxT(t), id, keys.ProvisionOptions{KEKURI: own})
	require.ErrorContains(t, err, "platform master key")
	require.ErrorContains(t, err, "CKR_DEVICE_REMOVED")
	n, _ := e.rows(t, id)
	require.Zero(t, n)
	// Once it answers again, the same call succeeds.
	require.NoError(t, m.Provision(ctxT(t), id, keys.ProvisionOptions{KEKURI: own}))
}

// Rewrap onto a tenant's own key would put every other tenant's keysets in
// the hands of that key's customer.
func TestRewrapRefusesATenantsOwnKeyAsTo(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	own, ownPath := e.keyURI(t, "cust.key")
	provision(t, m, "rewrapvictim")
	provision(t, m, "rewrapcust", keys.ProvisionOptions{KEKURI: own})
	link := e.dir + "/kek/cust-link.key"
	require.NoError(t, os.Link(ownPath, link))
	linkURI, err := localkms.KeyURI(link)
	require.NoError(t, err)
	for name, to := range map[string]string{"by its URI": own, "through a hard link": linkURI} {
		t.Run(name, func(t *testing.T) {
			res, err := m.Rewrap(ctxT(t), e.platform, to)
			require.ErrorIs(t, err, keys.ErrKEKInUse)
			require.ErrorIs(t, err, keys.ErrInvalidArgument)
			require.Zero(t, res.Rewrapped)
		})
	}
}

// A shredded tenant is refused before any master key is called: a local
// key file destroyed by the Shred is not created again.
func TestProvisionAfterShredCallsNoMasterKey(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t)
	own, ownPath := e.keyURI(t, "gone.key")
	id, _ := provision(t, m, "reprov", keys.ProvisionOptions{KEKURI: own})
	_, err := m.Shred(ctxT(t), id)
	require.NoError(t, err)
	before := m.Stats()
	err = m.Provision(ctxT(t), id, keys.ProvisionOptions{KEKURI: own})
	require.ErrorIs(t, err, keys.ErrKeyDestroyed)
	after := m.Stats()
	require.Equal(t, before.KEKCalls, after.KEKCalls)
	require.Equal(t, before.KEKProbes, after.KEKProbes)
	_, err = os.Stat(ownPath)
	require.ErrorIs(t, err, os.ErrNotExist, "the destroyed key file must not come back")
}

// After a master-key rotation the old platform key still opens old backups
// of the keysets: no tenant may claim it as its own (and so destroy it).
func TestProvisionRefusesARetiredPlatformKey(t *testing.T) {
	e := newEnv(t)
	old := e.manager(t)
	provision(t, old, "retiredbefore") // creates the old platform key
	newKEK, _ := e.keyURI(t, "platform-2.key")
	m := e.manager(t, func(c *keys.Config) {
		c.PlatformKEK = newKEK
		c.RetiredKEKs = []string{e.platform}
	})
	link := e.dir + "/kek/retired-link.key"
	require.NoError(t, os.Link(e.platformPath, link))
	linkURI, err := localkms.KeyURI(link)
	require.NoError(t, err)
	for name, uri := range map[string]string{"by its URI": e.platform, "through a hard link": linkURI} {
		t.Run(name, func(t *testing.T) {
			err := m.Provision(ctxT(t), newID("retiredclaim"), keys.ProvisionOptions{KEKURI: uri})
			require.ErrorIs(t, err, keys.ErrKEKInUse)
			require.ErrorContains(t, err, "retired")
		})
	}
}

// listOnly hides the Store's KEKLister: the Manager then lists every
// keyset to find the keys in use.
type listOnly struct{ keys.Store }

func TestProvisionRefusesAHardLinkThroughAStoreWithoutKEKLister(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, func(c *keys.Config) { c.Store = listOnly{e.store} })
	victimKEK, victimPath := e.keyURI(t, "victim-lo.key")
	provision(t, m, "lovictim", keys.ProvisionOptions{KEKURI: victimKEK})
	link := e.dir + "/kek/lo-link.key"
	require.NoError(t, os.Link(victimPath, link))
	alias, err := localkms.KeyURI(link)
	require.NoError(t, err)
	err = m.Provision(ctxT(t), newID("loattacker"), keys.ProvisionOptions{KEKURI: alias})
	require.ErrorIs(t, err, keys.ErrKEKInUse)
}
