//go:build !unix

package pgbouncertest

import "syscall"

// sysProcAttr runs PgBouncer as this process's user: there is no running as
// another user here, and Start never needs to (it is never root).
func sysProcAttr(*osUser) *syscall.SysProcAttr { return nil }
