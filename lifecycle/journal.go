package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// RunState is where a run stands.
type RunState string

const (
	// RunRunning: the run is applying (or, deprovisioning, removing) its
	// steps, or was stopped (a crash, a cancelled context) while doing so;
	// Resume continues it.
	RunRunning RunState = "running"
	// RunCompensating: a step failed and the run is removing what it had
	// applied, or was stopped while doing so; Resume continues it.
	RunCompensating RunState = "compensating"
	// RunSucceeded: every step was done.
	RunSucceeded RunState = "succeeded"
	// RunFailed: a step failed and what the run had applied was removed;
	// Run.Reason says why.
	RunFailed RunState = "failed"
)

// Run is one provisioning or deprovisioning of a tenant, as journaled in
// the control plane.
type Run struct {
	// ID is the run's number.
	ID int64
	// Tenant is the tenant it works on.
	Tenant tenant.ID
	// Op is OpProvision or OpDeprovision.
	Op Op
	// State is where the run stands.
	State RunState
	// Reason is why it failed, or what stopped it ("" if nothing did).
	Reason string
	// Request is the provisioning request (nil where there was none).
	Request *Request
	// Steps are the journal's records of the run's steps and phases, in
	// the order they started.
	Steps []StepRecord
	// StartedAt and UpdatedAt are when the run started and was last
	// journaled; FinishedAt is when it ended (zero while open).
	StartedAt, UpdatedAt, FinishedAt time.Time
}

// Open reports whether the run can be resumed (running or compensating).
func (r *Run) Open() bool { return r.State == RunRunning || r.State == RunCompensating }

// StepStatus is where a step of a run stands.
type StepStatus string

const (
	// StepStarted: the step's method was called and did not return (or
	// the process stopped before its end was journaled).
	StepStarted StepStatus = "started"
	// StepDone: the method returned nil.
	StepDone StepStatus = "done"
	// StepFailed: the method returned an error, StepRecord.Error.
	StepFailed StepStatus = "failed"
)

// StepRecord is the journal's record of one step (or engine phase) of a
// run, in one direction: Phase "apply" or "remove".
type StepRecord struct {
	Step, Phase string
	Status      StepStatus
	// Error is the step's error, when it failed.
	Error string
	// Detail is what the step reported (the backup's archive, say), as
	// JSON; nil for most steps.
	Detail                json.RawMessage
	StartedAt, FinishedAt time.Time
}

const (
	dirApply  = "apply"
	dirRemove = "remove"
)

// journalDDL creates the journal in the control plane.
var journalDDL = []string{
	`CREATE TABLE IF NOT EXISTS tenancy.lifecycle_runs (
		run_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		tenant_id   text NOT NULL,
		op          text NOT NULL CHECK (op IN ('provision', 'deprovision')),
		request     text NOT NULL DEFAULT '',
		state       text NOT NULL CHECK (state IN ('running', 'compensating', 'succeeded', 'failed')),
		reason      text NOT NULL DEFAULT '',
		started_at  timestamptz NOT NULL DEFAULT now(),
		updated_at  timestamptz NOT NULL DEFAULT now(),
		finished_at timestamptz)`,
	// One open run per tenant: two operators (or two retries) cannot
	// provision or deprovision the same tenant at once.
	`CREATE UNIQUE INDEX IF NOT EXISTS lifecycle_runs_one_open ON tenancy.lifecycle_runs (tenant_id)
		WHERE state IN ('running', 'compensating')`,
	`CREATE INDEX IF NOT EXISTS lifecycle_runs_tenant ON tenancy.lifecycle_runs (tenant_id, run_id)`,
	`CREATE TABLE IF NOT EXISTS tenancy.lifecycle_steps (
		run_id      bigint NOT NULL REFERENCES tenancy.lifecycle_runs,
		step        text NOT NULL,
		phase       text NOT NULL CHECK (phase IN ('apply', 'remove')),
		ord         int NOT NULL,
		status      text NOT NULL CHECK (status IN ('started', 'done', 'failed')),
		error       text NOT NULL DEFAULT '',
		detail      jsonb,
		started_at  timestamptz NOT NULL DEFAULT now(),
		finished_at timestamptz,
		PRIMARY KEY (run_id, step, phase))`,
	`CREATE TABLE IF NOT EXISTS tenancy.routes (
		tenant_id  text NOT NULL,
		host       text NOT NULL UNIQUE,
		target     text NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (tenant_id, host))`,
}

