package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestREADMEShowsThisCode checks that the README's store snippet is this
// program's run function, character for character.
func TestREADMEShowsThisCode(t *testing.T) {
	src, err := os.ReadFile("main.go")
	require.NoError(t, err)
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	_, after, ok := strings.Cut(string(src), "// README: begin\n")
	require.True(t, ok)
	body, _, ok := strings.Cut(after, "\n// README: end")
	require.True(t, ok)
	assert.Contains(t, string(readme), strings.TrimSpace(body), "README.md must show examples/readme/main.go's run, as is")
}

// TestRunsAsCopied runs the snippet against a scratch database, with a
// superuser as the admin and a platform login with no privileges.
func TestRunsAsCopied(t *testing.T) {
	d := pgtest.DB(t)
	platform := d.CreateRole(t, "platform", "")
	// The snippet uses no RolePrefix, so pgtest does not know its roles:
	// drop them here (their privileges in this database first).
	t.Cleanup(func() {
		ctx := context.Background()
		c, err := pgx.Connect(ctx, d.AdminURL())
		require.NoError(t, err)
		defer c.Close(ctx)
		// The enterprise tenant's database (no RolePrefix either); the
		// dedicated cluster goes away whole when the package ends.
		rows, err := c.Query(ctx, `SELECT database FROM tenancy.tenant_logins WHERE cluster IS NULL AND database IS NOT NULL`)
		require.NoError(t, err)
		dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		for _, db := range dbs {
			_, err = c.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{db}.Sanitize()+` WITH (FORCE)`)
			require.NoError(t, err)
		}
		rows, err = c.Query(ctx, `SELECT role_name FROM tenancy.tenant_logins WHERE cluster IS NULL UNION ALL
			SELECT rolname FROM pg_roles WHERE shobj_description(oid, 'pg_authid') LIKE 'tenancy: %RolePrefix ""'
			  AND has_database_privilege(oid, current_database(), 'CONNECT')`)
		require.NoError(t, err)
		roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.NotEmpty(t, roles)
		for _, r := range roles {
			_, err := c.Exec(ctx, `DROP OWNED BY `+pgx.Identifier{r}.Sanitize())
			require.NoError(t, err)
			_, err = c.Exec(ctx, `DROP ROLE `+pgx.Identifier{r}.Sanitize())
			require.NoError(t, err)
		}
	})
	r, w, err := os.Pipe()
	require.NoError(t, err)
	stdout := os.Stdout
	os.Stdout = w
	// A secret of its own: tenant role names derive from it, and roles are
	// cluster-wide.
	gov := pgtest.SecondCluster(t)
	// IDs of this run's own: the enterprise tenant's database is named
	// after its ID, cluster-wide.
	base := "rd" + strings.ToLower(rand.Text()[:8])
	ids := [3]string{base + "s", base + "e", base + "g"}
	err = run(t.Context(), d.AdminURL(), platform, gov.AdminURL(), rand.Text()+rand.Text(), ids)
	os.Stdout = stdout
	w.Close()
	var out bytes.Buffer
	_, _ = io.Copy(&out, r)
	require.NoError(t, err)
	assert.Equal(t, "standard tenant "+ids[0]+" has 1 requirement(s)\n"+
		"enterprise tenant "+ids[1]+" has 1 requirement(s)\n"+
		"government tenant "+ids[2]+" has 1 requirement(s)\n", out.String())
}
