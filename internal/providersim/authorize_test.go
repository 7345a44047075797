package providersim

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

// noRedirect is a client that hands back the authorization endpoint's redirect
// instead of following it (there is no listener at the redirect URI).
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

const testRedirect = "http://127.0.0.1:53682/callback"

type authRequest struct {
	verifier string
	values   url.Values
}

func newAuthRequest(scope string) authRequest {
	v := oauth2.GenerateVerifier()
	return authRequest{verifier: v, values: url.Values{
		"response_type": {"code"}, "client_id": {testClientID}, "redirect_uri": {testRedirect},
		"scope": {scope}, "state": {"st-123"},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(v)}, "code_challenge_method": {"S256"},
	}}
}

// authorizeRedirect GETs /authorize and returns the status and the parsed Location.
func authorizeRedirect(t *testing.T, p *Rotating, q url.Values) (int, *url.URL) {
	t.Helper()
	resp, err := noRedirect.Get(p.AuthorizeURL() + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		return resp.StatusCode, nil
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, loc
}

func exchangeReq(t *testing.T, p *Rotating, code, verifier, redirect string) reply {
	t.Helper()
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}}
	if verifier != "" {
		form.Set("code_verifier", verifier)
	}
	req := newPost(t, p.URL(), formType, form.Encode())
	req.SetBasicAuth(url.QueryEscape(testClientID), url.QueryEscape(testClientSecret))
	return send(t, req)
}

func TestAuthorizeCodeFlow(t *testing.T) {
	clock := NewClock(t0)
	p := newTestRotating(t, clock, nil)
	ar := newAuthRequest(acmeScope)
	status, loc := authorizeRedirect(t, p, ar.values)
	if status != http.StatusFound {
		t.Fatalf("authorize: got status %d, want 302", status)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != testRedirect {
		t.Errorf("redirect: got %s, want %s", got, testRedirect)
	}
	code := loc.Query().Get("code")
	if code == "" || loc.Query().Get("state") != "st-123" {
		t.Fatalf("redirect query: got %s, want a code and state st-123", loc.RawQuery)
	}

	r := exchangeReq(t, p, code, ar.verifier, testRedirect)
	wantStatus(t, r, http.StatusOK)
	wantKeys(t, r, "access_token", "token_type", "expires_in", "refresh_token", "scope")
	rt := r.str("refresh_token")
	if r.str("scope") != acmeScope || p.Scope(rt) != acmeScope || p.Live(rt) != rt || !p.Valid(r.str("access_token")) {
		t.Errorf("exchange: scope %q, family scope %q, live %v, access valid %v", r.str("scope"), p.Scope(rt), p.Live(rt) == rt, p.Valid(r.str("access_token")))
	}
	// The refresh token from the code grant rotates like any other.
	next := refreshRotating(t, p, rt)
	wantStatus(t, next, http.StatusOK)
	if p.Live(rt) != next.str("refresh_token") {
		t.Errorf("after refresh: live is not the new refresh token")
	}

	// A code is single use: the second exchange fails and revokes what the first issued.
	again := exchangeReq(t, p, code, ar.verifier, testRedirect)
	wantOAuthError(t, again, http.StatusBadRequest, "invalid_grant")
	if p.Live(rt) != "" || p.Valid(r.str("access_token")) {
		t.Errorf("code reuse: the family it issued is still live")
	}
	if p.Authorizations() != 1 || p.Families() != 1 {
		t.Errorf("got %d authorizations and %d families, want 1 and 1", p.Authorizations(), p.Families())
	}
}

func TestAuthorizeExchangeRejects(t *testing.T) {
	tests := []struct {
		name     string
		verifier func(ar authRequest) string
		redirect string
		advance  bool
	}{
		{"wrong verifier", func(authRequest) string { return oauth2.GenerateVerifier() }, testRedirect, false},
		{"no verifier", func(authRequest) string { return "" }, testRedirect, false},
		{"other redirect_uri", func(ar authRequest) string { return ar.verifier }, "http://127.0.0.1:1/callback", false},
		{"expired code", func(ar authRequest) string { return ar.verifier }, testRedirect, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := NewClock(t0)
			p := newTestRotating(t, clock, nil)
			ar := newAuthRequest(acmeScope)
			_, loc := authorizeRedirect(t, p, ar.values)
			if loc == nil {
				t.Fatal("authorize did not redirect")
			}
			if tt.advance {
				clock.Advance(codeTTL)
			}
			r := exchangeReq(t, p, loc.Query().Get("code"), tt.verifier(ar), tt.redirect)
			wantOAuthError(t, r, http.StatusBadRequest, "invalid_grant")
			if p.Families() != 0 {
				t.Errorf("families: got %d, want 0", p.Families())
			}
		})
	}
}

