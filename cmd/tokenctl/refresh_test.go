package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
)

// lambdaInvokeAPI is an httptest server speaking the Lambda Invoke API
// (POST /2015-03-31/functions/NAME/invocations): the SDK's real request goes over HTTP,
// and the test sees exactly what tokenctl sent.
type lambdaInvokeAPI struct {
	mu       sync.Mutex
	function string
	invType  string
	request  invocation.Request
	rawBody  string
	calls    int
	respond  func(w http.ResponseWriter)
}

// lambdaEndpoint is a configuration source that sends Lambda, and only Lambda, to url —
// what AWS_ENDPOINT_URL_LAMBDA does for config.LoadDefaultConfig.
type lambdaEndpoint string

func (u lambdaEndpoint) GetServiceBaseEndpoint(_ context.Context, sdkID string) (string, bool, error) {
	return string(u), sdkID == "Lambda", nil
}

// newLambdaInvokeAPI starts the Invoke API and returns a configuration that reaches it for
// Lambda and moto (e's) for everything else.
func newLambdaInvokeAPI(t *testing.T, e awsEnv, respond func(w http.ResponseWriter)) (*lambdaInvokeAPI, aws.Config) {
	t.Helper()
	l := &lambdaInvokeAPI{respond: respond}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		const pre, suf = "/2015-03-31/functions/", "/invocations"
		if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, pre) || !strings.HasSuffix(r.URL.Path, suf) {
			http.Error(w, `{"message":"unexpected request"}`, http.StatusNotFound)
			return
		}
		body, _ := io.ReadAll(r.Body)
		fn, _ := url.PathUnescape(strings.TrimSuffix(strings.TrimPrefix(r.URL.EscapedPath(), pre), suf))
		l.mu.Lock()
		l.calls++
		l.function, l.invType, l.rawBody = fn, r.Header.Get("X-Amz-Invocation-Type"), string(body)
		l.request = invocation.Request{}
		_ = json.Unmarshal(body, &l.request)
		l.mu.Unlock()
		l.respond(w)
	}))
	t.Cleanup(srv.Close)
	cfg := e.cfg.Copy()
	cfg.ConfigSources = append(cfg.ConfigSources, lambdaEndpoint(srv.URL))
	return l, cfg
}

// seedNames creates private secrets for names, so that refresh knows them.
func seedNames(t *testing.T, e awsEnv, names ...string) {
	t.Helper()
	c := e.cli(t)
	for _, n := range names {
		c.mustRun("seed", n, "--file", writeFile(t, "s.json", sahamatiDoc))
	}
}

