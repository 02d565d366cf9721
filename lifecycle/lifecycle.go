package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

var (
	// ErrInvalidConfig is wrapped by errors for a Config that cannot work.
	ErrInvalidConfig = errors.New("lifecycle: invalid configuration")
	// ErrTenantExists is wrapped by Provision's error for an ID that is
	// or was a tenant's (IDs are never reused, not even after a failed
	// provisioning or a deprovisioning). It is store.ErrTenantExists.
	ErrTenantExists = store.ErrTenantExists
	// ErrUnknownTenant is wrapped by errors for a tenant the directory
	// does not have, or has as deleted. It is store.ErrUnknownTenant.
	ErrUnknownTenant = store.ErrUnknownTenant
	// ErrRunInProgress is wrapped by errors for starting a run of a tenant
	// that has one open: resume that one.
	ErrRunInProgress = errors.New("lifecycle: a run of the tenant is open")
	// ErrNoRun is wrapped by Resume's error for a tenant with no open run.
	ErrNoRun = errors.New("lifecycle: no open run")
	// ErrStepFailed is wrapped by the *RunError of a run a step failed.
	ErrStepFailed = errors.New("lifecycle: step failed")
	// ErrResidue is wrapped by errors for resources that remain after
	// they were removed.
	ErrResidue = errors.New("lifecycle: resources remain")
	// ErrInterrupted is wrapped by errors for a run stopped by its
	// context: it stays open, and Resume continues it.
	ErrInterrupted = errors.New("lifecycle: run interrupted")
	// ErrRefused is wrapped by Provision's and Plan's error when a step's
	// validation refuses the request as it stands (a host routed to
	// another tenant, objects under the prefix, keys under the ID, a
	// customer key the tenant may not use): nothing was made.
	ErrRefused = errors.New("lifecycle: request refused")
)

// RunError reports a run that did not succeed: the step that failed and,
// for a provisioning, whether what it had applied was removed.
type RunError struct {
	// Run is the journal's number of the run; Tenant and Op what it did.
	Run    int64
	Tenant tenant.ID
	Op     Op
	// Step is the step (or engine phase) that failed.
	Step string
	// Err is its error.
	Err error
	// Compensated is true when a failed provisioning's steps were all
	// removed and the tenant is failed; false when compensation is not
	// finished (CompensationErr says why; Resume continues it).
	Compensated bool
	// CompensationErr is the first error of compensation, if any.
	CompensationErr error
}

func (e *RunError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lifecycle: %s of tenant %s (run %d): step %s failed: %v", e.Op, e.Tenant, e.Run, e.Step, e.Err)
	switch {
	case e.Op != OpProvision:
		fmt.Fprintf(&b, "; the run stays open: fix the cause and resume it (tenantctl resume %s)", e.Tenant)
	case e.Compensated:
		b.WriteString("; every step done before was undone and the tenant is failed")
	case e.CompensationErr != nil:
		fmt.Fprintf(&b, "; undoing the steps before failed too (%v): resume the run to finish undoing them (tenantctl resume %s)", e.CompensationErr, e.Tenant)
	}
	return b.String()
}

// Unwrap returns ErrStepFailed, the step's error and the compensation's.
func (e *RunError) Unwrap() []error {
	errs := []error{ErrStepFailed, e.Err}
	if e.CompensationErr != nil {
		errs = append(errs, e.CompensationErr)
	}
	return errs
}

// Config configures a Lifecycle.
type Config struct {
	// Admin is the control plane: the journal lives there, and the
	// tenant's state is kept in its directory. Required.
	Admin *store.Admin
	// Steps are the provisioning steps after validation, in order:
	// typically a PlacementStep, a KeysStep, the Kubernetes steps, a
	// RoutesStep, an InvitationStep and an AuditStep (REQ-DEPLOY-004's
	// steps 2 to 8). Leave out what the platform does not use; add your
	// own (a Step is four methods). Once runs are journaled, keep the
	// names of the steps: Resume finds a run's steps by name.
	Steps []Step
	// Regions are the regions the deployment serves; a request for any
	// other is refused. Empty means any region.
	Regions []string
	// Backup, if set, backs up a tenant before deprovisioning deletes it.
	Backup *Backup
	// Audit, if set, is the platform's audit trail, which gets the
	// deletion record of every deprovisioning (and of suspending and
	// reactivating).
	Audit *audit.Platform
	// Actor names who acts in audit records ("tenantctl", an operator's
	// name); "lifecycle" if empty.
	Actor string
	// Logger receives the lifecycle's logs; nil discards them.
	Logger *slog.Logger
}

