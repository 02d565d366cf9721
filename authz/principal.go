package authz

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Principal is who a verified token speaks for: its subject, its tenant,
// the roles it grants, when it expires and its claims. It is immutable:
// its accessors return copies. The middleware puts it in the request
// context ([FromContext]); [Verifier.Verify] returns one.
type Principal struct {
	subject string
	tenant  tenant.ID
	roles   []string // as the token grants them, deduplicated, in order
	expires time.Time
	claims  map[string]any
	model   *Roles // the tenant's roles; nil until the middleware resolved them
}

// Subject returns the token's sub claim (never empty).
func (p *Principal) Subject() string { return p.subject }

// Tenant returns the tenant the token is for.
func (p *Principal) Tenant() tenant.ID { return p.tenant }

// Roles returns the roles the token grants, as the token names them
// (including any its tenant does not define), in a new slice.
func (p *Principal) Roles() []string { return slices.Clone(p.roles) }

// Expires returns the token's expiry (its exp claim).
func (p *Principal) Expires() time.Time { return p.expires }

// Claims returns a deep copy of the token's claims (the JSON object of
// its payload, as encoding/json decodes it into a map[string]any).
func (p *Principal) Claims() map[string]any { return copyValue(p.claims).(map[string]any) }

// Claim returns a deep copy of one claim and whether the token has it.
func (p *Principal) Claim(name string) (any, bool) {
	v, ok := p.claims[name]
	if !ok {
		return nil, false
	}
	return copyValue(v), true
}

// HasRole reports whether the principal has role in its tenant's role
// definitions ([Roles]): granted by the token directly, or implied by a
// role the token grants. A principal whose tenant's roles were not
// resolved (one [Verifier.Verify] returned, outside the middleware) is
// judged by the [DefaultRoles].
func (p *Principal) HasRole(role string) bool {
	return p.rolesModel().has(p.roles, role)
}

// Can reports whether a role of the principal grants permission perm in
// its tenant's role definitions.
func (p *Principal) Can(perm string) bool {
	return p.rolesModel().can(p.roles, perm)
}

func (p *Principal) rolesModel() *Roles {
	if p.model != nil {
		return p.model
	}
	return defaultRoles
}

// String describes the principal by subject and tenant.
func (p *Principal) String() string {
	return "principal " + p.subject + " of tenant " + p.tenant.String()
}

// LogValue implements slog.LogValuer: subject, tenant and roles, never
// the other claims (which may hold personal data).
func (p *Principal) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("sub", p.subject),
		slog.String("tenant", p.tenant.String()),
		slog.Any("roles", p.roles),
	)
}

type principalKey struct{}

// FromContext returns the principal the middleware put into ctx, and
// whether there is one. A handler reached without the middleware finds
// none (and no tenant in ctx either).
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok && p != nil
}

// newContext returns ctx carrying p and p's tenant.
func newContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(tenant.NewContext(ctx, p.tenant), principalKey{}, p)
}

func copyValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = copyValue(e)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = copyValue(e)
		}
		return s
	default:
		return v
	}
}
