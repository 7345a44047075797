package provider

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// Secret values with characters that form- and Basic-encoding change.
const (
	testRT       = "rt-Zq81vXk3mPa9+/="
	testCS       = "cs-Wb72nLr5yTe0:&%"
	testES       = "es-Hc44pQm8uJd1"
	testClientID = "client 1"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// allClasses are the failure classes; every *Error matches exactly one.
var allClasses = []error{ErrRejected, ErrThrottled, ErrTransient, ErrMalformed, ErrUnexpected}

func fixedNow() time.Time { return t0 }

// seen is one request as a test server received it.
type seen struct {
	method, path, contentType, accept, userAgent, authorization string
	body                                                        []byte
}

// testServer answers every request with reply and records what it saw.
type testServer struct {
	*httptest.Server
	mu    sync.Mutex
	reqs  []seen
	reply func(w http.ResponseWriter, r *http.Request, body []byte)
}

func newTestServer(t *testing.T, reply func(w http.ResponseWriter, r *http.Request, body []byte)) *testServer {
	t.Helper()
	s := &testServer{reply: reply}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, seen{
			method: r.Method, path: r.URL.Path, contentType: r.Header.Get("Content-Type"),
			accept: r.Header.Get("Accept"), userAgent: r.Header.Get("User-Agent"),
			authorization: r.Header.Get("Authorization"), body: body,
		})
		s.mu.Unlock()
		s.reply(w, r, body)
	}))
	t.Cleanup(s.Close)
	return s
}

// answer replies with a fixed status, headers and body.
func answer(status int, header http.Header, body string) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		for k, v := range header {
			w.Header()[k] = v
		}
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func (s *testServer) requests() []seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seen(nil), s.reqs...)
}

func (s *testServer) tokenURL() string { return s.URL + "/oauth2/token" }

// providers for each profile at url.
func formProvider(url string) token.Provider {
	return token.Provider{Grant: token.GrantRefreshToken, Body: token.BodyForm, TokenURL: url,
		ClientID: testClientID, ClientSecret: testCS, ClientAuth: token.AuthBasic}
}

func jsonProvider(url string) token.Provider {
	return token.Provider{Grant: token.GrantRefreshToken, Body: token.BodyJSON, TokenURL: url}
}

func ccProvider(url string) token.Provider {
	return token.Provider{Grant: token.GrantClientCredentials, TokenURL: url,
		ClientID: testClientID, ClientSecret: testCS, Scope: "fund.read  fund.write"}
}

func sahamatiProvider(url string) token.Provider {
	return token.Provider{Grant: token.GrantSahamatiEntity, TokenURL: url, EntityID: "AA-1", EntitySecret: testES}
}

