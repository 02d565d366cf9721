package store_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/rtmx-ai/tenancy/internal/oteltest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/telemetry"
)

// otelSDK is the OpenTelemetry SDK in memory, with this package's readings.
type otelSDK struct{ *oteltest.SDK }

func newOtelSDK(t testing.TB) *otelSDK { return &otelSDK{oteltest.New(t)} }

// since returns the spans ended after the first n.
func (s *otelSDK) since(n int) []sdktrace.ReadOnlySpan { return s.Spans.Ended()[n:] }

// acquires returns the count of the acquire histogram by attributes.
func (s *otelSDK) acquires(t testing.TB) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, m := range s.Metrics(t)["tenancy.store.acquire.duration"] {
		h, ok := m.Data.(metricdata.Histogram[float64])
		require.True(t, ok, "%T", m.Data)
		for _, dp := range h.DataPoints {
			out[attrString(dp.Attributes.ToSlice())] += dp.Count
		}
	}
	return out
}

var (
	attrString = oteltest.AttrString
	spanText   = oteltest.SpanText
)

func spanAttr(s sdktrace.ReadOnlySpan, key string) (string, bool) {
	v, ok := oteltest.SpanAttrs(s)[key]
	return v, ok
}

func withTelemetry(tel *store.Telemetry) func(*store.AdminConfig, *store.Config) {
	return func(_ *store.AdminConfig, c *store.Config) { c.Telemetry = tel }
}

const argCanary = "argcanary"

// Every tenant-scoped statement through store.DB, on every placement,
// has a client span with db.system=postgresql and the tenant of its
// context; no SQL text unless asked for, never an argument, and a failed
// statement says its SQLSTATE but not PostgreSQL's message (which quotes
// the argument). Each tenant's connection waits are measured under its
// label.
func TestTelemetryStoreSpans(t *testing.T) {
	sdk := newOtelSDK(t)
	forPlacements(t, func(t *testing.T, e *env) {
		a, actx := e.newTenant(t, "tela")
		b, bctx := e.newTenant(t, "telb")

		n := len(sdk.Spans.Ended())
		e.insertReq(t, actx, "REQ-1", "text of a")
		var count int
		require.NoError(t, e.db.QueryRow(actx, `SELECT count(*) FROM requirements WHERE req_id <> $1`, argCanary).Scan(&count))
		require.Equal(t, 1, count)
		require.NoError(t, e.db.Tx(actx, func(tx *store.Tx) error {
			if _, err := tx.Exec(actx, `UPDATE requirements SET status = $1 WHERE req_id = 'REQ-1'`, "COMPLETE"+argCanary); err != nil {
				return err
			}
			return tx.QueryRow(actx, `SELECT count(*) FROM requirements WHERE category <> $1`, argCanary).Scan(&count)
		}))
		_, err := e.db.Exec(actx, `SELECT $1::int`, argCanary)
		require.Equal(t, "22P02", pgCode(err))
		require.Contains(t, err.Error(), argCanary, "PostgreSQL's message quotes the argument")

		spansA := sdk.since(n)
		require.NotEmpty(t, spansA)
		failed := 0
		for _, s := range spansA {
			require.Equal(t, trace.SpanKindClient, s.SpanKind())
			require.Contains(t, []string{"store.query", "store.batch"}, s.Name())
			sys, _ := spanAttr(s, "db.system")
			require.Equal(t, "postgresql", sys)
			id, ok := spanAttr(s, "tenant.id")
			require.True(t, ok, "span %s without tenant", s.Name())
			require.Equal(t, a.String(), id)
			_, hasText := spanAttr(s, "db.statement")
			require.False(t, hasText)
			require.Empty(t, s.Events())
			text := spanText(s)
			require.NotContains(t, text, argCanary)
			require.NotContains(t, text, "requirements", "no SQL text")
			if s.Status().Code == codes.Error {
				failed++
				require.Equal(t, "SQLSTATE 22P02", s.Status().Description)
				code, _ := spanAttr(s, "db.response.status_code")
				require.Equal(t, "22P02", code)
			}
		}
		require.Equal(t, 1, failed)

		n = len(sdk.Spans.Ended())
		_, err = reqIDs(t, e.db, bctx, `SELECT req_id FROM requirements`)
		require.NoError(t, err)
		spansB := sdk.since(n)
		require.NotEmpty(t, spansB)
		for _, s := range spansB {
			id, _ := spanAttr(s, "tenant.id")
			require.Equal(t, b.String(), id)
		}

		acq := sdk.acquires(t)
		require.GreaterOrEqual(t, acq["tenant.id="+a.String()], uint64(4), "%v", acq)
		require.GreaterOrEqual(t, acq["tenant.id="+b.String()], uint64(1), "%v", acq)
	}, withTelemetry(&store.Telemetry{Config: telemetry.Config{TracerProvider: sdk.TP, MeterProvider: sdk.MP}}))
}

