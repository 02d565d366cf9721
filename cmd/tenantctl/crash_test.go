package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/mailtest"
)

// withSMTP configures the invitation step for d, sending to addr.
func (d *dev) withSMTP(addr string) {
	d.env["TENANTCTL_SMTP_ADDR"] = addr
	d.env["TENANTCTL_SMTP_FROM"] = "RTMX <no-reply@rtmx.example>"
	d.env["TENANTCTL_SMTP_STARTTLS"] = "none" // loopback only
	d.env["TENANTCTL_SMTP_LINK_BASE"] = "http://127.0.0.1:9/invite"
}

// mailsTo counts the messages mail received for address.
func mailsTo(t *testing.T, mail *mailtest.Server, address string) int {
	t.Helper()
	n := 0
	for _, s := range mail.Messages(t) {
		for _, to := range mail.Message(t, s.ID).To {
			if to.Address == address {
				n++
			}
		}
	}
	return n
}

// silentSMTP is a TCP server that accepts connections and never says a
// word: an SMTP client waits for its greeting until it gives up. It
// reports each connection it accepted.
func silentSMTP(t *testing.T) (addr string, accepted <-chan struct{}) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ch := make(chan struct{}, 16)
	var mu sync.Mutex // guards conns
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
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String(), ch
}

// TestKilledProvisionResumes: a tenantctl provision killed with SIGKILL
// while its invitation step waits on an SMTP server that never answers
// leaves the run open; a second provision is refused; tenantctl resume,
// with a working SMTP server, completes it with one invitation, one route
// and one audit entry; a further resume finds nothing to do.
func TestKilledProvisionResumes(t *testing.T) {
	mail := mailtest.Start(t)
	d := newDev(t)
	silent, accepted := silentSMTP(t)
	d.withSMTP(silent)

	cmd := d.command(t.Context(), "provision", "-f", seedRequest)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-accepted:
	case err := <-exited:
		t.Fatalf("provision ended before the invitation step: %v\n%s", err, out.String())
	case <-time.After(2 * time.Minute):
		t.Fatal("the invitation step did not connect to the SMTP server")
	}
	require.NoError(t, cmd.Process.Kill())
	<-exited
	assert.Equal(t, -1, cmd.ProcessState.ExitCode(), "killed by a signal")

	show := jsonOut[showJSON](t, d.run("show", "abc123", "--output", "json"))
	require.Len(t, show.Runs, 1)
	assert.Equal(t, "running", show.Runs[0].State, "the killed run stays open")
	last := show.Runs[0].Steps[len(show.Runs[0].Steps)-1]
	assert.Equal(t, "invitation", last.Step)
	assert.Equal(t, "started", last.Status)
	require.NotNil(t, show.Tenant)
	assert.Equal(t, "provisioning", show.Tenant.State)

	r := d.run("provision", "-f", seedRequest)
	assert.Equal(t, exitConflict, r.code, "a second provisioning is refused: %s", r)

	d.withSMTP(mail.SMTPAddr())
	r = d.run("resume", "abc123")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, "provision of tenant abc123: succeeded")
	assert.Equal(t, 1, mailsTo(t, mail, "admin@acme.defense"), "one invitation")

	show = jsonOut[showJSON](t, d.run("show", "abc123", "--output", "json"))
	require.NotNil(t, show.Tenant)
	assert.Equal(t, "active", show.Tenant.State)
	assert.Equal(t, []string{"abc123.rtmx.localhost"}, show.Routes, "one route")
	require.Len(t, show.Runs, 1)
	assert.Equal(t, "succeeded", show.Runs[0].State)
	applied := map[string]int{}
	for _, s := range show.Runs[0].Steps {
		if s.Status == "done" {
			applied[s.Step]++
		}
	}
	for _, s := range []string{"placement", "keys", "objects", "routes", "invitation", "audit", "activate"} {
		assert.Equal(t, 1, applied[s], "step %s done once", s)
	}
	snap := d.snapshot()
	assert.Equal(t, 1, strings.Count(snap["table platform_audit"], ",tenant.provision,tenant/abc123,"), "one audit entry")
	assert.Equal(t, 3, strings.Count(snap["table tenant_keysets"], "(abc123,"), "one keyset per purpose")

	r = d.run("resume", "abc123")
	assert.Equal(t, exitNotFound, r.code, "nothing left to resume: %s", r)
	assert.Equal(t, 1, mailsTo(t, mail, "admin@acme.defense"), "still one invitation")
}

