package authz_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// loginSecret is the login secret of the test store.
var loginSecret = store.LoginSecret{Version: 1, Key: []byte("tenancy authz test login secret, 32 bytes or more")}

// connLimit is each test tenant's connection quota.
const connLimit = 2

var (
	platformOnce sync.Once
	platformURL  string
	tenantSeq    atomic.Int64
)

// service is an RTMX-like items API on a real store.DB, behind the
// middleware, with two tenants.
type service struct {
	admin   *store.Admin
	db      *store.DB
	a, b    tenant.ID
	handler http.Handler
	hold    chan struct{} // /hold handlers wait on it, holding a connection
	held    chan struct{} // each /hold handler sends once it holds one
}

func newService(t *testing.T) *service {
	t.Helper()
	d := pgtest.DB(t)
	platformOnce.Do(func() { platformURL = d.CreateRole(t, "platform", "") })
	pcfg, err := pgx.ParseConfig(platformURL)
	require.NoError(t, err)

	acfg, err := store.ParseAdminConfig(d.AdminURL())
	require.NoError(t, err)
	acfg.RolePrefix, acfg.PlatformRole = d.Prefix(), pcfg.User
	acfg.LoginSecrets = []store.LoginSecret{loginSecret}
	acfg.ConnLimit = connLimit
	acfg.Tables = []store.Table{{Name: "items", Columns: "id text NOT NULL, body text NOT NULL, PRIMARY KEY (tenant_id, id)"}}
	s := &service{hold: make(chan struct{}), held: make(chan struct{}, 16)}
	s.admin, err = store.OpenAdmin(t.Context(), acfg)
	require.NoError(t, err)
	t.Cleanup(s.admin.Close)
	cfg, err := store.ParseConfig(d.URL(pcfg.User, pcfg.Password), loginSecret)
	require.NoError(t, err)
	cfg.MaxConns = 16
	s.db, err = store.Open(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(s.db.Close)
	n := tenantSeq.Add(1)
	s.a, s.b = tenant.MustParseID(fmt.Sprintf("alpha%d", n)), tenant.MustParseID(fmt.Sprintf("bravo%d", n))
	for _, id := range []tenant.ID{s.a, s.b} {
		require.NoError(t, s.admin.CreateTenant(t.Context(), tenant.Info{ID: id, Name: "Tenant " + id.String(), Tier: tenant.TierStandard}))
	}

	testKeys(t)
	vc := verifierConfig()
	vc.JWKS = jwksJSON(t, edSigner())
	mcfg := authz.DefaultConfig()
	mcfg.Verifier, mcfg.Directory = newVerifier(t, vc), authz.StoreDirectory(s.db)
	mcfg.DirectoryTTL = 200 * time.Millisecond
	mcfg.Resolvers = []authz.Resolver{authz.PathValue("tenant")}
	mw, err := authz.NewMiddleware(mcfg)
	require.NoError(t, err)
	editor := func(h http.HandlerFunc) http.Handler { return mw.Handler(authz.Require(authz.RoleEditor)(h)) }
	viewer := func(h http.HandlerFunc) http.Handler { return mw.Handler(authz.Require(authz.RoleViewer)(h)) }
	mux := http.NewServeMux()
	mux.Handle("GET /t/{tenant}/items", viewer(s.list))
	mux.Handle("GET /t/{tenant}/items/{id}", viewer(s.get))
	mux.Handle("POST /t/{tenant}/items", editor(s.create))
	mux.Handle("DELETE /t/{tenant}/items/{id}", editor(s.delete))
	mux.Handle("POST /t/{tenant}/hold", viewer(s.holdConn))
	s.handler = mux
	return s
}

type item struct {
	ID   string `json:"id"`
	Body string `json:"body"`
}

func fail(w http.ResponseWriter, err error) {
	if errors.Is(err, tenant.ErrNoTenant) {
		http.Error(w, "no tenant", http.StatusInternalServerError)
		return
	}
	http.Error(w, "internal error", http.StatusInternalServerError)
}

func (s *service) list(w http.ResponseWriter, r *http.Request) {
	rows, err := s.db.Query(r.Context(), `SELECT id, body FROM items ORDER BY id`)
	if err != nil {
		fail(w, err)
		return
	}
	items, err := pgx.CollectRows(rows, pgx.RowToStructByPos[item])
	if err != nil {
		fail(w, err)
		return
	}
	_ = json.NewEncoder(w).Encode(items)
}

func (s *service) get(w http.ResponseWriter, r *http.Request) {
	var it item
	err := s.db.QueryRow(r.Context(), `SELECT id, body FROM items WHERE id = $1`, r.PathValue("id")).Scan(&it.ID, &it.Body)
	if errors.Is(err, pgx.ErrNoRows) {
		http.NotFound(w, r)
		return
	}
	if err != nil {
		fail(w, err)
		return
	}
	_ = json.NewEncoder(w).Encode(it)
}

func (s *service) create(w http.ResponseWriter, r *http.Request) {
	var it item
	if err := json.NewDecoder(r.Body).Decode(&it); err != nil {
		http.Error(w, "bad item", http.StatusBadRequest)
		return
	}
	if _, err := s.db.Exec(r.Context(), `INSERT INTO items (id, body) VALUES ($1, $2)`, it.ID, it.Body); err != nil {
		fail(w, err)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

func (s *service) delete(w http.ResponseWriter, r *http.Request) {
	tag, err := s.db.Exec(r.Context(), `DELETE FROM items WHERE id = $1`, r.PathValue("id"))
	if err != nil {
		fail(w, err)
		return
	}
	if tag.RowsAffected() == 0 {
		http.NotFound(w, r)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// holdConn holds one of the tenant's connections until s.hold closes.
func (s *service) holdConn(w http.ResponseWriter, r *http.Request) {
	err := s.db.Tx(r.Context(), func(tx *store.Tx) error {
		if _, err := tx.Exec(r.Context(), `SELECT 1`); err != nil {
			return err
		}
		s.held <- struct{}{}
		<-s.hold
		return nil
	})
	if err != nil {
		fail(w, err)
	}
}

func (s *service) token(t testing.TB, id tenant.ID, roles ...string) string {
	t.Helper()
	c := claims(id.String())
	c["roles"] = roles
	return mint(t, edSigner(), c)
}

func (s *service) call(method, target, token, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return do(s.handler, r)
}

// rows returns tenant id's items as the database holds them.
func (s *service) rows(t testing.TB, id tenant.ID) []item {
	t.Helper()
	rows, err := s.db.Query(tenant.NewContext(t.Context(), id), `SELECT id, body FROM items ORDER BY id`)
	require.NoError(t, err)
	items, err := pgx.CollectRows(rows, pgx.RowToStructByPos[item])
	require.NoError(t, err)
	return items
}

// Seed verification test 1 / test case 2 of REQ-DEPLOY-004: an API
// request with tenant A's token cannot read, list or change tenant B's
// data.
// rtmx:req REQ-TEN-004 REQ-TEN-008 REQ-TEN-013
func TestTenantACannotReachTenantBThroughTheAPI(t *testing.T) {
	s := newService(t)
	canary := "canary-of-bravo-" + s.b.String()
	bravo := s.token(t, s.b, authz.RoleEditor)
	require.Equal(t, http.StatusCreated, s.call("POST", "/t/"+s.b.String()+"/items", bravo, `{"id":"b-1","body":"`+canary+`"}`).Code)
	require.Equal(t, http.StatusCreated, s.call("POST", "/t/"+s.b.String()+"/items", bravo, `{"id":"shared-id","body":"`+canary+`-2"}`).Code)
	before := s.rows(t, s.b)
	require.Len(t, before, 2)

	alpha := s.token(t, s.a, authz.RoleOwner)
	bPath := "/t/" + s.b.String()
	for _, c := range []struct{ method, target, body string }{
		{"GET", bPath + "/items", ""},
		{"GET", bPath + "/items/b-1", ""},
		{"GET", bPath + "/items/shared-id", ""},
		{"POST", bPath + "/items", `{"id":"a-was-here","body":"x"}`},
		{"POST", bPath + "/items", `{"id":"b-1","body":"overwrite"}`},
		{"DELETE", bPath + "/items/b-1", ""},
		{"DELETE", bPath + "/items/shared-id", ""},
		{"GET", "/t/" + strings.ToUpper(s.b.String()) + "/items", ""},
		{"GET", "/t/" + s.b.String() + "%2F/items", ""},
	} {
		w := s.call(c.method, c.target, alpha, c.body)
		requireProblem(t, w, http.StatusForbidden, alpha, canary, s.b.String(), strings.ToUpper(s.b.String()))
	}
	require.Equal(t, before, s.rows(t, s.b), "B's rows are unchanged")

	// A on its own paths works, and sees its own rows only.
	aPath := "/t/" + s.a.String()
	require.Equal(t, http.StatusCreated, s.call("POST", aPath+"/items", alpha, `{"id":"a-1","body":"alpha's"}`).Code)
	require.Equal(t, http.StatusCreated, s.call("POST", aPath+"/items", alpha, `{"id":"shared-id","body":"alpha's too"}`).Code)
	w := s.call("GET", aPath+"/items", alpha, "")
	require.Equal(t, 200, w.Code)
	require.JSONEq(t, `[{"id":"a-1","body":"alpha's"},{"id":"shared-id","body":"alpha's too"}]`, w.Body.String())
	w = s.call("GET", aPath+"/items/shared-id", alpha, "")
	require.Equal(t, 200, w.Code)
	require.NotContains(t, w.Body.String(), canary)
	require.Equal(t, 404, s.call("GET", aPath+"/items/b-1", alpha, "").Code, "B's row is not A's")
	require.Equal(t, 404, s.call("DELETE", aPath+"/items/b-1", alpha, "").Code)
	require.Equal(t, http.StatusNoContent, s.call("DELETE", aPath+"/items/shared-id", alpha, "").Code)
	require.Equal(t, before, s.rows(t, s.b), "deleting A's shared-id left B's")

	// A viewer of A reads but does not write.
	viewer := s.token(t, s.a, authz.RoleViewer)
	require.Equal(t, 200, s.call("GET", aPath+"/items", viewer, "").Code)
	requireProblem(t, s.call("POST", aPath+"/items", viewer, `{"id":"v","body":"x"}`), http.StatusForbidden, viewer)
	require.Len(t, s.rows(t, s.a), 1)
}

// A suspended tenant's tokens stop working within the directory's TTL.
func TestSuspendedTenantRefusedWithinTTL(t *testing.T) {
	s := newService(t)
	alpha := s.token(t, s.a, authz.RoleViewer)
	aItems := "/t/" + s.a.String() + "/items"
	require.Equal(t, 200, s.call("GET", aItems, alpha, "").Code)
	require.NoError(t, s.admin.SetState(t.Context(), s.a, tenant.StateSuspended))
	time.Sleep(250 * time.Millisecond) // DirectoryTTL is 200 ms
	p := requireProblem(t, s.call("GET", aItems, alpha, ""), http.StatusForbidden, alpha)
	require.Equal(t, "tenant_not_active", p["code"])
	bravo := s.token(t, s.b, authz.RoleViewer)
	require.Equal(t, 200, s.call("GET", "/t/"+s.b.String()+"/items", bravo, "").Code, "B is not affected")
	require.NoError(t, s.admin.SetState(t.Context(), s.a, tenant.StateActive))
	require.Eventually(t, func() bool { return s.call("GET", aItems, alpha, "").Code == 200 }, 5*time.Second, 20*time.Millisecond)
}

// Test case 7 of REQ-DEPLOY-004 at the HTTP level: a tenant whose
// handlers hold all its connections does not starve another tenant.
func TestTenantHoldingItsConnectionsDoesNotStarveAnother(t *testing.T) {
	s := newService(t)
	alpha, bravo := s.token(t, s.a, authz.RoleViewer), s.token(t, s.b, authz.RoleViewer)
	holdPath := "/t/" + s.a.String() + "/hold"
	var wg sync.WaitGroup
	codes := make(chan int, connLimit)
	for range connLimit {
		wg.Go(func() { codes <- s.call("POST", holdPath, alpha, "").Code })
	}
	for range connLimit {
		select {
		case <-s.held:
		case <-time.After(10 * time.Second):
			t.Fatal("A's handlers did not get their connections")
		}
	}
	// A is at its quota: one more request of A waits for a connection
	// and gives up with its context.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	r := httptest.NewRequestWithContext(ctx, "GET", "/t/"+s.a.String()+"/items", nil)
	r.Header.Set("Authorization", "Bearer "+alpha)
	require.Equal(t, http.StatusInternalServerError, do(s.handler, r).Code)
	cancel()
	// B is served meanwhile.
	for range 5 {
		w := s.call("GET", "/t/"+s.b.String()+"/items", bravo, "")
		require.Equal(t, 200, w.Code, w.Body.String())
	}
	close(s.hold)
	wg.Wait()
	close(codes)
	for c := range codes {
		require.Equal(t, 200, c)
	}
	require.Equal(t, 200, s.call("GET", "/t/"+s.a.String()+"/items", alpha, "").Code)
}

// A handler mounted without the middleware has no tenant: store refuses
// its queries with tenant.ErrNoTenant, whatever the token says.
func TestHandlerWithoutMiddlewareHasNoTenant(t *testing.T) {
	s := newService(t)
	bravo := s.token(t, s.b, authz.RoleEditor)
	require.Equal(t, http.StatusCreated, s.call("POST", "/t/"+s.b.String()+"/items", bravo, `{"id":"b-1","body":"secret"}`).Code)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /t/{tenant}/items", s.list)
	r := request("/t/"+s.b.String()+"/items", bravo)
	w := do(mux, r)
	require.Equal(t, http.StatusInternalServerError, w.Code)
	require.Equal(t, "no tenant\n", w.Body.String())
	_, err := s.db.Query(r.Context(), `SELECT id FROM items`)
	require.ErrorIs(t, err, tenant.ErrNoTenant)
}

// store's Admin satisfies Directory as it is; StoreDirectory adapts a DB.
func TestStoreDirectories(t *testing.T) {
	s := newService(t)
	ghost := tenant.MustParseID("ghost" + s.a.String())
	for _, dir := range []authz.Directory{s.admin, authz.StoreDirectory(s.db)} {
		info, err := dir.Tenant(t.Context(), s.a)
		require.NoError(t, err)
		require.Equal(t, tenant.StateActive, info.State)
		require.Equal(t, s.a, info.ID)
		_, err = dir.Tenant(t.Context(), ghost)
		require.ErrorIs(t, err, store.ErrUnknownTenant)
	}
}