// With StatementTextRecorded, spans carry the SQL text (in db.statement
// for a statement, an event per statement of a batch), still without
// arguments.
func TestTelemetryStoreStatementText(t *testing.T) {
	sdk := newOtelSDK(t)
	forModes(t, func(t *testing.T, e *env) {
		_, ctx := e.newTenant(t, "telt")
		const sql = `SELECT count(*) FROM requirements WHERE req_id <> $1`
		n := len(sdk.Spans.Ended())
		var count int
		require.NoError(t, e.db.QueryRow(ctx, sql, argCanary).Scan(&count))
		found := false
		for _, s := range sdk.since(n) {
			require.NotContains(t, spanText(s), argCanary)
			if text, ok := spanAttr(s, "db.statement"); ok && text == sql {
				found = true
			}
			for _, ev := range s.Events() {
				if attrString(ev.Attributes) == "db.statement="+sql {
					found = true
				}
			}
		}
		require.True(t, found, "the statement's text is on its span")
	}, withTelemetry(&store.Telemetry{Config: telemetry.Config{TracerProvider: sdk.TP}, Statements: store.StatementTextRecorded}))
}

// The acquire histogram's tenant label comes from the Guard: with one
// place, the first tenant has its own and the next is _other.
func TestTelemetryStoreGuardedLabel(t *testing.T) {
	sdk := newOtelSDK(t)
	g, err := telemetry.NewGuard(telemetry.GuardConfig{Admit: 1})
	require.NoError(t, err)
	e := newEnv(t, store.ModeTenantLogin, withTelemetry(&store.Telemetry{Config: telemetry.Config{MeterProvider: sdk.MP, Guard: g}}))
	a, actx := e.newTenant(t, "telg")
	_, bctx := e.newTenant(t, "telh")
	_, cctx := e.newTenant(t, "teli")
	for _, ctx := range []context.Context{actx, bctx, cctx, actx} {
		_, err := reqIDs(t, e.db, ctx, `SELECT req_id FROM requirements`)
		require.NoError(t, err)
	}
	require.Equal(t, map[string]uint64{"tenant.id=" + a.String(): 2, "tenant.id=_other": 2}, sdk.acquires(t))
	require.Empty(t, sdk.Spans.Ended(), "no TracerProvider, no spans")
}

// countingTracer counts the statements it sees with SQL text sql.
type countingTracer struct {
	sql string
	n   atomic.Int64
}

func (c *countingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if data.SQL == c.sql {
		c.n.Add(1)
	}
	return ctx
}
func (c *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// A tracer the platform config had already keeps tracing the tenant
// connections beside store's.
func TestTelemetryStoreKeepsConfiguredTracer(t *testing.T) {
	sdk := newOtelSDK(t)
	own := &countingTracer{sql: `SELECT req_id FROM requirements`}
	e := newEnv(t, store.ModeTenantLogin, func(_ *store.AdminConfig, c *store.Config) {
		c.Platform.ConnConfig.Tracer = own
		c.Telemetry = &store.Telemetry{Config: telemetry.Config{TracerProvider: sdk.TP}}
	})
	_, ctx := e.newTenant(t, "telk")
	spans := len(sdk.Spans.Ended())
	_, err := reqIDs(t, e.db, ctx, own.sql)
	require.NoError(t, err)
	require.EqualValues(t, 1, own.n.Load())
	require.Len(t, sdk.since(spans), 1)
}

func TestTelemetryStoreConfigErrors(t *testing.T) {
	d := databaseFor(t, store.ModeTenantLogin)
	newEnvOn(t, d, store.ModeTenantLogin) // the control plane exists
	cfg, err := store.ParseConfig(platform(t, d), secret)
	require.NoError(t, err)
	cfg.Telemetry = &store.Telemetry{Config: telemetry.Config{TracerProvider: newOtelSDK(t).TP}, Statements: 7}
	_, err = store.Open(t.Context(), cfg)
	require.ErrorIs(t, err, store.ErrInvalidConfig)
	require.ErrorContains(t, err, "Config.Telemetry.Statements")

	// Without a provider, nothing is checked or installed.
	cfg.Telemetry = &store.Telemetry{Statements: 7}
	db, err := store.Open(t.Context(), cfg)
	require.NoError(t, err)
	db.Close()
}
