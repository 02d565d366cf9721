// Package keys is tenancy's per-tenant envelope encryption, on Tink
// (github.com/tink-crypto/tink-go/v2).
//
// Every tenant has three Tink keysets, generated at provisioning:
//
//   - data (AES-256-GCM): [Manager.Seal] and [Manager.Open] encrypt fields
//     and records, binding the tenant and a [Binding] (table, column, row
//     key) as associated data;
//   - blob (streaming AES-256-GCM-HKDF, 4 KiB segments):
//     [Manager.StreamingAEAD], for object encryption by package blob;
//   - audit (HMAC-SHA256): [Manager.MAC], for the audit hash chain.
//
// Each keyset is encrypted ("wrapped") by a master key, the KEK, with the
// associated data "tenancy/v1/keyset/<tenant>/<purpose>", and stored through
// a [Store] (store.Keysets on PostgreSQL, in the control plane). A wrapped
// keyset copied to another tenant's row, or to another purpose, does not
// unwrap. Each stored keyset records the URI of the KEK that wraps it.
//
// # Master keys
//
// A KEK is any Tink registry.KMSClient, chosen by URI: keys/localkms
// ("local://PATH", development only), keys/pkcs11kms ("pkcs11:" URIs, an
// HSM), and Tink's own AWS, GCP and Vault clients unchanged. Nothing is
// registered globally. Each keyset records whose key wraps it
// ([KEKKind]), and a tenant's keysets are wrapped by one of three:
//
//   - the platform's (Config.PlatformKEK), shared by tenants, served by
//     Config.KMS, never destroyed by Shred;
//   - one the platform makes for the tenant alone (ProvisionOptions.TenantKEK,
//     one HSM key per government tenant): Config.TenantKEKs, a [KeyMaker],
//     creates it under a label the Manager chooses ([TenantKEKLabel]), and
//     Shred destroys it;
//   - the customer's own (BYOK, ProvisionOptions.CustomerKEK, the
//     kms_key_arn of a provisioning request): served by Config.CustomerKMS
//     only, never by the platform's clients, and never destroyed by the
//     platform. The customer revokes it in their own KMS (disables the key
//     or revokes the grant): the tenant's data is then unreadable, once
//     cached keysets expire, with errors naming the customer's key.
//     A local:// URI, a PKCS#11 URI with a query (module-path,
//     pin-source), and the platform's key or a retired one are refused as
//     customer keys.
//
// Shred destroys only the key of the tenant's label, made by the platform:
// no key a caller named is ever destroyed, so no key needs comparing with
// another by what it does. Master keys are compared by identity where a
// customer key is checked against the platform's, not by the spelling of
// their URI: KMS clients that can tell implement [KeyIdentifier] (localkms
// and pkcs11kms do); the Manager stores every keyset under the canonical
// URI of its master key. URIs of Tink's own clients (AWS, GCP, Vault,
// fake) are compared exactly as written: give those keys in the one form
// their KMS documents (a key ARN, not an alias).
//
// # Cache
//
// Unwrapped keysets (as Tink primitives, never as bytes) are cached per
// tenant and purpose with a maximum age and a maximum number of uses (the
// AWS Encryption SDK caching model): the master key is called once per
// tenant and purpose per cache period, and concurrent callers of a cold
// keyset share one load. [Manager.Stats] exposes hits, misses, loads and
// master-key calls for metrics. [Manager.Rotate] and [Manager.Shred] purge
// the cache of the Manager that runs them; other replicas' entries expire
// within Config.CacheMaxAge, which is therefore the longest time another
// replica keeps serving a shredded tenant, or a tenant whose master key
// became unavailable. A cached tenant keeps working while its master key is
// unreachable, until its entry expires.
//
// # Rotation and re-wrapping
//
// [Manager.Rotate] adds a new primary key to one keyset: new ciphertexts
// (tags, streams) use it; older ones still open. [Manager.Rewrap] re-wraps
// every keyset from one master key to another without touching any data; it
// is resumable: run it again after an interruption and it continues with
// the keysets still on the old key.
//
// # Crypto-shredding
//
// [Manager.Shred] deletes the tenant's wrapped keysets and records a
// tombstone, in one transaction, then destroys the master key the platform
// made for the tenant, if any. Every ciphertext of the tenant,
// including copies saved before, then fails with [ErrKeyDestroyed] — as
// distinct from [ErrNoKeys] for a tenant that never had keys.
//
// # Errors
//
// Errors are matchable with [errors.Is] and read "keys: <what failed>: ...",
// with the package named once however deep the chain (the sentinels carry
// no prefix of their own):
//
//   - [ErrDecrypt]: the one, deliberately vague, error of [Manager.Open] for
//     a ciphertext that does not open (another tenant, another binding,
//     tampered, truncated, extended); [ErrInvalidMAC] from [MAC.VerifyMAC].
//   - [ErrKeyDestroyed]: the tenant was shredded. [ErrNoKeys]: it has no
//     keys (never provisioned).
//   - [ErrUnwrap]: the master key could not unwrap (or wrap) a keyset: the
//     KMS or HSM is unreachable or refuses, the key is gone, or the wrapped
//     keyset is not this tenant's. The message names the master key URI and
//     the KMS client's error is wrapped too.
//   - [ErrUnsupportedKEK]: no configured KMS client serves the URI.
//   - [ErrInvalidArgument]: bad input; the message names the field.
//     [ErrKEKInUse] with it: a customer key that is the platform's, or a
//     re-wrap onto a tenant's own key.
//   - [ErrExists], [ErrConflict]: provisioning with another KEK than the
//     existing keys'; a lost compare-and-swap in a [Store].
//   - [ErrClosed]: the Manager was closed ([Manager.Close]).
//   - tenant.ErrNoTenant: a data call without a tenant in its context.
//
// # Security
//
// Key material never leaves Tink's handles and primitives: there is no API
// that returns key bytes. The types that hold keys print none: [Manager]
// prints a summary, [StreamingAEAD] and [MAC] hold their state behind a
// pointer. Master key URIs, which can carry a PIN or (fake-kms://) a key,
// are of type [URI], which prints, logs and marshals as text redacted
// whatever the verb, so the types that hold them ([Config], [WrappedKeyset],
// [Tombstone], [ShredResult], [ListOptions], [ProvisionOptions]) print
// safely too. Wrapped keysets print: they are ciphertext under the master
// key, as the Store holds them.
//
// Crypto-shredding makes a tenant's data unreadable by deleting the only
// copies of its keysets that the master key can open. Copies of the keyset
// table that outlive the shred (PostgreSQL backups, WAL archives, dead
// tuples before VACUUM) still hold the wrapped keysets: for tenants on the
// platform KEK, their data stays recoverable from such a copy for as long
// as the platform KEK exists. Where shredding must reach backups, keep the
// control-plane backups' retention short, or give the tenant a KEK of its
// own (ProvisionOptions.TenantKEK, one HSM object per tenant), which Shred
// destroys. A customer's key (BYOK) is the customer's to destroy.
//
// Associated data encodings are length-prefixed (4-byte big-endian lengths)
// behind a fixed, versioned label, so distinct bindings never encode alike.
package keys