// Lifecycle provisions and deprovisions tenants with journaled, resumable
// steps. It is safe for concurrent use; two runs of one tenant never run
// at once (the journal admits one open run per tenant).
type Lifecycle struct {
	admin   *store.Admin
	steps   []Step
	regions []string
	backup  *Backup
	audit   *audit.Platform
	actor   string
	log     *slog.Logger
	j       journal
	// hook, set by tests only, is called around every step and phase.
	hook func(step, phase, when string)
}

// New checks cfg and installs the journal in the control plane
// (idempotent).
func New(ctx context.Context, cfg Config) (*Lifecycle, error) {
	if cfg.Admin == nil {
		return nil, fmt.Errorf("%w: Admin is required", ErrInvalidConfig)
	}
	if err := checkSteps(cfg.Steps); err != nil {
		return nil, err
	}
	for i, r := range cfg.Regions {
		if !regionPattern.MatchString(r) {
			return nil, fmt.Errorf("%w: Regions[%d] %q is not a region (like us-gov-east-1)", ErrInvalidConfig, i, r)
		}
	}
	if cfg.Backup != nil {
		if err := cfg.Backup.check(); err != nil {
			return nil, err
		}
		if _, err := cfg.Admin.Tenant(ctx, cfg.Backup.KeyID); err == nil {
			return nil, fmt.Errorf("%w: Backup.KeyID %s is a tenant's ID: the backup key must be the platform's own, or the tenant's shredding would destroy every backup", ErrInvalidConfig, cfg.Backup.KeyID)
		} else if !errors.Is(err, store.ErrUnknownTenant) {
			return nil, fmt.Errorf("lifecycle: check Backup.KeyID: %w", err)
		}
	}
	if err := installJournal(ctx, cfg.Admin); err != nil {
		return nil, fmt.Errorf("lifecycle: install the journal: %w", err)
	}
	l := &Lifecycle{admin: cfg.Admin, steps: slices.Clone(cfg.Steps), regions: slices.Clone(cfg.Regions),
		backup: cfg.Backup, audit: cfg.Audit, actor: cfg.Actor, log: cfg.Logger, j: journal{cfg.Admin}}
	if l.actor == "" {
		l.actor = "lifecycle"
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	return l, nil
}

// Steps returns the provisioning steps, in order.
func (l *Lifecycle) Steps() []Step { return slices.Clone(l.steps) }

// PlannedStep is one line of a plan: what a run would do.
type PlannedStep struct {
	// Step is the step's or phase's name; Does says what it does.
	Step, Does string
}

// A Describer is a Step that can say what it would do for a target, for
// plans (tenantctl --dry-run). Steps that are not Describers are listed
// by name.
type Describer interface {
	Describe(t *Target) string
}

// Plan returns what Provision would do with req, step by step, without
// doing any of it; it checks req as Provision does first (the request's
// rules, the region, and that the ID is free).
func (l *Lifecycle) Plan(ctx context.Context, req *Request) ([]PlannedStep, error) {
	if err := l.validate(ctx, req); err != nil {
		return nil, err
	}
	t := &Target{Info: req.info(), Request: req, Op: OpProvision}
	plan := []PlannedStep{{phaseValidate, "check the request and that the ID is free"}}
	for _, s := range l.steps {
		plan = append(plan, PlannedStep{s.Name(), describe(s, t)})
	}
	return append(plan, PlannedStep{phaseActivate, "mark the tenant active"}), nil
}

func describe(s Step, t *Target) string {
	if d, ok := s.(Describer); ok {
		return d.Describe(t)
	}
	return "apply " + s.Name()
}

// Provision provisions the tenant of req: it checks the request (the
// region, and that the ID was never a tenant's), journals a new run, and
// applies every step in order, then marks the tenant active.
//
// If a step fails, Provision removes what the steps so far applied, in
// reverse order (the failed step included, since it may have done part of
// its work), checks that nothing of them remains, and returns a *RunError
// (errors.Is ErrStepFailed) with the tenant failed: the reason is in the
// journal (Runs). If ctx ends, the run stops where it is and stays open,
// as after a crash: Resume continues it.
func (l *Lifecycle) Provision(ctx context.Context, req *Request) (*Run, error) {
	if err := l.validate(ctx, req); err != nil {
		return nil, err
	}
	run, err := l.j.open(ctx, req.ID, OpProvision, req)
	if err != nil {
		return nil, err
	}
	if err := l.phase(ctx, run, phaseValidate, dirApply, func() (json.RawMessage, error) { return nil, nil }); err != nil {
		return run, err
	}
	l.log.InfoContext(ctx, "lifecycle: provisioning", "tenant_id", req.ID.String(), "run", run.ID, "tier", string(req.Tier))
	return run, l.drive(ctx, run)
}

// validate checks req for Provision and Plan.
func (l *Lifecycle) validate(ctx context.Context, req *Request) error {
	if req == nil || req.ID.IsZero() {
		return &RequestError{Problems: []FieldProblem{{Path: "tenant.id", Rule: "is required"}}}
	}
	if len(l.regions) > 0 && !slices.Contains(l.regions, req.Region) {
		return &RequestError{Problems: []FieldProblem{{Path: "tenant.region",
			Rule: "must be a region this deployment serves: " + strings.Join(l.regions, ", ")}}}
	}
	if l.backup != nil && req.ID == l.backup.KeyID {
		return fmt.Errorf("lifecycle: provision %s: %w: it is the ID of the backup key's keyset: choose another", req.ID, ErrTenantExists)
	}
	info, err := l.admin.Tenant(ctx, req.ID)
	switch {
	case err == nil && (info.State == tenant.StateProvisioning || info.State == tenant.StateRequested):
		if open, oerr := l.j.openRun(ctx, req.ID); oerr == nil {
			return fmt.Errorf("lifecycle: provision %s: %w: run %d is provisioning it", req.ID, ErrRunInProgress, open.ID)
		}
		return fmt.Errorf("lifecycle: provision %s: %w (state %s): tenant IDs are never reused; choose another", req.ID, ErrTenantExists, info.State)
	case err == nil:
		return fmt.Errorf("lifecycle: provision %s: %w (state %s): tenant IDs are never reused; choose another", req.ID, ErrTenantExists, info.State)
	case !errors.Is(err, store.ErrUnknownTenant):
		return fmt.Errorf("lifecycle: provision %s: %w", req.ID, err)
	}
	t := &Target{Info: req.info(), Request: req, Op: OpProvision}
	var errs []error
	for _, s := range l.steps {
		if v, ok := s.(Validator); ok {
			if err := v.Validate(ctx, t); err != nil {
				errs = append(errs, fmt.Errorf("step %s: %w", s.Name(), err))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("lifecycle: provision %s: %w: %w", req.ID, ErrRefused, errors.Join(errs...))
	}
	return nil
}

// Resume continues the tenant's open run (a provisioning, its
// compensation, or a deprovisioning) from where the journal says it
// stopped: a step that had started is applied (or removed) again, steps
// that were done are not.
func (l *Lifecycle) Resume(ctx context.Context, id tenant.ID) (*Run, error) {
	run, err := l.j.openRun(ctx, id)
	if err != nil {
		return nil, err
	}
	l.log.InfoContext(ctx, "lifecycle: resuming", "tenant_id", id.String(), "run", run.ID, "op", string(run.Op), "state", string(run.State))
	return run, l.drive(ctx, run)
}

// Runs returns the tenant's runs, oldest first, with their steps.
func (l *Lifecycle) Runs(ctx context.Context, id tenant.ID) ([]*Run, error) {
	return l.j.runs(ctx, id, runFilter{})
}

// busyGrace is how long lockRun tries for a run's lock that another
// session holds. A driver killed a moment ago holds it until the server
// notices its connection closed and ends its session, which takes a few
// milliseconds, or more on a loaded server; a Resume right after the crash
// must not be refused for that.
const busyGrace = 5 * time.Second

// lockRun takes the advisory lock of run, trying again for busyGrace
// while another session holds it.
func (l *Lifecycle) lockRun(ctx context.Context, run *Run) (unlock func(), ok bool, err error) {
	name := fmt.Sprintf("tenancy.lifecycle.run:%d", run.ID)
	deadline := time.Now().Add(busyGrace)
	for {
		unlock, ok, err = l.admin.TryLock(ctx, name)
		if err != nil || ok || time.Now().After(deadline) {
			return unlock, ok, err
		}
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ErrRunBusy is wrapped by errors for a run that another process (or
// call) is driving right now: wait for it, then look at its outcome.
var ErrRunBusy = errors.New("lifecycle: run is being driven elsewhere")

// drive takes an open run to its end, as the one driver of that run: a
// second Resume of it, here or in another process, is refused with
// ErrRunBusy while this one works (an advisory lock, released when drive
// returns or its process dies).
func (l *Lifecycle) drive(ctx context.Context, run *Run) error {
	unlock, ok, err := l.lockRun(ctx, run)
	if err != nil {
		return fmt.Errorf("lifecycle: run %d of %s: %w", run.ID, run.Tenant, err)
	}
	if !ok {
		return fmt.Errorf("%w: run %d of tenant %s (%s) is being driven by another process right now: wait for it to end, then see tenantctl show %s", ErrRunBusy, run.ID, run.Tenant, run.Op, run.Tenant)
	}
	defer unlock()
	// Read the journal again under the lock: a driver that just finished
	// may have moved the run on.
	fresh, err := l.j.runs(ctx, run.Tenant, runFilter{run: run.ID})
	if err != nil {
		return err
	}
	if len(fresh) == 1 {
		*run = *fresh[0]
	}
	if !run.Open() {
		return fmt.Errorf("%w: run %d of tenant %s ended (%s) while waiting to resume it", ErrNoRun, run.ID, run.Tenant, run.State)
	}
	return l.driveLocked(ctx, run)
}

// driveLocked is drive under the run's lock.
func (l *Lifecycle) driveLocked(ctx context.Context, run *Run) error {
	for _, r := range run.Steps {
		if reservedPhases[r.Step] {
			continue
		}
		if !slices.ContainsFunc(l.steps, func(s Step) bool { return s.Name() == r.Step }) {
			return fmt.Errorf("%w: run %d of tenant %s journaled step %q, which this Lifecycle does not have: resume it with the steps it was started with (Config.Steps, same names), or what that step made would be left behind", ErrInvalidConfig, run.ID, run.Tenant, r.Step)
		}
	}
	if run.Op == OpDeprovision {
		return l.driveDeprovision(ctx, run)
	}
	t, err := l.target(ctx, run)
	if err != nil {
		return err
	}
	if run.State == RunRunning {
		for _, s := range l.steps {
			if run.done(s.Name(), dirApply) {
				continue
			}
			err := l.phase(ctx, run, s.Name(), dirApply, func() (json.RawMessage, error) { return nil, s.Apply(ctx, t) })
			if err == nil {
				continue
			}
			if ctx.Err() != nil || errors.Is(err, ErrInterrupted) {
				return err
			}
			reason := fmt.Sprintf("step %s: %v", s.Name(), unwrapStep(err))
			if jerr := l.j.setState(context.WithoutCancel(ctx), run, RunCompensating, reason); jerr != nil {
				return errors.Join(err, jerr)
			}
			l.log.WarnContext(ctx, "lifecycle: step failed; compensating", "tenant_id", run.Tenant.String(), "run", run.ID, "step", s.Name(), "err", err)
			break
		}
		if run.State == RunRunning {
			if err := l.phase(ctx, run, phaseActivate, dirApply, func() (json.RawMessage, error) {
				return nil, l.activate(ctx, run.Tenant)
			}); err != nil {
				return err
			}
			if err := l.j.setState(ctx, run, RunSucceeded, ""); err != nil {
				return err
			}
			l.log.InfoContext(ctx, "lifecycle: provisioned", "tenant_id", run.Tenant.String(), "run", run.ID)
			return nil
		}
	}
	return l.compensate(ctx, run, t)
}

// compensate removes, in reverse order, every step the run applied (or
// began to), verifies nothing of them remains, and fails the run.
func (l *Lifecycle) compensate(ctx context.Context, run *Run, t *Target) error {
	failed := l.failedStep(run)
	rerr := &RunError{Run: run.ID, Tenant: run.Tenant, Op: OpProvision, Step: failed.Step, Err: errors.New(failed.Error)}
	if failed.Step == "" {
		rerr.Step, rerr.Err = "?", errors.New(run.Reason)
	}
	ct := *t
	ct.Op = OpCompensate
	var applied []Step
	for _, s := range l.steps {
		if _, ok := run.record(s.Name(), dirApply); ok {
			applied = append(applied, s)
		}
	}
	for i := len(applied) - 1; i >= 0; i-- {
		s := applied[i]
		if run.done(s.Name(), dirRemove) {
			continue
		}
		if err := l.phase(ctx, run, s.Name(), dirRemove, func() (json.RawMessage, error) { return nil, s.Remove(ctx, &ct) }); err != nil {
			rerr.CompensationErr = err
			return rerr
		}
	}
	if residue := l.remains(ctx, applied, &ct); len(residue) > 0 {
		rerr.CompensationErr = fmt.Errorf("%w: %s", ErrResidue, strings.Join(residue, "; "))
		return rerr
	}
	if err := l.j.setState(ctx, run, RunFailed, run.Reason); err != nil {
		rerr.CompensationErr = err
		return rerr
	}
	rerr.Compensated = true
	l.log.WarnContext(ctx, "lifecycle: provisioning failed and was undone", "tenant_id", run.Tenant.String(), "run", run.ID, "reason", run.Reason)
	return rerr
}

// failedStep returns the record of the step whose failure started
// compensation.
func (l *Lifecycle) failedStep(run *Run) StepRecord {
	for _, s := range run.Steps {
		if s.Phase == dirApply && s.Status == StepFailed {
			return s
		}
	}
	return StepRecord{}
}

// remains asks each step what is left; an error asking counts as residue.
func (l *Lifecycle) remains(ctx context.Context, steps []Step, t *Target) []string {
	var out []string
	for _, s := range steps {
		left, err := s.Remains(ctx, t)
		if err != nil {
			out = append(out, fmt.Sprintf("%s: cannot tell what remains: %v", s.Name(), err))
			continue
		}
		for _, r := range left {
			out = append(out, s.Name()+": "+r)
		}
	}
	return out
}

// phase journals fn as step in direction dir: started, then done or
// failed. A context that ends makes it ErrInterrupted, the step left
// started.
func (l *Lifecycle) phase(ctx context.Context, run *Run, step, dir string, fn func() (json.RawMessage, error)) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w before %s %s of run %d: %w (resume it: tenantctl resume %s)", ErrInterrupted, dir, step, run.ID, err, run.Tenant)
	}
	if err := l.j.start(ctx, run, step, dir); err != nil {
		return err
	}
	l.call(step, dir, "before")
	detail, err := fn()
	l.call(step, dir, "after")
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w in %s %s of run %d: %w (resume it: tenantctl resume %s)", ErrInterrupted, dir, step, run.ID, err, run.Tenant)
	}
	if jerr := l.j.finish(context.WithoutCancel(ctx), run, step, dir, err, detail); jerr != nil {
		return errors.Join(err, jerr)
	}
	if err != nil {
		return &stepError{step: step, err: err}
	}
	return nil
}

// stepError is a step's error as phase returns it.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return "step " + e.step + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

func unwrapStep(err error) error {
	var se *stepError
	if errors.As(err, &se) {
		return se.err
	}
	return err
}

func (l *Lifecycle) call(step, dir, when string) {
	if l.hook != nil {
		l.hook(step, dir, when)
	}
}

// activate marks the tenant active (it is, after a crash that followed).
func (l *Lifecycle) activate(ctx context.Context, id tenant.ID) error {
	info, err := l.admin.Tenant(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrUnknownTenant) {
			return fmt.Errorf("the directory has no tenant %s: the steps include no PlacementStep", id)
		}
		return err
	}
	if info.State == tenant.StateActive {
		return nil
	}
	return l.admin.SetState(ctx, id, tenant.StateActive)
}

// target builds the Target of run.
func (l *Lifecycle) target(ctx context.Context, run *Run) (*Target, error) {
	t := &Target{Request: run.Request, Op: run.Op, Run: run.ID, started: run.StartedAt}
	if run.Request != nil {
		t.Info = run.Request.info()
		return t, nil
	}
	info, err := l.admin.Tenant(ctx, run.Tenant)
	if err != nil {
		return nil, fmt.Errorf("lifecycle: tenant %s: %w", run.Tenant, err)
	}
	t.Info = info
	return t, nil
}

// info returns the directory entry the request asks for.
func (r *Request) info() tenant.Info {
	return tenant.Info{ID: r.ID, Name: r.Name, Tier: r.Tier, Region: r.Region}
}

// encodeRequest writes req as the YAML document ParseRequest reads.
func encodeRequest(w io.Writer, req *Request) error {
	enc := yaml.NewEncoder(w)
	if err := enc.Encode(req); err != nil {
		return fmt.Errorf("lifecycle: encode the request: %w", err)
	}
	return enc.Close()
}
