package faults_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/jackc/pgx/v5"
	"github.com/tink-crypto/tink-go-awskms/v3/integration/awskms"
	"github.com/tink-crypto/tink-go/v2/core/registry"

	"github.com/rtmx-ai/tenancy/internal/awskmstest"
	"github.com/rtmx-ai/tenancy/internal/tcpproxy"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// field is where the load's sealed values belong.
var field = keys.Binding{Table: "writes", Column: "secret", RowKey: "1"}

// keyOp is one Seal and Open of the load.
type keyOp struct {
	id         tenant.ID
	start, end time.Time
	err        error
}

// keyFault is a master key that the test makes unavailable, and perhaps
// available again.
type keyFault struct {
	kms     registry.KMSClient
	uri     keys.URI
	name    string // what a clear error names: the key's URI or ARN
	cut     func()
	restore func() // nil: the key cannot come back
}

// keysFixture is a store with tenants, a provisioning Manager and a
// serving Manager whose cache lasts maxAge.
type keysFixture struct {
	f         *fixture
	prov, srv *keys.Manager
}

func newKeysFixture(t *testing.T, prefix string, k keyFault, maxAge time.Duration, n int) *keysFixture {
	t.Helper()
	f := newFixture(t, databaseFor(t, store.ModeTenantLogin), store.ModeTenantLogin, prefix, n)
	mk := func(ks keys.Store, edit func(*keys.Config)) *keys.Manager {
		kc := keys.DefaultConfig()
		kc.Store, kc.KMS, kc.PlatformKEK = ks, []registry.KMSClient{k.kms}, k.uri
		kc.LoadTimeout = 2 * time.Second
		if edit != nil {
			edit(&kc)
		}
		m, err := keys.New(kc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	return &keysFixture{
		f:    f,
		prov: mk(f.admin.Keysets(), nil),
		srv:  mk(f.db.Keysets(), func(c *keys.Config) { c.CacheMaxAge = maxAge }),
	}
}

// keysetRows counts the keysets stored for id.
func keysetRows(t *testing.T, d interface{ AdminURL() string }, id tenant.ID) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), d.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM tenancy.tenant_keysets WHERE tenant_id = $1`, id.String()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// runMasterKeyFault provisions 6 tenants under the fault's key, warms the
// serving Manager's cache with 4 of them, runs a load of Seal and Open of
// those 4 (2 goroutines each) and makes the key unavailable while it runs:
//
//   - the warm tenants' operations all succeed until their cache entries
//     reach maxAge, and none succeeds after that;
//   - the 2 cold tenants' Open fails at once with an error wrapping
//     keys.ErrUnwrap and naming the key;
//   - provisioning a new tenant fails the same way and stores no keyset;
//   - when the key comes back (if it can), every tenant seals and opens
//     again within a bound, and provisioning works.
func runMasterKeyFault(t *testing.T, k keyFault) {
	const maxAge = 2 * time.Second
	const slack = 300 * time.Millisecond
	kf := newKeysFixture(t, uniquePrefix("mk"), k, maxAge, 6)
	warm, cold := kf.f.ids[:4], kf.f.ids[4:]
	coldCT := map[tenant.ID][]byte{}
	for _, id := range kf.f.ids {
		if err := kf.prov.Provision(t.Context(), id, keys.ProvisionOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range cold {
		ct, err := kf.prov.Seal(tenant.NewContext(t.Context(), id), []byte("cold "+id.String()), field)
		if err != nil {
			t.Fatal(err)
		}
		coldCT[id] = ct
	}
	var loaded time.Time // the last warm tenant's cache entry was made before this
	for _, id := range warm {
		if _, err := kf.srv.Seal(tenant.NewContext(t.Context(), id), []byte("warm"), field); err != nil {
			t.Fatal(err)
		}
	}
	loaded = time.Now()

	var mu sync.Mutex // guards ops
	var ops []keyOp
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, id := range warm {
		for g := range 2 {
			wg.Go(func() {
				ctx := tenant.NewContext(context.Background(), id)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					op := keyOp{id: id, start: time.Now()}
					plain := fmt.Appendf(nil, "%s %d %d", id, g, i)
					ct, err := kf.srv.Seal(ctx, plain, field)
					if err == nil {
						var got []byte
						if got, err = kf.srv.Open(ctx, ct, field); err == nil && !bytes.Equal(got, plain) {
							err = fmt.Errorf("opened %q, sealed %q", got, plain)
						}
					}
					op.end, op.err = time.Now(), err
					mu.Lock()
					ops = append(ops, op)
					mu.Unlock()
					time.Sleep(2 * time.Millisecond)
				}
			})
		}
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)

	time.Sleep(300 * time.Millisecond)
	k.cut()
	cut := time.Now()

	// Cold tenants and provisioning fail at once, naming the key.
	var coldWG sync.WaitGroup
	for _, id := range cold {
		coldWG.Go(func() {
			_, err := kf.srv.Open(tenant.NewContext(t.Context(), id), coldCT[id], field)
			if !errors.Is(err, keys.ErrUnwrap) || !strings.Contains(err.Error(), k.name) {
				t.Errorf("cold tenant %s with the key unavailable: %v; want an error wrapping keys.ErrUnwrap naming %s", id, err, k.name)
			} else {
				t.Logf("cold tenant %s: %v", id, err)
			}
		})
	}
	coldWG.Wait()
	newID := tenant.MustParseID(uniquePrefix("mknew"))
	if err := kf.f.admin.CreateTenant(t.Context(), tenant.Info{ID: newID, Name: "New", Tier: tenant.TierStandard}); err != nil {
		t.Fatal(err)
	}
	err := kf.prov.Provision(t.Context(), newID, keys.ProvisionOptions{})
	if !errors.Is(err, keys.ErrUnwrap) || !strings.Contains(err.Error(), k.name) {
		t.Errorf("provisioning with the key unavailable: %v; want an error wrapping keys.ErrUnwrap naming %s", err, k.name)
	}
	if n := keysetRows(t, kf.f.d, newID); n != 0 {
		t.Errorf("provisioning with the key unavailable stored %d keysets", n)
	}
	if took := time.Since(cut); took > maxAge/2 {
		t.Errorf("the cold tenants and the provisioning took %v to fail", took)
	}

	time.Sleep(time.Until(loaded.Add(maxAge + 2*slack)))
	var back time.Time
	if k.restore != nil {
		k.restore()
		back = time.Now()
		// Every tenant works again within the bound.
		const bound = 10 * time.Second
		for _, id := range kf.f.ids {
			ctx := tenant.NewContext(t.Context(), id)
			for {
				ct, err := kf.srv.Seal(ctx, []byte("back"), field)
				if err == nil {
					_, err = kf.srv.Open(ctx, ct, field)
				}
				if err == nil && coldCT[id] != nil {
					_, err = kf.srv.Open(ctx, coldCT[id], field)
				}
				if err == nil {
					break
				}
				if time.Since(back) > bound {
					t.Fatalf("tenant %s %v after the key came back: %v", id, bound, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		t.Logf("every tenant works again %v after the key came back", time.Since(back).Round(time.Millisecond))
		if err := kf.prov.Provision(t.Context(), newID, keys.ProvisionOptions{}); err != nil {
			t.Errorf("provisioning after the key came back: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	stopLoad()

	// The warm tenants' load: all fine while cached, nothing after.
	ok, failed := map[tenant.ID]int{}, map[tenant.ID]int{}
	var bad []string
	for _, op := range ops {
		cached := op.end.Before(loaded.Add(maxAge - slack))
		expired := op.start.After(loaded.Add(maxAge+slack)) && (back.IsZero() || op.end.Before(back))
		switch {
		case op.err == nil && expired:
			bad = append(bad, fmt.Sprintf("%s: succeeded at %v, with the key away and the cache expired", op.id, op.start.Sub(cut).Round(time.Millisecond)))
		case op.err != nil && cached:
			bad = append(bad, fmt.Sprintf("%s: failed at %v, while cached: %v", op.id, op.start.Sub(cut).Round(time.Millisecond), op.err))
		case op.err != nil && expired && (!errors.Is(op.err, keys.ErrUnwrap) || !strings.Contains(op.err.Error(), k.name)):
			bad = append(bad, fmt.Sprintf("%s: failed with %v, want an error wrapping keys.ErrUnwrap naming %s", op.id, op.err, k.name))
		}
		if op.start.After(cut) && cached && op.err == nil {
			ok[op.id]++
		}
		if expired && op.err != nil {
			failed[op.id]++
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d operations of warm tenants went wrong, the first: %q", len(bad), bad[:min(len(bad), 5)])
	}
	for _, id := range warm {
		if ok[id] == 0 || failed[id] == 0 {
			t.Errorf("warm tenant %s: %d operations succeeded with the key away and cached, %d failed once expired: want some of each", id, ok[id], failed[id])
		}
	}
	t.Logf("warm tenants, with the key away: succeeded while cached %v, failed once expired %v", ok, failed)
}

// TestMasterKeyUnavailableUnderLoad makes the platform master key
// unavailable under a load of several tenants (see runMasterKeyFault): an
// AWS KMS (local-kms) that becomes unreachable (every connection to it
// cut and refused) and reachable again; a SoftHSM2 token removed, in
// masterkey_hsm_test.go.
func TestMasterKeyUnavailableUnderLoad(t *testing.T) {
	t.Run("aws-kms", func(t *testing.T) {
		srv := awskmstest.Start(t)
		proxy := tcpproxy.New(t, strings.TrimPrefix(srv.Endpoint(), "http://"))
		client := kms.New(kms.Options{
			Region:       srv.Region(),
			BaseEndpoint: aws.String("http://" + proxy.Addr()),
			Credentials: credentials.NewStaticCredentialsProvider(
				awskmstest.Credentials.AccessKeyID, awskmstest.Credentials.SecretAccessKey, ""),
			RetryMaxAttempts: 1,
		})
		tc, err := awskms.NewClientWithOptions(t.Context(), srv.URIPrefix(), awskms.WithKMS(client))
		if err != nil {
			t.Fatal(err)
		}
		arn := srv.CreateKey(t)
		runMasterKeyFault(t, keyFault{
			kms: tc, uri: keys.URI(awskmstest.KeyURI(arn)), name: arn,
			cut:     func() { proxy.Partition() },
			restore: proxy.Heal,
		})
	})
}
