package localrun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/ci"
	"github.com/seed-502fa48b/token-refresher/internal/rie"
	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
)

// TestStack: the local stack refreshes the three seeded tokens through the emulator, answers
// the SDK's Lambda Invoke for the function "function" (what tokenctl does with
// AWS_ENDPOINT_URL_LAMBDA), and Close leaves no process behind.
func TestStack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	s, err := Start(ctx, Options{Progress: &progress})
	if err != nil {
		if errors.Is(err, awsemu.ErrUnavailable) || errors.Is(err, rie.ErrOffline) {
			ci.Missing(t, "local stack unavailable: %v", err)
		}
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			_ = s.Close()
		}
	}()
	if err := s.SeedDemoTokens(ctx); err != nil {
		t.Fatal(err)
	}

	client := lambda.NewFromConfig(s.AWSConfig, func(o *lambda.Options) { o.BaseEndpoint = aws.String(s.Function.URL) })
	invoke := func(payload string) invocation.Report {
		t.Helper()
		out, err := client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(rie.FunctionName), Payload: []byte(payload)})
		if err != nil {
			t.Fatalf("Invoke %s: %v", payload, err)
		}
		var rep invocation.Report
		if err := json.Unmarshal(out.Payload, &rep); err != nil {
			t.Fatalf("Invoke %s: answer %q: %v", payload, out.Payload, err)
		}
		return rep
	}
	rep := invoke(`{}`)
	if got := rep.Summary[invocation.OutcomeRefreshed]; got != len(DemoTokens) || len(rep.Tokens) != len(DemoTokens) {
		t.Fatalf("got rows %+v, want %d refreshed", rep.Tokens, len(DemoTokens))
	}
	rep = invoke(`{"ensure":["acme-business"]}`)
	if len(rep.Tokens) != 1 || rep.Tokens[0].Outcome != invocation.OutcomeNotDue || rep.Tokens[0].ExpiresAt == "" {
		t.Errorf("ensure: got rows %+v, want acme-business not_due with expires_at", rep.Tokens)
	}

	exports := strings.Join(s.Exports(), "\n")
	for _, want := range []string{"AWS_ENDPOINT_URL=" + s.AWS.URL, "AWS_ENDPOINT_URL_LAMBDA=" + s.Function.URL,
		"STATE_TABLE=" + DefaultTable, "SECRET_PREFIX=" + DefaultPrefix, "REFRESHER_FUNCTION=function"} {
		if !strings.Contains(exports, want) {
			t.Errorf("exports lack %q:\n%s", want, exports)
		}
	}

	pids := s.Function.RuntimePIDs()
	closed = true
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case <-s.Function.Done():
	default:
		t.Error("emulator still running after Close")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("bootstrap %d after Close: got %v, want it gone", pid, err)
		}
	}
}

// TestFunctionEnvMatchesTemplate: FunctionEnv is template.yaml's function environment with
// the parameters' defaults, its MemorySize, LoggingConfig and Timeout.
func TestFunctionEnvMatchesTemplate(t *testing.T) {
	const localEscrowKey = "arn:aws:kms:us-east-1:123456789012:key/local"
	raw, err := os.ReadFile("../../template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tpl := string(raw)
	want := map[string]string{}
	for k, v := range yamlBlock(t, tpl, "        Variables:") {
		switch {
		case strings.HasPrefix(v, "!Ref "):
			param := yamlBlock(t, tpl, "  "+strings.TrimPrefix(v, "!Ref ")+":")
			want[k] = param["Default"]
		case k == "ESCROW_KEY_ID":
			// The stack creates the key by default; the local stack creates one in moto.
			if !strings.HasPrefix(v, "!If [CreateEscrowKey, !GetAtt EscrowKey.Arn") {
				t.Errorf("ESCROW_KEY_ID: got %q in template.yaml, want the created key by default", v)
			}
			want[k] = localEscrowKey
		case strings.HasPrefix(v, "!FindInMap [Schedule,"):
			// rate(12 hours) → the Schedule mapping's row 12hours.
			expr := yamlBlock(t, tpl, "  ScheduleExpression:")["Default"]
			n, unit, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(expr, "rate("), ")"), " ")
			row := yamlBlock(t, tpl, "  Schedule:")[n+unit]
			iv, _, _ := strings.Cut(strings.TrimPrefix(row, "{ Interval: "), ",")
			if iv == "" || iv == row {
				t.Fatalf("Schedule mapping: no row %s%s for %s", n, unit, expr)
			}
			want[k] = iv
		case strings.HasPrefix(v, "!If"):
			want[k] = "" // conditions are off with the default parameters
		default:
			want[k] = v
		}
	}
	want["STATE_TABLE"] = DefaultTable // a resource in the template, a name here
	want["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = yamlValue(t, tpl, "      MemorySize:")
	want["AWS_LAMBDA_LOG_FORMAT"] = yamlValue(t, tpl, "        LogFormat:")
	want["AWS_LAMBDA_LOG_LEVEL"] = yamlValue(t, tpl, "        ApplicationLogLevel:")

	got := map[string]string{}
	for _, kv := range FunctionEnv(DefaultTable, DefaultPrefix, localEscrowKey) {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s: got %q (set %v), want %q as in template.yaml", k, g, ok, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: set here, not in template.yaml", k)
		}
	}
	if timeout := yamlValue(t, tpl, "      Timeout:"); timeout != strconv.Itoa(int(DefaultTimeout.Seconds())) {
		t.Errorf("DefaultTimeout: got %s, want template.yaml's Timeout %s s", DefaultTimeout, timeout)
	}
}

// yamlBlock returns the "key: value" lines indented under the first line equal to header
// (comments skipped, quotes removed). Enough YAML for template.yaml's flat blocks.
func yamlBlock(t *testing.T, doc, header string) map[string]string {
	t.Helper()
	lines := strings.Split(doc, "\n")
	indent := len(header) - len(strings.TrimLeft(header, " "))
	for i, l := range lines {
		if strings.TrimRight(l, " ") != header {
			continue
		}
		out := map[string]string{}
		for _, l := range lines[i+1:] {
			trimmed := strings.TrimSpace(l)
			if trimmed == "" || strings.HasPrefix(trimmed, "#") {
				continue
			}
			if len(l)-len(strings.TrimLeft(l, " ")) <= indent {
				break
			}
			if k, v, ok := strings.Cut(trimmed, ":"); ok {
				out[k] = strings.Trim(strings.TrimSpace(v), `"'`)
			}
		}
		return out
	}
	t.Fatalf("template.yaml: no line %q", header)
	return nil
}

// yamlValue returns the value of the first line starting with prefix.
func yamlValue(t *testing.T, doc, prefix string) string {
	t.Helper()
	for _, l := range strings.Split(doc, "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.Trim(strings.TrimSpace(strings.TrimPrefix(l, prefix)), `"'`)
		}
	}
	t.Fatalf("template.yaml: no line starting %q", prefix)
	return ""
}
