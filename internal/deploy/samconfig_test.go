package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func loadSamconfig(t *testing.T) tomlDoc {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "samconfig.toml"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := readTOMLLines(string(data))
	if err != nil {
		t.Fatalf("samconfig.toml: %v", err)
	}
	return doc
}

func TestSamconfig(t *testing.T) {
	doc := loadSamconfig(t)
	if got := doc[""]["version"]; got != "0.1" {
		t.Errorf("version: got %q, want 0.1", got)
	}
	for _, c := range []struct{ table, key, want string }{
		{"default.global.parameters", "stack_name", "token-refresher"},
		{"default.build.parameters", "cached", "true"},
		{"default.build.parameters", "parallel", "true"},
		{"default.deploy.parameters", "resolve_s3", "true"},
		{"default.deploy.parameters", "confirm_changeset", "true"},
		{"default.validate.parameters", "lint", "true"},
	} {
		if got, ok := doc[c.table][c.key]; !ok || got != c.want {
			t.Errorf("[%s] %s: got %q (present %v), want %q", c.table, c.key, got, ok, c.want)
		}
	}
	// The template creates roles and policies; without the capability the deploy is refused.
	if caps := doc["default.deploy.parameters"]["capabilities"]; !strings.Contains(caps, "CAPABILITY_IAM") &&
		!strings.Contains(caps, "CAPABILITY_NAMED_IAM") {
		t.Errorf("[default.deploy.parameters] capabilities: got %q, want CAPABILITY_IAM", caps)
	}
	if ev, ok := doc["default.local_invoke.parameters"]["event"]; ok {
		if _, err := os.Stat(filepath.Join(repoRoot(t), ev)); err != nil {
			t.Errorf("[default.local_invoke.parameters] event %q: %v", ev, err)
		}
	}
}

func TestReadTOMLLines(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		table   string
		key     string
		want    string
		wantErr bool
	}{
		{"top-level number", "version = 0.1\n", "", "version", "0.1", false},
		{"quoted string", "[a.b]\nk = \"x y\"\n", "a.b", "k", "x y", false},
		{"comment after value", "[a]\nk = true # note\n", "a", "k", "true", false},
		{"hash inside string", "[a]\nk = \"p#q\" # c\n", "a", "k", "p#q", false},
		{"escaped quote", "[a]\nk = \"say \\\"hi\\\"\"\n", "a", "k", `say "hi"`, false},
		{"array kept raw", "[a]\nk = [\"X\", \"Y\"]\n", "a", "k", `["X", "Y"]`, false},
		{"duplicate table", "[a]\n[a]\n", "", "", "", true},
		{"duplicate key", "[a]\nk = 1\nk = 2\n", "", "", "", true},
		{"no equals", "[a]\nk\n", "", "", "", true},
		{"array of tables unsupported", "[[a]]\n", "", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := readTOMLLines(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error: got %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if got := doc[tt.table][tt.key]; got != tt.want {
				t.Errorf("[%s] %s: got %q, want %q", tt.table, tt.key, got, tt.want)
			}
		})
	}
}
