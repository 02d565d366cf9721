package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/rtmx-ai/tenancy/telemetry"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Telemetry configures the spans and metrics of a DB's tenant-scoped
// work (Config.Telemetry). With a provider, [Open] installs a pgx tracer
// on the connections of the tenant pools and the shared pool (after any
// tracer Config.Platform.ConnConfig or a cluster's config had already,
// which keeps working); the platform pool and [Admin] are not traced.
// Without one, nothing is installed.
//
// Spans (TracerProvider): one per statement ("store.query") and per
// batch ("store.batch": in the shared-pool mode every call is one, with
// its setting of the tenant; with db.operation.batch.size), of kind
// client, children of the span in the call's context, carrying
// db.system=postgresql and tenant.id, the exact tenant of the context
// (the tenant the connection is logged in as, or set for). A failed
// statement sets status Error with its SQLSTATE (and
// db.response.status_code), never PostgreSQL's message, which may quote
// an argument. Arguments are never recorded; the SQL text only with
// StatementTextRecorded.
//
// Metrics (MeterProvider): the histogram tenancy.store.acquire.duration
// (seconds) of the time each call waited for its connection (the pool,
// the global cap, connecting), by tenant.id, the Guard's label (at most
// len(Allow) + Admit + 1 values), with error.type on a failed acquire.
type Telemetry struct {
	// Config holds the providers and the label guard; with neither
	// provider, nothing is installed.
	telemetry.Config
	// Statements says whether spans carry the statement text. The zero
	// value, StatementTextOmitted, leaves it out.
	Statements StatementText
}

// StatementText says whether the spans of store carry the SQL text of
// their statements (db.statement). Arguments are never recorded.
type StatementText int

const (
	// StatementTextOmitted: spans carry no SQL text.
	StatementTextOmitted StatementText = iota
	// StatementTextRecorded: spans carry the SQL text (with $n
	// placeholders; never the arguments), in db.statement, and for
	// batches in an event per statement.
	StatementTextRecorded
)

// telemetryScope is the instrumentation scope of store's tracer and meter.
const telemetryScope = "github.com/rtmx-ai/tenancy/store"

var dbSystem = attribute.String("db.system", "postgresql")

// installTelemetry sets the tracer of t on the connection configs of the
// tenant pools and the shared pool (db.base and db.clusters), after any
// tracer they have already. Nil t, or t without a provider, installs
// nothing.
func (db *DB) installTelemetry(t *Telemetry) error {
	if t == nil || (t.TracerProvider == nil && t.MeterProvider == nil) {
		return nil
	}
	if t.Statements != StatementTextOmitted && t.Statements != StatementTextRecorded {
		return fmt.Errorf("store: %w: Config.Telemetry.Statements must be StatementTextOmitted or StatementTextRecorded, got %d", ErrInvalidConfig, t.Statements)
	}
	pt := &pgTracer{text: t.Statements == StatementTextRecorded, guard: t.Guard}
	if t.TracerProvider != nil {
		pt.tracer = t.TracerProvider.Tracer(telemetryScope)
	}
	if t.MeterProvider != nil {
		if pt.guard == nil {
			var err error
			if pt.guard, err = telemetry.NewGuard(telemetry.DefaultGuardConfig()); err != nil {
				return fmt.Errorf("store: Config.Telemetry: %w", err)
			}
		}
		var err error
		pt.acquire, err = t.MeterProvider.Meter(telemetryScope).Float64Histogram("tenancy.store.acquire.duration",
			metric.WithUnit("s"),
			metric.WithDescription("Time a tenant-scoped call waited for a connection (pool, global cap, connect), by tenant (guarded label)."),
			metric.WithExplicitBucketBoundaries(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
		if err != nil {
			return fmt.Errorf("store: Config.Telemetry: %w", err)
		}
	}
	install := func(c *pgxpool.Config) {
		if c.ConnConfig.Tracer != nil {
			c.ConnConfig.Tracer = multitracer.New(c.ConnConfig.Tracer, pt)
		} else {
			c.ConnConfig.Tracer = pt
		}
	}
	install(db.base)
	for _, c := range db.clusters {
		install(c)
	}
	return nil
}

// pgTracer traces the statements of tenant connections and measures their
// acquisition. The tenant is the context's, which is the tenant the
// connection serves: DB takes it from the context to pick the tenant's
// pool (or to set it, in the shared pool), and a Tx refuses a context of
// another tenant.
type pgTracer struct {
	tracer  trace.Tracer // nil: no spans
	text    bool
	guard   *telemetry.Guard
	acquire metric.Float64Histogram // nil: no metrics
}

var (
	_ pgx.QueryTracer       = (*pgTracer)(nil)
	_ pgx.BatchTracer       = (*pgTracer)(nil)
	_ pgxpool.AcquireTracer = (*pgTracer)(nil)
)

func (t *pgTracer) start(ctx context.Context, name, sql string, extra ...attribute.KeyValue) context.Context {
	attrs := make([]attribute.KeyValue, 0, 3+len(extra))
	attrs = append(attrs, dbSystem)
	if id, ok := tenant.FromContext(ctx); ok {
		attrs = append(attrs, telemetry.Attribute(id))
	}
	if t.text && sql != "" {
		attrs = append(attrs, attribute.String("db.statement", sql))
	}
	attrs = append(attrs, extra...)
	ctx, _ = t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return ctx
}

// fail marks span failed with err, by its SQLSTATE only: PostgreSQL's
// messages may quote the values of arguments.
func fail(span trace.Span, err error) {
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr):
		span.SetAttributes(attribute.String("db.response.status_code", pgErr.Code))
		span.SetStatus(codes.Error, "SQLSTATE "+pgErr.Code)
	default:
		span.SetStatus(codes.Error, errorType(err))
	}
}

