//go:build linux

package lambdaemu

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// procAttr puts the bootstrap in its own process group (Kill and Signal reach
// anything it forks) and has the kernel kill it if the emulator's process dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// waitStopped returns once every thread of pid is stopped. SIGSTOP is
// delivered asynchronously and the kernel offers no notification to anyone
// but the waiting parent (os/exec owns that), so /proc is polled.
func waitStopped(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		stopped, err := allThreadsStopped(pid)
		if err != nil {
			return err
		}
		if stopped {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d not stopped after %s", pid, timeout)
		}
		<-tick.C
	}
}

func allThreadsStopped(pid int) (bool, error) {
	stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil {
		return false, err
	}
	if len(stats) == 0 {
		return false, fmt.Errorf("process %d: %w", pid, os.ErrProcessDone)
	}
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			return false, nil // thread exited meanwhile; look again
		}
		// Format: "pid (comm) S ...": the state follows the last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+2 >= len(s) {
			return false, fmt.Errorf("unexpected %s: %q", p, s)
		}
		if st := s[i+2]; st != 'T' && st != 't' {
			return false, nil
		}
	}
	return true, nil
}
