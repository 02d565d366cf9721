package authz_test

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/tenant"
)

// canary is a claim value in every test token: no response may show it.
const canary = "canary-7f3e@acme.example"

// hostileEnv is a service with tenants acme and globex (active) and
// frozen (suspended), whose tokens come from a JWKS endpoint with an RSA,
// an ECDSA and an Ed25519 key.
type hostileEnv struct {
	jwks    *jwksServer
	dir     *memDirectory
	handler http.Handler
}

func newHostileEnv(t testing.TB) *hostileEnv {
	t.Helper()
	testKeys(t)
	e := &hostileEnv{jwks: newJWKSServer(t, rsaSigner(), ecSigner(), edSigner())}
	vc := verifierConfig()
	vc.JWKSURL = e.jwks.URL
	vc.RefreshUnknownKID = time.Hour // one fetch for a kid not known, then none
	v := newVerifier(t, vc)
	e.dir = newMemDirectory(map[string]tenant.State{"acme": tenant.StateActive, "globex": tenant.StateActive, "frozen": tenant.StateSuspended})
	cfg := authz.DefaultConfig()
	cfg.Verifier, cfg.Directory = v, e.dir
	cfg.Resolvers = []authz.Resolver{authz.PathValue("tenant"), authz.Subdomain("example.com")}
	mw, err := authz.NewMiddleware(cfg)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("GET /t/{tenant}/items", mw.Handler(echo))
	mux.Handle("GET /me", mw.Handler(echo))
	e.handler = mux
	return e
}

// with returns claims for tenant id (and the canary) changed by fn.
func with(id string, fn func(jwt.MapClaims)) jwt.MapClaims {
	c := claims(id)
	c["email"] = canary
	if fn != nil {
		fn(c)
	}
	return c
}

