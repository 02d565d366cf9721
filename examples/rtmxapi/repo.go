package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rtmx-ai/tenancy/store"
)

// Stored is a requirement as the service keeps it: its columns, its
// version (1 when created, one more at each change) and its times.
type Stored struct {
	Requirement
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Errors of the repository.
var (
	errNotFound = errors.New("requirement not found")
	errExists   = errors.New("requirement exists already")
	errStale    = errors.New("requirement changed since the version given")
)

// selectColumns reads a requirement in the order scan expects.
const selectColumns = `req_id, category, subcategory, requirement_text, target_value,
	test_module, test_function, validation_method, status, priority,
	phase, notes, effort_weeks, dependencies, blocks, assignee, sprint,
	coalesce(to_char(started_date, 'YYYY-MM-DD'), ''), coalesce(to_char(completed_date, 'YYYY-MM-DD'), ''),
	requirement_file, external_id, version, created_at, updated_at`

func scan(row pgx.Row) (Stored, error) {
	var s Stored
	r := &s.Requirement
	err := row.Scan(&r.ReqID, &r.Category, &r.Subcategory, &r.RequirementText, &r.TargetValue,
		&r.TestModule, &r.TestFunction, &r.ValidationMethod, &r.Status, &r.Priority,
		&r.Phase, &r.Notes, &r.EffortWeeks, &r.Dependencies, &r.Blocks, &r.Assignee, &r.Sprint,
		&r.StartedDate, &r.CompletedDate, &r.RequirementFile, &r.ExternalID,
		&s.Version, &s.CreatedAt, &s.UpdatedAt)
	return s, err
}

// args returns r's columns after req_id, as the statements below number
// them ($2 to $21).
func args(r *Requirement) []any {
	return []any{r.ReqID, r.Category, r.Subcategory, r.RequirementText, r.TargetValue,
		r.TestModule, r.TestFunction, r.ValidationMethod, r.Status, r.Priority,
		r.Phase, r.Notes, r.EffortWeeks, r.Dependencies, r.Blocks, r.Assignee, r.Sprint,
		r.StartedDate, r.CompletedDate, r.RequirementFile, r.ExternalID}
}

const insertColumns = `(req_id, category, subcategory, requirement_text, target_value,
	test_module, test_function, validation_method, status, priority,
	phase, notes, effort_weeks, dependencies, blocks, assignee, sprint,
	started_date, completed_date, requirement_file, external_id)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
	NULLIF($18, '')::date, NULLIF($19, '')::date, $20, $21)`

// repo is the requirements of the tenant in each call's context, through
// store's request path: every statement runs on a connection logged in as
// that tenant.
type repo struct{ db *store.DB }

// list returns up to limit requirements after the ID after (all if
// ""), in ID order, with the given status if status is not "".
func (p repo) list(ctx context.Context, status, after string, limit int) ([]Stored, error) {
	rows, err := p.db.Query(ctx, `SELECT `+selectColumns+` FROM requirements
		WHERE ($1 = '' OR status = $1) AND req_id > $2 ORDER BY req_id LIMIT $3`, status, after, limit)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Stored, error) { return scan(row) })
	if out == nil {
		out = []Stored{}
	}
	return out, err
}

