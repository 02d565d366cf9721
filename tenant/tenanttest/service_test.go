package tenanttest_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	gcblob "gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/gcerrors"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/authz/ws"
	"github.com/rtmx-ai/tenancy/blob"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/keys/localkms"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/rtmx-ai/tenancy/tenant/tenanttest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The service of these tests is a small RTMX-like requirements API on the
// SDK: requirements in store (real PostgreSQL, a schema and a login per
// tenant), an attachment per requirement in blob (file://, encrypted with
// the tenant's keys), an audit entry per change, a WebSocket feed of
// changes per tenant (authz/ws), all behind authz's middleware (JWT,
// tenant of the path, roles, a per-tenant rate limit). A flaw makes one
// part of it leak, for the suite to find.

// flaw is a way the service leaks, or none.
type flaw int

const (
	isolated flaw = iota
	// pathTenant: the handlers take the tenant from the path, and the
	// middleware checks no path against the token.
	pathTenant
	// lastChangeHeader: every answer carries the text of the last change
	// of any tenant, in a header.
	lastChangeHeader
	// broadcastFeed: the feed is the service's own, sending every change
	// to every connection.
	broadcastFeed
	// rawBucketView: attachments live in one directory of the platform's
	// storage, shared by every tenant, unencrypted.
	rawBucketView
	// noQuota: the middleware has no rate limiter.
	noQuota
	// sharedQuota: one rate limit for all the tenants together.
	sharedQuota
	// sqlText: a requirement is inserted with SQL text built from its
	// values, not with bound parameters.
	sqlText
	// unverifiedToken: the service reads the token's tenant without
	// verifying its signature, instead of through the middleware.
	unverifiedToken
)

const (
	issuer   = "https://idp.tenanttest.example/"
	audience = "rtmx-tenanttest"
	// burst is each tenant's request budget at once; the suite's checks
	// before the quota's send fewer than this per tenant.
	burst = 120
	// quotaRequests is Harness.Quota.Requests.
	quotaRequests = 3 * burst
)

var (
	loginSecret  = store.LoginSecret{Version: 1, Key: []byte("tenanttest service login secret, 32 bytes or more")}
	platformOnce sync.Once
	platformURL  string
	tenantSeq    atomic.Int64
)

var requirements = store.Table{
	Name:    "requirements",
	Columns: `req_id text NOT NULL, text text NOT NULL, PRIMARY KEY (tenant_id, req_id)`,
}

type service struct {
	flaw    flaw
	db      *store.DB
	km      *keys.Manager
	buckets *blob.Buckets
	raw     *gcblob.Bucket
	dir     string // the storage's directory
	log     *audit.Log
	hub     *ws.Hub
	priv    ed25519.PrivateKey
	handler http.Handler
	tenants []tenanttest.Tenant

	lastChange atomic.Value // string: the last change's text (lastChangeHeader)
	mu         sync.Mutex   // guards conns
	conns      map[*websocket.Conn]bool
}

