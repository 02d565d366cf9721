package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// fakeObjects is object storage for the tests of Blobs.Change: a size per
// key, changed only by the changes' Apply.
type fakeObjects struct {
	mu   sync.Mutex // guards size
	size map[string]int64
}

func newFakeObjects() *fakeObjects { return &fakeObjects{size: map[string]int64{}} }

func (f *fakeObjects) stat(key string) store.BlobUsage {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.size[key]
	if !ok {
		return store.BlobUsage{}
	}
	return store.BlobUsage{Bytes: n, Objects: 1}
}

func (f *fakeObjects) set(key string, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n < 0 {
		delete(f.size, key)
	} else {
		f.size[key] = n
	}
}

func (f *fakeObjects) total() store.BlobUsage {
	f.mu.Lock()
	defer f.mu.Unlock()
	var u store.BlobUsage
	for _, n := range f.size {
		u.Bytes += n
		u.Objects++
	}
	return u
}

// blobLimits are the tier limits of the tests of Blobs.
var blobLimits = map[tenant.Tier]store.BlobLimits{
	tenant.TierStandard:   {Bytes: 100, Objects: 3},
	tenant.TierEnterprise: {Bytes: store.NoLimit, Objects: store.NoLimit},
	tenant.TierGovernment: {Bytes: store.NoLimit, Objects: store.NoLimit},
}

// change is a change of key to n bytes (a delete if n < 0) in f, with
// lease and apply run before the object changes.
func (f *fakeObjects) change(key string, n int64, lease time.Duration, before func(ctx context.Context) error) store.BlobChange {
	after := store.BlobUsage{Bytes: n, Objects: 1}
	if n < 0 {
		after = store.BlobUsage{}
	}
	return store.BlobChange{
		Key:   key,
		After: after,
		Stat:  func(context.Context) (store.BlobUsage, error) { return f.stat(key), nil },
		Apply: func(ctx context.Context) error {
			if before != nil {
				if err := before(ctx); err != nil {
					return err
				}
			}
			f.set(key, n)
			return nil
		},
		Limits: blobLimits,
		Lease:  lease,
	}
}

// blobsEnv is an env whose platform role may use the blob tables.
func blobsEnv(t *testing.T) *env {
	t.Helper()
	return newEnv(t, store.ModeTenantLogin) // OpenAdmin grants the platform role the blob tables
}

// A change is reserved within the limits of the tenant's tier, or refused
// with a BlobQuotaError naming the limit, what the tenant has, what the
// change adds and the limit, without calling Apply; overwrites count the
// difference, deletes free, and what adds nothing is never refused.
func TestBlobChangeAccountsAndRefuses(t *testing.T) {
	e := blobsEnv(t)
	id, ctx := e.newTenant(t, "blobq")
	s, f := e.db.Blobs(), newFakeObjects()
	do := func(key string, n int64) error { return s.Change(ctx, f.change(key, n, time.Minute, nil)) }
	used := func() store.BlobUsage {
		a, err := s.Usage(ctx, blobLimits)
		require.NoError(t, err)
		assert.Zero(t, a.Pending, "nothing pending between changes")
		assert.False(t, a.NeedsReconcile)
		return a.Used
	}

	require.NoError(t, do("a", 40))
	require.NoError(t, do("b", 40))
	assert.Equal(t, store.BlobUsage{Bytes: 80, Objects: 2}, used())

	err := do("c", 30)
	require.ErrorIs(t, err, store.ErrBlobQuotaExceeded)
	var qe *store.BlobQuotaError
	require.ErrorAs(t, err, &qe)
	assert.Equal(t, store.BlobQuotaError{Tenant: id, Limit: store.QuotaBytes, Usage: 80, Change: 30, Max: 100}, *qe)
	assert.Contains(t, err.Error(), "bytes")
	assert.Zero(t, f.stat("c"), "a refused change is not applied")

	require.NoError(t, do("a", 10), "an overwrite adds the difference")
	assert.Equal(t, store.BlobUsage{Bytes: 50, Objects: 2}, used())
	require.NoError(t, do("c", 50), "exactly to the limit")
	assert.Equal(t, store.BlobUsage{Bytes: 100, Objects: 3}, used())
	require.NoError(t, do("c", 50), "an overwrite of the same size at the limit")
	err = do("d", 0)
	require.ErrorAs(t, err, &qe)
	assert.Equal(t, store.QuotaObjects, qe.Limit, "a fourth object: %v", err)
	require.NoError(t, do("b", -1), "a delete frees")
	assert.Equal(t, store.BlobUsage{Bytes: 60, Objects: 2}, used())
	require.NoError(t, do("nothing", -1), "deleting what is not there")
	assert.Equal(t, f.total(), used())
}

