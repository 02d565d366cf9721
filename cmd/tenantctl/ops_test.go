package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/store"
)

// standardRequest is a request for a standard-tier tenant id.
func standardRequest(id string) string {
	return "tenant:\n  id: " + id + "\n  name: Tenant " + id + "\n  tier: standard\n  region: us-gov-east-1\n  admin_email: admin@" + id + ".example\n  settings:\n    encryption: platform-managed\n"
}

// TestConfigPrecedence: a flag beats the environment, which beats the
// file; lists come comma-separated from both.
func TestConfigPrecedence(t *testing.T) {
	path := writeFile(t, "tenantctl.yaml", "admin_url: from-file\nplatform_url: from-file\nobjects_bucket: from-file\nregions: [file-1]\nbackup:\n  role: from-file\n")
	env := map[string]string{"TENANTCTL_PLATFORM_URL": "from-env", "TENANTCTL_OBJECTS_BUCKET": "from-env", "TENANTCTL_REGIONS": "env-1, env-2"}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	flags := addConfigFlags(fs)
	require.NoError(t, fs.Parse([]string{"--objects-bucket", "from-flag", "--backup-role", "from-flag"}))
	c, used, err := loadConfig(path, func(k string) string { return env[k] }, fs, flags)
	require.NoError(t, err)
	assert.Equal(t, path, used)
	assert.Equal(t, "from-file", c.AdminURL)
	assert.Equal(t, "from-env", c.PlatformURL)
	assert.Equal(t, "from-flag", c.ObjectsBucket)
	assert.Equal(t, "from-flag", c.Backup.Role)
	assert.Equal(t, []string{"env-1", "env-2"}, c.Regions)

	// The default files: ./tenantctl.yaml, then $XDG_CONFIG_HOME/tenantctl/config.yaml.
	xdg := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(xdg, "tenantctl"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(xdg, "tenantctl", "config.yaml"), []byte("admin_url: from-xdg\n"), 0o600))
	fs = pflag.NewFlagSet("t", pflag.ContinueOnError)
	flags = addConfigFlags(fs)
	c, used, err = loadConfig("", func(k string) string { return map[string]string{"XDG_CONFIG_HOME": xdg}[k] }, fs, flags)
	require.NoError(t, err)
	assert.Equal(t, "from-xdg", c.AdminURL)
	assert.Equal(t, filepath.Join(xdg, "tenantctl", "config.yaml"), used)

	// No secret has a flag.
	for _, s := range configSettings {
		assert.NotContains(t, s.flag, "secret-value", s.key)
		assert.NotEqual(t, "login-secret", s.flag)
		assert.NotEqual(t, "platform-password", s.flag)
	}
}

// TestMigrateAppliesNewMigrationsToTheFleet: a migration added to
// migrations.dir reaches every tenant through tenantctl migrate, without a
// progress bar when the output is not a terminal; a second run has
// nothing to do; an Admin without a recorded migration is refused.
func TestMigrateAppliesNewMigrationsToTheFleet(t *testing.T) {
	d := newDev(t)
	for _, id := range []string{"fleet1", "fleet2", "fleet3"} {
		r := d.runIn(standardRequest(id), "provision", "-f", "-")
		require.Equal(t, 0, r.code, "%s", r)
	}
	dir := t.TempDir()
	err := os.WriteFile(filepath.Join(dir, "0003_notes.sql"), []byte("CREATE TABLE notes (tenant_id text NOT NULL, body text NOT NULL);\n"), 0o600)
	require.NoError(t, err)
	d.env["TENANTCTL_MIGRATIONS_DIR"] = dir

	type migrateJSON struct {
		Total    int      `json:"total"`
		Migrated []string `json:"migrated"`
		Failed   []any    `json:"failed"`
		Pending  []string `json:"pending"`
	}
	r := d.run("migrate", "--output", "json")
	m := jsonOut[migrateJSON](t, r)
	assert.Equal(t, migrateJSON{Total: 3, Migrated: []string{"fleet1", "fleet2", "fleet3"}, Failed: []any{}, Pending: []string{}}, m)
	assert.Empty(t, r.stderr, "no progress bar when not on a terminal")
	r = d.run("migrate")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, "(0 behind)")

	// On a terminal, a progress bar over the fleet (on stderr).
	require.NoError(t, os.WriteFile(filepath.Join(dir, "0004_tags.sql"), []byte("CREATE TABLE tags (tenant_id text NOT NULL, tag text NOT NULL);\n"), 0o600))
	cmd := d.command(t.Context(), "migrate")
	cmd.Args = []string{"script", "-qec", strings.Join(shellQuote(cmd.Args), " "), "/dev/null"}
	cmd.Path, err = exec.LookPath("script")
	require.NoError(t, err, "script(1), of util-linux, runs tenantctl on a terminal")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "migrating tenants")
	assert.Regexp(t, `\([1-3]/3\)`, string(out))
	assert.Contains(t, string(out), "3 migrated, 0 failed, 0 pending")

	// A tenant provisioned now gets the migration with its placement.
	require.Equal(t, 0, d.runIn(standardRequest("fleet4"), "provision", "-f", "-").code)
	m = jsonOut[migrateJSON](t, d.run("migrate", "--output", "json"))
	assert.Equal(t, 0, m.Total)

	// Without the migration the database recorded, tenantctl refuses to run.
	delete(d.env, "TENANTCTL_MIGRATIONS_DIR")
	r = d.run("list")
	assert.Equal(t, exitConfig, r.code, "%s", r)
	assert.Contains(t, r.stderr, "migration")
}

