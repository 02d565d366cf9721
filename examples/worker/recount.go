package main

import (
	"context"
	"fmt"

	"github.com/rtmx-ai/tenancy/store"
	"github.com/rtmx-ai/tenancy/tenant"
)

// requirements is a tenant table with the core of RTMX's database.csv.
var requirements = store.Table{
	Name: "requirements",
	Columns: `req_id text PRIMARY KEY,
		requirement_text text NOT NULL,
		status text NOT NULL DEFAULT 'MISSING'`,
}

// recounts is the tenant table the example job writes: one row per job,
// keyed by the envelope's job ID so a retried job writes once.
var recounts = store.Table{
	Name: "requirement_recounts",
	Columns: `job_id text PRIMARY KEY,
		label text NOT NULL,
		total int NOT NULL,
		complete int NOT NULL,
		login text NOT NULL,
		river_job_id bigint NOT NULL`,
}

// Recount is the example job: it recounts the tenant's requirements and
// records the count, with the login that did it, in requirement_recounts.
type Recount struct {
	// Label names the recount in the result row.
	Label string `json:"label"`
}

// Kind is the River job kind.
func (Recount) Kind() string { return "recount_requirements" }

// recountHandler returns the handler of [Recount] jobs: it runs in the
// tenant of its context, on a connection logged in as that tenant.
func recountHandler(db *store.DB) Handler[Recount] {
	return func(ctx context.Context, job Job[Recount]) error {
		if _, err := tenant.Require(ctx, "recount"); err != nil {
			return err
		}
		err := db.Tx(ctx, func(tx *store.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO requirement_recounts (job_id, label, total, complete, login, river_job_id)
				SELECT $1, $2, count(*), count(*) FILTER (WHERE status = 'COMPLETE'), session_user, $3
				FROM requirements
				ON CONFLICT (job_id) DO NOTHING`, job.ID, job.Payload.Label, job.Row.ID)
			return err
		})
		if err != nil {
			return fmt.Errorf("recount: %w", err)
		}
		return nil
	}
}
