package invite_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/smtp"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/internal/mailtest"
	"github.com/rtmx-ai/tenancy/lifecycle/invite"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

const admin = "admin@acme.example"

// TestInvitationArrivesAndWorksOnce: the mail arrives with the right
// headers and a link; the link works once through the Handler, and never
// again.
func TestInvitationArrivesAndWorksOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Acmé Defense")
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send: %v", err)
	}
	msgs := e.messagesTo(admin)
	if len(msgs) != 1 {
		t.Fatalf("%d messages to %s, want 1", len(msgs), admin)
	}
	m := msgs[0]
	if m.Subject != "Invitation to administer Acmé Defense" {
		t.Fatalf("Subject %q", m.Subject)
	}
	if m.From.Address != "no-reply@rtmx.example" || m.From.Name != "RTMX" {
		t.Fatalf("From %+v", m.From)
	}
	h := e.mail.Headers(t, m.ID)
	if got := h["Subject"]; len(got) != 1 || !strings.HasPrefix(got[0], "=?utf-8?q?") {
		t.Fatalf("Subject header %q, want it Q-encoded", got)
	}
	if got := h["To"]; len(got) != 1 || got[0] != "<"+admin+">" {
		t.Fatalf("To header %q", got)
	}
	rows := e.rows(info.ID)
	if len(rows) != 1 || rows[0].State != "sent" || rows[0].UsedAt != nil {
		t.Fatalf("rows %+v, want one sent, unused", rows)
	}
	if want := "<" + m.MessageID + ">"; rows[0].MessageID == nil || *rows[0].MessageID != want {
		t.Fatalf("Message-ID %q, stored %v", want, rows[0].MessageID)
	}
	if got := h["References"]; len(got) != 1 || got[0] != rows[0].ThreadID {
		t.Fatalf("References %q, want the thread %q", got, rows[0].ThreadID)
	}
	if want := e.clock.Now().Add(invite.DefaultTTL); !rows[0].ExpiresAt.Equal(want) {
		t.Fatalf("expires at %v, want %v (DefaultTTL)", rows[0].ExpiresAt, want)
	}
	link, token := e.link(m)
	if !strings.HasPrefix(link, e.cfg.LinkBase+"?token=") {
		t.Fatalf("link %q does not start with LinkBase", link)
	}

	code, body, hdr := e.get(link)
	if code != http.StatusOK || !strings.Contains(body, "accepted") {
		t.Fatalf("first GET: %d %q, want 200 saying accepted", code, body)
	}
	checkHeaders(t, hdr)
	for i := range 3 {
		code, body, hdr := e.get(link)
		if code != http.StatusGone {
			t.Fatalf("GET #%d after use: %d %q, want 410", i+2, code, body)
		}
		checkHeaders(t, hdr)
		if strings.Contains(body, token) {
			t.Fatalf("the answer repeats the token: %q", body)
		}
	}
	if _, err := e.iv.Redeem(t.Context(), token); !errors.Is(err, invite.ErrInvalidToken) || errors.Is(err, invite.ErrMalformedToken) {
		t.Fatalf("Redeem of a used token: %v, want ErrInvalidToken (not malformed)", err)
	}
	if !strings.Contains(e.logs.String(), "reason=\"used already\"") {
		t.Fatalf("the log does not say the token was used already:\n%s", e.logs)
	}
	rem, err := e.iv.Remains(t.Context(), info.ID)
	if err != nil || len(rem) != 1 || rem[0] != "invitation to "+admin+" (sent, used)" {
		t.Fatalf("Remains = %q, %v", rem, err)
	}
	if strings.Contains(e.logs.String(), token) {
		t.Fatalf("the log holds the token")
	}
}

func checkHeaders(t *testing.T, h http.Header) {
	t.Helper()
	for k, want := range map[string]string{"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"} {
		if got := h.Get(k); got != want {
			t.Fatalf("%s: %q, want %q", k, got, want)
		}
	}
}

// TestRedeemReturnsTheTenant: a token redeems as its own tenant only, and
// each tenant's invitation is its own (Remove of one leaves the other).
func TestRedeemReturnsTheTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.newTenant("Tenant A"), e.newTenant("Tenant B")
	for _, info := range []tenant.Info{a, b} {
		if err := e.iv.Send(t.Context(), info, admin); err != nil {
			t.Fatalf("Send %s: %v", info.ID, err)
		}
	}
	msgs := e.messagesTo(admin)
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	tokens := map[string]string{} // subject -> token
	for _, m := range msgs {
		_, tok := e.link(m)
		tokens[m.Subject] = tok
	}
	tokA, tokB := tokens["Invitation to administer Tenant A"], tokens["Invitation to administer Tenant B"]
	if tokA == "" || tokB == "" || tokA == tokB {
		t.Fatalf("tokens %q", tokens)
	}
	// Removing A's invitations leaves B's link working, and A's dead.
	if err := e.iv.Remove(t.Context(), a.ID); err != nil {
		t.Fatalf("Remove A: %v", err)
	}
	if _, err := e.iv.Redeem(t.Context(), tokA); !errors.Is(err, invite.ErrInvalidToken) {
		t.Fatalf("A's token after Remove(A): %v, want ErrInvalidToken", err)
	}
	got, err := e.iv.Redeem(t.Context(), tokB)
	if err != nil || got.Tenant != b.ID || got.Email != admin {
		t.Fatalf("Redeem B's token = %+v, %v; want tenant %s", got, err, b.ID)
	}
	if rem, _ := e.iv.Remains(t.Context(), a.ID); len(rem) != 0 {
		t.Fatalf("A remains %q", rem)
	}
}