func TestHostileTokens(t *testing.T) {
	e := newHostileEnv(t)
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(rsaKey.Public()))})
	valid := mint(t, edSigner(), with("acme", nil))
	parts := strings.Split(valid, ".")
	now := time.Now()
	noneHeader := `{"alg":"none","typ":"JWT"}`
	payload := mustJSON(t, with("acme", nil))
	evil := signer{kid: "evil-1", alg: "EdDSA", method: jwt.SigningMethodEdDSA, key: evilEd}

	type tc struct {
		name    string
		req     func() *http.Request
		status  int
		secrets []string // besides the token and the canary
	}
	get := func(target, token string) func() *http.Request {
		return func() *http.Request { return request(target, token) }
	}
	tok := func(sg signer, id string, fn func(jwt.MapClaims)) string { return mint(t, sg, with(id, fn)) }
	acmeItems := "/t/acme/items"
	cases := []tc{
		{"valid RS256", get(acmeItems, tok(rsaSigner(), "acme", nil)), 200, nil},
		{"valid ES256", get(acmeItems, tok(ecSigner(), "acme", nil)), 200, nil},
		{"valid EdDSA", get(acmeItems, valid), 200, nil},
		{"valid, route naming no tenant", get("/me", valid), 200, nil},
		{"valid, lower-case scheme", func() *http.Request {
			r := request(acmeItems, "")
			r.Header.Set("Authorization", "bearer "+valid)
			return r
		}, 200, nil},
		{"valid, exp within the leeway", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["exp"] = now.Add(-10 * time.Second).Unix() })), 200, nil},
		{"valid, aud a list holding ours", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["aud"] = []string{"other", testAudience} })), 200, nil},
		{"valid, roles as a space-separated string", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["roles"] = "editor viewer" })), 200, nil},
		{"valid, host of its own tenant with port, upper case", func() *http.Request {
			r := request("/me", valid)
			r.Host = "ACME.Example.com:443"
			return r
		}, 200, nil},

		{"no Authorization header", get(acmeItems, ""), 401, nil},
		{"empty bearer", func() *http.Request {
			r := request(acmeItems, "")
			r.Header.Set("Authorization", "Bearer ")
			return r
		}, 401, nil},
		{"Basic scheme", func() *http.Request {
			r := request(acmeItems, "")
			r.Header.Set("Authorization", "Basic "+valid)
			return r
		}, 401, nil},
		{"two Authorization headers", func() *http.Request {
			r := request(acmeItems, valid)
			r.Header.Add("Authorization", "Bearer "+valid)
			return r
		}, 401, nil},
		{"token with a space inside", func() *http.Request {
			r := request(acmeItems, "")
			r.Header.Set("Authorization", "Bearer "+parts[0]+". "+parts[1]+"."+parts[2])
			return r
		}, 401, nil},
		{"alg none, no signature", get(acmeItems, b64(noneHeader)+"."+b64(payload)+"."), 401, nil},
		{"alg none with our kid", get(acmeItems, b64(`{"alg":"none","kid":"ed-1"}`)+"."+b64(payload)+"."), 401, nil},
		{"alg None (case)", get(acmeItems, b64(`{"alg":"None"}`)+"."+b64(payload)+"."), 401, nil},
		{"HS256 with the RSA public key as secret", get(acmeItems, mintRaw(t, jwt.SigningMethodHS256, rsaPEM, `{"alg":"HS256","typ":"JWT"}`, payload)), 401, nil},
		{"HS256 with the RSA public key as secret and its kid", get(acmeItems, mintRaw(t, jwt.SigningMethodHS256, rsaPEM, `{"alg":"HS256","kid":"rsa-1"}`, payload)), 401, nil},
		{"RS384 (not allowed) with our RSA key", get(acmeItems, mintRaw(t, jwt.SigningMethodRS384, rsaKey, `{"alg":"RS384","kid":"rsa-1"}`, payload)), 401, nil},
		{"PS256 (not allowed) with our RSA key", get(acmeItems, mintRaw(t, jwt.SigningMethodPS256, rsaKey, `{"alg":"PS256","kid":"rsa-1"}`, payload)), 401, nil},
		{"RS256 header on the EC key's kid", get(acmeItems, mintRaw(t, jwt.SigningMethodRS256, rsaKey, `{"alg":"RS256","kid":"ec-1"}`, payload)), 401, nil},
		{"expired", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() })), 401, nil},
		{"no exp", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { delete(c, "exp") })), 401, nil},
		{"exp a string", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["exp"] = "tomorrow" })), 401, nil},
		{"nbf in the future", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })), 401, nil},
		{"iat in the future", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["iat"] = now.Add(time.Hour).Unix() })), 401, nil},
		{"wrong iss", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["iss"] = "https://evil.example/" })), 401, nil},
		{"iss with a trailing change", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["iss"] = testIssuer + "x" })), 401, nil},
		{"no iss", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { delete(c, "iss") })), 401, nil},
		{"wrong aud", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["aud"] = "other-api" })), 401, nil},
		{"no aud", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { delete(c, "aud") })), 401, nil},
		{"no sub", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { delete(c, "sub") })), 401, nil},
		{"unknown kid, attacker's key", get(acmeItems, mint(t, evil, with("acme", nil))), 401, nil},
		{"attacker's key embedded as jwk header", get(acmeItems, mintRaw(t, jwt.SigningMethodEdDSA, evilEd,
			mustJSON(t, map[string]any{"alg": "EdDSA", "kid": "evil-2", "jwk": map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64(string(evilEd.Public().(ed25519.PublicKey)))}}), payload)), 401, nil},
		{"attacker's key behind a jku header", get(acmeItems, mintRaw(t, jwt.SigningMethodEdDSA, evilEd, `{"alg":"EdDSA","kid":"evil-3","jku":"http://127.0.0.1:1/jwks"}`, payload)), 401, nil},
		{"attacker's key, no kid", get(acmeItems, mint(t, signer{method: jwt.SigningMethodEdDSA, key: evilEd}, with("acme", nil))), 401, nil},
		{"attacker's key with our kid", get(acmeItems, mint(t, signer{kid: "ed-1", method: jwt.SigningMethodEdDSA, key: evilEd}, with("acme", nil))), 401, nil},
		{"kid not a string", get(acmeItems, mintRaw(t, jwt.SigningMethodEdDSA, edKey, `{"alg":"EdDSA","kid":7}`, payload)), 401, nil},
		{"payload changed after signing (tenant globex)", get("/t/globex/items", parts[0]+"."+b64(mustJSON(t, with("globex", nil)))+"."+parts[2]), 401, []string{"globex"}},
		{"signature cut", get(acmeItems, parts[0]+"."+parts[1]+"."+parts[2][:20]), 401, nil},
		{"signature of another token", get(acmeItems, parts[0]+"."+parts[1]+"."+strings.Split(tok(edSigner(), "globex", nil), ".")[2]), 401, nil},
		{"padded base64", get(acmeItems, parts[0]+"=."+parts[1]+"."+parts[2]), 401, nil},
		{"duplicated claim: tenant globex then acme", get(acmeItems, mintRaw(t, jwt.SigningMethodEdDSA, edKey, `{"alg":"EdDSA","kid":"ed-1"}`,
			strings.TrimSuffix(mustJSON(t, with("globex", nil)), "}")+`,"tenant_id":"acme"}`)), 401, []string{"globex"}},
		{"duplicated claim, the second escaped", get(acmeItems, mintRaw(t, jwt.SigningMethodEdDSA, edKey, `{"alg":"EdDSA","kid":"ed-1"}`,
			strings.TrimSuffix(mustJSON(t, with("globex", nil)), "}")+`,"tenant\u005fid":"acme"}`)), 401, []string{"globex"}},
		{"duplicated claim names of invalid UTF-8 (both decode to U+FFFD)", get(acmeItems, mintRaw(t, jwt.SigningMethodEdDSA, edKey, `{"alg":"EdDSA","kid":"ed-1"}`,
			strings.TrimSuffix(payload, "}")+",\"\xff\":1,\"\xfe\":2}")), 401, nil},
		{"duplicated claim in an object in a list", get(acmeItems, mintRaw(t, jwt.SigningMethodEdDSA, edKey, `{"alg":"EdDSA","kid":"ed-1"}`,
			strings.TrimSuffix(payload, "}")+`,"ext":[1,{"a":1,"b":[{}],"a":2}]}`)), 401, nil},
		{"valid, names repeated in sibling objects and inside strings", get(acmeItems, mintRaw(t, jwt.SigningMethodEdDSA, edKey, `{"alg":"EdDSA","kid":"ed-1"}`,
			strings.TrimSuffix(payload, "}")+`,"x":{"a":1},"y":{"a":{"a":2}},"z":[{"a":1},{"a":1}],"s":"}{\"tenant_id\":\"globex\",","t":"\\"}`)), 200, nil},
		{"duplicated claim in a nested object", get(acmeItems, mintRaw(t, jwt.SigningMethodEdDSA, edKey, `{"alg":"EdDSA","kid":"ed-1"}`,
			strings.TrimSuffix(payload, "}")+`,"ext":{"a":1,"a":2}}`)), 401, nil},
		{"duplicated header member alg", get(acmeItems, mintRaw(t, jwt.SigningMethodEdDSA, edKey, `{"alg":"none","kid":"ed-1","alg":"EdDSA"}`, payload)), 401, nil},
		{"crit header", get(acmeItems, mintRaw(t, jwt.SigningMethodEdDSA, edKey, `{"alg":"EdDSA","kid":"ed-1","crit":["exp"],"exp":1}`, payload)), 401, nil},
		{"garbage", get(acmeItems, "not-a-jwt"), 401, nil},
		{"garbage with dots", get(acmeItems, "a.b.c"), 401, nil},
		{"empty segments", get(acmeItems, ".."), 401, nil},
		{"JWE compact (five segments)", get(acmeItems, b64(`{"alg":"RSA-OAEP","enc":"A256GCM","kid":"rsa-1"}`)+".AAAA.BBBB.CCCC.DDDD"), 401, nil},
		{"payload not JSON", get(acmeItems, mintRaw(t, jwt.SigningMethodEdDSA, edKey, `{"alg":"EdDSA","kid":"ed-1"}`, "acme")), 401, nil},
		{"over-long token", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["pad"] = strings.Repeat("x", 9<<10) })), 401, nil},

		{"valid, exp a float", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["exp"] = float64(now.Add(time.Hour).Unix()) + 0.5 })), 200, nil},
		{"valid, nbf ahead within the leeway", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["nbf"] = now.Add(20 * time.Second).Unix() })), 200, nil},
		{"nbf ahead just past the leeway", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["nbf"] = now.Add(45 * time.Second).Unix() })), 401, nil},
		{"exp 0 (read as absent)", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["exp"] = 0 })), 401, nil},
		{"exp a list", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["exp"] = []int64{now.Add(time.Hour).Unix()} })), 401, nil},
		{"exp a numeric string", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["exp"] = fmt.Sprint(now.Add(time.Hour).Unix()) })), 401, nil},
		{"aud a list without ours", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["aud"] = []string{"other", testAudience + "x"} })), 401, nil},
		{"aud a list with a non-string", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["aud"] = []any{testAudience, 7} })), 401, nil},
		{"tenant claim an object", get("/me", tok(edSigner(), "acme", func(c jwt.MapClaims) { c["tenant_id"] = map[string]any{"id": "acme"} })), 403, nil},
		{"tenant claim true", get("/me", tok(edSigner(), "acme", func(c jwt.MapClaims) { c["tenant_id"] = true })), 403, nil},
		{"roles with an object", get("/me", tok(edSigner(), "acme", func(c jwt.MapClaims) { c["roles"] = []any{"owner", map[string]any{"owner": true}} })), 403, nil},
		{"roles a number", get("/me", tok(edSigner(), "acme", func(c jwt.MapClaims) { c["roles"] = 1 })), 403, nil},
		{"roles an object", get("/me", tok(edSigner(), "acme", func(c jwt.MapClaims) { c["roles"] = map[string]any{"acme": []string{"owner"}} })), 403, nil},
		{"roles in another case", get("/me", tok(edSigner(), "acme", func(c jwt.MapClaims) { c["roles"] = []string{"OWNER"} })), 403, nil},
		{"no tenant claim", get("/me", tok(edSigner(), "acme", func(c jwt.MapClaims) { delete(c, "tenant_id") })), 403, nil},
		{"empty tenant claim", get("/me", tok(edSigner(), "", nil)), 403, nil},
		{"upper-case tenant claim", get("/me", tok(edSigner(), "ACME", nil)), 403, []string{"ACME"}},
		{"injection in the tenant claim", get("/me", tok(edSigner(), "acme'; DROP TABLE items;--", nil)), 403, []string{"DROP TABLE"}},
		{"tenant claim with a newline", get("/me", tok(edSigner(), "acme\nlevel=admin", nil)), 403, []string{"level=admin"}},
		{"tenant claim a number", get("/me", tok(edSigner(), "acme", func(c jwt.MapClaims) { c["tenant_id"] = 42 })), 403, nil},
		{"tenant claim a list", get("/me", tok(edSigner(), "acme", func(c jwt.MapClaims) { c["tenant_id"] = []string{"acme"} })), 403, nil},
		{"tenant claim reserved (public)", get("/me", tok(edSigner(), "public", nil)), 403, nil},
		{"tenant claim in another case of the name", get("/me", tok(edSigner(), "acme", func(c jwt.MapClaims) { delete(c, "tenant_id"); c["Tenant_ID"] = "acme" })), 403, nil},
		{"acme's token on globex's path", get("/t/globex/items", valid), 403, []string{"globex"}},
		{"acme's token on globex's path, escaped", get("/t/glob%65x/items", valid), 403, []string{"globex", "glob%65x"}},
		{"acme's token on an upper-case path", get("/t/ACME/items", valid), 403, []string{"ACME"}},
		{"acme's token on a path with an escaped slash", get("/t/acme%2Fglobex/items", valid), 403, []string{"globex"}},
		{"acme's token on a dot-dot path value", get("/t/%2e%2e/items", valid), 403, nil},
		{"acme's token on globex's host", func() *http.Request {
			r := request("/me", valid)
			r.Host = "globex.example.com"
			return r
		}, 403, []string{"globex"}},
		{"acme's token on globex's host with port and trailing dot", func() *http.Request {
			r := request("/me", valid)
			r.Host = "GLOBEX.example.com.:443"
			return r
		}, 403, []string{"globex", "GLOBEX"}},
		{"acme's token on a host two labels deep", func() *http.Request {
			r := request("/me", valid)
			r.Host = "acme.globex.example.com"
			return r
		}, 403, []string{"globex"}},
		{"acme's token on globex's host, X-Forwarded-Host acme's", func() *http.Request {
			r := request("/me", valid)
			r.Host = "globex.example.com"
			r.Header.Set("X-Forwarded-Host", "acme.example.com")
			return r
		}, 403, []string{"globex"}},
		{"acme's token on acme's path but globex's host", func() *http.Request {
			r := request(acmeItems, valid)
			r.Host = "globex.example.com"
			return r
		}, 403, []string{"globex"}},
		{"suspended tenant", get("/t/frozen/items", tok(edSigner(), "frozen", nil)), 403, nil},
		{"tenant not in the directory", get("/me", tok(edSigner(), "ghost", nil)), 403, nil},
		{"no roles claim", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { delete(c, "roles") })), 403, nil},
		{"only roles the tenant does not define", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["roles"] = []string{"superuser", "Owner"} })), 403, []string{"superuser"}},
		{"roles claim a number", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["roles"] = 1 })), 403, nil},
		{"roles claim a list with a number", get(acmeItems, tok(edSigner(), "acme", func(c jwt.MapClaims) { c["roles"] = []any{"viewer", 1} })), 403, nil},
	}
	require.GreaterOrEqual(t, len(cases), 40)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.req()
			w := do(e.handler, r)
			if c.status == 200 {
				require.Equal(t, 200, w.Code, "body: %s", w.Body.String())
				require.Contains(t, w.Body.String(), "hello user-1 of acme")
				return
			}
			_, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
			if len(token) < 8 {
				token = "" // too short to be told from the problem's words
			}
			p := requireProblem(t, w, c.status, append([]string{token, canary}, c.secrets...)...)
			switch c.status {
			case 401:
				want := `Bearer, error="invalid_token"`
				if r.Header.Get("Authorization") == "" {
					want = "Bearer"
				}
				require.Equal(t, want, w.Header().Get("WWW-Authenticate"))
				require.Equal(t, "invalid_token", p["code"])
			case 403:
				require.Empty(t, w.Header().Get("Retry-After"))
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
