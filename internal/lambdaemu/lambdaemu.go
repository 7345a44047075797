// Package lambdaemu runs a real Lambda bootstrap binary the way the Lambda
// service (and `sam local invoke`) does: as a child process that pulls events
// from the Lambda Runtime API, which this package serves on a loopback port.
//
// Each child gets its own listener, so a dying child can never take an event
// meant for its successor.
package lambdaemu

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
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

	"github.com/google/uuid"
)

// Sentinels for how an invocation ended when the function gave no answer.
var (
	ErrTimeout    = errors.New("lambdaemu: task timed out")
	ErrKilled     = errors.New("lambdaemu: runtime killed by a signal")
	ErrInitFailed = errors.New("lambdaemu: init failed")
	ErrExited     = errors.New("lambdaemu: runtime exited")
)

const (
	apiPrefix = "/2018-06-01/runtime"

	headerRequestID   = "Lambda-Runtime-Aws-Request-Id"
	headerDeadlineMS  = "Lambda-Runtime-Deadline-Ms"
	headerFunctionARN = "Lambda-Runtime-Invoked-Function-Arn"
	headerTraceID     = "Lambda-Runtime-Trace-Id"
	headerErrorType   = "Lambda-Runtime-Function-Error-Type"
	trailerErrorBody  = "Lambda-Runtime-Function-Error-Body"

	// maxPayload is Lambda's synchronous response limit.
	maxPayload = 6 << 20
	// initTimeout is Lambda's limit for the init phase of an on-demand function.
	initTimeout = 10 * time.Second

	defaultFunctionName = "token-refresher"
	defaultTimeout      = 60 * time.Second
	defaultRegion       = "us-east-1"
	accountID           = "123456789012"
)

// Options configures an Emulator.
type Options struct {
	Binary       string        // path to a bootstrap
	Env          []string      // extra environment for the child, on top of a minimal Lambda-like base
	FunctionName string        // default "token-refresher"
	Timeout      time.Duration // per invocation; sets the deadline header; default 60s
	Stdout       io.Writer     // child's stdout (its logs); default discarded
	Stderr       io.Writer     // child's stderr; default discarded
}

// Result is the outcome of an invocation that the function answered.
type Result struct {
	RequestID string
	Payload   []byte         // the response, when Err is nil
	Err       *FunctionError // the function's error (POST …/error)
	Duration  time.Duration  // from delivery of the event to the answer; excludes init
}

// FunctionError is an error the function reported through the Runtime API.
type FunctionError struct {
	Message, Type string
}

func (e *FunctionError) Error() string {
	return e.Type + ": " + e.Message
}

// Emulator serves the Runtime API to one bootstrap child at a time and
// replaces the child when it dies, like a Lambda execution environment.
type Emulator struct {
	o      Options
	region string
	arn    string
	sem    chan struct{} // one invocation at a time

	mu     sync.Mutex
	rt     *runtime // current child; nil or dead means the next Invoke cold-starts
	closed bool
}

// Start validates the options, starts the first child and returns without
// waiting for its init; init problems surface on the first Invoke. ctx is
// only checked: the emulator runs until Close.
func Start(ctx context.Context, o Options) (*Emulator, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lambdaemu: start: %w", err)
	}
	if o.Binary == "" {
		return nil, errors.New("lambdaemu: start: Options.Binary is empty")
	}
	bin, err := filepath.Abs(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("lambdaemu: start: %w", err)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		return nil, fmt.Errorf("lambdaemu: start: %w", err)
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("lambdaemu: start: %s is not an executable file", bin)
	}
	o.Binary = bin
	if o.FunctionName == "" {
		o.FunctionName = defaultFunctionName
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	e := &Emulator{o: o, region: defaultRegion, sem: make(chan struct{}, 1)}
	if r := lookupEnv(o.Env, "AWS_REGION"); r != "" {
		e.region = r
	}
	e.arn = "arn:aws:lambda:" + e.region + ":" + accountID + ":function:" + o.FunctionName
	rt, err := e.spawn()
	if err != nil {
		return nil, err
	}
	e.rt = rt
	return e, nil
}

// InvokeOnce starts an emulator, invokes it once and closes it.
func InvokeOnce(ctx context.Context, o Options, payload []byte) (*Result, error) {
	e, err := Start(ctx, o)
	if err != nil {
		return nil, err
	}
	defer e.Close()
	return e.Invoke(ctx, payload)
}

