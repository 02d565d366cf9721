package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/store"
)

// passwordForms are connection strings to a server that is not there
// (port 1), each with its password in one of the forms pgconn accepts,
// and the password.
var passwordForms = []struct{ name, url, password string }{
	{"url user info", "postgres://postgres:Sentinel1userinfo@127.0.0.1:1/postgres", "Sentinel1userinfo"},
	{"url query", "postgres://postgres@127.0.0.1:1/postgres?password=Sentinel2query", "Sentinel2query"},
	{"keyword/value", "host=127.0.0.1 port=1 user=postgres password=Sentinel3keyword dbname=postgres", "Sentinel3keyword"},
	{"quoted keyword/value", "host=127.0.0.1 port=1 user=postgres password='Sentinel4 quoted' dbname=postgres", "Sentinel4"},
}

// TestConnectFailurePrintsNoPassword: init --dev failing to reach the
// server names the server and the user, never the password, whichever
// form the connection string gives it in.
func TestConnectFailurePrintsNoPassword(t *testing.T) {
	for _, f := range passwordForms {
		t.Run(f.name, func(t *testing.T) {
			dir := t.TempDir()
			r := runCLI(t, map[string]string{"TENANTCTL_ADMIN_URL": f.url}, "", "--config", dir+"/tenantctl.yaml", "init", "--dev", "--dir", dir+"/state")
			assert.Equal(t, 1, r.code, "%s", r)
			assert.Contains(t, r.stderr, "connect to PostgreSQL as superuser")
			assert.Contains(t, r.stderr, "user=postgres host=127.0.0.1 port=1 database=postgres", "%s", r)
			assert.NotContains(t, r.stdout+r.stderr, f.password)
			assert.False(t, strings.Contains(strings.ToLower(r.stdout+r.stderr), "sentinel"), "%s", r)
		})
	}
}

// TestPasswordInURLFlagIsRefused: a connection string given as a flag,
// which ps shows and shell history keeps, must not hold a password, in
// any form; the error names the flag and where the password goes instead,
// and repeats no password. The same URLs from the environment or the
// configuration file are accepted.
func TestPasswordInURLFlagIsRefused(t *testing.T) {
	forms := append(passwordForms[:len(passwordForms):len(passwordForms)],
		struct{ name, url, password string }{"sslpassword", "host=127.0.0.1 port=1 user=postgres sslpassword=Sentinel5ssl", "Sentinel5ssl"})
	for _, f := range forms {
		for _, c := range []struct {
			flag string
			args func(dir string) []string
		}{
			{"--admin-url", func(string) []string { return []string{"--admin-url", f.url, "list"} }},
			{"--platform-url", func(string) []string { return []string{"--platform-url", f.url, "list"} }},
			{"--admin-url", func(dir string) []string {
				return []string{"init", "--dev", "--admin-url", f.url, "--dir", dir + "/state"}
			}},
		} {
			t.Run(f.name+" "+strings.Join(c.args("")[:1], " ")+" "+c.flag, func(t *testing.T) {
				dir := t.TempDir()
				config := dir + "/tenantctl.yaml"
				if c.args(dir)[0] != "init" {
					config = writeFile(t, "tenantctl.yaml", "actor: tester\n")
				}
				r := runCLI(t, nil, "", append([]string{"--config", config}, c.args(dir)...)...)
				flag := c.flag
				assert.Equal(t, exitConfig, r.code, "%s", r)
				assert.Contains(t, r.stderr, flag+": a connection string given as a flag must not hold a password", "%s", r)
				assert.Contains(t, r.stderr, "PGPASSWORD", "%s", r)
				assert.NotContains(t, r.stdout+r.stderr, f.password)
				assert.NoDirExists(t, dir+"/state")
			})
		}
	}

	// From the environment and the file, a password in the URL is accepted.
	path := writeFile(t, "tenantctl.yaml", "admin_url: \"postgres://admin:Sentinel6file@db/rtmx\"\n")
	env := map[string]string{"TENANTCTL_PLATFORM_URL": "host=db user=platform password=Sentinel7env"}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	flags := addConfigFlags(fs)
	require.NoError(t, fs.Parse([]string{"--objects-bucket", "mem://"}))
	c, _, err := loadConfig(path, func(k string) string { return env[k] }, fs, flags)
	require.NoError(t, err)
	assert.Equal(t, "postgres://admin:Sentinel6file@db/rtmx", c.AdminURL)
	assert.Equal(t, "host=db user=platform password=Sentinel7env", c.PlatformURL)

	// A URL flag without a password is accepted.
	fs = pflag.NewFlagSet("t", pflag.ContinueOnError)
	flags = addConfigFlags(fs)
	require.NoError(t, fs.Parse([]string{"--admin-url", "postgres://admin@db/rtmx?sslmode=disable&application_name=x", "--platform-url", "host=db user=platform search_path=x"}))
	c, _, err = loadConfig(path, func(string) string { return "" }, fs, flags)
	require.NoError(t, err)
	assert.Equal(t, "host=db user=platform search_path=x", c.PlatformURL)
}

// TestInitSetsThePlatformPasswordAsAVerifier: init --dev sends the
// platform role's password as a SCRAM-SHA-256 verifier computed in Go
// (store.DefaultSCRAMIterations; PostgreSQL 15 hashes a clear-text one
// with 4096), and on a server that asks for passwords the platform role
// logs in with the password file.
func TestInitSetsThePlatformPasswordAsAVerifier(t *testing.T) {
	d := newDevOn(t, pgtest.NewSCRAMCluster(t))
	conn, err := pgx.Connect(t.Context(), d.adminURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var stored string
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT rolpassword FROM pg_authid WHERE rolname = $1`, d.opts.rolePrefix+"platform").Scan(&stored))
	assert.True(t, strings.HasPrefix(stored, fmt.Sprintf("SCRAM-SHA-256$%d:", store.DefaultSCRAMIterations)), "rolpassword %q", stored)

	r := d.run("list")
	require.Equal(t, 0, r.code, "the platform role logs in with its password: %s", r)
	require.NoError(t, os.WriteFile(filepath.Join(d.opts.dir, "platform.password"), []byte("00ff\n"), 0o600))
	r = d.run("list")
	assert.Equal(t, 1, r.code, "a wrong password: %s", r)
	assert.Contains(t, r.stderr, "password authentication failed")
}
