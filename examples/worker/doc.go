// Command worker runs background jobs that carry their tenant on a real
// job queue on PostgreSQL (River, github.com/riverqueue/river, with its
// pgx v5 driver), and shows a forged job and a replayed one refused:
//
//	go run ./examples/worker
//
// It needs a PostgreSQL superuser; by default
// postgres://postgres@127.0.0.1:5432/postgres (override with -admin-url
// or TENANCY_WORKER_ADMIN_URL). Each run creates a scratch database
// tenancy_worker_<random> and roles tw<random>_*, and drops them at the
// end (also on Ctrl-C or SIGTERM). A run holds an advisory lock on its
// database's name while it lives; each run first drops the databases and
// roles of runs that were killed (their lock is free), never those of a
// run in progress.
//
// # Design
//
// A job's River args are its tenant envelope and nothing else ([Args]):
// the envelope is tenant.JobCarrier's sealed JSON binding the tenant, a
// random job ID, an expiry, the audience "<queue>/<kind>" and the payload
// under one HMAC tag. No field of the queued row names the tenant in the
// clear, so neither a producer nor anyone who can write River's tables can
// re-aim a job at another tenant: editing the tenant, the payload or the
// audience breaks the tag.
//
//   - [Enqueue] takes the tenant from the caller's context (an HTTP
//     request's, put there by authz) and seals it with the payload; without
//     a tenant nothing is queued (tenant.ErrNoTenant).
//   - [Middleware] is a rivertype.WorkerMiddleware. Before the handler runs
//     it opens the envelope with the row's own queue and kind as audience
//     and the replay check as OpenOptions.Seen, and calls the handler with
//     a context carrying the envelope's tenant: tenant.FromContext works in
//     the handler and store.DB runs its queries on connections logged in as
//     that tenant. [AddWorker] returns the middleware from the worker's own
//     Middleware method, so a tenant worker cannot be registered without it.
//   - A job without an envelope, with one that does not verify, expired,
//     for another queue or kind, or replayed, is not run: it is recorded
//     and cancelled with river.JobCancel, so River never retries it.
//
// River runs on its own schema ("queue") as its own login role, which
// owns River's tables and the worker's two tables and holds no privilege
// on any tenant's schema; tenant logins have none on the queue's schema.
// A job therefore cannot be enqueued inside a tenant's transaction
// (River's InsertTx): the tenant's connection cannot reach the queue, by
// design.
//
// # Replays
//
// The replay check is a table keyed by (tenant, job ID),
// queue.tenant_job_seen, written with INSERT ... ON CONFLICT DO NOTHING
// after the envelope verified (so only authentic jobs are remembered).
// Each entry records the River row that first took the job, and is marked
// completed when its handler returned success. A job is a replay if
// another River row took it first (the same envelope inserted twice: at
// most one of them runs, even concurrently) or if it completed (River's
// JobRetry of a completed row). The same row running again before it
// completed is a retry, not a replay, and runs: after the handler
// returned an error, and after a crash between the replay check and
// completion (River's rescuer makes the row retryable). Jobs are thus
// at least once per envelope, never on two rows: a handler must make its
// writes idempotent, keyed by Job.ID, as [Recount] does. A crash after
// the handler committed but before the completion mark runs the handler
// again on the same row; a crash after the mark but before River
// recorded the row complete refuses the rerun as a replay, which is
// right: the work was done.
//
// [Middleware.Prune] deletes the entries of completed jobs whose
// envelope expired more than [MiddlewareConfig.PruneMargin] ago (10
// minutes by default), on the database's clock: Open refuses an expired
// envelope before it asks Seen, so a replay of one is still refused, as
// expired, and the margin covers a worker whose clock is behind, or that
// passed the expiry check just before the envelope expired.
//
// # Refusals
//
// A refusal is recorded in queue.tenant_job_refused, a tenant-independent
// table beside River's, written by the queue's login: the River row, kind,
// queue, attempt, [Reason], the error (which never echoes the envelope),
// the tenant the envelope claims (unverified) and a SHA-256 of the args.
// It is never written to, or as, the tenant the job claims: a forged job
// must not be able to put anything into its target, not even an audit
// entry, and an envelope that does not verify names no tenant one could
// trust. The platform audit trail (audit.Platform) was the alternative;
// it needs a store.Admin, the connection that can run DDL on every
// tenant, and a worker that reads queue rows anyone with queue access can
// write should not hold it. A deployment that wants refusals in the
// platform trail ships this table's rows there from the administrative
// side. If recording fails the job is not run and not cancelled: River
// retries it, and it is refused and recorded then.
//
// A refused job is cancelled at its first attempt (Refusal.Attempt 1):
// River keeps the row, state cancelled, with the error in its errors.
//
// # Security
//
// The carrier's key is a platform secret shared by enqueuers and
// workers; anyone holding it can seal jobs for any tenant. The tables of
// the queue schema hold tenant IDs and job IDs, never payloads.
package main
