package store

// What package blob needs from store: each tenant's object storage usage
// and quota, accounted in the control plane, and the bucket of a tenant
// that has one of its own. The tables are made by control-plane step 5.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rtmx-ai/tenancy/tenant"
)

// NoLimit, as a field of [BlobLimits], means no limit.
const NoLimit int64 = -1

// BlobUsage is an amount of object storage: bytes, as stored, and objects.
type BlobUsage struct {
	Bytes   int64
	Objects int64
}

// BlobLimits are the most bytes (as stored) and objects a tenant may keep
// in object storage. A field of [NoLimit] sets no limit; 0 allows nothing.
// There is no other negative value.
type BlobLimits struct {
	Bytes   int64
	Objects int64
}

func (l BlobLimits) validate() error {
	if l.Bytes < NoLimit || l.Objects < NoLimit {
		return fmt.Errorf("blob limits %+v: a limit is 0 or more, or NoLimit (-1)", l)
	}
	return nil
}

// The limits a [BlobQuotaError] names.
const (
	QuotaBytes   = "bytes"
	QuotaObjects = "objects"
)

// ErrBlobQuotaExceeded is wrapped by the error of a change of a tenant's
// objects that would take it past a limit of its quota: a
// [*BlobQuotaError]. It is tenant.ErrQuotaExceeded, as are
// blob.ErrQuotaExceeded and ratelimit.ErrQuotaExceeded.
var ErrBlobQuotaExceeded = tenant.ErrQuotaExceeded

// BlobQuotaError reports a change refused by a tenant's quota: which
// limit, what the tenant has, what the change would add and the limit. It
// wraps [ErrBlobQuotaExceeded]. Package blob exports it as blob.QuotaError.
type BlobQuotaError struct {
	Tenant tenant.ID
	// Limit is QuotaBytes or QuotaObjects.
	Limit string
	// Usage is what the tenant has, in bytes or objects: what is recorded
	// as stored and what changes in progress hold.
	Usage int64
	// Change is what the refused change would add.
	Change int64
	// Max is the limit.
	Max int64
}

// Error implements error.
func (e *BlobQuotaError) Error() string {
	return fmt.Sprintf("quota exceeded: tenant %s has %d %s (changes in progress included); %d more would pass its limit of %d",
		e.Tenant, e.Usage, e.Limit, e.Change, e.Max)
}

// Unwrap returns ErrBlobQuotaExceeded.
func (e *BlobQuotaError) Unwrap() error { return ErrBlobQuotaExceeded }

// BlobChange is one change of one object of a tenant, for [Blobs.Change]:
// a write, an overwrite, a copy onto it or a delete. The store computes
// what it adds from what the key takes before (Stat) and after (After).
type BlobChange struct {
	// Key names the object. Changes of one key of a tenant run one at a
	// time: a second waits until the first is done (or its lease ends).
	Key string
	// After is what the key takes once the change is made: the stored
	// size and one object for a write, zero for a delete.
	After BlobUsage
	// Stat returns what the key takes in storage now: its stored size and
	// one object, or zero if there is no such object. It is called with
	// the key held, before Apply, and again if Apply fails, to learn what
	// the failed change did.
	Stat func(ctx context.Context) (BlobUsage, error)
	// Apply makes the change in storage. It is called once the change is
	// within the tenant's quota and reserved, and not otherwise.
	Apply func(ctx context.Context) error
	// Limits are the limits of each tier; a tenant's own limits
	// ([Admin.SetBlobQuota]) replace its tier's. Every tier a tenant may
	// have must be there.
	Limits map[tenant.Tier]BlobLimits
	// Lease is how long the key and the reservation are held for the
	// change without news of it. Past it, the change's process is taken
	// for dead: another change of the key may go ahead, and what the
	// reservation held stays counted until [Blobs.Reconcile].
	Lease time.Duration
}

