package authz_test

import (
	"crypto"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/tenant"
)

// discardWriter is a ResponseWriter that keeps nothing.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// BenchmarkMiddleware serves a request with a valid token on a routed
// path: mode=raw is the same work without this package (a handler that
// cuts the bearer token and calls jwt.Parse with the key), mode=middleware
// is Middleware.Handler (keys by kid, tenant claim, path tenant check,
// cached directory, roles). Compare with benchstat -col /mode.
func BenchmarkMiddleware(b *testing.B) {
	testKeys(b)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	for _, sg := range []signer{rsaSigner(), edSigner()} {
		token := mint(b, sg, claims("acme"))
		pub := sg.key.Public()

		vc := verifierConfig()
		vc.JWKS = jwksJSON(b, sg)
		v := newVerifier(b, vc)
		cfg := authz.DefaultConfig()
		cfg.Verifier = v
		cfg.Directory = newMemDirectory(map[string]tenant.State{"acme": tenant.StateActive})
		cfg.DirectoryTTL = 5 * time.Minute
		cfg.Resolvers = []authz.Resolver{authz.PathValue("tenant")}
		mw, err := authz.NewMiddleware(cfg)
		if err != nil {
			b.Fatal(err)
		}
		modes := []struct {
			name string
			h    http.Handler
		}{
			{"raw", rawJWT(pub, sg.alg, ok)},
			{"middleware", mw.Handler(ok)},
		}
		for _, m := range modes {
			b.Run("alg="+sg.alg+"/mode="+m.name, func(b *testing.B) {
				mux := http.NewServeMux()
				mux.Handle("GET /t/{tenant}/items", m.h)
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
}

// rawJWT is the baseline: bearer token, jwt.Parse with the key, next.
func rawJWT(key crypto.PublicKey, alg string, next http.Handler) http.Handler {
	parser := jwt.NewParser(jwt.WithValidMethods([]string{alg}))
	keyfunc := func(*jwt.Token) (any, error) { return key, nil }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if _, err := parser.Parse(token, keyfunc); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// BenchmarkVerify is BenchmarkMiddleware without HTTP: jwt.Parse with the
// key (mode=raw) beside Verifier.Verify (mode=verifier).
func BenchmarkVerify(b *testing.B) {
	testKeys(b)
	for _, sg := range []signer{rsaSigner(), edSigner()} {
		token := mint(b, sg, claims("acme"))
		pub := sg.key.Public()
		vc := verifierConfig()
		vc.JWKS = jwksJSON(b, sg)
		v := newVerifier(b, vc)
		parser := jwt.NewParser(jwt.WithValidMethods([]string{sg.alg}))
		b.Run("alg="+sg.alg+"/mode=raw", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := parser.Parse(token, func(*jwt.Token) (any, error) { return pub, nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("alg="+sg.alg+"/mode=verifier", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(b.Context(), token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
