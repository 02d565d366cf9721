package store_test

import (
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/telemetry"
	"github.com/rtmx-ai/tenancy/tenant"
)

// BenchmarkTelemetryPKSelect is BenchmarkPKSelect's one-row SELECT
// through DB.QueryRow (tenant-login mode, one call at a time) without
// telemetry (mode=off, nothing installed: the baseline) and with it
// (mode=sdk: the OpenTelemetry SDK sampling every span, no exporter,
// and a manual metric reader).
func BenchmarkTelemetryPKSelect(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() {
		_ = tp.Shutdown(b.Context())
		_ = mp.Shutdown(b.Context())
	})
	for _, m := range []struct {
		name string
		tel  *store.Telemetry
	}{
		{"off", nil},
		{"sdk", &store.Telemetry{Config: telemetry.Config{TracerProvider: tp, MeterProvider: mp}}},
	} {
		b.Run("mode="+m.name, func(b *testing.B) {
			e := newEnv(b, store.ModeTenantLogin, withTelemetry(m.tel))
			id := benchTenants(b, e, "telbench", 1, benchRows)[0]
			ctx := tenant.NewContext(b.Context(), id)
			var text string
			b.ReportAllocs()
			i := int64(0)
			for b.Loop() {
				i++
				if err := e.db.QueryRow(ctx, pkSelect, benchKey(i, benchRows)).Scan(&text); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
