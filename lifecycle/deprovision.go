package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Deprovision removes tenant id: it suspends the tenant (its logins stop
// and its sessions end), backs it up (Config.Backup), marks it
// decommissioning, removes every step in reverse order with KeySteps last
// (the data, then the keys that opened it), checks with every step that
// nothing remains, and writes the deletion record to the platform's audit
// trail (Config.Audit): what was removed, the backup's digest, and that
// nothing remained. The tenant ends deleted; its ID is never reused.
//
// Each phase is journaled like a provisioning step, so after a crash or a
// failure Resume continues from where it stopped; a failure leaves the
// run open (a *RunError says which phase), never half-undone.
func (l *Lifecycle) Deprovision(ctx context.Context, id tenant.ID) (*Run, error) {
	info, err := l.admin.Tenant(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("lifecycle: deprovision %s: %w", id, err)
	}
	if open, err := l.j.openRun(ctx, id); err == nil {
		return nil, fmt.Errorf("%w: tenant %s has run %d (%s) open: resume it (tenantctl resume %s)", ErrRunInProgress, id, open.ID, open.Op, id)
	}
	switch info.State {
	case tenant.StateActive, tenant.StateSuspended, tenant.StateFailed, tenant.StateDecommissioning:
	default:
		return nil, fmt.Errorf("lifecycle: deprovision %s: %w: it is %s; only an active, suspended, failed or decommissioning tenant is deprovisioned", id, tenant.ErrIllegalTransition, info.State)
	}
	prov, err := l.provisionedBy(ctx, id)
	if err != nil {
		return nil, err
	}
	var req *Request
	if prov != nil {
		req = prov.Request
		// Every step the tenant was provisioned with must be here to
		// remove what it made: a Lifecycle configured without, say, its
		// Kubernetes steps would leave the namespace and still record a
		// clean deletion.
		for _, r := range prov.Steps {
			if r.Phase == dirApply && !reservedPhases[r.Step] && !slices.ContainsFunc(l.steps, func(s Step) bool { return s.Name() == r.Step }) {
				return nil, fmt.Errorf("%w: tenant %s was provisioned (run %d) with step %q, which this Lifecycle does not have: deprovision it with the steps it was provisioned with, or what that step made would be left behind", ErrInvalidConfig, id, prov.ID, r.Step)
			}
		}
	}
	run, err := l.j.open(ctx, id, OpDeprovision, req)
	if err != nil {
		return nil, err
	}
	l.log.InfoContext(ctx, "lifecycle: deprovisioning", "tenant_id", id.String(), "run", run.ID)
	return run, l.driveDeprovision(ctx, run)
}

// PlanDeprovision returns what Deprovision would do to tenant id, without
// doing any of it.
func (l *Lifecycle) PlanDeprovision(ctx context.Context, id tenant.ID) ([]PlannedStep, error) {
	info, err := l.admin.Tenant(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("lifecycle: deprovision %s: %w", id, err)
	}
	t := &Target{Info: info, Op: OpDeprovision}
	plan := []PlannedStep{{phaseSuspend, "suspend the tenant: stop its logins, end its sessions"}}
	if l.backup != nil {
		plan = append(plan, PlannedStep{phaseBackup, "back up its rows, audit log, settings and objects to " + l.backup.describe()})
	}
	plan = append(plan, PlannedStep{phaseDecommission, "mark it decommissioning"})
	for _, s := range l.removalOrder() {
		d := "remove " + s.Name()
		if ds, ok := s.(Describer); ok {
			d = ds.Describe(t)
		}
		plan = append(plan, PlannedStep{s.Name(), d})
	}
	plan = append(plan, PlannedStep{phaseVerify, "check that nothing of the tenant remains"})
	if l.audit != nil {
		plan = append(plan, PlannedStep{phaseRecord, "write the deletion record to the platform audit trail"})
	}
	return plan, nil
}

// provisionedBy returns the tenant's last successful provisioning run, or
// nil (a tenant made otherwise).
func (l *Lifecycle) provisionedBy(ctx context.Context, id tenant.ID) (*Run, error) {
	runs, err := l.j.runs(ctx, id, runFilter{provisioned: true})
	if err != nil {
		return nil, err
	}
	if len(runs) == 0 {
		return nil, nil
	}
	return runs[len(runs)-1], nil
}

// removalOrder is the steps in reverse order, KeySteps last.
func (l *Lifecycle) removalOrder() []Step {
	var rest, last []Step
	for i := len(l.steps) - 1; i >= 0; i-- {
		if _, ok := l.steps[i].(KeyStep); ok {
			last = append(last, l.steps[i])
		} else {
			rest = append(rest, l.steps[i])
		}
	}
	return append(rest, last...)
}

// driveDeprovision takes an open deprovisioning to its end.
func (l *Lifecycle) driveDeprovision(ctx context.Context, run *Run) error {
	t, err := l.target(ctx, run)
	if err != nil {
		return err
	}
	fail := func(step string, err error) error {
		if ctx.Err() != nil || errors.Is(err, ErrInterrupted) {
			return err
		}
		reason := fmt.Sprintf("%s: %v", step, unwrapStep(err))
		if jerr := l.j.setState(context.WithoutCancel(ctx), run, RunRunning, reason); jerr != nil {
			err = errors.Join(err, jerr)
		}
		return &RunError{Run: run.ID, Tenant: run.Tenant, Op: OpDeprovision, Step: step, Err: unwrapStep(err)}
	}
	once := func(step string, fn func() (json.RawMessage, error)) error {
		if run.done(step, dirApply) {
			return nil
		}
		if err := l.phase(ctx, run, step, dirApply, fn); err != nil {
			return fail(step, err)
		}
		return nil
	}
	if err := once(phaseSuspend, func() (json.RawMessage, error) {
		return nil, l.moveTo(ctx, run.Tenant, tenant.StateSuspended, tenant.StateActive)
	}); err != nil {
		return err
	}
	if l.backup != nil {
		if err := once(phaseBackup, func() (json.RawMessage, error) {
			a, err := l.backup.backup(ctx, t)
			if err != nil {
				return nil, err
			}
			// The journal and the deletion record keep what identifies the
			// archive, not its manifest (which is in the archive, and grows
			// with the tenant's tables and objects).
			return json.Marshal(archiveRecord{Key: a.Key, Size: a.Size, SHA256: a.SHA256, Files: len(a.Manifest.Files), CreatedAt: a.Manifest.CreatedAt})
		}); err != nil {
			return err
		}
	}
	if err := once(phaseDecommission, func() (json.RawMessage, error) {
		return nil, l.moveTo(ctx, run.Tenant, tenant.StateDecommissioning, tenant.StateActive, tenant.StateSuspended, tenant.StateFailed)
	}); err != nil {
		return err
	}
	order := l.removalOrder()
	for _, s := range order {
		if run.done(s.Name(), dirRemove) {
			continue
		}
		if err := l.phase(ctx, run, s.Name(), dirRemove, func() (json.RawMessage, error) { return nil, s.Remove(ctx, t) }); err != nil {
			return fail(s.Name(), err)
		}
	}
	var removed []string
	if err := once(phaseVerify, func() (json.RawMessage, error) {
		if residue := l.remains(ctx, order, t); len(residue) > 0 {
			return nil, fmt.Errorf("%w: %s", ErrResidue, strings.Join(residue, "; "))
		}
		for _, s := range order {
			removed = append(removed, s.Name())
		}
		return json.Marshal(map[string]any{"removed": removed, "remains": []string{}})
	}); err != nil {
		return err
	}
	if l.audit != nil {
		if err := once(phaseRecord, func() (json.RawMessage, error) {
			return l.deletionRecord(ctx, run)
		}); err != nil {
			return err
		}
	}
	if err := l.j.setState(ctx, run, RunSucceeded, ""); err != nil {
		return err
	}
	l.log.InfoContext(ctx, "lifecycle: deprovisioned", "tenant_id", run.Tenant.String(), "run", run.ID)
	return nil
}

// moveTo moves the tenant to state to if it is in one of from; a tenant
// already in to (a resumed run) or past it is left alone.
func (l *Lifecycle) moveTo(ctx context.Context, id tenant.ID, to tenant.State, from ...tenant.State) error {
	info, err := l.admin.Tenant(ctx, id)
	if errors.Is(err, store.ErrUnknownTenant) {
		return nil // deleted already: a resumed run past this point
	}
	if err != nil {
		return err
	}
	for _, f := range from {
		if info.State == f {
			return l.admin.SetState(ctx, id, to)
		}
	}
	return nil
}

// deletionRecord appends the deletion record of run to the platform
// trail, once: a resumed run finds the one it wrote.
func (l *Lifecycle) deletionRecord(ctx context.Context, run *Run) (json.RawMessage, error) {
	details := map[string]any{}
	for _, s := range run.Steps {
		switch {
		case s.Step == phaseBackup && s.Detail != nil:
			details["backup"] = s.Detail
		case s.Step == phaseVerify && s.Detail != nil:
			details["verified"] = s.Detail
		}
	}
	entry, err := appendOnce(ctx, l.admin, l.audit, run.Tenant, run.ID, audit.Event{Actor: l.actor, Action: "tenant.deprovision",
		Outcome: audit.OutcomeSuccess, Details: details})
	if err != nil {
		return nil, fmt.Errorf("write the deletion record: %w", err)
	}
	return json.Marshal(map[string]any{"platform_seq": entry.Seq, "mac": entry.MAC})
}

// appendOnce appends ev about tenant id (its resource is set to
// "tenant/<id>") to the platform trail unless run wrote an entry of that
// action before (a run that resumes after a crash), and returns the
// entry either way. ev.Details must be a map; the run is added to it.
func appendOnce(ctx context.Context, admin *store.Admin, trail *audit.Platform, id tenant.ID, run int64, ev audit.Event) (*audit.Entry, error) {
	e, err := platformEntry(ctx, admin, ev.Action, id, run)
	if err != nil || e != nil {
		return e, err
	}
	details, _ := ev.Details.(map[string]any)
	if details == nil {
		details = map[string]any{}
	}
	details["run"] = run
	ev.Details, ev.Resource = details, "tenant/"+id.String()
	entries, err := trail.Append(ctx, ev)
	if err != nil {
		return nil, err
	}
	return &entries[0], nil
}

// platformEntry finds the platform trail's entry of action for tenant id
// written by run, if any.
func platformEntry(ctx context.Context, admin *store.Admin, action string, id tenant.ID, run int64) (*audit.Entry, error) {
	var seq int64
	var mac []byte
	found := false
	err := admin.ControlPlaneTx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT seq, mac FROM tenancy.platform_audit
			WHERE action = $1 AND resource = $2 AND details->'run' = to_jsonb($3::bigint) ORDER BY seq DESC LIMIT 1`,
			action, "tenant/"+id.String(), run).Scan(&seq, &mac)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil || !found {
		return nil, err
	}
	return &audit.Entry{Seq: seq, MAC: mac}, nil
}

// Suspend suspends an active tenant: its logins stop and its sessions end
// (store.Admin.SetState), and authz refuses its requests once its cache
// expires. It is recorded in the platform trail (Config.Audit).
func (l *Lifecycle) Suspend(ctx context.Context, id tenant.ID) error {
	return l.setState(ctx, id, tenant.StateSuspended, "tenant.suspend")
}

// Reactivate makes a suspended tenant active again.
func (l *Lifecycle) Reactivate(ctx context.Context, id tenant.ID) error {
	return l.setState(ctx, id, tenant.StateActive, "tenant.reactivate")
}

func (l *Lifecycle) setState(ctx context.Context, id tenant.ID, to tenant.State, action string) error {
	// A run owns the tenant's state while it is open: reactivating a
	// tenant being deprovisioned would let it write after its backup.
	if open, err := l.j.openRun(ctx, id); err == nil {
		return fmt.Errorf("lifecycle: %s: %w: tenant %s has run %d (%s) open: resume it first (tenantctl resume %s)", action, ErrRunInProgress, id, open.ID, open.Op, id)
	} else if !errors.Is(err, ErrNoRun) {
		return fmt.Errorf("lifecycle: %s: %w", action, err)
	}
	if err := l.admin.SetState(ctx, id, to); err != nil {
		return fmt.Errorf("lifecycle: %s: %w", action, err)
	}
	if l.audit != nil {
		if _, err := l.audit.Append(ctx, audit.Event{Actor: l.actor, Action: action, Resource: "tenant/" + id.String(), Outcome: audit.OutcomeSuccess}); err != nil {
			return fmt.Errorf("lifecycle: %s of %s done, but its audit record failed: %w", action, id, err)
		}
	}
	return nil
}

// Restore restores the archive at key of Config.Backup's bucket into
// tenant into, through [Backup.Restore] (see there what into and target
// must be), and records it in the platform trail (Config.Audit): a
// tenant.restore entry naming the archive, the tenant it was taken of and
// what was restored. A restore that fails records nothing; one whose
// record fails returns its result with the error.
func (l *Lifecycle) Restore(ctx context.Context, key string, into tenant.ID, target RestoreTarget) (*RestoreResult, error) {
	if l.backup == nil {
		return nil, fmt.Errorf("%w: Restore needs Config.Backup", ErrInvalidConfig)
	}
	res, err := l.backup.Restore(ctx, key, into, target)
	if err != nil {
		return res, err
	}
	if l.audit != nil {
		var rows int64
		for _, n := range res.Rows {
			rows += n
		}
		if _, err := l.audit.Append(ctx, audit.Event{Actor: l.actor, Action: "tenant.restore", Resource: "tenant/" + into.String(),
			Outcome: audit.OutcomeSuccess, Details: map[string]any{"archive": key, "from": res.Manifest.Tenant,
				"from_run": res.Manifest.Run, "rows": rows, "objects": res.Objects}}); err != nil {
			return res, fmt.Errorf("lifecycle: restore into %s done, but its audit record failed: %w", into, err)
		}
	}
	return res, nil
}

// archiveRecord is what a deprovisioning journals and records of its
// backup archive.
type archiveRecord struct {
	Key       string    `json:"key"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	Files     int       `json:"files"`
	CreatedAt time.Time `json:"created_at"`
}
