package authz

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/rtmx-ai/tenancy/tenant"
)

// The asymmetric algorithms a Verifier may allow. Symmetric ones (HS256,
// ...) and "none" are never allowed: a verifier holding a secret could
// mint tokens.
var asymmetric = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// MaxLeeway is the largest clock skew a VerifierConfig may allow.
const MaxLeeway = 5 * time.Minute

// VerifierConfig configures a Verifier. Start from [DefaultVerifierConfig]
// and set Issuer, Audience and the keys (PEM, JWKS and/or JWKSURL). Zero is
// not a default: NewVerifier refuses a config whose required fields are
// zero, naming the field.
type VerifierConfig struct {
	// Issuer is the iss claim every token must carry. Required.
	Issuer string
	// Audience is the service's name: the aud claim of every token must
	// hold it. Required.
	Audience string
	// Algorithms are the signature algorithms allowed, among RS256,
	// RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512 and EdDSA.
	// DefaultVerifierConfig sets RS256, ES256 and EdDSA.
	Algorithms []string
	// Leeway is the clock skew allowed when exp, nbf and iat are checked:
	// 0 to MaxLeeway. DefaultVerifierConfig sets 30 s.
	Leeway time.Duration
	// TenantClaim is the claim holding the tenant ID, parsed with
	// tenant.ParseID. DefaultVerifierConfig sets "tenant_id".
	TenantClaim string
	// RolesClaim is the claim holding the roles granted: a list of
	// strings, or one string of space-separated names. A token without it
	// grants no role. DefaultVerifierConfig sets "roles".
	RolesClaim string
	// MaxTokenBytes bounds a token's length; a longer one is refused
	// before it is parsed. DefaultVerifierConfig sets 8 KiB.
	MaxTokenBytes int
	// Types, if set, are the typ header values accepted (RFC 8725 3.11:
	// "at+jwt" for RFC 9068 access tokens keeps an ID token of the same
	// issuer out), compared case-insensitively, "application/" ignored.
	// A token without typ is then refused. Nil: any typ, or none.
	Types []string

	// PEM holds public keys in PEM ("PUBLIC KEY", PKIX; or "RSA PUBLIC
	// KEY", PKCS #1), tried for tokens whose kid no JWK matches.
	PEM []byte
	// JWKS is a JWK Set (RFC 7517) of public keys, matched by kid.
	JWKS []byte
	// JWKSURL is the issuer's JWK Set endpoint. Its keys are fetched by
	// NewVerifier, refreshed every RefreshInterval, and fetched again,
	// at most once every RefreshUnknownKID, when a token names a kid no
	// key has. While the endpoint cannot be reached, cached keys go on
	// verifying and tokens for a key not known get 503. It must be
	// https, or http on a loopback address.
	JWKSURL string
	// HTTPClient fetches JWKSURL; nil means http.DefaultClient.
	HTTPClient *http.Client
	// RefreshInterval is how often JWKSURL is fetched again.
	// DefaultVerifierConfig sets 15 minutes.
	RefreshInterval time.Duration
	// RefreshUnknownKID is the shortest time between two fetches for a
	// kid not known: tokens with made-up kids cannot make the Verifier
	// hammer the endpoint. DefaultVerifierConfig sets 30 s.
	RefreshUnknownKID time.Duration
	// FetchTimeout bounds a fetch of JWKSURL. A request whose token's kid
	// is not known may wait for one fetch. DefaultVerifierConfig sets 5 s.
	FetchTimeout time.Duration

	// Logger receives the Verifier's logs (failed fetches); nil discards
	// them. Logs never carry tokens.
	Logger *slog.Logger
}

// DefaultVerifierConfig returns a VerifierConfig with the defaults filled
// in and no issuer, audience or keys.
func DefaultVerifierConfig() VerifierConfig {
	return VerifierConfig{
		Algorithms:        []string{"RS256", "ES256", "EdDSA"},
		Leeway:            30 * time.Second,
		TenantClaim:       "tenant_id",
		RolesClaim:        "roles",
		MaxTokenBytes:     8 << 10,
		RefreshInterval:   15 * time.Minute,
		RefreshUnknownKID: 30 * time.Second,
		FetchTimeout:      5 * time.Second,
	}
}

