package main

// A pair is one of our benchmarks beside its baseline: the same work done
// without our layer, in the same process of the same round.
type pair struct {
	// Section is the part of docs/benchmarks.md the pair's row goes in.
	Section string
	// Pkg is the package's directory, relative to the module root.
	Pkg string
	// Ours and Base are full benchmark names as go test prints them,
	// without the -GOMAXPROCS suffix.
	Ours, Base string
	// Label names the pair in the table; What says what it measures.
	Label, What string
	// Unit is the metric the ratio is taken on (ns/op when empty). It must
	// be one where less is better.
	Unit string
	// Benchtime is the pair's own -benchtime, used unless the command's
	// -benchtime flag is given (1s when empty).
	Benchtime string
	// Target, when set, is the lowest ratio (baseline ÷ ours) the project
	// accepts; the table says whether the median meets it.
	Target float64
	// Heavy pairs take minutes of setup per process and run only with
	// -heavy, in one process of -count samples.
	Heavy bool
}

// pairs is every pair the report runs, in the order of the tables. A name
// here that no benchmark produces fails the run; a benchmark of the repo
// that is in no pair is reported (warned of, and listed in the document).
var pairs = []pair{
	// store
	{Section: "store", Pkg: "store", Label: "tenantLogin vs raw", Ours: "BenchmarkPKSelect/mode=tenantLogin", Base: "BenchmarkPKSelect/mode=raw", Target: 0.90,
		What: "one-row primary-key SELECT through store.DB in ModeTenantLogin against a plain pgx pool as the tenant's login reading a twin table without row level security"},
	{Section: "store", Pkg: "store", Label: "rawRLS vs raw", Ours: "BenchmarkPKSelect/mode=rawRLS", Base: "BenchmarkPKSelect/mode=raw",
		What: "the same plain pool reading the tenant's real table, under its isolation policy: what PostgreSQL charges for the policy, no store code"},
	{Section: "store", Pkg: "store", Label: "sharedPool vs sharedPoolRaw", Ours: "BenchmarkPKSelect/mode=sharedPool", Base: "BenchmarkPKSelect/mode=sharedPoolRaw",
		What: "store.DB in ModeSharedPool (SET LOCALs and the statement in one round trip, exec mode) against a plain pool as the shared login"},
	{Section: "store", Pkg: "store", Label: "telemetry sdk vs off", Ours: "BenchmarkTelemetryPKSelect/mode=sdk", Base: "BenchmarkTelemetryPKSelect/mode=off",
		What: "the primary-key SELECT, one call at a time, with the OpenTelemetry SDK sampling every span against no telemetry"},
	{Section: "store", Pkg: "store", Label: "cold tenant, trust", Ours: "BenchmarkColdTenant/auth=trust/iterations=16/mode=tenantLogin", Base: "BenchmarkColdTenant/auth=trust/iterations=16/mode=raw",
		What: "first query of a tenant with no pool (directory lookup, pool, connection, query) against a new plain pgx pool and the query; trust authentication"},
	{Section: "store", Pkg: "store", Label: "cold tenant, SCRAM 16", Ours: "BenchmarkColdTenant/auth=scram/iterations=16/mode=tenantLogin", Base: "BenchmarkColdTenant/auth=scram/iterations=16/mode=raw",
		What: "the same on a throwaway cluster asking for SCRAM-SHA-256, verifiers at store's default 16 iterations"},
	{Section: "store", Pkg: "store", Label: "cold tenant, SCRAM 4096", Ours: "BenchmarkColdTenant/auth=scram/iterations=4096/mode=tenantLogin", Base: "BenchmarkColdTenant/auth=scram/iterations=4096/mode=raw",
		What: "the same with PostgreSQL's default 4096 iterations"},
	{Section: "store", Pkg: "store", Label: "first query, standard tier", Ours: "BenchmarkFirstQueryByTier/tier=standard/mode=tenantLogin", Base: "BenchmarkFirstQueryByTier/tier=standard/mode=raw", Benchtime: "100x",
		What: "first query of a standard tenant (a schema in the shared database) against a new plain pool on the same database"},
	{Section: "store", Pkg: "store", Label: "first query, enterprise tier", Ours: "BenchmarkFirstQueryByTier/tier=enterprise/mode=tenantLogin", Base: "BenchmarkFirstQueryByTier/tier=enterprise/mode=raw", Benchtime: "100x",
		What: "first query of an enterprise tenant (a database of its own) against a new plain pool on that database"},
	{Section: "store", Pkg: "store", Label: "over cap: sharedPool vs raw", Ours: "BenchmarkOverCap/mode=sharedPool", Base: "BenchmarkOverCap/mode=raw",
		What: "40 tenants picked at random, 8 connections, 16 goroutines: the shared mode against a plain pool of 8 as the shared login"},
	{Section: "store", Pkg: "store", Label: "over cap: tenantLogin vs raw", Ours: "BenchmarkOverCap/mode=tenantLogin", Base: "BenchmarkOverCap/mode=raw",
		What: "the same load in the default mode, which closes other tenants' idle connections to open its own (default connect rate)"},
	{Section: "store", Pkg: "store", Label: "over cap: tenantLogin, no rate limit, vs raw", Ours: "BenchmarkOverCap/mode=tenantLoginNoRateLimit", Base: "BenchmarkOverCap/mode=raw",
		What: "the same without a connect rate limit"},
	{Section: "store", Pkg: "store", Label: "role change, 10 tenants", Ours: "BenchmarkMembershipRecompute/tenants=10/mode=roleChange", Base: "BenchmarkMembershipRecompute/tenants=10/mode=noRoleChange", Benchtime: "3000x",
		What: "a warm tenant's SELECT right after a role was created and dropped elsewhere in the cluster, against the same after SELECT 1; 10 tenants"},
	{Section: "store", Pkg: "store", Label: "role change, 1,000 tenants", Ours: "BenchmarkMembershipRecompute/tenants=1000/mode=roleChange", Base: "BenchmarkMembershipRecompute/tenants=1000/mode=noRoleChange", Benchtime: "3000x",
		What: "the same with 1,000 tenants in the database"},
	{Section: "store", Pkg: "store", Label: "pause vs no role change, 1,000 tenants", Ours: "BenchmarkMembershipRecompute/tenants=1000/mode=pause", Base: "BenchmarkMembershipRecompute/tenants=1000/mode=noRoleChange", Benchtime: "3000x",
		What: "a 2 ms sleep in place of the role change: the backend idle about as long, no catalog change"},
	{Section: "store", Pkg: "store", Label: "fleet migration, nothing to do", Ours: "BenchmarkMigrateNoop/mode=store", Base: "BenchmarkMigrateNoop/mode=rawQuery", Heavy: true,
		What: "Admin.Migrate over 10,000 tenants that have every migration against the ledger question as one plain query"},
	{Section: "store", Pkg: "store", Label: "fleet migration, query per tenant vs one query", Ours: "BenchmarkMigrateNoop/mode=queryPerTenant", Base: "BenchmarkMigrateNoop/mode=rawQuery", Heavy: true,
		What: "one query per tenant, as a runner with a version table per schema would need, against the one plain query"},
	{Section: "store", Pkg: "store", Label: "one real migration, 1,000 tenants", Ours: "BenchmarkMigrateReal/mode=store", Base: "BenchmarkMigrateReal/mode=raw", Benchtime: "1x", Heavy: true,
		What: "ADD COLUMN and CREATE TABLE over 1,000 tenants through Admin.Migrate against the same SQL applied per schema with plain pgx"},

	// keys
	{Section: "keys", Pkg: "keys", Label: "Seal+Open 64 B vs raw AES-GCM", Ours: "BenchmarkSealOpen/keys/64B", Base: "BenchmarkSealOpen/raw/64B",
		What: "Seal then Open with a cached keyset against crypto/aes + cipher.NewGCM with a random nonce and associated data of the same size"},
	{Section: "keys", Pkg: "keys", Label: "Seal+Open 1 KiB vs raw AES-GCM", Ours: "BenchmarkSealOpen/keys/1KiB", Base: "BenchmarkSealOpen/raw/1KiB", Target: 0.80,
		What: "the same at 1 KiB"},
	{Section: "keys", Pkg: "keys", Label: "Seal+Open 64 KiB vs raw AES-GCM", Ours: "BenchmarkSealOpen/keys/64KiB", Base: "BenchmarkSealOpen/raw/64KiB",
		What: "the same at 64 KiB"},
	{Section: "keys", Pkg: "keys", Label: "Seal+Open 64 B vs Tink", Ours: "BenchmarkSealOpen/keys/64B", Base: "BenchmarkSealOpen/tink/64B",
		What: "our layer against Tink's AEAD alone"},
	{Section: "keys", Pkg: "keys", Label: "Seal+Open 1 KiB vs Tink", Ours: "BenchmarkSealOpen/keys/1KiB", Base: "BenchmarkSealOpen/tink/1KiB",
		What: "the same at 1 KiB"},
	{Section: "keys", Pkg: "keys", Label: "Seal+Open 64 KiB vs Tink", Ours: "BenchmarkSealOpen/keys/64KiB", Base: "BenchmarkSealOpen/tink/64KiB",
		What: "the same at 64 KiB"},
	{Section: "keys", Pkg: "keys", Label: "cold unwrap: PostgreSQL vs memory store", Ours: "BenchmarkColdUnwrapLocalKMS/postgres", Base: "BenchmarkColdUnwrapLocalKMS/memstore",
		What: "a cache miss (read the wrapped keyset, unwrap with a local key file, build the AEAD, one Seal) reading store.Keysets on PostgreSQL against an in-memory store"},
	{Section: "keys", Pkg: "keys", Label: "cold unwrap: SoftHSM2 vs key file", Ours: "BenchmarkColdUnwrapPKCS11/memstore", Base: "BenchmarkColdUnwrapLocalKMS/memstore",
		What: "the master key in a SoftHSM2 token over PKCS#11 against a local key file, in-memory store"},
	{Section: "keys", Pkg: "keys", Label: "cold unwrap: AWS KMS API vs key file", Ours: "BenchmarkColdUnwrapAWSKMS", Base: "BenchmarkColdUnwrapLocalKMS/memstore",
		What: "a customer key in an AWS KMS (local-kms on loopback, Tink's AWS client, AWS SDK v2 over HTTP) against a local key file"},
	{Section: "keys", Pkg: "keys/pkcs11kms", Label: "HSM encrypt 32 B vs AES-GCM in process", Ours: "BenchmarkHSMEncrypt/32B", Base: "BenchmarkAESGCMRaw/32B",
		What: "AES-256-GCM inside SoftHSM2 over PKCS#11 against crypto/aes in process: the cost of the HSM boundary"},
	{Section: "keys", Pkg: "keys/pkcs11kms", Label: "HSM encrypt 1 KiB vs AES-GCM in process", Ours: "BenchmarkHSMEncrypt/1KiB", Base: "BenchmarkAESGCMRaw/1KiB",
		What: "the same at 1 KiB"},

	// blob
	{Section: "blob", Pkg: "blob", Label: "mem://, 1 MiB", Ours: "BenchmarkWriteRead/backend=mem/size=1MiB/mode=tenant", Base: "BenchmarkWriteRead/backend=mem/size=1MiB/mode=raw", Target: 0.70,
		What: "one object written and read back through a tenant's view (prefix, key check, streaming AES-256-GCM-HKDF) against the raw gocloud bucket"},
	{Section: "blob", Pkg: "blob", Label: "mem://, 64 MiB", Ours: "BenchmarkWriteRead/backend=mem/size=64MiB/mode=tenant", Base: "BenchmarkWriteRead/backend=mem/size=64MiB/mode=raw", Target: 0.70,
		What: "the same, 64 MiB"},
	{Section: "blob", Pkg: "blob", Label: "file://, 1 MiB", Ours: "BenchmarkWriteRead/backend=file/size=1MiB/mode=tenant", Base: "BenchmarkWriteRead/backend=file/size=1MiB/mode=raw", Target: 0.70,
		What: "the same on a file:// bucket"},
	{Section: "blob", Pkg: "blob", Label: "file://, 64 MiB", Ours: "BenchmarkWriteRead/backend=file/size=64MiB/mode=tenant", Base: "BenchmarkWriteRead/backend=file/size=64MiB/mode=raw", Target: 0.70,
		What: "the same, 64 MiB"},

	// audit
	{Section: "audit", Pkg: "audit", Label: "Writer vs COPY, batch 1000", Ours: "BenchmarkAppend/batch=1000/mode=writer", Base: "BenchmarkAppend/batch=1000/mode=copy", Benchtime: "300000x", Target: 0.70,
		What: "entries appended through the Writer (MAC chain, canonical JSON, one statement per batch, RLS, append-only triggers) against pgx CopyFrom into an unprotected table of the same shape; per entry"},
	{Section: "audit", Pkg: "audit", Label: "Writer vs INSERT … unnest, batch 1000", Ours: "BenchmarkAppend/batch=1000/mode=writer", Base: "BenchmarkAppend/batch=1000/mode=insert", Benchtime: "300000x", Target: 0.70,
		What: "against one INSERT … SELECT FROM unnest(…) per batch, unprotected: the fastest way into a table where COPY is refused, as it is under row level security"},
	{Section: "audit", Pkg: "audit", Label: "Writer vs COPY, batch 100", Ours: "BenchmarkAppend/batch=100/mode=writer", Base: "BenchmarkAppend/batch=100/mode=copy", Benchtime: "300000x", Target: 0.70,
		What: "the same at batches of 100"},
	{Section: "audit", Pkg: "audit", Label: "Writer vs INSERT … unnest, batch 100", Ours: "BenchmarkAppend/batch=100/mode=writer", Base: "BenchmarkAppend/batch=100/mode=insert", Benchtime: "300000x", Target: 0.70,
		What: "the same at batches of 100"},
	{Section: "audit", Pkg: "audit", Label: "Append vs COPY, batch 1000", Ours: "BenchmarkAppend/batch=1000/mode=append", Base: "BenchmarkAppend/batch=1000/mode=copy", Benchtime: "300000x",
		What: "Log.Append of whole batches, one at a time, against COPY"},

	// authz
	{Section: "authz", Pkg: "authz", Label: "middleware RS256 vs jwt.Parse", Ours: "BenchmarkMiddleware/alg=RS256/mode=middleware", Base: "BenchmarkMiddleware/alg=RS256/mode=raw", Target: 1 / 1.10,
		What: "a request with a valid token through the middleware (verification, tenant from the path, directory cache, roles) against cutting the bearer token and jwt.Parse with the same key, behind the same ServeMux"},
	{Section: "authz", Pkg: "authz", Label: "middleware EdDSA vs jwt.Parse", Ours: "BenchmarkMiddleware/alg=EdDSA/mode=middleware", Base: "BenchmarkMiddleware/alg=EdDSA/mode=raw", Target: 1 / 1.10,
		What: "the same with EdDSA"},
	{Section: "authz", Pkg: "authz", Label: "verifier RS256 vs jwt.Parse", Ours: "BenchmarkVerify/alg=RS256/mode=verifier", Base: "BenchmarkVerify/alg=RS256/mode=raw",
		What: "Verifier.Verify without HTTP against jwt.Parse with the key"},
	{Section: "authz", Pkg: "authz", Label: "verifier EdDSA vs jwt.Parse", Ours: "BenchmarkVerify/alg=EdDSA/mode=verifier", Base: "BenchmarkVerify/alg=EdDSA/mode=raw",
		What: "the same with EdDSA"},
	{Section: "authz", Pkg: "authz", Label: "middleware, telemetry noop vs off", Ours: "BenchmarkMiddlewareTelemetry/tel=noop", Base: "BenchmarkMiddlewareTelemetry/tel=off",
		What: "the EdDSA request with otel's no-op providers against the zero telemetry Config"},
	{Section: "authz", Pkg: "authz", Label: "middleware, telemetry sdk vs off", Ours: "BenchmarkMiddlewareTelemetry/tel=sdk", Base: "BenchmarkMiddlewareTelemetry/tel=off",
		What: "the same with the OpenTelemetry SDK sampling every span"},

	// authz/ratelimit
	{Section: "ratelimit", Pkg: "authz/ratelimit", Label: "Local, 64 hot tenants among 100k", Ours: "BenchmarkLocal/visit=hot/mode=ours", Base: "BenchmarkLocal/visit=hot/mode=raw",
		What: "one check against Local with 100,000 tenants live against a bare rate.Limiter per tenant found in a slice; the target is at most 200 ns per check"},
	{Section: "ratelimit", Pkg: "authz/ratelimit", Label: "Local, visits over all 100k", Ours: "BenchmarkLocal/visit=all/mode=ours", Base: "BenchmarkLocal/visit=all/mode=raw",
		What: "the same, visits shuffled over every tenant (a cache miss per tenant)"},
	{Section: "ratelimit", Pkg: "authz/ratelimit", Label: "Local vs a map of rate.Limiter, hot", Ours: "BenchmarkLocal/visit=hot/mode=ours", Base: "BenchmarkLocal/visit=hot/mode=map",
		What: "the hot visits against a bare rate.Limiter per tenant found in a map by tenant ID, as a service would keep them"},
	{Section: "ratelimit", Pkg: "authz/ratelimit", Label: "Local vs a map of rate.Limiter, all", Ours: "BenchmarkLocal/visit=all/mode=ours", Base: "BenchmarkLocal/visit=all/mode=map",
		What: "the shuffled visits against the map"},
	{Section: "ratelimit", Pkg: "authz/ratelimit", Label: "Local, parallel", Ours: "BenchmarkLocalParallel/mode=ours", Base: "BenchmarkLocalParallel/mode=raw",
		What: "the shuffled visits from GOMAXPROCS goroutines"},
	{Section: "ratelimit", Pkg: "authz/ratelimit", Label: "Redis, client heeds contexts", Ours: "BenchmarkRedis/ctxtimeout=true/mode=ours", Base: "BenchmarkRedis/ctxtimeout=true/mode=raw",
		What: "one decision over loopback against the Redis on 127.0.0.1:6379 against bare redis_rate Allow, go-redis with ContextTimeoutEnabled"},
	{Section: "ratelimit", Pkg: "authz/ratelimit", Label: "Redis, client ignores contexts", Ours: "BenchmarkRedis/ctxtimeout=false/mode=ours", Base: "BenchmarkRedis/ctxtimeout=false/mode=raw",
		What: "the same without ContextTimeoutEnabled: ours calls the client from a goroutine so that its timeout holds"},
	{Section: "ratelimit", Pkg: "authz/ratelimit", Label: "Concurrency vs channel semaphore", Ours: "BenchmarkConcurrency/mode=ours", Base: "BenchmarkConcurrency/mode=raw",
		What: "Acquire and Release of the per-tenant concurrency limit against a channel semaphore"},

	// authz/ws
	{Section: "ws", Pkg: "authz/ws", Label: "fan-out to 50 clients", Ours: "BenchmarkFanOut/mode=hub", Base: "BenchmarkFanOut/mode=raw",
		What: "one 256-byte message to the 50 clients of a room, until every client has read it, against a loop writing the same frame to 50 coder/websocket connections"},

	// telemetry
	{Section: "telemetry", Pkg: "telemetry", Label: "label, admitted tenant", Ours: "BenchmarkLabel/tenant=admitted/mode=guard", Base: "BenchmarkLabel/tenant=admitted/mode=map",
		What: "the guarded metric label of a tenant against a bare map read"},
	{Section: "telemetry", Pkg: "telemetry", Label: "label, tenant past the bound", Ours: "BenchmarkLabel/tenant=other/mode=guard", Base: "BenchmarkLabel/tenant=other/mode=map",
		What: "the same for a tenant that gets _other (the guard full)"},

	// lifecycle
	{Section: "lifecycle", Pkg: "lifecycle", Label: "provision, standard tier", Ours: "BenchmarkProvision/lifecycle", Base: "BenchmarkProvision/baseline-direct", Unit: "p50-ms", Benchtime: "100x",
		What: "a standard tenant through Lifecycle.Provision (validation, placement, keys, object prefix, route, audit entry, each journaled) against the same work by calling store, keys and audit directly; ratio of the p50s"},
	{Section: "lifecycle", Pkg: "lifecycle", Label: "parse a request", Ours: "BenchmarkParseRequest/lifecycle", Base: "BenchmarkParseRequest/baseline-yaml-decode",
		What: "ParseRequest (limits, validation) against the same document decoded by yaml/v3 alone"},
}

// sections are the parts of the report, in order, with their titles.
var sections = []struct{ ID, Title string }{
	{"store", "store: tenant-scoped PostgreSQL"},
	{"keys", "keys: envelope encryption"},
	{"blob", "blob: encrypted tenant buckets"},
	{"audit", "audit: batched appends"},
	{"authz", "authz: the middleware"},
	{"ratelimit", "authz/ratelimit: per-tenant limits"},
	{"ws", "authz/ws: fan-out"},
	{"telemetry", "telemetry: the label guard"},
	{"lifecycle", "lifecycle: provisioning"},
}
