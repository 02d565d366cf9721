// Package faults holds tests, and nothing else, of what tenancy does when
// the parts it depends on fail while it serves several tenants: the
// tests run real servers, break them under load and check that no
// committed write is lost, no tenant sees another's data, clients get
// errors they can match, and everything works again once the part is
// back.
//
// # What is shown here
//
//   - PostgreSQL restarted (an immediate stop and a start on the same
//     port) under a concurrent multi-tenant load, in both connection
//     modes: TestPostgresRestartUnderLoadLosesNoCommitAndLeaksNoRow.
//   - The platform master key unavailable under a load of Seal and Open
//     by four cached tenants, with two cold tenants and a provisioning
//     asking for it: an AWS KMS (local-kms) cut off and back,
//     TestMasterKeyUnavailableUnderLoad; a SoftHSM2 token removed,
//     TestMasterKeyUnavailableUnderLoadHSMTokenRemoved (built with cgo).
//   - Redis killed under the distributed limiter while three tenants'
//     requests flow through the authz middleware, and started again on
//     the same address, for each Fallback: TestRedisDownUnderMiddleware.
//   - A context cancelled in the middle of a transaction of several
//     statements (between two, and by a deadline in a long one), in both
//     modes: TestCancelledTxLeavesNothing. A client gone in the middle of
//     its body, and in the middle of a handler that writes rows in a
//     transaction, an object and an audit entry, while another tenant's
//     uploads run: TestClientGoneMidHandlerLeavesNothingHalfWritten.
//
// # What is shown elsewhere
//
// Faults that a package's own tests already show, one tenant or one run
// at a time, and that are not repeated here:
//
//   - HSM token removed: cached tenants work until CacheMaxAge, an
//     uncached one and a provisioning fail naming the key, nothing is
//     written: keys/hsm_test.go,
//     TestHSMTokenRemovedCachedTenantsWorkUntilMaxAgeUncachedGetErrorNamingURI.
//   - Master key unavailable, the same with a local key and a Tink fake
//     KMS that does not know the key: keys/shred_test.go,
//     TestMasterKeyUnavailableCachedTenantsWorkUntilMaxAgeUncachedGetErrorNamingURI
//     and TestMasterKeyUnavailableWithFakeKMSUnknownKey.
//   - Master key lost after the first of a tenant's keysets is wrapped:
//     nothing is written, keys/keys_test.go,
//     TestMasterKeyUnavailableDuringProvisioningWritesNothing; in the
//     lifecycle, the placement made before the keys step is removed and
//     the tenant failed, lifecycle/provision_test.go,
//     TestMasterKeyUnavailableCompensates.
//   - SMTP down during provisioning: the invitation step fails and the
//     placement, keys and route are undone, lifecycle/invitation_test.go,
//     TestSMTPDownCompensates.
//   - Kubernetes API server down: the namespace step fails and the
//     compensation finishes on Resume once it is back,
//     lifecycle/kube_test.go, TestKubernetesDownCompensatesOnResume; every
//     operation fails naming the server and the tenant, and works again
//     after, lifecycle/kube/kube_test.go, TestAPIServerDown.
//   - Redis unreachable, killed, or its connections killed, for the
//     limiter alone: authz/ratelimit/redis_test.go, TestRedisUnreachable
//     (and TestRedisServerKilled, TestRedisConnectionKilled).
//   - JWKS endpoint down: authz/verifier_test.go, TestJWKSEndpointDown.
//   - A blob write cancelled midway and as it commits, against the quota:
//     blob/quota_test.go, TestQuotaCancelledWrite.
//
// SMTP and the Kubernetes API server are used by provisioning runs only,
// one driver per tenant at a time (a run lock), not by the request path:
// a load of requests would not meet them, so they have no variant here.
//
// # Requirements
//
// The tests need what the rest of tenancy's tests need (see
// CONTRIBUTING.md): initdb and pg_ctl for a throwaway cluster, Redis's
// redis-server binary, SoftHSM2 and local-kms. With CI=true a missing one
// fails the test rather than skipping it.
package faults
