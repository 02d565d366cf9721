package store

// What package audit needs from store: append-only tenant tables, the
// control-plane table of audit checkpoints, and a transaction on the
// control plane for the platform's own audit trail.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rtmx-ai/tenancy/tenant"
)

// AppendOnlyMark starts the comment of an append-only tenant table. A table
// of a tenant's schema whose comment starts with it (COMMENT ON TABLE t IS
// 'tenancy: append-only ...', in a migration) is granted to the tenant's
// role with SELECT and INSERT only, wherever store grants tenant tables
// ([Admin.CreateTenant], [Admin.Migrate]); every other privilege is
// revoked from that role. Package audit marks its table so. A trigger that
// refuses UPDATE, DELETE and TRUNCATE belongs in the migration too: the
// admin role owns the table, and privileges do not bind an owner.
const AppendOnlyMark = "tenancy: append-only"

// grantAppendOnly grants the append-only tables among tables (of schema)
// to worker with SELECT and INSERT only, revoking everything else, and
// returns the other tables, for grantObjects to grant as usual.
func grantAppendOnly(ctx context.Context, tx pgx.Tx, schema, worker string, tables []string) ([]string, error) {
	if len(tables) == 0 {
		return tables, nil
	}
	rows, err := tx.Query(ctx, `SELECT c.relname::text
		FROM pg_catalog.pg_namespace n
		JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = ANY ($2::text[])
		JOIN pg_catalog.pg_description d ON d.objoid = c.oid AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = 0
		WHERE n.nspname = $1 AND pg_catalog.starts_with(d.description, $3)
		ORDER BY 1`, schema, tables, AppendOnlyMark)
	if err != nil {
		return nil, err
	}
	marked, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(marked) == 0 {
		return tables, err
	}
	names := make([]string, len(marked))
	isMarked := map[string]bool{}
	for i, t := range marked {
		names[i] = pgx.Identifier{schema, t}.Sanitize()
		isMarked[t] = true
	}
	list, w := strings.Join(names, ", "), q(worker)
	if err := execAll(ctx, tx,
		`REVOKE ALL ON TABLE `+list+` FROM `+w,
		`GRANT SELECT, INSERT ON TABLE `+list+` TO `+w,
	); err != nil {
		return nil, err
	}
	var rest []string
	for _, t := range tables {
		if !isMarked[t] {
			rest = append(rest, t)
		}
	}
	return rest, nil
}

// AuditCheckpoint is one checkpoint of a tenant's audit log (package
// audit), kept in the control plane, away from the log itself.
type AuditCheckpoint struct {
	// Seq is the sequence number of the entry the checkpoint covers, and
	// Head that entry's MAC.
	Seq  int64
	Head []byte
	// Time is when the checkpoint was made.
	Time time.Time
	// MAC is the checkpoint's own MAC (package audit says over what).
	MAC []byte
}

// auditCheckpointsDDL creates tenancy.audit_checkpoints and the trigger
// that refuses changes to it; every statement can run again.
var auditCheckpointsDDL = []string{
	`CREATE TABLE IF NOT EXISTS tenancy.audit_checkpoints (
		tenant_id   text COLLATE "C" NOT NULL CHECK (` + idCheck("tenant_id") + `),
		seq         bigint NOT NULL CHECK (seq > 0),
		head_mac    bytea NOT NULL CHECK (length(head_mac) BETWEEN 1 AND 128),
		at          timestamptz NOT NULL,
		mac         bytea NOT NULL CHECK (length(mac) BETWEEN 1 AND 128),
		recorded_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (tenant_id, seq))`,
	`COMMENT ON TABLE tenancy.audit_checkpoints IS
		'tenancy/audit: checkpoints (sequence number and head MAC) of the tenants'' audit logs, each with a MAC of its own; append-only'`,
	`CREATE OR REPLACE FUNCTION tenancy.refuse_change() RETURNS trigger
		LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
	BEGIN
	  RAISE EXCEPTION 'tenancy: %.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
	    USING ERRCODE = '42501';
	END
	$f$`,
	`REVOKE ALL ON FUNCTION tenancy.refuse_change() FROM PUBLIC`,
	`DROP TRIGGER IF EXISTS refuse_update_delete ON tenancy.audit_checkpoints`,
	`CREATE TRIGGER refuse_update_delete BEFORE UPDATE OR DELETE ON tenancy.audit_checkpoints
		FOR EACH ROW EXECUTE FUNCTION tenancy.refuse_change()`,
	`DROP TRIGGER IF EXISTS refuse_truncate ON tenancy.audit_checkpoints`,
	`CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON tenancy.audit_checkpoints
		FOR EACH STATEMENT EXECUTE FUNCTION tenancy.refuse_change()`,
	`REVOKE ALL ON tenancy.audit_checkpoints FROM PUBLIC`,
}