// Invoke delivers one event and waits for the function's answer. A function
// error is a Result with Err set and a nil error. A timeout kills the child
// (ErrTimeout); a child that dies mid-invocation gives ErrKilled or ErrExited;
// a child that fails before asking for its first event gives ErrInitFailed.
// The next Invoke after a dead child starts a fresh one (a cold start).
// Cancelling ctx after delivery kills the child, since the event cannot be
// taken back.
func (e *Emulator) Invoke(ctx context.Context, payload []byte) (*Result, error) {
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("lambdaemu: invoke: %w", ctx.Err())
	}
	defer func() { <-e.sem }()

	inv := &invocation{
		id:      uuid.NewString(),
		payload: payload,
		traceID: newTraceID(),
		started: make(chan struct{}),
		out:     make(chan outcome, 1),
	}
	var rt *runtime
	for {
		var err error
		if rt, err = e.live(); err != nil {
			return nil, err
		}
		retry, err := e.deliver(ctx, rt, inv)
		if err != nil {
			return nil, err
		}
		if !retry {
			break
		}
	}

	timer := time.NewTimer(time.Until(inv.deadline))
	defer timer.Stop()
	done := rt.done
	for {
		select {
		case o := <-inv.out:
			if o.err != nil {
				// Every error outcome ends the child; report only once it is gone.
				<-rt.done
				return nil, o.err
			}
			return &Result{RequestID: inv.id, Payload: o.payload, Err: o.ferr, Duration: o.at.Sub(inv.deliveredAt)}, nil
		case <-done:
			done = nil
			inv.finish(outcome{err: rt.deathError(inv.id)})
		case <-timer.C:
			rt.timeout(inv)
		case <-ctx.Done():
			if inv.finish(outcome{err: fmt.Errorf("lambdaemu: invoke %s: %w", inv.id, ctx.Err())}) {
				rt.kill()
			}
		}
	}
}

// deliver hands inv to rt's next GET …/next. retry means rt was a warm child
// that died between invocations, so a fresh one should take the event.
//
// A cold child has initTimeout to ask for its first event and the invocation's
// clock starts at delivery. For a warm child the clock starts now, as in
// Lambda, so a child that never comes back for the event (stopped, wedged after
// its last answer) times out like one that never answers.
func (e *Emulator) deliver(ctx context.Context, rt *runtime, inv *invocation) (retry bool, err error) {
	warm := rt.servedAny()
	limit := initTimeout
	inv.deadline = time.Time{}
	if warm {
		inv.deadline = deadlineAfter(time.Now(), e.o.Timeout)
		limit = time.Until(inv.deadline)
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case rt.next <- inv:
		<-inv.started
		return false, nil
	case <-rt.done:
		if warm {
			return true, nil
		}
		if ferr := rt.initError(); ferr != nil {
			return false, fmt.Errorf("%w: %w", ErrInitFailed, ferr)
		}
		return false, fmt.Errorf("%w before its first event: %w", ErrInitFailed, rt.deathError(""))
	case <-rt.initFailed:
		_ = rt.kill()
		<-rt.done
		return false, fmt.Errorf("%w: %w", ErrInitFailed, rt.initError())
	case <-timer.C:
		_ = rt.kill()
		<-rt.done
		if warm {
			return false, fmt.Errorf("%w: invocation %s: the runtime did not ask for it within %s", ErrTimeout, inv.id, e.o.Timeout)
		}
		return false, fmt.Errorf("%w: %w: no request for an event within %s", ErrInitFailed, ErrTimeout, initTimeout)
	case <-ctx.Done():
		return false, fmt.Errorf("lambdaemu: invoke: %w", ctx.Err())
	}
}

// live returns the current child, starting a fresh one if it is dead.
func (e *Emulator) live() (*runtime, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("lambdaemu: invoke: %w", net.ErrClosed)
	}
	if e.rt != nil && !e.rt.exited() {
		return e.rt, nil
	}
	rt, err := e.spawn()
	if err != nil {
		return nil, err
	}
	e.rt = rt
	return rt, nil
}

// current returns the child if it is still running.
func (e *Emulator) current() *runtime {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rt == nil || e.rt.exited() {
		return nil
	}
	return e.rt
}

