package bootstrapbin

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildPackageInto: the binary lands under its name and no temporary file stays behind,
// also when the build fails.
func TestBuildPackageInto(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bin, err := BuildPackageInto(ctx, "./internal/lambdaemu/testdata/handler", dir, "handler")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(bin); err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("got %s (%v), want an executable", bin, err)
	}
	_, err = BuildPackageInto(ctx, "./internal/no/such/package", dir, "broken")
	if err == nil || !strings.Contains(err.Error(), "./internal/no/such/package") {
		t.Errorf("got %v, want a build error naming the package", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 1 || names[0] != filepath.Base(bin) {
		t.Errorf("got %v in the directory, want only %s", names, filepath.Base(bin))
	}
}

// TestPathIsInBuildDir: the bootstrap for tests is built under the module's build/, never in
// the temp directory.
func TestPathIsInBuildDir(t *testing.T) {
	ctx := context.Background()
	bin, err := Path(ctx)
	if err != nil {
		t.Fatal(err)
	}
	root, err := ModuleRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, Dir, "bootstrap"); bin != want {
		t.Errorf("got %s, want %s", bin, want)
	}
}