func (c *BlobChange) validate() error {
	switch {
	case c.Key == "":
		return errors.New("BlobChange.Key is empty")
	case c.Stat == nil || c.Apply == nil:
		return errors.New("BlobChange.Stat and BlobChange.Apply are required")
	case c.Lease <= 0:
		return errors.New("BlobChange.Lease must be positive")
	case c.After.Bytes < 0 || c.After.Objects < 0 || c.After.Objects > 1:
		return fmt.Errorf("BlobChange.After %+v: an object takes 0 or more bytes, and a key holds 0 or 1 objects", c.After)
	}
	return nil
}

// BlobAccount is a tenant's object storage account, from [Blobs.Usage].
type BlobAccount struct {
	Tenant tenant.ID
	Tier   tenant.Tier
	// Limits are the limits in force: the tenant's own if Override, else
	// its tier's.
	Limits   BlobLimits
	Override bool
	// Used is what the tenant's objects take, as recorded: the sum of
	// every change made.
	Used BlobUsage
	// Pending is what changes in progress hold, and changes whose process
	// went away before saying whether it made them (counted as made, until
	// Reconcile). Quotas are checked against Used + Pending.
	Pending BlobUsage
	// NeedsReconcile reports that Used may differ from what storage holds:
	// changes whose process went away are pending, or a change was made
	// after its lease ended. [Blobs.Reconcile] recounts.
	NeedsReconcile bool
}

// Check returns a [*BlobQuotaError] if adding d to what the tenant has
// (Used + Pending) would pass one of its limits, bytes first, and nil
// otherwise. What does not add to a limit (zero or negative) passes none,
// even when the tenant is over it already.
func (a BlobAccount) Check(d BlobUsage) error {
	have := BlobUsage{a.Used.Bytes + a.Pending.Bytes, a.Used.Objects + a.Pending.Objects}
	for _, c := range []struct {
		name             string
		have, add, limit int64
	}{{QuotaBytes, have.Bytes, d.Bytes, a.Limits.Bytes}, {QuotaObjects, have.Objects, d.Objects, a.Limits.Objects}} {
		// have may be over the limit already (one lowered below usage).
		if c.add > 0 && c.limit != NoLimit && (c.have > c.limit || c.add > c.limit-c.have) {
			return &BlobQuotaError{Tenant: a.Tenant, Limit: c.name, Usage: c.have, Change: c.add, Max: c.limit}
		}
	}
	return nil
}

// BlobReconciliation reports what [Blobs.Reconcile] did.
type BlobReconciliation struct {
	// Before is what was recorded as used, and Dropped what the holds of
	// changes whose process went away held, before the recount.
	Before, Dropped BlobUsage
	// After is what the recount found, and is now recorded.
	After BlobUsage
}

// Blobs is the control-plane account of the tenants' object storage:
// usage, quota overrides and buckets of their own, for package blob. It is
// safe for concurrent use. Its methods take the tenant from the context
// (an error wrapping [tenant.ErrNoTenant] without one).
//
// The tables (tenancy.blob_usage, tenancy.blob_holds, tenancy.blob_quotas,
// tenancy.tenant_buckets) are made by the control-plane migrations, and
// [OpenAdmin] grants [DB]'s platform role what it needs of them.
//
// # Accounting
//
// A change of an object ([Blobs.Change]) holds its key, learns what the
// key takes now, reserves the difference within the quota, makes the
// change in storage and then records it: so changes of one key are
// counted one after another, and concurrent changes of a tenant never
// reserve past its limits. A change that only frees (a delete, a smaller
// overwrite) is never refused, even over the limits. A process that dies
// between reserving and recording leaves its reservation counted as made,
// whether it was or not: usage may then be too high, never too low, until
// [Blobs.Reconcile] recounts storage.
type Blobs struct {
	pool *pgxpool.Pool
}

// Blobs returns the object storage account on the platform role, for
// package blob's quotas and tenant buckets in request handling. It needs
// OpenAdmin's grants.
func (db *DB) Blobs() *Blobs { return &Blobs{pool: db.platform} }

// Blobs returns the object storage account on the admin connection, for
// provisioning and operators (purge, reconcile, usage reports).
func (a *Admin) Blobs() *Blobs { return &Blobs{pool: a.pool} }