func TestAuthorizeRequestErrors(t *testing.T) {
	tests := []struct {
		name       string
		mod        func(url.Values)
		wantStatus int
		wantError  string // in the redirect; "" for a 400 page
	}{
		{"unknown client", func(v url.Values) { v.Set("client_id", "nobody") }, http.StatusBadRequest, ""},
		{"non-loopback redirect", func(v url.Values) { v.Set("redirect_uri", "http://example.com:8080/cb") }, http.StatusBadRequest, ""},
		{"no PKCE", func(v url.Values) { v.Del("code_challenge") }, http.StatusFound, "invalid_request"},
		{"plain PKCE", func(v url.Values) { v.Set("code_challenge_method", "plain") }, http.StatusFound, "invalid_request"},
		{"token response type", func(v url.Values) { v.Set("response_type", "token") }, http.StatusFound, "unsupported_response_type"},
		{"no business", func(v url.Values) { v.Set("scope", "offline_access fund.read") }, http.StatusFound, "invalid_scope"},
		{"two businesses", func(v url.Values) { v.Set("scope", acmeScope+" target:b/other") }, http.StatusFound, "invalid_scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestRotating(t, NewClock(t0), nil)
			ar := newAuthRequest(acmeScope)
			tt.mod(ar.values)
			status, loc := authorizeRedirect(t, p, ar.values)
			if status != tt.wantStatus {
				t.Fatalf("status: got %d, want %d", status, tt.wantStatus)
			}
			if tt.wantError != "" {
				if got := loc.Query().Get("error"); got != tt.wantError || loc.Query().Get("state") != "st-123" || loc.Query().Get("code") != "" {
					t.Errorf("redirect query: got %s, want error %s with state and no code", loc.RawQuery, tt.wantError)
				}
			}
			if p.Authorizations() != 0 {
				t.Errorf("authorizations: got %d, want 0", p.Authorizations())
			}
		})
	}
}

// Without offline_access the code grant issues no refresh token (the seed).
func TestAuthorizeWithoutOfflineAccess(t *testing.T) {
	p := newTestRotating(t, NewClock(t0), nil)
	ar := newAuthRequest("fund.read target:b/acme")
	_, loc := authorizeRedirect(t, p, ar.values)
	r := exchangeReq(t, p, loc.Query().Get("code"), ar.verifier, testRedirect)
	wantStatus(t, r, http.StatusOK)
	if _, ok := r.body["refresh_token"]; ok || !strings.HasPrefix(r.str("access_token"), "rot_at_") {
		t.Errorf("got %s, want an access token and no refresh token", r.raw)
	}
}

func TestAuthorizationServerMetadata(t *testing.T) {
	p := newTestRotating(t, NewClock(t0), nil)
	req, err := http.NewRequest(http.MethodGet, p.srv.URL+MetadataPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := send(t, req)
	wantStatus(t, r, http.StatusOK)
	if r.str("authorization_endpoint") != p.AuthorizeURL() || r.str("token_endpoint") != p.URL() || r.str("issuer") != p.srv.URL {
		t.Errorf("metadata: got %s", r.raw)
	}
	if m, _ := r.body["code_challenge_methods_supported"].([]any); len(m) != 1 || m[0] != "S256" {
		t.Errorf("code_challenge_methods_supported: got %v, want [S256]", r.body["code_challenge_methods_supported"])
	}
}