// Limits of a tenant's own replace its tier's; set below its usage, they
// refuse what adds and let what frees; cleared, the tier's apply again.
func TestBlobQuotaOverride(t *testing.T) {
	e := blobsEnv(t)
	id, ctx := e.newTenant(t, "blobo")
	s, f := e.db.Blobs(), newFakeObjects()
	for i := range 3 {
		require.NoError(t, s.Change(ctx, f.change(fmt.Sprint(i), 30, time.Minute, nil)))
	}
	require.NoError(t, e.admin.SetBlobQuota(t.Context(), id, store.BlobLimits{Bytes: 50, Objects: 1}))
	a, err := s.Usage(ctx, blobLimits)
	require.NoError(t, err)
	assert.True(t, a.Override)
	assert.Equal(t, store.BlobLimits{Bytes: 50, Objects: 1}, a.Limits)

	var qe *store.BlobQuotaError
	require.ErrorAs(t, s.Change(ctx, f.change("0", 31, time.Minute, nil)), &qe, "growing")
	assert.Equal(t, store.BlobQuotaError{Tenant: id, Limit: store.QuotaBytes, Usage: 90, Change: 1, Max: 50}, *qe)
	require.NoError(t, s.Change(ctx, f.change("0", 30, time.Minute, nil)), "the same size")
	require.NoError(t, s.Change(ctx, f.change("0", 5, time.Minute, nil)), "shrinking")
	require.NoError(t, s.Change(ctx, f.change("1", -1, time.Minute, nil)), "deleting")

	require.NoError(t, e.admin.ClearBlobQuota(t.Context(), id))
	require.NoError(t, s.Change(ctx, f.change("1", 30, time.Minute, nil)), "the tier's limits again")
	a, err = s.Usage(ctx, blobLimits)
	require.NoError(t, err)
	assert.False(t, a.Override)
	assert.Equal(t, blobLimits[tenant.TierStandard], a.Limits)
	assert.Equal(t, f.total(), a.Used)

	for _, l := range []store.BlobLimits{{Bytes: -2}, {Objects: -5}} {
		assert.Error(t, e.admin.SetBlobQuota(t.Context(), id, l), "%+v", l)
	}
	assert.ErrorIs(t, e.admin.SetBlobQuota(t.Context(), tenant.MustParseID("neverseen"), store.BlobLimits{}), store.ErrUnknownTenant)
	_, err = s.Usage(tenant.NewContext(t.Context(), tenant.MustParseID("neverseen")), blobLimits)
	assert.ErrorIs(t, err, store.ErrUnknownTenant)
	err = s.Change(tenant.NewContext(t.Context(), tenant.MustParseID("neverseen")), f.change("x", 1, time.Minute, nil))
	assert.ErrorIs(t, err, store.ErrUnknownTenant)
	assert.ErrorIs(t, s.Change(t.Context(), f.change("x", 1, time.Minute, nil)), tenant.ErrNoTenant)
	_, err = s.Usage(ctx, map[tenant.Tier]store.BlobLimits{})
	assert.Error(t, err, "no limits for the tenant's tier")
}

// Changes of one key run one after another: the second learns what the
// key takes only once the first is recorded, so that concurrent
// overwrites of one object count right.
func TestBlobChangesOfOneKeyRunInTurn(t *testing.T) {
	e := blobsEnv(t)
	_, ctx := e.newTenant(t, "blobk")
	s, f := e.db.Blobs(), newFakeObjects()
	inFirst, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- s.Change(ctx, f.change("k", 40, time.Minute, func(context.Context) error {
			close(inFirst)
			<-release
			return nil
		}))
	}()
	<-inFirst
	var secondStatted atomic.Bool
	second := make(chan error, 1)
	c := f.change("k", 10, time.Minute, nil)
	stat := c.Stat
	c.Stat = func(ctx context.Context) (store.BlobUsage, error) { secondStatted.Store(true); return stat(ctx) }
	go func() { second <- s.Change(ctx, c) }()
	time.Sleep(200 * time.Millisecond)
	assert.False(t, secondStatted.Load(), "the second change of the key ran while the first held it")
	close(release)
	require.NoError(t, <-first)
	require.NoError(t, <-second)
	a, err := s.Usage(ctx, blobLimits)
	require.NoError(t, err)
	assert.Equal(t, store.BlobUsage{Bytes: 10, Objects: 1}, a.Used)
	assert.Zero(t, a.Pending)
}