// TestProvisionKilledAtRandomMoments kills tenantctl provision with
// SIGKILL at random moments and finishes each tenant the way an operator
// would (resume if its run is open, provision again if it never started):
// every tenant ends active with one route, one provisioning entry in the
// audit trail and its invitation (twice at most: the one window where a
// crash between the SMTP server's acceptance and the commit re-sends).
func TestProvisionKilledAtRandomMoments(t *testing.T) {
	mail := mailtest.Start(t)
	d := newDev(t)
	d.withSMTP(mail.SMTPAddr())
	const tenants = 10
	// How long a whole run takes, start-up included: the kills fall
	// within it, most of them after the start-up.
	calibrate := "tenant:\n  id: calib\n  name: Calibration\n  tier: standard\n  region: us-gov-east-1\n  admin_email: admin@calib.example\n  settings:\n    encryption: platform-managed\n"
	cmd := d.command(t.Context(), "provision", "-f", "-")
	cmd.Stdin = strings.NewReader(calibrate)
	began := time.Now()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	whole := time.Since(began)
	for i := range tenants {
		id := fmt.Sprintf("rnd%d", i)
		req := "tenant:\n  id: " + id + "\n  name: Random " + id + "\n  tier: standard\n  region: us-gov-east-1\n  admin_email: admin@" + id + ".example\n  settings:\n    encryption: platform-managed\n"
		ctx, cancel := context.WithCancel(t.Context())
		cmd := d.command(ctx, "provision", "-f", "-")
		cmd.Stdin = strings.NewReader(req)
		require.NoError(t, cmd.Start())
		delay := whole/4 + time.Duration(rand.Int64N(int64(whole)))
		done := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(done)
		}()
		select {
		case <-time.After(delay):
			_ = cmd.Process.Kill()
			<-done
		case <-done:
		}
		cancel()

		r := d.run("show", id, "--output", "json")
		switch r.code {
		case exitNotFound: // killed before the run was journaled
			t.Logf("%s: killed after %v, before its run was journaled", id, delay)
			r = d.runIn(req, "provision", "-f", "-")
			require.Equal(t, 0, r.code, "%s: %s", id, r)
		case 0:
			s := jsonOut[showJSON](t, r)
			last := s.Runs[len(s.Runs)-1]
			t.Logf("%s: killed after %v: run %s, %d steps journaled", id, delay, last.State, len(last.Steps))
			if last.State == "running" || last.State == "compensating" {
				r = d.run("resume", id)
				require.Equal(t, 0, r.code, "%s after a kill at %v: %s", id, delay, r)
			}
		default:
			t.Fatalf("show %s: %s", id, r)
		}
		s := jsonOut[showJSON](t, d.run("show", id, "--output", "json"))
		require.NotNil(t, s.Tenant, id)
		assert.Equal(t, "active", s.Tenant.State, id)
		assert.Equal(t, []string{id + ".rtmx.localhost"}, s.Routes, id)
		require.Len(t, s.Runs, 1, id)
		assert.Equal(t, "succeeded", s.Runs[0].State, id)
		n := mailsTo(t, mail, "admin@"+id+".example")
		assert.True(t, n == 1 || n == 2, "%s: %d invitations", id, n)
	}
	snap := d.snapshot()
	for i := range tenants {
		assert.Equal(t, 1, strings.Count(snap["table platform_audit"], fmt.Sprintf(",tenant.provision,tenant/rnd%d,", i)), "one provisioning entry for rnd%d", i)
	}
}

// TestInterruptedProvisionStaysOpen: SIGINT (Ctrl-C) while the invitation
// step waits ends tenantctl with status 1, saying the run stays open and
// how to continue it; resume does.
func TestInterruptedProvisionStaysOpen(t *testing.T) {
	mail := mailtest.Start(t)
	d := newDev(t)
	silent, accepted := silentSMTP(t)
	d.withSMTP(silent)
	cmd := d.command(t.Context(), "provision", "-f", seedRequest)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Start())
	select {
	case <-accepted:
	case <-time.After(2 * time.Minute):
		t.Fatal("the invitation step did not connect to the SMTP server")
	}
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	err := cmd.Wait()
	assert.Error(t, err)
	assert.Equal(t, exitFailure, cmd.ProcessState.ExitCode(), "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	assert.Contains(t, stderr.String(), "stays open: 'tenantctl resume abc123' continues it")
	assert.Empty(t, stdout.String())

	d.withSMTP(mail.SMTPAddr())
	r := d.run("resume", "abc123")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Equal(t, 1, mailsTo(t, mail, "admin@acme.defense"))
}
