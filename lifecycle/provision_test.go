package lifecycle_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/lifecycle"
	"github.com/rtmx-ai/tenancy/tenant"
)

// TestProvisioningCreatesAllRequiredResources is REQ-DEPLOY-004 test case
// 1 for each tier: the placement (schema, or database, or database on the
// dedicated cluster) with its login role, the three keysets, the
// Kubernetes namespace with its objects (on a real kube-apiserver), the
// route (and the enterprise tier's dedicated ingress), the invitation
// received over real SMTP, the audit entry, a tenant that is active and
// works, and a journal that shows every step done in order.
// rtmx:req REQ-TEN-012
func TestProvisioningCreatesAllRequiredResources(t *testing.T) {
	for _, tier := range []tenant.Tier{tenant.TierStandard, tenant.TierEnterprise, tenant.TierGovernment} {
		t.Run(string(tier), func(t *testing.T) {
			e := newEnv(t, withGov(), withKube(), withMail())
			req := request(t, "prov", tier)
			run, err := e.lc.Provision(t.Context(), req)
			require.NoError(t, err)
			assert.Equal(t, lifecycle.RunSucceeded, run.State)

			info, err := e.admin.Tenant(t.Context(), req.ID)
			require.NoError(t, err)
			assert.Equal(t, tenant.StateActive, info.State)
			assert.Equal(t, tier, info.Tier)

			// Placement, by the servers themselves.
			left, err := e.admin.Remains(t.Context(), req.ID)
			require.NoError(t, err)
			switch tier {
			case tenant.TierStandard:
				assert.Contains(t, left, "schema "+req.ID.SchemaName())
			case tenant.TierEnterprise:
				assert.Contains(t, left, "database "+e.d.Prefix()+req.ID.SchemaName()+" on this cluster")
			case tenant.TierGovernment:
				assert.Contains(t, left, "database "+e.d.Prefix()+req.ID.SchemaName()+" on cluster "+govCluster)
			}
			assert.True(t, hasPrefix(left, "login role "), "the tenant's login role: %q", left)

			// Keysets: all three, and they work in the tenant's context.
			for _, p := range keys.Purposes() {
				_, err := e.admin.Keysets().Get(t.Context(), req.ID, p)
				assert.NoError(t, err, "keyset %s", p)
			}
			ctx := tenant.NewContext(t.Context(), req.ID)
			sealed, err := e.km.Seal(ctx, []byte("secret"), keys.Binding{Table: "requirements", Column: "sealed", RowKey: "REQ-1"})
			require.NoError(t, err)

			// The tenant's placement works, as the tenant.
			_, err = e.db.Exec(ctx, `INSERT INTO requirements (req_id, requirement_text, sealed) VALUES ('REQ-1', 'x', $1)`, sealed)
			require.NoError(t, err)
			assert.Equal(t, map[string]string{"REQ-1": "x"}, e.requirements(t, ctx))

			// Route and audit entry.
			routes, err := lifecycle.Routes(t.Context(), e.admin, req.ID)
			require.NoError(t, err)
			assert.Equal(t, []string{req.ID.DNSLabel() + ".rtmx.example"}, routes)
			assert.Equal(t, 1, e.platformEntries(t, "tenant.provision", req.ID))
			rep, err := e.platform.Verify(t.Context())
			require.NoError(t, err, "the platform trail verifies")
			assert.EqualValues(t, 1, rep.Entries)

			// The journal: every step applied once, in order.
			var names []string
			for _, s := range run.Steps {
				assert.Equal(t, lifecycle.StepDone, s.Status, s.Step)
				names = append(names, s.Step)
			}
			assert.Equal(t, []string{"validate", "placement", "keys", "objects", "namespace", "resources", "routes", "ingress", "invitation", "audit", "activate"}, names)

			// The invitation arrived.
			link := e.invitationLink(t, req.AdminEmail)
			assert.Equal(t, http.StatusOK, get(t, link))

			// The namespace and its objects, read back from the API server.
			e.assertNamespace(t, req.ID, tier)
			runs, err := e.lc.Runs(t.Context(), req.ID)
			require.NoError(t, err)
			require.Len(t, runs, 1)
			assert.Equal(t, req, runs[0].Request, "the journal keeps the request")
		})
	}
}

func hasPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
			return true
		}
	}
	return false
}

// failStep is a step that fails its Apply with err, and records what was
// asked of it.
type failStep struct {
	name    string
	err     error
	applied int
	removed []lifecycle.Op
}

func (s *failStep) Name() string { return s.name }
func (s *failStep) Apply(context.Context, *lifecycle.Target) error {
	s.applied++
	return s.err
}
func (s *failStep) Remove(_ context.Context, t *lifecycle.Target) error {
	s.removed = append(s.removed, t.Op)
	return nil
}
func (s *failStep) Remains(context.Context, *lifecycle.Target) ([]string, error) { return nil, nil }

// TestFailedStepCompensates: a step that fails after the placement, keys
// and route were made undoes them all, in reverse, and leaves the tenant
// failed with the reason; nothing of the tenant remains.
func TestFailedStepCompensates(t *testing.T) {
	for _, tier := range []tenant.Tier{tenant.TierStandard, tenant.TierEnterprise} {
		t.Run(string(tier), func(t *testing.T) {
			boom := &failStep{name: "dns", err: errors.New("the DNS provider refused: quota")}
			e := newEnv(t, withSteps(boom))
			req := request(t, "comp", tier)
			run, err := e.lc.Provision(t.Context(), req)
			var re *lifecycle.RunError
			require.ErrorAs(t, err, &re)
			assert.ErrorIs(t, err, lifecycle.ErrStepFailed)
			assert.True(t, re.Compensated, "compensated: %v", err)
			assert.Equal(t, "dns", re.Step)
			assert.Contains(t, err.Error(), "the DNS provider refused")
			assert.Equal(t, lifecycle.RunFailed, run.State)
			assert.Contains(t, run.Reason, "step dns: the DNS provider refused")
			assert.Equal(t, []lifecycle.Op{lifecycle.OpCompensate}, boom.removed, "the failed step is undone too")

			info, err := e.admin.Tenant(t.Context(), req.ID)
			require.NoError(t, err)
			assert.Equal(t, tenant.StateFailed, info.State)
			assert.Empty(t, e.remains(t, req.ID), "nothing of the tenant is left")
			_, err = e.db.Exec(tenant.NewContext(t.Context(), req.ID), `SELECT 1`)
			assert.Error(t, err, "no connection for a failed tenant")
			assert.Equal(t, 0, e.platformEntries(t, "tenant.provision.undo", req.ID), "the audit step never ran: nothing to counter")

			// The order of removal is the reverse of application.
			var removals []string
			for _, s := range run.Steps {
				if s.Phase == "remove" {
					removals = append(removals, s.Step)
				}
			}
			assert.Equal(t, []string{"dns", "routes", "objects", "keys", "placement"}, removals)

			// The ID stays taken; a new request for it is refused, changing nothing.
			_, err = e.lc.Provision(t.Context(), req)
			assert.ErrorIs(t, err, lifecycle.ErrTenantExists)
			runs, err := e.lc.Runs(t.Context(), req.ID)
			require.NoError(t, err)
			assert.Len(t, runs, 1)
		})
	}
}

