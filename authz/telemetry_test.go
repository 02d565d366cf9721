package authz_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/internal/oteltest"
	"github.com/rtmx-ai/tenancy/telemetry"
	"github.com/rtmx-ai/tenancy/tenant"
)

// otelSDK is the OpenTelemetry SDK in memory, with this package's readings.
type otelSDK struct{ *oteltest.SDK }

func newOtelSDK(t testing.TB) *otelSDK { return &otelSDK{oteltest.New(t)} }

func (s *otelSDK) config(g *telemetry.Guard) telemetry.Config { return s.Config(g) }

// counts returns the data points of counter name, by their attributes
// ("key=value,..." sorted; "" for none).
func (s *otelSDK) counts(t testing.TB, name string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, m := range s.Metrics(t)[name] {
		sum, ok := m.Data.(metricdata.Sum[int64])
		require.True(t, ok, "%s is a %T", name, m.Data)
		for _, dp := range sum.DataPoints {
			out[attrString(dp.Attributes.ToSlice())] += dp.Value
		}
	}
	return out
}

// allMetricValues returns every attribute value of every data point.
func (s *otelSDK) allMetricValues(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, ms := range s.Metrics(t) {
		for _, m := range ms {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range sum.DataPoints {
					for _, kv := range dp.Attributes.ToSlice() {
						out = append(out, string(kv.Key)+"="+kv.Value.String())
					}
				}
			}
		}
	}
	return out
}

var (
	attrString = oteltest.AttrString
	spanAttrs  = oteltest.SpanAttrs
	spanText   = oteltest.SpanText
)

// A request of tenant acme: one server span with tenant.id=acme and the
// outcome, the handler's spans are its children, and the request counter
// has acme's label.
func TestTelemetryRequestOfTenant(t *testing.T) {
	e := newEnv(t)
	sdk := newOtelSDK(t)
	var inner trace.SpanContext
	h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) {
		c.Telemetry = sdk.config(nil)
		c.Resolvers = []authz.Resolver{authz.PathPrefix("/t/")}
	}).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, s := sdk.TP.Tracer("handler").Start(r.Context(), "handler")
		inner = s.SpanContext()
		s.End()
		echo.ServeHTTP(w, r)
	}))
	require.Equal(t, 200, do(h, request("/t/acme/items", e.token(t, "acme"))).Code)

	ended := sdk.Spans.Ended()
	require.Len(t, ended, 2)
	var authzSpan sdktrace.ReadOnlySpan
	for _, s := range ended {
		if s.Name() == "authz" {
			authzSpan = s
		}
	}
	require.NotNil(t, authzSpan)
	require.Equal(t, trace.SpanKindServer, authzSpan.SpanKind())
	require.Equal(t, map[string]string{"tenant.id": "acme", "authz.outcome": "allowed"}, spanAttrs(authzSpan))
	require.Equal(t, authzSpan.SpanContext().SpanID(), ended[0].Parent().SpanID(), "the handler's span is a child of the request's")
	require.Equal(t, inner.TraceID(), authzSpan.SpanContext().TraceID())

	require.Equal(t, map[string]int64{"tenant.id=acme": 1}, sdk.counts(t, "tenancy.authz.requests"))
	require.Empty(t, sdk.counts(t, "tenancy.authz.refusals"))
}

// With a span already recording in the request's context (otelhttp's),
// the middleware starts none: it tags that span.
func TestTelemetryTagsTheSpanInContext(t *testing.T) {
	e := newEnv(t)
	sdk := newOtelSDK(t)
	h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.Telemetry = sdk.config(nil) }).Handler(echo)
	r := request("/", e.token(t, "acme"))
	ctx, server := sdk.TP.Tracer("otelhttp").Start(r.Context(), "GET /", trace.WithSpanKind(trace.SpanKindServer))
	require.Equal(t, 200, do(h, r.WithContext(ctx)).Code)
	require.Empty(t, sdk.Spans.Ended(), "no span of its own")
	server.End()
	ended := sdk.Spans.Ended()
	require.Len(t, ended, 1)
	require.Equal(t, "GET /", ended[0].Name())
	require.Equal(t, map[string]string{"tenant.id": "acme", "authz.outcome": "allowed"}, spanAttrs(ended[0]))
}

