package authz_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/tenant"
)

// staticDirectory is a Directory of active tenants; a service uses
// authz.StoreDirectory(db).
type staticDirectory map[string]tenant.State

func (d staticDirectory) Tenant(_ context.Context, id tenant.ID) (tenant.Info, error) {
	return tenant.Info{ID: id, State: d[id.String()]}, nil
}

// A Verifier for the issuer's Ed25519 key, and the middleware in front of
// a tenant's items: a token reaches its own tenant's path only.
func Example() {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)

	vcfg := authz.DefaultVerifierConfig()
	vcfg.Issuer, vcfg.Audience = "https://idp.example.com/", "rtmx-api"
	vcfg.PEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}) // or JWKSURL
	verifier, err := authz.NewVerifier(context.Background(), vcfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer verifier.Close()

	cfg := authz.DefaultConfig()
	cfg.Verifier = verifier
	cfg.Directory = staticDirectory{"acme": tenant.StateActive, "globex": tenant.StateActive}
	cfg.Resolvers = []authz.Resolver{authz.PathValue("tenant")}
	mw, err := authz.NewMiddleware(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	items := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := authz.FromContext(r.Context())
		id, _ := tenant.FromContext(r.Context())
		fmt.Fprintf(w, "items of %s for %s", id, p.Subject())
	})
	mux := http.NewServeMux()
	mux.Handle("GET /t/{tenant}/items", mw.Handler(authz.Require(authz.RoleViewer)(items)))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	token, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"iss": "https://idp.example.com/", "aud": "rtmx-api", "sub": "ada",
		"exp": time.Now().Add(time.Hour).Unix(), "tenant_id": "acme", "roles": []string{"editor"},
	}).SignedString(priv)

	for _, path := range []string{"/t/acme/items", "/t/globex/items"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%s: %d %s %s\n", path, resp.StatusCode, resp.Header.Get("Content-Type"), bytes.TrimSpace(body))
	}
	resp, _ := http.Get(srv.URL + "/t/acme/items")
	resp.Body.Close()
	fmt.Println("no token:", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	// Output:
	// /t/acme/items: 200 text/plain; charset=utf-8 items of acme for ada
	// /t/globex/items: 403 application/problem+json {"type":"about:blank","title":"Forbidden","status":403,"detail":"The request names a tenant the token is not for.","code":"cross_tenant"}
	// no token: 401 Bearer
}

// A tenant with roles of its own beside the defaults of every other
// tenant: the middleware judges a token by its tenant's definitions.
func ExampleNewRoles() {
	own, err := authz.NewRoles(map[string]authz.RoleDef{
		"auditor": {Permissions: []string{authz.PermRead, "audit:export"}},
		"admin":   {Implies: []string{"auditor"}, Permissions: []string{authz.PermManage}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	roles := authz.NewMemoryRoles(authz.DefaultRoles())
	roles.Set(tenant.MustParseID("globex"), own) // cfg.Roles = roles

	fmt.Println("globex admin exports audit:", own.Grants("admin", "audit:export"))
	def := authz.DefaultRoles()
	fmt.Println("owner implies viewer:", def.Implies(authz.RoleOwner, authz.RoleViewer))
	fmt.Println("viewer may write:", def.Grants(authz.RoleViewer, authz.PermWrite))

	_, err = authz.NewRoles(map[string]authz.RoleDef{"a": {Implies: []string{"b"}}, "b": {Implies: []string{"a"}}})
	fmt.Println(err)
	// Output:
	// globex admin exports audit: true
	// owner implies viewer: true
	// viewer may write: false
	// authz: invalid configuration: role "a": implication is circular
}
