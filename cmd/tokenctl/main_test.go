package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
)

// TestMain starts moto once for the package (internal/awsemu). Without moto the
// package's tests do not run, unless CI is set, when that is a failure.
func TestMain(m *testing.M) { os.Exit(awsemu.RunTests(m)) }

// cli is tokenctl wired to buffers, a fixed clock and a given AWS configuration.
type cli struct {
	t        *testing.T
	env      map[string]string
	stdin    string
	now      time.Time
	cfg      *aws.Config
	out, err bytes.Buffer
}

func newCLI(t *testing.T, cfg *aws.Config, env map[string]string) *cli {
	t.Helper()
	if env == nil {
		env = map[string]string{}
	}
	return &cli{t: t, env: env, cfg: cfg, now: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)}
}

// run runs one command; out and err hold only that command's output.
func (c *cli) run(args ...string) int {
	c.t.Helper()
	c.out.Reset()
	c.err.Reset()
	a := &app{
		stdin:  strings.NewReader(c.stdin),
		stdout: &c.out,
		stderr: &c.err,
		getenv: func(k string) string { return c.env[k] },
		now:    func() time.Time { return c.now },
		loadAWS: func(context.Context) (aws.Config, error) {
			if c.cfg == nil {
				return aws.Config{}, errors.New("test: this command must not reach AWS")
			}
			return *c.cfg, nil
		},
	}
	return a.run(context.Background(), args)
}

func (c *cli) mustRun(args ...string) {
	c.t.Helper()
	if code := c.run(args...); code != exitOK {
		c.t.Fatalf("tokenctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, c.out.String(), c.err.String())
	}
}

// writeFile writes a document into the test's temporary directory.
func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// assertNoSecrets fails if any of secrets appears in any of outputs.
func assertNoSecrets(t *testing.T, secrets []string, outputs ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, o := range outputs {
			if strings.Contains(o, s) {
				t.Errorf("output contains the secret %q:\n%s", s, o)
			}
		}
	}
}
