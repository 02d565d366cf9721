package telemetry

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Key is the attribute key of the tenant on spans and metrics:
// "tenant.id". Logs carry the same value under tenant.LogKey
// ("tenant_id").
const Key attribute.Key = "tenant.id"

// Other is the metric label of every tenant a [Guard] gives no label of
// its own.
const Other = "_other"

// DefaultAdmit is the number of tenants DefaultGuardConfig admits first
// come, first served.
const DefaultAdmit = 1000

// MaxAdmit bounds GuardConfig.Admit: a guard never holds more than
// len(Allow) + MaxAdmit tenants.
const MaxAdmit = 1 << 20

// ErrInvalidConfig is wrapped by the error of NewGuard for a config that
// breaks its rules; the message names the field.
var ErrInvalidConfig = errors.New("telemetry: invalid config")

// Attribute returns the exact tenant attribute (Key = id), for spans.
// Metrics take [Guard.Attribute] instead.
func Attribute(id tenant.ID) attribute.KeyValue { return Key.String(id.String()) }

// GuardConfig configures a [Guard]. Start from [DefaultGuardConfig]; the
// zero GuardConfig is valid and labels every tenant [Other].
type GuardConfig struct {
	// Allow are the tenants that always get a label of their own (the
	// largest customers, those under an SLA). They do not count against
	// Admit. Zero IDs are refused.
	Allow []tenant.ID
	// Admit is how many other tenants get a label of their own, first
	// come, first served, for the life of the Guard: 0 to MaxAdmit.
	// DefaultGuardConfig sets DefaultAdmit.
	Admit int
}

// DefaultGuardConfig returns a GuardConfig that admits DefaultAdmit
// tenants and allows none in advance.
func DefaultGuardConfig() GuardConfig { return GuardConfig{Admit: DefaultAdmit} }

// Guard maps tenants to a bounded set of metric labels: each tenant of
// GuardConfig.Allow is its own label, and so are the first
// GuardConfig.Admit other tenants it sees; every tenant after them, and
// the zero ID, is [Other]. A tenant once admitted keeps its label for the
// life of the Guard. It holds at most len(Allow) + Admit tenants, and
// labeling a tenant once the guard is full allocates nothing. It is safe
// for concurrent use.
type Guard struct {
	allow map[tenant.ID]struct{} // never written after NewGuard
	limit int64

	// full, once the guard is full, holds every tenant with a label of
	// its own (Allow and the admitted): one map read per label.
	full atomic.Pointer[map[tenant.ID]struct{}]

	mu       sync.Mutex // guards admitting: the Store into admitted, n, and the Store of full
	admitted sync.Map   // tenant.ID -> struct{}: the tenants admitted while not full
	n        int64      // the tenants admitted
}

// NewGuard checks cfg and returns a Guard.
func NewGuard(cfg GuardConfig) (*Guard, error) {
	if cfg.Admit < 0 || cfg.Admit > MaxAdmit {
		return nil, fmt.Errorf("%w: GuardConfig.Admit must be between 0 and %d, got %d", ErrInvalidConfig, MaxAdmit, cfg.Admit)
	}
	g := &Guard{allow: make(map[tenant.ID]struct{}, len(cfg.Allow)), limit: int64(cfg.Admit)}
	for i, id := range cfg.Allow {
		if id.IsZero() {
			return nil, fmt.Errorf("%w: GuardConfig.Allow[%d] is the zero ID, which is not a tenant", ErrInvalidConfig, i)
		}
		g.allow[id] = struct{}{}
	}
	if g.limit == 0 {
		g.full.Store(&g.allow)
	}
	return g, nil
}

// Label returns the metric label of id: id itself if it is allowed or
// admitted (admitting it if there is room), else [Other]. A nil Guard
// labels every tenant Other.
func (g *Guard) Label(id tenant.ID) string {
	if g != nil && g.has(id) {
		return id.String()
	}
	return Other
}

// Attribute returns the tenant attribute for metrics: Key = g.Label(id).
func (g *Guard) Attribute(id tenant.ID) attribute.KeyValue { return Key.String(g.Label(id)) }

// has reports whether id has a label of its own, admitting it if there
// is room.
func (g *Guard) has(id tenant.ID) bool {
	if full := g.full.Load(); full != nil {
		_, ok := (*full)[id]
		return ok
	}
	if _, ok := g.allow[id]; ok {
		return true
	}
	if _, ok := g.admitted.Load(id); ok {
		return true
	}
	if id.IsZero() {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.admitted.Load(id); ok {
		return true
	}
	if g.n >= g.limit {
		return false
	}
	g.admitted.Store(id, struct{}{})
	if g.n++; g.n == g.limit {
		full := make(map[tenant.ID]struct{}, len(g.allow)+int(g.n))
		for id := range g.allow {
			full[id] = struct{}{}
		}
		g.admitted.Range(func(k, _ any) bool {
			full[k.(tenant.ID)] = struct{}{}
			return true
		})
		g.full.Store(&full)
		g.admitted.Clear()
	}
	return true
}

// Config says where a package of tenancy sends its spans and metrics.
// The zero Config sends none, and costs nothing: the packages install no
// tracer and take no measurement.
type Config struct {
	// TracerProvider makes the spans; nil means no spans. To use the
	// global provider, pass otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// MeterProvider makes the instruments; nil means no metrics. To use
	// the global provider, pass otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// Guard labels the tenants of metrics. Nil means a Guard of
	// DefaultGuardConfig of the package's own; share one Guard between
	// packages so that a tenant has the same label in each.
	Guard *Guard
}
