//go:build unix

package kubetest

import "syscall"

const processGroupsSupported = true

// newGroupAttr runs a command in a process group of its own.
func newGroupAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// killGroup sends SIGKILL to every process of process group pgid.
func killGroup(pgid int) error { return syscall.Kill(-pgid, syscall.SIGKILL) }
