// Package bootstrapbin builds the real refresher `bootstrap` for the host, so tests, the demo
// and the local runs drive the same code Lambda runs (the same package and build tag as
// `make build`; the platform and the cache-splitting flags differ, see build).
//
// Builds go into the repository's build/ directory (gitignored, removed by `make clean`), never
// into the temp directory: a test binary that is killed cannot clean up after itself, and a
// 17 MB folder per run adds up.
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

// Dir is where Path puts the binary, relative to the module root.
const Dir = "build/host"

var (
	once    sync.Once
	built   string
	buildEr error
)

// Path builds the bootstrap once per process into <module root>/build/host/bootstrap and
// returns its absolute path. Concurrent test binaries each build to a private file and
// rename it into place, so none of them ever executes a half-written binary.
func Path(ctx context.Context) (string, error) {
	once.Do(func() {
		root, err := ModuleRoot(ctx)
		if err != nil {
			buildEr = err
			return
		}
		built, buildEr = BuildInto(ctx, filepath.Join(root, Dir), "bootstrap")
	})
	return built, buildEr
}

// BuildInto builds the bootstrap into dir/name through a temporary file in dir renamed into
// place, and returns the absolute path.
func BuildInto(ctx context.Context, dir, name string) (string, error) {
	return BuildPackageInto(ctx, "./functions/refresher", dir, name)
}

// BuildPackageInto builds the Lambda function in pkg (a path relative to the module root,
// like "./internal/lambdaemu/testdata/handler") with the Lambda tag into dir/name, through
// a temporary file in dir renamed into place, and returns the absolute path.
func BuildPackageInto(ctx context.Context, pkg, dir, name string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("bootstrapbin: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+name+"-*.tmp")
	if err != nil {
		return "", fmt.Errorf("bootstrapbin: %w", err)
	}
	tmp := f.Name()
	_ = f.Close()
	if err := build(ctx, pkg, tmp); err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	out, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("bootstrapbin: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("bootstrapbin: %w", err)
	}
	return out, nil
}

func build(ctx context.Context, pkg, out string) error {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return err
	}
	// Only the Lambda tag, none of `make build`'s other flags (-trimpath, CGO_ENABLED=0): any of
	// those changes the build-cache key of every package, so on an empty cache the AWS SDK
	// would be compiled twice — once for the tests or the demo, once for this binary.
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "lambda.norpc", "-o", out, pkg)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("bootstrapbin: go build %s stopped: %w", pkg, context.Cause(ctx))
		}
		return fmt.Errorf("bootstrapbin: go build %s: %w: %s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// ModuleRoot returns the directory of this module's go.mod.
func ModuleRoot(ctx context.Context) (string, error) {
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