// A failed Apply is recorded as what storage shows it did; when storage
// cannot say, the reservation stays counted (never too low) until
// Reconcile, which records the recount and drops it.
func TestBlobChangeApplyFailure(t *testing.T) {
	e := blobsEnv(t)
	_, ctx := e.newTenant(t, "blobf")
	s, f := e.db.Blobs(), newFakeObjects()
	boom := errors.New("boom")
	account := func() store.BlobAccount {
		a, err := s.Usage(ctx, blobLimits)
		require.NoError(t, err)
		return a
	}

	// Failed, nothing done.
	c := f.change("a", 40, time.Minute, func(context.Context) error { return boom })
	require.ErrorIs(t, s.Change(ctx, c), boom)
	assert.Equal(t, store.BlobAccount{Tenant: account().Tenant, Tier: tenant.TierStandard, Limits: blobLimits[tenant.TierStandard]}, account())

	// Failed after storing (a lost response).
	c = f.change("a", 40, time.Minute, nil)
	apply := c.Apply
	c.Apply = func(ctx context.Context) error { _ = apply(ctx); return boom }
	require.ErrorIs(t, s.Change(ctx, c), boom)
	assert.Equal(t, store.BlobUsage{Bytes: 40, Objects: 1}, account().Used)
	assert.Zero(t, account().Pending)

	// Failed, and storage cannot say what happened.
	c = f.change("b", 30, time.Minute, nil)
	apply, stat := c.Apply, c.Stat
	calls := 0
	c.Apply = func(ctx context.Context) error { _ = apply(ctx); return boom }
	c.Stat = func(ctx context.Context) (store.BlobUsage, error) {
		if calls++; calls > 1 {
			return store.BlobUsage{}, boom
		}
		return stat(ctx)
	}
	require.ErrorIs(t, s.Change(ctx, c), boom)
	a := account()
	assert.Equal(t, store.BlobUsage{Bytes: 40, Objects: 1}, a.Used)
	assert.Equal(t, store.BlobUsage{Bytes: 30, Objects: 1}, a.Pending, "counted as made")
	assert.True(t, a.NeedsReconcile)
	var qe *store.BlobQuotaError
	require.ErrorAs(t, s.Change(ctx, f.change("c", 31, time.Minute, nil)), &qe, "the pending reservation counts")
	assert.EqualValues(t, 70, qe.Usage)

	res, err := s.Reconcile(ctx, func(context.Context) (store.BlobUsage, error) { return f.total(), nil })
	require.NoError(t, err)
	assert.Equal(t, store.BlobReconciliation{
		Before:  store.BlobUsage{Bytes: 40, Objects: 1},
		Dropped: store.BlobUsage{Bytes: 30, Objects: 1},
		After:   store.BlobUsage{Bytes: 70, Objects: 2},
	}, res)
	a = account()
	assert.Equal(t, f.total(), a.Used)
	assert.Zero(t, a.Pending)
	assert.False(t, a.NeedsReconcile)
}

// A change whose process stops answering holds its key for its lease
// only: then another change of the key goes ahead, and the first's
// reservation stays counted until it is recorded after all or
// reconciled.
func TestBlobHoldEndsWithItsLease(t *testing.T) {
	e := blobsEnv(t)
	_, ctx := e.newTenant(t, "blobl")
	s, f := e.db.Blobs(), newFakeObjects()
	const lease = 300 * time.Millisecond
	inFirst, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- s.Change(ctx, f.change("k", 40, lease, func(context.Context) error {
			close(inFirst)
			<-release
			return nil
		}))
	}()
	<-inFirst
	start := time.Now()
	require.NoError(t, s.Change(ctx, f.change("k", 20, time.Minute, nil)))
	assert.GreaterOrEqual(t, time.Since(start), lease/2, "the second change waited for the lease")
	a, err := s.Usage(ctx, blobLimits)
	require.NoError(t, err)
	assert.Equal(t, store.BlobUsage{Bytes: 20, Objects: 1}, a.Used)
	assert.Equal(t, store.BlobUsage{Bytes: 40, Objects: 1}, a.Pending, "the silent change's reservation")
	assert.True(t, a.NeedsReconcile)

	close(release) // the first change was alive after all: it is recorded
	require.NoError(t, <-first)
	a, err = s.Usage(ctx, blobLimits)
	require.NoError(t, err)
	assert.Zero(t, a.Pending)
	res, err := s.Reconcile(ctx, func(context.Context) (store.BlobUsage, error) { return f.total(), nil })
	require.NoError(t, err)
	assert.Equal(t, store.BlobUsage{Bytes: 40, Objects: 1}, res.After)
}

