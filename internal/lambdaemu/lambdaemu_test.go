package lambdaemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/seed-502fa48b/token-refresher/internal/bootstrapbin"
)

// handlerBin is testdata/handler built once for the host.
var handlerBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// Into the repository's build/ (gitignored), not the temp directory: a test binary that
	// times out or is killed cannot remove what it left there.
	ctx := context.Background()
	root, err := bootstrapbin.ModuleRoot(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	handlerBin, err = bootstrapbin.BuildPackageInto(ctx, "./internal/lambdaemu/testdata/handler", filepath.Join(root, bootstrapbin.Dir), "lambdaemu-handler")
	if err != nil {
		fmt.Fprintf(os.Stderr, "build test handler: %v\n", err)
		return 1
	}
	return m.Run()
}

// testCtx bounds a test so a protocol bug fails it instead of hanging the suite.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func start(t *testing.T, o Options) *Emulator {
	t.Helper()
	if o.Binary == "" {
		o.Binary = handlerBin
	}
	e, err := Start(testCtx(t), o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func event(mode string, extra ...string) []byte {
	m := map[string]any{"mode": mode}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	b, _ := json.Marshal(m)
	return b
}

// processGone reports whether pid no longer exists (killed and reaped).
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func mustEcho(t *testing.T, e *Emulator, ctx context.Context) {
	t.Helper()
	payload := event("echo", "message", "again")
	res, err := e.Invoke(ctx, payload)
	if err != nil {
		t.Fatalf("echo Invoke: %v", err)
	}
	if res.Err != nil || !bytes.Equal(res.Payload, payload) {
		t.Fatalf("echo = %s, %v; want %s", res.Payload, res.Err, payload)
	}
}

func TestInvokeSuccess(t *testing.T) {
	ctx := testCtx(t)
	e := start(t, Options{})
	payload := event("echo", "message", "hello")
	res, err := e.Invoke(ctx, payload)
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	if res.Err != nil {
		t.Fatalf("function error %v, want none", res.Err)
	}
	if !bytes.Equal(res.Payload, payload) {
		t.Errorf("payload = %s, want %s", res.Payload, payload)
	}
	if _, err := uuid.Parse(res.RequestID); err != nil {
		t.Errorf("RequestID %q is not a UUID: %v", res.RequestID, err)
	}
	if res.Duration <= 0 {
		t.Errorf("Duration = %v, want > 0", res.Duration)
	}
	// A second invoke goes to the same (warm) child with a new request id.
	pid := e.PID()
	res2, err := e.Invoke(ctx, payload)
	if err != nil {
		t.Fatalf("second Invoke: %v", err)
	}
	if res2.RequestID == res.RequestID {
		t.Errorf("request id reused: %s", res.RequestID)
	}
	if got := e.PID(); got != pid {
		t.Errorf("PID after warm invoke = %d, want %d", got, pid)
	}
}

func TestFunctionError(t *testing.T) {
	ctx := testCtx(t)
	e := start(t, Options{})
	pid := e.PID()
	res, err := e.Invoke(ctx, event("error", "message", "client_secret field is missing"))
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	want := FunctionError{Type: "ConfigError", Message: "client_secret field is missing"}
	if res.Err == nil || *res.Err != want {
		t.Fatalf("Err = %+v, want %+v", res.Err, want)
	}
	if res.Payload != nil {
		t.Errorf("Payload = %s, want none", res.Payload)
	}
	if got := res.Err.Error(); got != "ConfigError: client_secret field is missing" {
		t.Errorf("Error() = %q", got)
	}
	// A function error does not end the environment.
	mustEcho(t, e, ctx)
	if got := e.PID(); got != pid {
		t.Errorf("PID after function error = %d, want %d (warm)", got, pid)
	}
}

func TestPanicColdStartsNext(t *testing.T) {
	ctx := testCtx(t)
	e := start(t, Options{})
	pid := e.PID()
	res, err := e.Invoke(ctx, event("panic", "message", "boom"))
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	if res.Err == nil || res.Err.Message != "boom" || res.Err.Type != "string" {
		t.Fatalf("Err = %+v, want {boom string}", res.Err)
	}
	// aws-lambda-go exits after a panic; the next invoke needs a new child.
	mustEcho(t, e, ctx)
	if got := e.PID(); got == pid || got == 0 {
		t.Errorf("PID after panic = %d, want a new child (old %d)", got, pid)
	}
}

func TestTimeout(t *testing.T) {
	ctx := testCtx(t)
	const timeout = 300 * time.Millisecond
	e := start(t, Options{Timeout: timeout})
	// Warm up so the child is ready and the timeout covers the handler only.
	mustEcho(t, e, ctx)
	pid := e.PID()
	before := time.Now()
	res, err := e.Invoke(ctx, event("sleep"))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Invoke = %+v, %v; want ErrTimeout", res, err)
	}
	if elapsed := time.Since(before); elapsed < timeout {
		t.Errorf("timed out after %v, before the %v deadline", elapsed, timeout)
	}
	if !processGone(pid) {
		t.Errorf("child %d still exists after a timeout", pid)
	}
	mustEcho(t, e, ctx)
	if got := e.PID(); got == pid {
		t.Errorf("PID after timeout = %d, want a new child", got)
	}
}

