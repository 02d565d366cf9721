package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Placement says where a tenant's data lives.
type Placement struct {
	// Kind is "schema" for the standard tier.
	Kind string `json:"kind"`
	// Schema is the tenant's schema name.
	Schema string `json:"schema,omitempty"`
	// Role is the tenant's NOLOGIN role.
	Role string `json:"role"`
}

func validateInfo(info tenant.Info) error {
	var errs []error
	if info.ID.IsZero() {
		errs = append(errs, errors.New("field ID: must be set (parse it with tenant.ParseID)"))
	}
	if info.Name == "" || len(info.Name) > 200 || !utf8.ValidString(info.Name) {
		errs = append(errs, errors.New("field Name: must be 1 to 200 bytes of UTF-8"))
	}
	if !info.Tier.Valid() {
		errs = append(errs, fmt.Errorf("field Tier: %q is not a tier (standard, enterprise, government)", info.Tier))
	} else if info.Tier != tenant.TierStandard {
		errs = append(errs, fmt.Errorf("field Tier: %s placement is not supported by this version of store (only standard)", info.Tier))
	}
	switch info.State {
	case "", tenant.StateActive, tenant.StateProvisioning, tenant.StateSuspended:
	default:
		if !info.State.Valid() {
			errs = append(errs, fmt.Errorf("field State: %q is not a state", info.State))
		} else {
			// A placed tenant is not deleted, failed, or on its way out:
			// only DropTenant records deleted, once the data is gone.
			errs = append(errs, fmt.Errorf("field State: a new tenant is active, provisioning or suspended, not %s", info.State))
		}
	}
	if len(info.Region) > 64 || !utf8.ValidString(info.Region) {
		errs = append(errs, errors.New("field Region: must be at most 64 bytes of UTF-8"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("store: invalid tenant: %w", errors.Join(errs...))
	}
	return nil
}

// CreateTenant places a new tenant and records it in the tenant directory,
// all in one admin transaction: either everything exists afterwards or
// nothing does. For the standard tier it creates schema tenant_<id>, the
// tenant's NOLOGIN role with privileges on that schema only, every table of
// Config.Tables (secured, see [Table]), and makes the application role a
// member of the tenant role without inheritance. info.State defaults to
// active. Creating a tenant that exists (or existed: IDs are never reused)
// fails with an error wrapping [ErrTenantExists].
func (db *DB) CreateTenant(ctx context.Context, info tenant.Info) error {
	if err := validateInfo(info); err != nil {
		return err
	}
	if info.State == "" {
		info.State = tenant.StateActive
	}
	id := info.ID
	schemaName := id.SchemaName()
	roleName := db.TenantRole(id)
	placement := Placement{Kind: "schema", Schema: schemaName, Role: roleName}
	role := pgx.Identifier{roleName}.Sanitize()
	schema := pgx.Identifier{schemaName}.Sanitize()

	err := pgx.BeginFunc(ctx, db.admin, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO tenancy.tenants (id, name, tier, region, state, placement)
			VALUES ($1, $2, $3, $4, $5, $6)`, id.String(), info.Name, string(info.Tier), info.Region, string(info.State), placement)
		if isUniqueViolation(err) {
			return fmt.Errorf("%w: %s", ErrTenantExists, id)
		}
		if err != nil {
			return err
		}
		var roleExists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, roleName).Scan(&roleExists); err != nil {
			return err
		}
		if roleExists {
			return fmt.Errorf("%w: role %s already exists on this cluster (another deployment with the same RolePrefix?)", ErrTenantExists, role)
		}
		appGrant := `GRANT ` + role + ` TO ` + pgx.Identifier{db.appRole}.Sanitize()
		if db.pgVersion >= 160000 {
			appGrant += ` WITH INHERIT FALSE`
		}
		if err := execAll(ctx, tx,
			`CREATE ROLE `+role+` NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB INHERIT`,
			`GRANT `+pgx.Identifier{db.groupRole()}.Sanitize()+` TO `+role,
			`CREATE SCHEMA `+schema,
			`REVOKE ALL ON SCHEMA `+schema+` FROM PUBLIC`,
			`GRANT USAGE ON SCHEMA `+schema+` TO `+role,
			`ALTER DEFAULT PRIVILEGES IN SCHEMA `+schema+` GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO `+role,
			`ALTER DEFAULT PRIVILEGES IN SCHEMA `+schema+` GRANT USAGE, SELECT ON SEQUENCES TO `+role,
		); err != nil {
			return err
		}
		for _, t := range db.tables {
			if err := createTable(ctx, tx, schemaName, t); err != nil {
				return err
			}
		}
		return execAll(ctx, tx,
			`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA `+schema+` TO `+role,
			`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA `+schema+` TO `+role,
			appGrant,
		)
	})
	if err != nil {
		return fmt.Errorf("store: create tenant %s: %w", id, err)
	}
	db.log.InfoContext(ctx, "store: tenant created", "tenant_id", id.String(), "tier", string(info.Tier), "schema", schemaName)
	db.checkMemberships(ctx)
	return nil
}

// DropTenant deletes a tenant's data and placement in one admin
// transaction: its rows in every shared table, its schema with everything
// in it, and its role. The directory keeps the tenant with state deleted, so
// the ID is never given to another tenant. Dropping a tenant that has no
// placement fails with an error wrapping [ErrUnknownTenant].
//
// It waits for transactions that are writing to shared tables to end, so
// that it deletes what they commit, and holds off new writers until it
// ends. Suspend the tenant first (SetState), so that services that check
// its state start no new work for it.
func (db *DB) DropTenant(ctx context.Context, id tenant.ID) error {
	if id.IsZero() {
		return fmt.Errorf("store: drop tenant: %w", tenant.ErrNoTenant)
	}
	roleName := db.TenantRole(id)
	role := pgx.Identifier{roleName}.Sanitize()
	err := pgx.BeginFunc(ctx, db.admin, func(tx pgx.Tx) error {
		var state string
		err := tx.QueryRow(ctx, `SELECT state FROM tenancy.tenants WHERE id = $1 FOR UPDATE`, id.String()).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) || state == string(tenant.StateDeleted) {
			return fmt.Errorf("%w: %s", ErrUnknownTenant, id)
		}
		if err != nil {
			return err
		}
		// Rows in shared tables: delete them as the tenant, so that row
		// level security applies even to a non-superuser admin.
		rows, err := tx.Query(ctx, `SELECT schema_name, table_name FROM tenancy.shared_tables ORDER BY 1, 2`)
		if err != nil {
			return err
		}
		shared, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgx.Identifier, error) {
			var s, t string
			err := r.Scan(&s, &t)
			return pgx.Identifier{s, t}, err
		})
		if err != nil {
			return err
		}
		if len(shared) > 0 {
			// SHARE mode waits for every transaction that is writing to a
			// shared table, so that the DELETE below sees the rows they
			// commit (it would neither see nor wait for an uncommitted
			// insert), and holds off new writers until the role is gone,
			// after which their writes fail. Always in the same order.
			lock := make([]string, len(shared))
			for i, t := range shared {
				lock[i] = t.Sanitize()
			}
			if _, err := tx.Exec(ctx, `LOCK TABLE `+strings.Join(lock, ", ")+` IN SHARE MODE`); err != nil {
				return err
			}
			// A non-superuser admin with CREATEROLE (PostgreSQL 16+) is not a
			// member of the roles it creates; it holds ADMIN OPTION, so it can
			// make itself one for the rest of this transaction's work.
			var member bool
			if err := tx.QueryRow(ctx, `SELECT pg_has_role(current_user, $1, 'MEMBER')`, roleName).Scan(&member); err != nil {
				return err
			}
			if !member {
				if _, err := tx.Exec(ctx, `GRANT `+role+` TO CURRENT_USER`); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `SELECT set_config('role', $1, true), set_config('app.tenant_id', $2, true)`, roleName, id.String()); err != nil {
				return err
			}
			for _, t := range shared {
				if _, err := tx.Exec(ctx, `DELETE FROM `+t.Sanitize()); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `SET LOCAL ROLE NONE`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', '', true)`); err != nil {
				return err
			}
		}
		if err := execAll(ctx, tx,
			`DROP SCHEMA IF EXISTS `+pgx.Identifier{id.SchemaName()}.Sanitize()+` CASCADE`,
			`DROP OWNED BY `+role,
			`DROP ROLE `+role,
		); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE tenancy.tenants SET state = 'deleted', placement = '{}', updated_at = now() WHERE id = $1`, id.String())
		return err
	})
	if err != nil {
		return fmt.Errorf("store: drop tenant %s: %w", id, err)
	}
	db.scopes.Delete(id)
	db.log.InfoContext(ctx, "store: tenant dropped", "tenant_id", id.String())
	return nil
}

// Tenant returns the directory entry of id, or an error wrapping
// [ErrUnknownTenant].
func (db *DB) Tenant(ctx context.Context, id tenant.ID) (tenant.Info, error) {
	var (
		info             tenant.Info
		sid, tier, state string
		created, updated time.Time
	)
	err := db.app.QueryRow(ctx, `SELECT id, name, tier, region, state, created_at, updated_at
		FROM tenancy.tenants WHERE id = $1`, id.String()).Scan(&sid, &info.Name, &tier, &info.Region, &state, &created, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return tenant.Info{}, fmt.Errorf("store: tenant %s: %w", id, ErrUnknownTenant)
	}
	if err != nil {
		return tenant.Info{}, fmt.Errorf("store: tenant %s: %w", id, err)
	}
	info.ID, info.Tier, info.State, info.CreatedAt, info.UpdatedAt = id, tenant.Tier(tier), tenant.State(state), created, updated
	return info, nil
}

// SetState moves tenant id to state to, if the lifecycle allows the move
// from its current state (see [tenant.State.Transition]). It never moves a
// tenant to deleted: [DB.DropTenant] does, with its data.
func (db *DB) SetState(ctx context.Context, id tenant.ID, to tenant.State) error {
	err := pgx.BeginFunc(ctx, db.admin, func(tx pgx.Tx) error {
		var cur string
		err := tx.QueryRow(ctx, `SELECT state FROM tenancy.tenants WHERE id = $1 FOR UPDATE`, id.String()).Scan(&cur)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrUnknownTenant
		}
		if err != nil {
			return err
		}
		if to == tenant.StateDeleted {
			// Deleted means the data is gone: DropTenant deletes it and
			// records the state in the same transaction.
			return fmt.Errorf("%w: to delete a tenant's data and record it deleted, use DropTenant", tenant.ErrIllegalTransition)
		}
		if _, err := tenant.State(cur).Transition(to); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE tenancy.tenants SET state = $2, updated_at = now() WHERE id = $1`, id.String(), string(to))
		return err
	})
	if err != nil {
		return fmt.Errorf("store: set state of tenant %s: %w", id, err)
	}
	return nil
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}
