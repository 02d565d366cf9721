package keys_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/testing/fakekms"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

// A master key that hangs (an HSM that stops answering) holds a load for
// LoadTimeout, no longer: the callers waiting for it get an error naming
// the master key (redacted), the load is forgotten, and the next caller
// tries again, and succeeds once the master key answers.
func TestLoadTimeoutBoundsAHungMasterKey(t *testing.T) {
	e := newEnv(t)
	kekURI, err := fakekms.NewKeyURI()
	require.NoError(t, err)
	fake, err := fakekms.NewClient(kekURI)
	require.NoError(t, err)
	hung := &hookClient{KMSClient: fake}
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock()

	setup := e.manager(t, func(c *keys.Config) { c.KMS = []registry.KMSClient{fake}; c.PlatformKEK = keys.URI(kekURI) })
	id, _ := provision(t, setup, "hung")

	const loadTimeout = 200 * time.Millisecond
	m := e.manager(t, func(c *keys.Config) {
		c.KMS = []registry.KMSClient{hung}
		c.PlatformKEK = keys.URI(kekURI)
		c.LoadTimeout = loadTimeout
	})
	hung.setHook(func(op string, n int64) error {
		select {
		case <-release: // answers again
		case <-time.After(time.Minute): // hung (for longer than any test)
		}
		return nil
	})

	for round := range 2 {
		// Several callers join the load; each has a deadline far beyond
		// LoadTimeout.
		ctx, cancel := context.WithTimeout(tenant.NewContext(ctxT(t), id), 30*time.Second)
		var wg sync.WaitGroup
		errs := make([]error, 4)
		took := make([]time.Duration, 4)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				_, errs[i] = m.Seal(ctx, []byte("x"), field)
				took[i] = time.Since(start)
			}()
		}
		wg.Wait()
		cancel()
		for i, err := range errs {
			require.Less(t, took[i], 10*loadTimeout, "round %d: a caller waited %v for a load bounded by %v", round, took[i], loadTimeout)
			require.ErrorIs(t, err, keys.ErrUnwrap, "round %d", round)
			require.ErrorIs(t, err, context.DeadlineExceeded, "round %d", round)
			require.Contains(t, err.Error(), keys.URI(kekURI).String(), "the error must name the master key")
			require.NotContains(t, err.Error(), kekURI, "a fake-kms URI carries its key: it must be redacted")
		}
	}
	s := m.Stats()
	require.GreaterOrEqual(t, s.Loads, uint64(2), "the second round must start a new load, not wait on the hung one")
	require.LessOrEqual(t, s.Loads, uint64(8))

	unblock()
	_, err = m.Seal(tenant.NewContext(ctxT(t), id), []byte("x"), field)
	require.NoError(t, err, "once the master key answers, the next caller loads the keyset")
}

// ctxClient is a KMS client whose AEADs implement tink.AEADWithContext and
// block until their context ends, recording that they saw it end.
type ctxClient struct {
	registry.KMSClient
	sawDeadline, returned atomic.Int64
}

func (c *ctxClient) GetAEAD(uri string) (tink.AEAD, error) {
	a, err := c.KMSClient.GetAEAD(uri)
	if err != nil {
		return nil, err
	}
	return &ctxAEAD{AEAD: a, c: c}, nil
}

type ctxAEAD struct {
	tink.AEAD
	c *ctxClient
}

func (a *ctxAEAD) wait(ctx context.Context) error {
	if _, ok := ctx.Deadline(); ok {
		a.c.sawDeadline.Add(1)
	}
	<-ctx.Done()
	a.c.returned.Add(1)
	return ctx.Err()
}

func (a *ctxAEAD) EncryptWithContext(ctx context.Context, pt, ad []byte) ([]byte, error) {
	return nil, a.wait(ctx)
}

func (a *ctxAEAD) DecryptWithContext(ctx context.Context, ct, ad []byte) ([]byte, error) {
	return nil, a.wait(ctx)
}

// A master key whose AEAD takes a context (pkcs11kms's does) gets the
// load's deadline, so the HSM call itself can give up; Provision, Rotate and
// Rewrap are bounded the same way.
func TestMasterKeyCallsGetTheLoadDeadline(t *testing.T) {
	e := newEnv(t)
	id, _ := provision(t, e.manager(t), "ctxkek")
	c := &ctxClient{KMSClient: e.local}
	const loadTimeout = 150 * time.Millisecond
	m := e.manager(t, func(cfg *keys.Config) { cfg.KMS = []registry.KMSClient{c}; cfg.LoadTimeout = loadTimeout })

	start := time.Now()
	_, err := m.Seal(tenant.NewContext(ctxT(t), id), []byte("x"), field)
	require.ErrorIs(t, err, keys.ErrUnwrap)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), e.platform)
	require.Less(t, time.Since(start), 10*loadTimeout)
	require.EqualValues(t, 1, c.sawDeadline.Load(), "the master key's DecryptWithContext did not get the load deadline")
	require.Eventually(t, func() bool { return c.returned.Load() == 1 }, time.Second, time.Millisecond)

	for name, op := range map[string]func() error{
		"Provision": func() error { return m.Provision(ctxT(t), newID("ctxnew"), keys.ProvisionOptions{}) },
		"Rotate":    func() error { return m.Rotate(ctxT(t), id, keys.PurposeData) },
		"Rewrap": func() error {
			to, _ := e.keyURI(t, "to.key")
			_, err := m.Rewrap(ctxT(t), e.platform, to)
			return err
		},
	} {
		start := time.Now()
		err := op()
		require.ErrorIs(t, err, context.DeadlineExceeded, name)
		require.True(t, errors.Is(err, keys.ErrUnwrap), "%s: %v", name, err)
		require.Less(t, time.Since(start), 10*loadTimeout, name)
	}
}
