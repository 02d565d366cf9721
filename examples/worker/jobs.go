package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Payload is a tenant job's own data: what its handler gets. It is sealed,
// as JSON, inside the job's envelope, never stored beside it. Kind names
// the River job kind and must not depend on the value (River asks the zero
// value).
type Payload interface {
	Kind() string
}

// Args are the River job args of every tenant job of kind P: the tenant
// envelope (tenant.JobCarrier's JSON) and nothing else, so no field of a
// queued job names a tenant a producer or a queue writer could re-aim.
type Args[P Payload] struct {
	// Envelope is the sealed tenant, job ID, expiry, audience and payload.
	Envelope json.RawMessage `json:"envelope"`
}

// Kind returns P's kind.
func (Args[P]) Kind() string {
	var p P
	return p.Kind()
}

// Job is what a [Handler] gets: the verified job ID of the envelope, the
// River row working it, and the decoded payload. The tenant is in the
// handler's context (tenant.FromContext).
type Job[P Payload] struct {
	// ID is the envelope's job ID, unique per tenant (the replay check's
	// key): use it to make the handler's writes idempotent.
	ID string
	// Row is River's job row (ID, Attempt, Queue, ...).
	Row *rivertype.JobRow
	// Payload is the payload as sealed by [Enqueue].
	Payload P
}

// Handler does a tenant job's work. Its context carries the job's tenant,
// so store.DB calls run as that tenant. It may run more than once for one
// job (after an error, a timeout or a crash before River recorded the
// job complete): make its writes idempotent, e.g. keyed by Job.ID.
type Handler[P Payload] func(ctx context.Context, job Job[P]) error

// audience is what an envelope is sealed for: the queue and the kind of
// the job, so that a job moved to another queue, or its envelope copied
// into a job of another kind, is refused. River queue names cannot contain
// "/", so the split is unambiguous.
func audience(queue, kind string) string { return queue + "/" + kind }

// Enqueuer seals jobs for the tenant of a context and inserts them into
// River.
type Enqueuer struct {
	client  *river.Client[pgx.Tx]
	carrier *tenant.JobCarrier
	ttl     time.Duration
}

// NewEnqueuer returns an Enqueuer inserting through client, sealing with
// carrier, whose envelopes stop being accepted ttl after they are sealed.
// ttl bounds how long a job may wait in the queue (retries included).
func NewEnqueuer(client *river.Client[pgx.Tx], carrier *tenant.JobCarrier, ttl time.Duration) (*Enqueuer, error) {
	switch {
	case client == nil:
		return nil, errors.New("worker: NewEnqueuer: client is required")
	case carrier == nil:
		return nil, errors.New("worker: NewEnqueuer: carrier is required")
	case ttl <= 0:
		return nil, fmt.Errorf("worker: NewEnqueuer: ttl %s must be positive", ttl)
	}
	return &Enqueuer{client: client, carrier: carrier, ttl: ttl}, nil
}

// Enqueue seals the tenant of ctx and payload into a new job's envelope,
// for the queue of opts (river.QueueDefault if unset) and P's kind, under
// a fresh random job ID, and inserts the job. It fails with an error
// wrapping tenant.ErrNoTenant if ctx carries no tenant: a job is never
// queued without one.
func Enqueue[P Payload](ctx context.Context, e *Enqueuer, payload P, opts *river.InsertOpts) (*rivertype.JobInsertResult, error) {
	var o river.InsertOpts
	if opts != nil {
		o = *opts
	}
	if o.Queue == "" {
		o.Queue = river.QueueDefault
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("worker: enqueue %s: payload: %w", payload.Kind(), err)
	}
	env, err := e.carrier.Seal(ctx, tenant.Job{
		ID:       newJobID(),
		Audience: audience(o.Queue, payload.Kind()),
		Expires:  time.Now().Add(e.ttl),
		Payload:  body,
	})
	if err != nil {
		return nil, fmt.Errorf("worker: enqueue %s: %w", payload.Kind(), err)
	}
	res, err := e.client.Insert(ctx, Args[P]{Envelope: env}, &o)
	if err != nil {
		return nil, fmt.Errorf("worker: enqueue %s: %w", payload.Kind(), err)
	}
	return res, nil
}

// newJobID returns 128 random bits in hex.
func newJobID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// Reason says why a job was refused, as recorded.
type Reason string

