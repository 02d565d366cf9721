package authz_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestVerifyPrincipal(t *testing.T) {
	testKeys(t)
	vc := verifierConfig()
	vc.JWKS = jwksJSON(t, edSigner())
	v := newVerifier(t, vc)
	c := claims("acme")
	c["roles"] = []string{"editor", "viewer", "editor", "unknown"}
	c["email"] = "a@acme.example"
	c["ext"] = map[string]any{"team": []any{"x"}}
	p, err := v.Verify(t.Context(), mint(t, edSigner(), c))
	require.NoError(t, err)
	require.Equal(t, "user-1", p.Subject())
	require.Equal(t, tenant.MustParseID("acme"), p.Tenant())
	require.Equal(t, []string{"editor", "viewer", "unknown"}, p.Roles())
	require.Equal(t, time.Unix(c["exp"].(int64), 0), p.Expires())
	email, ok := p.Claim("email")
	require.True(t, ok)
	require.Equal(t, "a@acme.example", email)
	_, ok = p.Claim("nope")
	require.False(t, ok)

	// The principal cannot be changed through what its accessors return.
	p.Roles()[0] = "owner"
	p.Claims()["tenant_id"] = "globex"
	ext, _ := p.Claim("ext")
	ext.(map[string]any)["team"].([]any)[0] = "y"
	require.Equal(t, []string{"editor", "viewer", "unknown"}, p.Roles())
	require.Equal(t, "acme", p.Claims()["tenant_id"])
	ext, _ = p.Claim("ext")
	require.Equal(t, "x", ext.(map[string]any)["team"].([]any)[0])

	// Outside the middleware, roles are judged by the defaults.
	require.True(t, p.HasRole(authz.RoleViewer))
	require.True(t, p.HasRole(authz.RoleEditor))
	require.False(t, p.HasRole(authz.RoleOwner))
	require.True(t, p.Can(authz.PermWrite))
	require.False(t, p.Can(authz.PermManage))
	require.NotContains(t, p.String(), "a@acme.example")
}

func TestVerifyErrors(t *testing.T) {
	testKeys(t)
	vc := verifierConfig()
	vc.JWKS = jwksJSON(t, edSigner())
	v := newVerifier(t, vc)
	for _, c := range []struct {
		name  string
		token string
		is    error
		msg   string
	}{
		{"empty", "", authz.ErrInvalidToken, "empty"},
		{"expired", mint(t, edSigner(), withClaim("acme", "exp", time.Now().Add(-time.Hour).Unix())), authz.ErrInvalidToken, "expired"},
		{"wrong aud", mint(t, edSigner(), withClaim("acme", "aud", "x")), authz.ErrInvalidToken, "claim aud"},
		{"bad tenant", mint(t, edSigner(), withClaim("acme", "tenant_id", "Acme")), authz.ErrForbidden, "claim tenant_id: not a tenant ID"},
		{"bad roles", mint(t, edSigner(), withClaim("acme", "roles", map[string]any{})), authz.ErrForbidden, "claim roles"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := v.Verify(t.Context(), c.token)
			require.ErrorIs(t, err, c.is)
			require.ErrorContains(t, err, c.msg)
			if c.token != "" {
				require.NotContains(t, err.Error(), c.token)
			}
			require.NotContains(t, err.Error(), "Acme", "the claim's value is not echoed")
		})
	}
}

func withClaim(id, name string, v any) jwt.MapClaims {
	c := claims(id)
	c[name] = v
	return c
}

// jwksJSON returns the JWK Set of the public keys of signers.
func jwksJSON(t testing.TB, signers ...signer) []byte {
	t.Helper()
	var set jwkset.JWKSMarshal
	for _, sg := range signers {
		j, err := jwkset.NewJWKFromKey(sg.key.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: sg.kid, ALG: jwkset.ALG(sg.alg)}})
		require.NoError(t, err)
		set.Keys = append(set.Keys, j.Marshal())
	}
	b, err := json.Marshal(set)
	require.NoError(t, err)
	return b
}