// TestMasterKeyUnavailableCompensates: the platform's master key cannot
// be read (its file gone) when the keys step runs: the placement made
// before is removed and the tenant is failed, with the reason.
func TestMasterKeyUnavailableCompensates(t *testing.T) {
	e := newEnv(t)
	req := request(t, "nokek", tenant.TierStandard)
	// The KEK file cannot be read any more (a directory stands in its
	// place) between the environment's set-up and the run.
	require.NoError(t, removeFile(e.kekPath))
	require.NoError(t, os.Mkdir(e.kekPath, 0o700))
	run, err := e.lc.Provision(t.Context(), req)
	var re *lifecycle.RunError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "keys", re.Step)
	assert.True(t, re.Compensated, "%v", err)
	assert.Equal(t, lifecycle.RunFailed, run.State)
	info, err := e.admin.Tenant(t.Context(), req.ID)
	require.NoError(t, err)
	assert.Equal(t, tenant.StateFailed, info.State)
	assert.Empty(t, e.remains(t, req.ID))
}

// TestHostileRequestsChangeNothing: a duplicate ID, a region the
// deployment does not serve and a request with no ID are refused before
// anything is journaled or made.
func TestHostileRequestsChangeNothing(t *testing.T) {
	e := newEnv(t)
	existing := request(t, "dup", tenant.TierStandard)
	_, err := e.lc.Provision(t.Context(), existing)
	require.NoError(t, err)
	ctx := tenant.NewContext(t.Context(), existing.ID)
	e.insertReq(t, ctx, "REQ-1", "precious")

	t.Run("duplicate id", func(t *testing.T) {
		again := *existing
		again.Name = "Someone Else"
		again.Tier = tenant.TierEnterprise
		_, err := e.lc.Provision(t.Context(), &again)
		require.ErrorIs(t, err, lifecycle.ErrTenantExists)
		assert.Contains(t, err.Error(), "never reused")
		info, err := e.admin.Tenant(t.Context(), existing.ID)
		require.NoError(t, err)
		assert.Equal(t, existing.Name, info.Name)
		assert.Equal(t, tenant.TierStandard, info.Tier)
		assert.Equal(t, map[string]string{"REQ-1": "precious"}, e.requirements(t, ctx))
		runs, err := e.lc.Runs(t.Context(), existing.ID)
		require.NoError(t, err)
		assert.Len(t, runs, 1, "no run journaled")
	})
	t.Run("region not served", func(t *testing.T) {
		lc, err := lifecycle.New(t.Context(), lifecycle.Config{Admin: e.admin, Steps: e.steps, Regions: []string{"eu-west-2"}})
		require.NoError(t, err)
		req := request(t, "region", tenant.TierStandard)
		_, err = lc.Provision(t.Context(), req)
		var rerr *lifecycle.RequestError
		require.ErrorAs(t, err, &rerr)
		require.ErrorIs(t, err, lifecycle.ErrInvalidRequest)
		assert.Equal(t, "tenant.region", rerr.Problems[0].Path)
		assert.Contains(t, rerr.Problems[0].Rule, "eu-west-2")
		_, err = e.admin.Tenant(t.Context(), req.ID)
		assert.ErrorIs(t, err, lifecycle.ErrUnknownTenant)
		runs, err := e.lc.Runs(t.Context(), req.ID)
		require.NoError(t, err)
		assert.Empty(t, runs)
	})
	t.Run("an ID the platform keeps its keys under", func(t *testing.T) {
		for _, id := range []string{platformKeyID, backupKeyID} {
			req, err := parse(t, doc(t, "id", `"`+id+`"`, "tier", `"standard"`, "encryption", `"platform-managed"`, "kms_key_arn", omit))
			require.NoError(t, err)
			_, err = e.lc.Provision(t.Context(), req)
			require.ErrorIs(t, err, lifecycle.ErrTenantExists, id)
			if id == backupKeyID {
				assert.Contains(t, err.Error(), "the ID of the backup key's keyset")
			} else {
				assert.Contains(t, err.Error(), "step keys: ")
			}
			_, err = e.admin.Tenant(t.Context(), req.ID)
			assert.ErrorIs(t, err, lifecycle.ErrUnknownTenant, "no tenant %s made", id)
			for _, p := range keys.Purposes() {
				_, err := e.admin.Keysets().Get(t.Context(), req.ID, p)
				assert.NoError(t, err, "the platform's %s keyset of %s is untouched", p, id)
			}
		}
		_, err := e.platform.Verify(t.Context())
		assert.NoError(t, err, "the platform trail still verifies")
	})
	t.Run("objects under the new tenant's prefix", func(t *testing.T) {
		req := request(t, "planted", tenant.TierStandard)
		planted := filepath.Join(e.spec.ObjDir, "tenants", req.ID.String(), "planted.txt")
		require.NoError(t, os.MkdirAll(filepath.Dir(planted), 0o700))
		require.NoError(t, os.WriteFile(planted, []byte("not the new tenant's"), 0o600))
		_, err := e.lc.Provision(t.Context(), req)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "step objects: ")
		_, err = os.Stat(planted)
		assert.NoError(t, err, "the objects are left alone")
		_, err = e.admin.Tenant(t.Context(), req.ID)
		assert.ErrorIs(t, err, lifecycle.ErrUnknownTenant)
	})
	t.Run("a host routed to another tenant", func(t *testing.T) {
		static, err := lifecycle.NewRoutesStep(e.admin, "svc/x", "shared.rtmx.example")
		require.NoError(t, err)
		lc, err := lifecycle.New(t.Context(), lifecycle.Config{Admin: e.admin, Steps: []lifecycle.Step{&lifecycle.PlacementStep{Admin: e.admin}, static}})
		require.NoError(t, err)
		first := request(t, "hosta", tenant.TierStandard)
		_, err = lc.Provision(t.Context(), first)
		require.NoError(t, err)
		second := request(t, "hostb", tenant.TierStandard)
		_, err = lc.Provision(t.Context(), second)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "host shared.rtmx.example is routed to another tenant")
		_, err = e.admin.Tenant(t.Context(), second.ID)
		assert.ErrorIs(t, err, lifecycle.ErrUnknownTenant, "nothing made")
		routes, err := lifecycle.Routes(t.Context(), e.admin, first.ID)
		require.NoError(t, err)
		assert.Equal(t, []string{"shared.rtmx.example"}, routes, "the first tenant keeps its route")
	})
	t.Run("no request", func(t *testing.T) {
		_, err := e.lc.Provision(t.Context(), &lifecycle.Request{})
		require.ErrorIs(t, err, lifecycle.ErrInvalidRequest)
		_, err = e.lc.Provision(t.Context(), nil)
		require.ErrorIs(t, err, lifecycle.ErrInvalidRequest)
	})
	t.Run("bad config", func(t *testing.T) {
		for name, cfg := range map[string]lifecycle.Config{
			"no admin":       {Steps: e.steps},
			"bad step name":  {Admin: e.admin, Steps: []lifecycle.Step{&failStep{name: "Bad Name"}}},
			"twice":          {Admin: e.admin, Steps: []lifecycle.Step{&failStep{name: "x"}, &failStep{name: "x"}}},
			"reserved":       {Admin: e.admin, Steps: []lifecycle.Step{&failStep{name: "activate"}}},
			"nil step":       {Admin: e.admin, Steps: []lifecycle.Step{nil}},
			"bad region":     {Admin: e.admin, Regions: []string{"mars"}},
			"backup no role": {Admin: e.admin, Backup: &lifecycle.Backup{Admin: e.admin, Bucket: e.backupBkt, Keys: e.prov, KeyID: tenant.MustParseID(backupKeyID)}},
		} {
			_, err := lifecycle.New(t.Context(), cfg)
			assert.ErrorIs(t, err, lifecycle.ErrInvalidConfig, name)
		}
	})
}

