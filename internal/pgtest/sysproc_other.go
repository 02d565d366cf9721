//go:build !unix

package pgtest

import "syscall"

// throwawaySupported is false where the cluster's process handling
// (running as another user, the watchdog shell) is not implemented.
const throwawaySupported = false

func sysProcAttr(*osUser, bool) *syscall.SysProcAttr { return nil }
