package pkcs11kms

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
)

// Errors returned by this package, matchable with [errors.Is]. Every error
// message starts with "pkcs11kms: " and never contains a PIN.
var (
	// ErrInvalidURI: the key URI (or URI prefix) does not follow the
	// grammar in the package documentation. The error is a [*URIError]
	// naming the attribute at fault.
	ErrInvalidURI = errors.New("pkcs11kms: invalid key URI")

	// ErrUnsupportedURI: the key URI is not under the client's prefix, or
	// the prefix does not accept every key of a [KeyMaker]'s token.
	ErrUnsupportedURI = errors.New("pkcs11kms: key URI not supported by this client")

	// ErrModuleNotAllowed: the URI names a PKCS#11 module that the client
	// was not allowed to load (see [WithModulePaths]).
	ErrModuleNotAllowed = errors.New("pkcs11kms: PKCS#11 module not allowed")

	// ErrPIN: the PIN could not be read from its pin-source, or the token
	// rejected it.
	ErrPIN = errors.New("pkcs11kms: PIN unavailable or rejected")

	// ErrTokenNotFound: no token with the URI's label is present in the
	// module.
	ErrTokenNotFound = errors.New("pkcs11kms: token not found")

	// ErrKeyNotFound: the token holds no AES key the URI names (with its
	// object label, and its id if it has one), or the key was destroyed
	// while in use.
	ErrKeyNotFound = errors.New("pkcs11kms: key not found")

	// ErrKeyExists: GenerateKey found a secret key the URI names already
	// (with its label, and its id if it has one).
	ErrKeyExists = errors.New("pkcs11kms: key already exists")

	// ErrDecrypt: a ciphertext did not decrypt: it was tampered with,
	// truncated, made under another key, or given other associated data.
	// The error deliberately does not say which.
	ErrDecrypt = errors.New("pkcs11kms: decryption failed")

	// ErrHSM: the PKCS#11 module failed (including a panic inside
	// crypto11 or the module, which is recovered and reported as this).
	ErrHSM = errors.New("pkcs11kms: HSM operation failed")

	// ErrClosed: the client was closed.
	ErrClosed = errors.New("pkcs11kms: client closed")
)

// A URIError reports a key URI that does not follow the grammar. It
// matches [ErrInvalidURI]. It never quotes the URI itself (which could hold
// a pin-value), only the attribute name, escaped and truncated.
type URIError struct {
	// Attr is the attribute at fault ("" for the URI as a whole).
	Attr string
	// Reason says what is wrong with it.
	Reason string
}

// Error returns "pkcs11kms: invalid key URI: ", then the attribute at
// fault (quoted, escaped and truncated) if any, and the reason. It never
// contains the URI itself.
func (e *URIError) Error() string {
	if e.Attr == "" {
		return "pkcs11kms: invalid key URI: " + e.Reason
	}
	return "pkcs11kms: invalid key URI: attribute " + quote(e.Attr) + ": " + e.Reason
}

// Is reports whether target is ErrInvalidURI.
func (e *URIError) Is(target error) bool { return target == ErrInvalidURI }

// quote escapes and truncates untrusted text for an error message, so that
// hostile input cannot inject lines or flood logs.
func quote(s string) string {
	const max = 40
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

var ckrRE = regexp.MustCompile(`CKR_[A-Z0-9_]+`)

// ckr returns the PKCS#11 return-value name (CKR_...) in err's message, or
// "". crypto11 formats some module errors with %v, losing their type, so the
// text is what is left to go by.
func ckr(err error) string {
	if err == nil {
		return ""
	}
	return ckrRE.FindString(err.Error())
}

// tokenGone reports whether err says the token, the session or the module
// as a whole is unusable, as opposed to one operation failing.
func tokenGone(code string) bool {
	switch code {
	case "CKR_DEVICE_REMOVED", "CKR_TOKEN_NOT_PRESENT", "CKR_TOKEN_NOT_RECOGNIZED",
		"CKR_DEVICE_ERROR", "CKR_SESSION_HANDLE_INVALID", "CKR_SESSION_CLOSED",
		"CKR_CRYPTOKI_NOT_INITIALIZED", "CKR_USER_NOT_LOGGED_IN":
		return true
	}
	return false
}

// keyGone reports whether code says the key object no longer exists.
func keyGone(code string) bool {
	return code == "CKR_OBJECT_HANDLE_INVALID" || code == "CKR_KEY_HANDLE_INVALID"
}

// pinRejected reports whether code says the token refused the PIN.
func pinRejected(code string) bool {
	switch code {
	case "CKR_PIN_INCORRECT", "CKR_PIN_INVALID", "CKR_PIN_LEN_RANGE",
		"CKR_PIN_EXPIRED", "CKR_PIN_LOCKED":
		return true
	}
	return false
}

// authFailed reports whether code is what a module returns when a GCM tag
// does not verify. Modules differ; SoftHSM2 says CKR_GENERAL_ERROR, which
// can also mean a failing module, so that code is only "maybe" (see
// hsmAEAD.DecryptWithContext).
func authFailed(code string) (yes, maybe bool) {
	switch code {
	case "CKR_ENCRYPTED_DATA_INVALID", "CKR_ENCRYPTED_DATA_LEN_RANGE",
		"CKR_AEAD_DECRYPT_FAILED", "CKR_SIGNATURE_INVALID", "CKR_DATA_LEN_RANGE":
		return true, false
	case "CKR_GENERAL_ERROR":
		return false, true
	}
	return false, false
}

// panicError turns a recovered panic into an error; callers wrap it with
// the sentinel that fits (usually ErrHSM).
func panicError(r any) error {
	if err, ok := r.(error); ok {
		return fmt.Errorf("recovered panic: %w", err)
	}
	return fmt.Errorf("recovered panic: %v", r)
}
