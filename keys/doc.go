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
// A KEK is any Tink registry.KMSClient, chosen by URI from the list in
// [Config].KMS: keys/localkms ("local://PATH", development only),
// keys/pkcs11kms ("pkcs11:" URIs, an HSM), and Tink's own AWS, GCP and Vault
// clients unchanged. Nothing is registered globally. Tenants use
// Config.PlatformKEK unless they are provisioned with their own
// (customer-managed) KEK URI in [ProvisionOptions]; their keysets are then
// wrapped by that key only.
//
// Master keys are compared by identity, not by the spelling of their URI:
// a PKCS#11 URI with its attributes in another order, percent-encoded,
// reading the PIN from another source or naming its module through a
// symbolic link, and a local path with "./", "//" or a symbolic link, name
// the same key. KMS clients that can tell implement [KeyIdentifier]
// (localkms and pkcs11kms do); the Manager stores every keyset under the
// canonical URI of its master key. A customer-managed KEK that is the
// platform key, or another tenant's, is refused ([ErrKEKInUse]), and Shred
// destroys a tenant's own KEK only when no other tenant's keysets use it.
// URIs of Tink's own clients (AWS, GCP, Vault, fake) are compared exactly
// as written: give those keys in the one form their KMS documents.
//
// Some ways of reaching one key no spelling rule can see: another PKCS#11
// module file for the same token (a copy of the vendor's module, the
// p11-kit proxy), a hard link to a key file, a second alias of a cloud key.
// So Provision with a customer-managed KEK, Shred before it destroys one,
// and Rewrap for its new key also ask the keys: a working key that
// decrypts a probe the platform key, a retired one (Config.RetiredKEKs) or
// any key wrapping another tenant's keysets encrypted is that key, and is
// refused or kept. The platform key must answer (or its KMS client must
// say it does not exist, [KeyChecker]); Shred keeps a tenant's own key that
// does not answer itself (run it again). Another tenant's key that does
// not answer (its customer revoked it) cannot be compared and is passed
// over with a warning. Each such call costs two master-key calls per key
// compared (Stats.KEKProbes).
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
// tombstone, in one transaction, then destroys the tenant's own KEK where
// the KMS client implements [KeyDestroyer]. Every ciphertext of the tenant,
// including copies saved before, then fails with [ErrKeyDestroyed] — as
// distinct from [ErrNoKeys] for a tenant that never had keys.
//
// # Errors
//
// Errors are matchable with [errors.Is] and prefixed "keys: ":
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
//     [ErrKEKInUse] with it: a customer-managed KEK that is not the
//     tenant's own.
//   - [ErrExists], [ErrConflict]: provisioning with another KEK than the
//     existing keys'; a lost compare-and-swap in a [Store].
//   - tenant.ErrNoTenant: a data call without a tenant in its context.
//
// # Security
//
// Key material never leaves Tink's handles and primitives: there is no API
// that returns key bytes, and every type that holds keys ([Manager],
// [StreamingAEAD], [MAC]) implements String, GoString and slog.LogValuer
// without them. Master key URIs are shown through [DisplayURI], which
// redacts PKCS#11 PINs and the inline key of fake-kms:// URIs, including by
// the types that carry them ([WrappedKeyset], [Tombstone], [ShredResult],
// [Config], [ListOptions], [ProvisionOptions]) whatever the fmt verb.
//
// Crypto-shredding makes a tenant's data unreadable by deleting the only
// copies of its keysets that the master key can open. Copies of the keyset
// table that outlive the shred (PostgreSQL backups, WAL archives, dead
// tuples before VACUUM) still hold the wrapped keysets: for tenants on the
// platform KEK, their data stays recoverable from such a copy for as long
// as the platform KEK exists. Where shredding must reach backups, keep the
// control-plane backups' retention short, or give the tenant its own KEK
// (ProvisionOptions.KEKURI, e.g. one HSM object per tenant), which Shred
// destroys.
//
// Associated data encodings are length-prefixed (4-byte big-endian lengths)
// behind a fixed, versioned label, so distinct bindings never encode alike.
package keys