// Kill sends SIGKILL to the child now and waits until it is gone. It returns
// an error wrapping os.ErrProcessDone when no child is running.
func (e *Emulator) Kill() error {
	rt := e.current()
	if rt == nil {
		return fmt.Errorf("lambdaemu: kill: %w", os.ErrProcessDone)
	}
	if err := rt.kill(); err != nil {
		return fmt.Errorf("lambdaemu: kill: %w", err)
	}
	<-rt.done
	return nil
}

// Signal sends sig to the child's process group (e.g. SIGSTOP/SIGCONT to
// pause a lease holder). For SIGSTOP it returns once the child is stopped.
func (e *Emulator) Signal(sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return fmt.Errorf("lambdaemu: signal %v: not a syscall.Signal", sig)
	}
	if s == syscall.SIGKILL {
		return e.Kill()
	}
	rt := e.current()
	if rt == nil {
		return fmt.Errorf("lambdaemu: signal %v: %w", sig, os.ErrProcessDone)
	}
	if err := syscall.Kill(-rt.pid, s); err != nil {
		return fmt.Errorf("lambdaemu: signal %v: %w", sig, err)
	}
	if s == syscall.SIGSTOP {
		// Callers pause a child to act while it cannot: it must be paused on return.
		if err := waitStopped(rt.pid, 5*time.Second); err != nil {
			return fmt.Errorf("lambdaemu: signal %v: %w", sig, err)
		}
	}
	return nil
}

// PID returns the running child's process id, or 0 if none is running.
func (e *Emulator) PID() int {
	if rt := e.current(); rt != nil {
		return rt.pid
	}
	return 0
}

// Close kills the child and stops its Runtime API server. Invocations in
// progress end with ErrKilled.
func (e *Emulator) Close() error {
	e.mu.Lock()
	e.closed = true
	rt := e.rt
	e.mu.Unlock()
	if rt == nil {
		return nil
	}
	_ = rt.kill()
	<-rt.done
	return nil
}

// spawn starts a child with its own Runtime API listener.
func (e *Emulator) spawn() (*runtime, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("lambdaemu: listen: %w", err)
	}
	rt := &runtime{
		e:          e,
		next:       make(chan *invocation),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		initFailed: make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+apiPrefix+"/invocation/next", rt.handleNext)
	mux.HandleFunc("POST "+apiPrefix+"/invocation/{id}/response", rt.handleResponse)
	mux.HandleFunc("POST "+apiPrefix+"/invocation/{id}/error", rt.handleError)
	mux.HandleFunc("POST "+apiPrefix+"/init/error", rt.handleInitError)
	rt.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	rt.addr = ln.Addr().String()

	cmd := exec.Command(e.o.Binary)
	cmd.Dir = filepath.Dir(e.o.Binary)
	cmd.Env = e.childEnv(rt.addr)
	cmd.Stdout = e.o.Stdout
	cmd.Stderr = e.o.Stderr
	cmd.SysProcAttr = procAttr()
	// Output copying must not outlive the child by much if it leaked a pipe to a grandchild.
	cmd.WaitDelay = time.Second

	go func() { _ = rt.srv.Serve(ln) }()
	if err := cmd.Start(); err != nil {
		_ = rt.srv.Close()
		return nil, fmt.Errorf("lambdaemu: start %s: %w", e.o.Binary, err)
	}
	rt.pid = cmd.Process.Pid
	go func() {
		_ = cmd.Wait()
		rt.state = cmd.ProcessState
		close(rt.stop)
		_ = rt.srv.Close()
		close(rt.done)
	}()
	return rt, nil
}

// childEnv is a minimal Lambda-like environment; Options.Env overrides it,
// except for the Runtime API address.
func (e *Emulator) childEnv(addr string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	var stream [16]byte
	_, _ = rand.Read(stream[:])
	env := []string{
		"PATH=" + path,
		"HOME=" + os.Getenv("HOME"),
		"TZ=:UTC",
		"AWS_REGION=" + e.region,
		"AWS_DEFAULT_REGION=" + e.region,
		"AWS_EXECUTION_ENV=AWS_Lambda_provided.al2023",
		"AWS_LAMBDA_FUNCTION_NAME=" + e.o.FunctionName,
		"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
		"AWS_LAMBDA_LOG_FORMAT=JSON",
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/" + e.o.FunctionName,
		"AWS_LAMBDA_LOG_STREAM_NAME=" + time.Now().UTC().Format("2006/01/02") + "/[$LATEST]" + hex.EncodeToString(stream[:]),
		"_HANDLER=bootstrap",
		"LAMBDA_TASK_ROOT=" + filepath.Dir(e.o.Binary),
	}
	env = append(env, e.o.Env...)
	// exec keeps the last value of a duplicated key.
	return append(env, "AWS_LAMBDA_RUNTIME_API="+addr)
}

