package authz_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	testIssuer   = "https://idp.example.test/"
	testAudience = "rtmx-api"
)

// signer is one signing key of the test issuer.
type signer struct {
	kid    string
	alg    string
	method jwt.SigningMethod
	key    crypto.Signer
}

var (
	keysOnce                 sync.Once
	rsaKey, rsaKey2, evilRSA *rsa.PrivateKey
	ecKey                    *ecdsa.PrivateKey
	edKey, edKey2, evilEd    ed25519.PrivateKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		rsaKey, err = rsa.GenerateKey(rand.Reader, 2048)
		require.NoError(t, err)
		rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048)
		require.NoError(t, err)
		evilRSA, err = rsa.GenerateKey(rand.Reader, 2048)
		require.NoError(t, err)
		ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		_, edKey, err = ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		_, edKey2, err = ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		_, evilEd, err = ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
	})
}

func rsaSigner() signer {
	return signer{kid: "rsa-1", alg: "RS256", method: jwt.SigningMethodRS256, key: rsaKey}
}
func ecSigner() signer {
	return signer{kid: "ec-1", alg: "ES256", method: jwt.SigningMethodES256, key: ecKey}
}
func edSigner() signer {
	return signer{kid: "ed-1", alg: "EdDSA", method: jwt.SigningMethodEdDSA, key: edKey}
}

// jwksServer serves a JWK Set over loopback and counts its fetches.
type jwksServer struct {
	*httptest.Server
	hits    atomic.Int64
	failing atomic.Bool // answer 500
	mu      sync.Mutex  // guards keys
	keys    []jwkset.JWKMarshal
}

func newJWKSServer(t testing.TB, signers ...signer) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	for _, sg := range signers {
		s.add(t, sg)
	}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if s.failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		s.mu.Lock()
		body, err := json.Marshal(jwkset.JWKSMarshal{Keys: s.keys})
		s.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

// add publishes sg's public key.
func (s *jwksServer) add(t testing.TB, sg signer) {
	t.Helper()
	j, err := jwkset.NewJWKFromKey(sg.key.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: sg.kid, ALG: jwkset.ALG(sg.alg), USE: jwkset.UseSig}})
	require.NoError(t, err)
	s.mu.Lock()
	s.keys = append(s.keys, j.Marshal())
	s.mu.Unlock()
}

// claims returns valid claims for tenant id with role viewer.
func claims(id string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss":       testIssuer,
		"aud":       testAudience,
		"sub":       "user-1",
		"iat":       now.Unix(),
		"nbf":       now.Add(-time.Minute).Unix(),
		"exp":       now.Add(time.Hour).Unix(),
		"tenant_id": id,
		"roles":     []string{authz.RoleViewer},
	}
}

// mint signs c with sg, with sg's kid in the header.
func mint(t testing.TB, sg signer, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(sg.method, c)
	if sg.kid != "" {
		tok.Header["kid"] = sg.kid
	}
	s, err := tok.SignedString(sg.key)
	require.NoError(t, err)
	return s
}

// mintRaw signs the given header and payload JSON as they are.
func mintRaw(t testing.TB, method jwt.SigningMethod, key any, header, payload string) string {
	t.Helper()
	in := b64(header) + "." + b64(payload)
	sig, err := method.Sign(in, key)
	require.NoError(t, err)
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// memDirectory is a Directory in memory that counts its calls.
type memDirectory struct {
	mu     sync.Mutex // guards states and err
	states map[tenant.ID]tenant.State
	err    error
	calls  atomic.Int64
}

func newMemDirectory(states map[string]tenant.State) *memDirectory {
	d := &memDirectory{states: map[tenant.ID]tenant.State{}}
	for id, st := range states {
		d.states[tenant.MustParseID(id)] = st
	}
	return d
}

func (d *memDirectory) set(id string, st tenant.State) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.states[tenant.MustParseID(id)] = st
}

func (d *memDirectory) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.err = err
}

func (d *memDirectory) Tenant(_ context.Context, id tenant.ID) (tenant.Info, error) {
	d.calls.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return tenant.Info{}, d.err
	}
	st, ok := d.states[id]
	if !ok {
		return tenant.Info{}, store.ErrUnknownTenant
	}
	return tenant.Info{ID: id, State: st, Tier: tenant.TierStandard}, nil
}

// verifierConfig returns a VerifierConfig for the test issuer, without keys.
func verifierConfig() authz.VerifierConfig {
	c := authz.DefaultVerifierConfig()
	c.Issuer, c.Audience = testIssuer, testAudience
	return c
}

// newVerifier returns a Verifier over cfg, closed when the test ends.
func newVerifier(t testing.TB, cfg authz.VerifierConfig) *authz.Verifier {
	t.Helper()
	v, err := authz.NewVerifier(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(v.Close)
	return v
}

// echo is a handler that reports the principal and tenant it finds.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	p, ok := authz.FromContext(r.Context())
	id, hasTenant := tenant.FromContext(r.Context())
	if !ok || !hasTenant || p.Tenant() != id {
		http.Error(w, "no principal", http.StatusTeapot)
		return
	}
	_, _ = w.Write([]byte("hello " + p.Subject() + " of " + id.String()))
})

// do serves r with h and returns the recorded response.
func do(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// request returns a GET of target with the bearer token (none if "").
func request(target, token string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

// requireProblem checks that w is a problem of status and that its body
// holds none of secrets.
func requireProblem(t testing.TB, w *httptest.ResponseRecorder, status int, secrets ...string) map[string]any {
	t.Helper()
	require.Equal(t, status, w.Code, "body: %s", w.Body.String())
	require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
	require.Equal(t, "no-store", w.Header().Get("Cache-Control"))
	var p map[string]any
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p))
	require.EqualValues(t, status, p["status"])
	require.NotEmpty(t, p["title"])
	require.NotEmpty(t, p["detail"])
	require.NotEmpty(t, p["code"])
	body := w.Body.String()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		require.NotContains(t, body, s)
		require.NotContains(t, strings.Join(headerValues(w.Header()), "\n"), s)
	}
	return p
}

func headerValues(h http.Header) []string {
	var out []string
	for k, vs := range h {
		for _, v := range vs {
			out = append(out, k+": "+v)
		}
	}
	return out
}
