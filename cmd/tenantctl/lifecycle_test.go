package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSeedTenantLifecycle is the operator's path with the seed request of
// REQ-DEPLOY-004: init --dev, provision -f, show, list (JSON and table),
// suspend and reactivate, audit verify and export, deprovision and show
// of the deleted tenant, each with its output and exit status.
func TestSeedTenantLifecycle(t *testing.T) {
	d := newDev(t)

	// init --dev again changes nothing.
	before := d.snapshot()
	r := d.run("init", "--dev", "--admin-url", d.adminURL, "--database", d.opts.database, "--role-prefix", d.opts.rolePrefix, "--dir", d.opts.dir)
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, "unchanged")
	assert.Equal(t, before, d.snapshot(), "init --dev is idempotent")

	r = d.run("provision", "-f", seedRequest)
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, "run 1: provision of tenant abc123: succeeded")
	for _, step := range []string{"validate", "placement", "keys", "objects", "routes", "audit", "activate"} {
		assert.Regexp(t, `(?m)^1\s+provision\s+`+step+`\s+apply\s+done`, r.stdout)
	}

	show := jsonOut[showJSON](t, d.run("show", "abc123", "--output", "json"))
	require.NotNil(t, show.Tenant)
	assert.Equal(t, tenantJSON{ID: "abc123", Name: "Acme Defense Corp", Tier: "enterprise", Region: "us-gov-east-1", State: "active",
		CreatedAt: show.Tenant.CreatedAt, UpdatedAt: show.Tenant.UpdatedAt}, *show.Tenant)
	assert.False(t, show.Tenant.CreatedAt.IsZero())
	assert.Equal(t, []string{"abc123.rtmx.localhost"}, show.Routes)
	require.Len(t, show.Runs, 1)
	assert.Equal(t, "provision", show.Runs[0].Op)
	assert.Equal(t, "succeeded", show.Runs[0].State)
	assert.Len(t, show.Runs[0].Steps, 7)

	r = d.run("show", "abc123")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Regexp(t, `(?m)^State:\s+active$`, r.stdout)
	assert.Contains(t, r.stdout, "abc123.rtmx.localhost")

	list := jsonOut[[]tenantJSON](t, d.run("list", "--output", "json"))
	require.Len(t, list, 1)
	assert.Equal(t, "abc123", list[0].ID)
	assert.Equal(t, "active", list[0].State)
	r = d.run("list")
	require.Equal(t, 0, r.code, "%s", r)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 2, r.stdout)
	assert.Regexp(t, `^ID\s+NAME\s+TIER\s+REGION\s+STATE\s+CREATED$`, lines[0])
	assert.Regexp(t, `^abc123\s+Acme Defense Corp\s+enterprise\s+us-gov-east-1\s+active\s+\d{4}-`, lines[1])

	// Suspend, suspend again (refused), reactivate.
	st := jsonOut[stateJSON](t, d.run("suspend", "abc123", "--output", "json"))
	assert.Equal(t, stateJSON{Tenant: "abc123", State: "suspended"}, st)
	r = d.run("suspend", "abc123")
	assert.Equal(t, exitConflict, r.code, "%s", r)
	assert.Contains(t, r.stderr, "illegal state transition")
	r = d.run("reactivate", "abc123")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Regexp(t, `(?m)^abc123\s+active$`, r.stdout)

	// Audit: the tenant's log and the platform's trail verify.
	r = d.run("audit", "verify", "abc123")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Regexp(t, `(?m)^abc123\s+verified`, r.stdout)
	type verifyJSON struct {
		Log      string `json:"log"`
		Verified bool   `json:"verified"`
		Entries  int64  `json:"entries"`
	}
	v := jsonOut[verifyJSON](t, d.run("audit", "verify", "--platform", "--output", "json"))
	assert.Equal(t, "platform", v.Log)
	assert.True(t, v.Verified)
	assert.EqualValues(t, 3, v.Entries, "provision, suspend, reactivate")
	export := filepath.Join(t.TempDir(), "platform.jsonl")
	r = d.run("audit", "export", "--platform", "-o", export)
	require.Equal(t, 0, r.code, "%s", r)
	data, err := os.ReadFile(export)
	require.NoError(t, err)
	assert.Contains(t, string(data), `"action":"tenant.provision"`)
	assert.Contains(t, string(data), `"action":"tenant.suspend"`)
	r = d.run("audit", "export", "--platform", "-o", export)
	assert.Equal(t, exitUsage, r.code, "an export never overwrites a file: %s", r)

	// Deprovision; the tenant stays in the directory as deleted.
	r = d.run("deprovision", "abc123")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, "run 2: deprovision of tenant abc123: succeeded")
	assert.Regexp(t, `(?m)^ *backup archive: backups/abc123/run-2\S*\.tar\.enc$`, r.stdout)
	for _, step := range []string{"suspend", "backup", "decommission", "verify", "record"} {
		assert.Regexp(t, `(?m)^2\s+deprovision\s+`+step+`\s+apply\s+done`, r.stdout)
	}
	show = jsonOut[showJSON](t, d.run("show", "abc123", "--output", "json"))
	require.NotNil(t, show.Tenant)
	assert.Equal(t, "deleted", show.Tenant.State)
	assert.Empty(t, show.Routes)
	require.Len(t, show.Runs, 2)
	assert.Equal(t, "deprovision", show.Runs[1].Op)
	assert.Equal(t, "succeeded", show.Runs[1].State)
	r = d.run("show", "abc123")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Regexp(t, `(?m)^State:\s+deleted$`, r.stdout)
	assert.Regexp(t, `(?m)^ *backup archive: backups/abc123/run-2\S*\.tar\.enc$`, r.stdout)
	snap := d.snapshot()
	assert.NotContains(t, snap["databases"], "tenant_abc123", "the tenant's database is gone")

	// Its ID is never provisioned again; a deleted tenant cannot be suspended.
	r = d.run("provision", "-f", seedRequest)
	assert.Equal(t, exitConflict, r.code, "%s", r)
	assert.Contains(t, r.stderr, "never reused")
	r = d.run("suspend", "abc123")
	assert.Equal(t, exitConflict, r.code, "%s", r)

	v = jsonOut[verifyJSON](t, d.run("audit", "verify", "--platform", "--output", "json"))
	assert.Greater(t, v.Entries, int64(3), "the deletion record is in the trail")

	// Logs go to stderr, data to stdout, and neither carries a secret.
	r = d.run("list", "--output", "json", "--log-level", "debug")
	require.Equal(t, 0, r.code, "%s", r)
	list = jsonOut[[]tenantJSON](t, r)
	assert.Len(t, list, 1)
	assert.Contains(t, r.stderr, "level=")
	for _, secret := range d.secrets() {
		assert.NotContains(t, d.transcript.String(), secret, "a secret was printed")
	}
}

