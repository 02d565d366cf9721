package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

var (
	alpha = tenant.MustParseID("alpha")
	beta  = tenant.MustParseID("beta")
	gamma = tenant.MustParseID("gamma")
)

// newStack opens a stack on pgtest's server with the tenants alpha, beta
// and gamma, each with one requirement, and closes it when the test ends.
func newStack(t *testing.T, tag string, handler func(*store.DB) Handler[Recount]) *stack {
	t.Helper()
	d := pgtest.DB(t)
	s, err := openStack(t.Context(), testOptions(d, tag), []tenant.ID{alpha, beta, gamma}, handler)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.close(context.WithoutCancel(t.Context()))) })
	for _, id := range []tenant.ID{alpha, beta, gamma} {
		_, err := s.db.Exec(tenant.NewContext(t.Context(), id),
			`INSERT INTO requirements (req_id, requirement_text, status) VALUES ('REQ-'||upper($1::text)||'-001', 'x', 'COMPLETE')`, id.String())
		require.NoError(t, err)
	}
	return s
}

// recount is one row of a tenant's requirement_recounts.
type recount struct {
	Tenant, JobID, Label, Login string
	RiverJobID                  int64
	Total                       int
}

// recountsOf reads id's requirement_recounts as id.
func recountsOf(t *testing.T, s *stack, id tenant.ID) []recount {
	t.Helper()
	rows, err := s.db.Query(tenant.NewContext(t.Context(), id),
		`SELECT tenant_id, job_id, label, login, river_job_id, total FROM requirement_recounts ORDER BY river_job_id`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[recount])
	require.NoError(t, err)
	return out
}

// allRecounts reads every tenant's recounts, each as its tenant.
func allRecounts(t *testing.T, s *stack) map[tenant.ID][]recount {
	t.Helper()
	m := map[tenant.ID][]recount{}
	for _, id := range []tenant.ID{alpha, beta, gamma} {
		m[id] = recountsOf(t, s, id)
	}
	return m
}

// loginOf returns the login id's connections use.
func loginOf(t *testing.T, s *stack, id tenant.ID) string {
	t.Helper()
	var login string
	require.NoError(t, s.db.QueryRow(tenant.NewContext(t.Context(), id), `SELECT session_user`).Scan(&login))
	return login
}

// seal seals a Recount for id, for the default queue, expiring in a
// minute unless exp is set.
func seal(t *testing.T, s *stack, id tenant.ID, label string, exp time.Time) ([]byte, string) {
	t.Helper()
	if exp.IsZero() {
		exp = time.Now().Add(time.Minute)
	}
	jobID := newJobID()
	body, err := json.Marshal(Recount{Label: label})
	require.NoError(t, err)
	env, err := s.carrier.Seal(tenant.NewContext(t.Context(), id), tenant.Job{
		ID: jobID, Audience: audience(river.QueueDefault, Recount{}.Kind()), Expires: exp, Payload: body,
	})
	require.NoError(t, err)
	return env, jobID
}

// edit returns env with edit applied to its fields, tag unchanged.
func edit(t *testing.T, env []byte, fn func(map[string]any)) []byte {
	t.Helper()
	out, err := editEnvelope(env, fn)
	require.NoError(t, err)
	return out
}

// insertArgs inserts a job with args straight into River, as anyone who
// can write River's tables could.
func insertArgs(t *testing.T, s *stack, args river.JobArgs, opts *river.InsertOpts) int64 {
	t.Helper()
	res, err := s.client.Insert(t.Context(), args, opts)
	require.NoError(t, err)
	return res.Job.ID
}

// final waits for row id to reach a final state.
func final(t *testing.T, s *stack, id int64) *rivertype.JobRow {
	t.Helper()
	row, err := s.waitFinal(t.Context(), id)
	require.NoError(t, err)
	return row
}

