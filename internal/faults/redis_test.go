package faults_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/internal/testenv"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// missing fails the test in CI and skips it elsewhere, naming what is
// missing.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if testenv.InCI() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// redisServer is a redis-server of the test's own, without persistence.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
}

// startRedis starts a redis-server on addr and waits for it to answer.
func startRedis(t *testing.T, addr string) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		missing(t, "no redis-server on PATH: %v", err)
	}
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &redisServer{addr: addr, cmd: cmd}
	t.Cleanup(s.kill)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	for deadline := time.Now().Add(5 * time.Second); rdb.Ping(t.Context()).Err() != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s did not answer", addr)
		}
	}
	return s
}

// kill kills the server (SIGKILL: no goodbye to its clients).
func (s *redisServer) kill() {
	if s.cmd.ProcessState == nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// issuer signs the tokens of the tests with an Ed25519 key.
type issuer struct {
	key  ed25519.PrivateKey
	jwks []byte
}

const (
	testIssuer   = "https://idp.faults.test/"
	testAudience = "rtmx-api"
)

func newIssuer(t testing.TB) *issuer {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	j, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "ed-1", ALG: jwkset.AlgEdDSA}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{j.Marshal()}})
	if err != nil {
		t.Fatal(err)
	}
	return &issuer{key: key, jwks: b}
}

