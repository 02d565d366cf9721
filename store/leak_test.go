package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// ownRows checks that rows hold (tenant_id, owner) pairs naming want only,
// and at least one.
func ownRows(want tenant.ID) func(rows pgx.Rows, err error) error {
	return func(rows pgx.Rows, err error) error { return checkOwnRows(want, rows, err) }
}

func checkOwnRows(want tenant.ID, rows pgx.Rows, err error) error {
	if err != nil {
		return err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var tid, owner string
		if err := rows.Scan(&tid, &owner); err != nil {
			return err
		}
		if tid != want.String() || owner != want.String() {
			return fmt.Errorf("LEAK: tenant %s saw row of tenant_id=%s owner=%s", want, tid, owner)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("tenant %s saw none of its own rows", want)
	}
	return nil
}

// TestLeakHunt runs 64 goroutines over 20 tenants with a global cap of 6
// connections, so that tenants wait for each other and evict each other's
// connections all through the run, and checks every row each one reads.
func TestLeakHunt(t *testing.T) {
	const goroutines, tenants, rounds = 64, 20, 25
	forPlacements(t, func(t *testing.T, e *env) {
		ids := make([]tenant.ID, tenants)
		for i := range ids {
			var ctx context.Context
			ids[i], ctx = e.newTenant(t, "leak")
			for j := range 3 {
				_, err := e.db.Exec(ctx, `INSERT INTO requirements (req_id, category, requirement_text) VALUES ($1, 'LEAK', $2)`,
					fmt.Sprintf("REQ-%d", j), ids[i].String())
				require.NoError(t, err)
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, goroutines)
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := range rounds {
					id := ids[(g+r)%tenants]
					ctx := tenant.NewContext(t.Context(), id)
					var err error
					switch r % 3 {
					case 0:
						err = ownRows(id)(e.db.Query(ctx, `SELECT tenant_id, requirement_text FROM requirements`))
					case 1:
						err = e.db.Tx(ctx, func(tx *store.Tx) error {
							if _, err := tx.Exec(ctx, `UPDATE requirements SET status = 'PARTIAL' WHERE req_id = 'REQ-0'`); err != nil {
								return err
							}
							return ownRows(id)(tx.Query(ctx, `SELECT tenant_id, requirement_text FROM requirements`))
						})
					case 2:
						var tid, owner string
						err = e.db.QueryRow(ctx, `SELECT tenant_id, requirement_text FROM requirements WHERE req_id = 'REQ-1'`).Scan(&tid, &owner)
						if err == nil && (tid != id.String() || owner != id.String()) {
							err = fmt.Errorf("LEAK: tenant %s saw %s/%s", id, tid, owner)
						}
					}
					if err != nil {
						errs <- err
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
		s := e.db.Stats()
		t.Logf("stats after the hunt: %+v", s)
		assert.LessOrEqual(t, s.Conns, 6, "the global cap holds")
		if e.logins() {
			assert.Positive(t, s.Waits, "tenants waited for the cap")
			assert.Positive(t, s.Evictions, "tenants evicted each other")
		}
	}, func(_ *store.AdminConfig, c *store.Config) { c.MaxConns, c.MinResidency = 6, 5*time.Millisecond })
}
