//go:build unix && !linux

package pgbouncertest

import "syscall"

// sysProcAttr runs PgBouncer as u (nil: this process's user).
func sysProcAttr(u *osUser) *syscall.SysProcAttr {
	if u == nil {
		return nil
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid}}
}