// Polling intervals and the lease of a Reconcile's pause.
const (
	blobWaitMin        = 2 * time.Millisecond
	blobWaitMax        = 100 * time.Millisecond
	blobReconcileLease = 30 * time.Second
)

// secs is d in seconds, for "now() + make_interval(secs => $n)".
func secs(d time.Duration) float64 { return d.Seconds() }

// detached returns a context that outlives ctx's cancellation, for the
// bookkeeping that must follow a change already made (or given up).
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
}

// sleep waits d, or until ctx is done, and returns the next wait.
func sleep(ctx context.Context, d time.Duration) (time.Duration, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return d, ctx.Err()
	case <-t.C:
	}
	return min(2*d, blobWaitMax), nil
}

// Change makes change c of an object of the tenant of ctx, within the
// tenant's quota, and records it:
//
//  1. it holds c.Key (waiting, while another change of the key holds it);
//  2. calls c.Stat, and takes c.After minus what Stat returned as what
//     the change adds (negative: frees);
//  3. reserves that within the tenant's limits: if it would take the
//     tenant past one, Change returns a [*BlobQuotaError] and calls no
//     Apply; a change that adds nothing to a limit is never refused. While
//     a Reconcile of the tenant runs, it waits;
//  4. calls c.Apply; if Apply fails, calls c.Stat again to learn what it
//     did;
//  5. records what the change did, and releases the key.
//
// It returns the error of Stat or Apply as they gave it. Once Apply has
// succeeded, Change returns nil whatever happens to the bookkeeping: the
// change is made, and a reservation that could not be recorded stays
// counted until [Blobs.Reconcile].
func (s *Blobs) Change(ctx context.Context, c BlobChange) error {
	id, err := tenant.Require(ctx, "store: blob change")
	if err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return fmt.Errorf("store: blob change of tenant %s: %w", id, err)
	}
	hold, err := s.hold(ctx, id, c.Key, c.Lease)
	if err != nil {
		return fmt.Errorf("store: blob change of tenant %s: %w", id, err)
	}
	before, err := c.Stat(ctx)
	if err != nil {
		s.drop(ctx, hold)
		return err
	}
	delta := BlobUsage{c.After.Bytes - before.Bytes, c.After.Objects - before.Objects}
	if err := s.reserve(ctx, id, hold, delta, c.Limits, c.Lease); err != nil {
		s.drop(ctx, hold)
		var qe *BlobQuotaError
		if errors.As(err, &qe) {
			return err
		}
		return fmt.Errorf("store: blob change of tenant %s: %w", id, err)
	}
	applyErr := c.Apply(ctx)
	dctx, cancel := detached(ctx)
	defer cancel()
	made := delta
	if applyErr != nil {
		now, err := c.Stat(dctx)
		if err != nil {
			// What the failed change did is unknown: the reservation
			// stays, counted as made, until Reconcile.
			_, _ = s.pool.Exec(dctx, `UPDATE tenancy.blob_holds SET state = 'orphan' WHERE id = $1`, hold)
			return applyErr
		}
		made = BlobUsage{now.Bytes - before.Bytes, now.Objects - before.Objects}
	}
	_ = s.settle(dctx, id, hold, made) // on failure the reservation stays, counted as made
	return applyErr
}

