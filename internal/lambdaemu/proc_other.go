//go:build unix && !linux

package lambdaemu

import (
	"syscall"
	"time"
)

// procAttr puts the bootstrap in its own process group; Pdeathsig exists only on Linux.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// waitStopped is best effort off Linux: there is no /proc to look at.
func waitStopped(int, time.Duration) error { return nil }
