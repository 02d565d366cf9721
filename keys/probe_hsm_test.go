//go:build cgo

package keys_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/internal/softhsmtest"
	"github.com/rtmx-ai/tenancy/keys"
)

// copyModule copies the SoftHSM2 module to a file of its own: the same
// token and keys, reached through another module path.
func copyModule(t *testing.T) string {
	t.Helper()
	real, err := filepath.EvalSymlinks(softhsmtest.ModulePath(t))
	require.NoError(t, err)
	in, err := os.Open(real)
	require.NoError(t, err)
	defer in.Close()
	cp := filepath.Join(t.TempDir(), "libsofthsm2-copy.so")
	out, err := os.OpenFile(cp, os.O_CREATE|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
	return cp
}

// viaModule rewrites the module-path of a token URI.
func viaModule(t *testing.T, tok *softhsmtest.Token, uri, module string) string {
	t.Helper()
	out := strings.Replace(uri, "module-path="+softhsmtest.Escape(tok.Module), "module-path="+module, 1)
	out = strings.Replace(out, "module-path="+tok.Module, "module-path="+module, 1)
	require.Contains(t, out, module)
	return out
}

func TestHSMProvisionRefusesThePlatformOrAnotherTenantsKeyThroughAnotherModuleFile(t *testing.T) {
	e := newEnv(t)
	tok, platform, hsm := hsmKEK(t, "platform")
	require.NoError(t, hsm.GenerateKey(ctxT(t), tok.URI("victim")))
	m := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{hsm}; c.PlatformKEK = platform })
	_, platformCtx := provision(t, m, "modplatform")
	_, victimCtx := provision(t, m, "modvictim", keys.ProvisionOptions{KEKURI: tok.URI("victim")})
	module := copyModule(t)

	for name, target := range map[string]string{"platform key": platform, "another tenant's key": tok.URI("victim")} {
		t.Run(name, func(t *testing.T) {
			attacker := newID("modattacker")
			err := m.Provision(ctxT(t), attacker, keys.ProvisionOptions{KEKURI: viaModule(t, tok, target, module)})
			require.ErrorIs(t, err, keys.ErrKEKInUse)
			n, _ := e.rows(t, attacker)
			require.Zero(t, n)
		})
	}
	m.PurgeAll()
	for _, ctx := range []context.Context{platformCtx, victimCtx} {
		ct, err := m.Seal(ctx, []byte("still here"), field)
		require.NoError(t, err)
		_, err = m.Open(ctx, ct, field)
		require.NoError(t, err)
	}
}
