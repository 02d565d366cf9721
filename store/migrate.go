package store

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/tenant"
)

// applyAllNew applies every tenant migration of AdminConfig.Migrations to
// the new tenant id placed at p, in tx (a transaction on the tenant's
// database, with the tenant's schema created and empty but for
// AdminConfig.Tables), records each in tx's tenancy.tenant_migrations and
// returns the versions applied, in order.
//
// TODO(migrations): the fleet migration runner fills this in.
func (a *Admin) applyAllNew(ctx context.Context, tx pgx.Tx, id tenant.ID, p placement) ([]int, error) {
	return nil, nil
}
