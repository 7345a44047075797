package providersim

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

func newTestClientCredentials(t *testing.T, clock *Clock) *ClientCredentials {
	t.Helper()
	c := NewClientCredentials(ClientCredentialsOptions{
		ClientID: testClientID, ClientSecret: testClientSecret, Scope: "reports.read payments.write", Now: clock.Now,
	})
	t.Cleanup(c.Close)
	return c
}

func ccBasic(t *testing.T, u string, form url.Values, secret string) reply {
	t.Helper()
	req := newPost(t, u, formType, form.Encode())
	req.SetBasicAuth(url.QueryEscape(testClientID), url.QueryEscape(secret))
	return send(t, req)
}

func TestClientCredentials(t *testing.T) {
	clock := NewClock(t0)
	c := newTestClientCredentials(t, clock)
	if !strings.HasSuffix(c.URL(), "/oauth2/token") {
		t.Fatalf("URL: got %q", c.URL())
	}

	r := ccBasic(t, c.URL(), url.Values{"grant_type": {"client_credentials"}}, testClientSecret)
	wantOAuthSuccess(t, r, 3600)
	wantKeys(t, r, "access_token", "token_type", "expires_in", "scope")
	at := r.str("access_token")
	if !strings.HasPrefix(at, "cc_at_") || r.str("scope") != "reports.read payments.write" {
		t.Errorf("body: got %s, want a cc_at_ token with the whole scope", r.raw)
	}
	clock.Advance(time.Hour - time.Second)
	if !c.Valid(at) {
		t.Errorf("Valid 1s before 1h: got false, want true")
	}
	clock.Advance(time.Second)
	if c.Valid(at) {
		t.Errorf("Valid at 1h: got true, want false")
	}

	r = postForm(t, c.URL(), url.Values{"grant_type": {"client_credentials"}, "scope": {"reports.read"},
		"client_id": {testClientID}, "client_secret": {testClientSecret}})
	wantOAuthSuccess(t, r, 3600)
	if r.str("scope") != "reports.read" {
		t.Errorf("scope: got %q, want the requested subset", r.str("scope"))
	}

	wantOAuthError(t, ccBasic(t, c.URL(), url.Values{"grant_type": {"client_credentials"}, "scope": {"admin"}}, testClientSecret),
		http.StatusBadRequest, "invalid_scope")
	wantOAuthError(t, ccBasic(t, c.URL(), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}, testClientSecret),
		http.StatusBadRequest, "unsupported_grant_type")
	r = ccBasic(t, c.URL(), url.Values{"grant_type": {"client_credentials"}}, "wrong")
	wantOAuthError(t, r, http.StatusUnauthorized, "invalid_client")
	if r.header.Get("WWW-Authenticate") == "" {
		t.Errorf("WWW-Authenticate: got none, want a Basic challenge")
	}
	wantOAuthError(t, postForm(t, c.URL(), url.Values{"grant_type": {"client_credentials"}, "client_id": {testClientID}}),
		http.StatusUnauthorized, "invalid_client")

	want := []string{"basic", "body", "basic", "basic", "basic", "none"}
	if got := c.AuthStyles(); !slices.Equal(got, want) {
		t.Errorf("AuthStyles: got %v, want %v", got, want)
	}
	if got := len(c.Issued()); got != 2 {
		t.Errorf("Issued: got %d, want 2", got)
	}
}
