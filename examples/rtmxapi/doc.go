// Command rtmxapi is a small RTMX requirements service built on tenancy's
// packages only: requirements with the columns of RTMX's database.csv,
// stored in each tenant's own schema (store, tenant migrations), import and
// export of a database.csv, attachments in each tenant's encrypted bucket
// view (blob), a WebSocket feed of changes per tenant (authz/ws), an audit
// entry for every change (audit), JWT authentication with RTMX's roles and
// per-tenant rate limits (authz, authz/ratelimit).
//
//	go run ./examples/rtmxapi
//
// finds PostgreSQL (-admin-url or RTMXAPI_ADMIN_URL, else a superuser
// postgres on 127.0.0.1:5432 or a local socket; the platform and tenant
// logins it makes connect the same way with passwords, so a socket with
// peer authentication will not do), creates a database
// tenancy_rtmxapi_<run> and roles rx<run>_* of its own, two tenants (acme
// and globex) with their schemas, login roles, keys and audit logs, and
// serves on 127.0.0.1:8080 (-addr). It prints a token per tenant and role
// as shell export lines (also written to $TMPDIR/rtmxapi.env, -env-file)
// and curl lines to paste. SIGINT or SIGTERM stops it and drops
// everything it made; a run that was killed instead is cleaned up by the
// next run (each run holds an advisory lock while it lives). With -check it
// calls every kind of route once as a client, checks the answers, cleans up
// and exits. -watch URL -token T prints the feed of changes.
//
// # Routes
//
// Every route is under /t/{tenant}/ and needs a bearer token of that
// tenant (another tenant's token: 403) with the permission shown (viewer
// reads, editor also writes, owner also manages):
//
//	GET    /t/{tenant}/requirements[?status=S&after=ID&limit=N]  read    list, in ID order
//	POST   /t/{tenant}/requirements                              write   create (JSON)
//	GET    /t/{tenant}/requirements/{req}                        read    one, with ETag "version"
//	PUT    /t/{tenant}/requirements/{req}                        write   replace: If-Match or "version" required
//	DELETE /t/{tenant}/requirements/{req}                        write   delete, with its attachments (If-Match optional)
//	POST   /t/{tenant}/import                                    write   an RTMX database.csv (text/csv), in one transaction
//	GET    /t/{tenant}/export                                    read    the requirements as an RTMX database.csv
//	GET    /t/{tenant}/requirements/{req}/attachments            read    list attachments
//	PUT    /t/{tenant}/requirements/{req}/attachments/{name}     write   upload (the body, at most -max-attachment bytes)
//	GET    /t/{tenant}/requirements/{req}/attachments/{name}     read    download
//	DELETE /t/{tenant}/requirements/{req}/attachments/{name}     write   delete
//	GET    /t/{tenant}/audit                                     manage  the audit log, JSON Lines (verifiable offline)
//	GET    /t/{tenant}/audit/verify                              manage  the audit chain, verified
//	GET    /t/{tenant}/ws                                        read    WebSocket: send {"op":"join","room":"changes"}
//
// # Requirements
//
// A requirement is a JSON object whose members are the columns of RTMX's
// database.csv (req_id, category, subcategory, requirement_text,
// target_value, test_module, test_function, validation_method, status,
// priority, phase, notes, effort_weeks, dependencies, blocks, assignee,
// sprint, started_date, completed_date, requirement_file, external_id);
// dependencies and blocks are arrays of IDs (pipe-separated in the CSV).
// req_id matches REQ-[A-Z]+-[0-9]+; category, requirement_text and status
// are required; status is one of COMPLETE, PARTIAL, MISSING, NOT_STARTED;
// priority one of P0, HIGH, MEDIUM, LOW (empty: MEDIUM); phase an integer
// from 0 to 9999; effort_weeks from 0 to 1000; dates YYYY-MM-DD, completed
// not before started. A requirement that breaks rules is refused with 422,
// an RFC 9457 problem whose errors name each field and its rule.
//
// Each requirement has a version, 1 when created and one more at each
// change, given as its ETag. A PUT names the version it replaces (If-Match
// or the body's "version"); if the requirement changed since, it is refused
// with 412 and changes nothing, so no update is lost.
//
// # Import
//
// POST /t/{tenant}/import takes a whole database.csv: a header of RTMX
// columns (any order; req_id, category, requirement_text and status
// required; no others), then one row per requirement. Every row is
// validated first, then all are written in one transaction: new ones
// created, changed ones replaced (their version raised), identical ones
// left alone. A row that breaks a rule refuses the whole import with 422,
// naming the row, its line and the column, and nothing is changed.
//
// GET /t/{tenant}/export writes a cell that begins with = + - @, a tab or a
// carriage return (after any single quotes) with a single quote before it,
// so that a spreadsheet opening the export shows the text instead of
// running it as a formula (OWASP's rule against CSV injection). An import
// drops exactly that quote from such a cell, so an export imported again
// gives the same requirements.
//
// # Changes
//
// Every change (create, update, delete, each requirement an import creates
// or changes and the import itself, attachment upload and delete) is
// appended to the tenant's audit log (actor, action, resource, the fields
// changed, client address) after it commits, and published to the tenant's
// room "changes" of the feed. A change whose audit entry cannot be written
// is answered 500 and logged.
//
// # Security
//
// The tenant of a request is its token's; the {tenant} of its path must be
// the same (authz.PathValue), and the tenant active. Handlers see only a
// context carrying the tenant: every statement runs on a connection logged
// in as the tenant (store), every object is under the tenant's prefix and
// encrypted with its key (blob), the feed's rooms are the tenant's (ws),
// and the audit log is the tenant's own. The demo issuer's key lives in
// memory; in production the service verifies an identity provider's
// tokens (authz.VerifierConfig.JWKSURL) and issues none.
package main