// TestInitReset: init --dev --reset drops the deployment (tenants, their
// databases and roles, keys, buckets, configuration) and makes a fresh one.
func TestInitReset(t *testing.T) {
	d := newDev(t)
	require.Equal(t, 0, d.run("provision", "-f", seedRequest).code)
	oldSecrets := d.secrets()
	r := d.run("init", "--dev", "--reset", "--admin-url", d.adminURL, "--database", d.opts.database, "--role-prefix", d.opts.rolePrefix, "--dir", d.opts.dir)
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, "reset: dropped database")
	list := jsonOut[[]tenantJSON](t, d.run("list", "--output", "json"))
	assert.Empty(t, list, "a fresh directory")
	assert.NotEqual(t, oldSecrets, d.secrets(), "new secrets")
	assert.NotContains(t, d.snapshot()["databases"], "tenant_abc123", "the tenant's database was dropped")
	r = d.run("provision", "-f", seedRequest)
	require.Equal(t, 0, r.code, "the seed provisions again in the new deployment: %s", r)

	// A configuration file init did not write is not overwritten.
	require.NoError(t, os.WriteFile(d.config, []byte("# mine\n"), 0o600))
	r = d.run("init", "--dev", "--admin-url", d.adminURL, "--database", d.opts.database, "--role-prefix", d.opts.rolePrefix, "--dir", d.opts.dir)
	assert.Equal(t, exitConflict, r.code, "%s", r)
	data, err := os.ReadFile(d.config)
	require.NoError(t, err)
	assert.Equal(t, "# mine\n", string(data))
	r = d.run("init", "--admin-url", d.adminURL)
	assert.Equal(t, exitUsage, r.code, "init needs --dev: %s", r)
}

