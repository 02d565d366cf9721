package lifecycle_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/lifecycle"
	"github.com/rtmx-ai/tenancy/tenant"
)

const (
	envCrashSpec = "TENANCY_LIFECYCLE_CRASH_SPEC"
	envCrashAt   = "TENANCY_LIFECYCLE_CRASH_AT"
	envCrashReq  = "TENANCY_LIFECYCLE_CRASH_REQUEST"
	envCrashOp   = "TENANCY_LIFECYCLE_CRASH_OP"
	crashMarker  = "LIFECYCLE-CRASH-POINT"
)

// TestCrashHelperProcess is the child of the crash tests: it opens the
// parent's environment, runs a provisioning (or deprovisioning) and, at
// the step boundary named by TENANCY_LIFECYCLE_CRASH_AT
// (step/direction/when), prints a marker and waits to be killed.
func TestCrashHelperProcess(t *testing.T) {
	raw := os.Getenv(envCrashSpec)
	if raw == "" {
		return // not a child: nothing to do
	}
	var sp spec
	require.NoError(t, json.Unmarshal([]byte(raw), &sp))
	e := openEnv(t, sp, envConfig{}, false)
	at := os.Getenv(envCrashAt)
	lifecycle.SetHook(e.lc, func(step, dir, when string) {
		if step+"/"+dir+"/"+when == at {
			fmt.Println(crashMarker)
			time.Sleep(time.Hour)
		}
	})
	switch os.Getenv(envCrashOp) {
	case "deprovision":
		_, err := e.lc.Deprovision(t.Context(), tenant.MustParseID(os.Getenv(envCrashReq)))
		require.NoError(t, err)
	default:
		req, err := lifecycle.ParseRequest(strings.NewReader(os.Getenv(envCrashReq)))
		require.NoError(t, err)
		_, err = e.lc.Provision(t.Context(), req)
		require.NoError(t, err)
	}
	t.Fatalf("the run ended without reaching %s", at)
}

// crashAt runs the child at the crash point and kills it with SIGKILL
// once it is there.
func crashAt(t *testing.T, e *env, op, arg, at string) {
	t.Helper()
	raw, err := json.Marshal(e.spec)
	require.NoError(t, err)
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrashHelperProcess$", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), envCrashSpec+"="+string(raw), envCrashAt+"="+at, envCrashReq+"="+arg, envCrashOp+"="+op)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	reached := make(chan bool, 1)
	var seen strings.Builder
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			seen.WriteString(sc.Text() + "\n")
			if sc.Text() == crashMarker {
				reached <- true
				return
			}
		}
		reached <- false
	}()
	select {
	case ok := <-reached:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("the child ended before %s:\n%s\n%s", at, seen.String(), stderr.String())
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("the child never reached %s:\n%s", at, stderr.String())
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
}

// TestProvisionKilledAtEachStepResumes kills a provisioning process with
// SIGKILL before and after every step (the "after" point is mid-step from
// the journal's view: the step's work is done, its end not journaled),
// then resumes it in this process: the tenant ends active with exactly one
// of everything (one keyset per purpose, one route, one invitation e-mail
// whose link works, one audit entry, one placement).
// rtmx:req REQ-TEN-005
func TestProvisionKilledAtEachStepResumes(t *testing.T) {
	e := newEnv(t, withMail(), withKube())
	var points []string
	for _, s := range []string{"validate", "placement", "keys", "objects", "namespace", "resources", "routes", "ingress", "invitation", "audit", "activate"} {
		points = append(points, s+"/apply/before", s+"/apply/after")
	}
	for _, at := range points {
		t.Run(strings.ReplaceAll(at, "/", "-"), func(t *testing.T) {
			req := request(t, "crash", tenant.TierEnterprise)
			var doc strings.Builder
			require.NoError(t, lifecycle.EncodeRequest(&doc, req))
			crashAt(t, e, "provision", doc.String(), at)

			runs, err := e.lc.Runs(t.Context(), req.ID)
			require.NoError(t, err)
			require.Len(t, runs, 1, "the killed run is journaled")
			assert.Equal(t, lifecycle.RunRunning, runs[0].State, "open after the kill")
			// A second provisioning is refused: by the open run before the
			// placement, by the taken ID after it.
			_, err = e.lc.Provision(t.Context(), req)
			assert.True(t, errors.Is(err, lifecycle.ErrRunInProgress) || errors.Is(err, lifecycle.ErrTenantExists), "%v", err)

			run, err := e.lc.Resume(t.Context(), req.ID)
			require.NoError(t, err)
			assert.Equal(t, lifecycle.RunSucceeded, run.State)
			info, err := e.admin.Tenant(t.Context(), req.ID)
			require.NoError(t, err)
			assert.Equal(t, tenant.StateActive, info.State)
			for _, p := range keys.Purposes() {
				_, err := e.admin.Keysets().Get(t.Context(), req.ID, p)
				assert.NoError(t, err, "keyset %s", p)
			}
			routes, err := lifecycle.Routes(t.Context(), e.admin, req.ID)
			require.NoError(t, err)
			assert.Len(t, routes, 1)
			assert.Equal(t, 1, e.platformEntries(t, "tenant.provision", req.ID), "one audit entry, not two")
			e.assertNamespace(t, req.ID, tenant.TierEnterprise) // one of each object
			link := e.invitationLink(t, req.AdminEmail)         // exactly one mail
			assert.Equal(t, http.StatusOK, get(t, link), "the one link sent works")
			ctx := tenant.NewContext(t.Context(), req.ID)
			e.insertReq(t, ctx, "REQ-1", "after the crash")
			assert.Len(t, e.requirements(t, ctx), 1)
			_, err = e.lc.Resume(t.Context(), req.ID)
			assert.ErrorIs(t, err, lifecycle.ErrNoRun, "nothing left to resume")
		})
	}
}

