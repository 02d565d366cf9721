// Package settings keeps each tenant's configuration, isolated as its
// data is: REQ-DEPLOY-004's "tenant configuration isolation". The
// sections:
//
//   - [RTM]: the RTMX requirements database's configuration (requirement
//     ID pattern, categories, statuses, priorities, phases);
//   - [CustomFields]: schema extensions, a JSON Schema (draft 2020-12) that
//     the custom-fields jsonb column of every requirement must match
//     ([Settings.ValidateCustomFields]);
//   - [Users]: users, their roles and, optionally, the tenant's own role
//     definitions ([Settings.Roles] serves them to authz as its
//     RoleSource);
//   - [Integrations]: Jira and GitHub, with their secrets sealed;
//   - [Notifications]: e-mail and webhook preferences;
//   - [Branding]: enterprise and government tiers only.
//
// # Storage and isolation
//
// Settings live in the tenant's own placement, in table tenant_settings
// that the tenant migration of [WithMigration] creates in every tenant's
// schema (or database), and every call runs through store.DB for the
// tenant in its context: its own login, its own schema, row-level
// security. A call without a tenant fails with an error wrapping
// tenant.ErrNoTenant; there is no call naming another tenant.
//
// Each [Settings.Put] adds a revision: the section's value as jsonb, its
// secrets sealed in a bytea column, the actor and the time. The table is
// append-only: the tenant's role may SELECT and INSERT only (store's
// AppendOnlyMark), triggers refuse UPDATE, DELETE and TRUNCATE to every
// role (the table's owner too), and an INSERT must continue its section's
// versions (1, 2, 3, ...). So history cannot be rewritten through the
// tenant's connections; [Settings.History] and [Settings.At] read it back.
// Concurrent writers are told apart by version: Put takes the version its
// caller read and fails with ErrConflict if another change came first.
//
// What the tenant's connections can still do, as any SQL of the tenant's
// own can, is add a next version that did not come through Put: every
// revision is therefore checked again when read (a value that breaks its
// section's rules is an [*Error], not handed to the caller), its secrets
// cannot be forged without the tenant's key, and its time (created_at) is
// what the inserting statement gave (Put leaves it to the server's now()).
//
// # Errors
//
// A value that breaks a rule gets an [*Error] (errors.Is ErrInvalid)
// listing every problem at once, each naming its field by path
// ("jira.base_url", "users[2].roles[0]") and the rule; nothing is
// written. ErrConflict: a stale version. ErrNotFound: a section, version
// or secret never set. ErrTier: branding on the standard tier.
// ErrInvalidCustomFields: a record's custom fields that do not match the
// tenant's schema. ErrNotEmpty: an Import into a tenant with settings.
// ErrNotInstalled: a placement without the settings table. Errors of keys
// (keys.ErrDecrypt, keys.ErrKeyDestroyed) and store pass through wrapped.
//
// # Security
//
// Secrets ([Secret]: a Jira API token, a GitHub token or App private key,
// a webhook's signing secret) are sealed with the tenant's data key
// (keys.Manager.Seal) bound to the tenant, the table, the column and the
// revision (section and version), so a sealed value copied into another
// tenant's row, another section or another version does not open. They
// are never written in the clear, never come back from Get, At or History
// (a set secret reads as "[redacted]", and putting it back keeps the
// value), and print and log redacted. Only [Settings.Secret] opens one,
// and [Settings.Export] opens them all for a backup ([Record]'s JSON holds
// them in the clear: write it only into an archive encrypted to a backup
// key); [Settings.Import] seals them again under the new tenant's key.
//
// Input is untrusted: JSON documents are bounded in size and nesting,
// numbers in length and exponent (JSON Schema's exact arithmetic would
// spend tens of milliseconds on each 1e1000000), keys given twice and
// unknown fields are refused, custom-fields schemas
// load nothing from URLs or files (a $ref must point inside the schema),
// and regular expressions are RE2's (linear time). URLs the platform
// calls (Jira, GitHub Enterprise, webhooks) or shows (a logo) must be
// https, without credentials, and name no local or private address (a
// host name is checked as written: the code that calls a webhook must
// still refuse, at connection time, an address that a name resolves to
// in a private range). Error messages name fields and rules, on one line
// of printable ASCII; they do not repeat secret values.
//
// The package logs nothing.
package settings
