package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/audit"
	"github.com/rtmx-ai/tenancy/authz"
	"github.com/rtmx-ai/tenancy/authz/ratelimit"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testOptions returns names under pgtest's prefix, never those of `go
// run`: whatever a test leaves behind pgtest drops.
func testOptions(d *pgtest.Database, tag string) options {
	return options{
		AdminURL:   d.AdminURL(),
		Database:   d.Prefix() + "rtmxapi_" + tag,
		RolePrefix: d.Prefix() + tag + "_",
		Tenants:    []string{"acme", "globex"},
		DirPattern: "rtmxapi-test-*",
	}
}

func testAppConfig() appConfig {
	ac := defaultAppConfig()
	ac.Logger = slog.New(slog.DiscardHandler)
	ac.MaxAttachment = 1 << 20
	return ac
}

// fixture is the service on a scratch database, served on loopback.
type fixture struct {
	env  *environment
	app  *app
	srv  *httptest.Server
	acme tenant.ID
	glob tenant.ID
}

func newFixture(t *testing.T, tag string, edit func(*appConfig)) *fixture {
	t.Helper()
	d := pgtest.DB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	ac := testAppConfig()
	if edit != nil {
		edit(&ac)
	}
	env, err := setup(ctx, testOptions(d, tag), ac.Logger)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, env.close(context.Background())) })
	a, err := newApp(ctx, env, ac)
	require.NoError(t, err)
	srv := httptest.NewServer(a.handler)
	t.Cleanup(func() { a.close(); srv.Close() })
	return &fixture{env: env, app: a, srv: srv, acme: env.tenants[0], glob: env.tenants[1]}
}

// as returns a client of tenant id holding role.
func (f *fixture) as(t *testing.T, id tenant.ID, role string) client {
	t.Helper()
	tok, err := f.app.token(id, role)
	require.NoError(t, err)
	return client{base: f.srv.URL, tenant: id, token: tok}
}

// must calls and requires status want.
func must(t *testing.T, c client, want int, method, path, ct string, body []byte, header ...string) answer {
	t.Helper()
	a, err := c.expect(t.Context(), want, method, path, ct, body, header...)
	require.NoError(t, err)
	return a
}

// rows reads, as tenant id through the request path, req_id and version of
// every requirement.
func (f *fixture) rows(t *testing.T, id tenant.ID) map[string]int64 {
	t.Helper()
	ctx := tenant.NewContext(t.Context(), id)
	rows, err := f.env.db.Query(ctx, `SELECT req_id, version FROM requirements`)
	require.NoError(t, err)
	out := map[string]int64{}
	var rid string
	var v int64
	_, err = pgx.ForEachRow(rows, []any{&rid, &v}, func() error { out[rid] = v; return nil })
	require.NoError(t, err)
	return out
}

// auditActions returns the action and resource of each entry of tenant
// id's audit log, after verifying it.
func (f *fixture) auditActions(t *testing.T, id tenant.ID) []string {
	t.Helper()
	ctx := tenant.NewContext(t.Context(), id)
	_, err := f.env.audit.Verify(ctx)
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = f.env.audit.Export(ctx, &buf)
	require.NoError(t, err)
	var out []string
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var e struct{ Type, Action, Resource string }
		require.NoError(t, json.Unmarshal([]byte(line), &e))
		if e.Type == "entry" {
			out = append(out, e.Action+" "+e.Resource)
		}
	}
	return out
}

const reqJSON = `{"req_id":"REQ-API-001","category":"API","requirement_text":"The API lists requirements","status":"MISSING"}`