// refusalOf returns the recorded refusal of row id, if any.
func refusalOf(t *testing.T, s *stack, id int64) (Refusal, bool) {
	t.Helper()
	all, err := s.mw.Refusals(t.Context())
	require.NoError(t, err)
	for _, f := range all {
		if f.RiverJobID == id {
			return f, true
		}
	}
	return Refusal{}, false
}

// requireRefused checks that row id was refused for reason at its first
// attempt, cancelled (never retried), recorded with the tenant it claims,
// and that no tenant's recounts changed since before (taken when the job
// was inserted) nor any names the row.
func requireRefused(t *testing.T, s *stack, id int64, reason Reason, claimed string, before map[tenant.ID][]recount) {
	t.Helper()
	row := final(t, s, id)
	for tid, rs := range allRecounts(t, s) {
		for _, r := range rs {
			assert.NotEqual(t, id, r.RiverJobID, "job %d: refused, yet it wrote to tenant %s", id, tid)
		}
	}
	assert.Equal(t, rivertype.JobStateCancelled, row.State, "job %d: not cancelled (errors %v)", id, row.Errors)
	assert.Equal(t, 1, row.Attempt, "job %d: retried", id)
	f, ok := refusalOf(t, s, id)
	if assert.True(t, ok, "job %d: refusal not recorded", id) {
		assert.Equal(t, reason, f.Reason, "job %d: %s", id, f.Detail)
		assert.Equal(t, 1, f.Attempt)
		assert.Equal(t, claimed, f.ClaimedTenant)
	}
	assert.Equal(t, before, allRecounts(t, s), "job %d: a refused job wrote to a tenant", id)
}

// TestJobRunsInItsOwnTenant enqueues a job as each tenant and checks that
// its handler ran with the tenant in its context, as the tenant's own
// login, and that its write landed in that tenant only.
func TestJobRunsInItsOwnTenant(t *testing.T) {
	t.Parallel()
	s := newStack(t, "own", nil)
	ran := map[tenant.ID]int64{}
	for _, id := range []tenant.ID{alpha, beta} {
		res, err := Enqueue(tenant.NewContext(t.Context(), id), s.enqueuer, Recount{Label: "own " + id.String()}, nil)
		require.NoError(t, err)
		row := final(t, s, res.Job.ID)
		require.Equal(t, rivertype.JobStateCompleted, row.State, "errors: %v", row.Errors)
		ran[id] = row.ID
	}
	got := allRecounts(t, s)
	for _, id := range []tenant.ID{alpha, beta} {
		if assert.Len(t, got[id], 1, "tenant %s", id) {
			r := got[id][0]
			assert.Equal(t, ran[id], r.RiverJobID)
			assert.Equal(t, "own "+id.String(), r.Label)
			assert.Equal(t, id.String(), r.Tenant)
			assert.Equal(t, loginOf(t, s, id), r.Login, "the job of %s ran as another login", id)
			assert.Equal(t, 1, r.Total)
		}
	}
	assert.Empty(t, got[gamma])
	// The queued row names no tenant in the clear: only the envelope.
	row, err := s.client.JobGet(t.Context(), ran[alpha])
	require.NoError(t, err)
	var args map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(row.EncodedArgs, &args))
	assert.Equal(t, []string{"envelope"}, keys(args))
	assert.Empty(t, row.Tags)
}

// TestQueueAndTenantsCannotReachEachOther checks that a tenant's
// connection cannot read River's tables or the replay and refusal tables,
// and that the queue's login cannot read a tenant's.
func TestQueueAndTenantsCannotReachEachOther(t *testing.T) {
	t.Parallel()
	s := newStack(t, "qx", nil)
	for _, table := range []string{"river_job", "tenant_job_seen", "tenant_job_refused"} {
		_, err := s.db.Exec(tenant.NewContext(t.Context(), alpha), `SELECT count(*) FROM queue.`+table)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, "tenant alpha read queue.%s", table)
		assert.Equal(t, "42501", pgErr.Code, "queue.%s: %v", table, err)
	}
	_, err := s.queue.Exec(t.Context(), `SELECT count(*) FROM `+pgx.Identifier{alpha.SchemaName(), "requirement_recounts"}.Sanitize())
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr, "the queue's login read a tenant's table")
	assert.Equal(t, "42501", pgErr.Code, "%v", err)
}

