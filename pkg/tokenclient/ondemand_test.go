package tokenclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/seed-502fa48b/token-refresher/pkg/tokenclient"
)

// fakeRefresher stands in for the refresher function behind lambda:Invoke. When
// working, it publishes a new access token as the real refresher would.
type fakeRefresher struct {
	e       *env
	now     func() time.Time
	working bool

	calls    atomic.Int64
	mu       sync.Mutex
	payloads []string
	inputs   []lambda.InvokeInput
	gen      int64
	issued   string
}

func (f *fakeRefresher) Invoke(ctx context.Context, in *lambda.InvokeInput, _ ...func(*lambda.Options)) (*lambda.InvokeOutput, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.payloads = append(f.payloads, string(in.Payload))
	f.inputs = append(f.inputs, *in)
	if in.InvocationType != types.InvocationTypeRequestResponse {
		return nil, fmt.Errorf("fake: invocation type %q, want RequestResponse", in.InvocationType)
	}
	var req struct {
		Tokens []string `json:"tokens"`
	}
	if err := json.Unmarshal(in.Payload, &req); err != nil {
		return nil, fmt.Errorf("fake: payload: %w", err)
	}
	if !f.working {
		return &lambda.InvokeOutput{
			StatusCode:    200,
			FunctionError: ptr("Unhandled"),
			Payload:       []byte(`{"errorType":"errorString","errorMessage":"1 token failed: provider returned 503"}`),
		}, nil
	}
	f.gen++
	tok := f.e.newToken()
	f.issued = tok
	if err := f.e.tryPublish(accessDoc{
		AccessToken: tok, TokenType: "Bearer", ExpiresAt: f.now().Add(24 * time.Hour).Format(time.RFC3339),
		Generation: f.gen, Status: "active",
	}); err != nil {
		return nil, err
	}
	report, _ := json.Marshal([]map[string]string{{"name": req.Tokens[0], "outcome": "refreshed"}})
	return &lambda.InvokeOutput{StatusCode: 200, Payload: report}, nil
}

func ptr[T any](v T) *T { return &v }

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

func TestOnDemandRefreshOncePerExpiry(t *testing.T) {
	const callers = 100
	e := newEnv(t)
	clk := newClock(t0)
	e.publish(e.newToken(), t0.Add(-time.Minute), 5) // the refresher is late
	f := &fakeRefresher{e: e, now: clk.Now, working: true, gen: 5}
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{
		Now: clk.Now, Invoker: f, FunctionName: "token-refresher-RefresherFunction", Logger: e.log,
	})

	got, errs := tokens(t, c, e, callers)
	for _, err := range errs {
		t.Errorf("Token: %v", err)
	}
	if len(got) != callers {
		t.Fatalf("%d callers got a token, want %d", len(got), callers)
	}
	for _, tok := range got {
		if tok != f.issued {
			t.Fatalf("a caller got a token other than the one the refresher published")
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("invokes for %d concurrent callers = %d, want 1", callers, n)
	}
	if n := e.count.calls(); n != 2 {
		t.Errorf("GetSecretValue calls = %d, want 2 (expired read, re-read after the invoke)", n)
	}
	in := f.inputs[0]
	if *in.FunctionName != "token-refresher-RefresherFunction" {
		t.Errorf("FunctionName = %q, want token-refresher-RefresherFunction", *in.FunctionName)
	}
	if want := `{"tokens":["` + e.name + `"]}`; f.payloads[0] != want {
		t.Errorf("payload = %s, want %s", f.payloads[0], want)
	}
}

func TestOnDemandRefreshFailing(t *testing.T) {
	const callers = 100
	e := newEnv(t)
	clk := newClock(t0)
	e.publish(e.newToken(), t0.Add(-time.Minute), 5)
	f := &fakeRefresher{e: e, now: clk.Now, working: false}
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{
		Now: clk.Now, Invoker: f, FunctionName: "refresher", TokenName: "sahamati", Logger: e.log,
	})

	got, errs := tokens(t, c, e, callers)
	if len(got) != 0 || len(errs) != callers {
		t.Fatalf("got %d tokens and %d errors, want 0 and %d", len(got), len(errs), callers)
	}
	for _, err := range errs {
		if !errors.Is(err, tokenclient.ErrExpired) || !strings.Contains(err.Error(), "1 token failed") {
			t.Fatalf("err = %v, want ErrExpired carrying the refresher's error", err)
		}
		e.noLeak(err)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("invokes = %d, want 1", n)
	}
	if want := `{"tokens":["sahamati"]}`; f.payloads[0] != want {
		t.Errorf("payload = %s, want %s (TokenName override)", f.payloads[0], want)
	}

	// Asked again later, the same expired token is not worth another invoke.
	clk.Advance(tokenclient.DefaultRetryInterval)
	if _, err := c.Token(context.Background()); !errors.Is(err, tokenclient.ErrExpired) {
		t.Errorf("later Token err = %v, want ErrExpired", err)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("invokes after a second look at the same expired token = %d, want 1", n)
	}

	// A different expired token (new generation) gets its own invoke.
	e.publish(e.newToken(), clk.Now().Add(-time.Second), 6)
	clk.Advance(tokenclient.DefaultRetryInterval)
	if _, err := c.Token(context.Background()); !errors.Is(err, tokenclient.ErrExpired) {
		t.Errorf("Token err = %v, want ErrExpired", err)
	}
	if n := f.calls.Load(); n != 2 {
		t.Errorf("invokes after another expiry = %d, want 2", n)
	}
}

func TestOnDemandNeedsFunctionName(t *testing.T) {
	e := newEnv(t)
	clk := newClock(t0)
	e.publish(e.newToken(), t0.Add(-time.Minute), 5)
	f := &fakeRefresher{e: e, now: clk.Now, working: true}
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Invoker: f, Logger: e.log})
	if _, err := c.Token(context.Background()); !errors.Is(err, tokenclient.ErrExpired) {
		t.Errorf("err = %v, want ErrExpired", err)
	}
	if n := f.calls.Load(); n != 0 {
		t.Errorf("invokes without FunctionName = %d, want 0", n)
	}
	if !strings.Contains(e.logs.String(), "on-demand refresh disabled") {
		t.Errorf("no warning that on-demand refresh is disabled")
	}
}