// TestRedeemSeparateTenants: with both links alive, each token redeems
// as the tenant it was sent for, never as the other.
func TestRedeemSeparateTenants(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.newTenant("Alpha"), e.newTenant("Beta")
	for _, info := range []tenant.Info{a, b} {
		if err := e.iv.Send(t.Context(), info, admin); err != nil {
			t.Fatalf("Send %s: %v", info.ID, err)
		}
	}
	for _, m := range e.messagesTo(admin) {
		want := a.ID
		if m.Subject == "Invitation to administer Beta" {
			want = b.ID
		}
		_, tok := e.link(m)
		got, err := e.iv.Redeem(t.Context(), tok)
		if err != nil || got.Tenant != want {
			t.Fatalf("Redeem of the token mailed as %q = %+v, %v; want tenant %s", m.Subject, got, err, want)
		}
	}
}

// TestExpiredToken: a link works until its TTL is over and not after.
func TestExpiredToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *invite.Config) { c.TTL = time.Hour })
	early, late := e.newTenant("Early"), e.newTenant("Late")
	for _, info := range []tenant.Info{early, late} {
		if err := e.iv.Send(t.Context(), info, admin); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	links := map[string]string{}
	for _, m := range e.messagesTo(admin) {
		links[m.Subject], _ = e.link(m)
	}
	e.clock.Advance(time.Hour - time.Second)
	if code, body, _ := e.get(links["Invitation to administer Early"]); code != http.StatusOK {
		t.Fatalf("GET one second before expiry: %d %q, want 200", code, body)
	}
	e.clock.Advance(time.Second)
	if code, body, _ := e.get(links["Invitation to administer Late"]); code != http.StatusGone {
		t.Fatalf("GET at expiry: %d %q, want 410", code, body)
	}
	if !strings.Contains(e.logs.String(), "reason=expired") {
		t.Fatalf("the log does not say the token expired:\n%s", e.logs)
	}
	// Expired and unused, the invitation is still sent: Send sends no
	// other (Remove, then Send, invites again).
	if err := e.iv.Send(t.Context(), late, admin); err != nil {
		t.Fatalf("Send again: %v", err)
	}
	if got := len(e.messagesTo(admin)); got != 2 {
		t.Fatalf("%d messages, want still 2", got)
	}
	if err := e.iv.Remove(t.Context(), late.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := e.iv.Send(t.Context(), late, admin); err != nil {
		t.Fatalf("Send after Remove: %v", err)
	}
	if got := len(e.messagesTo(admin)); got != 3 {
		t.Fatalf("%d messages, want 3 (a new invitation after Remove)", got)
	}
}

// TestSecondSendSendsNothing: Send is idempotent per tenant and address
// (case-insensitively), before and after the link was used, and under
// concurrent calls.
func TestSecondSendSendsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Rounds of concurrent Sends, each for a tenant of its own.
	for round := range 3 {
		to := "round" + string(rune('a'+round)) + "@acme.example"
		info := e.newTenant("Idem")
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make([]error, 6)
		for i := range errs {
			wg.Go(func() { <-start; errs[i] = e.iv.Send(t.Context(), info, to) })
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: concurrent Send %d: %v", round, i, err)
			}
		}
		if got := len(e.messagesTo(to)); got != 1 {
			t.Fatalf("round %d: %d messages after 6 concurrent Sends, want 1", round, got)
		}
	}
	info := e.newTenant("Idem")
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if err := e.iv.Send(t.Context(), info, strings.ToUpper(admin)); err != nil {
		t.Fatalf("Send in upper case: %v", err)
	}
	link, _ := e.link(e.messagesTo(admin)[0])
	if code, _, _ := e.get(link); code != http.StatusOK {
		t.Fatalf("GET: %d", code)
	}
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send after use: %v", err)
	}
	if got := len(e.messagesTo(admin)); got != 1 {
		t.Fatalf("%d messages, want 1", got)
	}
	if rows := e.rows(info.ID); len(rows) != 1 || rows[0].State != "sent" {
		t.Fatalf("rows %+v, want one, sent", rows)
	}
}

