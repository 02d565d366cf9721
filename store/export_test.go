package store

// CachedScopes returns the number of tenants whose setup db keeps cached.
func CachedScopes(db *DB) int {
	n := 0
	db.scopes.Range(func(any, any) bool { n++; return true })
	return n
}
