package ratelimit

// Tenants returns how many tenants l keeps state for.
func (l *Local) Tenants() int { return l.t.len() }

// Tenants returns how many tenants c keeps state for.
func (c *Concurrency) Tenants() int { return c.t.len() }

// SetHashMask keeps only the bits of mask of every tenant's hash in l's
// table, so that IDs collide: 0 gives every ID one hash. Call it before
// l is used.
func SetHashMask(l *Local, mask uint64) { l.t.hashMask = mask }
