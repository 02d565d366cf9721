package authz

import (
	"context"
	"errors"
	"net/http"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/rtmx-ai/tenancy/telemetry"
	"github.com/rtmx-ai/tenancy/tenant"
)

// scope is the instrumentation scope of the package's tracer and meter.
const scope = "github.com/rtmx-ai/tenancy/authz"

// outcomeKey is the attribute of a request's outcome on its span
// ("allowed" or a reason) and of a refusal's reason on the refusal
// counter (a reason).
const outcomeKey attribute.Key = "authz.outcome"

// The outcomes of a request: allowed, or the reason it was refused. A
// fixed set, so that metrics stay bounded.
const (
	outcomeAllowed        = "allowed"
	reasonInvalidToken    = "invalid_token"
	reasonForbidden       = "forbidden"
	reasonCrossTenant     = "cross_tenant"
	reasonNotActive       = "not_active"
	reasonMissingRole     = "missing_role"
	reasonRateLimited     = "rate_limited"
	reasonOverConcurrency = "over_concurrency"
	reasonUnavailable     = "unavailable"
	reasonInternal        = "internal"
)

// observer records the spans and metrics of the middleware. A nil
// *observer records nothing.
type observer struct {
	tracer   trace.Tracer // nil: no spans
	guard    *telemetry.Guard
	requests metric.Int64Counter // nil (with refusals): no metrics
	refusals metric.Int64Counter
	// byLabel caches the attribute option of the request counter per
	// tenant label: at most as many as the guard has labels.
	byLabel sync.Map // string -> metric.MeasurementOption
}

// newObserver returns the observer of c, nil when c sends nothing.
func newObserver(c telemetry.Config) (*observer, error) {
	if c.TracerProvider == nil && c.MeterProvider == nil {
		return nil, nil
	}
	o := &observer{guard: c.Guard}
	if c.TracerProvider != nil {
		o.tracer = c.TracerProvider.Tracer(scope)
	}
	if c.MeterProvider != nil {
		if o.guard == nil {
			var err error
			if o.guard, err = telemetry.NewGuard(telemetry.DefaultGuardConfig()); err != nil {
				return nil, err
			}
		}
		m := c.MeterProvider.Meter(scope)
		var err error
		o.requests, err = m.Int64Counter("tenancy.authz.requests", metric.WithUnit("{request}"),
			metric.WithDescription("Requests the authz middleware decided, by tenant (guarded label; none before a token is verified)."))
		if err != nil {
			return nil, err
		}
		o.refusals, err = m.Int64Counter("tenancy.authz.refusals", metric.WithUnit("{request}"),
			metric.WithDescription("Requests the authz middleware refused, by tenant (guarded label; none before a token is verified) and authz.outcome (the reason)."))
		if err != nil {
			return nil, err
		}
	}
	return o, nil
}

// start returns r with the span of the request in its context, and
// whether it is the observer's own (to end). A span already recording in
// r's context (otelhttp's) is the request's span; otherwise the observer
// starts one.
func (o *observer) start(r *http.Request) (*http.Request, trace.Span, bool) {
	if o.tracer == nil {
		return r, nil, false
	}
	if s := trace.SpanFromContext(r.Context()); s.IsRecording() {
		return r, s, false
	}
	ctx, s := o.tracer.Start(r.Context(), "authz", trace.WithSpanKind(trace.SpanKindServer))
	return r.WithContext(ctx), s, true
}

// record records a request decided with err (nil: allowed) on span (nil:
// none) and in the metrics. id is the tenant of the verified token, zero
// when there was none.
func (o *observer) record(ctx context.Context, span trace.Span, id tenant.ID, err error) {
	outcome := outcomeAllowed
	if err != nil {
		outcome = reasonOf(err)
	}
	if span != nil {
		if !id.IsZero() {
			span.SetAttributes(telemetry.Attribute(id), outcomeKey.String(outcome))
		} else {
			span.SetAttributes(outcomeKey.String(outcome))
		}
		if outcome == reasonUnavailable || outcome == reasonInternal {
			span.SetStatus(codes.Error, outcome)
		}
	}
	if o.requests == nil {
		return
	}
	var tenantAttr []attribute.KeyValue
	opt := noTenant
	if !id.IsZero() {
		label := o.guard.Label(id)
		if v, ok := o.byLabel.Load(label); ok {
			opt = v.(metric.MeasurementOption)
		} else {
			opt = metric.WithAttributeSet(attribute.NewSet(telemetry.Key.String(label)))
			o.byLabel.Store(label, opt)
		}
		if err != nil {
			tenantAttr = []attribute.KeyValue{telemetry.Key.String(label)}
		}
	}
	o.requests.Add(ctx, 1, opt)
	if err != nil {
		o.refusals.Add(ctx, 1, metric.WithAttributes(append(tenantAttr, outcomeKey.String(outcome))...))
	}
}

// noTenant is the option of a request counted before its token was
// verified: no attributes.
var noTenant = metric.WithAttributeSet(*attribute.EmptySet())

// reasonOf is the reason of a refusal with err, in the order of
// writeError's statuses.
func reasonOf(err error) string {
	var le *limitError
	switch {
	case errors.Is(err, ErrInvalidToken):
		return reasonInvalidToken
	case errors.Is(err, tenant.ErrCrossTenant):
		return reasonCrossTenant
	case errors.Is(err, ErrTenantNotActive):
		return reasonNotActive
	case errors.Is(err, ErrMissingRole):
		return reasonMissingRole
	case errors.Is(err, ErrForbidden):
		return reasonForbidden
	case errors.As(err, &le) && le.inFlight:
		return reasonOverConcurrency
	case errors.Is(err, ErrRateLimited):
		return reasonRateLimited
	case errors.Is(err, ErrUnavailable):
		return reasonUnavailable
	}
	return reasonInternal
}
