package binary

import "syscall"

// sysProcAttr makes the kernel kill a started binary if the test process
// dies without running its cleanups (a panic, a -timeout).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
