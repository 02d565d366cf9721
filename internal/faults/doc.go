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
// Faults that a package's own tests already show, one tenant at a time:
//
//   - HSM token removed: keys/hsm_test.go,
//     TestHSMTokenRemovedCachedTenantsWorkUntilMaxAgeUncachedGetErrorNamingURI.
//   - Master key unavailable (a KMS that refuses): keys/shred_test.go,
//     TestMasterKeyUnavailableCachedTenantsWorkUntilMaxAgeUncachedGetErrorNamingURI
//     and TestMasterKeyUnavailableWithFakeKMSUnknownKey.
//   - Master key unavailable while provisioning the keys: keys/keys_test.go,
//     TestMasterKeyUnavailableDuringProvisioningWritesNothing; through the
//     lifecycle, which compensates: lifecycle/provision_test.go,
//     TestMasterKeyUnavailableCompensates.
//   - SMTP down during provisioning: lifecycle/invitation_test.go,
//     TestSMTPDownCompensates.
//   - Kubernetes API server down: lifecycle/kube_test.go,
//     TestKubernetesDownCompensatesOnResume, and lifecycle/kube/kube_test.go,
//     TestAPIServerDown.
//   - Redis unreachable for the limiter itself: authz/ratelimit/redis_test.go,
//     TestRedisUnreachable.
//   - JWKS endpoint down: authz/verifier_test.go, TestJWKSEndpointDown.
//   - A blob write cancelled against the quota: blob/quota_test.go,
//     TestQuotaCancelledWrite.
//
// # Requirements
//
// The tests need what the rest of tenancy's tests need (see
// CONTRIBUTING.md): initdb and pg_ctl for a throwaway cluster, Redis's
// redis-server binary, SoftHSM2 and local-kms. With CI=true a missing one
// fails the test rather than skipping it.
package faults