// TestCrashBetweenSMTPAndCommit: a row left in sending after its mail went
// out (the process died before the commit, which stores the token's hash
// and state sent together) is sent again, in the same thread, with a
// fresh token; the first mail's link does not work.
func TestCrashBetweenSMTPAndCommit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Crash")
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send: %v", err)
	}
	// What the crash leaves: the committed row of the first step, the
	// second step rolled back.
	e.exec(`UPDATE tenancy.invitations SET state = 'sending', token_hash = NULL, message_id = NULL, sent_at = NULL, expires_at = NULL WHERE tenant_id = $1`, info.ID.String())
	first := e.messagesTo(admin)
	if len(first) != 1 {
		t.Fatalf("%d messages, want 1", len(first))
	}
	firstLink, _ := e.link(first[0])

	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send (resume): %v", err)
	}
	msgs := e.messagesTo(admin)
	if len(msgs) != 2 {
		t.Fatalf("%d messages after the resume, want 2", len(msgs))
	}
	checkOneThread(t, e, msgs)
	var second string
	for _, m := range msgs {
		if l, _ := e.link(m); l != firstLink {
			second = l
		}
	}
	if second == "" {
		t.Fatalf("both mails have the same link")
	}
	if code, _, _ := e.get(firstLink); code != http.StatusGone {
		t.Fatalf("the first mail's link: %d, want 410", code)
	}
	if code, _, _ := e.get(second); code != http.StatusOK {
		t.Fatalf("the second mail's link: %d, want 200", code)
	}
	rows := e.rows(info.ID)
	if len(rows) != 1 || rows[0].State != "sent" || rows[0].Attempts != 1 {
		t.Fatalf("rows %+v, want one sent at the second attempt", rows)
	}
	if !strings.Contains(e.logs.String(), "sent after earlier Send calls") {
		t.Fatalf("the log does not warn of the second mail:\n%s", e.logs)
	}
	// And Send is done now.
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := len(e.messagesTo(admin)); got != 2 {
		t.Fatalf("%d messages, want 2", got)
	}
}

// TestRecordFailsAfterDelivery: recording a mail the server accepted
// fails (the database went away between the end of DATA and the commit):
// Send says so, the row stays sending without a token, and the next Send
// sends a mail whose link works.
func TestRecordFailsAfterDelivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Record")
	invite.SetAfterDeliver(e.iv, func() error { return errors.New("the database went away") })
	err := e.iv.Send(t.Context(), info, admin)
	if err == nil || errors.Is(err, invite.ErrSend) || !strings.Contains(err.Error(), "went out but recording it failed") {
		t.Fatalf("Send: %v, want an error saying the mail went out but was not recorded", err)
	}
	if rows := e.rows(info.ID); len(rows) != 1 || rows[0].State != "sending" || rows[0].Hash != nil {
		t.Fatalf("rows %+v, want one sending, no token", rows)
	}
	first := e.messagesTo(admin)
	if len(first) != 1 {
		t.Fatalf("%d messages, want 1", len(first))
	}
	firstLink, _ := e.link(first[0])
	invite.SetAfterDeliver(e.iv, nil)
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send again: %v", err)
	}
	msgs := e.messagesTo(admin)
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	if code, _, _ := e.get(firstLink); code != http.StatusGone {
		t.Fatalf("the unrecorded mail's link: %d, want 410", code)
	}
	for _, m := range msgs {
		if l, _ := e.link(m); l != firstLink {
			if code, _, _ := e.get(l); code != http.StatusOK {
				t.Fatalf("the second mail's link: %d, want 200", code)
			}
		}
	}
}

// TestSMTPDown: with the server down, Send fails with ErrSend and sends
// nothing; after a restart one Send sends exactly one mail.
func TestSMTPDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Down")
	if err := e.mail.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for range 2 {
		err := e.iv.Send(t.Context(), info, admin)
		if !errors.Is(err, invite.ErrSend) || !strings.Contains(err.Error(), e.mail.SMTPAddr()) {
			t.Fatalf("Send with the server down: %v, want ErrSend naming the server", err)
		}
	}
	if rows := e.rows(info.ID); len(rows) != 1 || rows[0].State != "sending" || rows[0].Hash != nil || rows[0].Attempts != 1 {
		t.Fatalf("rows %+v, want one sending, no token, attempts 1", rows)
	}
	e.mail.Restart(t)
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send after restart: %v", err)
	}
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send again: %v", err)
	}
	msgs := e.messagesTo(admin)
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	link, _ := e.link(msgs[0])
	if code, _, _ := e.get(link); code != http.StatusOK {
		t.Fatalf("GET: %d", code)
	}
}

// TestRecipientRefused: a server refusing RCPT gives ErrSend with the
// server's reply; accepted again, the next Send sends one mail.
func TestRecipientRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Refused")
	e.mail.RefuseRecipients(t, 550)
	err := e.iv.Send(t.Context(), info, admin)
	var te *textproto.Error
	if !errors.Is(err, invite.ErrSend) || !errors.As(err, &te) || te.Code != 550 || !strings.Contains(err.Error(), "RCPT TO") {
		t.Fatalf("Send refused: %v, want ErrSend wrapping the 550 reply to RCPT TO", err)
	}
	e.mail.RefuseRecipients(t, 0)
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := len(e.messagesTo(admin)); got != 1 {
		t.Fatalf("%d messages, want 1", got)
	}
}

