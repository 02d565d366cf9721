package authz_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/telemetry"
	"github.com/rtmx-ai/tenancy/tenant"
)

// BenchmarkMiddlewareTelemetry is BenchmarkMiddleware's request (EdDSA)
// with Config.Telemetry: tel=off is the zero Config (the baseline),
// tel=noop otel's no-op providers, tel=sdk the OpenTelemetry SDK (every
// span sampled, to a batch processor with no exporter; metrics to a
// manual reader). Compare with benchstat -col /tel.
func BenchmarkMiddlewareTelemetry(b *testing.B) {
	testKeys(b)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	sg := edSigner()
	token := mint(b, sg, claims("acme"))
	vc := verifierConfig()
	vc.JWKS = jwksJSON(b, sg)
	v := newVerifier(b, vc)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() {
		_ = tp.Shutdown(b.Context())
		_ = mp.Shutdown(b.Context())
	})
	for _, tc := range []struct {
		name string
		tel  telemetry.Config
	}{
		{"off", telemetry.Config{}},
		{"noop", telemetry.Config{TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider()}},
		{"sdk", telemetry.Config{TracerProvider: tp, MeterProvider: mp}},
	} {
		cfg := authz.DefaultConfig()
		cfg.Verifier = v
		cfg.Directory = newMemDirectory(map[string]tenant.State{"acme": tenant.StateActive})
		cfg.DirectoryTTL = 5 * time.Minute
		cfg.Resolvers = []authz.Resolver{authz.PathValue("tenant")}
		cfg.Telemetry = tc.tel
		mw, err := authz.NewMiddleware(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("tel="+tc.name, func(b *testing.B) {
			mux := http.NewServeMux()
			mux.Handle("GET /t/{tenant}/items", mw.Handler(ok))
			r := httptest.NewRequest(http.MethodGet, "/t/acme/items", nil)
			r.Header.Set("Authorization", "Bearer "+token)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				w.code = 0
				mux.ServeHTTP(w, r)
				if w.code != http.StatusOK {
					b.Fatalf("status %d", w.code)
				}
			}
		})
	}
}
