package blob

// SetPurgeHook makes Purge call f after each deletion, until the test ends.
func SetPurgeHook(f func(key string)) (restore func()) {
	old := purgeDeleted
	purgeDeleted = f
	return func() { purgeDeleted = old }
}

// CiphertextSize and PlaintextSize expose the size arithmetic of format v1.
var (
	CiphertextSize = ciphertextSize
	PlaintextSize  = plaintextSize
)
