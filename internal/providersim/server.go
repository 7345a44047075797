// Package providersim holds httptest simulators of the seed token providers
// (Sahamati entity tokens, vault.ist, a rotating-refresh-token OAuth 2.0 provider
// and a client_credentials provider). They enforce what the seed documents say —
// single use, reuse grace, daily limits, lifetimes, error bodies — and add fault
// knobs (latency, injected failures, dropped responses) and an audit of what they
// saw and issued. Everything is safe for concurrent use.
package providersim

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
)

// maxBody bounds what a simulator reads from a request.
const maxBody = 1 << 20

// response is what a simulator's handler decided; the common server writes it,
// or withholds it for DropNextResponse.
type response struct {
	status int
	header http.Header
	body   []byte
}

// server is the part every simulator shares: the httptest server, routing of
// the one token path, fault knobs and the audit.
type server struct {
	srv       *httptest.Server
	path      string
	now       func() time.Time
	closed    chan struct{}
	closeOnce sync.Once

	// work does the simulator's work and returns its answer.
	work func(r *http.Request) response
	// errorShape builds an error answer in the simulator's own shape, for
	// injected failures and for wrong paths and methods.
	errorShape func(status int) response
	// routes are endpoints besides the token path (the rotating provider's
	// /authorize); fault knobs apply to the token path only.
	routes map[string]http.HandlerFunc

	mu         sync.Mutex
	latency    time.Duration
	retryAfter time.Duration
	injected   []func() response
	dropNext   bool
	hook       func()
	requests   int
	counts     map[int]int
	issued     []string
}

func (s *server) start(path string, now func() time.Time, work func(*http.Request) response, errorShape func(int) response) {
	s.path = path
	s.now = nowFunc(now)
	s.work = work
	s.errorShape = errorShape
	s.closed = make(chan struct{})
	s.counts = make(map[int]int)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
}

func nowFunc(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}

// URL returns the full token-endpoint URL.
func (s *server) URL() string { return s.srv.URL + s.path }

// Close shuts the server down; a response still waiting out SetLatency is
// abandoned (its connection is closed) so Close never hangs on it. Safe to call twice.
func (s *server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
	s.srv.Close()
}

// SetLatency delays every later response by d (0 turns it off). The wait happens
// before any work: a client that gives up during it, or Close, abandons the
// request with no state change, counted under status 0.
func (s *server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// SetRetryAfter makes every later 429 and 503 answer carry Retry-After with d in
// whole seconds (0, the default, sends none, as the seeds document none).
func (s *server) SetRetryAfter(d time.Duration) {
	s.mu.Lock()
	s.retryAfter = d
	s.mu.Unlock()
}

// FailNext makes the next n token requests answer status with a plausible body
// in the simulator's shape (HTML from a gateway for 502 and 504), before any
// state change: nothing is consumed, counted against a quota or issued.
func (s *server) FailNext(n int, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.injected = append(s.injected, func() response { return s.errorShape(status) })
	}
}

// RespondNext makes the next token request answer exactly status, header and
// body, before any state change — for malformed, oversized or odd answers.
func (s *server) RespondNext(status int, header http.Header, body []byte) {
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	b := append([]byte(nil), body...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.injected = append(s.injected, func() response { return response{status: status, header: h.Clone(), body: b} })
}

// DropNextResponse makes the next token request do its work (rotation
// committed, quota counted, tokens issued) and then close the connection
// without a response, counted under status 0.
func (s *server) DropNextResponse() {
	s.mu.Lock()
	s.dropNext = true
	s.mu.Unlock()
}

// OnRequest installs f (nil removes it), called when any request arrives,
// before latency and work. It runs on the request's goroutine with no lock held;
// a hook that blocks forever blocks Close.
func (s *server) OnRequest(f func()) {
	s.mu.Lock()
	s.hook = f
	s.mu.Unlock()
}

// Requests returns how many requests arrived, whatever their outcome.
func (s *server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Count returns how many responses were sent with status; 0 counts dropped and
// abandoned requests, which got no response.
func (s *server) Count(status int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[status]
}

// Counts returns a copy of the responses-by-status audit.
func (s *server) Counts() map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.counts)
}

// Issued returns every access and refresh token value the simulator ever
// issued (seeded ones included), oldest first, for log-leak scans.
func (s *server) Issued() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// newToken returns a random, URL-safe token with prefix and records it.
func (s *server) newToken(prefix string) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it aborts the program instead)
	t := prefix + base64.RawURLEncoding.EncodeToString(b)
	s.mu.Lock()
	s.issued = append(s.issued, t)
	s.mu.Unlock()
	return t
}

func (s *server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	hook, latency := s.hook, s.latency
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	if latency > 0 && !s.wait(r.Context(), latency) {
		s.abandon(w, r)
		return
	}
	if h := s.routes[r.URL.Path]; h != nil {
		h(w, r)
		return
	}
	if r.URL.Path != s.path {
		s.write(w, s.errorShape(http.StatusNotFound))
		return
	}
	if r.Method != http.MethodPost {
		resp := s.errorShape(http.StatusMethodNotAllowed)
		resp.header.Set("Allow", http.MethodPost)
		s.write(w, resp)
		return
	}

	// Claimed at this point, so "next" means the next request to get here.
	s.mu.Lock()
	var inject func() response
	if len(s.injected) > 0 {
		inject = s.injected[0]
		s.injected = s.injected[1:]
	}
	drop := false
	if inject == nil {
		drop, s.dropNext = s.dropNext, false
	}
	s.mu.Unlock()
	if inject != nil {
		s.write(w, inject())
		return
	}

	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	resp := s.work(r)
	if drop {
		s.abandon(w, r)
		return
	}
	s.write(w, resp)
}

// wait waits out d unless the client goes away or the server closes.
func (s *server) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.closed:
		return false
	}
}

// abandon closes the connection without a response. Returning from a handler
// without writing would send an empty 200, so the connection is hijacked.
func (s *server) abandon(w http.ResponseWriter, r *http.Request) {
	s.record(0)
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxBody))
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Unreachable with httptest's HTTP/1.1 server. ErrAbortHandler is
		// net/http's documented way to end a response unsent; it is not a crash.
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

func (s *server) write(w http.ResponseWriter, resp response) {
	s.mu.Lock()
	retryAfter := s.retryAfter
	s.mu.Unlock()
	h := w.Header()
	for k, v := range resp.header {
		h[k] = v
	}
	if retryAfter > 0 && (resp.status == http.StatusTooManyRequests || resp.status == http.StatusServiceUnavailable) {
		h.Set("Retry-After", strconv.FormatInt(int64((retryAfter+time.Second-1)/time.Second), 10))
	}
	h.Set("Content-Length", strconv.Itoa(len(resp.body)))
	s.record(resp.status)
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
}

func (s *server) record(status int) {
	s.mu.Lock()
	s.counts[status]++
	s.mu.Unlock()
}

// mediaType returns the request's media type without parameters, "" if absent or unparsable.
func mediaType(r *http.Request) string {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}

// gatewayError is what a load balancer in front of a provider answers for 502
// and 504: HTML, not the provider's JSON.
func gatewayError(status int) (response, bool) {
	if status != http.StatusBadGateway && status != http.StatusGatewayTimeout {
		return response{}, false
	}
	text := fmt.Sprintf("%d %s", status, http.StatusText(status))
	body := fmt.Sprintf("<html>\r\n<head><title>%s</title></head>\r\n<body>\r\n<center><h1>%s</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n", text, text)
	return response{
		status: status,
		header: http.Header{"Content-Type": {"text/html"}},
		body:   []byte(body),
	}, true
}
