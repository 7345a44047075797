//go:build !linux

package rie

import "syscall"

// procAttr puts the emulator in its own process group. (The emulator itself runs only on
// Linux; this keeps the package compiling elsewhere.)
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
