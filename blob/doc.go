// Package blob gives each tenant its own view of the platform's object
// storage, on gocloud.dev/blob: narrowed to the tenant's prefix, with every
// key validated, and every object encrypted client-side with the tenant's
// keys.
//
// [Open] opens the platform's bucket by URL; [Buckets.For] returns the view
// of the tenant of a context, a *gocloud.dev/blob.Bucket like any other
// (ReadAll, NewWriter, List, Copy, ...). The view is a gocloud driver over
// the platform's bucket, as gocloud's PrefixedBucket is: every key it is
// given is checked by [ValidateKey] and joined under "tenants/<id>/"
// ([TenantPrefix]); List only lists under it, with a prefix checked the
// same way; Copy copies within it. No call of the view can name a key
// outside the prefix, and none exposes the platform's bucket (As returns
// false, here and in the Before* hooks of the options; SignedURL is not
// supported).
//
// # URLs
//
// Open takes the URLs of gocloud.dev/blob's URL openers, whose drivers this
// package imports: mem:// (memblob), file:///path (fileblob), s3://bucket
// (s3blob; endpoint, region, use_path_style, ... as query parameters),
// gs://bucket (gcsblob) and azblob://container (azureblob). A "prefix"
// query parameter roots the tenants' prefixes under it. [New] takes a
// bucket opened already.
//
// # Keys
//
// Keys are validated, never cleaned: [ValidateKey] lists the rules. A
// refused key gives a [*KeyError] (errors.Is [ErrInvalidKey]; gocloud code
// InvalidArgument) that names the rule. gocloud's portable bucket refuses a
// key that is not valid UTF-8 itself, before the view sees it, with its own
// error of code InvalidArgument.
//
// # Encryption
//
// Each object is encrypted with the tenant's streaming AEAD
// (keys.Manager.StreamingAEAD: AES-256-GCM-HKDF, 4 KiB segments) with the
// object's key as associated data, to which keys adds the tenant. Bytes
// copied to another tenant's prefix, or to another key of the same tenant,
// by anyone who can write to the storage, do not decrypt: the read fails
// with an error wrapping keys.ErrDecrypt (gocloud code Internal). Reading
// and writing stream, 4 KiB segment by segment: memory does not grow with
// the object. Copy of the view decrypts and encrypts anew, streaming (an
// object's bytes are bound to its key).
//
// The stored object is the ciphertext; its content type, cache and
// content headers and user metadata are stored as given, in the clear,
// with one more metadata entry, "tenancy-blob" (metadata keys starting
// with "tenancy-" are reserved; metadata takes at most [MaxMetadata]
// bytes and each header [MaxHeader], since quotas do not count them). Its
// plaintext size is a function of the
// stored size, so Attributes and List report it without reading the
// object, and it is authenticated: a stream cut short or extended does not
// decrypt, and a read to the end checks the length. The stored MD5 (the
// ciphertext's) is not reported; ContentMD5 of a write is checked on the
// plaintext.
//
// A read from an offset decrypts from the start of the object (the stream
// cipher has no random access), so a range read costs the bytes before it.
//
// The associated data is the tenant and the key, not a version: someone who
// can write to the storage can put back an older object of the same key (a
// rollback), and it decrypts. Bucket versioning with an object lock, or a
// version the service records elsewhere, is what catches that.
//
// List shows every object under the tenant's prefix, including any that
// someone wrote there past the view (with a key the view refuses, or not
// encrypted): such an object is listed with size 0 if its stored size is
// no ciphertext's, and reading it fails.
//
// [WithoutEncryption] stores objects as written, for buckets of public or
// already encrypted objects.
//
// # Purge
//
// [Buckets.Purge] deletes every object under a tenant's prefix, a page at a
// time, and then checks that nothing is listed there (and, with quotas,
// records the tenant's usage as nothing); it resumes where an interrupted
// run stopped. Deprovisioning runs it beside keys.Manager.Shred,
// which makes any copy of the tenant's objects left elsewhere (backups,
// versions) unreadable.
//
// # Errors
//
// Errors of the view are gocloud's (gcerrors.Code gives the code) and wrap
// this package's and the tenant and keys packages' sentinels:
//
//   - [ErrInvalidKey] ([*KeyError]): a key or list prefix refused
//     (InvalidArgument);
//   - tenant.ErrNoTenant: For, or a view's call, without a tenant in the
//     context; tenant.ErrCrossTenant: a view called with another tenant's
//     context (both PermissionDenied on a view);
//   - keys.ErrDecrypt: an object that does not decrypt: copied from another
//     tenant or key, tampered with, cut, or not written encrypted by a view
//     (Internal); keys.ErrKeyDestroyed: the tenant was shredded
//     (FailedPrecondition);
//   - [ErrQuotaExceeded] ([*QuotaError]): a write, copy or overwrite past
//     a tenant's quota (ResourceExhausted);
//   - [ErrNotEmpty]: Purge found objects left after deleting.
//
// # Security
//
// The view protects against a caller naming another tenant's objects, and,
// by encryption, against storage whose access control fails: a storage
// administrator or a leaked bucket credential sees ciphertext, and bytes
// moved between tenants or keys do not decrypt. It does not hide object
// keys, sizes, times, content types or user metadata from the storage: do
// not put secrets in them. Attributes reports the stored content type and
// metadata, which whoever can write to the storage can change. The
// platform's bucket, from which the Buckets is made, reaches every tenant:
// never hand it to tenant code.
//
// # Quotas
//
// [WithQuotas] limits each tenant's bytes (as stored) and objects: per
// tier ([Quotas.Tiers], from [DefaultQuotas]), or per tenant where the
// control plane records limits of its own (store.Admin.SetBlobQuota).
// Usage is accounted in the control plane ([UsageStore]: store.DB.Blobs),
// never in memory, so that it holds across processes. A write counts at
// Close, which knows the object's size before it commits the object: it
// holds the object's key (writes of one key wait their turn), reads what
// the key takes now, reserves the difference within the limits, commits,
// then records what it did. A write that would pass a limit fails with a
// [*QuotaError] (errors.Is [ErrQuotaExceeded]) and the upload is
// aborted: nothing is stored. An overwrite counts the difference in size,
// a copy what it adds, a delete frees; what adds nothing is never refused,
// even over the limits (a limit lowered below usage). A stream far past
// what is left is refused while it is written, not only at its end. The
// declared size of a request (Content-Length) plays no part: what is
// counted is what is stored.
//
// A process killed between reserving and recording leaves its reservation
// counted (usage may be too high, never too low), and its key free once
// [Quotas.Lease] has passed. [Buckets.Reconcile] recounts the tenant's
// prefix in storage, records it and drops such reservations; Usage
// reports NeedsReconcile when one is due. Objects written or deleted past
// the views (by a storage admin) are counted only by Reconcile.
//
// # Tenants' own buckets
//
// [WithTenantBuckets] keeps the objects of a tenant given a bucket of its
// own (an enterprise or government tenant; store.Admin.SetTenantBucket
// records its URL beside its placement) in that bucket, under the same
// prefix tenants/<id>/, so that a URL naming the platform's bucket by
// mistake still keeps tenants apart. For, Purge and Reconcile use it; it
// is opened once and closed by [Buckets.Close]. Objects need no
// re-encryption to move between buckets: their associated data is the key
// relative to the tenant's prefix.
package blob