// get returns one requirement, or errNotFound.
func (p repo) get(ctx context.Context, id string) (Stored, error) {
	s, err := scan(p.db.QueryRow(ctx, `SELECT `+selectColumns+` FROM requirements WHERE req_id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return s, errNotFound
	}
	return s, err
}

// exists reports whether requirement id exists.
func (p repo) exists(ctx context.Context, id string) (bool, error) {
	var ok bool
	err := p.db.QueryRow(ctx, `SELECT EXISTS (SELECT FROM requirements WHERE req_id = $1)`, id).Scan(&ok)
	return ok, err
}

// create inserts r (validated), or fails with errExists.
func (p repo) create(ctx context.Context, r *Requirement) (Stored, error) {
	s, err := scan(p.db.QueryRow(ctx, `INSERT INTO requirements `+insertColumns+` RETURNING `+selectColumns, args(r)...))
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return s, errExists
	}
	return s, err
}

// update replaces requirement r.ReqID with r if its version is version,
// and returns the requirement before and after. It fails with
// errNotFound, or errStale (with the current version in before).
func (p repo) update(ctx context.Context, r *Requirement, version int64) (before, after Stored, err error) {
	err = p.db.Tx(ctx, func(tx *store.Tx) error {
		before, err = scan(tx.QueryRow(ctx, `SELECT `+selectColumns+` FROM requirements WHERE req_id = $1 FOR UPDATE`, r.ReqID))
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return errNotFound
		case err != nil:
			return err
		case before.Version != version:
			return errStale
		}
		after, err = scan(tx.QueryRow(ctx, `UPDATE requirements SET
			category = $2, subcategory = $3, requirement_text = $4, target_value = $5,
			test_module = $6, test_function = $7, validation_method = $8, status = $9, priority = $10,
			phase = $11, notes = $12, effort_weeks = $13, dependencies = $14, blocks = $15,
			assignee = $16, sprint = $17, started_date = NULLIF($18, '')::date,
			completed_date = NULLIF($19, '')::date, requirement_file = $20, external_id = $21,
			version = version + 1, updated_at = now()
			WHERE req_id = $1 RETURNING `+selectColumns, args(r)...))
		return err
	})
	return before, after, err
}

// remove deletes requirement id, if its version is version (any version
// if version is 0), and returns its last version. It fails with
// errNotFound or errStale. Before it commits, with the row locked and
// deleted, it calls also (the deletion of the requirement's attachments);
// if also fails, the row stays and remove returns that error.
func (p repo) remove(ctx context.Context, id string, version int64, also func(context.Context) error) (int64, error) {
	var current int64
	err := p.db.Tx(ctx, func(tx *store.Tx) error {
		err := tx.QueryRow(ctx, `SELECT version FROM requirements WHERE req_id = $1 FOR UPDATE`, id).Scan(&current)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return errNotFound
		case err != nil:
			return err
		case version != 0 && current != version:
			return errStale
		}
		if _, err := tx.Exec(ctx, `DELETE FROM requirements WHERE req_id = $1`, id); err != nil {
			return err
		}
		return also(ctx)
	})
	return current, err
}

// imported is what an import did to one requirement.
type imported struct {
	ReqID   string `json:"req_id"`
	Version int64  `json:"version"`
	Created bool   `json:"created"`
}

// upsert writes every requirement of reqs (validated) in one transaction:
// new ones are created, changed ones replaced with their version raised,
// identical ones left alone. It returns what it changed; on any error
// nothing is changed.
func (p repo) upsert(ctx context.Context, reqs []Requirement) ([]imported, error) {
	var out []imported
	err := p.db.Tx(ctx, func(tx *store.Tx) error {
		out = out[:0]
		b := &pgx.Batch{}
		for i := range reqs {
			b.Queue(`INSERT INTO requirements AS r `+insertColumns+`
				ON CONFLICT (tenant_id, req_id) DO UPDATE SET
				category = EXCLUDED.category, subcategory = EXCLUDED.subcategory,
				requirement_text = EXCLUDED.requirement_text, target_value = EXCLUDED.target_value,
				test_module = EXCLUDED.test_module, test_function = EXCLUDED.test_function,
				validation_method = EXCLUDED.validation_method, status = EXCLUDED.status,
				priority = EXCLUDED.priority, phase = EXCLUDED.phase, notes = EXCLUDED.notes,
				effort_weeks = EXCLUDED.effort_weeks, dependencies = EXCLUDED.dependencies,
				blocks = EXCLUDED.blocks, assignee = EXCLUDED.assignee, sprint = EXCLUDED.sprint,
				started_date = EXCLUDED.started_date, completed_date = EXCLUDED.completed_date,
				requirement_file = EXCLUDED.requirement_file, external_id = EXCLUDED.external_id,
				version = r.version + 1, updated_at = now()
				WHERE (r.category, r.subcategory, r.requirement_text, r.target_value, r.test_module,
					r.test_function, r.validation_method, r.status, r.priority, r.phase, r.notes,
					r.effort_weeks, r.dependencies, r.blocks, r.assignee, r.sprint, r.started_date,
					r.completed_date, r.requirement_file, r.external_id)
				IS DISTINCT FROM (EXCLUDED.category, EXCLUDED.subcategory, EXCLUDED.requirement_text,
					EXCLUDED.target_value, EXCLUDED.test_module, EXCLUDED.test_function,
					EXCLUDED.validation_method, EXCLUDED.status, EXCLUDED.priority, EXCLUDED.phase,
					EXCLUDED.notes, EXCLUDED.effort_weeks, EXCLUDED.dependencies, EXCLUDED.blocks,
					EXCLUDED.assignee, EXCLUDED.sprint, EXCLUDED.started_date, EXCLUDED.completed_date,
					EXCLUDED.requirement_file, EXCLUDED.external_id)
				RETURNING req_id, version, version = 1`, args(&reqs[i])...)
		}
		br := tx.SendBatch(ctx, b)
		for i := range reqs {
			var im imported
			err := br.QueryRow().Scan(&im.ReqID, &im.Version, &im.Created)
			switch {
			case errors.Is(err, pgx.ErrNoRows): // unchanged
			case err != nil:
				_ = br.Close()
				return fmt.Errorf("row %d (%s): %w", i+1, reqs[i].ReqID, err)
			default:
				out = append(out, im)
			}
		}
		return br.Close()
	})
	return out, err
}