// errorType is a fixed name for err, which is not a PostgreSQL error.
func errorType(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "error"
}

// TraceQueryStart starts the span of a statement.
func (t *pgTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if t.tracer == nil {
		return ctx
	}
	return t.start(ctx, "store.query", data.SQL)
}

// TraceQueryEnd ends the span of a statement.
func (t *pgTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	if t.tracer == nil {
		return
	}
	span := trace.SpanFromContext(ctx)
	if data.Err != nil {
		fail(span, data.Err)
	}
	span.End()
}

// TraceBatchStart starts the span of a batch.
func (t *pgTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	if t.tracer == nil {
		return ctx
	}
	return t.start(ctx, "store.batch", "", attribute.Int("db.operation.batch.size", data.Batch.Len()))
}

// TraceBatchQuery records a statement of a batch on its span: its text,
// if asked for, and its failure.
func (t *pgTracer) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	if t.tracer == nil {
		return
	}
	span := trace.SpanFromContext(ctx)
	if t.text {
		span.AddEvent("statement", trace.WithAttributes(attribute.String("db.statement", data.SQL)))
	}
	if data.Err != nil {
		fail(span, data.Err)
	}
}

// TraceBatchEnd ends the span of a batch.
func (t *pgTracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchEndData) {
	if t.tracer == nil {
		return
	}
	span := trace.SpanFromContext(ctx)
	if data.Err != nil {
		fail(span, data.Err)
	}
	span.End()
}

type acquireStartKey struct{}

// TraceAcquireStart notes when a connection was asked for.
func (t *pgTracer) TraceAcquireStart(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireStartData) context.Context {
	if t.acquire == nil {
		return ctx
	}
	return context.WithValue(ctx, acquireStartKey{}, time.Now())
}

// TraceAcquireEnd records how long getting the connection took, by
// tenant label.
func (t *pgTracer) TraceAcquireEnd(ctx context.Context, _ *pgxpool.Pool, data pgxpool.TraceAcquireEndData) {
	if t.acquire == nil {
		return
	}
	start, ok := ctx.Value(acquireStartKey{}).(time.Time)
	if !ok {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 2)
	if id, ok := tenant.FromContext(ctx); ok {
		attrs = append(attrs, t.guard.Attribute(id))
	}
	if data.Err != nil {
		attrs = append(attrs, attribute.String("error.type", errorType(data.Err)))
	}
	t.acquire.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(attrs...))
}
