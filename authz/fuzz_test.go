package authz_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/tenant"
)

// fuzzHandler is acme's items route behind the middleware.
func fuzzHandler(f *testing.F) http.Handler {
	f.Helper()
	testKeys(f)
	vc := verifierConfig()
	vc.JWKS = jwksJSON(f, edSigner())
	v, err := authz.NewVerifier(f.Context(), vc)
	if err != nil {
		f.Fatal(err)
	}
	cfg := authz.DefaultConfig()
	cfg.Verifier = v
	cfg.Directory = newMemDirectory(map[string]tenant.State{"acme": tenant.StateActive, "globex": tenant.StateActive})
	cfg.Resolvers = []authz.Resolver{authz.PathValue("tenant")}
	mw, err := authz.NewMiddleware(cfg)
	if err != nil {
		f.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /t/{tenant}/items", mw.Handler(echo))
	return mux
}

// checkRefusal fails unless w is a problem of an expected status whose
// body holds none of secrets.
func checkRefusal(t *testing.T, code int, body []byte, secrets ...string) {
	t.Helper()
	switch code {
	case 401, 403:
	default:
		t.Fatalf("status %d: %s", code, body)
	}
	var p map[string]any
	if err := json.Unmarshal(body, &p); err != nil || p["code"] == nil {
		t.Fatalf("not a problem: %s", body)
	}
	for _, s := range secrets {
		if len(s) >= 8 && strings.Contains(string(body), s) {
			t.Fatalf("the problem echoes %q", s)
		}
	}
}

// FuzzAuthorization sends any Authorization header: only the valid token
// itself is admitted, and a refusal never echoes the header.
func FuzzAuthorization(f *testing.F) {
	h := fuzzHandler(f)
	valid := mint(f, edSigner(), claims("acme"))
	parts := strings.Split(valid, ".")
	for _, s := range []string{
		"Bearer " + valid, "bearer " + valid, "Bearer  " + valid, "Bearer " + valid + "=", "Bearer " + valid + " ",
		"Bearer " + parts[0] + "." + parts[1] + ".", "Bearer " + parts[0] + ".." + parts[2], "Bearer " + valid + "." + parts[2],
		"Bearer " + strings.ToUpper(valid), "Basic dXNlcjpwYXNz", "Bearer", "", "Bearer \x00", "Bearer a.b.c.d.e",
		"Bearer " + b64(`{"alg":"none"}`) + "." + parts[1] + ".",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r := request("/t/acme/items", "")
		r.Header["Authorization"] = []string{header}
		w := do(h, r)
		scheme, token, _ := strings.Cut(header, " ")
		if w.Code == 200 {
			if !strings.EqualFold(scheme, "Bearer") || token != valid {
				t.Fatalf("admitted %q", header)
			}
			return
		}
		checkRefusal(t, w.Code, w.Body.Bytes(), token)
	})
}

// FuzzClaims signs any payload with the issuer's key and sends it on
// acme's path: a request admitted is acme's, with a valid principal.
func FuzzClaims(f *testing.F) {
	h := fuzzHandler(f)
	for _, id := range []string{"acme", "globex", "ACME", "", "acme\u0000", "acme\u00e9"} {
		f.Add(mustJSON(f, claims(id)))
	}
	good := mustJSON(f, claims("acme"))
	f.Add(strings.TrimSuffix(good, "}") + `,"tenant_id":"globex"}`)
	f.Add(strings.Replace(good, `"tenant_id":"acme"`, `"tenant_id":"ac\u006de"`, 1))
	f.Add(strings.Replace(good, `"tenant_id":"acme"`, `"tenant_id":"globex","tenant_id":"acme"`, 1))
	f.Add(`{"tenant_id":"acme"}`)
	f.Add(`[]`)
	f.Add(`null`)
	f.Fuzz(func(t *testing.T, payload string) {
		token := mintRaw(t, jwt.SigningMethodEdDSA, edKey, `{"alg":"EdDSA","kid":"ed-1"}`, payload)
		w := do(h, request("/t/acme/items", token))
		if w.Code == 200 {
			if w.Body.String() != "hello user-1 of acme" && !strings.HasSuffix(w.Body.String(), " of acme") {
				t.Fatalf("admitted %s: %s", payload, w.Body.String())
			}
			var c map[string]any
			if err := json.Unmarshal([]byte(payload), &c); err != nil || c["tenant_id"] != "acme" {
				t.Fatalf("admitted %s", payload)
			}
			return
		}
		var c map[string]any
		_ = json.Unmarshal([]byte(payload), &c)
		secrets := []string{token}
		if s, ok := c["tenant_id"].(string); ok && s != "acme" {
			secrets = append(secrets, s)
		}
		checkRefusal(t, w.Code, w.Body.Bytes(), secrets...)
	})
}

// FuzzPathPrefix sends any path to a ServeMux routing "/t/{tenant}/...":
// whenever the mux would hand a handler a tenant path value, PathPrefix
// (which runs before routing) names that same tenant or refuses the
// path; it never lets a path through that the mux reads as another
// tenant's.
func FuzzPathPrefix(f *testing.F) {
	for _, s := range []string{
		"/t/acme/items", "/%74/globex/items", "/t%2Fglobex/items", "/t/glob%65x", "/t/acme/../globex",
		"//t/globex", "/T/globex", "/t/acme%2Fglobex", "/t/acme/", "/t/", "/%2574/globex",
	} {
		f.Add(s)
	}
	resolve := authz.PathPrefix("/t/")
	var got string
	mux := http.NewServeMux()
	route := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r.PathValue("tenant") })
	mux.Handle("/t/{tenant}/{rest...}", route)
	mux.Handle("/t/{tenant}", route)
	f.Fuzz(func(t *testing.T, path string) {
		r, err := http.NewRequest(http.MethodGet, "http://h"+path, nil)
		if err != nil || !strings.HasPrefix(r.URL.Path, "/") || r.URL.Host != "h" {
			return
		}
		id, named, rerr := resolve(r)
		got = ""
		mux.ServeHTTP(httptest.NewRecorder(), r)
		if got == "" || rerr != nil {
			return
		}
		if !named || id.String() != got {
			t.Fatalf("path %q: the mux routes tenant %q, PathPrefix named %v %q", path, got, named, id)
		}
	})
}
