// Package oteltest is the OpenTelemetry SDK in memory for the tests of
// tenancy: spans in a recorder, metrics in a manual reader (the SDK's own
// implementations, not fakes), and text forms of what they recorded, so
// that a test can assert what a span or a data point carries.
package oteltest

import (
	"context"
	"sort"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/rtmx-ai/tenancy/telemetry"
)

// SDK holds a tracer provider whose spans go to Spans and a meter
// provider whose metrics Reader collects.
type SDK struct {
	Spans  *tracetest.SpanRecorder
	TP     *sdktrace.TracerProvider
	Reader *sdkmetric.ManualReader
	MP     *sdkmetric.MeterProvider
}

// New returns an SDK that is shut down when tb's test ends.
func New(tb testing.TB) *SDK {
	tb.Helper()
	s := &SDK{Spans: tracetest.NewSpanRecorder(), Reader: sdkmetric.NewManualReader()}
	s.TP = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s.Spans))
	s.MP = sdkmetric.NewMeterProvider(sdkmetric.WithReader(s.Reader))
	tb.Cleanup(func() {
		_ = s.TP.Shutdown(context.WithoutCancel(tb.Context()))
		_ = s.MP.Shutdown(context.WithoutCancel(tb.Context()))
	})
	return s
}

// Config is a telemetry.Config with both providers and guard g.
func (s *SDK) Config(g *telemetry.Guard) telemetry.Config {
	return telemetry.Config{TracerProvider: s.TP, MeterProvider: s.MP, Guard: g}
}

// Metrics collects the metrics recorded so far, by name.
func (s *SDK) Metrics(tb testing.TB) map[string][]metricdata.Metrics {
	tb.Helper()
	var rm metricdata.ResourceMetrics
	if err := s.Reader.Collect(tb.Context(), &rm); err != nil {
		tb.Fatalf("oteltest: collect: %v", err)
	}
	out := map[string][]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = append(out[m.Name], m)
		}
	}
	return out
}

// AttrString is kvs as "key=value,...", sorted ("" for none).
func AttrString(kvs []attribute.KeyValue) string {
	parts := make([]string, len(kvs))
	for i, kv := range kvs {
		parts[i] = string(kv.Key) + "=" + kv.Value.String()
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// SpanAttrs returns the attributes of span s by key.
func SpanAttrs(s sdktrace.ReadOnlySpan) map[string]string {
	out := map[string]string{}
	for _, kv := range s.Attributes() {
		out[string(kv.Key)] = kv.Value.String()
	}
	return out
}

// SpanText is everything a span carries as text: its name, attributes,
// status and events.
func SpanText(s sdktrace.ReadOnlySpan) string {
	var b strings.Builder
	b.WriteString(s.Name() + "\n" + AttrString(s.Attributes()) + "\n" + s.Status().Description + "\n")
	for _, e := range s.Events() {
		b.WriteString(e.Name + " " + AttrString(e.Attributes) + "\n")
	}
	return b.String()
}