// The reasons a job is refused.
const (
	// ReasonNoEnvelope: the job's args carry no envelope.
	ReasonNoEnvelope Reason = "no_envelope"
	// ReasonTampered: the envelope does not verify (tenant, payload, ID,
	// expiry, audience or tag edited, or an unknown key).
	ReasonTampered Reason = "tampered"
	// ReasonExpired: the envelope is past its expiry.
	ReasonExpired Reason = "expired"
	// ReasonMisdirected: the envelope is for another queue or kind.
	ReasonMisdirected Reason = "misdirected"
	// ReasonReplayed: the envelope's job ran already, on this River row
	// to completion or on another row.
	ReasonReplayed Reason = "replayed"
	// ReasonCrossTenant: the worker's context was bound to another tenant.
	ReasonCrossTenant Reason = "cross_tenant"
	// ReasonBadPayload: the envelope verified but its payload does not
	// decode as the kind's payload.
	ReasonBadPayload Reason = "bad_payload"
)

// reasonOf maps tenant.JobCarrier.Open's errors to a reason; ok is false
// for an error that is not a refusal (the replay check's database failing).
func reasonOf(err error) (r Reason, ok bool) {
	switch {
	case errors.Is(err, tenant.ErrJobTampered):
		return ReasonTampered, true
	case errors.Is(err, tenant.ErrJobExpired):
		return ReasonExpired, true
	case errors.Is(err, tenant.ErrJobMisdirected):
		return ReasonMisdirected, true
	case errors.Is(err, tenant.ErrJobReplayed):
		return ReasonReplayed, true
	case errors.Is(err, tenant.ErrCrossTenant):
		return ReasonCrossTenant, true
	}
	return "", false
}

// MiddlewareConfig configures a [Middleware].
type MiddlewareConfig struct {
	// Carrier opens the envelopes. Required.
	Carrier *tenant.JobCarrier
	// Pool is the queue's own connection pool (the pool River uses): it
	// holds the replay and refusal tables, never tenant data. Required.
	Pool *pgxpool.Pool
	// Schema is the schema of those tables (made by [Install]). Required.
	Schema string
	// Logger logs refusals; nil discards.
	Logger *slog.Logger
	// PruneMargin is how long past its envelope's expiry, on the
	// database's clock, [Middleware.Prune] keeps a completed job's replay
	// entry; zero means [DefaultPruneMargin]. It must be at least the
	// worst skew between a worker's clock and the database's plus the
	// longest time a worker takes from Open's expiry check to the replay
	// table: an entry pruned sooner lets through a replay that a worker
	// found unexpired.
	PruneMargin time.Duration
}

// DefaultPruneMargin is [MiddlewareConfig.PruneMargin] when unset.
const DefaultPruneMargin = 10 * time.Minute

// Middleware is a River worker middleware (rivertype.WorkerMiddleware)
// that opens a tenant job's envelope before the job's handler runs, and
// runs the handler with a context carrying the envelope's tenant. A job it
// refuses (see [Reason]) does not run: it is recorded in the refusal table
// and cancelled (river.JobCancel), never retried. [AddWorker] installs it
// on every tenant worker; it is safe for concurrent use.
type Middleware struct {
	river.MiddlewareDefaults
	carrier *tenant.JobCarrier
	pool    *pgxpool.Pool
	q       tables
	log     *slog.Logger
	margin  time.Duration
}

var _ rivertype.WorkerMiddleware = (*Middleware)(nil)

