package vaultcluster

import "syscall"

// sysProcAttr makes the kernel kill a node when the test process dies, so
// that no Vault outlives an interrupted test run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