// TestTwoProvisionsOfOneIDAtOnce: of two runs of one ID started together,
// exactly one provisions the tenant; the other is refused (a run is open,
// or the ID is taken) and changes nothing.
func TestTwoProvisionsOfOneIDAtOnce(t *testing.T) {
	e := newEnv(t)
	req := request(t, "race", tenant.TierStandard)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := e.lc.Provision(t.Context(), req)
			errs <- err
		}()
	}
	var ok, refused int
	for range 2 {
		err := <-errs
		switch {
		case err == nil:
			ok++
		case errors.Is(err, lifecycle.ErrRunInProgress), errors.Is(err, lifecycle.ErrTenantExists):
			refused++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	assert.Equal(t, 1, ok)
	assert.Equal(t, 1, refused)
	info, err := e.admin.Tenant(t.Context(), req.ID)
	require.NoError(t, err)
	assert.Equal(t, tenant.StateActive, info.State)
	assert.Equal(t, 1, e.platformEntries(t, "tenant.provision", req.ID))
}

var _ = pgx.ErrNoRows

// TestResumeNeedsTheStepsTheRunWasStartedWith: a run journaled with a
// step this Lifecycle lacks is not resumed (what that step made would be
// left behind), with an error saying so.
func TestResumeNeedsTheStepsTheRunWasStartedWith(t *testing.T) {
	boom := &failStep{name: "dns", err: context.Canceled}
	e := newEnv(t, withSteps(boom))
	req := request(t, "steps", tenant.TierStandard)
	ctx, cancel := context.WithCancel(t.Context())
	lifecycle.SetHook(e.lc, func(step, dir, when string) {
		if step == "dns" && when == "before" {
			cancel()
		}
	})
	_, err := e.lc.Provision(ctx, req)
	require.ErrorIs(t, err, lifecycle.ErrInterrupted)
	lc, err := lifecycle.New(t.Context(), lifecycle.Config{Admin: e.admin, Steps: e.steps[:3]})
	require.NoError(t, err)
	_, err = lc.Resume(t.Context(), req.ID)
	require.ErrorIs(t, err, lifecycle.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "journaled step")
	boom.err = nil
	run, err := e.lc.Resume(t.Context(), req.ID)
	require.NoError(t, err, "with its steps it resumes")
	assert.Equal(t, lifecycle.RunSucceeded, run.State)
}

// TestPlansChangeNothing: Plan and PlanDeprovision say what would be done,
// step by step, and do none of it.
func TestPlansChangeNothing(t *testing.T) {
	e := newEnv(t)
	req := request(t, "plan", tenant.TierEnterprise)
	plan, err := e.lc.Plan(t.Context(), req)
	require.NoError(t, err)
	var steps []string
	for _, p := range plan {
		steps = append(steps, p.Step)
		assert.NotEmpty(t, p.Does)
	}
	assert.Equal(t, []string{"validate", "placement", "keys", "objects", "routes", "audit", "activate"}, steps)
	assert.Contains(t, plan[1].Does, "create database")
	_, err = e.admin.Tenant(t.Context(), req.ID)
	assert.ErrorIs(t, err, lifecycle.ErrUnknownTenant, "nothing made")
	runs, err := e.lc.Runs(t.Context(), req.ID)
	require.NoError(t, err)
	assert.Empty(t, runs, "nothing journaled")

	_, err = e.lc.Provision(t.Context(), req)
	require.NoError(t, err)
	dplan, err := e.lc.PlanDeprovision(t.Context(), req.ID)
	require.NoError(t, err)
	steps = nil
	for _, p := range dplan {
		steps = append(steps, p.Step)
	}
	assert.Equal(t, []string{"suspend", "backup", "decommission", "audit", "routes", "objects", "placement", "keys", "verify", "record"}, steps)
	assert.Contains(t, dplan[6].Does, "drop")
	info, err := e.admin.Tenant(t.Context(), req.ID)
	require.NoError(t, err)
	assert.Equal(t, tenant.StateActive, info.State, "nothing changed")
	_, err = e.lc.Plan(t.Context(), req)
	assert.ErrorIs(t, err, lifecycle.ErrTenantExists, "a plan checks the request as Provision does")
}

// blockStep blocks its Apply until released.
type blockStep struct {
	entered, release chan struct{}
	applied          atomic.Int32
}

func (s *blockStep) Name() string { return "slow" }
func (s *blockStep) Apply(ctx context.Context, _ *lifecycle.Target) error {
	s.applied.Add(1)
	s.entered <- struct{}{}
	<-s.release
	return nil
}
func (s *blockStep) Remove(context.Context, *lifecycle.Target) error { return nil }
func (s *blockStep) Remains(context.Context, *lifecycle.Target) ([]string, error) {
	return nil, nil
}

// TestOneDriverPerRun: while a run is being driven, a Resume of it (from
// this process or another) is refused with ErrRunBusy, so no step runs
// twice at once; once the driver is done there is nothing to resume.
func TestOneDriverPerRun(t *testing.T) {
	slow := &blockStep{entered: make(chan struct{}, 1), release: make(chan struct{})}
	e := newEnv(t, withSteps(slow))
	req := request(t, "busy", tenant.TierStandard)
	done := make(chan error, 1)
	go func() {
		_, err := e.lc.Provision(t.Context(), req)
		done <- err
	}()
	<-slow.entered
	_, err := e.lc.Resume(t.Context(), req.ID)
	require.ErrorIs(t, err, lifecycle.ErrRunBusy)
	assert.Contains(t, err.Error(), "being driven by another process")
	close(slow.release)
	require.NoError(t, <-done)
	assert.EqualValues(t, 1, slow.applied.Load(), "applied once")
	_, err = e.lc.Resume(t.Context(), req.ID)
	assert.ErrorIs(t, err, lifecycle.ErrNoRun)
}

// TestLateDuplicateLeavesTheTenantAlone: a second request for an ID
// whose placement fails because the first provisioning won compensates
// without touching the first tenant, and ends failed itself.
func TestLateDuplicateLeavesTheTenantAlone(t *testing.T) {
	e := newEnv(t)
	req := request(t, "late", tenant.TierStandard)
	// The second run gets past validation, then the first creates the tenant.
	var once bool
	lifecycle.SetHook(e.lc, func(step, dir, when string) {
		if step == "placement" && dir == "apply" && when == "before" && !once {
			once = true
			require.NoError(t, e.admin.CreateTenant(t.Context(), tenant.Info{ID: req.ID, Name: "First", Tier: tenant.TierStandard}))
			_, err := e.db.Exec(tenant.NewContext(t.Context(), req.ID), `INSERT INTO requirements (req_id, requirement_text) VALUES ('REQ-1', 'the first tenant''s')`)
			require.NoError(t, err)
		}
	})
	_, err := e.lc.Provision(t.Context(), req)
	var re *lifecycle.RunError
	require.ErrorAs(t, err, &re)
	assert.True(t, re.Compensated, "%v", err)
	info, err := e.admin.Tenant(t.Context(), req.ID)
	require.NoError(t, err)
	assert.Equal(t, tenant.StateActive, info.State, "the first tenant is untouched")
	assert.Equal(t, "First", info.Name)
	assert.Len(t, e.requirements(t, tenant.NewContext(t.Context(), req.ID)), 1)
	require.NoError(t, e.lc.Suspend(t.Context(), req.ID), "and not locked out by an open run")
}

// TestCompensationLeavesObjectsTheRunDidNotMake: objects that appear
// under the tenant's prefix after validation (another environment sharing
// the bucket, say) are left alone when a later step fails and the run is
// compensated.
func TestCompensationLeavesObjectsTheRunDidNotMake(t *testing.T) {
	e := newEnv(t)
	req := request(t, "foreignobj", tenant.TierStandard)
	boom := &failStep{name: "late"}
	lc, err := lifecycle.New(t.Context(), lifecycle.Config{Admin: e.admin, Steps: append(e.steps[:len(e.steps):len(e.steps)], boom)})
	require.NoError(t, err)
	lifecycle.SetHook(lc, func(step, dir, when string) {
		if step == "late" && dir == "apply" && when == "before" {
			p := filepath.Join(e.spec.ObjDir, "tenants", req.ID.String(), "theirs.doc")
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o700))
			require.NoError(t, os.WriteFile(p, []byte("not the run's"), 0o600))
			boom.err = errors.New("late failure")
		}
	})
	_, err = lc.Provision(t.Context(), req)
	var re *lifecycle.RunError
	require.ErrorAs(t, err, &re)
	assert.True(t, re.Compensated, "%v", err)
	_, err = os.Stat(filepath.Join(e.spec.ObjDir, "tenants", req.ID.String(), "theirs.doc"))
	assert.NoError(t, err, "left alone")
}