func newTestClient(t *testing.T, p token.Provider, opts Options) *Client {
	t.Helper()
	if opts.Now == nil {
		opts.Now = fixedNow
	}
	c, err := New(p, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

const (
	oauthOK    = `{"access_token":"at-new-1","token_type":"Bearer","refresh_token":"rt-new-1","expires_in":900,"scope":"fund.read"}`
	sahamatiOK = `{"ver":"1.0.0","timestamp":"2026-11-22T12:00:00.000Z","txnId":"f1","accessToken":"sah-at-1","expiresIn":86400,"refreshExpiresIn":0,"tokenType":"Bearer","notBeforePolicy":0,"scope":"email profile"}`
)

func basicHeader(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

func TestRequestShape(t *testing.T) {
	form := func(kv ...string) url.Values {
		v := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	tests := []struct {
		name     string
		prov     func(url string) token.Provider
		wantCT   string
		wantAuth string
		wantForm url.Values     // form bodies
		wantJSON map[string]any // JSON bodies
	}{
		{
			name:     "form basic sends no scope",
			prov:     func(u string) token.Provider { p := formProvider(u); p.Scope = "fund.read target:b/acme"; return p },
			wantCT:   "application/x-www-form-urlencoded",
			wantAuth: basicHeader(testClientID, testCS),
			wantForm: form("grant_type", "refresh_token", "refresh_token", testRT),
		},
		{
			name:     "form body",
			prov:     func(u string) token.Provider { p := formProvider(u); p.ClientAuth = token.AuthBody; return p },
			wantCT:   "application/x-www-form-urlencoded",
			wantForm: form("grant_type", "refresh_token", "refresh_token", testRT, "client_id", testClientID, "client_secret", testCS),
		},
		{
			name:     "form none sends client_id but never the secret",
			prov:     func(u string) token.Provider { p := formProvider(u); p.ClientAuth = token.AuthNone; return p },
			wantCT:   "application/x-www-form-urlencoded",
			wantForm: form("grant_type", "refresh_token", "refresh_token", testRT, "client_id", testClientID),
		},
		{
			name:     "form default with id and secret is basic",
			prov:     func(u string) token.Provider { p := formProvider(u); p.ClientAuth = ""; return p },
			wantCT:   "application/x-www-form-urlencoded",
			wantAuth: basicHeader(testClientID, testCS),
			wantForm: form("grant_type", "refresh_token", "refresh_token", testRT),
		},
		{
			name: "form default without client is none",
			prov: func(u string) token.Provider {
				return token.Provider{Grant: token.GrantRefreshToken, TokenURL: u}
			},
			wantCT:   "application/x-www-form-urlencoded",
			wantForm: form("grant_type", "refresh_token", "refresh_token", testRT),
		},
		{
			name:     "json none",
			prov:     jsonProvider,
			wantCT:   "application/json",
			wantJSON: map[string]any{"grant_type": "refresh_token", "refresh_token": testRT},
		},
		{
			name: "json basic",
			prov: func(u string) token.Provider {
				p := jsonProvider(u)
				p.ClientID, p.ClientSecret, p.ClientAuth = testClientID, testCS, token.AuthBasic
				return p
			},
			wantCT:   "application/json",
			wantAuth: basicHeader(testClientID, testCS),
			wantJSON: map[string]any{"grant_type": "refresh_token", "refresh_token": testRT},
		},
		{
			name: "json body",
			prov: func(u string) token.Provider {
				p := jsonProvider(u)
				p.ClientID, p.ClientSecret, p.ClientAuth = testClientID, testCS, token.AuthBody
				return p
			},
			wantCT:   "application/json",
			wantJSON: map[string]any{"grant_type": "refresh_token", "refresh_token": testRT, "client_id": testClientID, "client_secret": testCS},
		},
		{
			name:     "client_credentials default basic with scope",
			prov:     ccProvider,
			wantCT:   "application/x-www-form-urlencoded",
			wantAuth: basicHeader(testClientID, testCS),
			wantForm: form("grant_type", "client_credentials", "scope", "fund.read fund.write"),
		},
		{
			name: "client_credentials body",
			prov: func(u string) token.Provider {
				p := ccProvider(u)
				p.ClientAuth = token.AuthBody
				p.Scope = ""
				return p
			},
			wantCT:   "application/x-www-form-urlencoded",
			wantForm: form("grant_type", "client_credentials", "client_id", testClientID, "client_secret", testCS),
		},
		{
			name:     "sahamati",
			prov:     sahamatiProvider,
			wantCT:   "application/x-www-form-urlencoded",
			wantForm: form("id", "AA-1", "secret", testES),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := oauthOK
			if tt.name == "sahamati" {
				body = sahamatiOK
			}
			srv := newTestServer(t, answer(200, nil, body))
			c := newTestClient(t, tt.prov(srv.tokenURL()), Options{})
			if _, err := c.Refresh(context.Background(), testRT); err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			reqs := srv.requests()
			if len(reqs) != 1 {
				t.Fatalf("got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.method != http.MethodPost || r.path != "/oauth2/token" {
				t.Errorf("got %s %s, want POST /oauth2/token", r.method, r.path)
			}
			if r.contentType != tt.wantCT {
				t.Errorf("Content-Type: got %q, want %q", r.contentType, tt.wantCT)
			}
			if r.accept != "application/json" {
				t.Errorf("Accept: got %q, want application/json", r.accept)
			}
			if r.userAgent != "token-refresher/"+Version {
				t.Errorf("User-Agent: got %q, want token-refresher/%s", r.userAgent, Version)
			}
			if r.authorization != tt.wantAuth {
				t.Errorf("Authorization: got %q, want %q", r.authorization, tt.wantAuth)
			}
			if tt.wantForm != nil {
				got, err := url.ParseQuery(string(r.body))
				if err != nil {
					t.Fatalf("body is not a form: %v", err)
				}
				if got.Encode() != tt.wantForm.Encode() {
					t.Errorf("form: got %q, want %q", got.Encode(), tt.wantForm.Encode())
				}
			}
			if tt.wantJSON != nil {
				var got map[string]any
				if err := json.Unmarshal(r.body, &got); err != nil {
					t.Fatalf("body is not JSON: %v", err)
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.wantJSON) {
					t.Errorf("JSON body: got %v, want %v", got, tt.wantJSON)
				}
			}
		})
	}
}

func TestUserAgentOption(t *testing.T) {
	srv := newTestServer(t, answer(200, nil, oauthOK))
	c := newTestClient(t, formProvider(srv.tokenURL()), Options{UserAgent: "ops-probe/2"})
	if _, err := c.Refresh(context.Background(), testRT); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if got := srv.requests()[0].userAgent; got != "ops-probe/2" {
		t.Errorf("User-Agent: got %q, want ops-probe/2", got)
	}
}

func TestSuccess(t *testing.T) {
	tests := []struct {
		name     string
		prov     func(string) token.Provider
		body     string
		old      token.Secret
		want     Result
		wantRT   string
		defaultE time.Duration
	}{
		{
			name: "rotating",
			prov: formProvider, body: oauthOK, old: testRT,
			want:   Result{AccessToken: "at-new-1", TokenType: "Bearer", ExpiresAt: t0.Add(900 * time.Second), Rotated: true, Scope: "fund.read"},
			wantRT: "rt-new-1",
		},
		{
			name: "no refresh token keeps the old",
			prov: formProvider, body: `{"access_token":"at-2","token_type":"bearer","expires_in":3600}`, old: testRT,
			want:   Result{AccessToken: "at-2", TokenType: "Bearer", ExpiresAt: t0.Add(time.Hour)},
			wantRT: testRT,
		},
		{
			name: "same refresh token is not a rotation",
			prov: formProvider, body: `{"access_token":"at-3","refresh_token":"` + strings.ReplaceAll(testRT, "/", `\/`) + `","expires_in":60}`, old: testRT,
			want:   Result{AccessToken: "at-3", TokenType: "Bearer", ExpiresAt: t0.Add(time.Minute)},
			wantRT: testRT,
		},
		{
			name: "absent expires_in takes default_expires_in",
			prov: formProvider, body: `{"access_token":"at-4"}`, old: testRT, defaultE: 20 * time.Minute,
			want:   Result{AccessToken: "at-4", TokenType: "Bearer", ExpiresAt: t0.Add(20 * time.Minute)},
			wantRT: testRT,
		},
		{
			name: "absent expires_in without default is 1h",
			prov: formProvider, body: `{"access_token":"at-5","expires_in":null}`, old: testRT,
			want:   Result{AccessToken: "at-5", TokenType: "Bearer", ExpiresAt: t0.Add(FallbackExpiresIn)},
			wantRT: testRT,
		},
		{
			name: "expires_in as a string and refresh lifetime stated",
			prov: formProvider, body: `{"access_token":"at-6","token_type":"MAC","expires_in":"120","refresh_expires_in":2592000,"refresh_token":"rt-6"}`, old: testRT,
			want:   Result{AccessToken: "at-6", TokenType: "MAC", ExpiresAt: t0.Add(2 * time.Minute), Rotated: true, RefreshExpiresAt: t0.Add(30 * 24 * time.Hour)},
			wantRT: "rt-6",
		},
		{
			name: "bad refresh lifetime is ignored",
			prov: formProvider, body: `{"access_token":"at-7","expires_in":60,"refresh_expires_in":-5}`, old: testRT,
			want:   Result{AccessToken: "at-7", TokenType: "Bearer", ExpiresAt: t0.Add(time.Minute)},
			wantRT: testRT,
		},
		{
			name: "scope as an array",
			prov: jsonProvider, body: `{"access_token":"at-8","expires_in":86400,"scope":["a","b"],"refresh_token":"rt-8","user_id":"usr:1"}`, old: testRT,
			want:   Result{AccessToken: "at-8", TokenType: "Bearer", ExpiresAt: t0.Add(24 * time.Hour), Rotated: true, Scope: "a b"},
			wantRT: "rt-8",
		},
		{
			name: "client_credentials omitted scope is the requested one",
			prov: ccProvider, body: `{"access_token":"at-9","expires_in":300}`,
			want: Result{AccessToken: "at-9", TokenType: "Bearer", ExpiresAt: t0.Add(5 * time.Minute), Scope: "fund.read fund.write"},
		},
		{
			name: "sahamati refreshExpiresIn 0 is none",
			prov: sahamatiProvider, body: sahamatiOK,
			want: Result{AccessToken: "sah-at-1", TokenType: "Bearer", ExpiresAt: t0.Add(24 * time.Hour), Scope: "email profile"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, answer(200, nil, tt.body))
			p := tt.prov(srv.tokenURL())
			p.DefaultExpiresIn = tt.defaultE
			got, err := newTestClient(t, p, Options{}).Refresh(context.Background(), tt.old)
			if err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if got.RefreshToken.Reveal() != tt.wantRT {
				t.Errorf("RefreshToken: got %q, want %q", got.RefreshToken.Reveal(), tt.wantRT)
			}
			got.RefreshToken = ""
			if *got != tt.want {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	big := `{"access_token":"at","expires_in":60}` + strings.Repeat(" ", maxBody)
	tests := []struct {
		name, body, wantMsg string
		prov                func(string) token.Provider
	}{
		{"not JSON", `<html>ok</html>`, "not a JSON object", formProvider},
		{"form-encoded token", `access_token=at&expires_in=60`, "not a JSON object", formProvider},
		{"JSON array", `[{"access_token":"at"}]`, "not a JSON object", jsonProvider},
		{"empty", ``, "not a JSON object", ccProvider},
		{"no access token", `{"token_type":"Bearer","expires_in":60}`, "no access_token", formProvider},
		{"empty access token", `{"access_token":"","expires_in":60}`, "no access_token", jsonProvider},
		{"access token not a string", `{"access_token":42}`, "access_token is not a string", formProvider},
		{"expires_in zero", `{"access_token":"at","expires_in":0}`, "expires_in is not positive", formProvider},
		{"expires_in negative", `{"access_token":"at","expires_in":-60}`, "expires_in is not positive", ccProvider},
		{"expires_in over a year", `{"access_token":"at","expires_in":31536001}`, "expires_in is over a year", formProvider},
		{"expires_in huge", `{"access_token":"at","expires_in":1e400}`, "expires_in is not a number", formProvider},
		{"expires_in words", `{"access_token":"at","expires_in":"soon"}`, "expires_in is not a number", jsonProvider},
		{"refresh token not a string", `{"access_token":"at","refresh_token":{}}`, "refresh_token is not a string", formProvider},
		{"over 1 MiB", big, "over 1 MiB", formProvider},
		{"sahamati snake case", `{"access_token":"at","expires_in":60}`, "no accessToken", sahamatiProvider},
		{"sahamati expiresIn zero", `{"accessToken":"at","expiresIn":0}`, "expiresIn is not positive", sahamatiProvider},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, answer(200, nil, tt.body))
			_, err := newTestClient(t, tt.prov(srv.tokenURL()), Options{}).Refresh(context.Background(), testRT)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v, want *Error", err)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("got class %v, want ErrMalformed", e.Class)
			}
			if e.Status != 200 || !strings.Contains(e.Message, tt.wantMsg) {
				t.Errorf("got status %d message %q, want 200 and %q", e.Status, e.Message, tt.wantMsg)
			}
			if strings.Contains(err.Error(), `"at"`) {
				t.Errorf("error quotes the body: %q", err)
			}
			if n := len(srv.requests()); n != 1 {
				t.Errorf("got %d requests, want 1", n)
			}
		})
	}
}

func TestErrorClasses(t *testing.T) {
	tests := []struct {
		name       string
		prov       func(string) token.Provider
		status     int
		header     http.Header
		body       string
		wantClass  error
		wantCode   string
		wantMsg    string
		wantString string
	}{
		{
			name: "invalid_grant", prov: formProvider, status: 400,
			body:      `{"error":"invalid_grant","error_description":"The refresh token was already used"}`,
			wantClass: ErrRejected, wantCode: "invalid_grant", wantMsg: "The refresh token was already used",
			wantString: "provider: rejected: 400 invalid_grant: The refresh token was already used",
		},
		{
			name: "invalid_client 401", prov: ccProvider, status: 401,
			body:      `{"error":"invalid_client"}`,
			wantClass: ErrRejected, wantCode: "invalid_client", wantString: "provider: rejected: 401 invalid_client",
		},
		{name: "unauthorized_client", prov: formProvider, status: 400, body: `{"error":"unauthorized_client"}`, wantClass: ErrRejected, wantCode: "unauthorized_client"},
		{name: "invalid_scope is not a rejection", prov: ccProvider, status: 400, body: `{"error":"invalid_scope"}`, wantClass: ErrUnexpected, wantCode: "invalid_scope"},
		{
			name: "vault 401", prov: jsonProvider, status: 401,
			body:      `{"status":"UNAUTHORIZED","message":"The Token has expired on 2025-01-01T00:00:00.000Z","traceId":"TraceId unavailable","errors":[]}`,
			wantClass: ErrRejected, wantCode: "UNAUTHORIZED", wantMsg: "The Token has expired on 2025-01-01T00:00:00.000Z",
		},
		{
			name: "sahamati 401", prov: sahamatiProvider, status: 401,
			body:      `{"ver":"1.0.0","timestamp":"x","txnId":"t","errorCode":"Unauthorized","errorMsg":"Invalid entity id/secret or secret is expired"}`,
			wantClass: ErrRejected, wantCode: "Unauthorized", wantMsg: "Invalid entity id/secret or secret is expired",
		},
		{
			name: "sahamati 429", prov: sahamatiProvider, status: 429,
			body:      `{"errorCode":"Limit Exceeded","errorMsg":"Limit Exceeded"}`,
			wantClass: ErrThrottled, wantCode: "Limit Exceeded", wantMsg: "Limit Exceeded",
		},
		{
			name: "429 plain text", prov: formProvider, status: 429, header: http.Header{"Content-Type": {"text/plain"}},
			body: "Limit Exceeded\n", wantClass: ErrThrottled, wantMsg: "Limit Exceeded",
		},
		{name: "500", prov: formProvider, status: 500, body: `{"error":"server_error"}`, wantClass: ErrTransient, wantCode: "server_error"},
		{
			name: "502 gateway HTML", prov: jsonProvider, status: 502, header: http.Header{"Content-Type": {"text/html"}},
			body:      "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body><center><h1>502 Bad Gateway</h1></center></body></html>",
			wantClass: ErrTransient, wantMsg: "502 Bad Gateway 502 Bad Gateway",
		},
		{name: "503 temporarily_unavailable", prov: ccProvider, status: 503, body: `{"error":"temporarily_unavailable"}`, wantClass: ErrTransient, wantCode: "temporarily_unavailable"},
		{name: "408", prov: sahamatiProvider, status: 408, body: ``, wantClass: ErrTransient},
		{name: "400 temporarily_unavailable", prov: formProvider, status: 400, body: `{"error":"temporarily_unavailable"}`, wantClass: ErrTransient, wantCode: "temporarily_unavailable"},
		{name: "404", prov: formProvider, status: 404, body: `not found`, wantClass: ErrUnexpected, wantMsg: "not found"},
		{name: "403 nested error", prov: ccProvider, status: 403, body: `{"error":{"status":"PERMISSION_DENIED","message":"no"}}`, wantClass: ErrUnexpected, wantCode: "PERMISSION_DENIED", wantMsg: "no"},
		{
			name: "form-encoded error body via x/oauth2", prov: formProvider, status: 400,
			header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}},
			body:   "error=invalid_grant&error_description=used+twice", wantClass: ErrRejected, wantCode: "invalid_grant", wantMsg: "used twice",
		},
		{name: "200 with an error", prov: formProvider, status: 200, body: `{"error":"invalid_grant","error_description":"nope"}`, wantClass: ErrRejected, wantCode: "invalid_grant", wantMsg: "nope"},
		{name: "sahamati 200 with an errorCode is not its documented 401", prov: sahamatiProvider, status: 200, body: `{"errorCode":"Unauthorized","errorMsg":"nope"}`, wantClass: ErrUnexpected, wantCode: "Unauthorized", wantMsg: "nope"},
		{name: "status 600", prov: formProvider, status: 600, body: `{}`, wantClass: ErrUnexpected},
		{name: "500 over 1 MiB is still transient", prov: formProvider, status: 500, body: strings.Repeat("x", 2*maxBody), wantClass: ErrTransient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, answer(tt.status, tt.header, tt.body))
			_, err := newTestClient(t, tt.prov(srv.tokenURL()), Options{}).Refresh(context.Background(), testRT)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v, want *Error", err)
			}
			if !errors.Is(err, tt.wantClass) {
				t.Errorf("got class %v, want %v", e.Class, tt.wantClass)
			}
			for _, other := range allClasses {
				if other != tt.wantClass && errors.Is(err, other) {
					t.Errorf("error also matches %v", other)
				}
			}
			if e.Status != tt.status {
				t.Errorf("Status: got %d, want %d", e.Status, tt.status)
			}
			if e.Code != tt.wantCode {
				t.Errorf("Code: got %q, want %q", e.Code, tt.wantCode)
			}
			if tt.wantMsg != "" && !strings.Contains(e.Message, tt.wantMsg) {
				t.Errorf("Message: got %q, want it to contain %q", e.Message, tt.wantMsg)
			}
			if len([]rune(e.Message)) > maxText {
				t.Errorf("Message has %d characters, want at most %d", len([]rune(e.Message)), maxText)
			}
			if tt.wantString != "" && err.Error() != tt.wantString {
				t.Errorf("Error(): got %q, want %q", err.Error(), tt.wantString)
			}
			if e.RetryAfter != 0 {
				t.Errorf("RetryAfter: got %v, want 0 without the header", e.RetryAfter)
			}
			if n := len(srv.requests()); n != 1 {
				t.Errorf("got %d requests, want 1", n)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name, value string
		want        time.Duration
	}{
		{"seconds", "120", 2 * time.Minute},
		{"HTTP-date", t0.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"HTTP-date in the past", t0.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"negative", "-5", 0},
		{"garbage", "soon", 0},
		{"absurd is capped", "999999999999", maxLifetime},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, answer(429, http.Header{"Retry-After": {tt.value}}, `{"error":"rate_limited"}`))
			_, err := newTestClient(t, ccProvider(srv.tokenURL()), Options{}).Refresh(context.Background(), "")
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrThrottled) {
				t.Fatalf("got %v, want a throttled *Error", err)
			}
			if e.RetryAfter != tt.want {
				t.Errorf("RetryAfter: got %v, want %v", e.RetryAfter, tt.want)
			}
		})
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	target := newTestServer(t, answer(200, nil, oauthOK))
	for _, status := range []int{301, 302, 307, 308} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			redir := newTestServer(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
				http.Redirect(w, r, target.tokenURL(), status)
			})
			for _, p := range []token.Provider{formProvider(redir.tokenURL()), jsonProvider(redir.tokenURL()), ccProvider(redir.tokenURL()), sahamatiProvider(redir.tokenURL())} {
				_, err := newTestClient(t, p, Options{}).Refresh(context.Background(), testRT)
				var e *Error
				if !errors.As(err, &e) || !errors.Is(err, ErrUnexpected) || e.Status != status {
					t.Errorf("%s: got %v, want unexpected with status %d", p.Grant, err, status)
				}
				if e != nil && !strings.Contains(e.Message, "redirect not followed") {
					t.Errorf("Message: got %q, want it to say the redirect was not followed", e.Message)
				}
			}
			if n := len(redir.requests()); n != 4 {
				t.Errorf("redirecting server: got %d requests, want 4", n)
			}
		})
	}
	if n := len(target.requests()); n != 0 {
		t.Errorf("redirect target: got %d requests, want 0", n)
	}
}

