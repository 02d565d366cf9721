// Package audit is tenancy's per-tenant, append-only, tamper-evident audit
// log: each tenant's log lives with its data, isolated like its data, and
// every entry is chained to the one before by a MAC under the tenant's
// audit key (package keys), so that [Log.Verify] finds an entry changed,
// deleted, reordered or inserted; checkpoints kept in the control plane
// find a log cut short; an export verifies offline.
//
// # Setting up
//
// The tenants' logs are a tenant migration: give
// store.AdminConfig.Migrations the result of [WithMigration], and every
// new tenant gets its log, and Admin.Migrate gives one to every existing
// tenant, on every tier. [Install] makes the control-plane tables (the
// checkpoints, and the platform's trail). Request handling then uses a
// [Log] over its store.DB and keys.Manager:
//
//	acfg.Migrations, err = audit.WithMigration(migrations, 100)
//	admin, err := store.OpenAdmin(ctx, acfg)
//	err = audit.Install(ctx, admin)
//	...
//	cfg := audit.DefaultConfig()
//	cfg.DB, cfg.Keys = db, km
//	log, err := audit.New(cfg)
//	w, err := log.NewWriter(audit.DefaultWriterConfig())
//	_, err = w.Append(ctx, audit.Event{Actor: "alice", Action: "requirement.update", Resource: "REQ-1", Outcome: audit.OutcomeSuccess})
//
// # Storage
//
// A tenant's log is the table audit_log of its schema (tenant_<id>: in the
// shared database for the standard tier, in the tenant's own database
// otherwise), under store's row-level security like every tenant table,
// and dropped with the tenant's schema or database. Its columns:
//
//	tenant_id text, seq bigint, at timestamptz, actor text,
//	action text, resource text, outcome text, details jsonb,
//	source_ip inet, user_agent text, prev_mac bytea, mac bytea,
//	PRIMARY KEY (tenant_id, seq)
//
// The table is marked append-only (store.AppendOnlyMark): the tenant's
// role may SELECT and INSERT it, nothing else. A trigger refuses UPDATE,
// DELETE and TRUNCATE from anyone, the table's owner included (only its
// owner or a superuser can disable the trigger: Verify finds what they
// change). A statement trigger refuses an INSERT whose entries are not
// consecutive or do not follow the last entry (sequence number and
// prev_mac), so no writer, whatever it sends, can leave a gap or a fork.
//
// A batch is one statement, the function audit_log_append of the tenant's
// schema (run with the tenant's privileges), in a transaction of its own:
// it locks the empty table audit_log_writer of the tenant's schema (no
// advisory lock: those are database-wide, and one tenant could hold
// another's), checks that the head of the log is the one the batch's
// chain was computed from, and inserts it. Appends of one tenant by one
// [Log] take turns, so that head is the one the Log wrote last; when
// another process has written since, the batch is written again in a
// transaction that takes the lock first and reads the head. PostgreSQL
// refuses COPY into a table under row-level security, so a batch is one
// INSERT from arrays: the times and MACs as arrays, each text column packed
// into one string of values ended by U+001F (which no field can hold), and
// the sequence numbers and previous MACs worked out by the server from the
// head.
//
// # Entries and the chain
//
// An entry is an [Event] (time, actor, action, resource, outcome,
// details, source IP, user agent) with its log (the tenant's ID), its
// sequence number (1, 2, 3, ... with no gaps), the MAC of the entry before
// (empty for the first) and its own MAC: the tenant's audit key
// (keys.Manager.MAC, HMAC-SHA256, bound to the tenant) over the RFC 8785
// canonical JSON of
//
//	{"action":..,"actor":..,"details":{..},"log":"<tenant>","outcome":..,
//	 "prev_mac":"<base64>","resource":..,"seq":<n>,"source_ip":"..",
//	 "time":"2006-01-02T15:04:05.000000Z","type":"entry","user_agent":..,"v":1}
//
// Details are canonicalized with github.com/gowebpki/jcs (maps, slices,
// strings, numbers and booleans by an encoder of the package's that gives
// the same bytes, without a parse); the object around them is written by
// the package itself; the tests check both byte for byte against jcs. A batch of entries is one transaction: a crash leaves it
// whole or absent.
//
// # Checkpoints
//
// A chain cannot show that its last entries were cut off. Every
// Config.CheckpointEvery entries, or Config.CheckpointInterval after a
// tenant's first entry without one, the Log records a [Checkpoint] (log,
// sequence number, the head entry's MAC, time) in the control plane
// (tenancy.audit_checkpoints, SELECT and INSERT for the platform role
// only, a trigger refusing changes), MAC'd with the tenant's audit key
// over {"head_mac":..,"log":..,"seq":..,"time":..,"type":"checkpoint","v":1}.
// Verify reports a log shorter than its last checkpoint
// ([ProblemTruncated]), or an entry that differs from its checkpoint.
//
// A checkpoint cannot be forged by whoever can edit the tenant's table: the
// tenant's role cannot write the control plane at all (for enterprise and
// government tenants it is in another database, or on another cluster),
// and no database role holds the key: the audit keyset is stored wrapped
// by the master key (an HSM or KMS), so making a MAC needs the KMS, which
// the database's administrators and superusers do not have. The "type"
// member keeps a checkpoint's MAC from passing for an entry's, and the
// tenant bound into every MAC keeps one tenant's checkpoint from passing
// for another's. What a superuser of the control-plane database can do is
// delete checkpoints: the last ones, together with the entries after the
// one left, and Verify sees a consistent, shorter log. Keep exports, or
// the checkpoints, somewhere the database's administrators cannot rewrite
// (the platform's blob storage with an object lock, say) to catch that.
// Entries written after the last checkpoint are covered only by the chain:
// CheckpointEvery and CheckpointInterval bound that window.
//
// # Export
//
// [Log.Export] writes JSON Lines: a header ({"type":"header","format":
// "tenancy-audit-export","v":1,"log":..}), the checkpoints
// ({"type":"checkpoint",..}), the entries in order ({"type":"entry",..},
// each with its fields, prev_mac and mac, in the canonical forms above)
// and a trailer ({"type":"trailer","entries":..,"head_seq":..,"head_mac":
// ..,"exported_at":..,"mac":..}) whose MAC covers the count and the head,
// so that an export cut short or with lines taken out does not verify.
// [VerifyExport] verifies one with the key alone, without a database.
//
// # The platform's trail
//
// [Platform] is the trail of platform operations (provisioning, key
// rotation and re-wrapping, deprovisioning) in the control plane
// (tenancy.platform_audit), in the same format with log "platform",
// under the platform's own audit key: a keyset of keys provisioned under
// an ID that is never a tenant, so that the record of a tenant's
// deprovisioning still verifies after the tenant's keys are shredded.
//
// # Errors
//
// Errors are matchable with [errors.Is] and read "audit: ..." once:
// [ErrInvalidEvent] (a [*FieldError] naming the field), [ErrInvalidConfig],
// [ErrBackpressure] (a full [Writer] in [OverflowFail] mode),
// [ErrNotWritten] (an entry the Writer gave up on, with the cause),
// [ErrClosed], [ErrTampered] (a [*ChainError] naming the first broken
// entry and its [Problem]), [ErrNotInstalled] (no audit tables),
// [ErrBadExport] (input that is not an export), and tenant.ErrNoTenant
// for a call without a tenant in its context.
//
// # Security
//
// Entries are isolated as the tenant's data is: written and read on the
// tenant's own connections (store's request path), in its own schema or
// database; there is no call that names another tenant. A row copied from
// another tenant's log does not verify: the tenant is in every MAC. Logs
// of this package carry tenant IDs and sequence numbers, never an entry's
// fields.
package audit