// newService builds the service with flaw, and two tenants.
func newService(t *testing.T, f flaw) *service {
	t.Helper()
	ctx := t.Context()
	d := pgtest.DB(t)
	platformOnce.Do(func() { platformURL = d.CreateRole(t, "platform", "") })
	pcfg, err := pgx.ParseConfig(platformURL)
	must(t, err)
	acfg, err := store.ParseAdminConfig(d.AdminURL())
	must(t, err)
	acfg.RolePrefix, acfg.PlatformRole = d.Prefix(), pcfg.User
	acfg.LoginSecrets = []store.LoginSecret{loginSecret}
	acfg.Tables = []store.Table{requirements}
	acfg.Migrations, err = audit.WithMigration(nil, 1)
	must(t, err)
	admin, err := store.OpenAdmin(ctx, acfg)
	must(t, err)
	t.Cleanup(admin.Close)
	must(t, audit.Install(ctx, admin))
	cfg, err := store.ParseConfig(d.URL(pcfg.User, pcfg.Password), loginSecret)
	must(t, err)
	s := &service{flaw: f, conns: map[*websocket.Conn]bool{}}
	s.db, err = store.Open(ctx, cfg)
	must(t, err)
	t.Cleanup(s.db.Close)

	kek, err := localkms.KeyURI(filepath.Join(t.TempDir(), "master.key"))
	must(t, err)
	local, err := localkms.NewClient(localkms.Scheme)
	must(t, err)
	newKeys := func(ks keys.Store) *keys.Manager {
		kc := keys.DefaultConfig()
		kc.Store, kc.KMS, kc.PlatformKEK = ks, []registry.KMSClient{local}, keys.URI(kek)
		m, err := keys.New(kc)
		must(t, err)
		t.Cleanup(func() { _ = m.Close() })
		return m
	}
	prov := newKeys(admin.Keysets())
	s.km = newKeys(s.db.Keysets())
	lc := audit.DefaultConfig()
	lc.DB, lc.Keys = s.db, s.km
	s.log, err = audit.New(lc)
	must(t, err)
	t.Cleanup(func() { _ = s.log.Close(context.WithoutCancel(ctx)) })

	s.dir = t.TempDir()
	s.raw, err = fileblob.OpenBucket(s.dir, nil)
	must(t, err)
	raw2, err := fileblob.OpenBucket(s.dir, nil) // Buckets closes the one it is given
	must(t, err)
	s.buckets, err = blob.New(raw2, s.km)
	must(t, err)
	t.Cleanup(func() { _ = s.buckets.Close(); _ = s.raw.Close() })

	n := tenantSeq.Add(1)
	_, s.priv, err = ed25519.GenerateKey(rand.Reader)
	must(t, err)
	for _, name := range []string{"alpha", "bravo"} {
		id := tenant.MustParseID(fmt.Sprintf("%s%d", name, n))
		must(t, admin.CreateTenant(ctx, tenant.Info{ID: id, Name: "Tenant " + id.String(), Tier: tenant.TierStandard}))
		must(t, prov.Provision(ctx, id, keys.ProvisionOptions{}))
		s.tenants = append(s.tenants, tenanttest.Tenant{ID: id, Token: s.tokenFor(id)})
	}

	der, err := x509.MarshalPKIXPublicKey(s.priv.Public())
	must(t, err)
	vc := authz.DefaultVerifierConfig()
	vc.Issuer, vc.Audience = issuer, audience
	vc.PEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	v, err := authz.NewVerifier(ctx, vc)
	must(t, err)
	t.Cleanup(v.Close)
	mc := authz.DefaultConfig()
	mc.Verifier, mc.Directory = v, authz.StoreDirectory(s.db)
	if f != pathTenant {
		mc.Resolvers = []authz.Resolver{authz.PathValue("tenant")}
	}
	rc := ratelimit.DefaultConfig()
	for tier := range rc.Tiers {
		rc.Tiers[tier] = ratelimit.Quota{Rate: 1, Burst: burst, Concurrent: 16}
	}
	lim, err := ratelimit.NewLocal(rc)
	must(t, err)
	switch f {
	case noQuota:
	case sharedQuota:
		mc.Limiter = oneBudget{lim, s.tenants[0].ID}
	default:
		mc.Limiter = lim
	}
	mw, err := authz.NewMiddleware(mc)
	must(t, err)

	wc := ws.DefaultConfig()
	wc.Directory = authz.StoreDirectory(s.db)
	s.hub, err = ws.NewHub(wc)
	must(t, err)
	t.Cleanup(func() { _ = s.hub.Close() })

	as := func(role string, h http.HandlerFunc) http.Handler {
		if f == unverifiedToken {
			return unverified(s.scoped(h))
		}
		return mw.Handler(authz.Require(role)(s.scoped(h)))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /t/{tenant}/requirements", as(authz.RoleViewer, s.list))
	mux.Handle("POST /t/{tenant}/requirements", as(authz.RoleEditor, s.post))
	mux.Handle("GET /t/{tenant}/requirements/{req}", as(authz.RoleViewer, s.get))
	mux.Handle("PUT /t/{tenant}/requirements/{req}", as(authz.RoleEditor, s.put))
	mux.Handle("DELETE /t/{tenant}/requirements/{req}", as(authz.RoleEditor, s.delete))
	mux.Handle("GET /t/{tenant}/files/{file}", as(authz.RoleViewer, s.file))
	if f == broadcastFeed {
		mux.Handle("GET /t/{tenant}/ws", mw.Handler(http.HandlerFunc(s.feed)))
	} else {
		mux.Handle("GET /t/{tenant}/ws", mw.Handler(s.hub))
	}
	s.handler = mux
	return s
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// tokenFor returns the token maker of tenant id: a token of user ada with
// role ("" for owner).
func (s *service) tokenFor(id tenant.ID) func(role string) (string, error) {
	return func(role string) (string, error) {
		if role == "" {
			role = authz.RoleOwner
		}
		return jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
			"iss": issuer, "aud": audience, "sub": "ada",
			"exp": time.Now().Add(time.Hour).Unix(), "tenant_id": id.String(), "roles": []string{role},
		}).SignedString(s.priv)
	}
}

// unverified is the unverifiedToken flaw's authentication: the tenant of
// the token's claims, its signature never checked.
func unverified(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		var claims jwt.MapClaims
		if ok {
			_, _, err := jwt.NewParser().ParseUnverified(raw, &claims)
			ok = err == nil
		}
		s, _ := claims["tenant_id"].(string)
		id, err := tenant.ParseID(s)
		if !ok || err != nil || id.String() != r.PathValue("tenant") {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r.WithContext(tenant.NewContext(r.Context(), id)))
	})
}