// hold takes key of tenant id for one change, for lease: it returns the
// hold's ID once no other live hold has the key. An expired hold of the
// key becomes an orphan, whose reservation stays counted.
func (s *Blobs) hold(ctx context.Context, id tenant.ID, key string, lease time.Duration) (int64, error) {
	wait := blobWaitMin
	for {
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO tenancy.blob_usage (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING`, id.String())
		b.Queue(`UPDATE tenancy.blob_holds SET state = 'orphan'
			WHERE tenant_id = $1 AND object_key = $2 AND state IN ('held', 'reserved') AND expires_at <= now()`, id.String(), key)
		b.Queue(`INSERT INTO tenancy.blob_holds (tenant_id, object_key, state, expires_at)
			VALUES ($1, $2, 'held', now() + make_interval(secs => $3))
			ON CONFLICT (tenant_id, object_key) WHERE state IN ('held', 'reserved') DO NOTHING
			RETURNING id`, id.String(), key, secs(lease))
		var hold int64
		br := s.pool.SendBatch(ctx, b)
		_, err := br.Exec()
		if err == nil {
			_, err = br.Exec()
		}
		if err == nil {
			err = br.QueryRow().Scan(&hold)
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		switch {
		case err == nil:
			return hold, nil
		case isFKViolation(err):
			return 0, fmt.Errorf("%w: not in the directory", ErrUnknownTenant)
		case !errors.Is(err, pgx.ErrNoRows):
			return 0, fmt.Errorf("hold object key: %w", err)
		}
		// Another change of the key holds it.
		if wait, err = sleep(ctx, wait); err != nil {
			return 0, fmt.Errorf("wait for another change of the object: %w", err)
		}
	}
}

func isFKViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503"
}

// errHoldLost is the error of a change whose hold ended (its lease passed
// and another change of the key took the key) before it was reserved.
var errHoldLost = errors.New("the change's hold of the object ended before it was reserved (its lease passed): try again")

// reserve reserves d for hold within the tenant's limits; it waits while
// a Reconcile of the tenant runs.
func (s *Blobs) reserve(ctx context.Context, id tenant.ID, hold int64, d BlobUsage, limits map[tenant.Tier]BlobLimits, lease time.Duration) error {
	wait := blobWaitMin
	for {
		var (
			quotaErr error
			paused   bool
		)
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			// The usage row's lock orders every reservation, record and
			// Reconcile of the tenant.
			if err := tx.QueryRow(ctx, `SELECT COALESCE(reconcile_until > now(), false) FROM tenancy.blob_usage
				WHERE tenant_id = $1 FOR UPDATE`, id.String()).Scan(&paused); err != nil {
				return err
			}
			if paused {
				_, err := tx.Exec(ctx, `UPDATE tenancy.blob_holds SET expires_at = now() + make_interval(secs => $2)
					WHERE id = $1 AND state = 'held'`, hold, secs(lease))
				return err
			}
			acct, err := readAccount(ctx, tx, id, limits)
			if err != nil {
				return err
			}
			if quotaErr = acct.Check(d); quotaErr != nil {
				return nil
			}
			tag, err := tx.Exec(ctx, `UPDATE tenancy.blob_holds
				SET state = 'reserved', bytes = $2, objects = $3, expires_at = now() + make_interval(secs => $4)
				WHERE id = $1 AND state = 'held'`, hold, d.Bytes, d.Objects, secs(lease))
			if err == nil && tag.RowsAffected() == 0 {
				err = errHoldLost
			}
			return err
		})
		switch {
		case err != nil:
			return err
		case quotaErr != nil:
			return quotaErr
		case !paused:
			return nil
		}
		if wait, err = sleep(ctx, wait); err != nil {
			return fmt.Errorf("wait for the Reconcile of the tenant's objects: %w", err)
		}
	}
}

// settle records that the change of hold made made, and ends the hold. A
// hold that is gone (a Reconcile dropped it after its lease) records
// nothing, and marks the account as needing another Reconcile.
func (s *Blobs) settle(ctx context.Context, id tenant.ID, hold int64, made BlobUsage) error {
	b := &pgx.Batch{}
	// The usage row first, as every other writer of the tenant's holds
	// and usage locks it: no deadlock with Reconcile.
	b.Queue(`SELECT FROM tenancy.blob_usage WHERE tenant_id = $1 FOR UPDATE`, id.String())
	b.Queue(`WITH h AS (DELETE FROM tenancy.blob_holds WHERE id = $2 RETURNING id)
		UPDATE tenancy.blob_usage SET
			bytes = CASE WHEN EXISTS (SELECT FROM h) THEN GREATEST(bytes + $3, 0) ELSE bytes END,
			objects = CASE WHEN EXISTS (SELECT FROM h) THEN GREATEST(objects + $4, 0) ELSE objects END,
			stale = stale OR NOT EXISTS (SELECT FROM h) OR bytes + $3 < 0 OR objects + $4 < 0,
			updated_at = now()
		WHERE tenant_id = $1`, id.String(), hold, made.Bytes, made.Objects)
	return s.pool.SendBatch(ctx, b).Close()
}

// drop ends hold, whose change was not made.
func (s *Blobs) drop(ctx context.Context, hold int64) {
	ctx, cancel := detached(ctx)
	defer cancel()
	_, _ = s.pool.Exec(ctx, `DELETE FROM tenancy.blob_holds WHERE id = $1 AND state IN ('held', 'reserved')`, hold)
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// readAccount reads the account of tenant id.
func readAccount(ctx context.Context, q querier, id tenant.ID, limits map[tenant.Tier]BlobLimits) (BlobAccount, error) {
	var (
		a          BlobAccount
		tier       string
		maxB, maxO *int64
		stale      bool
		dead       int64
	)
	err := q.QueryRow(ctx, `SELECT t.tier, COALESCE(u.bytes, 0), COALESCE(u.objects, 0), COALESCE(u.stale, false),
			q.max_bytes, q.max_objects, p.bytes, p.objects, p.dead
		FROM (SELECT tier FROM tenancy.tenants WHERE id = $1) t
		LEFT JOIN LATERAL (SELECT bytes, objects, stale FROM tenancy.blob_usage WHERE tenant_id = $1) u ON true
		LEFT JOIN LATERAL (SELECT max_bytes, max_objects FROM tenancy.blob_quotas WHERE tenant_id = $1) q ON true
		CROSS JOIN LATERAL (
			SELECT COALESCE(sum(GREATEST(bytes, 0)), 0)::bigint AS bytes,
			       COALESCE(sum(GREATEST(objects, 0)), 0)::bigint AS objects,
			       count(*) FILTER (WHERE state = 'orphan' OR expires_at <= now()) AS dead
			FROM tenancy.blob_holds WHERE tenant_id = $1 AND state IN ('reserved', 'orphan')) p`,
		id.String()).Scan(&tier, &a.Used.Bytes, &a.Used.Objects, &stale, &maxB, &maxO, &a.Pending.Bytes, &a.Pending.Objects, &dead)
	if errors.Is(err, pgx.ErrNoRows) {
		return a, fmt.Errorf("%w: not in the directory", ErrUnknownTenant)
	}
	if err != nil {
		return a, err
	}
	a.Tenant, a.Tier, a.NeedsReconcile = id, tenant.Tier(tier), stale || dead > 0
	if maxB != nil && maxO != nil {
		a.Limits, a.Override = BlobLimits{*maxB, *maxO}, true
		return a, nil
	}
	l, ok := limits[a.Tier]
	if !ok {
		return a, fmt.Errorf("no blob limits for tier %s", a.Tier)
	}
	if err := l.validate(); err != nil {
		return a, err
	}
	a.Limits = l
	return a, nil
}

// Usage returns the object storage account of the tenant of ctx, with
// limits the limits of each tier (a tenant's own replace its tier's).
func (s *Blobs) Usage(ctx context.Context, limits map[tenant.Tier]BlobLimits) (BlobAccount, error) {
	id, err := tenant.Require(ctx, "store: blob usage")
	if err != nil {
		return BlobAccount{}, err
	}
	a, err := readAccount(ctx, s.pool, id, limits)
	if err != nil {
		return BlobAccount{}, fmt.Errorf("store: blob usage of tenant %s: %w", id, err)
	}
	return a, nil
}

// errReconcileLost is the cause of a Reconcile whose pause ended (it was
// not renewed in time) while it counted.
var errReconcileLost = errors.New("the reconcile's pause of the tenant's changes ended before it finished: run it again")

// Reconcile recounts the objects of the tenant of ctx and records what
// count finds as its usage, dropping the reservations of changes whose
// process went away. It pauses the tenant's changes while it counts:
//
//  1. changes that have not reserved yet wait (in [Blobs.Change]) until
//     it ends; it waits for those that have reserved to be recorded, or
//     for their leases to end;
//  2. it calls count, which must return what storage holds under the
//     tenant's prefix;
//  3. it records that, and lets changes go on.
//
// It waits while another Reconcile of the tenant runs. The pause is
// renewed while count runs and ends on its own if the process dies.
func (s *Blobs) Reconcile(ctx context.Context, count func(context.Context) (BlobUsage, error)) (BlobReconciliation, error) {
	id, err := tenant.Require(ctx, "store: blob reconcile")
	if err != nil {
		return BlobReconciliation{}, err
	}
	res, err := s.reconcile(ctx, id, count)
	if err != nil {
		return res, fmt.Errorf("store: reconcile blob usage of tenant %s: %w", id, err)
	}
	return res, nil
}

func (s *Blobs) reconcile(ctx context.Context, id tenant.ID, count func(context.Context) (BlobUsage, error)) (res BlobReconciliation, err error) {
	var tb [8]byte
	if _, err := rand.Read(tb[:]); err != nil {
		return res, err
	}
	token := int64(binary.BigEndian.Uint64(tb[:]) >> 1)
	if err := s.pauseChanges(ctx, id, token); err != nil {
		return res, err
	}
	defer func() {
		if err != nil {
			dctx, cancel := detached(ctx)
			defer cancel()
			_, _ = s.pool.Exec(dctx, `UPDATE tenancy.blob_usage SET reconcile_token = NULL, reconcile_until = NULL
				WHERE tenant_id = $1 AND reconcile_token = $2`, id.String(), token)
		}
	}()

	// Renew the pause until done.
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(blobReconcileLease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-rctx.Done():
				return
			case <-t.C:
			}
			tag, err := s.pool.Exec(rctx, `UPDATE tenancy.blob_usage SET reconcile_until = now() + make_interval(secs => $3)
				WHERE tenant_id = $1 AND reconcile_token = $2`, id.String(), token, secs(blobReconcileLease))
			if err == nil && tag.RowsAffected() == 0 {
				err = errReconcileLost
			}
			if err != nil {
				cancel(err)
				return
			}
		}
	}()
	defer func() { close(done); wg.Wait() }()

	// Changes that reserved before the pause are made and recorded, or
	// their leases end.
	wait := blobWaitMin
	for {
		var n int
		if err := s.pool.QueryRow(rctx, `SELECT count(*) FROM tenancy.blob_holds
			WHERE tenant_id = $1 AND state = 'reserved' AND expires_at > now()`, id.String()).Scan(&n); err != nil {
			return res, causeOf(rctx, err)
		}
		if n == 0 {
			break
		}
		if wait, err = sleep(rctx, wait); err != nil {
			return res, causeOf(rctx, err)
		}
	}
	counted, err := count(rctx)
	if err != nil {
		return res, causeOf(rctx, err)
	}
	if counted.Bytes < 0 || counted.Objects < 0 {
		return res, fmt.Errorf("count returned %+v", counted)
	}
	res.After = counted
	err = pgx.BeginFunc(rctx, s.pool, func(tx pgx.Tx) error {
		var got *int64
		if err := tx.QueryRow(rctx, `SELECT bytes, objects, reconcile_token FROM tenancy.blob_usage WHERE tenant_id = $1 FOR UPDATE`,
			id.String()).Scan(&res.Before.Bytes, &res.Before.Objects, &got); err != nil {
			return err
		}
		if got == nil || *got != token {
			return errReconcileLost
		}
		if err := tx.QueryRow(rctx, `WITH d AS (DELETE FROM tenancy.blob_holds
				WHERE tenant_id = $1 AND (state = 'orphan' OR (state = 'reserved' AND expires_at <= now()))
				RETURNING bytes, objects)
			SELECT COALESCE(sum(GREATEST(bytes, 0)), 0)::bigint, COALESCE(sum(GREATEST(objects, 0)), 0)::bigint FROM d`,
			id.String()).Scan(&res.Dropped.Bytes, &res.Dropped.Objects); err != nil {
			return err
		}
		_, err := tx.Exec(rctx, `UPDATE tenancy.blob_usage SET bytes = $2, objects = $3, stale = false,
				reconcile_token = NULL, reconcile_until = NULL, reconciled_at = now(), updated_at = now()
			WHERE tenant_id = $1`, id.String(), counted.Bytes, counted.Objects)
		return err
	})
	return res, causeOf(rctx, err)
}

// pauseChanges marks the tenant's usage as being reconciled, with token,
// once no other Reconcile of it runs.
func (s *Blobs) pauseChanges(ctx context.Context, id tenant.ID, token int64) error {
	wait := blobWaitMin
	for {
		var running bool
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO tenancy.blob_usage (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING`, id.String()); err != nil {
				return err
			}
			if err := tx.QueryRow(ctx, `SELECT COALESCE(reconcile_until > now(), false) FROM tenancy.blob_usage
				WHERE tenant_id = $1 FOR UPDATE`, id.String()).Scan(&running); err != nil || running {
				return err
			}
			_, err := tx.Exec(ctx, `UPDATE tenancy.blob_usage SET reconcile_token = $2, reconcile_until = now() + make_interval(secs => $3)
				WHERE tenant_id = $1`, id.String(), token, secs(blobReconcileLease))
			return err
		})
		switch {
		case isFKViolation(err):
			return fmt.Errorf("%w: not in the directory", ErrUnknownTenant)
		case err != nil:
			return err
		case !running:
			return nil
		}
		if wait, err = sleep(ctx, wait); err != nil {
			return fmt.Errorf("wait for another Reconcile of the tenant: %w", err)
		}
	}
}

