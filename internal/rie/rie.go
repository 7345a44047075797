package rie

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
)

// InvokePath is the Lambda Invoke API path the emulator serves; the function is always
// named "function", so the SDK's Invoke with FunctionName "function" and
// AWS_ENDPOINT_URL_LAMBDA=<URL> reaches it.
const InvokePath = "/2015-03-31/functions/function/invocations"

// FunctionName is the only function name the emulator's Invoke path accepts.
const FunctionName = "function"

// ErrTimeout means the function did not answer within its timeout; the emulator killed it
// and the next invocation starts a fresh one, as Lambda does.
var ErrTimeout = errors.New("rie: task timed out")

const (
	defaultTimeout = 300 * time.Second // the template's Timeout
	startTimeout   = 15 * time.Second
	stopGrace      = 3 * time.Second
)

// Options configures an Emulator.
type Options struct {
	RIE       string // path to aws-lambda-rie; empty means Path(ctx)
	Bootstrap string // path to the function's bootstrap
	// Env is the function's environment. The emulator passes its own environment to the
	// function, so this is also all the emulator sees: nothing is inherited from this
	// process but PATH and HOME, so a developer's AWS profile cannot reach a local run.
	Env []string
	// Timeout is the function timeout, in whole seconds (rounded up); default 300 s.
	Timeout time.Duration
	// Addr is the invoke listener, default 127.0.0.1 on a free port.
	Addr string
	// Stdout receives the function's output (its logs and metrics) and the emulator's
	// START/END/REPORT lines; Stderr the emulator's own log. Both default to discarded.
	Stdout, Stderr io.Writer
	// LogLevel of the emulator's own log (LOG_LEVEL); default "warn".
	LogLevel string
}

// Emulator is a running aws-lambda-rie with one function.
type Emulator struct {
	URL string // http://127.0.0.1:PORT; POST InvokePath to invoke

	cmd     *exec.Cmd
	client  *http.Client
	done    chan struct{}
	waitErr error
	timeout time.Duration

	closeOnce sync.Once
}

// Result is an invocation the function answered.
type Result struct {
	Status   int
	Payload  []byte         // the response, when Err is nil
	Err      *FunctionError // the function returned an error, panicked or exited
	Duration time.Duration  // wall time of the HTTP call, including a cold start
}

// FunctionError is the {errorMessage, errorType} document of a failed invocation.
type FunctionError = invocation.FunctionError

// Start runs the emulator with the bootstrap and waits until its invoke API answers. ctx
// bounds only the start-up; the emulator runs until Close. The function itself starts on
// the first invocation, as on Lambda.
func Start(ctx context.Context, o Options) (*Emulator, error) {
	if o.Bootstrap == "" {
		return nil, errors.New("rie: start: Options.Bootstrap is empty")
	}
	boot, err := filepath.Abs(o.Bootstrap)
	if err != nil {
		return nil, fmt.Errorf("rie: start: %w", err)
	}
	if fi, err := os.Stat(boot); err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("rie: start: %s is not an executable file", boot)
	}
	if o.RIE == "" {
		if o.RIE, err = Path(ctx); err != nil {
			return nil, err
		}
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	secs := int64((o.Timeout + time.Second - 1) / time.Second)
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()

	var lastErr error
	for range 3 {
		addr := o.Addr
		if addr == "" {
			if addr, err = freeAddr(); err != nil {
				return nil, fmt.Errorf("rie: start: %w", err)
			}
		}
		api, err := freeAddr()
		if err != nil {
			return nil, fmt.Errorf("rie: start: %w", err)
		}
		e, err := start(ctx, o, boot, addr, api, secs)
		if err == nil {
			return e, nil
		}
		lastErr = err
		// A free port can be taken before the emulator binds it; try others unless fixed.
		if o.Addr != "" || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func start(ctx context.Context, o Options, boot, addr, api string, timeoutSecs int64) (*Emulator, error) {
	// The emulator runs "bootstrap" from its working directory, like /var/task.
	cmd := exec.Command(o.RIE,
		"--runtime-interface-emulator-address", addr,
		"--runtime-api-address", api,
		"--log-level", o.LogLevel,
		boot)
	cmd.Dir = filepath.Dir(boot)
	cmd.Env = environ(o.Env, timeoutSecs)
	cmd.Stdout = orDiscard(o.Stdout)
	cmd.Stderr = orDiscard(o.Stderr)
	cmd.SysProcAttr = procAttr()
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("rie: start %s: %w", o.RIE, err)
	}
	e := &Emulator{
		URL:     "http://" + addr,
		cmd:     cmd,
		client:  &http.Client{},
		done:    make(chan struct{}),
		timeout: time.Duration(timeoutSecs) * time.Second,
	}
	go func() {
		e.waitErr = cmd.Wait()
		close(e.done)
	}()
	if err := e.waitReady(ctx); err != nil {
		_ = e.Close()
		return nil, err
	}
	return e, nil
}

// environ is the emulator's (and so the function's) whole environment: PATH and HOME from
// this process, Lambda's settings, then env, whose later entries win.
func environ(env []string, timeoutSecs int64) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	base := []string{
		"PATH=" + path,
		"HOME=" + os.Getenv("HOME"),
		"TZ=:UTC",
		"AWS_LAMBDA_FUNCTION_NAME=" + FunctionName,
		"AWS_EXECUTION_ENV=AWS_Lambda_provided.al2023",
		"_HANDLER=bootstrap",
	}
	out := append(base, env...)
	return append(out, "AWS_LAMBDA_FUNCTION_TIMEOUT="+strconv.FormatInt(timeoutSecs, 10))
}