// oneBudget is a limiter that charges every tenant's requests to one.
type oneBudget struct {
	ratelimit.Limiter
	to tenant.ID
}

func (o oneBudget) Allow(ctx context.Context, _ tenant.ID) (ratelimit.Decision, error) {
	return o.Limiter.Allow(ctx, o.to)
}

// scoped runs h; with the pathTenant flaw, as the tenant of the path.
func (s *service) scoped(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.flaw == pathTenant {
			id, err := tenant.ParseID(r.PathValue("tenant"))
			if err != nil {
				http.NotFound(w, r)
				return
			}
			r = r.WithContext(tenant.NewContext(r.Context(), id))
		}
		if s.flaw == lastChangeHeader {
			if v, ok := s.lastChange.Load().(string); ok {
				w.Header().Set("X-Last-Change", v)
			}
		}
		h(w, r)
	}
}

// view returns the attachments bucket of the tenant of ctx.
func (s *service) view(ctx context.Context) (*gcblob.Bucket, error) {
	if s.flaw == rawBucketView {
		return fileblob.OpenBucket(s.dir, &fileblob.Options{CreateDir: true, Metadata: fileblob.MetadataDontWrite})
	}
	return s.buckets.For(ctx)
}

type requirement struct {
	ReqID string `json:"req_id"`
	Text  string `json:"text"`
}

// create writes a requirement, its attachment and its audit entry, and
// publishes the change: what the POST route and Plant do.
func (s *service) create(ctx context.Context, req requirement) error {
	insert, args := `INSERT INTO requirements (req_id, text) VALUES ($1, $2)`, []any{req.ReqID, req.Text}
	if s.flaw == sqlText {
		insert, args = fmt.Sprintf(`INSERT INTO requirements (req_id, text) VALUES ('%s', '%s')`, req.ReqID, req.Text), nil
	}
	if _, err := s.db.Exec(ctx, insert, args...); err != nil {
		return err
	}
	v, err := s.view(ctx)
	if err != nil {
		return err
	}
	defer v.Close()
	if err := v.WriteAll(ctx, attachment(req.ReqID), []byte("attachment of "+req.Text), nil); err != nil {
		return err
	}
	return s.changed(ctx, "requirement.create", req)
}

func attachment(reqID string) string { return reqID + ".txt" }

// changed audits and publishes a change.
func (s *service) changed(ctx context.Context, action string, req requirement) error {
	p, _ := authz.FromContext(ctx)
	actor := "tenanttest-plant"
	if p != nil {
		actor = p.Subject()
	}
	if _, err := s.log.Append(ctx, audit.Event{Actor: actor, Action: action, Resource: req.ReqID, Outcome: audit.OutcomeSuccess,
		Details: map[string]string{"text": req.Text}}); err != nil {
		return err
	}
	s.lastChange.Store(req.Text)
	if s.flaw == broadcastFeed {
		b, _ := json.Marshal(map[string]any{"op": "message", "room": "changes", "data": req})
		s.mu.Lock()
		defer s.mu.Unlock()
		for c := range s.conns {
			_ = c.Write(ctx, websocket.MessageText, b)
		}
		return nil
	}
	room, err := ws.NewRoom(ctx, "changes")
	if err != nil {
		return err
	}
	_, err = s.hub.Publish(ctx, room, req)
	return err
}

// plant is Harness.Plant: a requirement whose text is the canary.
func (s *service) plant(ctx context.Context, tn tenanttest.Tenant, canary string) (tenanttest.Planted, error) {
	ctx = tenant.NewContext(ctx, tn.ID)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	req := requirement{ReqID: "REQ-" + strings.ToUpper(hex.EncodeToString(b)), Text: canary}
	if err := s.create(ctx, req); err != nil {
		return tenanttest.Planted{}, err
	}
	return tenanttest.Planted{
		Values:  map[string]string{"req": req.ReqID, "file": attachment(req.ReqID)},
		Objects: []string{attachment(req.ReqID)},
	}, nil
}

func (s *service) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, pgx.ErrNoRows), gcerrors.Code(err) == gcerrors.NotFound:
		http.Error(w, "not found", http.StatusNotFound)
	case errors.Is(err, blob.ErrInvalidKey):
		http.Error(w, "bad name", http.StatusBadRequest)
	default:
		http.Error(w, "internal error", http.StatusInternalServerError)
	}
}

func (s *service) list(w http.ResponseWriter, r *http.Request) {
	rows, err := s.db.Query(r.Context(), `SELECT req_id, text FROM requirements ORDER BY req_id`)
	if err != nil {
		s.fail(w, err)
		return
	}
	reqs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[requirement])
	if err != nil {
		s.fail(w, err)
		return
	}
	_ = json.NewEncoder(w).Encode(reqs)
}