// causeOf returns err, or the cause of ctx's cancellation if it has one
// of its own.
func causeOf(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if c := context.Cause(ctx); c != nil && !errors.Is(c, ctx.Err()) {
		return c
	}
	return err
}

// TenantBucket returns the URL of the bucket of the tenant of ctx's own
// ([Admin.SetTenantBucket]), or "" if it uses the platform's.
func (s *Blobs) TenantBucket(ctx context.Context) (string, error) {
	id, err := tenant.Require(ctx, "store: tenant bucket")
	if err != nil {
		return "", err
	}
	var u string
	err = s.pool.QueryRow(ctx, `SELECT url FROM tenancy.tenant_buckets WHERE tenant_id = $1`, id.String()).Scan(&u)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("store: bucket of tenant %s: %w", id, err)
	}
	return u, nil
}

// SetBlobQuota gives tenant id limits of its own, which replace its
// tier's. Limits below what the tenant stores already refuse every change
// that adds to them, not those that free.
func (a *Admin) SetBlobQuota(ctx context.Context, id tenant.ID, l BlobLimits) error {
	if err := l.validate(); err != nil {
		return fmt.Errorf("store: set blob quota of tenant %s: %w", id, err)
	}
	_, err := a.pool.Exec(ctx, `INSERT INTO tenancy.blob_quotas (tenant_id, max_bytes, max_objects) VALUES ($1, $2, $3)
		ON CONFLICT (tenant_id) DO UPDATE SET max_bytes = EXCLUDED.max_bytes, max_objects = EXCLUDED.max_objects, updated_at = now()`,
		id.String(), l.Bytes, l.Objects)
	if isFKViolation(err) {
		err = fmt.Errorf("%w: not in the directory", ErrUnknownTenant)
	}
	if err != nil {
		return fmt.Errorf("store: set blob quota of tenant %s: %w", id, err)
	}
	return nil
}