func TestRefreshReport(t *testing.T) {
	report := `{"request_id":"req-42","tokens":[
	  {"name":"acme","outcome":"refreshed","expires_at":"2026-11-23T00:00:00Z","generation":8},
	  {"name":"sahamati-prod","outcome":"quota_exhausted","error":"quota sahamati#FIU-1 spent for 2026-11-22"}],
	  "summary":{"refreshed":1,"quota_exhausted":1}}`
	e := newAWSEnv(t)
	seedNames(t, e, "acme", "sahamati-prod")
	api, cfg := newLambdaInvokeAPI(t, e, func(w http.ResponseWriter) {
		w.Header().Set("X-Amz-Executed-Version", "$LATEST")
		_, _ = io.WriteString(w, report)
	})
	c := newCLI(t, &cfg, map[string]string{"REFRESHER_FUNCTION": "token-refresher-RefresherFunction-abc", "SECRET_PREFIX": e.prefix})
	c.mustRun("refresh", "acme", "sahamati-prod", "--force")

	if api.calls != 1 || api.function != "token-refresher-RefresherFunction-abc" || api.invType != "RequestResponse" {
		t.Errorf("invoke: got %d calls, function %q, invocation type %q", api.calls, api.function, api.invType)
	}
	var sent map[string]any
	if err := json.Unmarshal([]byte(api.rawBody), &sent); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"tokens": []any{"acme", "sahamati-prod"}, "force": true}
	if got, _ := json.Marshal(sent); string(got) != mustJSON(t, want) {
		t.Errorf("payload: got %s, want %s", got, mustJSON(t, want))
	}
	out := c.out.String()
	for _, w := range []string{"NAME", "OUTCOME", "acme", "refreshed", "2026-11-23T00:00:00Z", "8",
		"sahamati-prod", "quota_exhausted", "quota sahamati#FIU-1 spent", "summary: quota_exhausted=1 refreshed=1 (request req-42)"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}

	// --json hands the report through; without --force, force is false.
	c.mustRun("refresh", "acme", "--json", "--function", "other-fn")
	if api.function != "other-fn" || api.request.Force || strings.Join(api.request.Tokens, ",") != "acme" {
		t.Errorf("second invoke: function %q request %+v", api.function, api.request)
	}
	var rep invocation.Report
	if err := json.Unmarshal(c.out.Bytes(), &rep); err != nil || len(rep.Tokens) != 2 || rep.Tokens[0].Generation != 8 {
		t.Errorf("--json output: %v\n%s", err, c.out.String())
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRefreshFunctionError(t *testing.T) {
	e := newAWSEnv(t)
	seedNames(t, e, "acme", "beta")
	_, cfg := newLambdaInvokeAPI(t, e, func(w http.ResponseWriter) {
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
		_, _ = io.WriteString(w, `{"errorMessage":"refresher: 1 of 2 tokens failed: acme","errorType":"errorString"}`)
	})
	c := newCLI(t, &cfg, map[string]string{"REFRESHER_FUNCTION": "fn", "SECRET_PREFIX": e.prefix})
	if code := c.run("refresh", "acme", "beta"); code != exitFail {
		t.Errorf("exit: got %d, want %d", code, exitFail)
	}
	if !strings.Contains(c.err.String(), "fn returned an error (Unhandled): refresher: 1 of 2 tokens failed: acme") {
		t.Errorf("stderr: got %q", c.err.String())
	}
}

func TestRefreshInvokeFails(t *testing.T) {
	e := newAWSEnv(t)
	seedNames(t, e, "acme")
	_, cfg := newLambdaInvokeAPI(t, e, func(w http.ResponseWriter) {
		w.Header().Set("X-Amzn-ErrorType", "ResourceNotFoundException")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"Type":"User","message":"Function not found: fn"}`)
	})
	c := newCLI(t, &cfg, map[string]string{"REFRESHER_FUNCTION": "fn", "SECRET_PREFIX": e.prefix})
	want := "function fn not found in region us-east-1: check --function / REFRESHER_FUNCTION and AWS_REGION"
	if code := c.run("refresh", "acme"); code != exitFail || !strings.Contains(c.err.String(), want) || strings.Count(strings.TrimSpace(c.err.String()), "\n") != 0 {
		t.Errorf("exit %d, stderr %q, want one line with %q", code, c.err.String(), want)
	}
}

// Exit codes follow the report's worst outcome; unknown names are refused before any invoke.
func TestRefreshExitCodes(t *testing.T) {
	e := newAWSEnv(t)
	seedNames(t, e, "a", "b")
	var mu sync.Mutex
	var outcomes []string
	api, cfg := newLambdaInvokeAPI(t, e, func(w http.ResponseWriter) {
		rep := invocation.Report{Summary: map[string]int{}}
		mu.Lock()
		defer mu.Unlock()
		for i, o := range outcomes {
			rep.Tokens = append(rep.Tokens, invocation.Row{Name: []string{"a", "b"}[i], Outcome: o, Error: "reason " + o})
		}
		_ = json.NewEncoder(w).Encode(rep)
	})
	tests := []struct {
		outcomes []string
		want     int
	}{
		{[]string{invocation.OutcomeRefreshed, invocation.OutcomeNotDue}, exitOK},
		{[]string{invocation.OutcomeLeaseHeld, invocation.OutcomeQuotaExhausted}, exitOK},
		{[]string{invocation.OutcomeThrottled, invocation.OutcomeInvalidConfig}, exitInvalid},
		{[]string{invocation.OutcomeNeedsReauth, invocation.OutcomeInvalidConfig}, exitNeedsReauth},
		{[]string{invocation.OutcomeNeedsReauth, invocation.OutcomeFailed}, exitFail},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.outcomes, "+"), func(t *testing.T) {
			mu.Lock()
			outcomes = tt.outcomes
			mu.Unlock()
			c := newCLI(t, &cfg, map[string]string{"REFRESHER_FUNCTION": "fn", "SECRET_PREFIX": e.prefix})
			if code := c.run("refresh", "a", "b"); code != tt.want {
				t.Errorf("exit: got %d, want %d\n%s", code, tt.want, c.out.String())
			}
			if !strings.Contains(c.out.String(), "reason "+tt.outcomes[1]) {
				t.Errorf("report not printed:\n%s", c.out.String())
			}
		})
	}

	api.mu.Lock()
	calls := api.calls
	api.mu.Unlock()
	c := newCLI(t, &cfg, map[string]string{"REFRESHER_FUNCTION": "fn", "SECRET_PREFIX": e.prefix})
	if code := c.run("refresh", "a", "nosuch", "--force"); code != exitNotFound || !strings.Contains(c.err.String(), "unknown token(s) nosuch") {
		t.Errorf("unknown name: exit %d, stderr %q; want %d", code, c.err.String(), exitNotFound)
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if api.calls != calls {
		t.Errorf("unknown name: the function was invoked")
	}
}
