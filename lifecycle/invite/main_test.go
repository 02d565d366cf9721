package invite_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/internal/mailtest"
	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/lifecycle/invite"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// secret is the login secret of every test store.
var secret = store.LoginSecret{Version: 1, Key: []byte("tenancy invite test login secret, 32 bytes or more")}

var (
	platformOnce sync.Once
	platformUser string
	tenantSeq    atomic.Int64
)

// env is one test's world: an Admin over the package's database with the
// invitations table, a mailpit, a clock, a captured log, and an Inviter
// serving its Handler on a loopback server whose URL is the LinkBase.
type env struct {
	t     *testing.T
	d     *pgtest.Database
	admin *store.Admin
	mail  *mailtest.Server
	clock *clock
	logs  *logBuffer
	srv   *httptest.Server
	iv    *invite.Inviter
	cfg   invite.Config
}

// newEnv makes an env; edit, if given, changes the Config before New.
func newEnv(t *testing.T, edit ...func(*invite.Config)) *env {
	t.Helper()
	e := &env{t: t, d: pgtest.DB(t), mail: mailtest.Start(t), clock: &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}, logs: &logBuffer{}}
	e.admin = openAdmin(t, e.d)
	if err := invite.Install(t.Context(), e.admin); err != nil {
		t.Fatalf("Install: %v", err)
	}
	e.srv = httptest.NewUnstartedServer(http.NotFoundHandler())
	e.cfg = invite.Config{
		Admin:    e.admin,
		SMTP:     invite.SMTPConfig{Addr: e.mail.SMTPAddr(), StartTLS: invite.StartTLSNone, Timeout: 5 * time.Second},
		From:     "RTMX <no-reply@rtmx.example>",
		LinkBase: "http://" + e.srv.Listener.Addr().String() + "/invite",
		Now:      e.clock.Now,
		Logger:   slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, f := range edit {
		f(&e.cfg)
	}
	var err error
	e.iv, err = invite.New(e.cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/invite", e.iv.Handler())
	e.srv.Config.Handler = mux
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	return e
}

func openAdmin(t *testing.T, d *pgtest.Database) *store.Admin {
	t.Helper()
	platformOnce.Do(func() {
		u, err := pgx.ParseConfig(d.CreateRole(t, "platform", ""))
		if err != nil {
			t.Fatalf("platform role: %v", err)
		}
		platformUser = u.User
	})
	acfg, err := store.ParseAdminConfig(d.AdminURL())
	if err != nil {
		t.Fatalf("ParseAdminConfig: %v", err)
	}
	acfg.RolePrefix, acfg.PlatformRole = d.Prefix(), platformUser
	acfg.LoginSecrets = []store.LoginSecret{secret}
	acfg.ConnLimit = 5
	admin, err := store.OpenAdmin(t.Context(), acfg)
	if err != nil {
		t.Fatalf("OpenAdmin: %v", err)
	}
	t.Cleanup(admin.Close)
	return admin
}

// newTenant creates a standard tenant named name, active, and returns it.
func (e *env) newTenant(name string) tenant.Info {
	e.t.Helper()
	info := tenant.Info{ID: tenant.MustParseID(fmt.Sprintf("inv%d_%d", time.Now().UnixNano()%1e6, tenantSeq.Add(1))), Name: name, Tier: tenant.TierStandard}
	if err := e.admin.CreateTenant(e.t.Context(), info); err != nil {
		e.t.Fatalf("CreateTenant %s: %v", info.ID, err)
	}
	return info
}

// messagesTo returns the messages mailpit holds for address to.
func (e *env) messagesTo(to string) []mailtest.Summary {
	e.t.Helper()
	var out []mailtest.Summary
	for _, m := range e.mail.Messages(e.t) {
		for _, a := range m.To {
			if strings.EqualFold(a.Address, to) {
				out = append(out, m)
			}
		}
	}
	return out
}

var tokenRE = regexp.MustCompile(`\?token=([A-Za-z0-9_-]{43})\b`)

// link returns the invitation link and token of message m, from its
// decoded text.
func (e *env) link(m mailtest.Summary) (link, token string) {
	e.t.Helper()
	text := e.mail.Message(e.t, m.ID).Text
	sm := tokenRE.FindStringSubmatchIndex(text)
	if sm == nil {
		e.t.Fatalf("no invitation link in the message:\n%s", text)
	}
	start := strings.LastIndex(text[:sm[0]], "http")
	return text[start:sm[1]], text[sm[2]:sm[3]]
}

// get fetches url and returns the status, body and headers.
func (e *env) get(url string) (int, string, http.Header) {
	e.t.Helper()
	return e.do(http.MethodGet, url)
}

func (e *env) do(method, url string) (int, string, http.Header) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.t.Context(), method, url, nil)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, url, err)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: reading: %v", method, url, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// row is an invitation as stored.
type row struct {
	State     string
	Email     string
	ThreadID  string
	MessageID *string
	Attempts  int
	Hash      []byte
	ExpiresAt *time.Time
	UsedAt    *time.Time
	Text      string // the whole row as text
}

// rows returns tenant id's invitations.
func (e *env) rows(id tenant.ID) []row {
	e.t.Helper()
	var out []row
	err := e.admin.ControlPlaneTx(e.t.Context(), func(tx pgx.Tx) error {
		rs, err := tx.Query(e.t.Context(), `SELECT state, email, thread_id, message_id, attempts, token_hash, expires_at, used_at, i::text
FROM tenancy.invitations i WHERE tenant_id = $1 ORDER BY email_key`, id.String())
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rs, func(r pgx.CollectableRow) (row, error) {
			var x row
			err := r.Scan(&x.State, &x.Email, &x.ThreadID, &x.MessageID, &x.Attempts, &x.Hash, &x.ExpiresAt, &x.UsedAt, &x.Text)
			return x, err
		})
		return err
	})
	if err != nil {
		e.t.Fatalf("reading invitations of %s: %v", id, err)
	}
	return out
}

// exec runs sql on the control plane.
func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	err := e.admin.ControlPlaneTx(e.t.Context(), func(tx pgx.Tx) error {
		_, err := tx.Exec(e.t.Context(), sql, args...)
		return err
	})
	if err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// waitsFor reports whether a session waits for a lock held by the
// session of backend pid, polling for up to ten seconds.
func (e *env) waitsFor(pid uint32) bool {
	e.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var n int
		err := e.admin.ControlPlaneTx(e.t.Context(), func(tx pgx.Tx) error {
			return tx.QueryRow(e.t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid))`, pid).Scan(&n)
		})
		if err != nil {
			e.t.Fatalf("pg_blocking_pids: %v", err)
		}
		if n > 0 {
			return true
		}
	}
	return false
}

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// logBuffer collects log output from concurrent writers.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
