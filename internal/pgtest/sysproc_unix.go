//go:build unix

package pgtest

import "syscall"

const throwawaySupported = true

// sysProcAttr runs a command as u (nil: this process's user), in a process
// group of its own if newGroup.
func sysProcAttr(u *osUser, newGroup bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: newGroup}
	if u != nil {
		a.Credential = &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)}
	}
	return a
}
