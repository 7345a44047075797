// Package faultproxy is an HTTP proxy that sits between the AWS SDK and moto
// and injects the faults a real AWS endpoint and network produce: latency,
// error answers, requests lost before they arrive and answers lost after the
// request was applied — and plays Secrets Manager's shared write quota
// (LimitWrites). It is test support; it never logs and never records a
// request or response body, because those hold secrets.
package faultproxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// maxBody bounds what the proxy buffers per request; DynamoDB's largest
// request (a 16 MB batch) fits.
const maxBody = 32 << 20

// Action is what the proxy did with one request.
type Action int

const (
	// Forward: passed to upstream and the answer relayed.
	Forward Action = iota
	// Delay: held for the rule's Delay, then forwarded.
	Delay
	// Error: answered with the rule's AWSError, never forwarded.
	Error
	// DropResponse: forwarded (applied upstream), then the client connection
	// was closed without an answer.
	DropResponse
	// DropRequest: the client connection was closed before forwarding.
	DropRequest
)

func (a Action) String() string {
	switch a {
	case Forward:
		return "Forward"
	case Delay:
		return "Delay"
	case Error:
		return "Error"
	case DropResponse:
		return "DropResponse"
	case DropRequest:
		return "DropRequest"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// DropMode says whether and when a rule drops the client connection.
type DropMode int

const (
	// DropNone answers normally.
	DropNone DropMode = iota
	// DropBeforeForward closes the client connection; upstream never sees the
	// request.
	DropBeforeForward
	// DropAfterForward applies the request upstream, then closes the client
	// connection without answering: applied but unacknowledged.
	DropAfterForward
)

// Rule selects requests and says what to do with them. The zero Rule matches
// every request and forwards it.
type Rule struct {
	// Op is the X-Amz-Target value, e.g. "secretsmanager.PutSecretValue" or
	// "DynamoDB_20120810.UpdateItem"; "" matches any operation.
	Op string
	// Match, if set, must report true for the request body. It runs with the
	// proxy's lock held, so it must not call the Proxy.
	Match func(body []byte) bool
	// Skip lets this many matching requests pass this rule first; they are
	// evaluated against the later rules.
	Skip int
	// Times is how many matching requests the rule applies to; 0 is unlimited.
	Times int
	// Delay holds the request before anything else happens. A client that
	// gives up during the delay never reaches upstream, as on a slow network.
	Delay time.Duration
	// Error, if set, answers with this error instead of forwarding.
	Error *AWSError
	// Drop drops the client connection before or after forwarding. It takes
	// precedence over Error.
	Drop DropMode
	// Before is called after Delay and before the request is forwarded,
	// answered or dropped. A request that is forwarded is forwarded even if the
	// client dies inside Before (it was already sent); use DropBeforeForward
	// to model a request that never arrived.
	Before func(op string)
	// After is called once upstream has answered and before the client gets
	// the answer (or, with DropAfterForward, before the connection is closed).
	After func(op string)
}

// action reports what the proxy does with a request this rule applies to.
func (r *Rule) action() Action {
	switch {
	case r.Drop == DropBeforeForward:
		return DropRequest
	case r.Error != nil:
		return Error
	case r.Drop == DropAfterForward:
		return DropResponse
	case r.Delay > 0:
		return Delay
	}
	return Forward
}

// Event is one request the proxy saw: its operation and what was done with
// it. It never holds a body.
type Event struct {
	Op     string
	Action Action
}

type ruleState struct {
	Rule
	skipLeft  int
	timesLeft int // meaningless when Times == 0
}

// Proxy is a fault-injecting reverse proxy in front of one upstream endpoint.
type Proxy struct {
	upstream  *url.URL
	ln        net.Listener
	srv       *http.Server
	transport *http.Transport
	url       string

	// ctx ends when the proxy closes: it aborts delays and upstream calls.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool
	handlers sync.WaitGroup
	rules    []*ruleState
	counts   map[string]int
	events   []Event
	errSeq   int

	writeLimit *writeLimiter // nil: writes unlimited
	writeStats *WriteStats   // of the latest LimitWrites
}

// New starts a proxy on a free loopback port that forwards to upstream
// (e.g. "http://127.0.0.1:5000").
func New(upstream string) (*Proxy, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: upstream %q: %w", upstream, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("faultproxy: upstream %q: want http(s)://host[:port]", upstream)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		upstream: u,
		ln:       ln,
		url:      "http://" + ln.Addr().String(),
		ctx:      ctx,
		cancel:   cancel,
		counts:   map[string]int{},
		transport: &http.Transport{
			Proxy:               nil, // never route test traffic via an environment proxy
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			DisableCompression:  true, // relay bodies byte for byte (DynamoDB checks x-amz-crc32)
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     30 * time.Second,
		},
	}
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		// Library code does not log; a nil ErrorLog would print to the
		// process's standard logger.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// URL is the proxy's base URL, for the SDK's BaseEndpoint or AWS_ENDPOINT_URL.
func (p *Proxy) URL() string { return p.url }

// Close stops the proxy: pending delays and upstream calls are aborted,
// connections closed, and Close returns once every handler has finished
// (a hook that never returns blocks Close).
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	_ = p.srv.Close()
	p.handlers.Wait()
	p.transport.CloseIdleConnections()
}

// Add appends a rule; rules are consulted in the order added. The returned
// function removes the rule and may be called more than once.
func (p *Proxy) Add(r Rule) (remove func()) {
	rs := &ruleState{Rule: r, skipLeft: max(r.Skip, 0), timesLeft: max(r.Times, 0)}
	p.mu.Lock()
	p.rules = append(p.rules, rs)
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for i, x := range p.rules {
			if x == rs {
				p.rules = append(p.rules[:i:i], p.rules[i+1:]...)
				return
			}
		}
	}
}