// token returns a token of a viewer of tenant id, valid for an hour.
func (is *issuer) token(t testing.TB, id tenant.ID) string {
	t.Helper()
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"iss": testIssuer, "aud": testAudience, "sub": "user-of-" + id.String(),
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(),
		"tenant_id": id.String(), "roles": []string{authz.RoleViewer},
	})
	tok.Header["kid"] = "ed-1"
	s, err := tok.SignedString(is.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// verifier returns a Verifier of the issuer's tokens.
func (is *issuer) verifier(t testing.TB) *authz.Verifier {
	t.Helper()
	vc := authz.DefaultVerifierConfig()
	vc.Issuer, vc.Audience, vc.JWKS = testIssuer, testAudience, is.jwks
	v, err := authz.NewVerifier(t.Context(), vc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// whoAmI answers with the tenant of the request's context.
var whoAmI = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	id, ok := tenant.FromContext(r.Context())
	if !ok {
		http.Error(w, "no tenant", http.StatusInternalServerError)
		return
	}
	_, _ = w.Write([]byte(id.String()))
})

// response is one answer the load got.
type response struct {
	at      time.Time
	id      tenant.ID
	status  int
	body    string
	retry   string // Retry-After
	problem string // the problem's code, if a problem
}

// TestRedisDownUnderMiddleware kills the Redis server of the distributed
// limiter while requests of three tenants flow through the authz
// middleware (tokens, the tenant directory on PostgreSQL, roles, the
// limiter), then starts it again on the same address, once per Fallback:
//
//   - before, Redis's budget limits each tenant (200 or 429 only);
//   - while Redis is down, FallbackLocal limits each tenant with its local
//     budget (200 or 429, no more 200s than the quota gives), and
//     FallbackRefuse fails closed (503 with Retry-After, no 200);
//   - no response is another status, every 200 names its own tenant, and
//     no request panics;
//   - once Redis is back, it decides again for every tenant within a
//     bound.
func TestRedisDownUnderMiddleware(t *testing.T) {
	f := newFixture(t, databaseFor(t, store.ModeTenantLogin), store.ModeTenantLogin, uniquePrefix("redis"), 3)
	is := newIssuer(t)
	v := is.verifier(t)
	const rate, burst = 20.0, 20
	for _, fb := range []ratelimit.Fallback{ratelimit.FallbackLocal, ratelimit.FallbackRefuse} {
		t.Run("fallback="+string(fb), func(t *testing.T) {
			addr := freeAddr(t)
			srv := startRedis(t, addr)
			rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
			t.Cleanup(func() { rdb.Close() })
			rc := ratelimit.DefaultRedisConfig()
			for tier := range rc.Tiers {
				rc.Tiers[tier] = ratelimit.Quota{Rate: rate, Burst: burst, Concurrent: 100}
			}
			rc.Prefix, rc.Fallback, rc.Retry = "faults:"+string(fb)+":", fb, 200*time.Millisecond
			lim, err := ratelimit.NewRedis(rdb, rc)
			if err != nil {
				t.Fatal(err)
			}
			cfg := authz.DefaultConfig()
			cfg.Verifier, cfg.Directory, cfg.Limiter = v, authz.StoreDirectory(f.db), lim
			mw, err := authz.NewMiddleware(cfg)
			if err != nil {
				t.Fatal(err)
			}
			h := mw.Handler(whoAmI)

			var mu sync.Mutex // guards got
			var got []response
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for _, id := range f.ids {
				token := is.token(t, id)
				for range 2 {
					wg.Go(func() {
						for {
							select {
							case <-stop:
								return
							default:
							}
							r := httptest.NewRequest(http.MethodGet, "/whoami", nil)
							r.Header.Set("Authorization", "Bearer "+token)
							w := httptest.NewRecorder()
							h.ServeHTTP(w, r)
							resp := response{at: time.Now(), id: id, status: w.Code, body: w.Body.String(), retry: w.Header().Get("Retry-After")}
							if strings.HasPrefix(w.Header().Get("Content-Type"), "application/problem+json") {
								var p struct{ Code string }
								_ = json.Unmarshal(w.Body.Bytes(), &p)
								resp.problem = p.Code
							}
							mu.Lock()
							got = append(got, resp)
							mu.Unlock()
							time.Sleep(5 * time.Millisecond)
						}
					})
				}
			}
			stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
			t.Cleanup(stopLoad)
			start := time.Now()

			time.Sleep(time.Second)
			srv.kill()
			down := time.Now()
			time.Sleep(1500 * time.Millisecond)
			up := time.Now()    // Redis may answer from here on
			startRedis(t, addr) // empty: no persistence

			// Redis decides again for every tenant within the bound.
			const bound = 5 * time.Second
			var back time.Time
			for _, id := range f.ids {
				for {
					n, err := rdb.Exists(t.Context(), "rate:"+rc.Prefix+id.String()).Result()
					if err == nil && n == 1 {
						break
					}
					if time.Since(up) > bound {
						t.Fatalf("Redis holds no budget of tenant %s %v after it came back (%v)", id, bound, err)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			back = time.Now()
			time.Sleep(500 * time.Millisecond)
			stopLoad()
			end := time.Now()
			t.Logf("Redis down for %v; deciding again %v after it was started", up.Sub(down).Round(time.Millisecond), back.Sub(up).Round(time.Millisecond))

			// A request in flight when Redis died may still have had its
			// answer; one sent as Redis came back may still see the
			// Fallback until the limiter retries.
			const grace = 300 * time.Millisecond
			type phase struct {
				name     string
				from, to time.Time
				ok       map[tenant.ID]int
				statuses map[int]int
			}
			phases := []*phase{
				{name: "before", from: start, to: down},
				{name: "down", from: down.Add(grace), to: up},
				{name: "after", from: back, to: end},
			}
			for _, p := range phases {
				p.ok, p.statuses = map[tenant.ID]int{}, map[int]int{}
			}
			var bad []string
			for _, r := range got {
				switch {
				case r.status == http.StatusOK && r.body != r.id.String():
					bad = append(bad, fmt.Sprintf("tenant %s got %q", r.id, r.body))
				case r.status == http.StatusTooManyRequests && (r.problem != "rate_limited" || r.retry == ""):
					bad = append(bad, fmt.Sprintf("tenant %s: 429 of code %q, Retry-After %q", r.id, r.problem, r.retry))
				case r.status == http.StatusServiceUnavailable && (fb != ratelimit.FallbackRefuse || r.problem != "unavailable" || r.retry == ""):
					bad = append(bad, fmt.Sprintf("tenant %s: 503 of code %q, Retry-After %q, with %s", r.id, r.problem, r.retry, fb))
				case r.status != http.StatusOK && r.status != http.StatusTooManyRequests && r.status != http.StatusServiceUnavailable:
					bad = append(bad, fmt.Sprintf("tenant %s: status %d: %s", r.id, r.status, r.body))
				}
				for _, p := range phases {
					if !r.at.Before(p.from) && r.at.Before(p.to) {
						p.statuses[r.status]++
						if r.status == http.StatusOK {
							p.ok[r.id]++
						}
					}
				}
			}
			if len(bad) > 0 {
				t.Errorf("%d bad responses, the first: %q", len(bad), bad[:min(len(bad), 5)])
			}
			for _, p := range phases {
				t.Logf("%s: statuses %v, 200s per tenant %v", p.name, p.statuses, p.ok)
				if p.statuses[http.StatusTooManyRequests]+p.statuses[http.StatusServiceUnavailable] == 0 {
					t.Errorf("%s: no request was limited: the load is too light to show the limit", p.name)
				}
				refusing := p.name == "down" && fb == ratelimit.FallbackRefuse
				for _, id := range f.ids {
					// The most a tenant's budget admits in the phase: its
					// burst, refilled at its rate (each of Redis and the
					// local bucket starts full).
					most := burst + int(rate*p.to.Sub(p.from).Seconds()) + 2
					switch {
					case refusing && p.ok[id] > 0:
						t.Errorf("%s: tenant %s got %d answers with Redis down and FallbackRefuse", p.name, id, p.ok[id])
					case !refusing && p.ok[id] == 0:
						t.Errorf("%s: tenant %s got no answer", p.name, id)
					case p.ok[id] > most:
						t.Errorf("%s: tenant %s got %d answers, its quota admits %d", p.name, id, p.ok[id], most)
					}
				}
			}
		})
	}
}