// installJournal creates the journal's tables, taking the control-plane
// lock so that two processes installing at once take turns.
func installJournal(ctx context.Context, admin *store.Admin) error {
	return admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, store.ControlPlaneLock); err != nil {
			return err
		}
		for _, s := range journalDDL {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
		// The audit and deprovisioning steps look up the entry a run wrote
		// in the platform trail (so a resumed run writes none twice): an
		// index keeps that lookup from scanning a trail that grows with
		// every tenant.
		var trail bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass('tenancy.platform_audit') IS NOT NULL`).Scan(&trail); err != nil || !trail {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE INDEX IF NOT EXISTS platform_audit_by_resource ON tenancy.platform_audit (resource, action)`)
		return err
	})
}

// journal reads and writes runs on the admin's control plane.
type journal struct{ admin *store.Admin }

// open records a new run, or fails with ErrRunInProgress if the tenant has
// an open one.
func (j journal) open(ctx context.Context, id tenant.ID, op Op, req *Request) (*Run, error) {
	text := ""
	if req != nil {
		var b strings.Builder
		if err := encodeRequest(&b, req); err != nil {
			return nil, err
		}
		text = b.String()
	}
	run := &Run{Tenant: id, Op: op, State: RunRunning, Request: req}
	err := j.admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `INSERT INTO tenancy.lifecycle_runs (tenant_id, op, request, state)
			VALUES ($1, $2, $3, 'running') RETURNING run_id, started_at, updated_at`,
			id.String(), string(op), text).Scan(&run.ID, &run.StartedAt, &run.UpdatedAt)
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		open, lerr := j.openRun(ctx, id)
		if lerr == nil {
			return nil, fmt.Errorf("%w: tenant %s has run %d (%s, %s) open: resume it (tenantctl resume %s) or wait for it", ErrRunInProgress, id, open.ID, open.Op, open.State, id)
		}
		return nil, fmt.Errorf("%w: tenant %s has a run open", ErrRunInProgress, id)
	}
	if err != nil {
		return nil, fmt.Errorf("lifecycle: journal a new run of %s: %w", id, err)
	}
	return run, nil
}

// openRun returns the tenant's open run, or an error wrapping ErrNoRun.
func (j journal) openRun(ctx context.Context, id tenant.ID) (*Run, error) {
	runs, err := j.runs(ctx, id, runFilter{open: true})
	if err != nil {
		return nil, err
	}
	if len(runs) == 0 {
		return nil, fmt.Errorf("%w: tenant %s has no run open", ErrNoRun, id)
	}
	return runs[len(runs)-1], nil
}

// runFilter narrows journal.runs: to one run, to open runs, to the
// tenant's successful provisionings. The zero filter is every run.
type runFilter struct {
	run         int64 // this run only, if not 0
	open        bool  // running or compensating
	provisioned bool  // successful provisionings
}

// runs returns the tenant's runs that f admits, oldest first, each with
// its steps.
func (j journal) runs(ctx context.Context, id tenant.ID, f runFilter) ([]*Run, error) {
	var runs []*Run
	err := j.admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT run_id, op, request, state, reason, started_at, updated_at, finished_at
			FROM tenancy.lifecycle_runs WHERE tenant_id = $1
			AND ($2 = 0 OR run_id = $2)
			AND (NOT $3 OR state IN ('running', 'compensating'))
			AND (NOT $4 OR (op = 'provision' AND state = 'succeeded'))
			ORDER BY run_id`, id.String(), f.run, f.open, f.provisioned)
		if err != nil {
			return err
		}
		byID := map[int64]*Run{}
		for rows.Next() {
			r := &Run{Tenant: id}
			var op, text, state string
			var finished *time.Time
			if err := rows.Scan(&r.ID, &op, &text, &state, &r.Reason, &r.StartedAt, &r.UpdatedAt, &finished); err != nil {
				rows.Close()
				return err
			}
			r.Op, r.State = Op(op), RunState(state)
			if finished != nil {
				r.FinishedAt = *finished
			}
			if text != "" {
				req, err := ParseRequest(strings.NewReader(text))
				if err != nil {
					rows.Close()
					return fmt.Errorf("journaled request of run %d: %w", r.ID, err)
				}
				r.Request = req
			}
			runs = append(runs, r)
			byID[r.ID] = r
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(runs) == 0 {
			return nil
		}
		ids := make([]int64, 0, len(runs))
		for _, r := range runs {
			ids = append(ids, r.ID)
		}
		rows, err = tx.Query(ctx, `SELECT run_id, step, phase, status, error, detail, started_at, finished_at
			FROM tenancy.lifecycle_steps WHERE run_id = ANY($1) ORDER BY run_id, ord`, ids)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var runID int64
			var s StepRecord
			var status string
			var detail []byte
			var finished *time.Time
			if err := rows.Scan(&runID, &s.Step, &s.Phase, &status, &s.Error, &detail, &s.StartedAt, &finished); err != nil {
				return err
			}
			s.Status = StepStatus(status)
			if detail != nil {
				s.Detail = json.RawMessage(detail)
			}
			if finished != nil {
				s.FinishedAt = *finished
			}
			byID[runID].Steps = append(byID[runID].Steps, s)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("lifecycle: read the runs of %s: %w", id, err)
	}
	return runs, nil
}

// record returns the run's record of step in phase, if any.
func (r *Run) record(step, phase string) (StepRecord, bool) {
	for _, s := range r.Steps {
		if s.Step == step && s.Phase == phase {
			return s, true
		}
	}
	return StepRecord{}, false
}

// done reports whether the run journaled step done in phase.
func (r *Run) done(step, phase string) bool {
	s, ok := r.record(step, phase)
	return ok && s.Status == StepDone
}

// start journals that step begins in phase (again, after a crash).
func (j journal) start(ctx context.Context, r *Run, step, phase string) error {
	now := time.Now()
	err := j.admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		if err := lazyCommit(ctx, tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO tenancy.lifecycle_steps (run_id, step, phase, ord, status)
			VALUES ($1, $2, $3, (SELECT count(*) FROM tenancy.lifecycle_steps WHERE run_id = $1), 'started')
			ON CONFLICT (run_id, step, phase) DO UPDATE SET status = 'started', error = '', started_at = now(), finished_at = NULL`,
			r.ID, step, phase)
		if err == nil {
			_, err = tx.Exec(ctx, `UPDATE tenancy.lifecycle_runs SET updated_at = now() WHERE run_id = $1`, r.ID)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("lifecycle: journal the start of %s %s of run %d: %w", phase, step, r.ID, err)
	}
	r.setStep(StepRecord{Step: step, Phase: phase, Status: StepStarted, StartedAt: now})
	return nil
}

