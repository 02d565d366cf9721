package store

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/tenant"
)

// Remains lists what of tenant id's placement still exists, looking at
// the servers themselves rather than the directory: its schema in this
// database, a database of its name on this cluster or on any registered
// cluster, a login role of its name under any configured LoginSecret, its
// rows in the control plane's logins and migrations ledgers and in every
// shared table. Nothing means nothing remains: after DropTenant or
// FailTenant, and for a tenant that never had a placement. Deprovisioning
// asks it to verify its work.
func (a *Admin) Remains(ctx context.Context, id tenant.ID) ([]string, error) {
	if id.IsZero() {
		return nil, fmt.Errorf("store: remains: %w", tenant.ErrNoTenant)
	}
	var roles []string
	for v := range a.secrets.byVersion {
		name, err := a.secrets.roleNameOf(v, a.rolePrefix, id)
		if err != nil {
			return nil, err
		}
		roles = append(roles, name)
	}
	slices.Sort(roles)
	db := a.tenantDatabase(id)
	var out []string
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = $1`, id.SchemaName()).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			out = append(out, "schema "+id.SchemaName())
		}
		for _, q := range []struct{ what, sql string }{
			{"login record", `SELECT count(*) FROM tenancy.tenant_logins WHERE tenant_id = $1`},
			{"migration ledger rows", `SELECT count(*) FROM tenancy.tenant_migrations WHERE tenant_id = $1`},
		} {
			if err := tx.QueryRow(ctx, q.sql, id.String()).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				out = append(out, fmt.Sprintf("%d %s in the control plane", n, q.what))
			}
		}
		rows, err := tx.Query(ctx, `SELECT schema_name, table_name FROM tenancy.shared_tables ORDER BY 1, 2`)
		if err != nil {
			return err
		}
		tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
			var t [2]string
			return t, r.Scan(&t[0], &t[1])
		})
		if err != nil {
			return err
		}
		for _, t := range tables {
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{t[0], t[1]}.Sanitize()+` WHERE tenant_id = $1`, id.String()).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				out = append(out, fmt.Sprintf("%d rows in shared table %s.%s", n, t[0], t[1]))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: remains of %s: %w", id, err)
	}
	clusters := []string{""}
	for name := range a.clusters {
		clusters = append(clusters, name)
	}
	slices.Sort(clusters)
	for _, c := range clusters {
		pool, err := a.clusterPool(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("store: remains of %s: cluster %q: %w", id, c, err)
		}
		where := "this cluster"
		if c != "" {
			where = "cluster " + c
		}
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, db).Scan(&n); err != nil {
			return nil, fmt.Errorf("store: remains of %s: %w", id, err)
		}
		if n > 0 {
			out = append(out, "database "+db+" on "+where)
		}
		rows, err := pool.Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname = ANY($1) ORDER BY 1`, roles)
		if err != nil {
			return nil, fmt.Errorf("store: remains of %s: %w", id, err)
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("store: remains of %s: %w", id, err)
		}
		for _, r := range names {
			out = append(out, "login role "+r+" on "+where)
		}
	}
	return out, nil
}