// Verifier verifies bearer tokens (JWS compact JWTs) and returns their
// principal. It is safe for concurrent use; Close stops its JWKS refresh.
type Verifier struct {
	parser      *jwt.Parser
	types       []string // lower case, without "application/"
	tenantClaim string
	rolesClaim  string
	maxLen      int
	pem         []jwt.VerificationKey
	kf          keyfunc.Keyfunc // nil without JWKS and JWKSURL
	remote      bool            // kf fetches JWKSURL
	down        atomic.Bool     // the last fetch of JWKSURL failed
	cancel      context.CancelFunc
	log         *slog.Logger
}

// NewVerifier checks cfg and returns a Verifier. With a JWKSURL it fetches
// the keys once, bounded by FetchTimeout, unless ctx is done already; a
// failed fetch does not fail NewVerifier (the endpoint may come up later)
// but is logged, and tokens get 503 until keys arrive. The Verifier
// refreshes the keys until Close, whatever becomes of ctx (whose values
// the fetches keep).
func NewVerifier(ctx context.Context, cfg VerifierConfig) (*Verifier, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	v := &Verifier{
		tenantClaim: cfg.TenantClaim,
		rolesClaim:  cfg.RolesClaim,
		maxLen:      cfg.MaxTokenBytes,
		log:         cfg.Logger,
	}
	for _, typ := range cfg.Types {
		v.types = append(v.types, mediaType(typ))
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(slices.Clone(cfg.Algorithms)),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithStrictDecoding(),
	)
	var err error
	if v.pem, err = parsePEM(cfg.PEM); err != nil {
		return nil, err
	}
	var given jwkset.Storage
	if len(cfg.JWKS) > 0 {
		if given, err = parseJWKS(cfg.JWKS); err != nil {
			return nil, err
		}
	}
	switch {
	case cfg.JWKSURL != "":
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("authz: NewVerifier: %w", err)
		}
		bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
		v.cancel, v.remote = cancel, true
		client := http.DefaultClient
		if cfg.HTTPClient != nil {
			client = cfg.HTTPClient
		}
		watched := *client
		watched.Transport = &fetchWatch{base: client.Transport, v: v}
		watched.CheckRedirect = func(req *http.Request, via []*http.Request) error {
			if !safeURL(req.URL) {
				return errors.New("authz: JWKS: redirect to a URL that is not https")
			}
			if client.CheckRedirect != nil {
				return client.CheckRedirect(req, via)
			}
			if len(via) >= 5 {
				return errors.New("authz: JWKS: too many redirects")
			}
			return nil
		}
		v.down.Store(true) // until a fetch succeeds
		v.kf, err = keyfunc.NewDefaultOverrideCtx(bg, []string{cfg.JWKSURL}, keyfunc.Override{
			Client:           &watched,
			Given:            given,
			HTTPTimeout:      cfg.FetchTimeout,
			RateLimitWaitMax: cfg.FetchTimeout,
			RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
				return func(ctx context.Context, err error) {
					v.down.Store(true)
					v.log.WarnContext(ctx, "authz: fetching the JWKS failed", "error", err)
				}
			},
			RefreshInterval:   cfg.RefreshInterval,
			RefreshUnknownKID: rate.NewLimiter(rate.Every(cfg.RefreshUnknownKID), 1),
		})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("authz: %w: JWKSURL: %v", ErrInvalidConfig, err)
		}
	case given != nil:
		if v.kf, err = keyfunc.New(keyfunc.Options{Storage: given}); err != nil {
			return nil, fmt.Errorf("authz: %w: JWKS: %v", ErrInvalidConfig, err)
		}
	}
	return v, nil
}