// TestSMTPTimeout: a server that accepts the connection and never greets
// makes Send fail with ErrSend after the timeout, and a cancelled context
// sooner.
func TestSMTPTimeout(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	e := newEnv(t, func(c *invite.Config) {
		c.SMTP.Addr = l.Addr().String()
		c.SMTP.Timeout = 500 * time.Millisecond
	})
	info := e.newTenant("Slow")
	start := time.Now()
	err = e.iv.Send(t.Context(), info, admin)
	if !errors.Is(err, invite.ErrSend) || !errors.Is(err, errDeadline) {
		t.Fatalf("Send to a silent server: %v, want ErrSend and the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Send took %v with a 500 ms timeout", d)
	}
	if rows := e.rows(info.ID); len(rows) != 1 || rows[0].State != "sending" {
		t.Fatalf("rows %+v, want one sending", rows)
	}

	patient, err := invite.New(withSMTP(e.cfg, invite.SMTPConfig{Addr: l.Addr().String(), StartTLS: invite.StartTLSNone, Timeout: time.Minute}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancel)
	start = time.Now()
	err = patient.Send(ctx, info, admin)
	if !errors.Is(err, invite.ErrSend) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Send cancelled: %v, want ErrSend and context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("a cancelled Send took %v", d)
	}
}

// errDeadline is what a Send that ran out of time wraps.
var errDeadline = context.DeadlineExceeded

// TestHostileInputs: each refused with ErrInvalidArgument naming the
// argument and the rule; nothing sent, nothing stored.
func TestHostileInputs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Hostile")
	for _, tc := range []struct{ email, want string }{
		{"admin@acme.example\r\nBcc: victim@evil.example", "line break"},
		{"admin@acme.example\nBcc: victim@evil.example", "line break"},
		{"admin@acme.example\r", "line break"},
		{"admin@acme.example\x00", "control character"},
		{"admin@acme.example\t", "white space"},
		{" admin@acme.example", "white space"},
		{"admin@acme.example, victim@evil.example", "white space"},
		{"admin@acme.example,victim@evil.example", "one address"},
		{"admin@acme.example;victim@evil.example", "one address"},
		{"Admin <admin@acme.example>", "display name"}, // the rule request.go has always named for it
		{"Admin<admin@acme.example>", "display name"},
		{"<admin@acme.example>", "display name"},
		{`"admin"@acme.example`, "not allowed unquoted"},
		{"admin(comment)@acme.example", "not allowed unquoted"},
		{"admin@acme.example@evil.example", "exactly one @"},
		{"admin", "exactly one @"},
		{"", "exactly one @"},
		{"admin@[127.0.0.1]", "label"},
		{"admin@localhost", "dot"},
		{"admin@acme.123", "all digits"},
		{"ädmin@acme.example", "non-ASCII"},
		{".admin@acme.example", "misplaced dot"},
		{strings.Repeat("a", 65) + "@acme.example", "1 to 64 bytes"},
		{strings.Repeat("a", 60) + "@" + strings.Repeat("b.", 97) + "example", "longer than 254 bytes"},
	} {
		err := e.iv.Send(t.Context(), info, tc.email)
		if !errors.Is(err, invite.ErrInvalidArgument) || !strings.Contains(err.Error(), "email must be a bare e-mail address") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Send to %q: %v, want ErrInvalidArgument on the email saying %q", tc.email, err, tc.want)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\r\n") {
			t.Errorf("the error for %q holds a line break: %q", tc.email, err)
		}
	}
	// The name is the directory's: every hostile name it can hold (the
	// empty name, one of more than 200 bytes, NUL and invalid UTF-8 it
	// refuses itself).
	for _, tc := range []struct{ name, want string }{
		{"Acme\r\nBcc: victim@evil.example", "line break"},
		{"Acme\n", "white space"},
		{"Ac\nme", "line break"},
		{"Ac\rme", "line break"},
		{"Ac\x1bme", "control"},
		{"Ac\u202eme", "format"},
		{"Ac\u2028me", "format"},
		{" Acme", "white space"},
	} {
		e.exec(`UPDATE tenancy.tenants SET name = $2 WHERE id = $1`, info.ID.String(), tc.name)
		err := e.iv.Send(t.Context(), info, admin)
		if !errors.Is(err, invite.ErrInvalidArgument) || !strings.Contains(err.Error(), "the tenant's name") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Send with name %q: %v, want ErrInvalidArgument on the name saying %q", tc.name, err, tc.want)
		}
	}
	if err := e.iv.Send(t.Context(), tenant.Info{Name: "Zero"}, admin); !errors.Is(err, invite.ErrInvalidArgument) {
		t.Errorf("Send for the zero tenant: %v, want ErrInvalidArgument", err)
	}
	if got := e.mail.Messages(t); len(got) != 0 {
		t.Fatalf("%d messages sent for hostile input", len(got))
	}
	if rows := e.rows(info.ID); len(rows) != 0 {
		t.Fatalf("rows stored for hostile input: %+v", rows)
	}
}

// TestSendNamesTheTenantAsTheDirectoryDoes: the invitation names the
// tenant as the directory does, whatever name the caller passes.
func TestSendNamesTheTenantAsTheDirectoryDoes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Acme Defense Corp")
	forged := info
	forged.Name = "Totally Legit Bank"
	if err := e.iv.Send(t.Context(), forged, admin); err != nil {
		t.Fatalf("Send: %v", err)
	}
	msgs := e.messagesTo(admin)
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	if want := "Invitation to administer Acme Defense Corp"; msgs[0].Subject != want {
		t.Errorf("Subject %q, want %q", msgs[0].Subject, want)
	}
	text := e.mail.Message(t, msgs[0].ID).Text
	if !strings.Contains(text, "Acme Defense Corp") || strings.Contains(text, "Legit") {
		t.Errorf("the body does not name the tenant as the directory does:\n%s", text)
	}
}