// TestCheckPassesAndLeavesNothing runs what `go run ./examples/rtmxapi
// -check` runs: setup, the service on a loopback port, every kind of
// route called and checked as a client, and the cleanup, after which no
// database or role of the run is left.
func TestCheckPassesAndLeavesNothing(t *testing.T) {
	d := pgtest.DB(t)
	o := testOptions(d, "ck")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, &out, runConfig{Options: o, Addr: "127.0.0.1:0", Check: true, appConfig: testAppConfig()})
	require.NoError(t, err, out.String())
	s := out.String()
	assert.Contains(t, s, "check passed")
	assert.Contains(t, s, "export ACME_EDITOR=ey")
	assert.Contains(t, s, "export GLOBEX_VIEWER=ey")
	assert.Contains(t, s, "cleaned up: database "+o.Database)

	conn, err := pgx.Connect(t.Context(), d.AdminURL())
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var dbs, roles int
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM pg_database WHERE datname = $1),
		(SELECT count(*) FROM pg_roles WHERE starts_with(rolname, $2))`, o.Database, o.RolePrefix).Scan(&dbs, &roles))
	assert.Zero(t, dbs, "database left")
	assert.Zero(t, roles, "roles left")
}

// TestConcurrentUpdatesOfOneVersionLetOneThrough sends eight updates of
// version 1 at once: exactly one is taken, the others get 412, and the
// requirement ends at version 2 with the one taken.
func TestConcurrentUpdatesOfOneVersionLetOneThrough(t *testing.T) {
	f := newFixture(t, "cu", nil)
	ed := f.as(t, f.acme, authz.RoleEditor)
	must(t, ed, http.StatusCreated, "POST", "/requirements", "application/json", []byte(reqJSON))
	const n = 8
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := strings.Replace(reqJSON, "The API lists requirements", fmt.Sprintf("writer %d", i), 1)
			a, err := ed.call(t.Context(), "PUT", "/requirements/REQ-API-001", "application/json", []byte(body), "If-Match", `"1"`)
			assert.NoError(t, err)
			statuses[i] = a.status
		})
	}
	wg.Wait()
	winner := -1
	for i, s := range statuses {
		switch s {
		case http.StatusOK:
			assert.Equal(t, -1, winner, "two updates of version 1 were taken: %v", statuses)
			winner = i
		case http.StatusPreconditionFailed:
		default:
			t.Errorf("update %d: status %d", i, s)
		}
	}
	require.NotEqual(t, -1, winner, "no update taken: %v", statuses)
	a := must(t, ed, http.StatusOK, "GET", "/requirements/REQ-API-001", "", nil)
	assert.Equal(t, `"2"`, a.header.Get("ETag"))
	assert.Contains(t, string(a.body), fmt.Sprintf(`"requirement_text":"writer %d"`, winner))

	// Without a version the update is refused, naming it.
	a = must(t, ed, http.StatusPreconditionRequired, "PUT", "/requirements/REQ-API-001", "application/json", []byte(reqJSON))
	assert.Contains(t, string(a.body), `"field":"version"`)
	// With the body's version, as with If-Match.
	must(t, ed, http.StatusOK, "PUT", "/requirements/REQ-API-001", "application/json", []byte(strings.Replace(reqJSON, "{", `{"version":2,`, 1)))
}

// TestRefusedImportChangesNothing imports a file whose third row is bad
// after a valid update and a valid new row: the import is refused naming
// row 3 and its column, and no row, version or audit entry changed.
func TestRefusedImportChangesNothing(t *testing.T) {
	f := newFixture(t, "ri", nil)
	ed := f.as(t, f.acme, authz.RoleEditor)
	a := must(t, ed, http.StatusOK, "POST", "/import", "text/csv", sampleCSV)
	assert.JSONEq(t, `{"rows":3,"created":["REQ-SW-001","REQ-SW-002","REQ-UI-010"],"updated":[],"unchanged":0}`, string(a.body))
	before, audited := f.rows(t, f.acme), f.auditActions(t, f.acme)

	bad := "req_id,category,requirement_text,status,phase\n" +
		"REQ-SW-001,SOFTWARE,Changed by the refused import,COMPLETE,1\n" +
		"REQ-NEW-1,NEW,Made by the refused import,MISSING,1\n" +
		"REQ-NEW-2,NEW,Bad phase,MISSING,first\n"
	a = must(t, ed, http.StatusUnprocessableEntity, "POST", "/import", "text/csv", []byte(bad))
	assert.Contains(t, string(a.body), "import: row 3 (line 4), column phase: must be an integer")
	assert.Contains(t, string(a.body), `"row":3`)
	assert.Contains(t, string(a.body), `"column":"phase"`)
	assert.Equal(t, before, f.rows(t, f.acme), "a refused import changed rows")
	assert.Equal(t, audited, f.auditActions(t, f.acme), "a refused import was audited as a change")

	// The same file with its third row fixed changes all three rows.
	fixed := strings.Replace(bad, "first", "2", 1)
	a = must(t, ed, http.StatusOK, "POST", "/import", "text/csv", []byte(fixed))
	assert.JSONEq(t, `{"rows":3,"created":["REQ-NEW-1","REQ-NEW-2"],"updated":["REQ-SW-001"],"unchanged":0}`, string(a.body))
	assert.Equal(t, int64(2), f.rows(t, f.acme)["REQ-SW-001"])

	// Not CSV: 415; nothing read.
	must(t, ed, http.StatusUnsupportedMediaType, "POST", "/import", "application/json", []byte(bad))
}

// TestImportLeavesIdenticalRowsAlone imports the same file twice: the
// second import changes nothing (no version raised, one audit entry for
// the import only); a file changing one row raises that row's version.
func TestImportLeavesIdenticalRowsAlone(t *testing.T) {
	f := newFixture(t, "il", nil)
	ed := f.as(t, f.acme, authz.RoleEditor)
	must(t, ed, http.StatusOK, "POST", "/import", "text/csv", sampleCSV)
	a := must(t, ed, http.StatusOK, "POST", "/import", "text/csv", sampleCSV)
	assert.JSONEq(t, `{"rows":3,"created":[],"updated":[],"unchanged":3}`, string(a.body))
	assert.Equal(t, map[string]int64{"REQ-SW-001": 1, "REQ-SW-002": 1, "REQ-UI-010": 1}, f.rows(t, f.acme))
	changed := bytes.Replace(sampleCSV, []byte("Traceability matrix dashboard"), []byte("Traceability matrix"), 1)
	a = must(t, ed, http.StatusOK, "POST", "/import", "text/csv", changed)
	assert.JSONEq(t, `{"rows":3,"created":[],"updated":["REQ-UI-010"],"unchanged":2}`, string(a.body))
	assert.Equal(t, map[string]int64{"REQ-SW-001": 1, "REQ-SW-002": 1, "REQ-UI-010": 2}, f.rows(t, f.acme))
	// The export is the import, in RTMX's form.
	a = must(t, ed, http.StatusOK, "GET", "/export", "", nil)
	assert.Equal(t, string(changed), string(a.body))
}

// TestEveryChangeHasAnAuditEntry makes one change of each kind and checks
// the tenant's audit log: one entry per change, in order, chained and
// verified, and none in the other tenant's log.
func TestEveryChangeHasAnAuditEntry(t *testing.T) {
	f := newFixture(t, "au", nil)
	ed := f.as(t, f.acme, authz.RoleEditor)
	must(t, ed, http.StatusCreated, "POST", "/requirements", "application/json", []byte(reqJSON))
	must(t, ed, http.StatusOK, "PUT", "/requirements/REQ-API-001", "application/json", []byte(strings.Replace(reqJSON, "MISSING", "PARTIAL", 1)), "If-Match", `"1"`)
	must(t, ed, http.StatusCreated, "PUT", "/requirements/REQ-API-001/attachments/plan.txt", "text/plain", []byte("plan"))
	must(t, ed, http.StatusNoContent, "DELETE", "/requirements/REQ-API-001/attachments/plan.txt", "", nil)
	must(t, ed, http.StatusOK, "POST", "/import", "text/csv", sampleCSV)
	must(t, ed, http.StatusNoContent, "DELETE", "/requirements/REQ-API-001", "", nil)
	// Refused and read-only requests are not changes.
	must(t, ed, http.StatusNotFound, "DELETE", "/requirements/REQ-API-001", "", nil)
	must(t, ed, http.StatusOK, "GET", "/requirements", "", nil)

	assert.Equal(t, []string{
		"requirement.create REQ-API-001",
		"requirement.update REQ-API-001",
		"attachment.upload requirements/REQ-API-001/plan.txt",
		"attachment.delete requirements/REQ-API-001/plan.txt",
		"requirement.create REQ-SW-001",
		"requirement.create REQ-SW-002",
		"requirement.create REQ-UI-010",
		"requirements.import import",
		"requirement.delete REQ-API-001",
	}, f.auditActions(t, f.acme))
	assert.Empty(t, f.auditActions(t, f.glob))

	// The update's entry names the field changed and its new value, and
	// who changed it.
	var buf bytes.Buffer
	_, err := f.env.audit.Export(tenant.NewContext(t.Context(), f.acme), &buf)
	require.NoError(t, err)
	assert.Contains(t, buf.String(), `"actor":"editor@acme","action":"requirement.update","resource":"REQ-API-001","outcome":"success","details":{"fields":{"status":"PARTIAL"},"version":2}`)
}

// TestEveryRouteRefusesAnotherTenantsToken calls every route of the
// service on acme's path with globex's owner token: each answers 403 and
// nothing of acme's changes.
func TestEveryRouteRefusesAnotherTenantsToken(t *testing.T) {
	f := newFixture(t, "xt", nil)
	ed := f.as(t, f.acme, authz.RoleEditor)
	must(t, ed, http.StatusCreated, "POST", "/requirements", "application/json", []byte(reqJSON))
	must(t, ed, http.StatusCreated, "PUT", "/requirements/REQ-API-001/attachments/plan.txt", "text/plain", []byte("plan"))
	before := f.rows(t, f.acme)
	tok, err := f.app.token(f.glob, authz.RoleOwner)
	require.NoError(t, err)
	cross := client{base: f.srv.URL, tenant: f.acme, token: tok}
	for _, rt := range append(f.app.svc.routes(), route{pattern: "GET /t/{tenant}/ws"}) {
		method, path, _ := strings.Cut(rt.pattern, " ")
		path = strings.NewReplacer("/t/{tenant}", "", "{req}", "REQ-API-001", "{name}", "plan.txt").Replace(path)
		a, err := cross.call(t.Context(), method, path, "application/json", []byte(reqJSON))
		require.NoError(t, err)
		assert.Equal(t, http.StatusForbidden, a.status, "%s: %s", rt.pattern, a)
		assert.NotContains(t, string(a.body), "REQ-API-001", rt.pattern)
	}
	assert.Equal(t, before, f.rows(t, f.acme))
	must(t, ed, http.StatusOK, "GET", "/requirements/REQ-API-001/attachments/plan.txt", "", nil)
}

// TestRolesGateWrites checks RTMX's roles: a viewer reads but does not
// write, an editor writes but does not read the audit log, an owner does.
func TestRolesGateWrites(t *testing.T) {
	f := newFixture(t, "ro", nil)
	viewer, ed, owner := f.as(t, f.acme, authz.RoleViewer), f.as(t, f.acme, authz.RoleEditor), f.as(t, f.acme, authz.RoleOwner)
	must(t, viewer, http.StatusForbidden, "POST", "/requirements", "application/json", []byte(reqJSON))
	must(t, viewer, http.StatusForbidden, "POST", "/import", "text/csv", sampleCSV)
	must(t, ed, http.StatusCreated, "POST", "/requirements", "application/json", []byte(reqJSON))
	must(t, viewer, http.StatusOK, "GET", "/requirements/REQ-API-001", "", nil)
	must(t, viewer, http.StatusForbidden, "PUT", "/requirements/REQ-API-001/attachments/a.txt", "text/plain", []byte("a"))
	must(t, viewer, http.StatusForbidden, "DELETE", "/requirements/REQ-API-001", "", nil)
	must(t, ed, http.StatusForbidden, "GET", "/audit", "", nil)
	a := must(t, owner, http.StatusOK, "GET", "/audit", "", nil)
	assert.Contains(t, string(a.body), `"action":"requirement.create"`)
	// No token at all: 401.
	anon := client{base: f.srv.URL, tenant: f.acme}
	must(t, anon, http.StatusUnauthorized, "GET", "/requirements", "", nil)
}

// TestRateLimitIsPerTenant drives acme past its burst: it gets 429 with
// Retry-After, and globex is still served.
func TestRateLimitIsPerTenant(t *testing.T) {
	f := newFixture(t, "rl", func(ac *appConfig) { ac.Quota = ratelimit.Quota{Rate: 0.1, Burst: 3, Concurrent: 10} })
	acme, globex := f.as(t, f.acme, authz.RoleViewer), f.as(t, f.glob, authz.RoleViewer)
	for range 3 {
		must(t, acme, http.StatusOK, "GET", "/requirements", "", nil)
	}
	a := must(t, acme, http.StatusTooManyRequests, "GET", "/requirements", "", nil)
	assert.NotEmpty(t, a.header.Get("Retry-After"))
	must(t, globex, http.StatusOK, "GET", "/requirements", "", nil)
}

// TestAttachmentsAreCheckedAndEncrypted checks an attachment's way: the
// requirement must exist, the name is a valid key, the size is bounded,
// the bytes are stored encrypted, and the listing shows it.
func TestAttachmentsAreCheckedAndEncrypted(t *testing.T) {
	f := newFixture(t, "at", nil)
	ed := f.as(t, f.acme, authz.RoleEditor)
	content := []byte("the test plan of acme")
	must(t, ed, http.StatusNotFound, "PUT", "/requirements/REQ-API-001/attachments/plan.txt", "text/plain", content)
	must(t, ed, http.StatusCreated, "POST", "/requirements", "application/json", []byte(reqJSON))
	a := must(t, ed, http.StatusCreated, "PUT", "/requirements/REQ-API-001/attachments/plan.txt", "text/plain", content)
	assert.Contains(t, string(a.body), `"sha256":"`)
	for _, bad := range []string{"%2e%2e", "a%5Cb", "%25%32%65", "trailing.", "a%00b", "%E2%88%95etc"} {
		a := must(t, ed, http.StatusBadRequest, "PUT", "/requirements/REQ-API-001/attachments/"+bad, "text/plain", content)
		assert.Contains(t, string(a.body), `"field":"name"`, bad)
	}
	must(t, ed, http.StatusRequestEntityTooLarge, "PUT", "/requirements/REQ-API-001/attachments/big.bin", "application/octet-stream", make([]byte, f.app.svc.cfg.MaxAttachment+1))
	a = must(t, ed, http.StatusOK, "GET", "/requirements/REQ-API-001/attachments", "", nil)
	assert.Contains(t, string(a.body), `"name":"plan.txt","size":21`)
	assert.NotContains(t, string(a.body), "big.bin", "a refused upload left an object")
	a = must(t, ed, http.StatusOK, "GET", "/requirements/REQ-API-001/attachments/plan.txt", "", nil)
	assert.Equal(t, content, a.body)
	assert.Equal(t, "text/plain", a.header.Get("Content-Type"))
	found, err := findInFiles(f.env.dir, content)
	require.NoError(t, err)
	assert.Empty(t, found, "the attachment is stored in the clear")
	// globex has its own prefix: the same path is not found there.
	gl := f.as(t, f.glob, authz.RoleEditor)
	must(t, gl, http.StatusNotFound, "GET", "/requirements/REQ-API-001/attachments/plan.txt", "", nil)
}

