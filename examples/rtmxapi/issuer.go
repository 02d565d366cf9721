package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/tenant"
)

// The demo issuer's names: the iss and aud of its tokens.
const (
	issuerName = "https://issuer.rtmxapi.localhost/"
	audience   = "rtmxapi"
)

// issuer stands for the identity provider of a real deployment: it holds
// an Ed25519 key made at start and signs tokens for members of the
// tenants; the service verifies them with the public key only.
type issuer struct {
	priv ed25519.PrivateKey
	ttl  time.Duration
}

// Format prints the issuer without its private key, with any verb.
func (is issuer) Format(f fmt.State, _ rune) {
	_, _ = fmt.Fprintf(f, "rtmxapi.issuer{ttl: %s, key: redacted}", is.ttl)
}

func newIssuer(ttl time.Duration) (*issuer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	return &issuer{priv: priv, ttl: ttl}, nil
}

// verifier returns the authz.Verifier of the issuer's tokens.
func (is *issuer) verifier(ctx context.Context) (*authz.Verifier, error) {
	der, err := x509.MarshalPKIXPublicKey(is.priv.Public())
	if err != nil {
		return nil, err
	}
	cfg := authz.DefaultVerifierConfig()
	cfg.Issuer, cfg.Audience = issuerName, audience
	cfg.Algorithms = []string{"EdDSA"}
	cfg.PEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	return authz.NewVerifier(ctx, cfg)
}

// token signs a token for subject, a member of tenant id holding role.
func (is *issuer) token(id tenant.ID, subject, role string) (string, error) {
	now := time.Now()
	return jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"iss": issuerName, "aud": audience, "sub": subject,
		"iat": now.Unix(), "exp": now.Add(is.ttl).Unix(),
		"tenant_id": id.String(), "roles": []string{role},
	}).SignedString(is.priv)
}
