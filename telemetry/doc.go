// Package telemetry tags OpenTelemetry spans and metrics with the tenant,
// and keeps the tenant label of metrics to a bounded set.
//
// The tenant attribute is [Key], "tenant.id", on spans and metrics alike;
// logs carry the same value as tenant_id (tenant.LogKey). A [Config]
// (a TracerProvider, a MeterProvider, a [Guard]) turns on the spans and
// metrics of authz (authz.Config.Telemetry) and store
// (store.Config.Telemetry, a store.Telemetry holding a Config); the zero
// Config turns them off, at no cost: nothing is installed, nothing
// measured. Nil providers do not fall back to otel's global ones; pass
// otel.GetTracerProvider() and otel.GetMeterProvider() to use those.
//
//	guard, err := telemetry.NewGuard(telemetry.GuardConfig{
//		Allow: []tenant.ID{acme, globex}, // always their own label
//		Admit: 1000,                      // and the first 1000 others
//	})
//	tel := telemetry.Config{TracerProvider: tp, MeterProvider: mp, Guard: guard}
//
// # What is recorded
//
// authz: a span per request (the one recording in the request's
// context, else its own "authz" server span) with tenant.id and
// authz.outcome (allowed, or the reason of a refusal from a fixed set);
// counters tenancy.authz.requests {tenant.id} and tenancy.authz.refusals
// {tenant.id, authz.outcome}. store: client spans "store.query" and
// "store.batch" with tenant.id and db.system=postgresql (the SQL text only
// on request, arguments never); histogram tenancy.store.acquire.duration
// {tenant.id}. The packages' documentation has the details.
//
// # Cardinality
//
// A metrics backend keeps one time series per distinct set of attribute
// values; a label per tenant over 100,000 tenants (times every other
// label) would exhaust it. Metrics therefore never carry the tenant as
// is, but its label from a [Guard]: the tenants of GuardConfig.Allow, the
// first GuardConfig.Admit other tenants seen (1000 by default), and
// [Other] ("_other") for everyone else, aggregated. A metric thus has at
// most len(Allow) + Admit + 1 tenant values, whatever the number of
// tenants, and a Guard holds at most len(Allow) + Admit tenants in
// memory. Admission is first come, first served, for the life of the
// Guard (a restart admits anew): put the tenants whose series matter in
// Allow. Sums stay exact: a request of a tenant without a label is
// counted under Other, never dropped.
//
// Spans carry the exact tenant ([Attribute]): a trace backend stores
// attributes per span, samples, and does not make a series of each
// attribute value, so the exact tenant costs nothing there and is what an
// operator searching the traces of one tenant needs.
//
// # Errors
//
// [NewGuard] fails with an error wrapping [ErrInvalidConfig], naming the
// field, for an Admit out of range or a zero ID in Allow. Nothing else in
// the package returns an error.
//
// # Security
//
// The tenant on a span or metric is the one the platform verified (the
// token's tenant, in authz; the context's tenant that the connection
// serves, in store), never one a request merely named: a hostile path
// or header cannot put its text into telemetry, and refusals before a
// token is verified carry no tenant. Tokens, subjects, SQL arguments and
// error messages that may quote data are never attributes. A tenant ID
// is not a secret, but it is the customer's identity: send telemetry to a
// backend the platform trusts with that.
package telemetry