// ClearBlobQuota removes the limits of tenant id's own: its tier's apply
// again.
func (a *Admin) ClearBlobQuota(ctx context.Context, id tenant.ID) error {
	if _, err := a.pool.Exec(ctx, `DELETE FROM tenancy.blob_quotas WHERE tenant_id = $1`, id.String()); err != nil {
		return fmt.Errorf("store: clear blob quota of tenant %s: %w", id, err)
	}
	return nil
}

// maxBucketURL is the longest bucket URL recorded.
const maxBucketURL = 2048

// SetTenantBucket records rawURL as the bucket of tenant id's own, an
// enterprise or government tenant's, beside its placement: package blob
// then keeps the tenant's objects there (under the same prefix,
// tenants/<id>/, as in the platform's bucket). The URL is one of
// gocloud.dev/blob's (s3://bucket?region=..., gs://bucket, file:///path,
// ...); it is stored in the control plane as given, so it must hold no
// credentials (a user or password is refused). Set it when the tenant is
// provisioned, before it stores anything: objects do not move, and a
// process that has looked up a tenant's bucket keeps using it.
func (a *Admin) SetTenantBucket(ctx context.Context, id tenant.ID, rawURL string) error {
	if err := validBucketURL(rawURL); err != nil {
		return fmt.Errorf("store: set bucket of tenant %s: %w", id, err)
	}
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		var tier, state string
		err := tx.QueryRow(ctx, `SELECT tier, state FROM tenancy.tenants WHERE id = $1 FOR SHARE`, id.String()).Scan(&tier, &state)
		if errors.Is(err, pgx.ErrNoRows) || state == string(tenant.StateDeleted) {
			return fmt.Errorf("%w: not in the directory", ErrUnknownTenant)
		}
		if err != nil {
			return err
		}
		if tenant.Tier(tier) == tenant.TierStandard {
			return fmt.Errorf("the tenant's tier is %s: only enterprise and government tenants have buckets of their own", tier)
		}
		_, err = tx.Exec(ctx, `INSERT INTO tenancy.tenant_buckets (tenant_id, url) VALUES ($1, $2)
			ON CONFLICT (tenant_id) DO UPDATE SET url = EXCLUDED.url, updated_at = now()`, id.String(), rawURL)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: set bucket of tenant %s: %w", id, err)
	}
	return nil
}