func keys(m map[string]json.RawMessage) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestEnqueueWithoutTenantQueuesNothing checks that a context without a
// tenant queues no job.
func TestEnqueueWithoutTenantQueuesNothing(t *testing.T) {
	t.Parallel()
	s := newStack(t, "nt", nil)
	_, err := Enqueue(t.Context(), s.enqueuer, Recount{Label: "x"}, nil)
	require.ErrorIs(t, err, tenant.ErrNoTenant)
	var n int
	require.NoError(t, s.queue.QueryRow(t.Context(), `SELECT count(*) FROM queue.river_job`).Scan(&n))
	assert.Zero(t, n)
}

// plainRecount is a job of Recount's kind whose args name the tenant in
// the clear, as a producer bypassing the enqueuer would write it.
type plainRecount struct {
	Tenant string `json:"tenant"`
	Label  string `json:"label"`
}

func (plainRecount) Kind() string { return Recount{}.Kind() }

// TestForgedJobsAreRefusedAndRecorded inserts, straight into River, jobs
// whose envelope is missing, was edited (tenant re-aimed, payload, job ID,
// expiry, audience, tag), expired, or is for another queue, and checks
// each is refused at its first attempt, cancelled, recorded with the
// tenant it claims, and wrote nothing to any tenant.
//
// rtmx:req REQ-TEN-020
func TestForgedJobsAreRefusedAndRecorded(t *testing.T) {
	t.Parallel()
	s := newStack(t, "fj", nil)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

	type forged struct {
		name    string
		claimed string
		reason  Reason
		insert  func(t *testing.T) int64
	}
	env, _ := seal(t, s, alpha, "alpha's job", time.Time{})
	cases := []forged{
		{"no envelope", "", ReasonNoEnvelope, func(t *testing.T) int64 {
			return insertArgs(t, s, Args[Recount]{}, nil)
		}},
		{"tenant in the clear", "", ReasonNoEnvelope, func(t *testing.T) int64 {
			return insertArgs(t, s, plainRecount{Tenant: "beta", Label: "plain"}, nil)
		}},
		{"tenant re-aimed", "beta", ReasonTampered, func(t *testing.T) int64 {
			return insertArgs(t, s, Args[Recount]{Envelope: edit(t, env, func(e map[string]any) { e["tenant"] = "beta" })}, nil)
		}},
		{"payload edited", "alpha", ReasonTampered, func(t *testing.T) int64 {
			return insertArgs(t, s, Args[Recount]{Envelope: edit(t, env, func(e map[string]any) { e["payload"] = b64(`{"label":"edited"}`) })}, nil)
		}},
		{"job ID edited", "alpha", ReasonTampered, func(t *testing.T) int64 {
			return insertArgs(t, s, Args[Recount]{Envelope: edit(t, env, func(e map[string]any) { e["id"] = newJobID() })}, nil)
		}},
		{"expiry extended", "alpha", ReasonTampered, func(t *testing.T) int64 {
			return insertArgs(t, s, Args[Recount]{Envelope: edit(t, env, func(e map[string]any) { e["exp"] = time.Now().Add(time.Hour).UnixNano() })}, nil)
		}},
		{"audience edited", "alpha", ReasonTampered, func(t *testing.T) int64 {
			return insertArgs(t, s, Args[Recount]{Envelope: edit(t, env, func(e map[string]any) { e["aud"] = "reports/recount_requirements" })},
				&river.InsertOpts{Queue: "reports"})
		}},
		{"tag edited", "alpha", ReasonTampered, func(t *testing.T) int64 {
			return insertArgs(t, s, Args[Recount]{Envelope: edit(t, env, func(e map[string]any) { e["tag"] = b64("0123456789abcdef0123456789abcdef") })}, nil)
		}},
		{"unknown key", "beta", ReasonTampered, func(t *testing.T) int64 {
			other, err := tenant.NewJobCarrier(randomBytes(32))
			require.NoError(t, err)
			foreign, err := other.Seal(tenant.NewContext(t.Context(), beta), tenant.Job{ID: newJobID(),
				Audience: audience(river.QueueDefault, Recount{}.Kind()), Expires: time.Now().Add(time.Minute), Payload: []byte(`{"label":"foreign"}`)})
			require.NoError(t, err)
			return insertArgs(t, s, Args[Recount]{Envelope: foreign}, nil)
		}},
		{"expired", "alpha", ReasonExpired, func(t *testing.T) int64 {
			short, _ := seal(t, s, alpha, "expired", time.Now().Add(300*time.Millisecond))
			return insertArgs(t, s, Args[Recount]{Envelope: short}, &river.InsertOpts{ScheduledAt: time.Now().Add(time.Second)})
		}},
		{"for another queue", "gamma", ReasonMisdirected, func(t *testing.T) int64 {
			// Sealed for the reports queue, moved to the default queue.
			res, err := Enqueue(tenant.NewContext(t.Context(), gamma), s.enqueuer, Recount{Label: "misdirected"},
				&river.InsertOpts{Queue: "reports", ScheduledAt: time.Now().Add(time.Hour)})
			require.NoError(t, err)
			var a Args[Recount]
			require.NoError(t, json.Unmarshal(res.Job.EncodedArgs, &a))
			_, err = s.client.JobCancel(t.Context(), res.Job.ID)
			require.NoError(t, err)
			return insertArgs(t, s, a, nil)
		}},
		{"undecodable payload", "beta", ReasonBadPayload, func(t *testing.T) int64 {
			bad, err := s.carrier.Seal(tenant.NewContext(t.Context(), beta), tenant.Job{ID: newJobID(),
				Audience: audience(river.QueueDefault, Recount{}.Kind()), Expires: time.Now().Add(time.Minute), Payload: []byte(`not json`)})
			require.NoError(t, err)
			return insertArgs(t, s, Args[Recount]{Envelope: bad}, nil)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := allRecounts(t, s)
			id := c.insert(t)
			requireRefused(t, s, id, c.reason, c.claimed, before)
		})
	}
	// The envelope they were forged from is authentic: inserted as is,
	// it runs, in alpha.
	id := insertArgs(t, s, Args[Recount]{Envelope: env}, nil)
	require.Equal(t, rivertype.JobStateCompleted, final(t, s, id).State)
	got := recountsOf(t, s, alpha)
	require.Len(t, got, 1)
	assert.Equal(t, "alpha's job", got[0].Label)
}

