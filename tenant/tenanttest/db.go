package tenanttest

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// maxRows is the most rows the suite reads from one table.
const maxRows = 100_000

// checkDB is verification test 2: a query without a tenant fails, each
// tenant's session reads its own rows only, another tenant's schema named
// outright gives nothing of that tenant's, and a canary holding SQL
// metacharacters is stored as given.
func (s *suite) checkDB(ctx context.Context, r *report) {
	db := s.h.DB
	// Without a tenant in the context, every call fails with ErrNoTenant,
	// and the function of a transaction does not run.
	none := tenant.NewContext(ctx, tenant.ID{}) // carries no tenant, whatever ctx carried
	const probe = `SELECT 1`
	noTenant := func(call string, err error) {
		if !errors.Is(err, tenant.ErrNoTenant) {
			r.failf("DB.%s with a context without a tenant: got %v, want an error wrapping tenant.ErrNoTenant", call, err)
		}
	}
	rows, err := db.Query(none, probe)
	if err == nil {
		err = rowsErr(rows)
	}
	noTenant("Query", err)
	var one int
	noTenant("QueryRow", db.QueryRow(none, probe).Scan(&one))
	_, err = db.Exec(none, probe)
	noTenant("Exec", err)
	ran := false
	err = db.Tx(none, func(*store.Tx) error { ran = true; return nil })
	noTenant("Tx", err)
	if ran {
		r.failf("DB.Tx with a context without a tenant ran its function")
	}
	ran = false
	err = db.BeginTx(none, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(*store.Tx) error { ran = true; return nil })
	noTenant("BeginTx", err)
	if ran {
		r.failf("DB.BeginTx with a context without a tenant ran its function")
	}

	if len(s.h.Tables) == 0 {
		r.notRun("Tables", "what each tenant's session reads of the tables")
		return
	}
	// A canary of each tenant, and one holding SQL metacharacters.
	hostile := map[tenant.ID]string{}
	needle := map[tenant.ID]string{}
	for _, tn := range s.h.Tenants {
		_, n, err := s.plant(ctx, tn)
		if err != nil {
			r.failf("Harness.Plant for tenant %s: %v", tn.ID, err)
			return
		}
		needle[tn.ID] = n
		_, canary, _, err := s.plantWith(ctx, tn, hostileSQL)
		if err != nil {
			r.failf("Harness.Plant for tenant %s of the canary %q, which holds SQL metacharacters: %v (does the service build SQL text from its input?)", tn.ID, canary, err)
			return
		}
		hostile[tn.ID] = canary
	}
	for _, tn := range s.h.Tenants {
		tctx := tenant.NewContext(ctx, tn.ID)
		for _, table := range s.h.Tables {
			texts, err := tableText(tctx, db, pgx.Identifier{table})
			if err != nil {
				r.failf("table %s as tenant %s: %v", table, tn.ID, err)
				continue
			}
			if !strings.Contains(texts, needle[tn.ID]) {
				r.failf("table %s as tenant %s: its canary %s%s is not there (Harness.Tables names the tables Plant writes the canary to in clear text)", table, tn.ID, canaryPrefix, needle[tn.ID])
			}
			if !strings.Contains(texts, hostile[tn.ID]) {
				r.failf("table %s as tenant %s: its canary %q, which holds SQL metacharacters, is not there as given", table, tn.ID, hostile[tn.ID])
			}
			for _, l := range leaks(s.othersNeedles(tn.ID), "its rows", []byte(texts), nil) {
				r.failf("table %s as tenant %s: %s", table, tn.ID, l)
			}
			// Another tenant's schema, named outright.
			for _, other := range s.h.Tenants {
				if other.ID == tn.ID {
					continue
				}
				qualified := pgx.Identifier{other.ID.SchemaName(), table}
				texts, err := tableText(tctx, db, qualified)
				if err != nil {
					continue // refused, as it should be
				}
				for _, l := range leaks(map[tenant.ID][]string{other.ID: s.othersNeedles(tn.ID)[other.ID]}, "the rows read", []byte(texts), nil) {
					r.failf("table %s as tenant %s: %s read %s", qualified.Sanitize(), tn.ID, selectText(qualified), l)
				}
			}
		}
	}
}

// selectText is the query that reads every row of table as text.
func selectText(table pgx.Identifier) string {
	return fmt.Sprintf(`SELECT t::text FROM %s t LIMIT %d`, table.Sanitize(), maxRows)
}

// tableText returns the rows of table, as the tenant of ctx reads them,
// each as text, one a line.
func tableText(ctx context.Context, db *store.DB, table pgx.Identifier) (string, error) {
	rows, err := db.Query(ctx, selectText(table))
	if err != nil {
		return "", err
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	return strings.Join(texts, "\n"), nil
}

// rowsErr reads rows to the end and returns their error.
func rowsErr(rows pgx.Rows) error {
	for rows.Next() {
	}
	rows.Close()
	return rows.Err()
}
