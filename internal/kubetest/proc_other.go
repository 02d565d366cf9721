//go:build !unix

package kubetest

import (
	"errors"
	"syscall"
)

// processGroupsSupported is false where the server's process handling (a
// process group, the watchdog shell) is not implemented: Start and Shared then skip,
// or fails in CI.
const processGroupsSupported = false

func newGroupAttr() *syscall.SysProcAttr { return nil }

func killGroup(int) error { return errors.New("not supported") }