// TestReplayedEnvelopeIsRefused inserts a completed job's args again
// and checks the second row is refused as a replay and recorded, and the
// handler wrote once.
func TestReplayedEnvelopeIsRefused(t *testing.T) {
	t.Parallel()
	s := newStack(t, "rp", nil)
	res, err := Enqueue(tenant.NewContext(t.Context(), beta), s.enqueuer, Recount{Label: "once"}, nil)
	require.NoError(t, err)
	require.Equal(t, rivertype.JobStateCompleted, final(t, s, res.Job.ID).State)
	before := allRecounts(t, s)
	require.Len(t, before[beta], 1)

	var a Args[Recount]
	require.NoError(t, json.Unmarshal(res.Job.EncodedArgs, &a))
	again := insertArgs(t, s, a, nil)
	requireRefused(t, s, again, ReasonReplayed, beta.String(), before)
}

// TestSameEnvelopeInsertedTwiceAtOnceRunsOnce inserts the same envelope
// as several rows in one batch, for workers to take concurrently, and
// checks exactly one runs and the others are refused as replays.
func TestSameEnvelopeInsertedTwiceAtOnceRunsOnce(t *testing.T) {
	t.Parallel()
	s := newStack(t, "rc", nil)
	env, jobID := seal(t, s, gamma, "concurrent", time.Time{})
	params := make([]river.InsertManyParams, 6)
	for i := range params {
		params[i] = river.InsertManyParams{Args: Args[Recount]{Envelope: env}}
	}
	res, err := s.client.InsertMany(t.Context(), params)
	require.NoError(t, err)
	var completed, refused int
	for _, r := range res {
		row := final(t, s, r.Job.ID)
		switch row.State {
		case rivertype.JobStateCompleted:
			completed++
		case rivertype.JobStateCancelled:
			f, ok := refusalOf(t, s, row.ID)
			require.True(t, ok)
			assert.Equal(t, ReasonReplayed, f.Reason)
			refused++
		}
	}
	assert.Equal(t, 1, completed)
	assert.Equal(t, len(params)-1, refused)
	got := recountsOf(t, s, gamma)
	require.Len(t, got, 1)
	assert.Equal(t, jobID, got[0].JobID)
}