// TestProgressOffWithoutTerminal: the bar is off for writers that are not
// terminals, and --no-progress turns it off everywhere.
func TestProgressOffWithoutTerminal(t *testing.T) {
	var out, errOut bytes.Buffer
	p := newProgress(&out, &errOut, false)
	assert.Nil(t, p.w)
	p.update(storeProgress(1, 2))
	p.finish()
	assert.Empty(t, errOut.String())
	assert.Nil(t, newProgress(os.Stdout, os.Stderr, true).w)
}

// TestKeysRotateAndRewrap: rotation adds a primary key to each keyset
// and is recorded in the platform trail; re-wrapping moves every keyset
// to a new master key, after which the old key file is not needed.
func TestKeysRotateAndRewrap(t *testing.T) {
	d := newDev(t)
	require.Equal(t, 0, d.runIn(standardRequest("keyed"), "provision", "-f", "-").code)
	type rotateJSON struct {
		Tenant  string   `json:"tenant"`
		Rotated []string `json:"rotated"`
	}
	rot := jsonOut[rotateJSON](t, d.run("keys", "rotate", "keyed", "--output", "json"))
	assert.Equal(t, rotateJSON{Tenant: "keyed", Rotated: []string{"data", "blob", "audit"}}, rot)
	rot = jsonOut[rotateJSON](t, d.run("keys", "rotate", "keyed", "--purpose", "audit", "--output", "json"))
	assert.Equal(t, []string{"audit"}, rot.Rotated)
	assert.Equal(t, 2, strings.Count(d.snapshot()["table platform_audit"], ",tenant.keys.rotate,tenant/keyed,"))
	require.Equal(t, 0, d.run("audit", "verify", "keyed").code, "the tenant's log verifies after rotation")

	old := filepath.Join(d.opts.dir, "master.key")
	oldURI := "local://" + old
	newURI := "local://" + filepath.Join(d.opts.dir, "master2.key")
	r := d.run("keys", "rewrap", "--from", oldURI, "--to", oldURI)
	assert.Equal(t, exitUsage, r.code, "%s", r)
	type rewrapJSON struct {
		Rewrapped int `json:"rewrapped"`
		Failed    int `json:"failed"`
	}
	rw := jsonOut[rewrapJSON](t, d.run("keys", "rewrap", "--from", oldURI, "--to", newURI, "--output", "json"))
	assert.Equal(t, rewrapJSON{Rewrapped: 9, Failed: 0}, rw, "three keysets each of the tenant, the audit key and the backup key")
	rw = jsonOut[rewrapJSON](t, d.run("keys", "rewrap", "--from", oldURI, "--to", newURI, "--output", "json"))
	assert.Equal(t, rewrapJSON{}, rw, "nothing left on the old key")

	// The old key gone, the new one serves everything.
	require.NoError(t, os.Remove(old))
	d.env["TENANTCTL_MASTER_KEY"] = newURI
	require.Equal(t, 0, d.run("audit", "verify", "keyed").code)
	r = d.run("audit", "verify", "--platform")
	require.Equal(t, 0, r.code, "%s", r)
	require.Equal(t, 0, d.runIn(standardRequest("afterwrap"), "provision", "-f", "-").code)
	require.Equal(t, 0, d.run("deprovision", "keyed").code)
}

// TestTenantSettings: config set stores a version, config get reads it
// back (JSON and table), a stale --expect-version is a conflict, and one
// tenant's settings are not another's.
func TestTenantSettings(t *testing.T) {
	d := newDev(t)
	require.Equal(t, 0, d.runIn(standardRequest("cfga"), "provision", "-f", "-").code)
	require.Equal(t, 0, d.runIn(standardRequest("cfgb"), "provision", "-f", "-").code)
	value := `{"requirement_id_pattern": "^REQ-[A-Z]+-[0-9]+$", "categories": ["SECURITY"], "statuses": ["MISSING", "COMPLETE"], "priorities": ["HIGH"]}`
	r := d.runIn(value, "config", "set", "cfga", "rtm", "-f", "-")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Regexp(t, `(?m)^cfga\s+rtm\s+1$`, r.stdout)

	type revisionJSON struct {
		Tenant  string          `json:"tenant"`
		Section string          `json:"section"`
		Version int64           `json:"version"`
		Actor   string          `json:"actor"`
		Value   json.RawMessage `json:"value"`
	}
	rev := jsonOut[revisionJSON](t, d.run("config", "get", "cfga", "rtm", "--output", "json"))
	assert.Equal(t, "cfga", rev.Tenant)
	assert.EqualValues(t, 1, rev.Version)
	assert.Equal(t, "tenantctl", rev.Actor)
	var got map[string]any
	require.NoError(t, json.Unmarshal(rev.Value, &got))
	assert.Equal(t, []any{"SECURITY"}, got["categories"])
	r = d.run("config", "get", "cfga", "rtm")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, "# tenant cfga, section rtm, version 1")

	r = d.runIn(value, "config", "set", "cfga", "rtm", "-f", "-", "--expect-version", "0")
	assert.Equal(t, exitConflict, r.code, "%s", r)
	r = d.run("config", "get", "cfgb", "rtm")
	assert.Equal(t, exitNotFound, r.code, "cfgb has no settings: %s", r)
	r = d.run("config", "get", "cfga", "colours")
	assert.Equal(t, exitUsage, r.code, "%s", r)
}

// shellQuote quotes words for sh.
func shellQuote(words []string) []string {
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return out
}

func storeProgress(done, total int) store.MigrateProgress {
	return store.MigrateProgress{Migrated: done, Total: total}
}
