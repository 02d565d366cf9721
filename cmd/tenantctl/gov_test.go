package main

import (
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
)

// TestGovernmentCluster: with government_clusters configured, a
// government tenant is placed in a database of its own on the dedicated
// cluster, and deprovisioning (its backup read there by the backup role)
// removes it; a "dedicated" request gets a master key of its own, which
// the deprovisioning destroys.
func TestGovernmentCluster(t *testing.T) {
	second := pgtest.SecondCluster(t)
	d := newDev(t)
	// The backup role, on the dedicated cluster too.
	second.Exec(t, `DO $$ BEGIN CREATE ROLE `+quoteIdent(d.opts.rolePrefix+"backup")+` NOLOGIN BYPASSRLS; EXCEPTION WHEN duplicate_object THEN NULL; END $$`)
	f, err := os.OpenFile(d.config, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("government_clusters:\n  - name: gov\n    admin_url: " + second.AdminURL() + "\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())

	req := strings.NewReplacer("tier: standard", "tier: government", "encryption: platform-managed", "encryption: dedicated").Replace(standardRequest("agency1"))
	r := d.runIn(req, "provision", "-f", "-", "--dry-run")
	require.Equal(t, 0, r.code, "%s", r)
	assert.Contains(t, r.stdout, "gov")
	r = d.runIn(req, "provision", "-f", "-")
	require.Equal(t, 0, r.code, "%s", r)

	conn, err := pgx.Connect(t.Context(), second.AdminURL())
	require.NoError(t, err)
	defer conn.Close(t.Context())
	var onGov bool
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, d.opts.rolePrefix+"tenant_agency1").Scan(&onGov))
	assert.True(t, onGov, "the tenant's database is on the dedicated cluster")
	keys, err := os.ReadDir(d.opts.dir + "/tenant-keys")
	require.NoError(t, err)
	assert.NotEmpty(t, keys, "a master key of the tenant's own")

	r = d.run("deprovision", "agency1")
	require.Equal(t, 0, r.code, "%s", r)
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, d.opts.rolePrefix+"tenant_agency1").Scan(&onGov))
	assert.False(t, onGov, "gone from the dedicated cluster")
	keys, err = os.ReadDir(d.opts.dir + "/tenant-keys")
	require.NoError(t, err)
	assert.Empty(t, keys, "the tenant's own master key is destroyed")
}
