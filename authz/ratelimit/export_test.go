package ratelimit

// Tenants returns how many tenants l keeps state for.
func (l *Local) Tenants() int { return l.t.len() }

// Tenants returns how many tenants c keeps state for.
func (c *Concurrency) Tenants() int { return c.t.len() }