// TestBinaryExitCodes: the built binary exits with the statuses run
// returns.
func TestBinaryExitCodes(t *testing.T) {
	d := newDev(t)
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"list"}, exitOK},
		{[]string{"show", "nosuch"}, exitNotFound},
		{[]string{"show", "Bad"}, exitUsage},
		{[]string{"list", "--bogus"}, exitUsage},
		{[]string{"provision", "-f", seedRequest}, exitOK},
		{[]string{"provision", "-f", seedRequest}, exitConflict},
	} {
		cmd := d.command(t.Context(), c.args...)
		out, _ := cmd.CombinedOutput()
		assert.Equal(t, c.code, cmd.ProcessState.ExitCode(), "%v: %s", c.args, out)
	}
	cmd := exec.CommandContext(t.Context(), binary, "--config", writeFile(t, "bad.yaml", "nope: 1\n"), "list")
	out, _ := cmd.CombinedOutput()
	assert.Equal(t, exitConfig, cmd.ProcessState.ExitCode(), "%s", out)
	assert.Contains(t, string(out), `unknown key "nope"`)
}

// TestRestoreIntoAnotherTenant: the archive of a deprovisioned tenant,
// named as show prints it, restores into a fresh tenant; a missing archive
// is not found and a malformed key a usage error.
func TestRestoreIntoAnotherTenant(t *testing.T) {
	d := newDev(t)
	reqA := "tenant:\n  id: src1\n  name: Source\n  tier: standard\n  region: us-gov-east-1\n  admin_email: a@src.example\n  settings:\n    encryption: platform-managed\n"
	require.Equal(t, 0, d.runIn(reqA, "provision", "-f", "-").code)
	// A settings revision the archive carries.
	r := d.runIn(`{"requirement_id_pattern": "^REQ-[A-Z]+-[0-9]+$", "categories": ["SECURITY"], "statuses": ["MISSING", "COMPLETE"], "priorities": ["HIGH"]}`,
		"config", "set", "src1", "rtm", "-f", "-", "--output", "json")
	require.Equal(t, 0, r.code, "%s", r)
	r = d.run("deprovision", "src1")
	require.Equal(t, 0, r.code, "%s", r)
	m := regexp.MustCompile(`(?m)^backup archive: (\S+)$`).FindStringSubmatch(r.stdout)
	require.NotNil(t, m, "deprovision names its archive: %s", r)
	archive := m[1]

	reqB := strings.ReplaceAll(strings.ReplaceAll(reqA, "src1", "dst1"), "Source", "Destination")
	require.Equal(t, 0, d.runIn(reqB, "provision", "-f", "-").code)
	r = d.run("restore", "--archive", archive, "--into", "dst1", "--output", "json")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, `"from": "src1"`)
	// The platform trail records the restore, and still verifies.
	assert.Equal(t, []string{"tenant.restore " + archive + " src1"}, d.platformRecords("tenant.restore", "dst1"))
	r = d.run("audit", "verify", "--platform")
	require.Equal(t, 0, r.code, "%s", r)
	// The settings came with the archive's settings part.
	r = d.run("config", "get", "dst1", "rtm")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, `"SECURITY"`)

	r = d.run("restore", "--archive", "backups/src1/run-9.tar.enc", "--into", "dst1")
	assert.Equal(t, exitNotFound, r.code, "%s", r)
	r = d.run("restore", "--archive", "../etc/passwd", "--into", "dst1")
	assert.Equal(t, exitUsage, r.code, "%s", r)
	r = d.run("restore", "--archive", archive, "--into", "nosuch")
	assert.Equal(t, exitNotFound, r.code, "%s", r)
	r = d.run("restore", "--archive", archive, "--into", "dst1")
	assert.NotEqual(t, 0, r.code, "dst1 has rows now: %s", r)
	assert.Len(t, d.platformRecords("tenant.restore", "dst1"), 1, "a refused restore is not recorded")
}