// Reset removes all rules. Counts and the log are kept.
func (p *Proxy) Reset() {
	p.mu.Lock()
	p.rules = nil
	p.mu.Unlock()
}

// Count is the number of requests seen for op, whatever happened to them;
// "" counts every request.
func (p *Proxy) Count(op string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if op == "" {
		return len(p.events)
	}
	return p.counts[op]
}

// Ops is the operations seen, in arrival order.
func (p *Proxy) Ops() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	ops := make([]string, len(p.events))
	for i, e := range p.events {
		ops[i] = e.Op
	}
	return ops
}

// Events is the requests seen, in arrival order, with what was decided for
// each.
func (p *Proxy) Events() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Event(nil), p.events...)
}

// enter registers a handler unless the proxy is closing.
func (p *Proxy) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.handlers.Add(1)
	return true
}

// plan records the request and picks the rule that applies to it, consuming
// its Skip or Times. The zero Rule means forward untouched.
func (p *Proxy) plan(op string, body []byte) Rule {
	p.mu.Lock()
	defer p.mu.Unlock()
	var chosen Rule
	for _, rs := range p.rules {
		if rs.Op != "" && rs.Op != op {
			continue
		}
		if rs.Times > 0 && rs.timesLeft == 0 {
			continue
		}
		if rs.Match != nil && !rs.Match(body) {
			continue
		}
		if rs.skipLeft > 0 {
			rs.skipLeft--
			continue
		}
		if rs.Times > 0 {
			rs.timesLeft--
		}
		chosen = rs.Rule
		break
	}
	// The write quota applies to what would reach upstream; a scripted fault
	// answers first. Counted at arrival, also for a delayed request.
	if p.writeLimit != nil && chosen.Error == nil && chosen.Drop != DropBeforeForward && !p.writeLimit.admit(op) {
		chosen = Rule{Error: ThrottlingError(SecretsManager)}
	}
	p.counts[op]++
	p.events = append(p.events, Event{Op: op, Action: chosen.action()})
	return chosen
}

// opOf names the operation: the JSON protocols' X-Amz-Target, otherwise
// method and path.
func opOf(r *http.Request) string {
	if t := r.Header.Get("X-Amz-Target"); t != "" {
		return t
	}
	return r.Method + " " + r.URL.Path
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !p.enter() {
		drop(w)
		return
	}
	defer p.handlers.Done()

	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		drop(w) // the client went away mid-request
		return
	}
	if len(body) > maxBody {
		http.Error(w, "faultproxy: request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	op := opOf(r)
	rule := p.plan(op, body)

	if rule.Delay > 0 {
		t := time.NewTimer(rule.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			drop(w)
			return
		case <-p.ctx.Done():
			t.Stop()
			drop(w)
			return
		}
	}
	if rule.Before != nil {
		rule.Before(op)
	}
	switch {
	case rule.Drop == DropBeforeForward:
		drop(w)
		return
	case rule.Error != nil:
		p.writeError(w, r, op, rule.Error)
		return
	}

	resp, err := p.forward(r, body)
	if err != nil {
		if p.ctx.Err() != nil {
			drop(w)
			return
		}
		p.writeError(w, r, op, &AWSError{Status: http.StatusBadGateway, Type: "BadGateway",
			Message: "faultproxy: upstream: " + err.Error()})
		return
	}
	if rule.After != nil {
		rule.After(op)
	}
	if rule.Drop == DropAfterForward {
		drop(w)
		return
	}
	h := w.Header()
	copyHeader(h, resp.header)
	h.Set("Content-Length", fmt.Sprint(len(resp.body)))
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
}

type upstreamResponse struct {
	status int
	header http.Header
	body   []byte
}

// forward sends the request upstream with its headers (SigV4 included) and
// Host unchanged. It is bound to the proxy's lifetime, not the client's: a
// request that reached AWS is applied even if the caller goes away.
func (p *Proxy) forward(r *http.Request, body []byte) (*upstreamResponse, error) {
	u := *p.upstream
	u.Path = strings.TrimSuffix(u.Path, "/") + r.URL.Path
	u.RawPath = ""
	u.RawQuery = r.URL.RawQuery
	req, err := http.NewRequestWithContext(p.ctx, r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	copyHeader(req.Header, r.Header)
	req.Header.Del("Expect") // the body is already here
	req.Host = r.Host        // part of the signature
	req.ContentLength = int64(len(body))
	if len(body) == 0 {
		req.Body = http.NoBody
	}
	resp, err := p.transport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &upstreamResponse{status: resp.StatusCode, header: resp.Header, body: rb}, nil
}

// hopByHop are the headers that describe one connection, not the message.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Content-Length",
}

func copyHeader(dst, src http.Header) {
	skip := map[string]bool{}
	for _, h := range hopByHop {
		skip[h] = true
	}
	for _, c := range src.Values("Connection") {
		for _, f := range strings.Split(c, ",") {
			skip[http.CanonicalHeaderKey(strings.TrimSpace(f))] = true
		}
	}
	for k, vs := range src {
		if skip[http.CanonicalHeaderKey(k)] {
			continue
		}
		dst[k] = append([]string(nil), vs...)
	}
}

// drop closes the client connection without an answer. The SDK sees a
// connection error, as when a network path dies.
func drop(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "faultproxy: cannot drop connection", http.StatusInternalServerError)
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		http.Error(w, "faultproxy: cannot drop connection", http.StatusInternalServerError)
		return
	}
	_ = conn.Close()
}