// TestFeedIsPerTenant joins acme's and globex's feeds: a change of acme
// reaches acme's viewer only; globex's first message is its own change.
func TestFeedIsPerTenant(t *testing.T) {
	f := newFixture(t, "fd", nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	av, gv := f.as(t, f.acme, authz.RoleViewer), f.as(t, f.glob, authz.RoleViewer)
	acmeFeed, err := dialFeed(ctx, f.srv.URL+"/t/acme/ws", av.token)
	require.NoError(t, err)
	defer acmeFeed.CloseNow()
	globFeed, err := dialFeed(ctx, f.srv.URL+"/t/globex/ws", gv.token)
	require.NoError(t, err)
	defer globFeed.CloseNow()
	_, err = dialFeed(ctx, f.srv.URL+"/t/acme/ws", gv.token)
	require.ErrorContains(t, err, "403")

	must(t, f.as(t, f.acme, authz.RoleEditor), http.StatusCreated, "POST", "/requirements", "application/json", []byte(reqJSON))
	_, msg, err := acmeFeed.Read(ctx)
	require.NoError(t, err)
	assert.Contains(t, string(msg), `"type":"requirement.created"`)
	assert.Contains(t, string(msg), `"req_id":"REQ-API-001"`)
	must(t, f.as(t, f.glob, authz.RoleEditor), http.StatusCreated, "POST", "/requirements", "application/json", []byte(strings.Replace(reqJSON, "001", "777", 1)))
	_, msg, err = globFeed.Read(ctx)
	require.NoError(t, err)
	assert.Contains(t, string(msg), `"req_id":"REQ-API-777"`, "globex's feed got another message first")
}

// TestCleanLeftoversDropsOnlyDeadRuns makes the names of two runs, one
// whose lock is held (alive, in another database) and one whose is not
// (killed): only the dead one's database, roles and directory are dropped.
func TestCleanLeftoversDropsOnlyDeadRuns(t *testing.T) {
	d := pgtest.DB(t)
	prefix := d.Prefix() + "run_"
	names := func(adminURL, id string) options {
		return options{AdminURL: adminURL, Database: prefix + id, RolePrefix: d.Prefix() + id[:2] + "_", DirPattern: d.Prefix() + id + "-*"}
	}
	alive, dead := "a1b2c3d4", "d5e6f7a8"
	dirs := map[string]string{}
	for _, id := range []string{alive, dead} {
		o := names(d.AdminURL(), id)
		d.Exec(t, `CREATE DATABASE `+o.Database)
		d.Exec(t, `CREATE ROLE `+o.RolePrefix+`x`)
		dir, err := os.MkdirTemp("", o.DirPattern)
		require.NoError(t, err)
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		dirs[id] = dir
	}
	// The live run holds its lock on a connection to another database of
	// the server: it still counts as alive.
	other, err := url.Parse(d.AdminURL())
	require.NoError(t, err)
	other.Path = "/postgres"
	unlock, err := lockRun(t.Context(), other.String(), alive)
	require.NoError(t, err)
	defer unlock()
	dropped, err := cleanLeftovers(t.Context(), d.AdminURL(), prefix, names)
	require.NoError(t, err)
	assert.Equal(t, []string{dead}, dropped)

	conn, err := pgx.Connect(t.Context(), d.AdminURL())
	require.NoError(t, err)
	defer conn.Close(context.Background())
	for id, want := range map[string]int{alive: 1, dead: 0} {
		o := names(d.AdminURL(), id)
		var dbs, roles int
		require.NoError(t, conn.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM pg_database WHERE datname = $1),
			(SELECT count(*) FROM pg_roles WHERE rolname = $2)`, o.Database, o.RolePrefix+"x").Scan(&dbs, &roles))
		assert.Equal(t, want, dbs, "database of run %s", id)
		assert.Equal(t, want, roles, "role of run %s", id)
		_, err := os.Stat(dirs[id])
		assert.Equal(t, want == 1, err == nil, "directory of run %s: %v", id, err)
	}
	unlock()
	dropped, err = cleanLeftovers(t.Context(), d.AdminURL(), prefix, names)
	require.NoError(t, err)
	assert.Equal(t, []string{alive}, dropped, "a run whose lock is released is dead")
}

// TestUpsertIsOneTransaction gives the import's writer a row that
// PostgreSQL refuses (a status its CHECK constraint refuses, which
// validation would have caught) after valid ones: nothing of the import
// is written.
func TestUpsertIsOneTransaction(t *testing.T) {
	f := newFixture(t, "ut", nil)
	ctx := tenant.NewContext(t.Context(), f.acme)
	reqs, err := ParseCSV(bytes.NewReader(sampleCSV))
	require.NoError(t, err)
	bad := reqs[2]
	bad.ReqID, bad.Status = "REQ-BAD-1", "DONE"
	_, err = f.app.svc.repo.upsert(ctx, append(reqs, bad))
	require.ErrorContains(t, err, "row 4 (REQ-BAD-1)")
	assert.Empty(t, f.rows(t, f.acme), "a refused import wrote rows")
	done, err := f.app.svc.repo.upsert(ctx, reqs)
	require.NoError(t, err)
	assert.Len(t, done, 3)
}

// TestChangeWhoseAuditEntryFailsIsAnswered500 makes the audit log refuse
// appends: a create is made, but answered 500, and not published to the
// feed as done.
func TestChangeWhoseAuditEntryFailsIsAnswered500(t *testing.T) {
	f := newFixture(t, "af", nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	broken, err := audit.New(func() audit.Config {
		c := audit.DefaultConfig()
		c.DB, c.Keys = f.env.db, f.env.keys
		return c
	}())
	require.NoError(t, err)
	require.NoError(t, broken.Close(ctx))
	f.app.svc.cfg.Audit = broken
	feed, err := dialFeed(ctx, f.srv.URL+"/t/acme/ws", f.as(t, f.acme, authz.RoleViewer).token)
	require.NoError(t, err)
	defer feed.CloseNow()

	a := must(t, f.as(t, f.acme, authz.RoleEditor), http.StatusInternalServerError, "POST", "/requirements", "application/json", []byte(reqJSON))
	assert.Contains(t, string(a.body), `"code":"internal"`)
	assert.Equal(t, map[string]int64{"REQ-API-001": 1}, f.rows(t, f.acme), "the change is made")
	rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer rcancel()
	_, msg, err := feed.Read(rctx)
	assert.Error(t, err, "the feed told of a change whose audit entry failed: %s", msg)
}

// plainRoles numbers the roles TestFindPostgresWantsASuperuser makes.
var plainRoles atomic.Int64

// TestFindPostgresWantsASuperuser checks the discovery of the server: the
// URL given is used alone, and a role that is not a superuser is refused
// with the reason.
func TestFindPostgresWantsASuperuser(t *testing.T) {
	d := pgtest.DB(t)
	got, err := findPostgres(t.Context(), d.AdminURL())
	require.NoError(t, err)
	assert.Equal(t, d.AdminURL(), got)
	plain := d.CreateRole(t, fmt.Sprintf("plain%d", plainRoles.Add(1)), "") // a name per run (-count)
	_, err = findPostgres(t.Context(), plain)
	require.ErrorContains(t, err, "the role is not a superuser")
	assert.NotContains(t, err.Error(), "127.0.0.1:5432/postgres", "a URL given is the only candidate")
}

// TestWatchPrintsTheFeed runs -watch against the service: it prints each
// change of its tenant as the hub sends it, and refuses to start without a
// token.
func TestWatchPrintsTheFeed(t *testing.T) {
	f := newFixture(t, "wa", nil)
	require.ErrorContains(t, watchFeed(t.Context(), io.Discard, f.srv.URL+"/t/acme/ws", ""), "-watch needs -token")
	ctx, cancel := context.WithCancel(t.Context())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- watchFeed(ctx, out, f.srv.URL+"/t/acme/ws", f.as(t, f.acme, authz.RoleViewer).token) }()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "watching") }, 10*time.Second, 10*time.Millisecond)
	must(t, f.as(t, f.acme, authz.RoleEditor), http.StatusCreated, "POST", "/requirements", "application/json", []byte(reqJSON))
	require.Eventually(t, func() bool { return strings.Contains(out.String(), `"type":"requirement.created"`) }, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.Error(t, <-done)
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestPlatformPasswordIsSentAsAVerifier checks that the statement creating
// the platform role carries a SCRAM-SHA-256 verifier, not the password, and
// that the service's check passes on a server that asks every role but the
// superuser for a SCRAM password and would store a clear-text password as
// MD5 (password_encryption = md5): the platform role's stored password is
// the verifier, and it logs in with it.
func TestPlatformPasswordIsSentAsAVerifier(t *testing.T) {
	const password = "0123456789abcdef0123456789abcdef"
	sql, err := options{RolePrefix: "rx_"}.createPlatformRole(password)
	require.NoError(t, err)
	assert.NotContains(t, sql, password)
	assert.Regexp(t, `^CREATE ROLE rx_platform LOGIN PASSWORD 'SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+'$`, sql)

	d := pgtest.NewSCRAMCluster(t)
	d.Exec(t, `ALTER SYSTEM SET password_encryption = 'md5'`)
	d.Exec(t, `SELECT pg_reload_conf()`)
	o := testOptions(d, "pw")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	env, err := setup(ctx, o, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer func() { assert.NoError(t, env.close(context.Background())) }()
	var stored string
	require.NoError(t, env.server.QueryRow(ctx, `SELECT rolpassword FROM pg_authid WHERE rolname = $1`, o.platformRole()).Scan(&stored))
	assert.True(t, strings.HasPrefix(stored, "SCRAM-SHA-256$"), "stored password of the platform role: %.14s...", stored)

	a, err := newApp(ctx, env, testAppConfig())
	require.NoError(t, err)
	srv := httptest.NewServer(a.handler)
	defer func() { a.close(); srv.Close() }()
	f := &fixture{env: env, app: a, srv: srv, acme: env.tenants[0], glob: env.tenants[1]}
	c := f.as(t, f.acme, authz.RoleEditor)
	body, err := json.Marshal(Requirement{ReqID: "REQ-PW-001", Category: "PW", RequirementText: "logged in", Status: "MISSING"})
	require.NoError(t, err)
	must(t, c, http.StatusCreated, "POST", "/requirements", "application/json", body)
	must(t, c, http.StatusOK, "GET", "/requirements/REQ-PW-001", "", nil)
}

// TestDownloadRefusesAnObjectLargerThanAnUpload checks that an attachment
// of MaxAttachment bytes is served whole, and that one stored larger (by
// another writer of the bucket) is answered 500, not cut off at
// MaxAttachment bytes with a 200.
func TestDownloadRefusesAnObjectLargerThanAnUpload(t *testing.T) {
	f := newFixture(t, "dl", nil)
	ed := f.as(t, f.acme, authz.RoleEditor)
	must(t, ed, http.StatusCreated, "POST", "/requirements", "application/json", []byte(reqJSON))
	max := f.app.svc.cfg.MaxAttachment
	ctx := tenant.NewContext(t.Context(), f.acme)
	bucket, err := f.env.buckets.For(ctx)
	require.NoError(t, err)
	defer bucket.Close()
	full := bytes.Repeat([]byte("f"), int(max))
	require.NoError(t, bucket.WriteAll(ctx, attachmentPrefix("REQ-API-001")+"full.bin", full, nil))
	require.NoError(t, bucket.WriteAll(ctx, attachmentPrefix("REQ-API-001")+"over.bin", append(full, 'o'), nil))
	a := must(t, ed, http.StatusOK, "GET", "/requirements/REQ-API-001/attachments/full.bin", "", nil)
	assert.Equal(t, full, a.body)
	a = must(t, ed, http.StatusInternalServerError, "GET", "/requirements/REQ-API-001/attachments/over.bin", "", nil)
	assert.NotContains(t, string(a.body), "fff")
}

// TestDeleteKeepsTheRequirementWhenItsAttachmentsStay checks that a
// requirement whose attachment cannot be deleted is not deleted either
// (500, the row and the attachment still there), and that once the
// object can be deleted again the requirement goes with its attachments,
// so a requirement created later with the same ID inherits none.
func TestDeleteKeepsTheRequirementWhenItsAttachmentsStay(t *testing.T) {
	f := newFixture(t, "rm", nil)
	ed := f.as(t, f.acme, authz.RoleEditor)
	must(t, ed, http.StatusCreated, "POST", "/requirements", "application/json", []byte(reqJSON))
	must(t, ed, http.StatusCreated, "PUT", "/requirements/REQ-API-001/attachments/plan.txt", "text/plain", []byte("the plan"))

	// The file bucket keeps an object's attributes beside it in
	// <object>.attrs: a non-empty directory in its place makes reading the
	// attributes, and removing them, fail, so deleting the object fails.
	var object string
	require.NoError(t, filepath.WalkDir(filepath.Join(f.env.dir, "objects"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(path) == "plan.txt" {
			object = path
		}
		return err
	}))
	require.NotEmpty(t, object, "the stored attachment")
	attrs := object + ".attrs"
	require.NoError(t, os.Rename(attrs, attrs+".saved"))
	require.NoError(t, os.MkdirAll(filepath.Join(attrs, "blocker"), 0o700))

	must(t, ed, http.StatusInternalServerError, "DELETE", "/requirements/REQ-API-001", "", nil)
	assert.Equal(t, map[string]int64{"REQ-API-001": 1}, f.rows(t, f.acme), "the requirement was deleted though its attachment stays")

	require.NoError(t, os.RemoveAll(attrs))
	require.NoError(t, os.Rename(attrs+".saved", attrs))
	a := must(t, ed, http.StatusOK, "GET", "/requirements/REQ-API-001/attachments/plan.txt", "", nil)
	assert.Equal(t, "the plan", string(a.body))
	must(t, ed, http.StatusNoContent, "DELETE", "/requirements/REQ-API-001", "", nil)
	must(t, ed, http.StatusCreated, "POST", "/requirements", "application/json", []byte(reqJSON))
	a = must(t, ed, http.StatusOK, "GET", "/requirements/REQ-API-001/attachments", "", nil)
	assert.NotContains(t, string(a.body), "plan.txt", "a new requirement inherited an attachment of a deleted one")
}
