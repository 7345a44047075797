// Package rie runs a Lambda bootstrap under AWS's own Lambda Runtime Interface Emulator
// (aws-lambda-rie), the emulator `sam local invoke` runs inside its container, without Docker.
//
// The emulator is a Go module on the module proxy; Install builds it at one pinned version
// with `go install`, outside go.mod, into the repository's build/tools directory.
package rie

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/seed-502fa48b/token-refresher/internal/bootstrapbin"
)

// The pinned emulator. A newer one is a deliberate change: bump Version here only.
const (
	Module  = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"
	Version = "v0.0.0-20261030222936-bef5c4ba774d"
	// ToolsDir is where Path installs the emulator, relative to the module root.
	ToolsDir = "build/tools"
	binName  = "aws-lambda-rie"
)

// ErrOffline means the emulator could not be downloaded because the network or the module
// proxy is unreachable. Tests skip on it outside CI; everything else fails.
var ErrOffline = errors.New("rie: cannot download the emulator (network or module proxy unreachable)")

// InstallError is a failed `go install` of the emulator, with the tail of its output.
type InstallError struct {
	Output string
	Err    error
}

func (e *InstallError) Error() string {
	return fmt.Sprintf("rie: go install %s@%s: %v: %s", Module, Version, e.Err, e.Output)
}

func (e *InstallError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrOffline) true when the output shows a network failure.
func (e *InstallError) Is(target error) bool {
	return target == ErrOffline && offline(e.Output)
}

var (
	pathOnce sync.Once
	pathBin  string
	pathErr  error
)

// Path installs the pinned emulator into <module root>/build/tools once per process and
// returns the binary's absolute path.
func Path(ctx context.Context) (string, error) {
	pathOnce.Do(func() {
		root, err := bootstrapbin.ModuleRoot(ctx)
		if err != nil {
			pathErr = err
			return
		}
		pathBin, pathErr = Install(ctx, filepath.Join(root, ToolsDir))
	})
	return pathBin, pathErr
}

// Install makes sure dir/aws-lambda-rie is the pinned version, building it with
// `GOBIN=<tmp> go install Module@Version` when it is missing or another version, and
// renaming it into place so concurrent installs never expose a partial binary.
func Install(ctx context.Context, dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("rie: install: %w", err)
	}
	bin := filepath.Join(dir, binName)
	if pinned(ctx, bin) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("rie: install: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, ".install-")
	if err != nil {
		return "", fmt.Errorf("rie: install: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "go", "install", Module+"@"+Version)
	// Outside any module: the emulator's own go.mod decides its dependencies, ours is untouched.
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("rie: go install stopped: %w", context.Cause(ctx))
		}
		return "", &InstallError{Output: tail(out.String(), 2000), Err: err}
	}
	if err := os.Rename(filepath.Join(tmp, binName), bin); err != nil {
		return "", fmt.Errorf("rie: install: %w", err)
	}
	return bin, nil
}

// pinned reports whether bin exists and was built from Module at Version (`go version -m`
// reads the build information embedded in the binary).
func pinned(ctx context.Context, bin string) bool {
	if _, err := os.Stat(bin); err != nil {
		return false
	}
	out, err := exec.CommandContext(ctx, "go", "version", "-m", bin).Output()
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "mod" && f[2] == Version && strings.HasPrefix(Module, f[1]) {
			return true
		}
	}
	return false
}

// offline recognises the go command's messages for an unreachable network or proxy.
func offline(out string) bool {
	for _, s := range []string{"dial tcp", "no such host", "i/o timeout", "connection refused",
		"network is unreachable", "proxyconnect", "TLS handshake timeout", "GOPROXY=off", "-mod=vendor"} {
		if strings.Contains(out, s) {
			return true
		}
	}
	return false
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
