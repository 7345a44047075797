//go:build linux

package rie

import "syscall"

// procAttr puts the emulator in its own process group and has the kernel kill it if this
// process dies, so an interrupted test or `make local` leaves no emulator behind.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
