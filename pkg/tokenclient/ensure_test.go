package tokenclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
	"github.com/seed-502fa48b/token-refresher/pkg/tokenclient"
)

// lambdaPeer speaks the Lambda Invoke API (POST /2015-03-31/functions/{name}/invocations)
// over HTTP and stands in for the refresher's ensure: the real SDK client is pointed at it
// with BaseEndpoint. Like the refresher it keeps the access secret in moto: when the
// published token is inside its margin it publishes a new one, otherwise it touches nothing.
type lambdaPeer struct {
	e        *env
	now      func() time.Time
	margin   time.Duration // the refresher's ensure margin
	lifetime time.Duration // of each token it publishes
	failing  bool          // answer with a function error

	srv   *httptest.Server
	calls atomic.Int64
	mu    sync.Mutex
	names []string // function names as invoked, qualifier included
	reqs  []invocation.Request
	gen   int64
	exp   time.Time
	last  string // the token it published last
}

func newLambdaPeer(t *testing.T, e *env, now func() time.Time) *lambdaPeer {
	t.Helper()
	p := &lambdaPeer{e: e, now: now, margin: 12 * time.Hour, lifetime: 24 * time.Hour}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2015-03-31/functions/{name}/invocations", p.invoke)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

// client is the real SDK Lambda client, talking to the peer.
func (p *lambdaPeer) client(t *testing.T) *lambda.Client {
	cfg := awsemu.Shared(t).AWSConfig(t)
	return lambda.NewFromConfig(cfg, func(o *lambda.Options) {
		o.BaseEndpoint = aws.String(p.srv.URL)
		o.RetryMaxAttempts = 1 // one HTTP request per invoke, so calls counts invokes
	})
}

// seed publishes the token the peer starts from.
func (p *lambdaPeer) seed(gen int64, exp time.Time) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen, p.exp = gen, exp
	p.last = p.e.newToken()
	p.e.publish(p.last, exp, gen)
	return p.last
}

func (p *lambdaPeer) published() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

func (p *lambdaPeer) invoke(w http.ResponseWriter, r *http.Request) {
	p.calls.Add(1)
	name := r.PathValue("name")
	if q := r.URL.Query().Get("Qualifier"); q != "" {
		name += ":" + q
	}
	body, _ := io.ReadAll(r.Body)
	var req invocation.Request
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	decErr := dec.Decode(&req)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.names = append(p.names, name)
	p.reqs = append(p.reqs, req)
	fail := func(msg string) {
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
		_ = json.NewEncoder(w).Encode(map[string]string{"errorType": "errorString", "errorMessage": msg})
	}
	switch {
	case r.Header.Get("X-Amz-Invocation-Type") != "RequestResponse":
		fail("invocation type " + r.Header.Get("X-Amz-Invocation-Type") + ", want RequestResponse")
		return
	case decErr != nil:
		fail("bad payload: " + decErr.Error())
		return
	// Contract 3: through the ensure alias only {"ensure":[...]} is accepted.
	case strings.HasSuffix(name, ":ensure") && (len(req.Ensure) == 0 || len(req.Tokens) > 0 || req.Force || req.Sweep):
		fail("the ensure alias accepts only {\"ensure\":[...]}")
		return
	case p.failing:
		fail("1 token failed: provider returned 503")
		return
	}
	rep := invocation.Report{Summary: map[string]int{}}
	for _, tok := range req.Ensure {
		row := invocation.Row{Name: tok, Outcome: invocation.OutcomeNotDue}
		if p.exp.Sub(p.now()) <= p.margin {
			p.gen++
			p.exp = p.now().Add(p.lifetime)
			p.last = p.e.newToken()
			if err := p.e.tryPublish(accessDoc{AccessToken: p.last, TokenType: "Bearer",
				ExpiresAt: p.exp.UTC().Format(time.RFC3339), Generation: p.gen, Status: "active"}); err != nil {
				fail(err.Error())
				return
			}
			row.Outcome = invocation.OutcomeRefreshed
		}
		row.Generation, row.ExpiresAt = p.gen, p.exp.UTC().Format(time.RFC3339)
		rep.Tokens = append(rep.Tokens, row)
		rep.Summary[row.Outcome]++
	}
	_ = json.NewEncoder(w).Encode(rep)
}

func (p *lambdaPeer) invokedNames() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.names...)
}

func (p *lambdaPeer) requests() []invocation.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]invocation.Request(nil), p.reqs...)
}

// tokens calls Token from n goroutines that all start before the first read returns.
func tokens(t *testing.T, c *tokenclient.Client, e *env, n int) (got []string, errs []error) {
	t.Helper()
	gate := make(chan struct{})
	e.count.gate = gate
	defer func() { e.count.gate = nil }()
	var started atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if started.Add(1) == int64(n) {
				close(gate)
			}
			tok, err := c.Token(context.Background())
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			got = append(got, tok.AccessToken)
		}()
	}
	wg.Wait()
	return got, errs
}