func (c *VerifierConfig) validate() error {
	bad := func(field, rule string) error {
		return fmt.Errorf("authz: %w: VerifierConfig.%s: %s", ErrInvalidConfig, field, rule)
	}
	switch {
	case c.Issuer == "":
		return bad("Issuer", "required")
	case c.Audience == "":
		return bad("Audience", "required")
	case len(c.Algorithms) == 0:
		return bad("Algorithms", "required (see DefaultVerifierConfig)")
	case c.Leeway < 0 || c.Leeway > MaxLeeway:
		return bad("Leeway", "must be 0 to "+MaxLeeway.String())
	case c.TenantClaim == "":
		return bad("TenantClaim", "required")
	case c.RolesClaim == "":
		return bad("RolesClaim", "required")
	case c.TenantClaim == c.RolesClaim:
		return bad("RolesClaim", "must differ from TenantClaim")
	case c.MaxTokenBytes <= 0:
		return bad("MaxTokenBytes", "must be positive")
	case len(c.PEM) == 0 && len(c.JWKS) == 0 && c.JWKSURL == "":
		return bad("PEM", "no keys: set PEM, JWKS or JWKSURL")
	}
	for i, typ := range c.Types {
		if typ == "" {
			return bad(fmt.Sprintf("Types[%d]", i), "empty")
		}
	}
	for _, alg := range c.Algorithms {
		if !slices.Contains(asymmetric, alg) {
			return bad("Algorithms", fmt.Sprintf("%q is not an allowed asymmetric algorithm (%s)", alg, strings.Join(asymmetric, ", ")))
		}
	}
	if c.JWKSURL != "" {
		u, err := url.Parse(c.JWKSURL)
		if err != nil || u.Host == "" {
			return bad("JWKSURL", "not an absolute URL")
		}
		if !safeURL(u) {
			return bad("JWKSURL", "must be https (http only on a loopback address)")
		}
		switch {
		case c.RefreshInterval <= 0:
			return bad("RefreshInterval", "must be positive")
		case c.RefreshUnknownKID <= 0:
			return bad("RefreshUnknownKID", "must be positive")
		case c.FetchTimeout <= 0:
			return bad("FetchTimeout", "must be positive")
		}
	}
	return nil
}

// safeURL reports whether u may serve keys: https, or http on loopback.
func safeURL(u *url.URL) bool {
	return u.Scheme == "https" || u.Scheme == "http" && isLoopback(u.Hostname())
}

func isLoopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

func parsePEM(data []byte) ([]jwt.VerificationKey, error) {
	var keys []jwt.VerificationKey
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		default:
			return nil, fmt.Errorf("authz: %w: VerifierConfig.PEM: block %d: type %q is not PUBLIC KEY or RSA PUBLIC KEY", ErrInvalidConfig, n, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("authz: %w: VerifierConfig.PEM: block %d: %v", ErrInvalidConfig, n, err)
		}
		switch key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			return nil, fmt.Errorf("authz: %w: VerifierConfig.PEM: block %d: %T is not an RSA, ECDSA or Ed25519 key", ErrInvalidConfig, n, key)
		}
		keys = append(keys, key)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		return nil, fmt.Errorf("authz: %w: VerifierConfig.PEM: holds data that is not a PEM block", ErrInvalidConfig)
	}
	return keys, nil
}

func parseJWKS(data []byte) (jwkset.Storage, error) {
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("authz: %w: VerifierConfig.JWKS: not a JWK Set: %v", ErrInvalidConfig, err)
	}
	for i, k := range set.Keys {
		if k.D != "" || k.K != "" {
			return nil, fmt.Errorf("authz: %w: VerifierConfig.JWKS: key %d: holds a private or symmetric key", ErrInvalidConfig, i)
		}
		if k.KID == "" {
			return nil, fmt.Errorf("authz: %w: VerifierConfig.JWKS: key %d: no kid", ErrInvalidConfig, i)
		}
	}
	st, err := set.ToStorage()
	if err != nil {
		return nil, fmt.Errorf("authz: %w: VerifierConfig.JWKS: %v", ErrInvalidConfig, err)
	}
	return st, nil
}

// maxJWKSBytes bounds a JWKS response.
const maxJWKSBytes = 1 << 20

// mediaType normalises a typ value (RFC 7515 4.1.9).
func mediaType(s string) string {
	s = strings.ToLower(s)
	return strings.TrimPrefix(s, "application/")
}

// fetchWatch records whether the last fetch of the JWKS got an answer.
type fetchWatch struct {
	base http.RoundTripper
	v    *Verifier
}

func (f *fetchWatch) RoundTrip(r *http.Request) (*http.Response, error) {
	base := f.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = http.MaxBytesReader(nil, resp.Body, maxJWKSBytes)
	if resp.StatusCode == http.StatusOK {
		f.v.down.Store(false) // a body too large or not a JWK Set sets it again
	}
	return resp, nil
}

// Close stops the refresh of the JWKS. Tokens whose keys are cached still
// verify afterwards.
func (v *Verifier) Close() {
	if v.cancel != nil {
		v.cancel()
	}
}