// markerWriter signals once its output contains marker.
type markerWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	seen   chan struct{}
	once   sync.Once
}

func newMarkerWriter(marker string) *markerWriter {
	return &markerWriter{marker: marker, seen: make(chan struct{})}
}

func (w *markerWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.marker) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *markerWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

type invokeResult struct {
	res *Result
	err error
}

func invokeAsync(ctx context.Context, e *Emulator, payload []byte) <-chan invokeResult {
	ch := make(chan invokeResult, 1)
	go func() {
		res, err := e.Invoke(ctx, payload)
		ch <- invokeResult{res, err}
	}()
	return ch
}

func TestKillMidInvokeThenColdStart(t *testing.T) {
	ctx := testCtx(t)
	out := newMarkerWriter("BLOCKING")
	e := start(t, Options{Stdout: out})
	pid := e.PID()
	done := invokeAsync(ctx, e, event("block"))
	select {
	case <-out.seen:
	case r := <-done:
		t.Fatalf("Invoke returned before the kill: %+v, %v", r.res, r.err)
	case <-ctx.Done():
		t.Fatal("handler never reported it was blocking")
	}
	if err := e.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	r := <-done
	if !errors.Is(r.err, ErrKilled) {
		t.Fatalf("Invoke = %+v, %v; want ErrKilled", r.res, r.err)
	}
	if !processGone(pid) {
		t.Errorf("child %d still exists after Kill", pid)
	}
	if got := e.PID(); got != 0 {
		t.Errorf("PID with no child = %d, want 0", got)
	}
	if err := e.Kill(); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Kill with no child = %v, want os.ErrProcessDone", err)
	}
	mustEcho(t, e, ctx)
	if got := e.PID(); got == pid || got == 0 {
		t.Errorf("PID after cold start = %d, want a new child (old %d)", got, pid)
	}
}

func TestExitMidInvoke(t *testing.T) {
	ctx := testCtx(t)
	e := start(t, Options{})
	mustEcho(t, e, ctx)
	b, _ := json.Marshal(map[string]any{"mode": "exit", "code": 7})
	_, err := e.Invoke(ctx, b)
	if !errors.Is(err, ErrExited) || errors.Is(err, ErrKilled) {
		t.Fatalf("err = %v, want ErrExited only", err)
	}
	if !strings.Contains(err.Error(), "exit status 7") {
		t.Errorf("err = %q, want it to carry the exit status 7", err)
	}
	mustEcho(t, e, ctx)
}

func TestContextCancelKillsChild(t *testing.T) {
	ctx := testCtx(t)
	out := newMarkerWriter("BLOCKING")
	e := start(t, Options{Stdout: out})
	pid := e.PID()
	ictx, cancel := context.WithCancel(ctx)
	done := invokeAsync(ictx, e, event("block"))
	select {
	case <-out.seen:
	case <-ctx.Done():
		t.Fatal("handler never reported it was blocking")
	}
	cancel()
	r := <-done
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", r.err)
	}
	if !processGone(pid) {
		t.Errorf("child %d survived a cancelled invoke", pid)
	}
	mustEcho(t, e, ctx)
}

func TestInitError(t *testing.T) {
	tests := []struct {
		name     string
		init     string
		wantErr  error
		wantFErr *FunctionError
	}{
		{"posts init error", "error", ErrInitFailed, &FunctionError{Type: "InitConfigError", Message: "STATE_TABLE is not set"}},
		{"exits during init", "exit", ErrExited, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			e := start(t, Options{Env: []string{"TEST_HANDLER_INIT=" + tt.init}})
			res, err := e.Invoke(ctx, event("echo"))
			if !errors.Is(err, ErrInitFailed) || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Invoke = %+v, %v; want ErrInitFailed and %v", res, err, tt.wantErr)
			}
			var ferr *FunctionError
			if tt.wantFErr != nil && (!errors.As(err, &ferr) || *ferr != *tt.wantFErr) {
				t.Errorf("function error = %+v, want %+v", ferr, tt.wantFErr)
			}
			// Every invoke retries init in a fresh child, and fails the same way.
			if _, err := e.Invoke(ctx, event("echo")); !errors.Is(err, ErrInitFailed) {
				t.Errorf("second Invoke err = %v, want ErrInitFailed", err)
			}
		})
	}
}