// TestFailedJobIsRetriedOnItsRow checks that a job whose handler failed
// after the replay check ran is retried on the same River row, not
// refused as a replay, and writes once.
func TestFailedJobIsRetriedOnItsRow(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	s := newStack(t, "rt", func(db *store.DB) Handler[Recount] {
		h := recountHandler(db)
		return func(ctx context.Context, job Job[Recount]) error {
			if calls.Add(1) == 1 {
				return errors.New("transient failure")
			}
			return h(ctx, job)
		}
	})
	res, err := Enqueue(tenant.NewContext(t.Context(), alpha), s.enqueuer, Recount{Label: "retried"}, nil)
	require.NoError(t, err)
	row := final(t, s, res.Job.ID)
	require.Equal(t, rivertype.JobStateCompleted, row.State, "errors: %v", row.Errors)
	assert.Equal(t, 2, row.Attempt)
	assert.EqualValues(t, 2, calls.Load())
	_, refused := refusalOf(t, s, row.ID)
	assert.False(t, refused)
	assert.Len(t, recountsOf(t, s, alpha), 1)
}

// TestRerunAfterCrashBetweenSeenAndCompletionRuns leaves a row in the
// state a worker that crashed after the replay check and before
// completion leaves it (the replay table names the row, not completed),
// lets River run it again, and checks it runs: a crash is a retry.
func TestRerunAfterCrashBetweenSeenAndCompletionRuns(t *testing.T) {
	t.Parallel()
	s := newStack(t, "cr", nil)
	env, jobID := seal(t, s, beta, "after crash", time.Time{})
	id := insertArgs(t, s, Args[Recount]{Envelope: env}, &river.InsertOpts{ScheduledAt: time.Now().Add(time.Hour)})
	_, err := s.queue.Exec(t.Context(), `INSERT INTO queue.tenant_job_seen (tenant_id, job_id, river_job_id) VALUES ($1, $2, $3)`, beta.String(), jobID, id)
	require.NoError(t, err)
	_, err = s.queue.Exec(t.Context(), `UPDATE queue.river_job SET attempt = 1, attempted_at = now() WHERE id = $1`, id)
	require.NoError(t, err)
	_, err = s.client.JobRetry(t.Context(), id) // what River's rescuer does
	require.NoError(t, err)
	row := final(t, s, id)
	require.Equal(t, rivertype.JobStateCompleted, row.State, "errors: %v", row.Errors)
	got := recountsOf(t, s, beta)
	require.Len(t, got, 1)
	assert.Equal(t, id, got[0].RiverJobID)
}

