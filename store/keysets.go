package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rtmx-ai/tenancy/keys"
	"github.com/rtmx-ai/tenancy/tenant"
)

// Keysets is the PostgreSQL [keys.Store]: the tenants' wrapped keysets in
// tenancy.tenant_keysets and the tombstones of shredded tenants in
// tenancy.tenant_keyset_tombstones, in the control-plane schema. It holds
// only keysets wrapped by a master key, never key material in the clear.
//
// The tables are created by [EnsureKeysetsSchema]. The role of the pool
// needs USAGE on schema tenancy and SELECT on both tables to serve tenants,
// and INSERT, UPDATE, DELETE as well to provision, rotate, re-wrap and
// shred ([GrantKeysets]). Keysets is safe for concurrent use.
type Keysets struct {
	pool *pgxpool.Pool
}

var _ keys.Store = (*Keysets)(nil)

// NewKeysets returns the keyset store over pool.
func NewKeysets(pool *pgxpool.Pool) *Keysets { return &Keysets{pool: pool} }

// keysetsTenantLockClass is the first key of the two-key advisory lock that
// serialises Put and Delete of one tenant (the second is hashtext(tenant)).
const keysetsTenantLockClass = 0x6b657973 // "keys"

// keysetsDDL is idempotent: every statement can run again.
var keysetsDDL = []string{
	`CREATE SCHEMA IF NOT EXISTS tenancy`,
	`CREATE TABLE IF NOT EXISTS tenancy.tenant_keysets (
		tenant_id  text COLLATE "C" NOT NULL CHECK (` + idCheck("tenant_id") + `),
		purpose    text COLLATE "C" NOT NULL CHECK (purpose IN ('data', 'blob', 'audit')),
		kek_uri    text NOT NULL CHECK (kek_uri <> ''),
		kek_kind   text COLLATE "C" NOT NULL CHECK (kek_kind IN ('platform', 'tenant', 'customer')),
		wrapped    bytea NOT NULL CHECK (length(wrapped) > 0),
		version    bigint NOT NULL CHECK (version > 0),
		created_at timestamptz NOT NULL DEFAULT now(),
		updated_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (tenant_id, purpose))`,
	`COMMENT ON TABLE tenancy.tenant_keysets IS
		'tenancy/keys: per-tenant Tink keysets, each encrypted by the master key kek_uri with associated data naming tenant and purpose'`,
	`CREATE INDEX IF NOT EXISTS tenant_keysets_kek_uri ON tenancy.tenant_keysets (kek_uri, tenant_id, purpose)`,
	`CREATE TABLE IF NOT EXISTS tenancy.tenant_keyset_tombstones (
		tenant_id    text COLLATE "C" PRIMARY KEY CHECK (` + idCheck("tenant_id") + `),
		destroyed_at timestamptz NOT NULL DEFAULT now(),
		tenant_keks  text[] NOT NULL DEFAULT '{}')`,
	// Tables made before master keys had kinds recorded tenant_kek, true
	// for a tenant's own key (which Shred destroyed): those keys were named
	// by the provisioning request, so they become customer keys, which the
	// platform never destroys, and the tombstones forget them.
	`DO $$ BEGIN
		IF EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'tenancy.tenant_keysets'::regclass AND attname = 'tenant_kek' AND NOT attisdropped) THEN
			ALTER TABLE tenancy.tenant_keysets ADD COLUMN kek_kind text COLLATE "C" NOT NULL DEFAULT 'platform'
				CHECK (kek_kind IN ('platform', 'tenant', 'customer'));
			ALTER TABLE tenancy.tenant_keysets ALTER COLUMN kek_kind DROP DEFAULT;
			UPDATE tenancy.tenant_keysets SET kek_kind = 'customer' WHERE tenant_kek;
			ALTER TABLE tenancy.tenant_keysets DROP COLUMN tenant_kek;
			UPDATE tenancy.tenant_keyset_tombstones SET tenant_keks = '{}';
		END IF;
	END $$`,
	`COMMENT ON TABLE tenancy.tenant_keyset_tombstones IS
		'tenancy/keys: tenants whose keys were crypto-shredded; never deleted, so that their ciphertexts report destroyed keys and the ID is not provisioned again'`,
}