func TestVerifyPEM(t *testing.T) {
	testKeys(t)
	var pemKeys []byte
	for _, k := range []any{rsaKey.Public(), ecKey.Public(), edKey.Public()} {
		pemKeys = append(pemKeys, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(k))})...)
	}
	pemKeys = append(pemKeys, pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey2.PublicKey)})...)
	vc := verifierConfig()
	vc.PEM = pemKeys
	v := newVerifier(t, vc)
	for _, sg := range []signer{rsaSigner(), ecSigner(), edSigner(), {method: jwt.SigningMethodRS256, key: rsaKey2}, {kid: "whatever", method: jwt.SigningMethodEdDSA, key: edKey}} {
		p, err := v.Verify(t.Context(), mint(t, sg, claims("acme")))
		require.NoError(t, err, sg.kid)
		require.Equal(t, "acme", p.Tenant().String())
	}
	_, err := v.Verify(t.Context(), mint(t, signer{method: jwt.SigningMethodEdDSA, key: evilEd}, claims("acme")))
	require.ErrorIs(t, err, authz.ErrInvalidToken)
}

// A PEM key and a JWKS key together: a kid the JWKS does not know falls
// back to the PEM keys, and a kid it knows does not verify with another.
func TestVerifyPEMAndJWKS(t *testing.T) {
	testKeys(t)
	vc := verifierConfig()
	vc.JWKS = jwksJSON(t, edSigner())
	vc.PEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(rsaKey.Public()))})
	v := newVerifier(t, vc)
	for _, sg := range []signer{edSigner(), rsaSigner(), {method: jwt.SigningMethodEdDSA, key: edKey}} {
		_, err := v.Verify(t.Context(), mint(t, sg, claims("acme")))
		require.NoError(t, err, sg.kid)
	}
	_, err := v.Verify(t.Context(), mint(t, signer{kid: "ed-1", method: jwt.SigningMethodEdDSA, key: evilEd}, claims("acme")))
	require.ErrorIs(t, err, authz.ErrInvalidToken)
}

