//go:build unix && !linux

package awsemu

import "syscall"

// procAttr puts moto in its own process group; Pdeathsig exists only on Linux.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