// waitReady polls until the invoke listener answers. GET / is a 404 from the emulator's
// router and never starts an invocation (the invoke path accepts any method).
func (e *Emulator) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+"/", nil)
		if err != nil {
			return fmt.Errorf("rie: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			return nil
		}
		select {
		case <-e.done:
			return fmt.Errorf("rie: aws-lambda-rie exited during start-up: %v", e.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("rie: aws-lambda-rie did not answer on %s within %s: %w", e.URL, startTimeout, ctx.Err())
		case <-tick.C:
		}
	}
}

// InvokeURL is the URL to POST an event to.
func (e *Emulator) InvokeURL() string { return e.URL + InvokePath }

// Invoke posts one event and waits for the answer. A function error is a Result with Err
// set; a timeout is ErrTimeout.
func (e *Emulator) Invoke(ctx context.Context, payload []byte) (*Result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.InvokeURL(), bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("rie: invoke: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	started := time.Now()
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("rie: invoke: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 7<<20))
	if err != nil {
		return nil, fmt.Errorf("rie: invoke: read answer: %w", err)
	}
	res := &Result{Status: resp.StatusCode, Payload: body, Duration: time.Since(started)}
	// The emulator answers a timeout with 200 and this text, not with an error document.
	if bytes.HasPrefix(body, []byte("Task timed out after ")) {
		return nil, fmt.Errorf("%w: %s", ErrTimeout, body)
	}
	if ferr := functionError(body); ferr != nil {
		res.Err, res.Payload = ferr, nil
		return res, nil
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("rie: invoke: HTTP %d: %s", resp.StatusCode, tail(string(body), 500))
	}
	return res, nil
}

// functionError recognises the error document: a JSON object with errorType and only the
// keys of an error (a report or any other answer has other keys).
func functionError(body []byte) *FunctionError {
	var doc map[string]json.RawMessage
	if json.Unmarshal(body, &doc) != nil {
		return nil
	}
	if _, ok := doc["errorType"]; !ok {
		return nil
	}
	for k := range doc {
		switch k {
		case "errorType", "errorMessage", "stackTrace":
		default:
			return nil
		}
	}
	var ferr FunctionError
	if json.Unmarshal(body, &ferr) != nil {
		return nil
	}
	return &ferr
}

// Timeout is the function timeout the emulator enforces.
func (e *Emulator) Timeout() time.Duration { return e.timeout }

// RuntimePIDs lists the processes the emulator started (the running bootstrap), for tests
// that need to freeze or inspect the function.
func (e *Emulator) RuntimePIDs() []int { return children(e.cmd.Process.Pid) }

// Close stops the emulator: SIGTERM, on which it kills the function and exits. If it is
// still running after a grace period, SIGKILL to the process groups of its children (each
// runtime runs in its own) and then to its own — children are looked up while it is alive,
// so their pids cannot have been reused. It waits until the emulator is reaped.
func (e *Emulator) Close() error {
	e.closeOnce.Do(func() {
		pid := e.cmd.Process.Pid
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-e.done:
		case <-time.After(stopGrace):
			for _, k := range children(pid) {
				_ = syscall.Kill(-k, syscall.SIGKILL)
			}
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-e.done
		}
	})
	return nil
}

// Done is closed when the emulator has exited.
func (e *Emulator) Done() <-chan struct{} { return e.done }

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// children returns the pids whose parent is pid, from /proc (Linux; elsewhere none).
func children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}