func validBucketURL(s string) error {
	if s == "" || len(s) > maxBucketURL {
		return fmt.Errorf("the bucket URL must be 1 to %d bytes", maxBucketURL)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("the bucket URL does not parse: %w", err)
	case u.Scheme == "" || u.Opaque != "":
		return errors.New("the bucket URL must be scheme://bucket (s3://, gs://, azblob://, file://, mem://)")
	case u.User != nil:
		return errors.New("the bucket URL holds a user or password: credentials do not belong in the control plane")
	}
	return nil
}

// blobTables are the tables of Blobs, with what the platform role needs
// of each.
var blobTables = []struct{ table, privs string }{
	{"tenancy.blob_usage", "SELECT, INSERT, UPDATE"},
	{"tenancy.blob_holds", "SELECT, INSERT, UPDATE, DELETE"},
	{"tenancy.blob_quotas", "SELECT"},
	{"tenancy.tenant_buckets", "SELECT"},
}

// grantBlobs grants the platform role what [DB.Blobs] needs, and nothing
// else: it reads and writes usage and holds, and reads quota overrides and
// tenant buckets (only the admin role sets those). Every other role's
// privileges on these tables are revoked, so a previous platform role
// loses them. OpenAdmin runs it, in its migration transaction, with the
// rest of the platform role's grants (grantControlPlane).
func (a *Admin) grantBlobs(ctx context.Context, tx pgx.Tx) error {
	p := q(a.platform)
	for _, t := range blobTables {
		rows, err := tx.Query(ctx, `SELECT DISTINCT pg_catalog.pg_get_userbyid(acl.grantee)::text
			FROM pg_catalog.pg_class c, LATERAL pg_catalog.aclexplode(c.relacl) acl
			WHERE c.oid = $1::pg_catalog.regclass AND acl.grantee <> 0 AND acl.grantee <> c.relowner ORDER BY 1`, t.table)
		if err != nil {
			return err
		}
		grantees, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if err := execAll(ctx, tx, `REVOKE ALL ON `+t.table+` FROM PUBLIC`); err != nil {
			return err
		}
		for _, g := range grantees {
			if err := execAll(ctx, tx, `REVOKE ALL ON `+t.table+` FROM `+q(g)); err != nil {
				return err
			}
		}
		if err := execAll(ctx, tx, `GRANT `+t.privs+` ON `+t.table+` TO `+p); err != nil {
			return err
		}
	}
	return nil
}
