package keys

import (
	"errors"
	"fmt"
)

// The sentinel errors below carry no package prefix: the errors the
// package returns wrap them behind one "keys: " prefix (errors.Is matches
// them), so that a chain reads "keys: Provision tenant acme: invalid
// argument: ...", not "keys: ...: keys: invalid argument".

var (
	// ErrDecrypt is the one error [Manager.Open] returns for a ciphertext
	// that does not open: sealed for another tenant or another [Binding],
	// tampered with, truncated, extended, or sealed under a key the tenant's
	// keyset does not hold. It says nothing more, on purpose.
	ErrDecrypt = errors.New("decryption failed")

	// ErrInvalidMAC is returned by [MAC.VerifyMAC] for a tag that does not
	// verify.
	ErrInvalidMAC = errors.New("invalid MAC")

	// ErrKeyDestroyed is wrapped by errors for a tenant whose keys were
	// crypto-shredded ([Manager.Shred]). Nothing sealed for that tenant can
	// be opened again, and it cannot be provisioned again.
	ErrKeyDestroyed = errors.New("tenant keys destroyed")

	// ErrNoKeys is wrapped by errors for a tenant that has no keysets: it
	// was never provisioned (as opposed to [ErrKeyDestroyed]).
	ErrNoKeys = errors.New("tenant has no keys")

	// ErrExists is wrapped by errors from [Manager.Provision] for a tenant
	// that already has keysets wrapped by a different master key than the
	// one asked for.
	ErrExists = errors.New("tenant keys already exist")

	// ErrConflict is wrapped by errors for a write that lost a race: a
	// [Store] returns it from Put when a keyset to create already exists or a
	// keyset to update is no longer at the version read.
	ErrConflict = errors.New("concurrent keyset update")

	// ErrUnwrap is wrapped by errors for a keyset that could not be unwrapped
	// (or wrapped) by its master key: the KMS or HSM is unreachable or
	// refuses, the key is gone or disabled, or the wrapped keyset was
	// tampered with or copied from another tenant or purpose. The message
	// names the master key URI (with secrets such as a PIN redacted).
	ErrUnwrap = errors.New("master key operation failed")

	// ErrUnsupportedKEK is wrapped by errors for a master key URI that no
	// configured KMS client supports.
	ErrUnsupportedKEK = errors.New("no KMS client supports the master key URI")

	// ErrKEKInUse is wrapped, together with [ErrInvalidArgument], by errors
	// from [Manager.Provision] for a customer-managed master key
	// (ProvisionOptions.KEKURI) that is the platform master key, or a master
	// key that already wraps another tenant's keysets, however its URI is
	// spelled (see [KeyIdentifier]). Such a key is not the tenant's own: a
	// Shred of the tenant must not destroy it.
	ErrKEKInUse = errors.New("master key already in use")

	// ErrClosed is wrapped by errors for a call that needs a tenant's keys
	// on a Manager that was closed ([Manager.Close]).
	ErrClosed = errors.New("the Manager is closed")

	// ErrInvalidArgument is wrapped by errors for invalid input: a zero
	// tenant ID, an unknown purpose, an empty binding field, an empty master
	// key URI, an invalid [Config]. The message names the field.
	ErrInvalidArgument = errors.New("invalid argument")
)

// errOpen and errVerify are the errors of Manager.Open and MAC.VerifyMAC
// for input that does not authenticate: made once, so that failing input
// costs no allocation.
var (
	errOpen   = fmt.Errorf("keys: Open: %w", ErrDecrypt)
	errVerify = fmt.Errorf("keys: VerifyMAC: %w", ErrInvalidMAC)
)
