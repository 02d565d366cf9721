package tenant

import (
	"fmt"
	"slices"
	"time"
)

// Tier is a tenant's service tier. It decides where the tenant's data is
// placed (see the store package).
type Tier string

// The tiers of REQ-DEPLOY-004.
const (
	// TierStandard places the tenant in its own schema of the shared database.
	TierStandard Tier = "standard"
	// TierEnterprise places the tenant in its own database on the shared cluster.
	TierEnterprise Tier = "enterprise"
	// TierGovernment places the tenant on a dedicated database cluster.
	TierGovernment Tier = "government"
)

// Tiers lists every tier, in order of increasing isolation.
func Tiers() []Tier { return []Tier{TierStandard, TierEnterprise, TierGovernment} }

// ParseTier parses one of "standard", "enterprise" or "government".
func ParseTier(s string) (Tier, error) {
	t := Tier(s)
	if !t.Valid() {
		return "", fmt.Errorf("tenant: invalid tier %s: must be one of standard, enterprise, government", displayInput(s))
	}
	return t, nil
}

// Valid reports whether t is one of the defined tiers.
func (t Tier) Valid() bool { return slices.Contains(Tiers(), t) }

// State is a tenant's lifecycle state.
type State string

// The lifecycle states: Request -> Provision -> Active -> (Suspended) ->
// Decommission -> Deleted, with Failed for a provisioning that could not
// finish and was compensated.
const (
	StateRequested       State = "requested"
	StateProvisioning    State = "provisioning"
	StateActive          State = "active"
	StateSuspended       State = "suspended"
	StateDecommissioning State = "decommissioning"
	StateDeleted         State = "deleted"
	StateFailed          State = "failed"
)

// transitions is the lifecycle state machine as data: from -> allowed targets.
var transitions = map[State][]State{
	StateRequested:       {StateProvisioning, StateFailed},
	StateProvisioning:    {StateActive, StateFailed},
	StateActive:          {StateSuspended, StateDecommissioning},
	StateSuspended:       {StateActive, StateDecommissioning},
	StateDecommissioning: {StateDeleted},
	StateFailed:          {StateProvisioning, StateDecommissioning},
	StateDeleted:         nil,
}

// States lists every state.
func States() []State {
	return []State{StateRequested, StateProvisioning, StateActive, StateSuspended,
		StateDecommissioning, StateDeleted, StateFailed}
}

// ParseState parses a state name.
func ParseState(s string) (State, error) {
	st := State(s)
	if !st.Valid() {
		return "", fmt.Errorf("tenant: invalid state %s: must be one of requested, provisioning, active, suspended, decommissioning, deleted, failed", displayInput(s))
	}
	return st, nil
}

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool {
	_, ok := transitions[s]
	return ok
}

// Next returns the states that s may move to, in a new slice.
func (s State) Next() []State { return slices.Clone(transitions[s]) }

// CanTransition reports whether the state machine allows a move from s to to.
func (s State) CanTransition(to State) bool { return slices.Contains(transitions[s], to) }

// Transition returns to if the move from s is allowed, and otherwise an error
// wrapping [ErrIllegalTransition] that names both states.
func (s State) Transition(to State) (State, error) {
	if !s.CanTransition(to) {
		return s, fmt.Errorf("%w: %s -> %s (allowed from %s: %v)", ErrIllegalTransition, s, to, s, transitions[s])
	}
	return to, nil
}

// Info describes one tenant as recorded in the control-plane directory.
type Info struct {
	ID        ID
	Name      string
	Tier      Tier
	Region    string
	State     State
	CreatedAt time.Time
	UpdatedAt time.Time
}
