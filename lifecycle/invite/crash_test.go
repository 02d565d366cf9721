package invite_test

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/internal/testenv"
	"github.com/rtmx-ai/tenancy/lifecycle/invite"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// The child of TestProcessKilledAfterSMTP reads its world from these.
const (
	envCrash    = "INVITETEST_CRASH_CHILD"
	envAdminURL = "INVITETEST_ADMIN_URL"
	envPrefix   = "INVITETEST_PREFIX"
	envPlatform = "INVITETEST_PLATFORM"
	envSMTP     = "INVITETEST_SMTP"
	envLinkBase = "INVITETEST_LINK_BASE"
	envTenant   = "INVITETEST_TENANT"
)

// TestCrashChild sends an invitation and dies (os.Exit, no cleanup, its
// transaction open) right after the SMTP server accepted the mail, before
// the mail is recorded: a process killed in the window Send documents.
func TestCrashChild(t *testing.T) {
	if os.Getenv(envCrash) == "" {
		t.Skip("only runs as the child of TestProcessKilledAfterSMTP")
	}
	acfg, err := store.ParseAdminConfig(os.Getenv(envAdminURL))
	if err != nil {
		t.Fatal(err)
	}
	acfg.RolePrefix, acfg.PlatformRole = os.Getenv(envPrefix), os.Getenv(envPlatform)
	acfg.LoginSecrets = []store.LoginSecret{secret}
	acfg.ConnLimit = 5
	a, err := store.OpenAdmin(t.Context(), acfg)
	if err != nil {
		t.Fatal(err)
	}
	iv, err := invite.New(invite.Config{
		Admin:    a,
		SMTP:     invite.SMTPConfig{Addr: os.Getenv(envSMTP), StartTLS: invite.StartTLSNone},
		From:     "RTMX <no-reply@rtmx.example>",
		LinkBase: os.Getenv(envLinkBase),
	})
	if err != nil {
		t.Fatal(err)
	}
	invite.SetAfterDeliver(iv, func() error {
		os.Stdout.WriteString("\nDELIVERED\n")
		os.Exit(3)
		return nil
	})
	info, err := a.Tenant(t.Context(), tenant.MustParseID(os.Getenv(envTenant)))
	if err != nil {
		t.Fatal(err)
	}
	err = iv.Send(t.Context(), info, admin)
	t.Fatalf("Send returned (%v); the process should have died in it", err)
}

// TestProcessKilledAfterSMTP: a process that dies after its mail was
// accepted and before the commit leaves the invitation sending, with no
// token stored; the next Send (the resume) sends again, in the same
// thread, and only the second mail's link works.
func TestProcessKilledAfterSMTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Killed")
	out, code := testenv.RunTest(t, "TestCrashChild", []string{"INVITETEST_"},
		envCrash+"=1",
		envAdminURL+"="+e.d.AdminURL(),
		envPrefix+"="+e.d.Prefix(),
		envPlatform+"="+platformUser,
		envSMTP+"="+e.mail.SMTPAddr(),
		envLinkBase+"="+e.cfg.LinkBase,
		envTenant+"="+info.ID.String(),
	)
	if code != 3 || !strings.Contains(out, "DELIVERED") {
		t.Fatalf("child exit %d, want 3 after delivering:\n%s", code, out)
	}
	first := e.messagesTo(admin)
	if len(first) != 1 {
		t.Fatalf("%d messages from the killed process, want 1", len(first))
	}
	firstLink, _ := e.link(first[0])
	// The server rolls the dead session's transaction back when it sees
	// the connection close; the row is sending, with no token.
	var rows []row
	deadline := time.Now().Add(10 * time.Second)
	for {
		rows = e.rows(info.ID)
		if len(rows) == 1 && rows[0].State == "sending" && rows[0].Hash == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rows %+v, want one sending with no token", rows)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _, _ := e.get(firstLink); code != http.StatusGone {
		t.Fatalf("the killed process's link: %d, want 410", code)
	}

	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send (resume): %v", err)
	}
	msgs := e.messagesTo(admin)
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	checkOneThread(t, e, msgs)
	for _, m := range msgs {
		if l, _ := e.link(m); l != firstLink {
			if code, _, _ := e.get(l); code != http.StatusOK {
				t.Fatalf("the resumed Send's link: %d, want 200", code)
			}
		}
	}
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := len(e.messagesTo(admin)); got != 2 {
		t.Fatalf("%d messages, want 2", got)
	}
	var n int
	err := e.admin.ControlPlaneTx(t.Context(), func(tx pgx.Tx) error {
		return tx.QueryRow(t.Context(), `SELECT count(*) FROM tenancy.invitations WHERE tenant_id = $1 AND state = 'sent'`, info.ID.String()).Scan(&n)
	})
	if err != nil || n != 1 {
		t.Fatalf("%d sent rows (%v), want 1", n, err)
	}
}