// EnsureKeysetsSchema creates schema tenancy and the keyset tables if they
// do not exist, in one transaction under the control-plane advisory lock.
// It is idempotent. admin must be allowed to create them (the owner of
// schema tenancy or a superuser). It grants nothing: see [GrantKeysets].
//
// The tables: tenancy.tenant_keysets (tenant_id, purpose, kek_uri,
// kek_kind, wrapped, version, created_at, updated_at; primary key
// (tenant_id, purpose); index on kek_uri for re-wrapping) and
// tenancy.tenant_keyset_tombstones (tenant_id, destroyed_at, tenant_keks).
// Tenant IDs and purposes are compared in the "C" collation.
//
// It opens its own transaction: from inside the control-plane migration
// transaction (which holds the same advisory lock), call
// ensureKeysetsSchemaTx with that transaction instead.
func EnsureKeysetsSchema(ctx context.Context, admin *pgxpool.Pool) error {
	err := pgx.BeginFunc(ctx, admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, controlPlaneLock); err != nil {
			return err
		}
		return ensureKeysetsSchemaTx(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store: ensure keyset tables: %w", err)
	}
	return nil
}

// ensureKeysetsSchemaTx runs the keyset DDL in tx.
func ensureKeysetsSchemaTx(ctx context.Context, tx pgx.Tx) error {
	return execAll(ctx, tx, keysetsDDL...)
}

// KeysetAccess selects what [GrantKeysets] grants.
type KeysetAccess int

const (
	// KeysetsRead is SELECT on the keyset tables: enough for a process that
	// only serves tenants (keys.Manager's Seal, Open, StreamingAEAD, MAC).
	// Grant this to the application role that handles requests, so that a
	// compromised request handler cannot delete (shred) or overwrite any
	// tenant's keys.
	KeysetsRead KeysetAccess = iota + 1
	// KeysetsReadWrite adds INSERT, UPDATE and DELETE: provisioning,
	// rotation, re-wrapping and shredding (keys.Manager's Provision, Rotate,
	// Rewrap, Shred), for the lifecycle's role.
	KeysetsReadWrite
)

// GrantKeysets grants role CONNECT on the pool's database, USAGE on schema
// tenancy and access to the keyset tables. The role name is quoted as an identifier.
func GrantKeysets(ctx context.Context, admin *pgxpool.Pool, role string, access KeysetAccess) error {
	var privs string
	switch access {
	case KeysetsRead:
		privs = "SELECT"
	case KeysetsReadWrite:
		privs = "SELECT, INSERT, UPDATE, DELETE"
	default:
		return fmt.Errorf("store: grant keyset tables: %w: unknown KeysetAccess %d", ErrInvalidConfig, access)
	}
	if role == "" {
		return fmt.Errorf("store: grant keyset tables: %w: role is empty", ErrInvalidConfig)
	}
	r := pgx.Identifier{role}.Sanitize()
	err := pgx.BeginFunc(ctx, admin, func(tx pgx.Tx) error {
		var db string
		if err := tx.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
			return err
		}
		return execAll(ctx, tx,
			// An Admin revokes CONNECT from PUBLIC.
			`GRANT CONNECT ON DATABASE `+q(db)+` TO `+r,
			`GRANT USAGE ON SCHEMA tenancy TO `+r,
			`GRANT `+privs+` ON tenancy.tenant_keysets, tenancy.tenant_keyset_tombstones TO `+r)
	})
	if err != nil {
		return fmt.Errorf("store: grant keyset tables to %s: %w", r, err)
	}
	return nil
}

// Get implements [keys.Store.Get] in one query.
func (s *Keysets) Get(ctx context.Context, id tenant.ID, p keys.Purpose) (keys.WrappedKeyset, error) {
	if id.IsZero() || !p.Valid() {
		return keys.WrappedKeyset{}, fmt.Errorf("store: keysets: Get: %w: tenant %q, purpose %q", keys.ErrInvalidArgument, id, p)
	}
	var (
		destroyed      bool
		kekURI         *string
		kekKind        *string
		wrapped        []byte
		version        *int64
		created, updat *time.Time
	)
	err := s.pool.QueryRow(ctx, `
		SELECT t.tenant_id IS NOT NULL, k.kek_uri, k.kek_kind, k.wrapped, k.version, k.created_at, k.updated_at
		FROM (SELECT $1::text AS id) q
		LEFT JOIN tenancy.tenant_keyset_tombstones t ON t.tenant_id = q.id
		LEFT JOIN tenancy.tenant_keysets k ON k.tenant_id = q.id AND k.purpose = $2`,
		id.String(), string(p)).Scan(&destroyed, &kekURI, &kekKind, &wrapped, &version, &created, &updat)
	switch {
	case err != nil:
		return keys.WrappedKeyset{}, fmt.Errorf("store: keysets: get %s keyset of tenant %s: %w", p, id, err)
	case destroyed:
		return keys.WrappedKeyset{}, fmt.Errorf("store: keysets: tenant %s: %w", id, keys.ErrKeyDestroyed)
	case version == nil:
		return keys.WrappedKeyset{}, fmt.Errorf("store: keysets: tenant %s has no %s keyset: %w", id, p, keys.ErrNoKeys)
	}
	return keys.WrappedKeyset{
		Tenant: id, Purpose: p, KEKURI: keys.URI(*kekURI), KEKKind: keys.KEKKind(*kekKind), Wrapped: wrapped,
		Version: *version, CreatedAt: *created, UpdatedAt: *updat,
	}, nil
}

