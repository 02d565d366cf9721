package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
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