// TestDryRunChangesNothing: provision --dry-run and deprovision --dry-run
// print the plan and leave the directory, the journal and every other
// control-plane table, the cluster's databases and roles, and the files
// as they were.
func TestDryRunChangesNothing(t *testing.T) {
	d := newDev(t)
	before := d.snapshot()
	r := d.run("provision", "-f", seedRequest, "--dry-run")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, "dry run: provision of tenant abc123 would do (nothing was changed)")
	assert.Regexp(t, `(?m)^2\s+placement\s+create database`, r.stdout)
	assert.Equal(t, before, d.snapshot(), "provision --dry-run changed something")
	plan := jsonOut[planJSON](t, d.run("provision", "-f", seedRequest, "--dry-run", "--output", "json"))
	assert.True(t, plan.DryRun)
	assert.Equal(t, "provision", plan.Op)
	var names []string
	for _, s := range plan.Steps {
		names = append(names, s.Step)
		assert.NotEmpty(t, s.Does, s.Step)
	}
	assert.Equal(t, []string{"validate", "placement", "keys", "objects", "routes", "audit", "activate"}, names)
	r = d.run("show", "abc123")
	assert.Equal(t, exitNotFound, r.code, "no tenant after a dry run: %s", r)

	require.Equal(t, 0, d.run("provision", "-f", seedRequest).code)
	before = d.snapshot()
	r = d.run("deprovision", "abc123", "--dry-run")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, "dry run: deprovision of tenant abc123 would do (nothing was changed)")
	for _, s := range []string{"suspend", "backup", "decommission", "keys", "verify", "record"} {
		assert.Regexp(t, `(?m)^\d+\s+`+s+`\s`, r.stdout)
	}
	assert.Equal(t, before, d.snapshot(), "deprovision --dry-run changed something")
	r = d.run("deprovision", "nosuch", "--dry-run")
	assert.Equal(t, exitNotFound, r.code, "%s", r)
	r = d.run("provision", "-f", seedRequest, "--dry-run")
	assert.Equal(t, exitConflict, r.code, "the plan checks the ID is free: %s", r)
	assert.Equal(t, before, d.snapshot())
}