func TestBaseClientRedirectPolicyIsNotUsedOrChanged(t *testing.T) {
	target := newTestServer(t, answer(200, nil, oauthOK))
	redir := newTestServer(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		http.Redirect(w, r, target.tokenURL(), http.StatusFound)
	})
	base := &http.Client{} // follows redirects itself
	c := newTestClient(t, formProvider(redir.tokenURL()), Options{HTTPClient: base})
	if _, err := c.Refresh(context.Background(), testRT); !errors.Is(err, ErrUnexpected) {
		t.Fatalf("got %v, want unexpected", err)
	}
	if base.CheckRedirect != nil {
		t.Error("New changed the caller's http.Client")
	}
	if n := len(target.requests()); n != 0 {
		t.Errorf("redirect target: got %d requests, want 0", n)
	}
}

func TestTimeoutIsTransient(t *testing.T) {
	release := make(chan struct{})
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		select { // hold the answer until the client gives up
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	c := newTestClient(t, formProvider(srv.tokenURL()), Options{Timeout: 50 * time.Millisecond})
	_, err := c.Refresh(context.Background(), testRT)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrTransient) {
		t.Fatalf("got %v, want transient", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want it to match context.DeadlineExceeded", err)
	}
	if e.Status != 0 || e.Err == nil {
		t.Errorf("got status %d, Err %v; want 0 and the network error", e.Status, e.Err)
	}
	if n := len(srv.requests()); n != 1 {
		t.Errorf("got %d requests, want 1", n)
	}
}

func TestCallerCancelIsTransient(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		cancel()
		<-r.Context().Done()
	})
	_, err := newTestClient(t, sahamatiProvider(srv.tokenURL()), Options{}).Refresh(ctx, "")
	if !errors.Is(err, ErrTransient) || !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want transient matching context.Canceled", err)
	}
}

