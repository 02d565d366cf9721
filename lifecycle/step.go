package lifecycle

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

// A Step is one step of provisioning, together with the removal of what it
// made. Provisioning applies the steps of [Config.Steps] in order;
// compensation (after a step failed) removes the steps applied so far in
// reverse order; deprovisioning removes every step in reverse order, steps
// that are [KeyStep]s last, and then asks every step what remains.
//
// Every method must be idempotent: after a crash, [Lifecycle.Resume] calls
// the method that was running again, and it must finish the work or find
// it done, never do it twice (a second namespace, keyset or e-mail). A
// step learns what to do from its [Target] and from the world, not from
// memory: a process that resumes a run is not the one that started it.
type Step interface {
	// Name identifies the step in the journal: 1 to 40 bytes of a-z, 0-9
	// and '-', starting with a letter, unique among the steps of a
	// Lifecycle. Runs are journaled under it, so it must never change.
	Name() string
	// Apply makes the step's resources for the tenant.
	Apply(ctx context.Context, t *Target) error
	// Remove deletes what Apply made, all of it or what is left of it.
	// t.Op says why: [OpCompensate] (a provisioning that failed) or
	// [OpDeprovision].
	Remove(ctx context.Context, t *Target) error
	// Remains lists, in words an operator can act on ("namespace
	// tenant-acme"), what of the step's resources still exists for the
	// tenant; nothing means nothing.
	Remains(ctx context.Context, t *Target) ([]string, error)
}

// A KeyStep is a Step that holds the keys that open the tenant's data.
// Deprovisioning removes KeySteps after every other step: the data first,
// then its keys (crypto-shredding), as REQ-DEPLOY-004's lifecycle orders
// them, so that nothing is ever left that the tenant's keys could still
// open. Compensation removes them in plain reverse order.
type KeyStep interface {
	Step
	// HoldsKeys marks the step; it does nothing.
	HoldsKeys()
}

// A Validator is a Step that can tell, before anything is made, that its
// Apply would fail or would take over something that is not the new
// tenant's: keysets that exist already under the ID, objects under its
// prefix, a hostname routed to another tenant. Provision and Plan ask
// every Validator in the validation phase, before the run is journaled,
// and refuse the request with every problem found, changing nothing.
type Validator interface {
	Validate(ctx context.Context, t *Target) error
}

// Op is what a run does to a tenant.
type Op string

const (
	// OpProvision applies the steps.
	OpProvision Op = "provision"
	// OpCompensate removes what a provisioning that failed applied.
	OpCompensate Op = "compensate"
	// OpDeprovision removes a tenant.
	OpDeprovision Op = "deprovision"
)

// Target is the tenant a step works on, and why.
type Target struct {
	// Info is the tenant: its ID, name, tier and region (state and times
	// are not kept current).
	Info tenant.Info
	// Request is the provisioning request the tenant was provisioned
	// with. It is nil when deprovisioning a tenant that was provisioned
	// otherwise (with store.Admin.CreateTenant directly).
	Request *Request
	// Op is what the run does: a step's Remove sees OpCompensate or
	// OpDeprovision.
	Op Op
	// Run is the journal's number of the run.
	Run int64

	started time.Time // when the run started (names its backup archive)
}

// ID returns the tenant's ID.
func (t *Target) ID() tenant.ID { return t.Info.ID }

// Context returns ctx carrying the target tenant, for steps that call
// tenant-scoped APIs (audit.Log, keys.Manager.Seal, blob views).
func (t *Target) Context(ctx context.Context) context.Context {
	return tenant.NewContext(ctx, t.Info.ID)
}

var stepName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,39}$`)

// checkSteps validates the names of steps: the grammar, unique, and none
// of the engine's own phases.
func checkSteps(steps []Step) error {
	seen := map[string]bool{}
	for i, s := range steps {
		if s == nil {
			return fmt.Errorf("%w: Steps[%d] is nil", ErrInvalidConfig, i)
		}
		n := s.Name()
		switch {
		case !stepName.MatchString(n):
			return fmt.Errorf("%w: Steps[%d]: name %q must be 1 to 40 bytes of a-z, 0-9 and '-', starting with a letter", ErrInvalidConfig, i, n)
		case seen[n]:
			return fmt.Errorf("%w: Steps[%d]: name %q is used twice", ErrInvalidConfig, i, n)
		case reservedPhases[n]:
			return fmt.Errorf("%w: Steps[%d]: name %q is one of the engine's own phases (%s)", ErrInvalidConfig, i, n, "validate, activate, suspend, backup, decommission, verify, record")
		}
		seen[n] = true
	}
	return nil
}

// reservedPhases are the journal names of the engine's own phases.
var reservedPhases = map[string]bool{
	phaseValidate: true, phaseActivate: true, phaseSuspend: true, phaseBackup: true,
	phaseDecommission: true, phaseVerify: true, phaseRecord: true,
}

const (
	phaseValidate     = "validate"
	phaseActivate     = "activate"
	phaseSuspend      = "suspend"
	phaseBackup       = "backup"
	phaseDecommission = "decommission"
	phaseVerify       = "verify"
	phaseRecord       = "record"
)
