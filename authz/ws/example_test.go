package ws_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/authz/ws"
	"github.com/rtmx-ai/tenancy/tenant"
)

// directory reports every tenant active; a service uses
// authz.StoreDirectory(db).
type directory struct{}

func (directory) Tenant(_ context.Context, id tenant.ID) (tenant.Info, error) {
	return tenant.Info{ID: id, State: tenant.StateActive, Tier: tenant.TierStandard}, nil
}

// A Hub behind authz's Middleware on GET /t/{tenant}/ws: a client of
// acme joins room "builds" and gets what the service publishes there;
// a token of globex on acme's path is refused.
func ExampleHub() {
	ctx := context.Background()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)

	vcfg := authz.DefaultVerifierConfig()
	vcfg.Issuer, vcfg.Audience, vcfg.JWKS = "https://idp.example/", "rtmx", jwksOf(pub)
	v, err := authz.NewVerifier(ctx, vcfg)
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	mcfg := authz.DefaultConfig()
	mcfg.Verifier, mcfg.Directory = v, directory{}
	mcfg.Resolvers = []authz.Resolver{authz.PathValue("tenant")}
	mw, err := authz.NewMiddleware(mcfg)
	if err != nil {
		log.Fatal(err)
	}

	cfg := ws.DefaultConfig()
	cfg.Directory = directory{}
	hub, err := ws.NewHub(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	mux := http.NewServeMux()
	mux.Handle("GET /t/{tenant}/ws", mw.Handler(hub))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/t/acme/ws"

	// A client of acme joins "builds".
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + sign(priv, "acme")}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.CloseNow()
	_ = c.Write(ctx, websocket.MessageText, []byte(`{"op":"join","room":"builds"}`))
	_, b, _ := c.Read(ctx)
	fmt.Println(string(b))

	// The service publishes to acme's room "builds".
	actx := tenant.NewContext(ctx, tenant.MustParseID("acme"))
	room, err := ws.NewRoom(actx, "builds")
	if err != nil {
		log.Fatal(err)
	}
	n, err := hub.Publish(actx, room, map[string]string{"build": "42", "status": "green"})
	fmt.Println(n, err)
	_, b, _ = c.Read(ctx)
	fmt.Println(string(b))

	// globex's token on acme's path: the upgrade is refused.
	_, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + sign(priv, "globex")}},
	})
	fmt.Println(resp.StatusCode, err != nil)
	// Output:
	// {"op":"joined","room":"builds"}
	// 1 <nil>
	// {"op":"message","room":"builds","data":{"build":"42","status":"green"}}
	// 403 true
}

// jwksOf returns the JWK Set of an issuer's public key.
func jwksOf(pub ed25519.PublicKey) []byte {
	j, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "k1", ALG: jwkset.AlgEdDSA}})
	if err != nil {
		log.Fatal(err)
	}
	b, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{j.Marshal()}})
	if err != nil {
		log.Fatal(err)
	}
	return b
}

// sign returns an issuer's token for an editor of tenant id.
func sign(priv ed25519.PrivateKey, id string) string {
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"iss": "https://idp.example/", "aud": "rtmx", "sub": "user-1",
		"exp": time.Now().Add(time.Hour).Unix(), "tenant_id": id, "roles": []string{"editor"},
	})
	tok.Header["kid"] = "k1"
	s, err := tok.SignedString(priv)
	if err != nil {
		log.Fatal(err)
	}
	return s
}
