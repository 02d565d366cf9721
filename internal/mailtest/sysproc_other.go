//go:build !linux

package mailtest

import "syscall"

// sysProcAttr asks for nothing: without Pdeathsig, a test process that
// dies without its cleanups leaves mailpit running.
func sysProcAttr() *syscall.SysProcAttr { return nil }