// Each reason a request is refused for is counted by tenant (none before
// the token is verified) and reason, and is the outcome on its span; the
// reason agrees with the problem's code.
func TestTelemetryRefusalReasons(t *testing.T) {
	e := newEnv(t)
	e.dir.set("initech", tenant.StateSuspended)
	cases := []struct {
		reason, code, tenant string
		req                  *http.Request
		edit                 func(*authz.Config)
	}{
		{"invalid_token", "invalid_token", "", request("/t/acme/", ""), nil},
		{"invalid_token", "invalid_token", "", request("/t/acme/", "not-a.jwt.at-all"), nil},
		{"forbidden", "forbidden", "", request("/t/acme/", e.token(t, "")), nil},
		{"cross_tenant", "cross_tenant", "acme", request("/t/globex/", e.token(t, "acme")), nil},
		{"cross_tenant", "cross_tenant", "acme", request("/t/NOT_AN_ID/", e.token(t, "acme")), nil},
		{"not_active", "tenant_not_active", "initech", request("/t/initech/", e.token(t, "initech")), nil},
		{"not_active", "tenant_not_active", "ghost", request("/t/ghost/", e.token(t, "ghost")), nil},
		{"missing_role", "missing_role", "acme", request("/t/acme/", e.token(t, "acme", "janitor")), nil},
		{"rate_limited", "rate_limited", "acme", request("/t/acme/", e.token(t, "acme")), func(c *authz.Config) {
			c.Limiter = fixedLimiter{ratelimit.Decision{Limit: 1, Burst: 1}}
		}},
		{"over_concurrency", "rate_limited", "acme", request("/t/acme/", e.token(t, "acme")), func(c *authz.Config) {
			c.Concurrency = &slots{n: 0}
		}},
		{"unavailable", "unavailable", "acme", request("/t/acme/", e.token(t, "acme")), func(c *authz.Config) {
			c.Limiter = &bucketLimiter{limit: 1, burst: 1, err: errors.New("redis down")}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.reason+"/"+tc.tenant, func(t *testing.T) {
			sdk := newOtelSDK(t)
			h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) {
				c.Telemetry = sdk.config(nil)
				c.Resolvers = []authz.Resolver{authz.PathPrefix("/t/")}
				if tc.edit != nil {
					tc.edit(c)
				}
			}).Handler(echo)
			w := do(h, tc.req)
			p := requireProblem(t, w, w.Code)
			require.Equal(t, tc.code, p["code"])

			want := map[string]string{"authz.outcome": tc.reason}
			labels := "authz.outcome=" + tc.reason
			requests := ""
			if tc.tenant != "" {
				want["tenant.id"] = tc.tenant
				labels += ",tenant.id=" + tc.tenant
				requests = "tenant.id=" + tc.tenant
			}
			ended := sdk.Spans.Ended()
			require.Len(t, ended, 1)
			require.Equal(t, want, spanAttrs(ended[0]))
			require.Equal(t, map[string]int64{labels: 1}, sdk.counts(t, "tenancy.authz.refusals"))
			require.Equal(t, map[string]int64{requests: 1}, sdk.counts(t, "tenancy.authz.requests"))
		})
	}
}