func TestConnectionErrorsAreTransient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now
	_, err = newTestClient(t, jsonProvider("http://"+addr+"/token"), Options{}).Refresh(context.Background(), testRT)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrTransient) || e.Err == nil {
		t.Fatalf("got %v, want transient with the network error", err)
	}

	// A connection closed before any response.
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	for _, p := range []token.Provider{formProvider(srv.tokenURL()), ccProvider(srv.tokenURL())} {
		if _, err := newTestClient(t, p, Options{}).Refresh(context.Background(), testRT); !errors.Is(err, ErrTransient) {
			t.Errorf("%s: got %v, want transient", p.Grant, err)
		}
	}
	if n := len(srv.requests()); n != 2 {
		t.Errorf("got %d requests, want 2 (no retries)", n)
	}
}

func TestRefreshTokenRequired(t *testing.T) {
	srv := newTestServer(t, answer(200, nil, oauthOK))
	for _, p := range []token.Provider{formProvider(srv.tokenURL()), jsonProvider(srv.tokenURL())} {
		_, err := newTestClient(t, p, Options{}).Refresh(context.Background(), "")
		if !errors.Is(err, token.ErrInvalid) {
			t.Errorf("%s/%s: got %v, want token.ErrInvalid", p.Grant, p.Body, err)
		}
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("got %d requests, want 0", n)
	}
}