// TestCompletedRowRetriedIsReplay re-queues a completed row (River's
// JobRetry) and checks it is refused: a completed job never runs again,
// on its own row either.
func TestCompletedRowRetriedIsReplay(t *testing.T) {
	t.Parallel()
	s := newStack(t, "cp", nil)
	res, err := Enqueue(tenant.NewContext(t.Context(), alpha), s.enqueuer, Recount{Label: "done"}, nil)
	require.NoError(t, err)
	row := final(t, s, res.Job.ID)
	require.Equal(t, rivertype.JobStateCompleted, row.State)
	before := allRecounts(t, s)
	_, err = s.client.JobRetry(t.Context(), row.ID)
	require.NoError(t, err)
	// The row's attempt count goes on from the completed run.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		if f, ok := refusalOf(t, s, row.ID); ok {
			assert.Equal(t, ReasonReplayed, f.Reason)
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the re-queued completed row was not refused")
		case <-time.After(20 * time.Millisecond):
		}
	}
	assert.Equal(t, rivertype.JobStateCancelled, final(t, s, row.ID).State)
	assert.Equal(t, before, allRecounts(t, s))
}

// TestConcurrentJobsOfManyTenantsNeverCross enqueues many jobs for three
// tenants at once and checks every job's write landed in its own tenant,
// as its own login, and nowhere else.
func TestConcurrentJobsOfManyTenantsNeverCross(t *testing.T) {
	t.Parallel()
	s := newStack(t, "cc", nil)
	const perTenant = 30
	ids := []tenant.ID{alpha, beta, gamma}
	var mu sync.Mutex // guards want
	want := map[tenant.ID]map[int64]string{}
	var g errgroup.Group
	for _, id := range ids {
		want[id] = map[int64]string{}
		for i := range perTenant {
			g.Go(func() error {
				label := fmt.Sprintf("%s-%d", id, i)
				res, err := Enqueue(tenant.NewContext(t.Context(), id), s.enqueuer, Recount{Label: label}, nil)
				if err != nil {
					return err
				}
				mu.Lock()
				want[id][res.Job.ID] = label
				mu.Unlock()
				return nil
			})
		}
	}
	require.NoError(t, g.Wait())
	for _, id := range ids {
		for rid := range want[id] {
			require.Equal(t, rivertype.JobStateCompleted, final(t, s, rid).State)
		}
	}
	got := allRecounts(t, s)
	for _, id := range ids {
		login := loginOf(t, s, id)
		have := map[int64]string{}
		for _, r := range got[id] {
			have[r.RiverJobID] = r.Label
			assert.Equal(t, id.String(), r.Tenant)
			assert.Equal(t, login, r.Login, "a job of %s ran as another tenant's login", id)
		}
		assert.Equal(t, want[id], have, "tenant %s", id)
	}
	refused, err := s.mw.Refusals(t.Context())
	require.NoError(t, err)
	assert.Empty(t, refused)
}

// TestPrunedEntryStillRefusesReplay checks that Prune keeps a completed
// job's replay entry until its envelope expired more than the margin
// ago, on the database's clock (the default margin keeps an entry that
// just expired), then deletes it, and that a replay of it is still
// refused, as expired, and that entries of unexpired jobs are kept.
func TestPrunedEntryStillRefusesReplay(t *testing.T) {
	t.Parallel()
	s := newStack(t, "pr", nil)
	const margin = time.Second
	short, err := NewMiddleware(MiddlewareConfig{Carrier: s.carrier, Pool: s.queue, Schema: queueSchema, PruneMargin: margin})
	require.NoError(t, err)
	exp := time.Now().Add(4 * time.Second) // time enough for the first run, even on a loaded machine
	env, _ := seal(t, s, alpha, "short-lived", exp)
	first := insertArgs(t, s, Args[Recount]{Envelope: env}, nil)
	require.Equal(t, rivertype.JobStateCompleted, final(t, s, first).State)
	res, err := Enqueue(tenant.NewContext(t.Context(), beta), s.enqueuer, Recount{Label: "long-lived"}, nil)
	require.NoError(t, err)
	require.Equal(t, rivertype.JobStateCompleted, final(t, s, res.Job.ID).State)

	n, err := short.Prune(t.Context())
	require.NoError(t, err)
	assert.Zero(t, n, "an entry was pruned before its envelope expired")
	time.Sleep(time.Until(exp.Add(margin / 2)))
	n, err = short.Prune(t.Context())
	require.NoError(t, err)
	assert.Zero(t, n, "an entry was pruned within the margin after its envelope expired")
	time.Sleep(time.Until(exp.Add(margin + 500*time.Millisecond)))
	n, err = s.mw.Prune(t.Context())
	require.NoError(t, err)
	assert.Zero(t, n, "an entry was pruned within the default margin")
	n, err = short.Prune(t.Context())
	require.NoError(t, err)
	assert.EqualValues(t, 1, n)
	var left int
	require.NoError(t, s.queue.QueryRow(t.Context(), `SELECT count(*) FROM queue.tenant_job_seen WHERE tenant_id = 'beta'`).Scan(&left))
	assert.Equal(t, 1, left, "the unexpired entry was pruned")

	before := allRecounts(t, s)
	again := insertArgs(t, s, Args[Recount]{Envelope: env}, nil)
	requireRefused(t, s, again, ReasonExpired, "alpha", before)
}

