package mailtest

import "syscall"

// sysProcAttr has mailpit killed when the thread that started it ends,
// which start keeps alive for as long as the child runs: so a test process
// that dies does not leave mailpit behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