// TestRedeemRacingASuspensionIsRefused: a suspension in progress (its
// transaction holds the tenant's directory row) holds Redeem back until it
// commits; the token of the tenant, now suspended, is then refused and not
// spent, and redeems once the tenant is active again.
func TestRedeemRacingASuspensionIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Race")
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send: %v", err)
	}
	_, token := e.link(e.messagesTo(admin)[0])

	conn, err := pgx.Connect(t.Context(), e.d.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), `SELECT state FROM tenancy.tenants WHERE id = $1 FOR UPDATE`, info.ID.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `UPDATE tenancy.tenants SET state = 'suspended' WHERE id = $1`, info.ID.String()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := e.iv.Redeem(t.Context(), token)
		done <- err
	}()
	// Commit the suspension once Redeem waits for it (or, if Redeem does
	// not wait, after a while).
	e.waitsFor(conn.PgConn().PID())
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, invite.ErrInvalidToken) {
		t.Fatalf("Redeem racing a suspension: %v, want ErrInvalidToken", err)
	}
	if rows := e.rows(info.ID); len(rows) != 1 || rows[0].UsedAt != nil {
		t.Fatalf("the refused token was spent: %+v", rows)
	}
	if err := e.admin.SetState(t.Context(), info.ID, tenant.StateActive); err != nil {
		t.Fatalf("reactivate: %v", err)
	}
	if r, err := e.iv.Redeem(t.Context(), token); err != nil || r.Tenant != info.ID {
		t.Fatalf("Redeem after reactivation: %+v, %v", r, err)
	}
}

// TestNotInvitable: a tenant not in the directory, or not provisioning or
// active, gets no invitation; a suspended tenant's link does not redeem
// until the tenant is active again.
func TestNotInvitable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ghost := tenant.Info{ID: tenant.MustParseID("ghost_tenant"), Name: "Ghost"}
	err := e.iv.Send(t.Context(), ghost, admin)
	if !errors.Is(err, invite.ErrNotInvitable) || !errors.Is(err, store.ErrUnknownTenant) {
		t.Fatalf("Send for an unknown tenant: %v, want ErrNotInvitable and store.ErrUnknownTenant", err)
	}
	info := e.newTenant("Suspend")
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send: %v", err)
	}
	link, _ := e.link(e.messagesTo(admin)[0])
	if err := e.admin.SetState(t.Context(), info.ID, tenant.StateSuspended); err != nil {
		t.Fatalf("suspend: %v", err)
	}
	if code, _, _ := e.get(link); code != http.StatusGone {
		t.Fatalf("GET for a suspended tenant: %d, want 410", code)
	}
	if !strings.Contains(e.logs.String(), "the tenant is suspended") {
		t.Fatalf("the log does not say the tenant is suspended:\n%s", e.logs)
	}
	other := e.newTenant("Other")
	if err := e.admin.SetState(t.Context(), other.ID, tenant.StateSuspended); err != nil {
		t.Fatalf("suspend: %v", err)
	}
	if err := e.iv.Send(t.Context(), other, admin); !errors.Is(err, invite.ErrNotInvitable) || !strings.Contains(err.Error(), "suspended") {
		t.Fatalf("Send for a suspended tenant: %v, want ErrNotInvitable saying suspended", err)
	}
	if err := e.admin.SetState(t.Context(), info.ID, tenant.StateActive); err != nil {
		t.Fatalf("reactivate: %v", err)
	}
	if code, _, _ := e.get(link); code != http.StatusOK {
		t.Fatalf("GET after reactivation: %d, want 200 (the refusal did not use the token)", code)
	}
	if got := len(e.mail.Messages(t)); got != 1 {
		t.Fatalf("%d messages, want 1", got)
	}
}

// TestDroppedTenant: a tenant dropped from the directory (deleted) without
// its invitations removed: its link does not redeem.
func TestDroppedTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Dropped")
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send: %v", err)
	}
	_, token := e.link(e.messagesTo(admin)[0])
	if err := e.admin.SetState(t.Context(), info.ID, tenant.StateDecommissioning); err != nil {
		t.Fatalf("decommission: %v", err)
	}
	if err := e.admin.DropTenant(t.Context(), info.ID); err != nil {
		t.Fatalf("DropTenant: %v", err)
	}
	if _, err := e.iv.Redeem(t.Context(), token); !errors.Is(err, invite.ErrInvalidToken) {
		t.Fatalf("Redeem for a dropped tenant: %v, want ErrInvalidToken", err)
	}
}

