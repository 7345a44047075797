package rie

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/google/uuid"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/bootstrapbin"
	"github.com/seed-502fa48b/token-refresher/internal/ci"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

func TestMain(m *testing.M) {
	os.Exit(awsemu.RunTests(m))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// rieBin builds the pinned emulator; without network it skips, except under CI=true.
func rieBin(t *testing.T) string {
	t.Helper()
	// A first install compiles the emulator and its dependencies: about a minute on 2 cores.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin, err := Path(ctx)
	if err != nil {
		if errors.Is(err, ErrOffline) {
			ci.Missing(t, "aws-lambda-rie not built: %v", err)
		}
		t.Fatal(err)
	}
	return bin
}

// syncBuffer collects the function's output while the emulator writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fixture is a state table and a prefix of its own in the shared moto, and a function
// environment pointing at them. The environment deliberately lacks AWS_LAMBDA_LOG_FORMAT:
// the emulator does not set it, and the function must log JSON anyway.
type fixture struct {
	prefix, table string
	store         *secretstore.Store
	env           []string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := testCtx(t)
	srv := awsemu.Shared(t)
	cfg := srv.AWSConfig(t)
	id := uuid.NewString()[:8]
	f := &fixture{
		prefix: "rie-" + id + "/",
		table:  "rie-" + id,
		store:  secretstore.New(secretsmanager.NewFromConfig(cfg)),
	}
	if err := ledger.CreateTable(ctx, dynamodb.NewFromConfig(cfg), f.table); err != nil {
		t.Fatal(err)
	}
	f.env = append(srv.Env(), "STATE_TABLE="+f.table, "SECRET_PREFIX="+f.prefix)
	return f
}

func (f *fixture) start(t *testing.T, timeout time.Duration, stdout *syncBuffer) *Emulator {
	t.Helper()
	boot, err := bootstrapbin.Path(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Start(testCtx(t), Options{RIE: rieBin(t), Bootstrap: boot, Env: f.env, Timeout: timeout, Stdout: stdout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.Close()
		select {
		case <-e.Done():
		default:
			t.Error("emulator still running after Close")
		}
	})
	return e
}

func report(t *testing.T, res *Result) invocation.Report {
	t.Helper()
	if res.Err != nil {
		t.Fatalf("function error %v, want a report", res.Err)
	}
	var rep invocation.Report
	if err := json.Unmarshal(res.Payload, &rep); err != nil {
		t.Fatalf("answer %q: %v", res.Payload, err)
	}
	return rep
}

// TestBootstrapUnderRIE: the real bootstrap under AWS's emulator refreshes a vault.ist token,
// then finds it not due, and every line it logs is JSON.
func TestBootstrapUnderRIE(t *testing.T) {
	f := newFixture(t)
	vault := providersim.NewVault(providersim.VaultOptions{})
	t.Cleanup(vault.Close)
	doc, _ := json.Marshal(map[string]any{
		"provider":      map[string]any{"grant": "refresh_token", "body": "json", "token_url": vault.URL(), "client_auth": "none"},
		"refresh_token": vault.Seed(),
	})
	if _, err := f.store.Create(testCtx(t), f.prefix+"private/vault", token.Secret(doc)); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	e := f.start(t, 60*time.Second, &out)
	event, err := os.ReadFile("../../events/scheduled.json")
	if err != nil {
		t.Fatal(err)
	}

	for i, want := range []string{invocation.OutcomeRefreshed, invocation.OutcomeNotDue} {
		res, err := e.Invoke(testCtx(t), event)
		if err != nil {
			t.Fatalf("invoke %d: %v", i+1, err)
		}
		rep := report(t, res)
		if len(rep.Tokens) != 1 || rep.Tokens[0].Name != "vault" || rep.Tokens[0].Outcome != want {
			t.Fatalf("invoke %d: got rows %+v, want one row vault %s", i+1, rep.Tokens, want)
		}
	}
	if got := vault.Requests(); got != 1 {
		t.Errorf("got %d provider requests, want 1", got)
	}

	assertJSONLines(t, out.String())
}

// assertJSONLines fails for every line of the function's output that is not a JSON object.
func assertJSONLines(t *testing.T, out string) {
	t.Helper()
	logs := functionLines(out)
	if len(logs) == 0 {
		t.Fatal("got no function output, want its JSON log lines")
	}
	for _, line := range logs {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Errorf("function line is not JSON: %q", line)
		}
	}
}

// functionLines drops the emulator's own START/END/REPORT lines and empty lines.
func functionLines(out string) []string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "START RequestId: ") ||
			strings.HasPrefix(l, "END RequestId: ") || strings.HasPrefix(l, "REPORT RequestId: ") {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

// TestBootstrapUnderRIEFunctionError: an event the function does not accept is a function
// error with its message, and the function goes on serving.
func TestBootstrapUnderRIEFunctionError(t *testing.T) {
	f := newFixture(t)
	var out syncBuffer
	e := f.start(t, 60*time.Second, &out)

	res, err := e.Invoke(testCtx(t), []byte(`{"source":"aws.s3","detail-type":"Object Created"}`))
	if err != nil {
		t.Fatal(err)
	}
	if res.Err == nil {
		t.Fatalf("got answer %q, want a function error", res.Payload)
	}
	if res.Err.Type == "" || !strings.Contains(res.Err.Message, "event") {
		t.Errorf("got error %q of type %q, want a message about the event and a type", res.Err.Message, res.Err.Type)
	}
	rep := report(t, mustInvoke(t, e, `{}`))
	if len(rep.Tokens) != 0 {
		t.Errorf("got rows %+v for an empty prefix, want none", rep.Tokens)
	}
	// The rejected event is logged as JSON too, including aws-lambda-go's echo of the
	// returned error through the standard logger (functions/refresher calls slog.SetDefault).
	assertJSONLines(t, out.String())
	var echoed bool
	for _, line := range functionLines(out.String()) {
		var v struct {
			Msg string `json:"msg"`
		}
		var echo struct {
			ErrorMessage string `json:"errorMessage"`
		}
		if json.Unmarshal([]byte(line), &v) == nil && json.Unmarshal([]byte(v.Msg), &echo) == nil && echo.ErrorMessage == res.Err.Message {
			echoed = true
		}
	}
	if !echoed {
		t.Errorf("got no JSON line carrying the returned error %q, want aws-lambda-go's echo routed through slog; output:\n%s", res.Err.Message, out.String())
	}
}

func mustInvoke(t *testing.T, e *Emulator, event string) *Result {
	t.Helper()
	res, err := e.Invoke(testCtx(t), []byte(event))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestBootstrapUnderRIETimeout: a function that stops answering (frozen with SIGSTOP) is
// timed out and killed by the emulator, and the next invocation cold-starts a new one.
func TestBootstrapUnderRIETimeout(t *testing.T) {
	f := newFixture(t)
	var out syncBuffer
	// Long enough for the warm-up invocation on a loaded machine; the frozen one waits it out.
	e := f.start(t, 3*time.Second, &out)
	report(t, mustInvoke(t, e, `{}`))

	pids := e.RuntimePIDs()
	if len(pids) != 1 {
		t.Fatalf("got runtime pids %v, want one bootstrap", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	_, err := e.Invoke(testCtx(t), []byte(`{}`))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	if !strings.Contains(err.Error(), "3.00 seconds") {
		t.Errorf("got %q, want the emulator's timeout message naming 3 s", err)
	}

	report(t, mustInvoke(t, e, `{}`))
	after := e.RuntimePIDs()
	if len(after) != 1 || after[0] == pids[0] {
		t.Errorf("got runtime pids %v after the timeout, want one new bootstrap (old %d)", after, pids[0])
	}
	if err := syscall.Kill(pids[0], 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("timed-out bootstrap %d: got %v, want it gone", pids[0], err)
	}
}

func TestFunctionError(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       *FunctionError
	}{
		{"error document", `{"errorMessage":"boom","errorType":"ConfigError"}`, &FunctionError{Message: "boom", Type: "ConfigError"}},
		{"with stack trace", `{"errorMessage":"p","errorType":"string","stackTrace":[]}`, &FunctionError{Message: "p", Type: "string"}},
		{"report", `{"tokens":[],"summary":{}}`, nil},
		{"report with an errorType field", `{"errorType":"x","tokens":[]}`, nil},
		{"not JSON", `Task timed out after 2.00 seconds`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := functionError([]byte(tc.body))
			if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPinnedVersion(t *testing.T) {
	bin := rieBin(t)
	if !pinned(testCtx(t), bin) {
		t.Fatalf("%s: go version -m does not show %s@%s", bin, Module, Version)
	}
	if pinned(testCtx(t), os.Args[0]) {
		t.Errorf("the test binary passes as the emulator, want only the pinned module")
	}
}

func TestOffline(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want bool
	}{
		{`go: github.com/aws/...: Get "https://proxy.golang.org/...": dial tcp: lookup proxy.golang.org: no such host`, true},
		{`go: module lookup disabled by GOPROXY=off`, true},
		{`build failed: undefined: foo`, false},
	} {
		err := &InstallError{Output: tc.out, Err: errors.New("exit status 1")}
		if got := errors.Is(err, ErrOffline); got != tc.want {
			t.Errorf("%q: got offline %v, want %v", tc.out, got, tc.want)
		}
	}
}

// TestMakefilePin: `make tools` and this package install the same emulator.
func TestMakefilePin(t *testing.T) {
	raw, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "RIE_") {
			vars[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	if vars["RIE_MODULE"] != Module || vars["RIE_VERSION"] != Version {
		t.Errorf("got Makefile RIE_MODULE %q RIE_VERSION %q, want %q %q", vars["RIE_MODULE"], vars["RIE_VERSION"], Module, Version)
	}
}

// TestStartBadOptions: a missing or unusable bootstrap is refused before anything starts.
func TestStartBadOptions(t *testing.T) {
	dir := t.TempDir()
	notExec := dir + "/bootstrap"
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, bootstrap, want string }{
		{"empty", "", "Options.Bootstrap is empty"},
		{"missing", dir + "/missing", "is not an executable file"},
		{"not executable", notExec, "is not an executable file"},
		{"directory", dir, "is not an executable file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Start(testCtx(t), Options{RIE: "/nonexistent/aws-lambda-rie", Bootstrap: tc.bootstrap})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestEnsureAliasThroughRIE: invoked as the "ensure" alias (the emulator builds the invoked
// ARN from AWS_LAMBDA_FUNCTION_NAME, so "…:ensure" ends it), the function refuses a forced
// refresh with a clear error and still answers ensure — what keeps a consumer's invoke
// permission from forcing refreshes.
func TestEnsureAliasThroughRIE(t *testing.T) {
	f := newFixture(t)
	f.env = append(f.env, "AWS_LAMBDA_FUNCTION_NAME=token-refresher:ensure")
	var out syncBuffer
	e := f.start(t, 60*time.Second, &out)

	res := mustInvoke(t, e, `{"tokens":["vault"],"force":true}`)
	if res.Err == nil || !strings.Contains(res.Err.Message, "ensure") {
		t.Fatalf("forced refresh through the ensure alias: got answer %q, error %v; want a function error naming ensure", res.Payload, res.Err)
	}
	rep := report(t, mustInvoke(t, e, `{"ensure":["nosuch"]}`))
	if len(rep.Tokens) != 1 || rep.Tokens[0].Name != "nosuch" {
		t.Errorf("ensure through the alias: got rows %+v, want one row for nosuch", rep.Tokens)
	}
}