// Reconcile waits for the changes that reserved before it to be recorded,
// and holds off the others until it has recorded its count.
func TestBlobReconcilePausesChanges(t *testing.T) {
	e := blobsEnv(t)
	_, ctx := e.newTenant(t, "blobr")
	s, f := e.db.Blobs(), newFakeObjects()
	require.NoError(t, s.Change(ctx, f.change("old", 10, time.Minute, nil)))

	inFirst, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- s.Change(ctx, f.change("first", 20, time.Minute, func(context.Context) error {
			close(inFirst)
			<-release
			return nil
		}))
	}()
	<-inFirst
	counting, finish := make(chan struct{}), make(chan struct{})
	var counted store.BlobUsage
	reconciled := make(chan error, 1)
	go func() {
		_, err := s.Reconcile(ctx, func(context.Context) (store.BlobUsage, error) {
			close(counting)
			<-finish
			counted = f.total()
			return counted, nil
		})
		reconciled <- err
	}()
	select {
	case <-counting:
		t.Fatal("Reconcile counted while a reserved change was in progress")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-first)
	<-counting

	var applied atomic.Bool
	later := make(chan error, 1)
	go func() {
		later <- s.Change(ctx, f.change("later", 30, time.Minute, func(context.Context) error { applied.Store(true); return nil }))
	}()
	time.Sleep(200 * time.Millisecond)
	assert.False(t, applied.Load(), "a change was made while Reconcile counted")
	close(finish)
	require.NoError(t, <-reconciled)
	require.NoError(t, <-later)
	assert.Equal(t, store.BlobUsage{Bytes: 30, Objects: 2}, counted)
	a, err := s.Usage(ctx, blobLimits)
	require.NoError(t, err)
	assert.Equal(t, f.total(), a.Used)
}