// TestDeprovisionNeedsEveryStepOfTheProvisioning: a Lifecycle that lacks a
// step the tenant was provisioned with refuses to deprovision it, naming
// the step, and changes nothing; one with every step deprovisions it.
func TestDeprovisionNeedsEveryStepOfTheProvisioning(t *testing.T) {
	e := newEnv(t)
	extra := &failStep{name: "dns"}
	lc, err := lifecycle.New(t.Context(), lifecycle.Config{Admin: e.admin, Steps: append(e.steps[:len(e.steps):len(e.steps)], extra)})
	require.NoError(t, err)
	req := request(t, "fewer", tenant.TierStandard)
	_, err = lc.Provision(t.Context(), req)
	require.NoError(t, err)
	_, err = e.lc.Deprovision(t.Context(), req.ID) // e.lc lacks "dns"
	require.ErrorIs(t, err, lifecycle.ErrInvalidConfig)
	assert.Contains(t, err.Error(), `step "dns"`)
	info, err := e.admin.Tenant(t.Context(), req.ID)
	require.NoError(t, err)
	assert.Equal(t, tenant.StateActive, info.State, "nothing changed")
	_, err = lc.Deprovision(t.Context(), req.ID)
	require.NoError(t, err, "with its steps it goes")
	assert.Equal(t, []lifecycle.Op{lifecycle.OpDeprovision}, extra.removed)
}