// TestDeprovisionKilledAtEachPhaseResumes kills a deprovisioning process
// with SIGKILL before and after each of its phases, then resumes it: the
// tenant ends deleted with nothing left, one backup archive and one
// deletion record.
// rtmx:req REQ-TEN-006
func TestDeprovisionKilledAtEachPhaseResumes(t *testing.T) {
	e := newEnv(t)
	points := []string{
		"suspend/apply/after", "backup/apply/before", "backup/apply/after", "decommission/apply/after",
		"audit/remove/after", "routes/remove/before", "objects/remove/after", "placement/remove/before",
		"placement/remove/after", "keys/remove/before", "keys/remove/after", "verify/apply/after", "record/apply/after",
	}
	for _, at := range points {
		t.Run(strings.ReplaceAll(at, "/", "-"), func(t *testing.T) {
			req := request(t, "dcrash", tenant.TierEnterprise)
			_, err := e.lc.Provision(t.Context(), req)
			require.NoError(t, err)
			e.populate(t, tenant.NewContext(t.Context(), req.ID))
			crashAt(t, e, "deprovision", req.ID.String(), at)

			_, err = e.lc.Deprovision(t.Context(), req.ID)
			assert.ErrorIs(t, err, lifecycle.ErrRunInProgress, "a second deprovisioning waits for the open one")
			run, err := e.lc.Resume(t.Context(), req.ID)
			require.NoError(t, err)
			assert.Equal(t, lifecycle.RunSucceeded, run.State)
			assert.Empty(t, e.remains(t, req.ID))
			info, err := e.admin.Tenant(t.Context(), req.ID)
			require.NoError(t, err)
			assert.Equal(t, tenant.StateDeleted, info.State)
			assert.Equal(t, 1, e.platformEntries(t, "tenant.deprovision", req.ID), "one deletion record")
			archives, err := filepathGlob(e.spec.BackupDir, "backups", req.ID.String())
			require.NoError(t, err)
			assert.Len(t, archives, 1, "one archive")
		})
	}
}

// TestResumeWaitsForAKilledDriversSession: a driver killed a moment ago
// still holds its run's lock until the server ends its session; a Resume
// in that moment waits for the lock (up to a few seconds) instead of
// being refused with ErrRunBusy.
func TestResumeWaitsForAKilledDriversSession(t *testing.T) {
	e := newEnv(t)
	req := request(t, "crashwait", tenant.TierStandard)
	var doc strings.Builder
	require.NoError(t, lifecycle.EncodeRequest(&doc, req))
	crashAt(t, e, "provision", doc.String(), "keys/apply/after")
	runs, err := e.lc.Runs(t.Context(), req.ID)
	require.NoError(t, err)
	require.Len(t, runs, 1)
	// The session of the killed driver, as the server sees it for a
	// moment: another session holding the run's lock, ended a second later.
	unlock, ok, err := e.admin.TryLock(t.Context(), fmt.Sprintf("tenancy.lifecycle.run:%d", runs[0].ID))
	require.NoError(t, err)
	require.True(t, ok)
	held := time.Second
	time.AfterFunc(held, unlock)
	start := time.Now()
	run, err := e.lc.Resume(t.Context(), req.ID)
	require.NoError(t, err)
	assert.Equal(t, lifecycle.RunSucceeded, run.State)
	assert.GreaterOrEqual(t, time.Since(start), held, "Resume took the lock only once it was free")
}