// echoAll answers status with every request detail quoted back: the raw body, the decoded
// form or JSON values, the Authorization header and its decoding — like a careless provider.
func echoAll(status int) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		var parts []string
		parts = append(parts, "raw="+string(body), "auth="+r.Header.Get("Authorization"))
		if id, secret, ok := r.BasicAuth(); ok {
			parts = append(parts, "basic="+id+":"+secret)
			uid, _ := url.QueryUnescape(id)
			usecret, _ := url.QueryUnescape(secret)
			parts = append(parts, "decoded="+uid+":"+usecret)
		}
		if vals, err := url.ParseQuery(string(body)); err == nil {
			for k, v := range vals {
				parts = append(parts, k+"="+strings.Join(v, ","))
			}
		}
		var m map[string]string
		if json.Unmarshal(body, &m) == nil {
			for k, v := range m {
				parts = append(parts, k+":"+v)
			}
		}
		echo := strings.Join(parts, " ")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{
			"error": "invalid_grant", "error_description": echo, "errorCode": echo, "errorMsg": echo,
			"message": echo, "access_token": "at-echoed-9f8e7d6c",
		})
	}
}

func TestNoSecretInErrors(t *testing.T) {
	secrets := []string{testRT, testCS, testES, "at-echoed-9f8e7d6c", url.QueryEscape(testRT), url.QueryEscape(testCS), `cs-Wb72nLr5yTe0:\u0026%`,
		base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(testClientID) + ":" + url.QueryEscape(testCS)))}
	for _, status := range []int{200, 400, 401, 429, 500} {
		srv := newTestServer(t, echoAll(status))
		provs := []token.Provider{formProvider(srv.tokenURL()), ccProvider(srv.tokenURL()), sahamatiProvider(srv.tokenURL())}
		for _, auth := range []string{token.AuthBasic, token.AuthBody, token.AuthNone} {
			p := jsonProvider(srv.tokenURL())
			p.ClientID, p.ClientSecret, p.ClientAuth = testClientID, testCS, auth
			provs = append(provs, p)
			p = formProvider(srv.tokenURL())
			p.ClientAuth = auth
			provs = append(provs, p)
		}
		for _, p := range provs {
			name := fmt.Sprintf("%d %s/%s/%s", status, p.Grant, p.Body, p.ClientAuth)
			_, err := newTestClient(t, p, Options{}).Refresh(context.Background(), testRT)
			if err == nil {
				t.Fatalf("%s: got success, want an error", name)
			}
			text := err.Error() + fmt.Sprintf(" %+v %#v", err, err)
			for _, s := range secrets {
				if strings.Contains(text, s) {
					t.Errorf("%s: error leaks %q: %s", name, s, text)
				}
			}
			if !strings.Contains(err.Error(), redactedText) {
				t.Errorf("%s: got %q, want the echoed values shown as %s", name, err, redactedText)
			}
		}
	}
}