func TestHeadersVisibleToHandler(t *testing.T) {
	ctx := testCtx(t)
	const timeout = 42 * time.Second
	e := start(t, Options{
		FunctionName: "refresher-under-test",
		Timeout:      timeout,
		Env:          []string{"TEST_EXTRA=yes", "AWS_REGION=ap-south-1", "AWS_LAMBDA_RUNTIME_API=example.invalid:1"},
	})
	mustEcho(t, e, ctx) // init outside the measured window
	before := time.Now()
	res, err := e.Invoke(ctx, event("context"))
	after := time.Now()
	if err != nil || res.Err != nil {
		t.Fatalf("Invoke: %v, %v", err, res.Err)
	}
	var got struct {
		RequestID    string            `json:"request_id"`
		FunctionARN  string            `json:"function_arn"`
		DeadlineMS   int64             `json:"deadline_ms"`
		TraceID      string            `json:"trace_id"`
		FunctionName string            `json:"function_name"`
		LogGroup     string            `json:"log_group"`
		Env          map[string]string `json:"env"`
		Cwd          string            `json:"cwd"`
	}
	if err := json.Unmarshal(res.Payload, &got); err != nil {
		t.Fatalf("decode %s: %v", res.Payload, err)
	}
	if got.RequestID != res.RequestID {
		t.Errorf("handler saw request id %q, Result has %q", got.RequestID, res.RequestID)
	}
	// The deadline is rounded up to the millisecond, so the upper bound is one more.
	if lo, hi := before.Add(timeout).UnixMilli(), after.Add(timeout).UnixMilli()+1; got.DeadlineMS < lo || got.DeadlineMS > hi {
		t.Errorf("deadline = %d, want within [%d, %d]", got.DeadlineMS, lo, hi)
	}
	if want := "arn:aws:lambda:ap-south-1:123456789012:function:refresher-under-test"; got.FunctionARN != want {
		t.Errorf("function ARN = %q, want %q", got.FunctionARN, want)
	}
	if !strings.HasPrefix(got.TraceID, "Root=1-") {
		t.Errorf("trace id = %q, want Root=1-…", got.TraceID)
	}
	if got.FunctionName != "refresher-under-test" || got.LogGroup != "/aws/lambda/refresher-under-test" {
		t.Errorf("function name, log group = %q, %q", got.FunctionName, got.LogGroup)
	}
	wantEnv := map[string]string{
		"AWS_REGION":                      "ap-south-1",
		"AWS_DEFAULT_REGION":              "ap-south-1",
		"AWS_LAMBDA_LOG_FORMAT":           "JSON",
		"_HANDLER":                        "bootstrap",
		"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
		"LAMBDA_TASK_ROOT":                filepath.Dir(handlerBin),
		"TEST_EXTRA":                      "yes",
	}
	for k, v := range wantEnv {
		if got.Env[k] != v {
			t.Errorf("env %s = %q, want %q", k, got.Env[k], v)
		}
	}
	if api := got.Env["AWS_LAMBDA_RUNTIME_API"]; !strings.HasPrefix(api, "127.0.0.1:") {
		t.Errorf("AWS_LAMBDA_RUNTIME_API = %q, want the emulator's loopback address (Options.Env must not override it)", api)
	}
	if !strings.Contains(got.Env["AWS_LAMBDA_LOG_STREAM_NAME"], "[$LATEST]") {
		t.Errorf("log stream = %q", got.Env["AWS_LAMBDA_LOG_STREAM_NAME"])
	}
	if got.Cwd != filepath.Dir(handlerBin) {
		t.Errorf("cwd = %q, want the task root %q", got.Cwd, filepath.Dir(handlerBin))
	}
}

func TestDefaultRegion(t *testing.T) {
	ctx := testCtx(t)
	res, err := InvokeOnce(ctx, Options{Binary: handlerBin}, event("context"))
	if err != nil || res.Err != nil {
		t.Fatalf("InvokeOnce: %v, %v", err, res.Err)
	}
	var got struct {
		FunctionARN string            `json:"function_arn"`
		Env         map[string]string `json:"env"`
	}
	if err := json.Unmarshal(res.Payload, &got); err != nil {
		t.Fatal(err)
	}
	if got.Env["AWS_REGION"] != "us-east-1" || !strings.HasSuffix(got.FunctionARN, ":function:token-refresher") {
		t.Errorf("region, arn = %q, %q; want us-east-1 and function token-refresher", got.Env["AWS_REGION"], got.FunctionARN)
	}
}