// Verify verifies token (the bearer token, without "Bearer ") and returns
// its principal. It fails with an error wrapping ErrInvalidToken for a
// token that is not valid (see the package documentation for the rules),
// ErrForbidden for a valid token that names no valid tenant or whose roles
// claim is not a list of strings, and ErrUnavailable when the token's key
// is not known and the JWKS endpoint cannot be reached. The principal's
// roles are judged by [DefaultRoles] until the middleware resolves its
// tenant's.
func (v *Verifier) Verify(ctx context.Context, token string) (*Principal, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidToken)
	}
	if len(token) > v.maxLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, v.maxLen)
	}
	claims := jwt.MapClaims{}
	var keyErr error
	t, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		k, err := v.key(ctx, t)
		keyErr = err
		return k, err
	})
	if err != nil {
		if keyErr != nil && v.remote && v.down.Load() {
			return nil, fmt.Errorf("%w: the token's key is not known and the JWKS cannot be fetched", ErrUnavailable)
		}
		return nil, fmt.Errorf("%w: %s", ErrInvalidToken, reason(err))
	}
	if len(v.types) > 0 {
		typ, _ := t.Header["typ"].(string)
		if !slices.Contains(v.types, mediaType(typ)) {
			return nil, fmt.Errorf("%w: typ header missing or not accepted", ErrInvalidToken)
		}
	}
	if _, crit := t.Header["crit"]; crit {
		return nil, fmt.Errorf("%w: crit header parameters are not supported", ErrInvalidToken)
	}
	// encoding/json keeps the last of duplicated members; another parser
	// (the issuer's, a gateway's) may keep the first. Refuse both.
	header, payload, _ := strings.Cut(token, ".")
	payload, _, _ = strings.Cut(payload, ".")
	if err := noDuplicates(header); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrInvalidToken, err)
	}
	if err := noDuplicates(payload); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrInvalidToken, err)
	}
	p := &Principal{claims: claims}
	sub, _ := claims["sub"].(string)
	if sub == "" {
		return nil, fmt.Errorf("%w: claim sub: missing, empty or not a string", ErrInvalidToken)
	}
	p.subject = sub
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return nil, fmt.Errorf("%w: claim exp: missing", ErrInvalidToken) // the parser has refused it already
	}
	p.expires = exp.Time
	raw, ok := claims[v.tenantClaim]
	if !ok {
		return nil, fmt.Errorf("%w: claim %s: missing", ErrForbidden, v.tenantClaim)
	}
	s, ok := raw.(string)
	if !ok {
		return nil, fmt.Errorf("%w: claim %s: not a string", ErrForbidden, v.tenantClaim)
	}
	if p.tenant, err = tenant.ParseID(s); err != nil {
		var ie *tenant.IDError
		if errors.As(err, &ie) {
			return nil, fmt.Errorf("%w: claim %s: not a tenant ID: %s", ErrForbidden, v.tenantClaim, ie.Rule)
		}
		return nil, fmt.Errorf("%w: claim %s: not a tenant ID", ErrForbidden, v.tenantClaim)
	}
	if p.roles, err = rolesOf(claims[v.rolesClaim]); err != nil {
		return nil, fmt.Errorf("%w: claim %s: %v", ErrForbidden, v.rolesClaim, err)
	}
	return p, nil
}

// key finds the key of token t.
func (v *Verifier) key(ctx context.Context, t *jwt.Token) (any, error) {
	if v.kf != nil {
		k, err := v.kf.KeyfuncCtx(ctx)(t)
		if err == nil {
			if set, ok := k.(jwt.VerificationKeySet); ok && len(v.pem) > 0 {
				set.Keys = append(set.Keys, v.pem...)
				return set, nil
			}
			return k, nil
		}
		if len(v.pem) == 0 {
			return nil, err
		}
	}
	return jwt.VerificationKeySet{Keys: v.pem}, nil
}