// TestHostileInput: bad requests, IDs, configurations and names each get
// their exit status and a message naming what is wrong, and change
// nothing.
func TestHostileInput(t *testing.T) {
	d := newDev(t)
	require.Equal(t, 0, d.run("provision", "-f", seedRequest).code)
	before := d.snapshot()

	t.Run("request with three problems", func(t *testing.T) {
		bad := writeFile(t, "bad.yaml", `tenant:
  id: "Bad-ID"
  name: "Acme"
  tier: "platinum"
  region: "us-gov-east-1"
  admin_email: "not an address"
  settings:
    encryption: "platform-managed"
`)
		r := d.run("provision", "-f", bad)
		assert.Equal(t, exitUsage, r.code, "%s", r)
		assert.Contains(t, r.stderr, "invalid provisioning request, 3 problem(s)")
		assert.Regexp(t, `tenant\.id: .*\(line 2\)`, r.stderr)
		assert.Regexp(t, `tenant\.tier: .*\(line 4\)`, r.stderr)
		assert.Regexp(t, `tenant\.admin_email: .*\(line 6\)`, r.stderr)
		assert.Empty(t, r.stdout)
	})
	t.Run("request on stdin with an unknown field", func(t *testing.T) {
		r := d.runIn("tenant:\n  id: x1\n  colour: red\n", "provision", "-f", "-")
		assert.Equal(t, exitUsage, r.code, "%s", r)
		assert.Contains(t, r.stderr, "standard input: invalid provisioning request")
		assert.Contains(t, r.stderr, "tenant.colour")
	})
	t.Run("request file missing", func(t *testing.T) {
		r := d.run("provision", "-f", filepath.Join(t.TempDir(), "none.yaml"))
		assert.Equal(t, exitUsage, r.code, "%s", r)
	})
	t.Run("duplicate id", func(t *testing.T) {
		r := d.run("provision", "-f", seedRequest)
		assert.Equal(t, exitConflict, r.code, "%s", r)
		assert.Contains(t, r.stderr, "already exists")
	})
	t.Run("an ID that makes a reserved host", func(t *testing.T) {
		api := writeFile(t, "api.yaml", `tenant:
  id: "api"
  name: "Not The Platform"
  tier: "standard"
  region: "us-gov-east-1"
  admin_email: "admin@acme.defense"
  settings:
    encryption: "platform-managed"
`)
		r := d.run("--route-reserved", "api.rtmx.localhost,www.rtmx.localhost", "provision", "-f", api)
		assert.Equal(t, exitConflict, r.code, "%s", r)
		assert.Contains(t, r.stderr, "host api.rtmx.localhost is reserved for the platform")
		r = d.run("show", "api")
		assert.Equal(t, exitNotFound, r.code, "nothing made: %s", r)
	})
	for _, args := range [][]string{
		{"show", "nosuch"}, {"suspend", "nosuch"}, {"reactivate", "nosuch"}, {"deprovision", "nosuch"},
		{"resume", "nosuch"}, {"resume", "abc123"}, {"keys", "rotate", "nosuch"}, {"audit", "verify", "nosuch"},
		{"config", "get", "nosuch", "rtm"}, {"config", "get", "abc123", "rtm"},
	} {
		t.Run("not found: "+strings.Join(args, " "), func(t *testing.T) {
			r := d.run(args...)
			assert.Equal(t, exitNotFound, r.code, "%s", r)
			assert.Empty(t, r.stdout)
		})
	}
	for _, id := range []string{"Bad-ID", "tenant_x", "public", "a;DROP TABLE x", strings.Repeat("a", 100), ""} {
		t.Run("bad tenant ID "+id, func(t *testing.T) {
			r := d.run("show", id)
			assert.Equal(t, exitUsage, r.code, "%s", r)
			assert.Contains(t, r.stderr, "tenant ID")
		})
	}
	t.Run("bad tenant ID flag", func(t *testing.T) {
		r := d.run("restore", "--archive", "backups/abc123/run-1.tar.enc", "--into", "Not-An-ID")
		assert.Equal(t, exitUsage, r.code, "%s", r)
		assert.Contains(t, r.stderr, "--into")
	})
	t.Run("bad key URI", func(t *testing.T) {
		r := d.run("keys", "rewrap", "--from", "file:///etc/passwd", "--to", "local:///tmp/x.key")
		assert.Equal(t, exitUsage, r.code, "%s", r)
	})
	t.Run("bad purpose", func(t *testing.T) {
		r := d.run("keys", "rotate", "abc123", "--purpose", "everything")
		assert.Equal(t, exitUsage, r.code, "%s", r)
	})
	t.Run("bad settings value", func(t *testing.T) {
		r := d.runIn(`{"statuses": 7, "bogus": true}`, "config", "set", "abc123", "rtm", "-f", "-")
		assert.Equal(t, exitUsage, r.code, "%s", r)
		assert.Contains(t, r.stderr, "invalid settings")
		assert.Contains(t, r.stderr, "bogus")
	})
	assert.Equal(t, before, d.snapshot(), "hostile input changed something")
}

