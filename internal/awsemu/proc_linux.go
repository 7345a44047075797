//go:build linux

package awsemu

import "syscall"

// procAttr puts moto in its own process group (so Close can kill the whole
// group) and has the kernel kill it if the test binary dies first.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