// Nothing a request brings but the verified tenant reaches telemetry:
// not the token, its subject, the tenant a hostile path or host names, a
// forged tenant claim, nor the header values.
func TestTelemetryCarriesOnlyTheVerifiedTenant(t *testing.T) {
	e := newEnv(t)
	sdk := newOtelSDK(t)
	h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) {
		c.Telemetry = sdk.config(nil)
		c.Resolvers = []authz.Resolver{authz.PathPrefix("/t/"), authz.Subdomain("example.test")}
	}).Handler(echo)
	c := claims("acme")
	c["sub"] = "subjectcanary"
	c["email"] = "emailcanary@example.test"
	acme := mint(t, edSigner(), c)
	forged := mintRaw(t, edSigner().method, evilEd, `{"alg":"EdDSA","kid":"ed-1"}`, mustJSON(t, claims("forgedcanary")))
	unsigned := b64(`{"alg":"none"}`) + "." + b64(mustJSON(t, claims("nonecanary"))) + "."
	hostile := []*http.Request{
		request("/t/globex/items", acme),
		request("/t/pathcanary/items", acme),
		request("/t/"+strings.Repeat("x", 300)+"/items", acme),
		request("/t/acme%2f..%2fglobex/items", acme),
		request("/t/acme/items", forged),
		request("/t/acme/items", unsigned),
		request("/t/acme/items", mint(t, edSigner(), claims("Claimcanary"))),
	}
	hostR := request("/t/acme/items", acme)
	hostR.Host = "hostcanary.example.test"
	hostile = append(hostile, hostR)
	for _, r := range hostile {
		r.Header.Set("X-Forwarded-Host", "headercanary.example.test")
		w := do(h, r)
		require.NotEqual(t, 200, w.Code, r.URL.String())
	}
	var text []string
	for _, s := range sdk.Spans.Ended() {
		text = append(text, spanText(s))
		if id, ok := spanAttrs(s)["tenant.id"]; ok {
			require.Equal(t, "acme", id)
		}
	}
	text = append(text, sdk.allMetricValues(t)...)
	all := strings.Join(text, "\n")
	require.Len(t, sdk.Spans.Ended(), len(hostile))
	for _, secret := range []string{acme, forged, unsigned, "subjectcanary", "emailcanary", "globex", "pathcanary", "xxxxxxxx",
		"forgedcanary", "nonecanary", "claimcanary", "Claimcanary", "hostcanary", "headercanary", "user-1"} {
		require.NotContains(t, all, secret)
	}
	for _, v := range sdk.allMetricValues(t) {
		if strings.HasPrefix(v, "tenant.id=") {
			require.Equal(t, "tenant.id=acme", v)
		}
	}
}

// With a guard admitting 3 tenants and allowing acme, 100 tenants make at
// most 3+1+1 series per counter; the sums are exact, the rest aggregated
// under _other. Spans keep the exact tenant.
func TestTelemetryGuardBoundsSeries(t *testing.T) {
	e := newEnv(t)
	const n = 100
	states := map[string]tenant.State{"acme": tenant.StateActive}
	for i := range n {
		states[fmt.Sprintf("t%d", i)] = tenant.StateActive
	}
	dir := newMemDirectory(states)
	sdk := newOtelSDK(t)
	g, err := telemetry.NewGuard(telemetry.GuardConfig{Allow: []tenant.ID{tenant.MustParseID("acme")}, Admit: 3})
	require.NoError(t, err)
	lim := &bucketLimiter{limit: 1e-9, burst: 1} // each tenant's second request is refused
	h := newMiddleware(t, e.v, dir, func(c *authz.Config) {
		c.Telemetry = sdk.config(g)
		c.Limiter = lim
	}).Handler(echo)
	for i := range n {
		tok := e.token(t, fmt.Sprintf("t%d", i))
		require.Equal(t, 200, do(h, request("/", tok)).Code)
		require.Equal(t, 429, do(h, request("/", tok)).Code)
	}
	acme := e.token(t, "acme")
	require.Equal(t, 200, do(h, request("/", acme)).Code)
	require.Equal(t, 429, do(h, request("/", acme)).Code)

	require.Equal(t, map[string]int64{
		"tenant.id=acme": 2, "tenant.id=t0": 2, "tenant.id=t1": 2, "tenant.id=t2": 2, "tenant.id=_other": 2 * (n - 3),
	}, sdk.counts(t, "tenancy.authz.requests"))
	require.Equal(t, map[string]int64{
		"authz.outcome=rate_limited,tenant.id=acme":   1,
		"authz.outcome=rate_limited,tenant.id=t0":     1,
		"authz.outcome=rate_limited,tenant.id=t1":     1,
		"authz.outcome=rate_limited,tenant.id=t2":     1,
		"authz.outcome=rate_limited,tenant.id=_other": n - 3,
	}, sdk.counts(t, "tenancy.authz.refusals"))

	spanTenants := map[string]int{}
	for _, s := range sdk.Spans.Ended() {
		spanTenants[spanAttrs(s)["tenant.id"]]++
	}
	require.Len(t, spanTenants, n+1)
	require.Equal(t, 2, spanTenants["t99"])
}

