// Package pkcs11kms provides master keys (KEKs) held in a hardware
// security module over PKCS#11, as a Tink [registry.KMSClient].
//
// A [Client] hands out AEADs ([tink.AEAD]) whose Encrypt and Decrypt run
// AES-256-GCM inside the token: the key never leaves it. They wrap tenant
// keysets (keyset.Handle.WriteWithAssociatedData, aead.NewKMSEnvelopeAEAD2)
// exactly as Tink's AWS, GCP and Vault clients do, and are selected the same
// way, by key URI. [Client.GenerateKey] creates a key in the token and
// [Client.DestroyKey] destroys it.
//
// A [KeyMaker] manages the master keys a platform keeps in one token, one
// label per tenant: keys.Manager chooses the label
// ("tenancy-tenant-acme"), [KeyMaker.CreateKey] makes a new key with it
// when the tenant is provisioned and returns the URI that names that key
// alone (by a random CKA_ID), [KeyMaker.Owns] tells whether a URI is one
// the maker gives for a label, and [KeyMaker.DestroyKeys] destroys every
// key with the label when the tenant is crypto-shredded. Since every key
// has an id of its own, two CreateKey calls for one label (a Provision
// resumed after a crash, or two at once, in one process or several) make
// two keys with two URIs, and nothing has to choose between them; the key
// nobody uses is destroyed with the others. A KeyMaker takes labels, not
// URIs: it cannot create or destroy an object of another token, or of
// another label.
//
// The package uses github.com/ThalesGroup/crypto11 and therefore cgo: build
// with CGO_ENABLED=1 and a C toolchain. Tests run against SoftHSM2 (Debian
// package softhsm2; see internal/softhsmtest).
//
// # URIs
//
// Keys are named by RFC 7512 PKCS#11 URIs, for example
//
//	pkcs11:token=tenancy;object=master-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:TENANCY_HSM_PIN
//
// The subset accepted, parsed strictly by [ParseKeyURI]:
//
//	key-uri     = "pkcs11:" path "?" query          ; lower-case scheme, no fragment
//	path        = path-attr *( ";" path-attr )      ; any order, none twice
//	path-attr   = "token=" value                    ; required: the token label, at most 32 bytes
//	            / "object=" value                   ; required: the key's CKA_LABEL, at most 128 bytes
//	            / "id=" value                       ; optional: the key's CKA_ID, 1 to 128 bytes of any value
//	            / "type=secret-key"                 ; optional
//	query       = query-attr *( "&" query-attr )    ; any order, none twice
//	query-attr  = "module-path=" value              ; required: clean absolute path of the module
//	            / "pin-source=" pin-source          ; required
//	pin-source  = "env:" NAME                       ; PIN from environment variable NAME ([A-Za-z_][A-Za-z0-9_]*)
//	            / "file:" PATH                      ; PIN from a regular file of at most 1 KiB (clean absolute path)
//
// Values are percent-decoded; characters outside RFC 7512's pk11-pchar (in
// the path) or pk11-qchar (in the query) must be percent-encoded, and
// decoded values but the id must be UTF-8 without control characters. A
// PIN read from its source is trimmed of leading and trailing white space.
//
// A URI without an id names the AES key with that label, and fails when
// the token holds several; a URI with an id names the AES key with that
// label and that CKA_ID, however many others share the label.
// [KeyURI.String] writes the canonical form, in which every byte of an id
// is %XX in upper-case hex: id=%ab, id=%AB and, for the byte 'a', id=a
// name one key.
//
// Everything else is rejected with an error naming the attribute: unknown
// attributes, RFC 7512 attributes this package does not use (serial,
// slot-id, module-name, ...), and pin-value, because a PIN written in a
// URI ends up in configuration files, process listings and logs.
//
// [NewClient] takes a URI prefix, as Tink's KMS clients do;
// [Client.Supported] is a plain prefix match on the URI text.
//
// [NewKeyMaker] takes a base URI: a key URI without the object and id
// attributes, such as
//
//	pkcs11:token=gov?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/tenancy/hsm-pin
//
// to which [KeyMaker.CreateKey] adds object=LABEL and the id of the key it
// made, for labels of 1 to 64 bytes matching [a-z0-9][a-z0-9_-]*.
//
// One crypto11 Context (session pool and login) is kept per (module-path,
// token) in the process, shared by every Client that names that token and
// closed when the last of them is closed. A second URI naming an open token
// must bring the same PIN. Modules are identified by their path with
// symlinks resolved, and crypto11 loads each once per process: other
// crypto11 users in the same process must name the module by that resolved
// path too, or the module is initialised twice and fails
// (CKR_CRYPTOKI_ALREADY_INITIALIZED).
//
// For the same reason a key's canonical URI and identity
// ([Client.CanonicalKeyURI], [Client.KeyIdentity]), by which keys.Manager
// stores keys and tells them apart, hold the module path with symlinks
// resolved, as do the URIs a KeyMaker gives: a URI naming the module
// through a link (/lib/softhsm/libsofthsm2.so, with /lib a link to
// usr/lib) names the same key as one naming the file itself. A module path
// that does not resolve (not installed) is refused.
//
// # Errors
//
// Errors match the sentinels of this package with [errors.Is]:
// [ErrInvalidURI] (a [*URIError] naming the attribute), [ErrUnsupportedURI],
// [ErrModuleNotAllowed], [ErrPIN] (source unreadable, or the token refused
// the PIN), [ErrTokenNotFound], [ErrKeyNotFound] (also when the key is
// destroyed while an AEAD uses it), [ErrKeyExists], [ErrDecrypt] (one vague
// error for every authentication failure), [ErrHSM] (any other failure of
// the module) and [ErrClosed]. A KeyMaker refuses a label that breaks the
// rule with [ErrInvalidURI] (a [*URIError] for the object), before it opens
// the token. Context-taking calls
// return the context's error when it ends first. Modules report a failed
// GCM tag differently; SoftHSM2 says CKR_GENERAL_ERROR, which could also
// be a failing module, so on that code Decrypt checks that the key still
// encrypts and decrypts before answering [ErrDecrypt] rather than
// [ErrHSM].
//
// crypto11 panics on some module errors, and a module may misbehave: every
// call into crypto11 recovers panics and reports them as [ErrHSM]. A token
// that disappears (removed, deleted, or the module failing) makes
// operations fail with errors; after errors that say the token or session
// is gone, the next [Client.GetAEAD] opens the token afresh. Waiting for a
// free PKCS#11 session is bounded (10 s); a PKCS#11 call itself cannot be
// interrupted, but the WithContext methods of the AEAD return when their
// context ends.
//
// # Security
//
//   - No PIN is ever accepted in a URI, kept in a Client beyond opening the
//     token (only a salted digest, to compare PINs), or put in an error.
//     Error messages quote URI attributes escaped and truncated.
//   - Keys made by GenerateKey and CreateKey are token objects,
//     sensitive, non-extractable and private, usable only to encrypt and
//     decrypt, and have always been sensitive and never extractable (their
//     value was never outside the token); both verify this after creation,
//     and destroy a key that is not so. GetAEAD accepts only an AES-256
//     key.
//   - Each Encrypt draws a fresh random 96-bit nonce. With random nonces,
//     NIST SP 800-38D limits one key to 2^32 encryptions; a KEK that wraps
//     keysets is used orders of magnitude less, but it is not a data key.
//   - module-path names native code that is loaded into the process, and
//     pin-source names any environment variable or file the process can
//     read. When URIs can come from outside the operator's configuration
//     (a tenant's customer-managed key), confine them with
//     [WithModulePaths] and a prefix that pins the token, and validate
//     them with [ParseKeyURI] before storing them.
//   - A KeyMaker is given nothing but the label: it creates keys, and
//     destroys AES keys, only with that label in its own token, so a URI
//     from a request or a store cannot make it touch another token or
//     label (check such a URI with [KeyMaker.Owns] before trusting it as
//     one the maker made). Its keys' ids are 16 random bytes, so a key it
//     makes is never one already there. DestroyKeys destroys every AES key
//     with the label, also one the maker did not make: the labels of the
//     maker's token are the maker's. Any label of the right shape is
//     accepted, including the label of
//     the platform's own master key if it has that shape: keeping tenant
//     labels apart from it is the caller's part (keys.Manager refuses a
//     tenant key that is the platform's).
//   - DestroyKey removes the key from the token; copies in HSM backups are
//     outside this package's reach.
package pkcs11kms