func TestEnsureOncePerExpiry(t *testing.T) {
	const callers = 100
	for _, tt := range []struct {
		name     string
		function string
		left     time.Duration // published token's time left at the first read
	}{
		{"expired, through the ensure alias", "token-refresher-RefresherFunction:ensure", -time.Minute},
		{"inside the margin, by ARN", "arn:aws:lambda:us-east-1:123456789012:function:token-refresher:ensure", 3 * time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			clk := newClock(t0)
			p := newLambdaPeer(t, e, clk.Now)
			p.seed(5, t0.Add(tt.left))
			c := tokenclient.New(e.count, e.secret, tokenclient.Options{
				Now: clk.Now, Invoker: p.client(t), FunctionName: tt.function, Logger: e.log,
			})

			got, errs := tokens(t, c, e, callers)
			for _, err := range errs {
				t.Errorf("Token: %v", err)
			}
			if len(got) != callers {
				t.Fatalf("%d callers got a token, want %d", len(got), callers)
			}
			for _, tok := range got {
				if tok != p.published() {
					t.Fatalf("a caller got a token other than the one the refresher published")
				}
			}
			if n := p.calls.Load(); n != 1 {
				t.Errorf("invokes for %d concurrent callers: got %d, want 1", callers, n)
			}
			if n := e.count.calls(); n != 2 {
				t.Errorf("GetSecretValue calls: got %d, want 2 (the read that found it due, the re-read after ensure)", n)
			}
			if names := p.invokedNames(); len(names) != 1 || names[0] != tt.function {
				t.Errorf("function invoked: got %q, want %q", names, tt.function)
			}
			if reqs := p.requests(); len(reqs) != 1 || len(reqs[0].Ensure) != 1 || reqs[0].Ensure[0] != e.name || reqs[0].Force || len(reqs[0].Tokens) != 0 {
				t.Errorf("request: got %+v, want {Ensure:[%s]} only", reqs, e.name)
			}
		})
	}
}

func TestEnsureNotInvokedOutsideMargin(t *testing.T) {
	e := newEnv(t)
	clk := newClock(t0)
	p := newLambdaPeer(t, e, clk.Now)
	tok := p.seed(1, t0.Add(time.Hour))
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Invoker: p.client(t), FunctionName: "refresher:ensure", Logger: e.log})
	got, err := c.Token(context.Background())
	if err != nil || got.AccessToken != tok {
		t.Fatalf("Token: err %v, published token %v; want it", err, got != nil && got.AccessToken == tok)
	}
	if n := p.calls.Load(); n != 0 {
		t.Errorf("invokes for a token an hour from expiry: got %d, want 0", n)
	}
}

// TestEnsureNotDue: the refresher's margin is shorter than the client's, so ensure answers
// not_due and publishes nothing. The still-valid token is served and the same published
// token is never worth another invoke — not even once it has expired.
func TestEnsureNotDue(t *testing.T) {
	e := newEnv(t)
	clk := newClock(t0)
	p := newLambdaPeer(t, e, clk.Now)
	p.margin = time.Minute
	tok := p.seed(3, t0.Add(4*time.Minute))
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Invoker: p.client(t), FunctionName: "refresher:ensure", Logger: e.log})
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		got, err := c.Token(ctx)
		if err != nil || got.AccessToken != tok {
			t.Fatalf("Token %d: err %v; want the still-valid token", i, err)
		}
		clk.Advance(time.Minute)
	}
	if n := p.calls.Load(); n != 1 {
		t.Errorf("invokes for one published token: got %d, want 1", n)
	}
	clk.Set(t0.Add(5 * time.Minute))
	if _, err := c.Token(ctx); !errors.Is(err, tokenclient.ErrExpired) {
		t.Errorf("after expiry: got %v, want ErrExpired", err)
	}
	if n := p.calls.Load(); n != 1 {
		t.Errorf("invokes after expiry of the same token: got %d, want 1", n)
	}
}