// Authenticate, for tokens carried elsewhere, tags the span recording in
// the request's context and counts the request; it starts no span.
func TestTelemetryAuthenticate(t *testing.T) {
	e := newEnv(t)
	sdk := newOtelSDK(t)
	mw := newMiddleware(t, e.v, e.dir, func(c *authz.Config) { c.Telemetry = sdk.config(nil) })
	r := request("/ws", "")
	ctx, server := sdk.TP.Tracer("otelhttp").Start(r.Context(), "GET /ws")
	r = r.WithContext(ctx)
	_, err := mw.Authenticate(r, e.token(t, "acme"))
	require.NoError(t, err)
	_, err = mw.Authenticate(r, e.token(t, "acme", "janitor"))
	require.ErrorIs(t, err, authz.ErrMissingRole)
	server.End()
	ended := sdk.Spans.Ended()
	require.Len(t, ended, 1)
	require.Equal(t, map[string]string{"tenant.id": "acme", "authz.outcome": "missing_role"}, spanAttrs(ended[0]))
	require.Equal(t, map[string]int64{"tenant.id=acme": 2}, sdk.counts(t, "tenancy.authz.requests"))
	require.Equal(t, map[string]int64{"authz.outcome=missing_role,tenant.id=acme": 1}, sdk.counts(t, "tenancy.authz.refusals"))
}

// Only a MeterProvider: metrics, no spans (and no span in the context);
// only a TracerProvider: spans, no instruments.
func TestTelemetryOneProvider(t *testing.T) {
	e := newEnv(t)
	sdk := newOtelSDK(t)
	h := newMiddleware(t, e.v, e.dir, func(c *authz.Config) {
		c.Telemetry = telemetry.Config{MeterProvider: sdk.MP}
	}).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.False(t, trace.SpanFromContext(r.Context()).SpanContext().IsValid())
		echo.ServeHTTP(w, r)
	}))
	require.Equal(t, 200, do(h, request("/", e.token(t, "acme"))).Code)
	require.Equal(t, map[string]int64{"tenant.id=acme": 1}, sdk.counts(t, "tenancy.authz.requests"))
	require.Empty(t, sdk.Spans.Ended())

	sdk2 := newOtelSDK(t)
	h = newMiddleware(t, e.v, e.dir, func(c *authz.Config) {
		c.Telemetry = telemetry.Config{TracerProvider: sdk2.TP}
	}).Handler(echo)
	require.Equal(t, 200, do(h, request("/", e.token(t, "acme"))).Code)
	require.Len(t, sdk2.Spans.Ended(), 1)
	require.Empty(t, sdk2.counts(t, "tenancy.authz.requests"))
}

// The zero Telemetry records nothing, even with otel's global providers
// set: nil providers do not fall back to them.
func TestTelemetryZeroConfigIgnoresGlobals(t *testing.T) {
	e := newEnv(t)
	sdk := newOtelSDK(t)
	prevT, prevM := otel.GetTracerProvider(), otel.GetMeterProvider()
	otel.SetTracerProvider(sdk.TP)
	otel.SetMeterProvider(sdk.MP)
	t.Cleanup(func() {
		otel.SetTracerProvider(prevT)
		otel.SetMeterProvider(prevM)
	})
	h := newMiddleware(t, e.v, e.dir).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.False(t, trace.SpanFromContext(r.Context()).SpanContext().IsValid())
		echo.ServeHTTP(w, r)
	}))
	require.Equal(t, 200, do(h, request("/", e.token(t, "acme"))).Code)
	requireProblem(t, do(h, request("/", "")), http.StatusUnauthorized)
	require.Empty(t, sdk.Spans.Ended())
	require.Empty(t, sdk.allMetricValues(t))
}