// TestNegativePruneMarginIsRefused: NewMiddleware refuses a negative
// PruneMargin, naming the field.
func TestNegativePruneMarginIsRefused(t *testing.T) {
	t.Parallel()
	// NewMiddleware only keeps the carrier and the pool: zero values do.
	_, err := NewMiddleware(MiddlewareConfig{Carrier: &tenant.JobCarrier{}, Pool: &pgxpool.Pool{}, Schema: queueSchema, PruneMargin: -time.Second})
	require.ErrorContains(t, err, "PruneMargin")
	assert.ErrorContains(t, err, "negative")
}

// TestReplayOpenedBeforeExpiryIsRefusedAfterPrune replays a completed
// job's envelope through the worker's check in the window a prune can
// open: the envelope passes Open's expiry check while still valid, the
// pruner runs once it expired, and only then does the replay reach the
// replay table. The entry must still be there, so the replay is refused
// as a replay.
func TestReplayOpenedBeforeExpiryIsRefusedAfterPrune(t *testing.T) {
	t.Parallel()
	s := newStack(t, "pw", nil)
	exp := time.Now().Add(4 * time.Second) // time enough for the first run, even on a loaded machine
	env, jobID := seal(t, s, alpha, "pruned early", exp)
	first := insertArgs(t, s, Args[Recount]{Envelope: env}, nil)
	require.Equal(t, rivertype.JobStateCompleted, final(t, s, first).State)
	// The replay's River row, held back so no worker takes it: the check
	// below is what a worker taking it runs.
	replay := insertArgs(t, s, Args[Recount]{Envelope: env}, &river.InsertOpts{ScheduledAt: time.Now().Add(time.Hour)})

	seen := s.mw.seen(replay)
	var pruned int64
	_, _, err := s.carrier.Open(t.Context(), env, tenant.OpenOptions{
		Audience: audience(river.QueueDefault, Recount{}.Kind()),
		Seen: func(ctx context.Context, id tenant.ID, j string) (bool, error) {
			// Open checked the expiry; the envelope now expires, and the
			// pruner runs before this worker reaches the replay table.
			time.Sleep(time.Until(exp.Add(100 * time.Millisecond)))
			n, err := s.mw.Prune(ctx)
			if err != nil {
				return false, err
			}
			pruned = n
			return seen(ctx, id, j)
		},
	})
	require.ErrorIs(t, err, tenant.ErrJobReplayed)
	assert.Zero(t, pruned, "the replay entry was pruned while a worker could still accept its envelope")
	var left int
	require.NoError(t, s.queue.QueryRow(t.Context(), `SELECT count(*) FROM queue.tenant_job_seen WHERE tenant_id = 'alpha' AND job_id = $1`, jobID).Scan(&left))
	assert.Equal(t, 1, left)
}