// TestIDThatMakesAReservedHostIsRefused: a tenant ID whose host would be
// one the platform reserved (api.rtmx.example) is refused, and no tenant
// is made.
func TestIDThatMakesAReservedHostIsRefused(t *testing.T) {
	e := newEnv(t)
	routes, err := lifecycle.NewRoutesStep(e.admin, "svc/x", "{{.DNSLabel}}.rtmx.example")
	require.NoError(t, err)
	routes.Reserved = []string{"api.rtmx.example", "www.rtmx.example"}
	lc, err := lifecycle.New(t.Context(), lifecycle.Config{Admin: e.admin, Steps: []lifecycle.Step{&lifecycle.PlacementStep{Admin: e.admin}, routes}})
	require.NoError(t, err)
	req, err := parse(t, doc(t, "id", `"api"`, "tier", `"standard"`, "encryption", `"platform-managed"`, "kms_key_arn", omit))
	require.NoError(t, err)
	_, err = lc.Provision(t.Context(), req)
	require.ErrorContains(t, err, "host api.rtmx.example is reserved for the platform")
	_, err = e.admin.Tenant(t.Context(), req.ID)
	assert.ErrorIs(t, err, lifecycle.ErrUnknownTenant)
}

// TestBackupKeyThatIsATenantsIsRefused: New refuses a Backup.KeyID that
// is a tenant's ID, whose shredding would destroy every backup.
func TestBackupKeyThatIsATenantsIsRefused(t *testing.T) {
	e := newEnv(t)
	req := request(t, "bkid", tenant.TierStandard)
	_, err := e.lc.Provision(t.Context(), req)
	require.NoError(t, err)
	b := *e.backup
	b.KeyID = req.ID
	_, err = lifecycle.New(t.Context(), lifecycle.Config{Admin: e.admin, Steps: e.steps, Backup: &b})
	require.ErrorIs(t, err, lifecycle.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "is a tenant's ID")
}
