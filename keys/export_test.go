package keys

// PurgeAll drops every cached keyset of m and leaves it open: tests use it
// to make m read and unwrap the keysets again.
func PurgeAll(m *Manager) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.purgeAllLocked()
}
