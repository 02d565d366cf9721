#!/usr/bin/env bash
# floor.sh measures, with pgbench (a C client, so no Go and no tenancy code
# in the loop), what PostgreSQL itself charges for the isolation that store
# sets up on every tenant-scoped call: one more statement that assumes the
# tenant (role, search_path, app.tenant_id, all transaction-local) in the
# same round trip, the row-level-security policy, and the CLOSE ALL that
# ends cursors held by earlier transactions. It prints transactions
# per second for each variant and its ratio to the bare SELECT.
#
#   store/testdata/pgbench/floor.sh            # 8 s per variant
#   SECONDS_PER_RUN=20 store/testdata/pgbench/floor.sh
#
# It connects with the libpq defaults (PGHOST, PGPORT, PGUSER ...) as a role
# that may create databases and roles (postgres here), creates a scratch
# database and two roles with a random suffix, and drops them at the end.
set -euo pipefail

secs=${SECONDS_PER_RUN:-8}
sfx=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
db=floor_$sfx app=floor_app_$sfx trole=floor_tenant_$sfx
admin=${PGUSER:-postgres}
work=$(mktemp -d)

cleanup() {
	if ! psql -X -q -v ON_ERROR_STOP=1 -U "$admin" -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" \
		-c "DROP ROLE IF EXISTS $app" -c "DROP ROLE IF EXISTS $trole" >/dev/null; then
		echo "floor.sh: could not drop database $db or roles $app, $trole: drop them by hand" >&2
	fi
	rm -rf "$work"
}

v=$(pgbench --version | sed -n 's/.* \([0-9][0-9]*\)\..*/\1/p' | head -1)
if [ -z "$v" ] || [ "$v" -lt 14 ]; then
	echo "floor.sh: needs pgbench 14 or later (\\startpipeline); found: $(pgbench --version)" >&2
	exit 1
fi
trap cleanup EXIT

psql -X -q -v ON_ERROR_STOP=1 -U "$admin" -d postgres \
	-c "CREATE DATABASE $db" -c "CREATE ROLE $app LOGIN NOINHERIT" -c "CREATE ROLE $trole NOLOGIN" \
	-c "GRANT $trole TO $app"
# The guard and policy are the ones store creates (store/controlplane.go,
# store/tables.go), with this script's role names; here PUBLIC may execute
# them, where store grants EXECUTE to a group role of tenant roles.
psql -X -q -v ON_ERROR_STOP=1 -U "$admin" -d "$db" <<SQL
CREATE SCHEMA tenancy;
GRANT USAGE ON SCHEMA tenancy TO PUBLIC;
CREATE FUNCTION tenancy.no_tenant(t text) RETURNS text LANGUAGE plpgsql STABLE PARALLEL SAFE AS \$f\$
BEGIN RAISE EXCEPTION 'no tenant' USING ERRCODE = '42501'; END \$f\$;
CREATE FUNCTION tenancy.current_tenant() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS \$f\$
  SELECT CASE WHEN current_user = 'floor_tenant_' || current_setting('app.tenant_id', true)
              THEN current_setting('app.tenant_id', true)
              ELSE tenancy.no_tenant(current_setting('app.tenant_id', true)) END \$f\$;
CREATE TABLE public.plain (id int PRIMARY KEY, v text);
INSERT INTO public.plain SELECT g, 'requirement text ' || g FROM generate_series(1, 1000) g;
GRANT SELECT ON public.plain TO $app;
CREATE SCHEMA t; GRANT USAGE ON SCHEMA t TO $trole;
CREATE TABLE t.norls (id int PRIMARY KEY, v text);
INSERT INTO t.norls SELECT g, 'requirement text ' || g FROM generate_series(1, 1000) g;
CREATE TABLE t.req (tenant_id text NOT NULL, id int PRIMARY KEY, v text);
INSERT INTO t.req SELECT '$sfx', g, 'requirement text ' || g FROM generate_series(1, 1000) g;
ALTER TABLE t.req ENABLE ROW LEVEL SECURITY; ALTER TABLE t.req FORCE ROW LEVEL SECURITY;
CREATE POLICY isolation ON t.req USING (tenant_id = tenancy.current_tenant());
GRANT SELECT ON t.norls, t.req TO $trole;
-- pgbench prepares every statement of a script before it runs any, under
-- the application role: only for that does the application role get USAGE
-- on the tenant schema here (store never grants it; the SELECT privilege
-- is still the tenant role's alone).
GRANT USAGE ON SCHEMA t TO $app;
ANALYZE;
SQL

# pgbench prepares every statement before it runs any, under the
# application role's search_path, so the tenant tables are named with their
# schema.
setup="SELECT set_config('role', '$trole', true), set_config('search_path', 't, pg_temp', true), set_config('app.tenant_id', '$sfx', true);"
cat >"$work/raw.sql" <<SQL
\set id random(1, 1000)
SELECT v FROM public.plain WHERE id = :id;
SQL
cat >"$work/noop.sql" <<SQL
\set id random(1, 1000)
\startpipeline
SELECT 1;
SELECT v FROM public.plain WHERE id = :id;
\endpipeline
SQL
cat >"$work/setup_norls.sql" <<SQL
\set id random(1, 1000)
\startpipeline
$setup
SELECT v FROM t.norls WHERE id = :id;
\endpipeline
SQL
cat >"$work/setup_rls.sql" <<SQL
\set id random(1, 1000)
\startpipeline
$setup
SELECT v FROM t.req WHERE id = :id;
\endpipeline
SQL
cat >"$work/store.sql" <<SQL
\set id random(1, 1000)
\startpipeline
CLOSE ALL;
$setup
SELECT v FROM t.req WHERE id = :id;
\endpipeline
SQL

run() {
	local out tps
	out=$(pgbench -n -M prepared -U "$app" -c 2 -j 2 -T "$secs" -f "$work/$1.sql" "$db" 2>&1) || true
	tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
	if [ -z "$tps" ] || grep -q 'error' <<<"$out"; then
		echo "floor.sh: variant $1 failed:" >&2
		echo "$out" >&2
		exit 1
	fi
	echo "$tps"
}
base=$(run raw)
printf '%-60s %10s %8s\n' variant tps vs_raw
printf '%-60s %10.0f %8.2f\n' "raw: SELECT by primary key" "$base" 1
for v in noop setup_norls setup_rls store; do
	case $v in
	noop) name="+ SELECT 1 in the same round trip" ;;
	setup_norls) name="+ setup (role, search_path, app.tenant_id), no RLS" ;;
	setup_rls) name="+ setup, and the RLS policy" ;;
	store) name="+ CLOSE ALL before the setup (what store does)" ;;
	esac
	tps=$(run "$v")
	printf '%-60s %10.0f %8.2f\n' "$name" "$tps" "$(awk -v a="$tps" -v b="$base" 'BEGIN { print a / b }')"
done