func TestRedactBeforeTruncate(t *testing.T) {
	// The secret straddles the 200-character cut: it must not survive even in part.
	msg := strings.Repeat("a", 190) + testRT + strings.Repeat("b", 50)
	got := newRedactor(testRT).text(msg)
	if strings.Contains(got, testRT[:8]) {
		t.Errorf("got %q, want no part of the secret", got)
	}
	if n := len([]rune(got)); n > maxText {
		t.Errorf("got %d characters, want at most %d", n, maxText)
	}
	// Whitespace variations of a secret with a space are still caught.
	if got := newRedactor("a b\tc").text("x a  b\nc y"); strings.Contains(got, "a b c") {
		t.Errorf("got %q, want the secret redacted", got)
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Class: ErrRejected, Status: 400, Code: "invalid_grant", Message: "used"}, "provider: rejected: 400 invalid_grant: used"},
		{&Error{Class: ErrThrottled, Status: 429, RetryAfter: time.Minute}, "provider: throttled: 429 (retry after 1m0s)"},
		{&Error{Class: ErrTransient, Err: errors.New("dial tcp: refused")}, "provider: transient: dial tcp: refused"},
		{&Error{Class: ErrMalformed, Status: 200, Message: "no access_token"}, "provider: malformed response: 200: no access_token"},
		{&Error{Class: ErrUnexpected, Status: 403, Message: "Forbidden"}, "provider: unexpected response: 403: Forbidden"},
		{&Error{Class: ErrMalformed, Status: 200, Message: "no access_token", NewRefreshToken: "rt-salvaged-x"}, "provider: malformed response: 200: no access_token (the answer carried a new refresh token)"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func TestConcurrentRefresh(t *testing.T) {
	var mu sync.Mutex
	n := 0
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		mu.Lock()
		n++
		i := n
		mu.Unlock()
		vals, _ := url.ParseQuery(string(body))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"at-%d","refresh_token":"%s-next","expires_in":60}`, i, vals.Get("refresh_token"))
	})
	c := newTestClient(t, formProvider(srv.tokenURL()), Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rt := token.Secret(fmt.Sprintf("rt-%d", i))
			r, err := c.Refresh(context.Background(), rt)
			if err != nil {
				errs <- err
				return
			}
			if want := rt.Reveal() + "-next"; r.RefreshToken.Reveal() != want {
				errs <- fmt.Errorf("got refresh token %q, want %q", r.RefreshToken.Reveal(), want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