// runtime is one child process and the Runtime API server it talks to.
type runtime struct {
	e    *Emulator
	srv  *http.Server
	addr string
	pid  int
	next chan *invocation // hands an event to a waiting GET …/next
	stop chan struct{}    // closed when the child has exited
	done chan struct{}    // closed after stop and the server is closed
	// state is set before done is closed.
	state *os.ProcessState

	initFailed chan struct{} // closed on POST …/init/error

	mu      sync.Mutex
	cur     *invocation // delivered and not yet answered
	served  int
	initErr *FunctionError
}

func (rt *runtime) exited() bool {
	select {
	case <-rt.done:
		return true
	default:
		return false
	}
}

func (rt *runtime) servedAny() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.served > 0
}

func (rt *runtime) initError() *FunctionError {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.initErr
}

// kill sends SIGKILL to the child's process group.
func (rt *runtime) kill() error {
	err := syscall.Kill(-rt.pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil // already gone; Wait will report how
	}
	return err
}

// timeout ends inv as timed out and kills the child, unless it was already answered.
func (rt *runtime) timeout(inv *invocation) {
	err := fmt.Errorf("%w: invocation %s after %s", ErrTimeout, inv.id, rt.e.o.Timeout)
	if inv.finish(outcome{err: err}) {
		_ = rt.kill()
	}
}

// deathError describes how the child ended; only valid after done.
func (rt *runtime) deathError(requestID string) error {
	where := ""
	if requestID != "" {
		where = " during invocation " + requestID
	}
	if rt.state == nil {
		return fmt.Errorf("%w%s", ErrExited, where)
	}
	if ws, ok := rt.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Errorf("%w%s: %v", ErrKilled, where, ws.Signal())
	}
	return fmt.Errorf("%w%s: exit status %d", ErrExited, where, rt.state.ExitCode())
}

func (rt *runtime) handleNext(w http.ResponseWriter, r *http.Request) {
	select {
	case inv := <-rt.next:
		now := time.Now()
		// The header has millisecond precision; keep exactly the instant the
		// function sees so a ctx-aware handler's answer at its deadline counts as late.
		if inv.deadline.IsZero() {
			inv.deadline = deadlineAfter(now, rt.e.o.Timeout)
		}
		deadlineMS := inv.deadline.UnixMilli()
		inv.deliveredAt = now
		rt.mu.Lock()
		rt.cur = inv
		rt.served++
		rt.mu.Unlock()
		close(inv.started)

		h := w.Header()
		h.Set(headerRequestID, inv.id)
		h.Set(headerDeadlineMS, strconv.FormatInt(deadlineMS, 10))
		h.Set(headerFunctionARN, rt.e.arn)
		h.Set(headerTraceID, inv.traceID)
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(inv.payload)
	case <-r.Context().Done():
	case <-rt.stop:
	}
}

// answered returns the in-flight invocation with id and forgets it, or nil.
func (rt *runtime) answered(id string) *invocation {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.cur == nil || rt.cur.id != id {
		return nil
	}
	inv := rt.cur
	rt.cur = nil
	return inv
}