func TestVerifierConfigErrors(t *testing.T) {
	testKeys(t)
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ecPriv, err := x509.MarshalECPrivateKey(p256)
	require.NoError(t, err)
	privJWK, err := jwkset.NewJWKFromKey(edKey, jwkset.JWKOptions{Marshal: jwkset.JWKMarshalOptions{Private: true}, Metadata: jwkset.JWKMetadataOptions{KID: "k"}})
	require.NoError(t, err)
	privSet := must(json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{privJWK.Marshal()}}))
	hmacSet := []byte(`{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}`)
	good := jwksJSON(t, edSigner())
	for _, c := range []struct {
		name, field string
		edit        func(*authz.VerifierConfig)
	}{
		{"no issuer", "Issuer", func(c *authz.VerifierConfig) { c.Issuer = "" }},
		{"no audience", "Audience", func(c *authz.VerifierConfig) { c.Audience = "" }},
		{"no algorithms", "Algorithms", func(c *authz.VerifierConfig) { c.Algorithms = nil }},
		{"HS256", "Algorithms", func(c *authz.VerifierConfig) { c.Algorithms = []string{"RS256", "HS256"} }},
		{"none", "Algorithms", func(c *authz.VerifierConfig) { c.Algorithms = []string{"none"} }},
		{"lower-case rs256", "Algorithms", func(c *authz.VerifierConfig) { c.Algorithms = []string{"rs256"} }},
		{"negative leeway", "Leeway", func(c *authz.VerifierConfig) { c.Leeway = -time.Second }},
		{"large leeway", "Leeway", func(c *authz.VerifierConfig) { c.Leeway = time.Hour }},
		{"no tenant claim", "TenantClaim", func(c *authz.VerifierConfig) { c.TenantClaim = "" }},
		{"no roles claim", "RolesClaim", func(c *authz.VerifierConfig) { c.RolesClaim = "" }},
		{"roles claim = tenant claim", "RolesClaim", func(c *authz.VerifierConfig) { c.RolesClaim = c.TenantClaim }},
		{"no max token", "MaxTokenBytes", func(c *authz.VerifierConfig) { c.MaxTokenBytes = 0 }},
		{"no keys", "PEM", func(c *authz.VerifierConfig) { c.JWKS = nil }},
		{"PEM private key", "PEM", func(c *authz.VerifierConfig) {
			c.PEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecPriv})
		}},
		{"PEM garbage", "PEM", func(c *authz.VerifierConfig) { c.PEM = []byte("not pem") }},
		{"PEM bad block", "PEM", func(c *authz.VerifierConfig) {
			c.PEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("x")})
		}},
		{"JWKS not JSON", "JWKS", func(c *authz.VerifierConfig) { c.JWKS = []byte("{") }},
		{"JWKS private key", "JWKS", func(c *authz.VerifierConfig) { c.JWKS = privSet }},
		{"JWKS symmetric key", "JWKS", func(c *authz.VerifierConfig) { c.JWKS = hmacSet }},
		{"JWKS key without kid", "JWKS", func(c *authz.VerifierConfig) {
			c.JWKS = []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`)
		}},
		{"JWKS URL over http", "JWKSURL", func(c *authz.VerifierConfig) { c.JWKSURL = "http://idp.example.com/jwks" }},
		{"JWKS URL relative", "JWKSURL", func(c *authz.VerifierConfig) { c.JWKSURL = "/jwks" }},
		{"JWKS URL ftp", "JWKSURL", func(c *authz.VerifierConfig) { c.JWKSURL = "ftp://127.0.0.1/jwks" }},
		{"no refresh interval", "RefreshInterval", func(c *authz.VerifierConfig) { c.JWKSURL, c.RefreshInterval = "https://idp.example.com/jwks", 0 }},
		{"no unknown-kid interval", "RefreshUnknownKID", func(c *authz.VerifierConfig) { c.JWKSURL, c.RefreshUnknownKID = "https://idp.example.com/jwks", 0 }},
		{"no fetch timeout", "FetchTimeout", func(c *authz.VerifierConfig) { c.JWKSURL, c.FetchTimeout = "https://idp.example.com/jwks", 0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			vc := verifierConfig()
			vc.JWKS = good
			c.edit(&vc)
			_, err := authz.NewVerifier(t.Context(), vc)
			require.ErrorIs(t, err, authz.ErrInvalidConfig)
			require.ErrorContains(t, err, "VerifierConfig."+c.field)
			require.Regexp(t, `^authz: `, err.Error())
		})
	}
	_, err = authz.NewVerifier(t.Context(), authz.VerifierConfig{})
	require.ErrorIs(t, err, authz.ErrInvalidConfig, "a zero config is refused")
}

func TestJWKSUnknownKIDRefresh(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, edSigner())
	vc := verifierConfig()
	vc.JWKSURL = srv.URL
	vc.RefreshUnknownKID = time.Hour
	v := newVerifier(t, vc)
	require.EqualValues(t, 1, srv.hits.Load(), "NewVerifier fetches the keys once")

	_, err := v.Verify(t.Context(), mint(t, edSigner(), claims("acme")))
	require.NoError(t, err)
	require.EqualValues(t, 1, srv.hits.Load(), "a known kid is served from the cache")

	// The issuer rotates in a new key: its first token makes the
	// Verifier fetch the set again, and it verifies.
	rotated := signer{kid: "ed-2", alg: "EdDSA", method: jwt.SigningMethodEdDSA, key: edKey2}
	srv.add(t, rotated)
	_, err = v.Verify(t.Context(), mint(t, rotated, claims("acme")))
	require.NoError(t, err)
	require.EqualValues(t, 2, srv.hits.Load())

	// Made-up kids do not make it fetch again within RefreshUnknownKID,
	// and are refused at once rather than waiting for the limiter.
	start := time.Now()
	for i := range 20 {
		evil := signer{kid: "made-up-" + string(rune('a'+i)), method: jwt.SigningMethodEdDSA, key: evilEd}
		_, err := v.Verify(t.Context(), mint(t, evil, claims("acme")))
		require.ErrorIs(t, err, authz.ErrInvalidToken)
	}
	require.EqualValues(t, 2, srv.hits.Load(), "refreshes for unknown kids are rate-limited")
	require.Less(t, time.Since(start), 3*time.Second, "requests with made-up kids do not wait for the refresh limiter")

	// A key added now is found only once the limiter allows a fetch.
	late := signer{kid: "ed-3", alg: "EdDSA", method: jwt.SigningMethodEdDSA, key: edKey}
	srv.add(t, late)
	_, err = v.Verify(t.Context(), mint(t, late, claims("acme")))
	require.ErrorIs(t, err, authz.ErrInvalidToken)
	require.EqualValues(t, 2, srv.hits.Load())
}

func TestJWKSUnknownKIDRefreshAllowedAgain(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, edSigner())
	vc := verifierConfig()
	vc.JWKSURL = srv.URL
	vc.RefreshUnknownKID = 200 * time.Millisecond
	v := newVerifier(t, vc)
	evil := signer{kid: "nope", method: jwt.SigningMethodEdDSA, key: evilEd}
	_, err := v.Verify(t.Context(), mint(t, evil, claims("acme")))
	require.ErrorIs(t, err, authz.ErrInvalidToken)
	require.EqualValues(t, 2, srv.hits.Load())
	rotated := signer{kid: "ed-2", alg: "EdDSA", method: jwt.SigningMethodEdDSA, key: edKey2}
	srv.add(t, rotated)
	// Within the interval the Verifier waits for the limiter (at most
	// FetchTimeout), then fetches: the new key verifies.
	_, err = v.Verify(t.Context(), mint(t, rotated, claims("acme")))
	require.NoError(t, err)
	require.EqualValues(t, 3, srv.hits.Load())
}

func TestJWKSEndpointDown(t *testing.T) {
	testKeys(t)
	t.Run("never reached", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		url := dead.URL
		dead.Close()
		vc := verifierConfig()
		vc.JWKSURL = url
		vc.FetchTimeout = time.Second
		v := newVerifier(t, vc) // the endpoint may come up later
		_, err := v.Verify(t.Context(), mint(t, edSigner(), claims("acme")))
		require.ErrorIs(t, err, authz.ErrUnavailable)
		require.False(t, errors.Is(err, authz.ErrInvalidToken))

		// Through the middleware: 503 problem, not 401.
		mw := newMiddleware(t, v, newMemDirectory(map[string]tenant.State{"acme": tenant.StateActive}))
		token := mint(t, edSigner(), claims("acme"))
		w := do(mw.Handler(echo), request("/", token))
		requireProblem(t, w, http.StatusServiceUnavailable, token)
		require.Equal(t, "1", w.Header().Get("Retry-After"))
	})
	t.Run("down after a fetch", func(t *testing.T) {
		srv := newJWKSServer(t, edSigner())
		vc := verifierConfig()
		vc.JWKSURL = srv.URL
		vc.RefreshUnknownKID = time.Millisecond
		v := newVerifier(t, vc)
		srv.failing.Store(true)
		// A token whose key was fetched still verifies.
		_, err := v.Verify(t.Context(), mint(t, edSigner(), claims("acme")))
		require.NoError(t, err)
		// One whose kid is not known cannot be told bad from new: 503.
		rotated := signer{kid: "ed-2", alg: "EdDSA", method: jwt.SigningMethodEdDSA, key: edKey2}
		_, err = v.Verify(t.Context(), mint(t, rotated, claims("acme")))
		require.ErrorIs(t, err, authz.ErrUnavailable)
		// Once it is back, the new key verifies, and a made-up kid is 401.
		srv.failing.Store(false)
		srv.add(t, rotated)
		require.Eventually(t, func() bool {
			_, err := v.Verify(t.Context(), mint(t, rotated, claims("acme")))
			return err == nil
		}, 5*time.Second, 10*time.Millisecond)
		_, err = v.Verify(t.Context(), mint(t, signer{kid: "nope", method: jwt.SigningMethodEdDSA, key: evilEd}, claims("acme")))
		require.ErrorIs(t, err, authz.ErrInvalidToken)
	})
}

func newMiddleware(t testing.TB, v *authz.Verifier, dir authz.Directory, edit ...func(*authz.Config)) *authz.Middleware {
	t.Helper()
	cfg := authz.DefaultConfig()
	cfg.Verifier, cfg.Directory = v, dir
	for _, e := range edit {
		e(&cfg)
	}
	mw, err := authz.NewMiddleware(cfg)
	require.NoError(t, err)
	return mw
}

// A JWKS endpoint that publishes a symmetric key (by mistake, or forged
// in transit) gives no way in: HMAC algorithms are never allowed, and a
// symmetric key verifies no asymmetric signature.
func TestJWKSWithSymmetricKey(t *testing.T) {
	testKeys(t)
	srv := newJWKSServer(t, edSigner())
	secret := []byte("a shared secret anyone could have")
	srv.mu.Lock()
	srv.keys = append(srv.keys, jwkset.JWKMarshal{KTY: jwkset.KtyOct, KID: "hmac-1", K: b64(string(secret))})
	srv.mu.Unlock()
	vc := verifierConfig()
	vc.JWKSURL = srv.URL
	vc.Algorithms = []string{"RS256", "ES256", "EdDSA", "PS256"}
	v := newVerifier(t, vc)
	payload := mustJSON(t, claims("acme"))
	for _, token := range []string{
		mintRaw(t, jwt.SigningMethodHS256, secret, `{"alg":"HS256","kid":"hmac-1"}`, payload),
		mintRaw(t, jwt.SigningMethodRS256, evilRSA, `{"alg":"RS256","kid":"hmac-1"}`, payload),
		mintRaw(t, jwt.SigningMethodEdDSA, evilEd, `{"alg":"EdDSA","kid":"hmac-1"}`, payload),
		mintRaw(t, jwt.SigningMethodEdDSA, evilEd, `{"alg":"EdDSA","kid":"../../hmac-1"}`, payload),
	} {
		_, err := v.Verify(t.Context(), token)
		require.ErrorIs(t, err, authz.ErrInvalidToken)
	}
	_, err := v.Verify(t.Context(), mint(t, edSigner(), claims("acme")))
	require.NoError(t, err, "the published asymmetric key still verifies")
}

func TestVerifyTypes(t *testing.T) {
	testKeys(t)
	vc := verifierConfig()
	vc.JWKS = jwksJSON(t, edSigner())
	vc.Types = []string{"at+jwt"}
	v := newVerifier(t, vc)
	payload := mustJSON(t, claims("acme"))
	for typ, ok := range map[string]bool{`"at+jwt"`: true, `"AT+JWT"`: true, `"application/at+jwt"`: true, `"JWT"`: false, `""`: false, `7`: false, ``: false} {
		header := `{"alg":"EdDSA","kid":"ed-1"}`
		if typ != "" {
			header = `{"alg":"EdDSA","kid":"ed-1","typ":` + typ + `}`
		}
		_, err := v.Verify(t.Context(), mintRaw(t, jwt.SigningMethodEdDSA, edKey, header, payload))
		if ok {
			require.NoError(t, err, typ)
		} else {
			require.ErrorIs(t, err, authz.ErrInvalidToken, typ)
			require.ErrorContains(t, err, "typ header")
		}
	}
	vc.Types = []string{"at+jwt", ""}
	_, err := authz.NewVerifier(t.Context(), vc)
	require.ErrorIs(t, err, authz.ErrInvalidConfig)
	require.ErrorContains(t, err, "VerifierConfig.Types[1]")
}

// A JWKS response over 1 MiB is refused, as is a redirect to a URL that
// is not https; a redirect to another loopback endpoint is followed.
func TestJWKSFetchLimits(t *testing.T) {
	testKeys(t)
	keys := jwksJSON(t, edSigner())
	token := mint(t, edSigner(), claims("acme"))
	serve := func(h http.HandlerFunc) string {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	verify := func(url string) error {
		vc := verifierConfig()
		vc.JWKSURL, vc.FetchTimeout = url, 2*time.Second
		_, err := newVerifier(t, vc).Verify(t.Context(), token)
		return err
	}
	huge := serve(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(keys[:len(keys)-1])
		_, _ = w.Write(bytes.Repeat([]byte(" "), 1<<20))
		_, _ = w.Write([]byte("}"))
	})
	require.ErrorIs(t, verify(huge), authz.ErrUnavailable)
	justUnder := serve(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(keys[:len(keys)-1])
		_, _ = w.Write(bytes.Repeat([]byte(" "), 1<<20-len(keys)))
		_, _ = w.Write([]byte("}"))
	})
	require.NoError(t, verify(justUnder))

	target := serve(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(keys) })
	toLoopback := serve(func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, target, http.StatusFound) })
	require.NoError(t, verify(toLoopback))
	toHTTP := serve(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://jwks.example.invalid/keys", http.StatusFound)
	})
	require.ErrorIs(t, verify(toHTTP), authz.ErrUnavailable)
	var loop string
	loop = serve(func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, loop, http.StatusFound) })
	require.ErrorIs(t, verify(loop), authz.ErrUnavailable)
}

// Duplicated members are found in large and deep objects too.
func TestVerifyDuplicatesLargeAndDeep(t *testing.T) {
	testKeys(t)
	vc := verifierConfig()
	vc.JWKS = jwksJSON(t, edSigner())
	v := newVerifier(t, vc)
	header := `{"alg":"EdDSA","kid":"ed-1"}`
	base := strings.TrimSuffix(mustJSON(t, claims("acme")), "}")
	var many, deep strings.Builder
	for i := range 60 {
		fmt.Fprintf(&many, `,"c%d":%d`, i, i)
	}
	deep.WriteString(`,"deep":`)
	for i := range 20 {
		fmt.Fprintf(&deep, `[{"k%d":1,"x":`, i)
	}
	deep.WriteString(`{"a":1,"\u00e9":2}`)
	for range 20 {
		deep.WriteString(`}]`)
	}
	for _, c := range []struct {
		name, payload string
		ok            bool
	}{
		{"60 claims", base + many.String() + "}", true},
		{"60 claims, the last repeating the first", base + many.String() + `,"c0":1}`, false},
		{"60 claims, an escaped repeat", base + many.String() + `,"c\u0035\u0039":1}`, false},
		{"nested 41 deep", base + deep.String() + "}", true},
		{"nested 41 deep, a repeat at the bottom", base + strings.Replace(deep.String(), `"\u00e9":2`, `"\u00e9":2,"é":3`, 1) + "}", false},
		{"nested 41 deep, a repeat after the nesting", base + deep.String() + `,"deep":1}`, false},
	} {
		_, err := v.Verify(t.Context(), mintRaw(t, jwt.SigningMethodEdDSA, edKey, header, c.payload))
		if c.ok {
			require.NoError(t, err, c.name)
		} else {
			require.ErrorIs(t, err, authz.ErrInvalidToken, c.name)
			require.ErrorContains(t, err, "appears twice", c.name)
		}
	}
}

// A JWKS endpoint that answers 500, or drips its body a byte at a time,
// holds neither NewVerifier nor a request past FetchTimeout: tokens get
// 503 (their key cannot be known), never 401 nor a hang.
func TestJWKSEndpointSlowOrFailing(t *testing.T) {
	testKeys(t)
	keys := jwksJSON(t, edSigner())
	token := mint(t, edSigner(), claims("acme"))
	for name, h := range map[string]http.HandlerFunc{
		"500": func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) },
		"drip": func(w http.ResponseWriter, r *http.Request) {
			for _, b := range keys {
				_, _ = w.Write([]byte{b})
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			vc := verifierConfig()
			vc.JWKSURL, vc.FetchTimeout, vc.RefreshUnknownKID = srv.URL, 300*time.Millisecond, time.Millisecond
			start := time.Now()
			v := newVerifier(t, vc)
			require.Less(t, time.Since(start), 2*time.Second, "NewVerifier waited past FetchTimeout")
			start = time.Now()
			_, err := v.Verify(t.Context(), token)
			require.ErrorIs(t, err, authz.ErrUnavailable)
			require.Less(t, time.Since(start), 2*time.Second, "Verify waited past FetchTimeout")
		})
	}
}
