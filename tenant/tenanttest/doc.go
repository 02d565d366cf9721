// Package tenanttest is the isolation conformance suite of tenancy: an RTMX
// service runs it from its own go test to prove, against itself, the
// cross-tenant checks of REQ-DEPLOY-004, as testing/fstest.TestFS proves a
// file system and gocloud's drivertest a blob driver.
//
// The service gives the suite a [Harness]: two or more provisioned tenants
// with a token maker each, its whole http.Handler, a Plant function that
// writes a canary (a unique string) into a tenant's data through the
// service's own code, the routes that touch tenant data, and, where it has
// them, its WebSocket feed, store.DB, tenant buckets, key manager, audit
// log and quota:
//
//	func TestIsolation(t *testing.T) {
//		svc := newService(t) // the service on a real PostgreSQL
//		tenanttest.Run(t, &tenanttest.Harness{
//			Tenants: []tenanttest.Tenant{{ID: a, Token: svc.tokenFor(a)}, {ID: b, Token: svc.tokenFor(b)}},
//			Handler: svc.Handler(),
//			Plant:   svc.plant,
//			Routes: []tenanttest.Route{
//				{Method: "GET", Path: "/t/{tenant}/requirements/{req}", Role: "viewer", Reads: true},
//				{Method: "DELETE", Path: "/t/{tenant}/requirements/{req}", Role: "editor"},
//			},
//			DB: svc.db, Tables: []string{"requirements"},
//			Buckets: svc.buckets, Keys: svc.keys, Audit: svc.audit,
//			Strict: true,
//		})
//	}
//
// [Run] runs each check as a subtest named after what it proves; [Check]
// runs the same checks without a testing.T and returns what failed.
// Every check plants fresh canaries (128 random bits from crypto/rand
// each, after the text "tenanttest-canary-") and looks for every canary
// planted so far of every other tenant in whatever a tenant gets back, so
// a leak of data planted by an earlier check is found too. A canary's 32
// hexadecimal digits are searched for as they are, in upper case, and in
// standard and URL-safe base64 (padded or not) at each of the 3 byte
// alignments the canary can have in the encoded text: for each, the 40
// characters that depend on the canary's bytes alone. The suite
// leaves its canaries in the tenants.
//
// # Checks
//
// Setup validates the Harness (at least two tenants of distinct IDs, each
// with a Token; Handler and Plant set; every route's method and path well
// formed) and plants a canary in each tenant, requiring that Plant
// succeeds, that its Planted.Values fill every placeholder of every
// route, and that neither a value nor a Route.Body made from the values
// holds the canary: values are IDs, and a request that carried a canary
// could not be told from a leak in its answer (a search by the canary
// answered with another tenant's row). So every canary found in an
// answer is a leak, echoed or not. If Setup fails no other check runs.
// Then, in this order:
//
//   - VerificationTest1_APITokenOfAnotherTenant proves verification test 1
//     ("API request with Tenant A token cannot access Tenant B data") and
//     test case 2 ("Tenant A cannot query Tenant B data via API"). For
//     every route and every ordered pair of tenants (A, B), after a fresh
//     canary in each: A's token on B's path and values, A's token on A's
//     path with B's values, and no token on B's path and values must each
//     answer 400 or more and carry none of B's canaries in the body or any
//     header. (A replay on A's own path whose path B's values do not
//     change, only its body, is judged by what it carries, not by its
//     status: A may make things of its own with them; so is one where a
//     value of B's is also one Plant returned for A, such as a per-tenant
//     serial ID, which names A's own thing. One whose request
//     B's values do not change at all is not sent.) Where a token is a JWS
//     in compact form, A's token with a character of its signature changed,
//     on A's own path and values, must likewise be refused and carry no
//     canary, not even A's. B's data read as B
//     with every Reads route whose path names a planted thing (a
//     placeholder besides {tenant}; the first Reads route if none does)
//     must answer 2xx with B's canary before the replays, and the same
//     status and body after them: a replay that answers 404 but deletes
//     B's attachment shows in the route that reads the attachment. (A
//     list may rightly change when A makes things of its own.) Then the positive control: each tenant's
//     own call must answer 2xx, a Reads route's with its canary, and carry
//     no other tenant's canary, so a service that answers 500 or 403 to
//     everything fails. A failure names the route (method and template),
//     the tenants, the request sent and what leaked, where.
//   - VerificationTest2_DatabaseQueryWithoutTenant proves verification
//     test 2 ("Database query without tenant context fails") and, with
//     Tables, the acceptance criterion "Tenant data isolation at database
//     level": DB.Query, QueryRow, Exec, Tx and BeginTx with a context
//     without a tenant fail with an error wrapping tenant.ErrNoTenant, and
//     the functions of Tx and BeginTx do not run. With Tables, as each
//     tenant, "SELECT t::text FROM <table> t" holds the tenant's canary and
//     no other's, and <other's schema>.<table> (tenant_<id>, quoted with
//     pgx.Identifier) fails or holds none of the other's canaries. A canary
//     holding SQL metacharacters (' ; --) is planted in each tenant and
//     must read back as given: a service that builds SQL text from its
//     input fails or changes it.
//   - VerificationTest3_ObjectStorageAcrossTenants proves verification
//     test 3 ("Object storage access denied across tenant boundaries") and
//     test case 3 ("Tenant A cannot access Tenant B files in storage"),
//     with Buckets (or BucketView): A's view does not find B's
//     Planted.Objects (not found, or A's own object of that key without
//     B's canary); listing A's view and reading what it lists gives none of
//     another tenant's canaries, and lists A's own objects; hostile keys
//     that aim at B's objects ("../<b>/key", "/tenants/<b>/key",
//     "a/../../<b>/key", "%2e%2e/", "%252e", backslashes, NUL, Unicode
//     look-alikes) are refused or not found when read, never give B's
//     data, and written by A leave B's objects as planted; each tenant
//     reads its own objects with its canary. With Raw, no object under
//     blob.TenantPrefix of a tenant holds its canary in clear text, and
//     its planted objects are there (so Raw is the bucket under the views).
//   - VerificationTest4_WebSocketScopedToTenantRoom proves verification
//     test 4 ("WebSocket connections scoped to tenant room"), with
//     WebSocket: the feed of each tenant A, served on a loopback
//     httptest.Server, refuses the upgrade with another tenant's token,
//     with none and, where the token is a JWS, with A's own token whose
//     signature is changed, each refusal (its status 400 or more, its body
//     and headers) holding no canary the caller may not see; A connects with its own token, sends the Join messages and
//     waits for each Joined; then every other tenant plants, and A; A must
//     receive a message with its own canary (the positive control) and,
//     until a quarter of a second after it, none with another tenant's.
//   - TestCase5_EncryptionKeysPerTenant proves test case 5 ("Encryption
//     keys are tenant-specific") and the acceptance criterion
//     "Tenant-specific encryption keys", with Keys: a canary sealed for
//     each tenant opens for that tenant and, for every other, fails with
//     keys.ErrDecrypt; the tenants' ciphertexts of one plaintext differ and
//     hold no plaintext; Seal without a tenant fails with ErrNoTenant.
//   - TestCase6_AuditLogsPerTenant proves test case 6 ("Audit logs are
//     tenant-isolated") and the acceptance criterion "Audit logging per
//     tenant", with Audit: an entry with a canary appended as each tenant
//     is in its own export and in no other tenant's, every tenant's log
//     verifies, and Append without a tenant fails with ErrNoTenant.
//   - TestCase7_QuotaPerTenant proves test case 7 ("Resource quotas
//     enforced per tenant"), with Quota: Quota.Route is sent as the first
//     tenant, answering 2xx, until it answers 429 with a valid Retry-After,
//     within Quota.Requests requests; then every other tenant's same route
//     answers 2xx at once. It runs last, so that the tenant it limits is
//     not refused in the other checks; the other checks send each tenant a
//     few requests per route, which its limit must allow.
//
// Test cases 1 and 4 (provisioning creates, deprovisioning removes every
// resource) are the lifecycle package's: a running service cannot prove
// them against itself.
//
// A check whose Harness field is zero is skipped, naming the field, or
// fails when Harness.Strict is set. So is a part of a check that needs a
// field of its own (Tables, Raw, a Reads route): Run logs it in the
// check's subtest and Check lists it in skipped, as "<check>: <part>
// (<why>)". A part no field can enable, the replays with a forged
// signature where the tokens are not JWS, is logged and listed so even
// with Strict.
//
// # Errors
//
// Check returns the failures joined, one per line, each reading
// "tenanttest: <check>: <what failed>" and naming the route or feed, the
// tenants, the request and the canary that leaked and where (its body, a
// header, a message, a table, an object). A Harness that Setup refuses
// gives errors wrapping [ErrInvalidHarness] that name the field and the
// rule ("tenanttest: invalid harness: Harness.Tenants: 1 tenant(s), need
// at least 2"), and no check runs. A context that ends stops the checks;
// the error then says so. Run reports the same lines with t.Error in each
// check's subtest; when Setup fails, it runs no other check.
//
// # Security
//
// The suite acts only as a client of the service and through the SDK
// objects the Harness gives it, as each tenant in turn; it never needs an
// administrator's connection. It writes canaries and, in the object
// check, objects with hostile keys in the tenants it is given: run it on
// test tenants, not on customers'.
package tenanttest