// finish journals the end of step in phase: done, or failed with stepErr.
func (j journal) finish(ctx context.Context, r *Run, step, phase string, stepErr error, detail json.RawMessage) error {
	status, msg := StepDone, ""
	if stepErr != nil {
		status, msg = StepFailed, stepErr.Error()
	}
	var d any
	if detail != nil {
		d = string(detail)
	}
	err := j.admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		// The backup's end commits synchronously: its archive is what the
		// deletion that follows relies on, and a resumed run must find it
		// recorded rather than write another after the data is gone.
		if step != phaseBackup {
			if err := lazyCommit(ctx, tx); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `UPDATE tenancy.lifecycle_steps SET status = $4, error = $5, detail = COALESCE($6::jsonb, detail), finished_at = now()
			WHERE run_id = $1 AND step = $2 AND phase = $3`, r.ID, step, phase, string(status), msg, d)
		return err
	})
	if err != nil {
		return fmt.Errorf("lifecycle: journal the end of %s %s of run %d: %w", phase, step, r.ID, err)
	}
	rec, _ := r.record(step, phase)
	rec.Status, rec.Error, rec.FinishedAt = status, msg, time.Now()
	if detail != nil {
		rec.Detail = detail
	}
	r.setStep(rec)
	return nil
}

func (r *Run) setStep(s StepRecord) {
	for i := range r.Steps {
		if r.Steps[i].Step == s.Step && r.Steps[i].Phase == s.Phase {
			r.Steps[i] = s
			return
		}
	}
	r.Steps = append(r.Steps, s)
}

// setState journals the run's state and reason; a final state also ends it.
func (j journal) setState(ctx context.Context, r *Run, state RunState, reason string) error {
	final := state == RunSucceeded || state == RunFailed
	err := j.admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE tenancy.lifecycle_runs SET state = $2, reason = $3, updated_at = now(),
			finished_at = CASE WHEN $4 THEN now() END WHERE run_id = $1`, r.ID, string(state), reason, final)
		return err
	})
	if err != nil {
		return fmt.Errorf("lifecycle: journal run %d as %s: %w", r.ID, state, err)
	}
	r.State, r.Reason = state, reason
	if final {
		r.FinishedAt = time.Now()
	}
	return nil
}

// lazyCommit lets tx commit without waiting for its WAL to reach disk
// (synchronous_commit off, for tx only). It is for the marks of a step's
// start and end: a mark lost to a crash of the database server (never to
// one of this process, whose committed transactions the server keeps)
// makes Resume apply or remove an idempotent step once more, which is
// what a crash of this process between a step and its mark does anyway.
// The run's own records (open, state) commit synchronously.
func lazyCommit(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`)
	return err
}