// 16 goroutines changing the objects of one tenant (new keys, overwrites
// of shared keys, deletes) never hold more than its limit, and end with
// the usage storage holds.
func TestBlobChangesConcurrent(t *testing.T) {
	e := blobsEnv(t)
	id, ctx := e.newTenant(t, "blobc")
	const limit = 2000
	require.NoError(t, e.admin.SetBlobQuota(t.Context(), id, store.BlobLimits{Bytes: limit, Objects: store.NoLimit}))
	s, f := e.db.Blobs(), newFakeObjects()
	stop := make(chan struct{})
	var over atomic.Value
	monitor := make(chan struct{})
	go func() {
		defer close(monitor)
		for {
			select {
			case <-stop:
				return
			default:
			}
			a, err := s.Usage(ctx, blobLimits)
			if err == nil && a.Used.Bytes+a.Pending.Bytes > limit {
				over.Store(a)
			}
			if got := f.total(); got.Bytes > limit {
				over.Store(got)
			}
		}
	}()
	var refused atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range 25 {
				key := fmt.Sprintf("g%d/%d", g, i)
				if r.IntN(3) == 0 {
					key = fmt.Sprintf("shared/%d", r.IntN(4))
				}
				n := int64(r.IntN(200))
				if r.IntN(5) == 0 {
					n = -1
				}
				err := s.Change(ctx, f.change(key, n, time.Minute, nil))
				if errors.Is(err, store.ErrBlobQuotaExceeded) {
					refused.Add(1)
				} else if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-monitor
	assert.Nil(t, over.Load(), "over the limit")
	assert.Positive(t, refused.Load(), "the limit was reached")
	a, err := s.Usage(ctx, blobLimits)
	require.NoError(t, err)
	assert.Equal(t, f.total(), a.Used)
	assert.Zero(t, a.Pending)
	assert.False(t, a.NeedsReconcile)
}

// A tenant's bucket of its own is recorded for enterprise and government
// tenants only, with a URL that holds no credentials, and read by the
// DB's platform role for that tenant only.
func TestTenantBucket(t *testing.T) {
	e := blobsEnv(t)
	std, stdCtx := e.newTenant(t, "bstd")
	e.tier = tenant.TierEnterprise
	ent, entCtx := e.newTenant(t, "bent")
	ent2, ent2Ctx := e.newTenant(t, "bentb")
	admin, s := e.admin, e.db.Blobs()

	require.NoError(t, admin.SetTenantBucket(t.Context(), ent, "s3://acme-objects?region=eu-west-1"))
	require.NoError(t, admin.SetTenantBucket(t.Context(), ent, "file:///srv/acme"), "set again")
	got, err := s.TenantBucket(entCtx)
	require.NoError(t, err)
	assert.Equal(t, "file:///srv/acme", got)
	for _, ctx := range []context.Context{stdCtx, ent2Ctx} {
		got, err := s.TenantBucket(ctx)
		require.NoError(t, err)
		assert.Empty(t, got)
	}
	_, err = s.TenantBucket(t.Context())
	assert.ErrorIs(t, err, tenant.ErrNoTenant)

	err = admin.SetTenantBucket(t.Context(), std, "s3://b")
	assert.ErrorContains(t, err, "enterprise and government")
	assert.ErrorIs(t, admin.SetTenantBucket(t.Context(), tenant.MustParseID("neverseen"), "s3://b"), store.ErrUnknownTenant)
	for _, u := range []string{"", "bucket", "s3:bucket", "s3://key:secret@bucket", "s3://user@bucket", "%zz", "s3://" + strings.Repeat("b", 2048)} {
		assert.Error(t, admin.SetTenantBucket(t.Context(), ent2, u), "%q", u)
	}
	got, err = s.TenantBucket(ent2Ctx)
	require.NoError(t, err)
	assert.Empty(t, got)
}

// The platform role reads and writes usage and holds and only reads quota
// overrides and tenant buckets; tenant SQL reaches none of them; other
// roles' grants are revoked.
func TestBlobTablesPrivileges(t *testing.T) {
	e := blobsEnv(t)
	id, ctx := e.newTenant(t, "bpriv")
	require.NoError(t, e.admin.SetBlobQuota(t.Context(), id, store.BlobLimits{Bytes: 1, Objects: 1}))
	pool, err := pgxpool.New(t.Context(), platform(t, e.d))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	for _, sql := range []string{
		`INSERT INTO tenancy.blob_quotas (tenant_id, max_bytes, max_objects) VALUES ($1, -1, -1)`,
		`UPDATE tenancy.blob_quotas SET max_bytes = -1 WHERE tenant_id = $1`,
		`DELETE FROM tenancy.blob_quotas WHERE tenant_id = $1`,
		`INSERT INTO tenancy.tenant_buckets (tenant_id, url) VALUES ($1, 's3://x')`,
		`UPDATE tenancy.tenant_buckets SET url = 's3://x' WHERE tenant_id = $1`,
		`DELETE FROM tenancy.blob_usage WHERE tenant_id = $1`,
	} {
		_, err := pool.Exec(t.Context(), sql, id.String())
		assert.Equal(t, "42501", pgCode(err), "%s: %v", sql, err)
	}
	for _, table := range []string{"blob_usage", "blob_holds", "blob_quotas", "tenant_buckets"} {
		_, err := pool.Exec(t.Context(), `TRUNCATE tenancy.`+table)
		assert.Equal(t, "42501", pgCode(err), "TRUNCATE %s: %v", table, err)
		rows, err := e.db.Query(ctx, `SELECT * FROM tenancy.`+table)
		if err == nil {
			rows.Close()
			err = rows.Err()
		}
		assert.Equal(t, "42501", pgCode(err), "tenant SQL reads %s: %v", table, err)
	}

	stray := e.d.CreateRole(t, fmt.Sprintf("blobstray%d", tenantSeq.Add(1)), "")
	e.d.Exec(t, `GRANT SELECT ON tenancy.blob_usage, tenancy.tenant_buckets TO `+roleOf(t, stray))
	again, err := store.OpenAdmin(t.Context(), adminConfig(t, e.d, platform(t, e.d), store.ModeTenantLogin))
	require.NoError(t, err)
	again.Close()
	var can bool
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT has_table_privilege($1, 'tenancy.blob_usage', 'SELECT')
		OR has_table_privilege($1, 'tenancy.tenant_buckets', 'SELECT')`, roleOf(t, stray)).Scan(&can))
	assert.False(t, can, "OpenAdmin revokes other roles' privileges on the blob tables")
}