// NewMiddleware checks cfg and returns the middleware.
func NewMiddleware(cfg MiddlewareConfig) (*Middleware, error) {
	switch {
	case cfg.Carrier == nil:
		return nil, errors.New("worker: MiddlewareConfig.Carrier is required")
	case cfg.Pool == nil:
		return nil, errors.New("worker: MiddlewareConfig.Pool is required")
	case cfg.Schema == "":
		return nil, errors.New("worker: MiddlewareConfig.Schema is required")
	case cfg.PruneMargin < 0:
		return nil, fmt.Errorf("worker: MiddlewareConfig.PruneMargin %s must not be negative", cfg.PruneMargin)
	}
	margin := cfg.PruneMargin
	if margin == 0 {
		margin = DefaultPruneMargin
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Middleware{carrier: cfg.Carrier, pool: cfg.Pool, q: tablesIn(cfg.Schema), log: log, margin: margin}, nil
}

// openedKey is the context key under which the middleware hands the
// opened job to the worker.
type openedKey struct{}

// Work opens the envelope of row and calls doInner with a context carrying
// its tenant and the opened job. A refused job returns river.JobCancel
// once its refusal is recorded; if recording fails, or the replay check
// cannot reach its table, it returns a plain error: River retries the job
// later, which is refused (or run) then, and never runs it meanwhile.
func (m *Middleware) Work(ctx context.Context, row *rivertype.JobRow, doInner func(ctx context.Context) error) error {
	var args struct {
		Envelope json.RawMessage `json:"envelope"`
	}
	if err := json.Unmarshal(row.EncodedArgs, &args); err != nil || len(args.Envelope) == 0 || string(args.Envelope) == "null" {
		return m.refuse(ctx, row, ReasonNoEnvelope, errors.New("the job's args carry no tenant envelope"))
	}
	tctx, job, err := m.carrier.Open(ctx, args.Envelope, tenant.OpenOptions{
		Audience: audience(row.Queue, row.Kind),
		Seen:     m.seen(row.ID),
	})
	if err != nil {
		reason, ok := reasonOf(err)
		if !ok {
			return fmt.Errorf("worker: job %d: %w", row.ID, err)
		}
		return m.refuse(ctx, row, reason, err)
	}
	id, _ := tenant.FromContext(tctx)
	if err := doInner(context.WithValue(tctx, openedKey{}, job)); err != nil {
		return err
	}
	// Completed: from now on the envelope is a replay, on this row too
	// (River's JobRetry of a completed job, or a crash before River marks
	// the row complete).
	if _, err := m.pool.Exec(ctx, m.q.complete, id.String(), job.ID, row.ID, job.Expires); err != nil {
		return fmt.Errorf("worker: job %d: record completion: %w", row.ID, err)
	}
	return nil
}

// seen is OpenOptions.Seen for River row rowID: it records (tenant, job
// ID) with the row that runs it. The job was seen before if another row
// recorded it, or this row ran it to completion; this row running it
// again after an error or a crash is a retry, not a replay.
func (m *Middleware) seen(rowID int64) func(context.Context, tenant.ID, string) (bool, error) {
	return func(ctx context.Context, id tenant.ID, jobID string) (bool, error) {
		tag, err := m.pool.Exec(ctx, m.q.insertSeen, id.String(), jobID, rowID)
		if err != nil {
			return false, err
		}
		if tag.RowsAffected() == 1 {
			return false, nil
		}
		var owner int64
		var completed bool
		if err := m.pool.QueryRow(ctx, m.q.selectSeen, id.String(), jobID).Scan(&owner, &completed); err != nil {
			return false, err
		}
		return owner != rowID || completed, nil
	}
}

// refuse records that row was refused for reason and returns the error
// that cancels it.
func (m *Middleware) refuse(ctx context.Context, row *rivertype.JobRow, reason Reason, cause error) error {
	sum := sha256.Sum256(row.EncodedArgs)
	_, err := m.pool.Exec(ctx, m.q.insertRefused, row.ID, row.Kind, row.Queue, row.Attempt,
		string(reason), cause.Error(), claimedTenant(row.EncodedArgs), sum[:])
	if err != nil {
		return fmt.Errorf("worker: job %d refused (%s), and recording the refusal failed: %w", row.ID, reason, err)
	}
	m.log.WarnContext(ctx, "worker: job refused", "job_id", row.ID, "kind", row.Kind, "queue", row.Queue, "reason", string(reason), "error", cause)
	return river.JobCancel(fmt.Errorf("worker: job refused (%s): %w", reason, cause))
}

// claimedTenant returns the tenant an envelope names, unverified and at
// most 64 bytes, for the refusal record ("" if none): which tenant a
// forged job was aimed at.
func claimedTenant(encodedArgs []byte) string {
	var args struct {
		Envelope struct {
			Tenant string `json:"tenant"`
		} `json:"envelope"`
	}
	_ = json.Unmarshal(encodedArgs, &args) // what does not parse claims nothing
	s := args.Envelope.Tenant
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

// worker is the River worker of a tenant kind: it takes the job the
// middleware opened, decodes its payload and calls the handler.
type worker[P Payload] struct {
	river.WorkerDefaults[Args[P]]
	mw     *Middleware
	handle Handler[P]
}

// Middleware returns the tenant middleware: a tenant worker never runs
// without it, whatever the client's configuration.
func (w *worker[P]) Middleware(*rivertype.JobRow) []rivertype.WorkerMiddleware {
	return []rivertype.WorkerMiddleware{w.mw}
}

func (w *worker[P]) Work(ctx context.Context, j *river.Job[Args[P]]) error {
	opened, ok := ctx.Value(openedKey{}).(tenant.Job)
	if _, has := tenant.FromContext(ctx); !ok || !has {
		// Only reachable if River stops running worker middleware: fail
		// closed.
		return river.JobCancel(errors.New("worker: job reached its handler without an opened tenant envelope"))
	}
	var p P
	if err := json.Unmarshal(opened.Payload, &p); err != nil {
		return w.mw.refuse(ctx, j.JobRow, ReasonBadPayload, fmt.Errorf("payload does not decode as %s: %w", p.Kind(), err))
	}
	return w.handle(ctx, Job[P]{ID: opened.ID, Row: j.JobRow, Payload: p})
}

// AddWorker registers handler for the jobs of kind P on workers, behind
// mw.
func AddWorker[P Payload](workers *river.Workers, mw *Middleware, handler Handler[P]) error {
	if mw == nil || handler == nil {
		return errors.New("worker: AddWorker: middleware and handler are required")
	}
	return river.AddWorkerSafely[Args[P]](workers, &worker[P]{mw: mw, handle: handler})
}

// tables is the SQL on the queue schema's two tables.
type tables struct {
	create, insertSeen, selectSeen, complete, prune, insertRefused, listRefused string
}

func tablesIn(schema string) tables {
	s := pgx.Identifier{schema}.Sanitize()
	return tables{
		create: `CREATE TABLE IF NOT EXISTS ` + s + `.tenant_job_seen (
				tenant_id text NOT NULL,
				job_id text NOT NULL,
				river_job_id bigint NOT NULL,
				seen_at timestamptz NOT NULL DEFAULT now(),
				completed_at timestamptz,
				expires_at timestamptz,
				PRIMARY KEY (tenant_id, job_id));
			CREATE TABLE IF NOT EXISTS ` + s + `.tenant_job_refused (
				river_job_id bigint PRIMARY KEY,
				kind text NOT NULL,
				queue text NOT NULL,
				attempt int NOT NULL,
				reason text NOT NULL,
				detail text NOT NULL,
				claimed_tenant text NOT NULL,
				args_sha256 bytea NOT NULL,
				refused_at timestamptz NOT NULL DEFAULT now())`,
		insertSeen: `INSERT INTO ` + s + `.tenant_job_seen (tenant_id, job_id, river_job_id)
			VALUES ($1, $2, $3) ON CONFLICT (tenant_id, job_id) DO NOTHING`,
		selectSeen: `SELECT river_job_id, completed_at IS NOT NULL FROM ` + s + `.tenant_job_seen
			WHERE tenant_id = $1 AND job_id = $2`,
		complete: `UPDATE ` + s + `.tenant_job_seen SET completed_at = now(), expires_at = $4
			WHERE tenant_id = $1 AND job_id = $2 AND river_job_id = $3`,
		prune: `DELETE FROM ` + s + `.tenant_job_seen WHERE expires_at < now() - $1::interval`,
		insertRefused: `INSERT INTO ` + s + `.tenant_job_refused
			(river_job_id, kind, queue, attempt, reason, detail, claimed_tenant, args_sha256)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (river_job_id) DO NOTHING`,
		listRefused: `SELECT river_job_id, kind, queue, attempt, reason, detail, claimed_tenant, refused_at
			FROM ` + s + `.tenant_job_refused ORDER BY refused_at, river_job_id`,
	}
}

// Install creates the replay and refusal tables in schema, through pool
// (a login that may create tables there: the queue's owner). It is
// idempotent; run it with River's migrations.
func Install(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	if _, err := pool.Exec(ctx, tablesIn(schema).create, pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("worker: install tables in schema %s: %w", schema, err)
	}
	return nil
}

// Prune deletes the replay entries of completed jobs whose envelope
// expired more than the middleware's PruneMargin ago, on the database's
// clock: a replay of one is refused as expired, which
// tenant.JobCarrier.Open checks, on the worker's clock, before it asks the
// replay table. The margin covers a worker whose clock is behind the
// database's, or that passed the expiry check just before the envelope
// expired and reaches the replay table after. Run it periodically (a
// River periodic job, say); it returns how many it deleted. Entries of
// jobs that never completed are kept.
func (m *Middleware) Prune(ctx context.Context) (int64, error) {
	tag, err := m.pool.Exec(ctx, m.q.prune, m.margin)
	if err != nil {
		return 0, fmt.Errorf("worker: prune replay entries: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Refusal is one recorded refusal.
type Refusal struct {
	// RiverJobID is the refused row's ID.
	RiverJobID int64
	// Kind and Queue are the row's.
	Kind, Queue string
	// Attempt is the row's attempt when refused (1: never retried).
	Attempt int
	// Reason is why.
	Reason Reason
	// Detail is the error that refused it; it never echoes the envelope.
	Detail string
	// ClaimedTenant is the tenant the envelope names, unverified.
	ClaimedTenant string
	// At is when.
	At time.Time
}

// Refusals returns the recorded refusals, oldest first.
func (m *Middleware) Refusals(ctx context.Context) ([]Refusal, error) {
	rows, err := m.pool.Query(ctx, m.q.listRefused)
	if err != nil {
		return nil, fmt.Errorf("worker: list refusals: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Refusal, error) {
		var f Refusal
		var reason string
		err := r.Scan(&f.RiverJobID, &f.Kind, &f.Queue, &f.Attempt, &reason, &f.Detail, &f.ClaimedTenant, &f.At)
		f.Reason = Reason(reason)
		return f, err
	})
	if err != nil {
		return nil, fmt.Errorf("worker: list refusals: %w", err)
	}
	return out, nil
}
