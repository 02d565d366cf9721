#!/usr/bin/env bash
# memberships.sh N times the first SET LOCAL ROLE of a new session whose
# login role is a member of N roles, as store's application role is a
# member of every standard-tier tenant's role. PostgreSQL computes the
# list of a login role's memberships on first need in each backend (and
# again after any role change in the cluster); on PostgreSQL 15 that takes
# time that grows with N squared.
#
#   store/testdata/pgbench/memberships.sh 10000     # about a second here
#   store/testdata/pgbench/memberships.sh 100000    # over a minute here
#
# It connects with the libpq defaults (PGHOST, PGPORT, PGUSER ...) as a role
# that may create roles (postgres here), creates N+1 roles with a random
# prefix, and drops them at the end (a few hundred per transaction, as one
# transaction cannot lock 100,000 roles).
set -euo pipefail

n=${1:-10000}
case $n in '' | *[!0-9]*)
	echo "memberships.sh: N must be a positive integer, got '$n'" >&2
	exit 2
	;;
esac
sfx=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
app=mship_app_$sfx prefix=mship_r_${sfx}_
admin=${PGUSER:-postgres}

cleanup() {
	psql -X -q -U "$admin" -d postgres -At -c "SELECT format('DROP ROLE IF EXISTS %I;', rolname) FROM pg_roles WHERE starts_with(rolname, '$prefix')" |
		awk '{ print } NR % 500 == 0 { print "COMMIT; BEGIN;" }' |
		{ echo "BEGIN;"; cat; echo "COMMIT;"; } |
		psql -X -q -v ON_ERROR_STOP=1 -U "$admin" -d postgres >/dev/null &&
		psql -X -q -v ON_ERROR_STOP=1 -U "$admin" -d postgres -c "DROP ROLE IF EXISTS $app" >/dev/null ||
		echo "memberships.sh: could not drop the roles named $app or $prefix*: drop them by hand" >&2
}
trap cleanup EXIT

psql -X -q -v ON_ERROR_STOP=1 -U "$admin" -d postgres -c "CREATE ROLE $app LOGIN NOINHERIT"
start=$(date +%s)
psql -X -q -v ON_ERROR_STOP=1 -U "$admin" -d postgres <<SQL
DO \$\$
BEGIN
  FOR i IN 1..$n LOOP
    EXECUTE format('CREATE ROLE %I NOLOGIN', '$prefix' || i);
    EXECUTE format('GRANT %I TO %I', '$prefix' || i, '$app');
  END LOOP;
END
\$\$;
SQL
echo "created $n roles, each granted to $app, in $(($(date +%s) - start)) s"

# \timing prints the duration of each command; the one after SET is ours.
out=$(psql -X -U "$app" -d postgres -c '\timing on' -c 'BEGIN' -c "SET LOCAL ROLE ${prefix}1" -c 'COMMIT' \
	-c 'BEGIN' -c "SET LOCAL ROLE ${prefix}1" -c 'COMMIT')
echo "$out" | awk '/^SET$/ { getline; n++; print (n == 1 ? "first SET LOCAL ROLE in a new session: " : "second, memberships cached:          ") $2, $3 }'