func (s *service) get(w http.ResponseWriter, r *http.Request) {
	var req requirement
	if err := s.db.QueryRow(r.Context(), `SELECT req_id, text FROM requirements WHERE req_id = $1`, r.PathValue("req")).Scan(&req.ReqID, &req.Text); err != nil {
		s.fail(w, err)
		return
	}
	_ = json.NewEncoder(w).Encode(req)
}

func (s *service) post(w http.ResponseWriter, r *http.Request) {
	var req requirement
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.ReqID == "" {
		http.Error(w, "bad requirement", http.StatusBadRequest)
		return
	}
	if err := s.create(r.Context(), req); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

func (s *service) put(w http.ResponseWriter, r *http.Request) {
	req := requirement{ReqID: r.PathValue("req")}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "bad requirement", http.StatusBadRequest)
		return
	}
	tag, err := s.db.Exec(r.Context(), `UPDATE requirements SET text = $2 WHERE req_id = $1`, r.PathValue("req"), req.Text)
	if err == nil && tag.RowsAffected() == 0 {
		err = pgx.ErrNoRows
	}
	if err == nil {
		err = s.changed(r.Context(), "requirement.update", req)
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *service) delete(w http.ResponseWriter, r *http.Request) {
	tag, err := s.db.Exec(r.Context(), `DELETE FROM requirements WHERE req_id = $1`, r.PathValue("req"))
	if err == nil && tag.RowsAffected() == 0 {
		err = pgx.ErrNoRows
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *service) file(w http.ResponseWriter, r *http.Request) {
	v, err := s.view(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	defer v.Close()
	rd, err := v.NewReader(r.Context(), r.PathValue("file"), nil)
	if err != nil {
		s.fail(w, err)
		return
	}
	defer rd.Close()
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.Copy(w, rd)
}

// feed is the broadcastFeed flaw's WebSocket endpoint: it confirms every
// join and sends every change of every tenant to every connection.
func (s *service) feed(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	s.mu.Lock()
	s.conns[c] = true
	s.mu.Unlock()
	defer func() { s.mu.Lock(); delete(s.conns, c); s.mu.Unlock() }()
	for {
		if _, _, err := c.Read(r.Context()); err != nil {
			return
		}
		s.mu.Lock()
		err := c.Write(r.Context(), websocket.MessageText, []byte(`{"op":"joined","room":"changes"}`))
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// harness is the suite's Harness of s.
func (s *service) harness() *tenanttest.Harness {
	jsonBody := func(v any) (string, []byte) {
		b, _ := json.Marshal(v)
		return "application/json", b
	}
	h := &tenanttest.Harness{
		Tenants: s.tenants,
		Handler: s.handler,
		Plant:   s.plant,
		Routes: []tenanttest.Route{
			{Method: http.MethodGet, Path: "/t/{tenant}/requirements/{req}", Role: authz.RoleViewer, Reads: true},
			{Method: http.MethodGet, Path: "/t/{tenant}/requirements", Role: authz.RoleViewer, Reads: true},
			{Method: http.MethodGet, Path: "/t/{tenant}/files/{file}", Role: authz.RoleViewer, Reads: true},
			{Method: http.MethodPost, Path: "/t/{tenant}/requirements", Role: authz.RoleEditor, Body: func(p tenanttest.Planted) (string, []byte) {
				return jsonBody(requirement{ReqID: p.Values["req"] + "-COPY", Text: "a copy made by the suite"})
			}},
			{Method: http.MethodPut, Path: "/t/{tenant}/requirements/{req}", Role: authz.RoleEditor, Body: func(tenanttest.Planted) (string, []byte) {
				return jsonBody(requirement{Text: "changed by the suite"})
			}},
			{Method: http.MethodDelete, Path: "/t/{tenant}/requirements/{req}", Role: authz.RoleEditor},
		},
		WebSocket: &tenanttest.WebSocket{
			Path: "/t/{tenant}/ws",
			Join: []string{`{"op":"join","room":"changes"}`},
			Joined: func(_ int, msg []byte) bool {
				return strings.Contains(string(msg), `"op":"joined"`)
			},
		},
		DB:      s.db,
		Tables:  []string{requirements.Name},
		Buckets: s.buckets,
		Raw:     s.raw,
		Keys:    s.km,
		Audit:   s.log,
		Quota: &tenanttest.Quota{
			Route:    tenanttest.Route{Method: http.MethodGet, Path: "/t/{tenant}/requirements/{req}", Role: authz.RoleViewer, Reads: true},
			Requests: quotaRequests,
		},
		Strict:  true,
		Timeout: time.Minute,
	}
	if s.flaw == rawBucketView {
		h.BucketView = s.view
	}
	return h
}
