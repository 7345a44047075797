// Package bootstrapbin builds the real refresher `bootstrap` for the host, so tests and the
// demo drive the same binary Lambda runs (only GOOS/GOARCH differ from `make build`).
package bootstrapbin

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

var (
	once    sync.Once
	built   string
	buildEr error
)

// Path builds the bootstrap once per process into a temporary directory and returns its path.
func Path(ctx context.Context) (string, error) {
	once.Do(func() {
		dir, err := os.MkdirTemp("", "tr-bootstrap-")
		if err != nil {
			buildEr = err
			return
		}
		built, buildEr = Build(ctx, filepath.Join(dir, "bootstrap"))
	})
	return built, buildEr
}

// Build compiles ./functions/refresher of this module into out, with the Lambda flags.
func Build(ctx context.Context, out string) (string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "lambda.norpc", "-trimpath", "-o", out, "./functions/refresher")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("bootstrapbin: go build: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("bootstrapbin: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("bootstrapbin: not inside the token-refresher module")
	}
	return filepath.Dir(mod), nil
}