// TestConfigurationErrors: a configuration file with an unknown key,
// an explicit file that does not exist and an incomplete configuration
// each exit with status 3 and say what is wrong.
func TestConfigurationErrors(t *testing.T) {
	t.Run("unknown key", func(t *testing.T) {
		path := writeFile(t, "tenantctl.yaml", "admin_url: postgres://x@127.0.0.1/db\nbackup:\n  bucket: file:///tmp/b\n  bukcet_typo: 1\n")
		r := runCLI(t, nil, "", "--config", path, "list")
		assert.Equal(t, exitConfig, r.code, "%s", r)
		assert.Contains(t, r.stderr, `unknown key "bukcet_typo"`)
		assert.Contains(t, r.stderr, "line 4")
	})
	t.Run("duplicate key", func(t *testing.T) {
		path := writeFile(t, "tenantctl.yaml", "admin_url: a\nadmin_url: b\n")
		r := runCLI(t, nil, "", "--config", path, "list")
		assert.Equal(t, exitConfig, r.code, "%s", r)
		assert.Contains(t, r.stderr, "admin_url")
	})
	t.Run("wrong type", func(t *testing.T) {
		path := writeFile(t, "tenantctl.yaml", "regions: us-gov-east-1\n")
		r := runCLI(t, nil, "", "--config", path, "list")
		assert.Equal(t, exitConfig, r.code, "%s", r)
	})
	t.Run("missing file", func(t *testing.T) {
		r := runCLI(t, nil, "", "--config", filepath.Join(t.TempDir(), "none.yaml"), "list")
		assert.Equal(t, exitConfig, r.code, "%s", r)
		assert.Contains(t, r.stderr, "none.yaml")
	})
	t.Run("missing file from the environment", func(t *testing.T) {
		r := runCLI(t, map[string]string{"TENANTCTL_CONFIG": filepath.Join(t.TempDir(), "none.yaml")}, "", "list")
		assert.Equal(t, exitConfig, r.code, "%s", r)
	})
	t.Run("incomplete", func(t *testing.T) {
		r := runCLI(t, nil, "", "list")
		assert.Equal(t, exitConfig, r.code, "%s", r)
		assert.Contains(t, r.stderr, "missing admin_url")
		assert.Contains(t, r.stderr, "init --dev")
	})
	t.Run("bad number in the environment", func(t *testing.T) {
		r := runCLI(t, map[string]string{"TENANTCTL_MIGRATIONS_AUDIT_VERSION": "two"}, "", "list")
		assert.Equal(t, exitConfig, r.code, "%s", r)
		assert.Contains(t, r.stderr, "TENANTCTL_MIGRATIONS_AUDIT_VERSION")
	})
	t.Run("login secret readable by others", func(t *testing.T) {
		d := newDev(t)
		secret := filepath.Join(d.opts.dir, "login.secret")
		require.NoError(t, os.Chmod(secret, 0o644))
		r := d.run("list")
		assert.Equal(t, exitConfig, r.code, "%s", r)
		assert.Contains(t, r.stderr, "chmod 600")
		data, err := os.ReadFile(secret)
		require.NoError(t, err)
		assert.NotContains(t, r.stderr, strings.TrimSpace(string(data)), "the secret is never printed")
	})
}

// TestFailedRunsSayWhatToDo: a provisioning whose invitation step fails
// (no SMTP server) exits 1 saying the tenant is failed and compensated;
// a deprovisioning whose backup fails (the backup role missing) exits 1
// saying the run stays open, and resume finishes it once fixed.
func TestFailedRunsSayWhatToDo(t *testing.T) {
	d := newDev(t)
	d.withSMTP("127.0.0.1:1") // nothing listens there
	r := d.runIn(standardRequest("nomail"), "provision", "-f", "-")
	assert.Equal(t, exitFailure, r.code, "%s", r)
	assert.Contains(t, r.stderr, `provisioning of tenant nomail (run 1) failed at step "invitation"`)
	assert.Contains(t, r.stderr, "the tenant is failed and compensated")
	show := jsonOut[showJSON](t, d.run("show", "nomail", "--output", "json"))
	require.NotNil(t, show.Tenant)
	assert.Equal(t, "failed", show.Tenant.State)
	assert.Equal(t, "failed", show.Runs[0].State)
	assert.Contains(t, show.Runs[0].Reason, "invitation")
	assert.Empty(t, show.Routes, "compensated: the route is gone")
	r = d.runIn(standardRequest("nomail"), "provision", "-f", "-")
	assert.Equal(t, exitConflict, r.code, "%s", r)

	delete(d.env, "TENANTCTL_SMTP_ADDR")
	require.Equal(t, 0, d.runIn(standardRequest("nobackup"), "provision", "-f", "-").code)
	d.env["TENANTCTL_BACKUP_ROLE"] = d.opts.rolePrefix + "nosuchrole"
	r = d.run("deprovision", "nobackup")
	assert.Equal(t, exitFailure, r.code, "%s", r)
	assert.Contains(t, r.stderr, "deprovisioning of tenant nobackup")
	assert.Contains(t, r.stderr, "'tenantctl resume nobackup' continues it")
	r = d.run("deprovision", "nobackup")
	assert.Equal(t, exitConflict, r.code, "a run is open: %s", r)
	delete(d.env, "TENANTCTL_BACKUP_ROLE")
	r = d.run("resume", "nobackup")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, "deprovision of tenant nobackup: succeeded")
}
