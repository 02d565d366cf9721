package authz

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/rtmx-ai/tenancy/tenant"
)

// The roles of [DefaultRoles], as in RTMX.
const (
	RoleOwner  = "owner"
	RoleEditor = "editor"
	RoleViewer = "viewer"
)

// The permissions of [DefaultRoles]: a viewer reads, an editor also
// writes, an owner also manages the tenant (members, settings).
const (
	PermRead   = "read"
	PermWrite  = "write"
	PermManage = "manage"
)

// maxNameLen bounds role and permission names.
const maxNameLen = 64

// RoleDef defines one role of a tenant: the roles it implies (whose
// permissions it has too, transitively) and the permissions it grants.
type RoleDef struct {
	Implies     []string
	Permissions []string
}

// Roles are one tenant's role definitions, closed under implication: for
// each role, every role it implies and every permission it grants. Make
// them with [NewRoles] or [DefaultRoles]; they are immutable and safe for
// concurrent use. The zero Roles define no role.
type Roles struct {
	roles map[string]roleSet
}

type roleSet struct {
	implied map[string]struct{} // the role itself and every role it implies
	perms   map[string]struct{}
}

var defaultRoles = mustRoles(map[string]RoleDef{
	RoleOwner:  {Implies: []string{RoleEditor}, Permissions: []string{PermManage}},
	RoleEditor: {Implies: []string{RoleViewer}, Permissions: []string{PermWrite}},
	RoleViewer: {Permissions: []string{PermRead}},
})

func mustRoles(defs map[string]RoleDef) *Roles {
	r, err := NewRoles(defs)
	if err != nil {
		panic(err) // the defaults above are valid
	}
	return r
}

// DefaultRoles returns RTMX's roles: owner ⊇ editor ⊇ viewer, granting
// manage, write and read.
func DefaultRoles() *Roles { return defaultRoles }

// NewRoles checks defs and returns their closure. Role and permission
// names are 1 to 64 bytes of a-z, 0-9 and "_-.:", starting with a letter;
// a role may imply only roles defs defines, and implication must not be
// circular. The error wraps ErrInvalidConfig and names the role and rule.
func NewRoles(defs map[string]RoleDef) (*Roles, error) {
	for _, name := range slices.Sorted(maps.Keys(defs)) {
		if err := checkName(name); err != nil {
			return nil, fmt.Errorf("authz: %w: role %q: %v", ErrInvalidConfig, name, err)
		}
		d := defs[name]
		for _, imp := range d.Implies {
			if _, ok := defs[imp]; !ok {
				return nil, fmt.Errorf("authz: %w: role %q implies %q, which is not defined", ErrInvalidConfig, name, imp)
			}
		}
		for _, perm := range d.Permissions {
			if err := checkName(perm); err != nil {
				return nil, fmt.Errorf("authz: %w: role %q: permission %q: %v", ErrInvalidConfig, name, perm, err)
			}
		}
	}
	r := &Roles{roles: make(map[string]roleSet, len(defs))}
	for _, name := range slices.Sorted(maps.Keys(defs)) {
		rs := roleSet{implied: map[string]struct{}{}, perms: map[string]struct{}{}}
		// Depth-first over the implications, finding cycles back to name
		// (a cycle elsewhere is found when its own roles are closed).
		var walk func(role string, path []string) error
		walk = func(role string, path []string) error {
			for _, imp := range defs[role].Implies {
				if imp == name || slices.Contains(path, imp) {
					return fmt.Errorf("authz: %w: role %q: implication is circular", ErrInvalidConfig, name)
				}
				if _, seen := rs.implied[imp]; seen {
					continue
				}
				rs.implied[imp] = struct{}{}
				if err := walk(imp, append(path, imp)); err != nil {
					return err
				}
			}
			return nil
		}
		rs.implied[name] = struct{}{}
		if err := walk(name, nil); err != nil {
			return nil, err
		}
		for imp := range rs.implied {
			for _, perm := range defs[imp].Permissions {
				rs.perms[perm] = struct{}{}
			}
		}
		r.roles[name] = rs
	}
	return r, nil
}

func checkName(s string) error {
	if s == "" || len(s) > maxNameLen {
		return fmt.Errorf("must be 1 to %d bytes", maxNameLen)
	}
	if s[0] < 'a' || s[0] > 'z' {
		return errors.New("must start with a letter a-z")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.' || c == ':') {
			return errors.New(`may hold only a-z, 0-9, "_", "-", "." and ":"`)
		}
	}
	return nil
}

// Defined returns the names of the roles r defines, sorted.
func (r *Roles) Defined() []string {
	if r == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(r.roles))
}

// Implies reports whether role has other: it is other or implies it.
func (r *Roles) Implies(role, other string) bool {
	return r.has([]string{role}, other)
}

// Grants reports whether role has permission perm.
func (r *Roles) Grants(role, perm string) bool {
	return r.can([]string{role}, perm)
}

// has reports whether any of granted is or implies role.
func (r *Roles) has(granted []string, role string) bool {
	if r == nil {
		return false
	}
	for _, g := range granted {
		if _, ok := r.roles[g].implied[role]; ok {
			return true
		}
	}
	return false
}

func (r *Roles) can(granted []string, perm string) bool {
	if r == nil {
		return false
	}
	for _, g := range granted {
		if _, ok := r.roles[g].perms[perm]; ok {
			return true
		}
	}
	return false
}

// knows reports whether r defines any of granted.
func (r *Roles) knows(granted []string) bool {
	if r == nil {
		return false
	}
	for _, g := range granted {
		if _, ok := r.roles[g]; ok {
			return true
		}
	}
	return false
}

// RoleSource gives the role definitions of a tenant, from the tenant's
// configuration. Lifecycle's configuration store satisfies it; so does
// [MemoryRoles]. Roles is called on every request the middleware admits:
// an implementation that reads a database caches. An error fails the
// request with 503 (ErrUnavailable).
type RoleSource interface {
	Roles(ctx context.Context, id tenant.ID) (*Roles, error)
}

// MemoryRoles is a RoleSource in memory: a default for every tenant, and
// definitions of their own for the tenants given some with Set. It is
// safe for concurrent use.
type MemoryRoles struct {
	def *Roles
	mu  sync.RWMutex // guards own
	own map[tenant.ID]*Roles
}

var _ RoleSource = (*MemoryRoles)(nil)

// NewMemoryRoles returns a MemoryRoles giving every tenant def (nil means
// [DefaultRoles]).
func NewMemoryRoles(def *Roles) *MemoryRoles {
	if def == nil {
		def = defaultRoles
	}
	return &MemoryRoles{def: def, own: map[tenant.ID]*Roles{}}
}

// Set gives tenant id roles of its own; nil gives it the default again.
func (m *MemoryRoles) Set(id tenant.ID, r *Roles) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r == nil {
		delete(m.own, id)
		return
	}
	m.own[id] = r
}

// Roles returns tenant id's roles.
func (m *MemoryRoles) Roles(_ context.Context, id tenant.ID) (*Roles, error) {
	m.mu.RLock()
	r, ok := m.own[id]
	m.mu.RUnlock()
	if ok {
		return r, nil
	}
	return m.def, nil
}
