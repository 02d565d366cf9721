package scratchdb_test

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/internal/pgtest"
	"github.com/rtmx-ai/tenancy/internal/scratchdb"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestCheckNamesRefusesPrefixesThatReachOtherRoles(t *testing.T) {
	require.NoError(t, scratchdb.CheckNames("tenancy_x", "tx_"))
	for _, tc := range []struct{ db, prefix, want string }{
		{"Tenancy", "tx_", `database "Tenancy" is not a lower-case SQL name`},
		{"x; DROP", "tx_", "is not a lower-case SQL name"},
		{"tenancy_x", "", `role prefix ""`},
		{"tenancy_x", "t_", `role prefix "t_"`},
		{"tenancy_x", "pg_x_", `role prefix "pg_x_"`},
		{"tenancy_x", "_tx_", `role prefix "_tx_"`},
		{"tenancy_x", "tx", `role prefix "tx"`},
		{"tenancy_x", "averyveryverylongprefix_", "3 to 16 bytes"},
	} {
		err := scratchdb.CheckNames(tc.db, tc.prefix)
		if assert.Error(t, err, "%q %q", tc.db, tc.prefix) {
			assert.Contains(t, err.Error(), tc.want)
		}
	}
}

func TestTargetHoldsNoPassword(t *testing.T) {
	for _, s := range []string{
		"postgres://u:sekrit@db.example:6543/d",
		"postgres://u@db.example:6543/d?password=sekrit",
		"host=db.example port=6543 user=u dbname=d password=sekrit",
		"host=db.example port=6543 user=u dbname=d password='sekrit'",
		"postgres://u:sekrit@db.example:6543/d?nonsense=%zz",
	} {
		got := scratchdb.Target(s)
		assert.NotContains(t, got, "sekrit", s)
		if !strings.Contains(s, "%zz") {
			assert.Equal(t, "user=u host=db.example port=6543 database=d", got, s)
		}
	}
}

// TestLoginRoleSendsAVerifierAndDropRemovesOnlyThePrefix: the statement
// carries a SCRAM verifier, never the password, and the role logs in with
// the password; Drop removes the database and the roles of the prefix,
// and leaves a role outside it.
func TestLoginRoleSendsAVerifierAndDropRemovesOnlyThePrefix(t *testing.T) {
	db := pgtest.NewSCRAMCluster(t)
	ctx := t.Context()
	server, err := pgx.Connect(ctx, db.AdminURL())
	require.NoError(t, err)
	defer server.Close(ctx)
	const password = "correct horse battery staple"
	sql, err := scratchdb.LoginRole("sdbt_login", password)
	require.NoError(t, err)
	assert.NotContains(t, sql, password)
	assert.Contains(t, sql, "PASSWORD 'SCRAM-SHA-256$")
	_, err = server.Exec(ctx, sql)
	require.NoError(t, err)
	_, err = server.Exec(ctx, `CREATE ROLE sdbtx_other`)
	require.NoError(t, err)
	_, err = server.Exec(ctx, `CREATE DATABASE sdbt_db OWNER sdbt_login`)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = server.Exec(ctx, `DROP ROLE IF EXISTS sdbtx_other`) })

	cfg, err := pgx.ParseConfig(db.AdminURL())
	require.NoError(t, err)
	cfg.User, cfg.Password, cfg.Database = "sdbt_login", password, "sdbt_db"
	login, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err, "the role logs in with its password")
	require.NoError(t, login.Close(ctx))

	_, err = scratchdb.LoginRole("bad name", password)
	assert.Error(t, err)

	require.NoError(t, scratchdb.Drop(ctx, server, "sdbt_db", "sdbt_"))
	require.NoError(t, scratchdb.Drop(ctx, server, "sdbt_db", "sdbt_"), "again")
	var roles []string
	rows, err := server.Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname LIKE 'sdbt%' ORDER BY 1`)
	require.NoError(t, err)
	roles, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	assert.Equal(t, []string{"sdbtx_other"}, roles)
	var dbs int
	require.NoError(t, server.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = 'sdbt_db'`).Scan(&dbs))
	assert.Zero(t, dbs)
	assert.Error(t, scratchdb.Drop(ctx, server, "sdbt_db", "s_"), "a prefix too short is refused")
}