func lockTenantsTx(ctx context.Context, tx pgx.Tx, ids []string) error {
	// One order for every transaction, so two of them cannot deadlock.
	slices.Sort(ids)
	ids = slices.Compact(ids)
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext(t)) FROM unnest($2::text[]) AS t ORDER BY t COLLATE "C"`,
		int32(keysetsTenantLockClass), ids)
	return err
}

// Put implements [keys.Store.Put]: one transaction, all or none.
func (s *Keysets) Put(ctx context.Context, sets ...keys.WrappedKeyset) error {
	if len(sets) == 0 {
		return nil
	}
	ids := make([]string, 0, len(sets))
	type pk struct {
		t string
		p keys.Purpose
	}
	seen := make(map[pk]bool, len(sets))
	for i, w := range sets {
		switch {
		case w.Tenant.IsZero():
			return fmt.Errorf("store: keysets: Put: %w: sets[%d].Tenant is zero", keys.ErrInvalidArgument, i)
		case !w.Purpose.Valid():
			return fmt.Errorf("store: keysets: Put: %w: sets[%d].Purpose %q is not one of data, blob, audit", keys.ErrInvalidArgument, i, string(w.Purpose))
		case w.KEKURI == "":
			return fmt.Errorf("store: keysets: Put: %w: sets[%d].KEKURI is empty", keys.ErrInvalidArgument, i)
		case !w.KEKKind.Valid():
			return fmt.Errorf("store: keysets: Put: %w: sets[%d].KEKKind %q is not one of platform, tenant, customer", keys.ErrInvalidArgument, i, string(w.KEKKind))
		case len(w.Wrapped) == 0:
			return fmt.Errorf("store: keysets: Put: %w: sets[%d].Wrapped is empty", keys.ErrInvalidArgument, i)
		case w.Version < 0:
			return fmt.Errorf("store: keysets: Put: %w: sets[%d].Version is negative", keys.ErrInvalidArgument, i)
		case seen[pk{w.Tenant.String(), w.Purpose}]:
			return fmt.Errorf("store: keysets: Put: %w: the %s keyset of tenant %s is given twice", keys.ErrInvalidArgument, w.Purpose, w.Tenant)
		}
		seen[pk{w.Tenant.String(), w.Purpose}] = true
		ids = append(ids, w.Tenant.String())
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockTenantsTx(ctx, tx, ids); err != nil {
			return err
		}
		var destroyed *string
		err := tx.QueryRow(ctx, `SELECT min(tenant_id) FROM tenancy.tenant_keyset_tombstones WHERE tenant_id = ANY($1::text[])`, ids).Scan(&destroyed)
		if err != nil {
			return err
		}
		if destroyed != nil {
			return fmt.Errorf("tenant %s: %w", *destroyed, keys.ErrKeyDestroyed)
		}
		for _, w := range sets {
			var sql string
			// string(w.KEKURI): keys.URI marshals itself redacted.
			args := []any{w.Tenant.String(), string(w.Purpose), string(w.KEKURI), string(w.KEKKind), w.Wrapped}
			if w.Version == 0 {
				sql = `INSERT INTO tenancy.tenant_keysets (tenant_id, purpose, kek_uri, kek_kind, wrapped, version)
					VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT (tenant_id, purpose) DO NOTHING`
			} else {
				sql = `UPDATE tenancy.tenant_keysets
					SET kek_uri = $3, kek_kind = $4, wrapped = $5, version = version + 1, updated_at = now()
					WHERE tenant_id = $1 AND purpose = $2 AND version = $6`
				args = append(args, w.Version)
			}
			tag, err := tx.Exec(ctx, sql, args...)
			if err != nil {
				return err
			}
			if tag.RowsAffected() != 1 {
				if w.Version == 0 {
					return fmt.Errorf("the %s keyset of tenant %s exists: %w", w.Purpose, w.Tenant, keys.ErrConflict)
				}
				return fmt.Errorf("the %s keyset of tenant %s is no longer at version %d: %w", w.Purpose, w.Tenant, w.Version, keys.ErrConflict)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: keysets: Put: %w", err)
	}
	return nil
}

// Delete implements [keys.Store.Delete]: one transaction.
func (s *Keysets) Delete(ctx context.Context, id tenant.ID) (keys.Tombstone, error) {
	if id.IsZero() {
		return keys.Tombstone{}, fmt.Errorf("store: keysets: Delete: %w: tenant ID is zero", keys.ErrInvalidArgument)
	}
	t := keys.Tombstone{Tenant: id}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockTenantsTx(ctx, tx, []string{id.String()}); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `SELECT destroyed_at, tenant_keks FROM tenancy.tenant_keyset_tombstones WHERE tenant_id = $1`,
			id.String()).Scan(&t.DestroyedAt, &t.TenantKEKs)
		if err == nil {
			return nil // shredded before
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return tx.QueryRow(ctx, `
			WITH gone AS (
				DELETE FROM tenancy.tenant_keysets WHERE tenant_id = $1 RETURNING kek_uri, kek_kind)
			INSERT INTO tenancy.tenant_keyset_tombstones (tenant_id, tenant_keks)
			SELECT $1, coalesce(array_agg(DISTINCT kek_uri ORDER BY kek_uri) FILTER (WHERE kek_kind = 'tenant'), '{}') FROM gone
			RETURNING destroyed_at, tenant_keks`, id.String()).Scan(&t.DestroyedAt, &t.TenantKEKs)
	})
	if err != nil {
		return keys.Tombstone{}, fmt.Errorf("store: keysets: Delete keysets of tenant %s: %w", id, err)
	}
	if len(t.TenantKEKs) == 0 {
		t.TenantKEKs = nil
	}
	return t, nil
}

// listSQL and listOrder enclose the query of List. A ListOptions.KEKURI
// is compared with "=", which uses the index on kek_uri; a KEKURIPrefix is
// compared byte by byte with starts_with, which that index does not serve
// unless the database collation is "C" (the rows are then scanned: prefix
// lists are for provisioning and shredding tenants with their own master
// key, and for re-wrapping, never for serving).
const (
	listSQL = `
		SELECT tenant_id, purpose, kek_uri, kek_kind, wrapped, version, created_at, updated_at
		FROM tenancy.tenant_keysets
		WHERE (tenant_id, purpose) > ($1, $2)`
	listOrder = `
		ORDER BY tenant_id, purpose
		LIMIT $3`
)

// List implements [keys.Store.List].
func (s *Keysets) List(ctx context.Context, opts keys.ListOptions) ([]keys.WrappedKeyset, error) {
	if opts.Limit <= 0 {
		return nil, fmt.Errorf("store: keysets: List: %w: ListOptions.Limit must be > 0", keys.ErrInvalidArgument)
	}
	// "" sorts before every tenant ID and purpose, so the zero cursor is the
	// start.
	args := []any{opts.AfterTenant.String(), string(opts.AfterPurpose), opts.Limit}
	sql := listSQL
	if opts.KEKURI != "" {
		args = append(args, string(opts.KEKURI))
		sql += fmt.Sprintf(` AND kek_uri = $%d`, len(args))
	}
	if opts.KEKURIPrefix != "" {
		args = append(args, string(opts.KEKURIPrefix))
		sql += fmt.Sprintf(` AND starts_with(kek_uri, $%d)`, len(args))
	}
	sql += listOrder
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("store: keysets: List: %w", err)
	}
	var out []keys.WrappedKeyset
	for rows.Next() {
		var (
			w                  keys.WrappedKeyset
			id, pur, kek, kind string
		)
		// Into strings, then converted: keys.URI marshals itself redacted,
		// and only the URI itself may reach or come from the table.
		if err := rows.Scan(&id, &pur, &kek, &kind, &w.Wrapped, &w.Version, &w.CreatedAt, &w.UpdatedAt); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: keysets: List: %w", err)
		}
		w.KEKURI, w.KEKKind = keys.URI(kek), keys.KEKKind(kind)
		if w.Tenant, err = tenant.ParseID(id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: keysets: List: row with bad tenant_id: %w", err)
		}
		if w.Purpose, err = keys.ParsePurpose(pur); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: keysets: List: row with bad purpose: %w", err)
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: keysets: List: %w", err)
	}
	return out, nil
}