func (rt *runtime) handleResponse(w http.ResponseWriter, r *http.Request) {
	inv := rt.answered(r.PathValue("id"))
	if inv == nil {
		writeAPIError(w, http.StatusBadRequest, "InvalidRequestID", "no invocation in progress with id "+r.PathValue("id"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPayload))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		inv.finish(outcome{ferr: &FunctionError{Type: "Function.ResponseSizeTooLarge", Message: fmt.Sprintf("response payload exceeds %d bytes", maxPayload)}, at: time.Now()})
		writeAPIError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "payload too large")
		return
	case err != nil:
		// The child went away mid-body; its exit decides the outcome.
		return
	}
	now := time.Now()
	if !now.Before(inv.deadline) {
		rt.timeout(inv)
		writeAPIError(w, http.StatusForbidden, "InvalidStateTransition", "invocation timed out")
		return
	}
	// aws-lambda-go reports a failure while streaming a response in trailers.
	if typ := r.Trailer.Get(headerErrorType); typ != "" {
		ferr := &FunctionError{Type: typ}
		if b, err := base64.StdEncoding.DecodeString(r.Trailer.Get(trailerErrorBody)); err == nil {
			ferr = parseFunctionError(b, typ)
		}
		inv.finish(outcome{ferr: ferr, at: now})
	} else {
		inv.finish(outcome{payload: body, at: now})
	}
	// The outcome is recorded before the 202, so a child that exits right after
	// answering cannot turn its answer into ErrExited.
	w.WriteHeader(http.StatusAccepted)
}

func (rt *runtime) handleError(w http.ResponseWriter, r *http.Request) {
	inv := rt.answered(r.PathValue("id"))
	if inv == nil {
		writeAPIError(w, http.StatusBadRequest, "InvalidRequestID", "no invocation in progress with id "+r.PathValue("id"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPayload))
	if err != nil {
		return
	}
	now := time.Now()
	if !now.Before(inv.deadline) {
		rt.timeout(inv)
		writeAPIError(w, http.StatusForbidden, "InvalidStateTransition", "invocation timed out")
		return
	}
	inv.finish(outcome{ferr: parseFunctionError(body, r.Header.Get(headerErrorType)), at: now})
	w.WriteHeader(http.StatusAccepted)
}

func (rt *runtime) handleInitError(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPayload))
	if err != nil {
		return
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.served > 0 || rt.initErr != nil {
		writeAPIError(w, http.StatusForbidden, "InvalidStateTransition", "init already finished")
		return
	}
	rt.initErr = parseFunctionError(body, r.Header.Get(headerErrorType))
	close(rt.initFailed)
	w.WriteHeader(http.StatusAccepted)
}

// parseFunctionError reads {errorMessage, errorType, stackTrace}; a body that
// is not that JSON becomes the message.
func parseFunctionError(body []byte, headerType string) *FunctionError {
	var doc struct {
		Message string `json:"errorMessage"`
		Type    string `json:"errorType"`
	}
	ferr := &FunctionError{Type: headerType}
	if err := json.Unmarshal(body, &doc); err == nil && (doc.Message != "" || doc.Type != "") {
		ferr.Message = doc.Message
		if doc.Type != "" {
			ferr.Type = doc.Type
		}
	} else {
		ferr.Message = strings.TrimSpace(string(body))
	}
	if ferr.Type == "" {
		ferr.Type = "Unhandled"
	}
	return ferr
}

func writeAPIError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"errorType": typ, "errorMessage": msg})
}

// invocation is one event on its way through a child.
type invocation struct {
	id      string
	payload []byte
	traceID string
	started chan struct{} // closed by handleNext after setting deadline and deliveredAt
	// Set by deliver before the hand-off (warm child) or by handleNext (cold
	// child), always before started is closed.
	deadline    time.Time
	deliveredAt time.Time

	mu       sync.Mutex
	finished bool
	out      chan outcome // receives exactly one outcome
}

type outcome struct {
	payload []byte
	ferr    *FunctionError
	err     error // the function gave no answer (timeout, death, cancellation)
	at      time.Time
}

// finish records o if nothing else ended the invocation first; the first
// outcome wins, so a timeout and a late answer cannot both be reported.
func (inv *invocation) finish(o outcome) bool {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.finished {
		return false
	}
	inv.finished = true
	inv.out <- o
	return true
}

// newTraceID builds an X-Ray trace header value the way Lambda formats it.
func newTraceID() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("Root=1-%08x-%s;Parent=%s;Sampled=0",
		time.Now().Unix(), hex.EncodeToString(b[:12]), hex.EncodeToString(b[12:20]))
}

func lookupEnv(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// deadlineAfter is now+timeout rounded up to the millisecond the deadline header
// carries. Rounding down would end an invocation up to 1 ms before its timeout.
func deadlineAfter(now time.Time, timeout time.Duration) time.Time {
	d := now.Add(timeout)
	ms := time.UnixMilli(d.UnixMilli())
	if ms.Before(d) {
		ms = ms.Add(time.Millisecond)
	}
	return ms
}