func TestEnsureFailing(t *testing.T) {
	const callers = 100
	e := newEnv(t)
	clk := newClock(t0)
	p := newLambdaPeer(t, e, clk.Now)
	p.failing = true
	p.seed(5, t0.Add(-time.Minute))
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{
		Now: clk.Now, Invoker: p.client(t), FunctionName: "refresher", TokenName: "sahamati", Logger: e.log,
	})

	got, errs := tokens(t, c, e, callers)
	if len(got) != 0 || len(errs) != callers {
		t.Fatalf("got %d tokens and %d errors, want 0 and %d", len(got), len(errs), callers)
	}
	for _, err := range errs {
		if !errors.Is(err, tokenclient.ErrExpired) || !strings.Contains(err.Error(), "1 token failed") {
			t.Fatalf("got %v, want ErrExpired carrying the refresher's error", err)
		}
		e.noLeak(err)
	}
	if n := p.calls.Load(); n != 1 {
		t.Errorf("invokes: got %d, want 1", n)
	}
	if reqs := p.requests(); len(reqs[0].Ensure) != 1 || reqs[0].Ensure[0] != "sahamati" {
		t.Errorf("request: got %+v, want ensure of sahamati (TokenName override)", reqs[0])
	}

	// Asked again later, the same expired token is not worth another invoke.
	clk.Advance(tokenclient.DefaultRetryInterval)
	if _, err := c.Token(context.Background()); !errors.Is(err, tokenclient.ErrExpired) {
		t.Errorf("later Token: got %v, want ErrExpired", err)
	}
	if n := p.calls.Load(); n != 1 {
		t.Errorf("invokes after a second look at the same expired token: got %d, want 1", n)
	}

	// A different expired token (new generation) gets its own invoke.
	p.seed(6, clk.Now().Add(-time.Second))
	clk.Advance(tokenclient.DefaultRetryInterval)
	if _, err := c.Token(context.Background()); !errors.Is(err, tokenclient.ErrExpired) {
		t.Errorf("Token: got %v, want ErrExpired", err)
	}
	if n := p.calls.Load(); n != 2 {
		t.Errorf("invokes after another expiry: got %d, want 2", n)
	}
}

// TestEnsureFailingServesValidToken: an ensure that fails while the token is still valid
// costs the caller nothing but the wait.
func TestEnsureFailingServesValidToken(t *testing.T) {
	e := newEnv(t)
	clk := newClock(t0)
	p := newLambdaPeer(t, e, clk.Now)
	p.failing = true
	tok := p.seed(2, t0.Add(2*time.Minute))
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Invoker: p.client(t), FunctionName: "refresher:ensure", Logger: e.log})
	got, err := c.Token(context.Background())
	if err != nil || got.AccessToken != tok {
		t.Fatalf("Token: err %v; want the still-valid token", err)
	}
	if !strings.Contains(e.logs.String(), "ensure failed") {
		t.Errorf("no warning that ensure failed")
	}
}

func TestEnsureNeedsFunctionName(t *testing.T) {
	e := newEnv(t)
	clk := newClock(t0)
	p := newLambdaPeer(t, e, clk.Now)
	p.seed(5, t0.Add(-time.Minute))
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Invoker: p.client(t), Logger: e.log})
	if _, err := c.Token(context.Background()); !errors.Is(err, tokenclient.ErrExpired) {
		t.Errorf("got %v, want ErrExpired", err)
	}
	if n := p.calls.Load(); n != 0 {
		t.Errorf("invokes without FunctionName: got %d, want 0", n)
	}
	if !strings.Contains(e.logs.String(), "ensure disabled") {
		t.Errorf("no warning that ensure is disabled")
	}
}

// TestEnsureKeepsShortTokenValid: a 15-minute token that the refresher only keeps alive
// (its half-life is below the write budget) and vends on demand. A caller asking every
// 30 s for 3 simulated hours always gets a valid token, with one ensure per published token.
func TestEnsureKeepsShortTokenValid(t *testing.T) {
	e := newEnv(t)
	clk := newClock(t0)
	p := newLambdaPeer(t, e, clk.Now)
	p.lifetime, p.margin = 15*time.Minute, 7*time.Minute+30*time.Second // half-life
	p.seed(1, t0.Add(-time.Hour))                                       // the last one expired long ago
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Invoker: p.client(t), FunctionName: "refresher:ensure", Logger: e.log})
	ctx := context.Background()
	asks, valid := 0, 0
	for end := t0.Add(3 * time.Hour); clk.Now().Before(end); clk.Advance(30 * time.Second) {
		asks++
		got, err := c.Token(ctx)
		if err == nil && got.Expiry.After(clk.Now()) && got.AccessToken == p.published() {
			valid++
		}
	}
	if valid != asks {
		t.Errorf("valid tokens: got %d of %d asks, want all", valid, asks)
	}
	p.mu.Lock()
	gens := p.gen
	p.mu.Unlock()
	if n := p.calls.Load(); n != gens-1 {
		t.Errorf("invokes: got %d for %d published tokens, want one each", n, gens-1)
	}
	t.Logf("%d asks over 3 h: %d valid, %d ensure invokes, %d GetSecretValue calls", asks, valid, p.calls.Load(), e.count.calls())
}