func TestConcurrentEmulators(t *testing.T) {
	ctx := testCtx(t)
	const n, rounds = 4, 3
	emus := make([]*Emulator, n)
	for i := range emus {
		emus[i] = start(t, Options{FunctionName: "f" + strconv.Itoa(i)})
	}
	var wg sync.WaitGroup
	errs := make(chan error, n*rounds)
	for i, e := range emus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				payload := event("echo", "message", fmt.Sprintf("emu %d round %d", i, r))
				res, err := e.Invoke(ctx, payload)
				switch {
				case err != nil:
					errs <- fmt.Errorf("emu %d: %w", i, err)
				case !bytes.Equal(res.Payload, payload):
					errs <- fmt.Errorf("emu %d got %s, want %s", i, res.Payload, payload)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	pids := map[int]bool{}
	for _, e := range emus {
		pids[e.PID()] = true
	}
	if len(pids) != n {
		t.Errorf("%d distinct children, want %d", len(pids), n)
	}
}

func TestInvokesOnOneEmulatorAreSerialised(t *testing.T) {
	ctx := testCtx(t)
	e := start(t, Options{})
	const n = 5
	results := make([]<-chan invokeResult, n)
	payloads := make([][]byte, n)
	for i := range n {
		payloads[i] = event("echo", "message", strconv.Itoa(i))
		results[i] = invokeAsync(ctx, e, payloads[i])
	}
	for i, ch := range results {
		r := <-ch
		if r.err != nil || !bytes.Equal(r.res.Payload, payloads[i]) {
			t.Errorf("invoke %d = %+v, %v; want %s", i, r.res, r.err, payloads[i])
		}
	}
}

func TestStoppedChildTimesOut(t *testing.T) {
	ctx := testCtx(t)
	e := start(t, Options{Timeout: 300 * time.Millisecond})
	mustEcho(t, e, ctx)
	pid := e.PID()
	if err := e.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP: %v", err)
	}
	_, err := e.Invoke(ctx, event("echo"))
	if !errors.Is(err, ErrTimeout) || errors.Is(err, ErrInitFailed) {
		t.Fatalf("invoke of a stopped warm child: err = %v, want ErrTimeout (not an init failure)", err)
	}
	if !processGone(pid) {
		t.Errorf("stopped child %d survived its timeout", pid)
	}
}

func TestStopContinue(t *testing.T) {
	ctx := testCtx(t)
	e := start(t, Options{})
	mustEcho(t, e, ctx)
	pid := e.PID()
	if err := e.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP: %v", err)
	}
	if err := e.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT: %v", err)
	}
	mustEcho(t, e, ctx)
	if got := e.PID(); got != pid {
		t.Errorf("PID after STOP/CONT = %d, want %d", got, pid)
	}
}

func TestCloseKillsChild(t *testing.T) {
	ctx := testCtx(t)
	e, err := Start(ctx, Options{Binary: handlerBin})
	if err != nil {
		t.Fatal(err)
	}
	mustEcho(t, e, ctx)
	pid := e.PID()
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !processGone(pid) {
		t.Errorf("child %d survived Close", pid)
	}
	if _, err := e.Invoke(ctx, event("echo")); err == nil {
		t.Error("Invoke after Close succeeded, want an error")
	}
}

func TestStartRejectsBadBinary(t *testing.T) {
	notExec := filepath.Join(t.TempDir(), "bootstrap")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{"", filepath.Join(t.TempDir(), "missing"), notExec, t.TempDir()} {
		t.Run(bin, func(t *testing.T) {
			if e, err := Start(context.Background(), Options{Binary: bin}); err == nil {
				e.Close()
				t.Errorf("Start(%q) succeeded, want an error", bin)
			}
		})
	}
}

// TestProtocolRejectsUnknownRequest speaks the Runtime API directly: answers
// for an invocation that is not in flight are refused, as Lambda does.
func TestProtocolRejectsUnknownRequest(t *testing.T) {
	e := start(t, Options{})
	e.mu.Lock()
	addr := e.rt.addr
	e.mu.Unlock()
	for _, path := range []string{"/invocation/bogus/response", "/invocation/bogus/error"} {
		resp, err := http.Post("http://"+addr+apiPrefix+path, "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("POST %s = %d, want 400", path, resp.StatusCode)
		}
	}
}

func TestParseFunctionError(t *testing.T) {
	tests := []struct {
		body, header string
		want         FunctionError
	}{
		{`{"errorMessage":"m","errorType":"T","stackTrace":[]}`, "H", FunctionError{Message: "m", Type: "T"}},
		{`{"errorMessage":"m"}`, "H", FunctionError{Message: "m", Type: "H"}},
		{`not json`, "", FunctionError{Message: "not json", Type: "Unhandled"}},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			if got := parseFunctionError([]byte(tt.body), tt.header); *got != tt.want {
				t.Errorf("got %+v, want %+v", *got, tt.want)
			}
		})
	}
}
