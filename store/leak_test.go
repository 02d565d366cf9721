package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
	"github.com/stretchr/testify/require"
)

// TestLeakHuntConcurrentTenantsSeeOnlyTheirOwnRows runs 64 goroutines over
// 20 tenants on a small pool, so connections pass from tenant to tenant all
// the time, through every scoped call (implicit Exec/Query/QueryRow, Tx,
// failing statements), and checks that every row each operation sees is its
// own tenant's. Run it under -race.
func TestLeakHuntConcurrentTenantsSeeOnlyTheirOwnRows(t *testing.T) {
	const (
		tenants    = 20
		goroutines = 64
		rounds     = 12
	)
	db := newStore(t, func(c *store.Config) { c.App.MaxConns = 4 })
	shared := store.Table{Name: "events", Columns: `seq bigint NOT NULL, owner text NOT NULL`}
	sch := uniqueName("leakshared")
	require.NoError(t, db.CreateSharedTable(ctxT(t), sch, shared))
	events := pgx.Identifier{sch, "events"}.Sanitize()
	ctxs := make([]context.Context, tenants)
	for i := range ctxs {
		_, ctxs[i] = newTenant(t, db, "leak")
	}

	check := ownRows

	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				ctx := ctxs[(g+r)%tenants]
				id, _ := tenant.FromContext(ctx)
				key := fmt.Sprintf("G%d-R%d", g, r)
				err := func() error {
					if _, err := db.Exec(ctx, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ($1, 'LEAK', $2)`, key, id.String()); err != nil {
						return err
					}
					if _, err := db.Exec(ctx, `INSERT INTO `+events+` (seq, owner) VALUES ($1, $2)`, g*rounds+r, id.String()); err != nil {
						return err
					}
					rows, err := db.Query(ctx, `SELECT tenant_id, requirement_text FROM requirements`)
					if err := check(id, rows, err); err != nil {
						return err
					}
					rows, err = db.Query(ctx, `SELECT tenant_id, owner FROM `+events)
					if err := check(id, rows, err); err != nil {
						return err
					}
					var text string
					if err := db.QueryRow(ctx, `SELECT requirement_text FROM requirements WHERE req_id = $1`, key).Scan(&text); err != nil {
						return err
					}
					if text != id.String() {
						return fmt.Errorf("LEAK: tenant %s read %q", id, text)
					}
					// An error in the middle of the traffic must not leave state behind.
					if _, err := db.Exec(ctx, `SELECT 1/0`); err == nil {
						return errors.New("division by zero did not fail")
					}
					return db.Tx(ctx, func(tx *store.Tx) error {
						if tx.Tenant() != id {
							return fmt.Errorf("LEAK: tx for %s scoped to %s", id, tx.Tenant())
						}
						if _, err := tx.Exec(ctx, `UPDATE requirements SET status = 'TESTED' WHERE req_id = $1`, key); err != nil {
							return err
						}
						rows, err := tx.Query(ctx, `SELECT tenant_id, requirement_text FROM requirements WHERE status = 'TESTED'`)
						return check(id, rows, err)
					})
				}()
				if err != nil {
					errs <- fmt.Errorf("goroutine %d round %d: %w", g, r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Every tenant ends with exactly its own rows.
	want := make([]int, tenants)
	for g := range goroutines {
		for r := range rounds {
			want[(g+r)%tenants]++
		}
	}
	for i, ctx := range ctxs {
		var n, foreign int
		id, _ := tenant.FromContext(ctx)
		require.NoError(t, db.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE requirement_text <> $1) FROM requirements`, id.String()).Scan(&n, &foreign))
		require.Equal(t, want[i], n, "tenant %s row count", id)
		require.Zero(t, foreign)
	}
}
