// Package localkms is a Tink KMS client (registry.KMSClient) whose master
// keys are files on the local disk, addressed by URIs of the form
// "local://PATH" with an absolute PATH: local:///var/lib/app/master.key.
// Relative paths are refused: they would name another file in another
// working directory. [KeyURI] makes the URI of a path.
//
// A key has one canonical URI, its clean absolute path with symbolic links
// resolved ([Client.CanonicalKeyURI]): "local:///keys/./a.key",
// "local:///keys//a.key" and, when /alias is a link to /keys,
// "local:///alias/a.key" name the key "local:///keys/a.key", and
// keys.Manager compares master keys by that URI, so that one key cannot
// pass for another by a different spelling. A [Client] made with a longer
// prefix than "local://" serves only the keys inside that directory,
// checked on the resolved path, so neither ".." nor a link can leave it.
//
// # A master key per tenant
//
// A [KeyMaker] makes the master keys of one directory, a new file for
// every key, named by the key's label and 32 random hex digits: a key
// labelled "tenancy-tenant-acme" of the directory /var/lib/app/tenant-keys
// is "local:///var/lib/app/tenant-keys/tenancy-tenant-acme.3f9c0a1b2d4e5f60718293a4b5c6d7e8.key".
// keys.Manager uses it to give each tenant a master key of its own, which
// it creates at provisioning ([KeyMaker.CreateKey]: every call makes
// another key, so a provisioning resumed after a crash leaves an unused
// one) and destroys at crypto-shredding ([KeyMaker.DestroyKeys], which
// destroys every key of the label and nothing else).
// [KeyMaker.Owns] tells, from the URI alone, whether a key is one the
// maker makes with a label. No key file is ever adopted or shared:
// CreateKey fails rather than use a file that exists, and DestroyKeys
// leaves a symbolic link or anything but a regular file in a key's place
// and reports it. The directory is created with mode 0700 and must not be
// accessible by group or others.
//
// # NOT FOR PRODUCTION
//
// This is for development, tests and the quickstart. A key file is a raw
// AES-256 key on disk: anyone who can read it (or a backup of it, or the
// disk) can unwrap every tenant keyset it wraps, and deleting it gives no
// assurance that the bytes are gone from the disk. Production deployments
// use an HSM (keys/pkcs11kms) or a cloud KMS (Tink's AWS, GCP and Vault
// clients), where the master key never leaves the device.
//
// # Key files
//
// A key file is created by [KeyMaker.CreateKey] or the first time the key
// is used to encrypt, with mode 0600, in a directory created with mode
// 0700 if missing. Creation is atomic (the file is written under a
// temporary name and hard-linked into place), so two processes racing to
// encrypt first with one key end up with the same key.
// Decrypting never creates a key: with the file missing, Decrypt fails with
// an error wrapping [fs.ErrNotExist], so a lost master key is reported as
// lost rather than silently replaced. A key file that is readable or
// writable by group or others is refused (chmod 600 fixes it).
//
// The file is text: a header line, a comment, and the 32-byte key in
// standard base64.
//
// # Ciphertexts
//
// Encrypt returns a version byte (1), a random 12-byte nonce, and the
// AES-256-GCM ciphertext and tag of the plaintext with the given associated
// data.
//
// # Errors
//
// Errors name the key file. [ErrKeyFile] is wrapped for a key file that
// exists but cannot be used (malformed, wrong mode); [fs.ErrNotExist] for a
// missing one at decryption; [ErrDecrypt] for a ciphertext that does not
// decrypt with the key (another key, other associated data, tampered).
// [ErrInvalidURI] is wrapped for a URI this client does not serve (not
// local://, relative, or outside the client's directory), for a label a
// KeyMaker refuses (the error names the rule broken), and for a KeyMaker
// whose directory has been replaced by a symbolic link since it was made.
// [ErrKeyFile] is also wrapped for a KeyMaker's directory that is
// accessible by group or others, and for a file with the name of a key
// of the label that DestroyKeys leaves: a symbolic link, not a regular
// file, or a file with other hard links. A name KeyMaker.CreateKey drew
// that exists already is an error wrapping [fs.ErrExist].
//
// # Security
//
// The key is read from the file for every operation and never kept in
// memory between calls; nothing in this package prints it. [Client.DestroyKey]
// overwrites the file with zeros before removing it, which helps on simple
// file systems and guarantees nothing on SSDs, copy-on-write file systems or
// in backups. It destroys a key only by its canonical URI and refuses a URI
// that reaches the file through a symbolic link: a link named as a
// tenant's own key must not destroy the key it points to.
package localkms
