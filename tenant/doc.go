// Package tenant is the core of tenancy: the tenant identifier, tiers and
// lifecycle states, and the propagation of the current tenant through a
// [context.Context], into logs and into background jobs.
//
// It imports the standard library only; every other package of tenancy
// builds on it.
//
// # The tenant identifier
//
// An [ID] is made only by [ParseID], which enforces one strict grammar:
// lower-case ASCII letters, digits and single underscores, starting with a
// letter, not ending with an underscore, at most [MaxIDLen] bytes, and
// not a reserved name (public, tenancy, null, names starting with pg_ or
// tenant_, ...: see ParseID). The grammar is chosen so that an ID can be
// used verbatim inside PostgreSQL identifiers (tenant_<id>) and
// object-storage prefixes (tenants/<id>/), and, through [ID.DNSLabel]
// ('_' mapped to '-', one-to-one, reversed by [ParseDNSLabel]), in
// Kubernetes namespace names and hostnames. Every boundary (a JWT
// claim, a YAML request, a CLI flag, a URL path) parses; nothing downstream
// validates again. An ID is immutable and its zero value is not a tenant.
//
// # The current tenant
//
// The current tenant travels in a [context.Context] only: [NewContext] puts
// it there, [FromContext] and [Require] read it back. There is no global and
// no default tenant: a tenant-scoped operation whose context carries no
// tenant fails with an error wrapping [ErrNoTenant].
//
// # Logs and jobs
//
// [NewLogHandler] wraps any [log/slog.Handler] so that every record logged
// with a tenant context carries a tenant_id attribute. A [JobCarrier] seals
// the tenant of a context together with a [Job] (its ID, expiry, audience
// and payload) under an HMAC tag, so that a queued job cannot be re-aimed
// at another tenant, and restores the tenant in the worker; it refuses an
// envelope past its expiry, one for another queue, and, given a record of
// the jobs already run ([OpenOptions.Seen]), a replay.
//
// # Errors
//
// Errors are matchable with [errors.Is]: [ErrNoTenant] (no tenant in the
// context), [ErrInvalidID] (input that is not a tenant ID; the error is an
// [*IDError] naming the rule), [ErrCrossTenant] (an operation aimed at a
// tenant other than the context's), [ErrQuotaExceeded] (a request or change
// past a limit of the tenant's quota, in whichever package refused it),
// [ErrIllegalTransition] (a lifecycle move the state machine forbids),
// [ErrJobTampered] (a job envelope whose tag does not verify),
// [ErrJobExpired], [ErrJobMisdirected] and [ErrJobReplayed].
//
// # Security
//
// Error messages quote rejected input only in escaped, truncated form, so a
// hostile ID cannot inject lines into logs. A JobCarrier never prints its
// keys.
package tenant
