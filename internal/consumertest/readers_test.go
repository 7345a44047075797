package consumertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/ci"
)

func TestMain(m *testing.M) { os.Exit(awsemu.RunTests(m)) }

// nodeTimeout bounds npm ci and the node test run.
const nodeTimeout = 3 * time.Minute

// lookTool finds a tool; without it the test is skipped, or fails under CI=true.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		ci.Missing(t, "%s not found, so the Node reader is not tested: %v", name, err)
	}
	return p
}

// TestNodeReader runs consumers/node's `node --test` against moto with one access secret
// seeded here as the refresher publishes it.
func TestNodeReader(t *testing.T) {
	node := lookTool(t, "node")
	dir, err := filepath.Abs(filepath.Join("..", "..", "consumers", "node"))
	if err != nil {
		t.Fatal(err)
	}
	srv := awsemu.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()

	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		npm := lookTool(t, "npm")
		run(ctx, t, dir, nil, npm, "ci", "--prefer-offline", "--no-audit", "--no-fund") // the npm cache serves it without a network when it can
	}

	env, tok := seedAccessSecret(ctx, t, srv)
	out := run(ctx, t, dir, env, node, "--test", "--test-reporter=tap")
	pass, fail, cancelled, skipped := count(out, "pass"), count(out, "fail"), count(out, "cancelled"), count(out, "skipped")
	t.Logf("node --test: %d passed, %d failed, %d cancelled, %d skipped", pass, fail, cancelled, skipped)
	if pass <= 0 || fail != 0 || cancelled != 0 || skipped != 0 {
		t.Errorf("node --test: got %d passed, %d failed, %d cancelled, %d skipped; want >0, 0, 0, 0\n%s", pass, fail, cancelled, skipped, out)
	}
	if strings.Contains(out, tok) {
		t.Errorf("node --test output carries the seeded token")
	}
}

// seedAccessSecret publishes one access secret as the refresher does (generation 7, valid
// 24 h) and returns the environment a reader's test needs: moto's, plus TR_ACCESS_SECRET,
// TR_ACCESS_TOKEN and TR_ACCESS_GENERATION.
func seedAccessSecret(ctx context.Context, t *testing.T, srv *awsemu.Server) (env []string, tok string) {
	t.Helper()
	sm := secretsmanager.NewFromConfig(srv.AWSConfig(t))
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	name := "token-refresher/access/go-seeded-" + hex.EncodeToString(b[:4])
	tok = "at-go-" + hex.EncodeToString(b)
	doc, _ := json.Marshal(map[string]any{
		"access_token": tok, "token_type": "Bearer", "expires_at": time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339),
		"scope": "fund.read", "generation": 7, "status": "active",
	})
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: &name, SecretString: aws.String(string(doc))}); err != nil {
		t.Fatalf("seed %s: %v", name, err)
	}
	t.Cleanup(func() {
		_, _ = sm.DeleteSecret(context.Background(), &secretsmanager.DeleteSecretInput{SecretId: &name, ForceDeleteWithoutRecovery: aws.Bool(true)})
	})
	return append(srv.Env(), "TR_ACCESS_SECRET="+name, "TR_ACCESS_TOKEN="+tok, "TR_ACCESS_GENERATION=7"), tok
}

// TestPythonReader runs consumers/python's unittest suite against moto. moto needs python3
// and brings boto3, so wherever this package's tests run at all, so does this one.
func TestPythonReader(t *testing.T) {
	python := lookTool(t, "python3")
	dir, err := filepath.Abs(filepath.Join("..", "..", "consumers", "python"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	env, tok := seedAccessSecret(ctx, t, awsemu.Shared(t))
	env = append(env, "PYTHONDONTWRITEBYTECODE=1")
	out := run(ctx, t, dir, env, python, "-m", "unittest", "-v", "test_token_reader")
	m := regexp.MustCompile(`(?m)^Ran (\d+) tests? in .*\n\nOK$`).FindStringSubmatch(out)
	if strings.Contains(out, tok) {
		t.Errorf("the unittest output carries the seeded token")
	}
	if m == nil || m[1] == "0" || strings.Contains(out, "skipped") {
		t.Fatalf("python3 -m unittest: want OK with tests run and none skipped\n%s", out)
	}
	t.Logf("python3 -m unittest: %s tests OK", m[1])
}

// run runs name in dir with the machine's PATH and HOME plus env (nil: the whole
// environment), failing the test with the output when it fails.
func run(ctx context.Context, t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		// Only what node needs: no AWS profile or real credentials from the caller's environment.
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	}
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, buf.String())
	}
	return buf.String()
}

// count reads "# pass N" (fail, cancelled, skipped) from node's TAP summary; -1 when absent.
func count(tap, what string) int {
	m := regexp.MustCompile(`(?m)^# ` + what + ` (\d+)$`).FindStringSubmatch(tap)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