// TestOnlyTheHashIsStored: the token appears in no column, in no
// encoding, and not in the log; the stored hash is its SHA-256.
func TestOnlyTheHashIsStored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Hash")
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send: %v", err)
	}
	_, token := e.link(e.messagesTo(admin)[0])
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) != 32 {
		t.Fatalf("token %q: %d bytes, %v; want 32 random bytes", token, len(raw), err)
	}
	rows := e.rows(info.ID)
	if len(rows) != 1 {
		t.Fatalf("%d rows", len(rows))
	}
	sum := sha256.Sum256(raw)
	if !bytes.Equal(rows[0].Hash, sum[:]) {
		t.Fatalf("stored hash %x, want SHA-256 of the token's bytes %x", rows[0].Hash, sum)
	}
	var whole string
	err = e.admin.ControlPlaneTx(t.Context(), func(tx pgx.Tx) error {
		return tx.QueryRow(t.Context(), `SELECT string_agg(i::text, '|') FROM tenancy.invitations i`).Scan(&whole)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{token, hex.EncodeToString(raw), base64.StdEncoding.EncodeToString(raw), base64.RawStdEncoding.EncodeToString(raw)} {
		if strings.Contains(strings.ToLower(whole), strings.ToLower(form)) {
			t.Fatalf("the table holds the token (as %q)", form)
		}
		if strings.Contains(e.logs.String(), form) {
			t.Fatalf("the log holds the token (as %q)", form)
		}
	}
	if !strings.Contains(whole, hex.EncodeToString(sum[:])) {
		t.Fatalf("the table's text does not hold the hash: the check above would prove nothing\n%s", whole)
	}
}

// TestRemove kills an unredeemed link; Remains lists what is left.
func TestRemove(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Remove")
	for _, to := range []string{admin, "second@acme.example"} {
		if err := e.iv.Send(t.Context(), info, to); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	rem, err := e.iv.Remains(t.Context(), info.ID)
	if err != nil || len(rem) != 2 || rem[0] != "invitation to "+admin+" (sent)" {
		t.Fatalf("Remains = %q, %v", rem, err)
	}
	link, _ := e.link(e.messagesTo(admin)[0])
	if err := e.iv.Remove(t.Context(), info.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if code, _, _ := e.get(link); code != http.StatusGone {
		t.Fatalf("GET after Remove: %d, want 410", code)
	}
	if rem, err := e.iv.Remains(t.Context(), info.ID); err != nil || len(rem) != 0 {
		t.Fatalf("Remains after Remove = %q, %v", rem, err)
	}
	if err := e.iv.Remove(t.Context(), info.ID); err != nil {
		t.Fatalf("Remove again: %v", err)
	}
	if err := e.iv.Remove(t.Context(), tenant.ID{}); !errors.Is(err, invite.ErrInvalidArgument) {
		t.Fatalf("Remove of the zero ID: %v", err)
	}
}

// TestHandlerRequests: malformed and repeated tokens are 400, unknown ones
// 410, other methods 405; no answer repeats what was sent.
func TestHandlerRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Handler")
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send: %v", err)
	}
	link, token := e.link(e.messagesTo(admin)[0])
	base := e.cfg.LinkBase
	// A token of the right form that was never issued.
	var zero [32]byte
	unknown := base64.RawURLEncoding.EncodeToString(zero[:])
	// The same bytes as token, spelled with other unused low bits.
	last := token[len(token)-1]
	alt := token[:len(token)-1] + string(rune(last^1))
	for _, tc := range []struct {
		method, url string
		want        int
	}{
		{"GET", base, 400},
		{"GET", base + "?token=", 400},
		{"GET", base + "?token=short", 400},
		{"GET", base + "?token=" + token + "A", 400},
		{"GET", base + "?token=" + strings.Repeat("!", 43), 400},
		{"GET", base + "?token=" + alt, 400},
		{"GET", base + "?token=" + token + "&token=" + token, 400},
		{"GET", base + "?token=%zz", 400},
		{"GET", base + "?token=" + unknown, 410},
		{"POST", link, 405},
		{"HEAD", link, 405},
		{"PUT", link, 405},
	} {
		code, body, hdr := e.do(tc.method, tc.url)
		if code != tc.want {
			t.Errorf("%s %s: %d %q, want %d", tc.method, tc.url, code, body, tc.want)
		}
		checkHeaders(t, hdr)
		if strings.Contains(body, token) || strings.Contains(body, unknown) || strings.Contains(body, "short") {
			t.Errorf("%s %s: the answer repeats the request: %q", tc.method, tc.url, body)
		}
	}
	// None of that used the token up.
	if code, _, _ := e.get(link); code != http.StatusOK {
		t.Fatalf("GET of the real link: %d, want 200", code)
	}
}

// TestSTARTTLS: StartTLSRequired sends over TLS to a server that offers it
// (with authentication), and refuses, sending nothing, a server that does
// not; StartTLSOpportunistic sends to both.
func TestSTARTTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tlsMail := mailtest.StartWith(t, mailtest.Options{STARTTLS: true})
	info := e.newTenant("Tls")
	required, err := invite.New(withSMTP(e.cfg, invite.SMTPConfig{
		Addr:     tlsMail.SMTPAddr(),
		StartTLS: invite.StartTLSRequired,
		TLS:      &tls.Config{RootCAs: tlsMail.CertPool(), MinVersion: tls.VersionTLS12},
		Auth:     smtp.PlainAuth("", "rtmx", "secret", "127.0.0.1"),
	}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := required.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send over STARTTLS: %v", err)
	}
	if got := tlsMail.Messages(t); len(got) != 1 {
		t.Fatalf("%d messages on the TLS server, want 1", len(got))
	}

	other := e.newTenant("Plain")
	plainRequired, err := invite.New(withSMTP(e.cfg, invite.SMTPConfig{Addr: e.mail.SMTPAddr(), StartTLS: invite.StartTLSRequired}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	err = plainRequired.Send(t.Context(), other, admin)
	if !errors.Is(err, invite.ErrSend) || !strings.Contains(err.Error(), "does not offer STARTTLS") {
		t.Fatalf("Send requiring STARTTLS to a server without it: %v", err)
	}
	if got := e.mail.Messages(t); len(got) != 0 {
		t.Fatalf("%d messages sent in clear text", len(got))
	}
	// An untrusted certificate fails the handshake.
	third := e.newTenant("Untrusted")
	untrusted, err := invite.New(withSMTP(e.cfg, invite.SMTPConfig{Addr: tlsMail.SMTPAddr()}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := untrusted.Send(t.Context(), third, admin); !errors.Is(err, invite.ErrSend) || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("Send to an untrusted certificate: %v", err)
	}
	opportunistic, err := invite.New(withSMTP(e.cfg, invite.SMTPConfig{Addr: e.mail.SMTPAddr(), StartTLS: invite.StartTLSOpportunistic}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := opportunistic.Send(t.Context(), other, admin); err != nil {
		t.Fatalf("opportunistic Send: %v", err)
	}
	if got := e.mail.Messages(t); len(got) != 1 {
		t.Fatalf("%d messages, want 1", len(got))
	}
}

func withSMTP(c invite.Config, s invite.SMTPConfig) invite.Config {
	c.SMTP = s
	return c
}

// TestInstallTakesTheControlPlaneLock: Install waits while another
// session holds store.ControlPlaneLock, the lock every installer of the
// control plane takes, and finishes once it is released.
func TestInstallTakesTheControlPlaneLock(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	conn, err := pgx.Connect(t.Context(), e.d.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), `SELECT pg_advisory_xact_lock($1)`, store.ControlPlaneLock); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- invite.Install(t.Context(), e.admin) }()
	if !e.waitsFor(conn.PgConn().PID()) {
		t.Error("Install did not wait for the control-plane lock")
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Install: %v", err)
	}
}

// TestInstallIdempotent: Install again changes nothing; without it the
// calls say to run it.
func TestInstallIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Install")
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if err := invite.Install(t.Context(), e.admin); err != nil {
		t.Fatalf("Install again: %v", err)
	}
	if rows := e.rows(info.ID); len(rows) != 1 {
		t.Fatalf("rows after Install again: %+v", rows)
	}
	if err := invite.Install(t.Context(), nil); !errors.Is(err, invite.ErrInvalidConfig) {
		t.Fatalf("Install(nil): %v", err)
	}

	fresh := openAdmin(t, e.d.NewDatabase(t))
	cfg := e.cfg
	cfg.Admin = fresh
	iv, err := invite.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	var zero [32]byte
	if _, err := iv.Redeem(t.Context(), base64.RawURLEncoding.EncodeToString(zero[:])); !errors.Is(err, invite.ErrNotInstalled) || errors.Is(err, invite.ErrInvalidToken) {
		t.Fatalf("Redeem without Install: %v, want ErrNotInstalled", err)
	}
	if err := iv.Remove(t.Context(), info.ID); !errors.Is(err, invite.ErrNotInstalled) {
		t.Fatalf("Remove without Install: %v, want ErrNotInstalled", err)
	}
}

// TestConfigErrors: each bad field is named, with its rule.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		edit func(*invite.Config)
		want string
	}{
		{"no admin", func(c *invite.Config) { c.Admin = nil }, "Config.Admin is required"},
		{"no addr", func(c *invite.Config) { c.SMTP.Addr = "" }, "Config.SMTP.Addr is required"},
		{"addr without port", func(c *invite.Config) { c.SMTP.Addr = "smtp.example" }, "must be host:port"},
		{"bad port", func(c *invite.Config) { c.SMTP.Addr = "smtp.example:0" }, "port must be 1 to 65535"},
		{"no TLS to remote", func(c *invite.Config) { c.SMTP.Addr = "smtp.example:25"; c.SMTP.StartTLS = invite.StartTLSNone }, "StartTLS none is allowed only for a loopback server"},
		{"bad policy", func(c *invite.Config) { c.SMTP.StartTLS = 7 }, "not a StartTLS constant"},
		{"negative timeout", func(c *invite.Config) { c.SMTP.Timeout = -1 }, "Config.SMTP.Timeout"},
		{"long timeout", func(c *invite.Config) { c.SMTP.Timeout = time.Hour }, "Config.SMTP.Timeout"},
		{"bad hello", func(c *invite.Config) { c.SMTP.HelloName = "bad name\r\n" }, "Config.SMTP.HelloName"},
		{"no from", func(c *invite.Config) { c.From = "" }, "Config.From is required"},
		{"from with CRLF", func(c *invite.Config) { c.From = "a@rtmx.example\r\nBcc: x@evil.example" }, "line break"},
		{"two froms", func(c *invite.Config) { c.From = "a@rtmx.example, b@rtmx.example" }, "not one address"},
		{"from quoted", func(c *invite.Config) { c.From = `"a b"@rtmx.example` }, "Config.From's address"},
		{"no link", func(c *invite.Config) { c.LinkBase = "" }, "Config.LinkBase is required"},
		{"http link", func(c *invite.Config) { c.LinkBase = "http://rtmx.example/invite" }, "must be https"},
		{"ftp link", func(c *invite.Config) { c.LinkBase = "ftp://rtmx.example/invite" }, "https URL"},
		{"relative link", func(c *invite.Config) { c.LinkBase = "/invite" }, "https URL"},
		{"link with query", func(c *invite.Config) { c.LinkBase = "https://rtmx.example/invite?x=1" }, "query or fragment"},
		{"link with fragment", func(c *invite.Config) { c.LinkBase = "https://rtmx.example/invite#x" }, "query or fragment"},
		{"link with user", func(c *invite.Config) { c.LinkBase = "https://u:p@rtmx.example/invite" }, "user info"},
		{"link with space", func(c *invite.Config) { c.LinkBase = "https://rtmx.example/in vite" }, "white space"},
		{"short TTL", func(c *invite.Config) { c.TTL = time.Minute }, "Config.TTL"},
		{"long TTL", func(c *invite.Config) { c.TTL = 31 * 24 * time.Hour }, "Config.TTL"},
	} {
		cfg := e.cfg
		tc.edit(&cfg)
		_, err := invite.New(cfg)
		if !errors.Is(err, invite.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New: %v, want ErrInvalidConfig saying %q", tc.name, err, tc.want)
		}
	}
	good := e.cfg
	good.LinkBase, good.SMTP.Addr, good.SMTP.StartTLS = "https://rtmx.example/invite", "smtp.example:587", invite.StartTLSRequired
	if _, err := invite.New(good); err != nil {
		t.Errorf("New with a production-like config: %v", err)
	}
}

// TestSubjectEncoding: the tenant's name reaches the Subject as written,
// whatever it holds: non-ASCII, the length limit, and text that looks like
// an encoded word (which, unencoded, a client would decode).
func TestSubjectEncoding(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i, name := range []string{
		"Plain Name",
		"=?utf-8?b?4oCuQWNtZQ==?=",
		"Ünïcödé 名前 ☃ 🚀",
		strings.Repeat("é", 100),
		"a_b=c?d \"quoted\" (paren) <angle> Bcc: x@evil.example",
	} {
		info := e.newTenant(name)
		to := "admin" + string(rune('a'+i)) + "@acme.example"
		if err := e.iv.Send(t.Context(), info, to); err != nil {
			t.Fatalf("Send with name %q: %v", name, err)
		}
		msgs := e.messagesTo(to)
		if len(msgs) != 1 {
			t.Fatalf("%d messages to %s", len(msgs), to)
		}
		if want := "Invitation to administer " + name; msgs[0].Subject != want {
			t.Errorf("Subject %q, want %q", msgs[0].Subject, want)
		}
		h := e.mail.Headers(t, msgs[0].ID)
		if got := h["Subject"]; len(got) != 1 || !strings.HasPrefix(got[0], "=?utf-8?q?") || strings.Contains(got[0], "Bcc:") {
			t.Errorf("Subject header %q, want Q-encoded words only", got)
		}
		if got := h["Bcc"]; len(got) != 0 {
			t.Errorf("a Bcc header arrived: %q", got)
		}
		if text := e.mail.Message(t, msgs[0].ID).Text; !strings.Contains(text, name) {
			t.Errorf("the body does not name the tenant %q:\n%s", name, text)
		}
	}
}

// TestConcurrentRedeem: of many simultaneous requests with one token,
// exactly one redeems it.
func TestConcurrentRedeem(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	info := e.newTenant("Race")
	if err := e.iv.Send(t.Context(), info, admin); err != nil {
		t.Fatalf("Send: %v", err)
	}
	_, token := e.link(e.messagesTo(admin)[0])
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { _, errs[i] = e.iv.Redeem(t.Context(), token) })
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, invite.ErrInvalidToken):
			t.Fatalf("Redeem: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent Redeems succeeded, want 1", ok, len(errs))
	}
}

// checkOneThread checks that msgs, the mails of one invitation, have
// Message-IDs of their own and name one thread in References.
func checkOneThread(t *testing.T, e *env, msgs []mailtest.Summary) {
	t.Helper()
	ids, threads := map[string]bool{}, map[string]bool{}
	for _, m := range msgs {
		ids[m.MessageID] = true
		for _, r := range e.mail.Headers(t, m.ID)["References"] {
			threads[r] = true
		}
	}
	if len(ids) != len(msgs) || len(threads) != 1 {
		t.Fatalf("%d mails with %d Message-IDs and References %v: want a Message-ID each and one thread", len(msgs), len(ids), threads)
	}
}
