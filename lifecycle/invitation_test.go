package lifecycle_test

import (
	"net/http"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/lifecycle"
	"github.com/rtmx-ai/tenancy/tenant"
)

var linkRE = regexp.MustCompile(`https?://\S+\?token=[A-Za-z0-9_-]+`)

// invitationLink returns the one invitation mailed to address, and its link.
func (e *env) invitationLink(t testing.TB, address string) string {
	t.Helper()
	mails := e.mailsTo(t, address)
	require.Len(t, mails, 1, "exactly one invitation to %s", address)
	link := linkRE.FindString(mails[0].Text)
	require.NotEmpty(t, link, "the invitation holds a link: %q", mails[0].Text)
	return link
}

func get(t testing.TB, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// TestProvisioningInvitesTheAdmin is the invitation of test case 1: the
// admin's invitation arrives over real SMTP, its link works once and
// then never again; deprovisioning deletes what is left of it.
func TestProvisioningInvitesTheAdmin(t *testing.T) {
	e := newEnv(t, withMail())
	req := request(t, "invited", tenant.TierStandard)
	run, err := e.lc.Provision(t.Context(), req)
	require.NoError(t, err)
	assert.Equal(t, lifecycle.RunSucceeded, run.State)
	link := e.invitationLink(t, req.AdminEmail)
	assert.Equal(t, http.StatusOK, get(t, link), "the link works once")
	assert.Equal(t, http.StatusGone, get(t, link), "and never again")

	_, err = e.lc.Deprovision(t.Context(), req.ID)
	require.NoError(t, err)
	left, err := e.inviter.Remains(t.Context(), req.ID)
	require.NoError(t, err)
	assert.Empty(t, left)
}

// TestSMTPDownCompensates: with the mail server down, the invitation step
// fails and provisioning undoes the placement, keys and route made before:
// the tenant is failed with the reason and nothing of it remains.
func TestSMTPDownCompensates(t *testing.T) {
	e := newEnv(t, withMail())
	require.NoError(t, e.mail.Stop())
	req := request(t, "nosmtp", tenant.TierEnterprise)
	run, err := e.lc.Provision(t.Context(), req)
	var re *lifecycle.RunError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "invitation", re.Step)
	assert.True(t, re.Compensated, "%v", err)
	assert.Contains(t, run.Reason, "step invitation")
	info, err := e.admin.Tenant(t.Context(), req.ID)
	require.NoError(t, err)
	assert.Equal(t, tenant.StateFailed, info.State)
	assert.Empty(t, e.remains(t, req.ID), "nothing of the tenant is left")

	// With the server back, a new tenant gets its invitation.
	e.mail.Restart(t)
	next := request(t, "smtpback", tenant.TierStandard)
	_, err = e.lc.Provision(t.Context(), next)
	require.NoError(t, err)
	e.invitationLink(t, next.AdminEmail)
	assert.Empty(t, e.mailsTo(t, req.AdminEmail), "the failed tenant's admin got nothing")
}