// reason returns the rule err (from the jwt parser) broke, without the
// token's contents.
func reason(err error) string {
	for _, r := range []struct {
		err error
		msg string
	}{
		{jwt.ErrTokenMalformed, "malformed"},
		{jwt.ErrTokenUnverifiable, "no key verifies it (algorithm or key not known)"},
		{jwt.ErrTokenSignatureInvalid, "signature or algorithm not valid"},
		{jwt.ErrTokenRequiredClaimMissing, "a required claim (exp) is missing"},
		{jwt.ErrTokenExpired, "expired"},
		{jwt.ErrTokenNotValidYet, "not valid yet (nbf)"},
		{jwt.ErrTokenUsedBeforeIssued, "issued in the future (iat)"},
		{jwt.ErrTokenInvalidIssuer, "claim iss: not the issuer"},
		{jwt.ErrTokenInvalidAudience, "claim aud: not for this audience"},
		{jwt.ErrTokenInvalidClaims, "claims not valid"},
	} {
		if errors.Is(err, r.err) {
			return r.msg
		}
	}
	return "not valid"
}

// rolesOf reads a roles claim: absent, a list of strings, or a string of
// space-separated names. Duplicates are dropped.
func rolesOf(v any) ([]string, error) {
	var roles []string
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		roles = strings.Fields(v)
	case []any:
		roles = make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, errors.New("not a list of strings")
			}
			roles = append(roles, s)
		}
	default:
		return nil, errors.New("not a list of strings or a string")
	}
	out := roles[:0]
	for _, r := range roles {
		if r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// noDuplicates checks that no JSON object in segment (base64url, as the
// parser accepted it) has a member name twice, comparing names as
// encoding/json decodes them (escapes resolved, invalid UTF-8 replaced).
// The parser has decoded the segment as JSON already, so the scan assumes
// it is well-formed and only guards its own bounds.
func noDuplicates(segment string) error {
	var buf [2048]byte // on the stack for most tokens
	var data []byte
	if n := base64.RawURLEncoding.DecodedLen(len(segment)); n > len(buf) {
		data = make([]byte, n)
	} else {
		data = buf[:n]
	}
	n, err := base64.RawURLEncoding.Decode(data, []byte(segment))
	if err != nil {
		return errors.New("malformed")
	}
	data = data[:n]
	// Names are spans of data, or of decoded for names with escapes or
	// non-ASCII bytes: no pointers, so that buf stays on the stack.
	type span struct {
		from, to int
		decoded  bool
	}
	var (
		namesBuf [32]span
		stackBuf [8]int // per open container: its first name's index in names, or -1 for an array
		decoded  []byte
	)
	bytesOf := func(s span) []byte {
		if s.decoded {
			return decoded[s.from:s.to]
		}
		return data[s.from:s.to]
	}
	names, stack := namesBuf[:0], stackBuf[:0]
	expectName := false
	for i := 0; i < len(data); {
		switch data[i] {
		case '{':
			stack = append(stack, len(names))
			expectName = true
			i++
		case '[':
			stack = append(stack, -1)
			expectName = false
			i++
		case '}', ']':
			if len(stack) == 0 {
				return errors.New("malformed JSON")
			}
			if top := stack[len(stack)-1]; top >= 0 {
				names = names[:top]
			}
			stack = stack[:len(stack)-1]
			expectName = false
			i++
		case ',':
			expectName = len(stack) > 0 && stack[len(stack)-1] >= 0
			i++
		case '"':
			end, plain := scanString(data, i)
			if end < 0 {
				return errors.New("malformed JSON")
			}
			if expectName {
				name := span{from: i + 1, to: end - 1}
				if !plain {
					var s string
					if err := json.Unmarshal(bytes.Clone(data[i:end]), &s); err != nil {
						return errors.New("malformed JSON")
					}
					name = span{from: len(decoded), to: len(decoded) + len(s), decoded: true}
					decoded = append(decoded, s...)
				}
				for _, seen := range names[stack[len(stack)-1]:] {
					if bytes.Equal(bytesOf(seen), bytesOf(name)) {
						return errors.New("a member name appears twice")
					}
				}
				names = append(names, name)
				expectName = false
			}
			i = end
		default: // ':', whitespace, numbers, literals
			i++
		}
	}
	return nil
}

// scanString returns the index after the string starting at data[i]
// (a '"'), or -1, and whether it is plain: no escapes, ASCII only.
func scanString(data []byte, i int) (int, bool) {
	plain := true
	for k := i + 1; k < len(data); k++ {
		switch c := data[k]; {
		case c == '\\':
			plain = false
			k++
		case c == '"':
			return k + 1, plain
		case c >= 0x80:
			plain = false
		}
	}
	return -1, false
}