// EnsureAuditCheckpoints creates the control-plane table of audit
// checkpoints, tenancy.audit_checkpoints, if it does not exist, and grants
// the platform role SELECT and INSERT on it, and nothing else (any other
// role's privileges on it are revoked, so a previous platform role loses
// them). A trigger refuses UPDATE, DELETE and TRUNCATE, the admin's too.
// It is idempotent; package audit's Install calls it.
func (a *Admin) EnsureAuditCheckpoints(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(controlPlaneLock)); err != nil {
			return err
		}
		if err := execAll(ctx, tx, auditCheckpointsDDL...); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT DISTINCT pg_catalog.pg_get_userbyid(acl.grantee)::text
			FROM pg_catalog.pg_class c, LATERAL pg_catalog.aclexplode(c.relacl) acl
			WHERE c.oid = 'tenancy.audit_checkpoints'::pg_catalog.regclass
			  AND acl.grantee <> 0 AND acl.grantee <> c.relowner ORDER BY 1`)
		if err != nil {
			return err
		}
		grantees, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, g := range grantees {
			if g != a.platform {
				if err := execAll(ctx, tx, `REVOKE ALL ON tenancy.audit_checkpoints FROM `+q(g)); err != nil {
					return err
				}
			}
		}
		p := q(a.platform)
		return execAll(ctx, tx,
			`REVOKE ALL ON tenancy.audit_checkpoints FROM `+p,
			`GRANT SELECT, INSERT ON tenancy.audit_checkpoints TO `+p)
	})
	if err != nil {
		return fmt.Errorf("store: ensure audit checkpoints: %w", err)
	}
	return nil
}

// AddAuditCheckpoint records c as a checkpoint of the audit log of the
// tenant in ctx, in the control plane, as the platform role (package
// audit calls it after a batch of entries commits). A checkpoint of a
// sequence number the tenant has one of already is not recorded again
// (and is no error). Without a tenant in ctx it fails with an error
// wrapping [tenant.ErrNoTenant]; before [Admin.EnsureAuditCheckpoints]
// with PostgreSQL's undefined table error.
func (db *DB) AddAuditCheckpoint(ctx context.Context, c AuditCheckpoint) error {
	id, err := tenant.Require(ctx, "store: add audit checkpoint")
	if err != nil {
		return err
	}
	_, err = db.platform.Exec(ctx, `INSERT INTO tenancy.audit_checkpoints (tenant_id, seq, head_mac, at, mac)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, seq) DO NOTHING`, id.String(), c.Seq, c.Head, c.Time, c.MAC)
	if err != nil {
		return fmt.Errorf("store: add audit checkpoint of tenant %s: %w", id, err)
	}
	return nil
}

// AuditCheckpoints returns the checkpoints of the audit log of the tenant
// in ctx, in sequence order.
func (db *DB) AuditCheckpoints(ctx context.Context) ([]AuditCheckpoint, error) {
	id, err := tenant.Require(ctx, "store: audit checkpoints")
	if err != nil {
		return nil, err
	}
	rows, err := db.platform.Query(ctx, `SELECT seq, head_mac, at, mac FROM tenancy.audit_checkpoints
		WHERE tenant_id = $1 ORDER BY seq`, id.String())
	if err != nil {
		return nil, fmt.Errorf("store: audit checkpoints of tenant %s: %w", id, err)
	}
	cs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[AuditCheckpoint])
	if err != nil {
		return nil, fmt.Errorf("store: audit checkpoints of tenant %s: %w", id, err)
	}
	return cs, nil
}

// ControlPlaneTx runs fn in a transaction of the admin role on the
// control-plane database, for tenancy's own packages: package audit keeps
// the platform's audit trail there. If fn returns nil the transaction is
// committed, otherwise it is rolled back and fn's error returned. It
// gives nothing an Admin does not have already; never hand it, or the
// transaction, to request handling.
func (a *Admin) ControlPlaneTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	if fn == nil {
		return errors.New("store: control-plane transaction: fn is nil")
	}
	return pgx.BeginFunc(ctx, a.pool, fn)
}
