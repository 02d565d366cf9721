package pgbouncertest

import "syscall"

// sysProcAttr runs PgBouncer as u (nil: this process's user), and has it
// terminated if the thread that started it ends, which start keeps alive
// for as long as the child runs: so a test process that dies does not leave
// PgBouncer behind.
func sysProcAttr(u *osUser) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if u != nil {
		a.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid}
	}
	return a
}
