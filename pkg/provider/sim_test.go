package provider_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/provider"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

var simT0 = time.Date(2026, 7, 3, 6, 0, 0, 0, time.UTC)

const (
	simClientID     = "tr-client"
	simClientSecret = "cs-sim-8Hq2Lw9Zt4"
	simEntityID     = "AA-FIU-001"
	simEntitySecret = "es-sim-3Vn6Rb1Xk7"
)

// sim is what every simulator offers that these tests use.
type sim interface {
	URL() string
	Requests() int
	Count(status int) int
	Issued() []string
	FailNext(n, status int)
	RespondNext(status int, header http.Header, body []byte)
	SetRetryAfter(d time.Duration)
	SetLatency(d time.Duration)
	DropNextResponse()
}

func newClient(t *testing.T, p token.Provider, now func() time.Time, timeout time.Duration) *provider.Client {
	t.Helper()
	c, err := provider.New(p, provider.Options{Now: now, Timeout: timeout})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// refresh makes one call and checks it cost exactly one request at the simulator and that
// an error names no token the simulator ever issued nor any of the secrets.
func refresh(t *testing.T, s sim, c *provider.Client, rt string) (*provider.Result, error) {
	t.Helper()
	before := s.Requests()
	r, err := c.Refresh(context.Background(), token.Secret(rt))
	if got := s.Requests() - before; got != 1 {
		t.Errorf("the call made %d requests, want exactly 1", got)
	}
	if err != nil {
		noLeak(t, err, append(s.Issued(), rt, simClientSecret, simEntitySecret)...)
	}
	return r, err
}

func noLeak(t *testing.T, err error, secrets ...string) {
	t.Helper()
	text := err.Error() + fmt.Sprintf(" | %v | %+v | %#v", err, err, err)
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("error leaks a secret value: %s", text)
		}
	}
}

// wantErr checks the class, status and code of err.
func wantErr(t *testing.T, err error, class error, status int, code string) *provider.Error {
	t.Helper()
	var e *provider.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v, want a *provider.Error", err)
	}
	if !errors.Is(err, class) {
		t.Errorf("got %v, want class %v", err, class)
	}
	if e.Status != status || e.Code != code {
		t.Errorf("got status %d code %q, want %d %q (%v)", e.Status, e.Code, status, code, err)
	}
	return e
}

func rotatingProvider(url, auth string) token.Provider {
	return token.Provider{Grant: token.GrantRefreshToken, Body: token.BodyForm, TokenURL: url,
		ClientID: simClientID, ClientSecret: simClientSecret, ClientAuth: auth,
		Scope: providersim.DefaultRotatingScope}
}

func TestRotatingRefreshAndAuthStyles(t *testing.T) {
	for _, auth := range []string{token.AuthBasic, token.AuthBody, ""} {
		t.Run("client_auth="+auth, func(t *testing.T) {
			clock := providersim.NewClock(simT0)
			s := providersim.NewRotating(providersim.RotatingOptions{ClientID: simClientID, ClientSecret: simClientSecret, Now: clock.Now})
			t.Cleanup(s.Close)
			c := newClient(t, rotatingProvider(s.URL(), auth), clock.Now, 0)
			rt0 := s.Seed("")

			r, err := refresh(t, s, c, rt0)
			if err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if !r.Rotated || r.RefreshToken.Reveal() != s.Live(rt0) || r.RefreshToken.Reveal() == rt0 {
				t.Errorf("got rotated=%v, want the simulator's new live refresh token", r.Rotated)
			}
			if !strings.HasPrefix(r.AccessToken.Reveal(), "rot_at_") || r.TokenType != "Bearer" {
				t.Errorf("got access token type %q, want a rot_at_ Bearer token", r.TokenType)
			}
			if want := simT0.Add(15 * time.Minute); !r.ExpiresAt.Equal(want) {
				t.Errorf("ExpiresAt: got %v, want %v", r.ExpiresAt, want)
			}
			if r.Scope != providersim.DefaultRotatingScope {
				t.Errorf("Scope: got %q, want %q", r.Scope, providersim.DefaultRotatingScope)
			}

			// Single use: the next refresh uses the new token; the old one is invalid_grant.
			clock.Advance(10 * time.Minute)
			r2, err := refresh(t, s, c, r.RefreshToken.Reveal())
			if err != nil {
				t.Fatalf("second Refresh: %v", err)
			}
			if want := simT0.Add(25 * time.Minute); !r2.ExpiresAt.Equal(want) {
				t.Errorf("ExpiresAt: got %v, want %v", r2.ExpiresAt, want)
			}
			_, err = refresh(t, s, c, rt0)
			wantErr(t, err, provider.ErrRejected, 400, "invalid_grant")

			wantStyle := auth
			if wantStyle == "" {
				wantStyle = providersim.AuthBasic
			}
			if got := s.AuthStyles(); !slices.Equal(got, []string{wantStyle, wantStyle, wantStyle}) {
				t.Errorf("AuthStyles: got %v, want %s three times", got, wantStyle)
			}
		})
	}
}

func TestRotatingPublicClient(t *testing.T) {
	s := providersim.NewRotating(providersim.RotatingOptions{ClientID: "public-app", Now: providersim.NewClock(simT0).Now})
	t.Cleanup(s.Close)
	p := token.Provider{Grant: token.GrantRefreshToken, TokenURL: s.URL(), ClientID: "public-app", ClientAuth: token.AuthNone}
	c := newClient(t, p, nil, 0)
	if _, err := refresh(t, s, c, s.Seed("")); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if got := s.AuthStyles(); !slices.Equal(got, []string{providersim.AuthNone}) {
		t.Errorf("AuthStyles: got %v, want [none]", got)
	}
}

func TestRotatingRejections(t *testing.T) {
	clock := providersim.NewClock(simT0)
	s := providersim.NewRotating(providersim.RotatingOptions{ClientID: simClientID, ClientSecret: simClientSecret, Now: clock.Now})
	t.Cleanup(s.Close)

	wrong := rotatingProvider(s.URL(), token.AuthBasic)
	wrong.ClientSecret = "not-the-secret"
	_, err := refresh(t, s, newClient(t, wrong, clock.Now, 0), s.Seed(""))
	wantErr(t, err, provider.ErrRejected, 401, "invalid_client")

	c := newClient(t, rotatingProvider(s.URL(), token.AuthBasic), clock.Now, 0)
	_, err = refresh(t, s, c, "rot_rt_never-issued")
	wantErr(t, err, provider.ErrRejected, 400, "invalid_grant")

	old := s.Seed("")
	clock.Advance(30*24*time.Hour + time.Second)
	_, err = refresh(t, s, c, old)
	e := wantErr(t, err, provider.ErrRejected, 400, "invalid_grant")
	if !strings.Contains(e.Message, "expired") {
		t.Errorf("Message: got %q, want the provider's 'expired' description", e.Message)
	}
}

func TestRotatingInjectedFailures(t *testing.T) {
	clock := providersim.NewClock(simT0)
	s := providersim.NewRotating(providersim.RotatingOptions{ClientID: simClientID, ClientSecret: simClientSecret, Now: clock.Now})
	t.Cleanup(s.Close)
	c := newClient(t, rotatingProvider(s.URL(), token.AuthBasic), clock.Now, 0)
	rt := s.Seed("")
	tests := []struct {
		status int
		class  error
		code   string
	}{
		{400, provider.ErrRejected, "invalid_grant"},
		{401, provider.ErrRejected, "invalid_client"},
		{429, provider.ErrThrottled, "rate_limit_exceeded"},
		{500, provider.ErrTransient, "server_error"},
		{502, provider.ErrTransient, ""},
		{503, provider.ErrTransient, "temporarily_unavailable"},
		{504, provider.ErrTransient, ""},
	}
	for _, tt := range tests {
		s.FailNext(1, tt.status)
		_, err := refresh(t, s, c, rt)
		if e := wantErr(t, err, tt.class, tt.status, tt.code); e != nil && e.Unanswered {
			t.Errorf("%d: got Unanswered, want false: the provider answered", tt.status)
		}
		if got := s.Count(tt.status); got != 1 {
			t.Errorf("%d: the simulator answered it %d times, want 1", tt.status, got)
		}
	}
	if s.Live(rt) != rt {
		t.Error("an injected failure consumed the refresh token")
	}
	if _, err := refresh(t, s, c, rt); err != nil { // the token still works afterwards
		t.Fatalf("Refresh after failures: %v", err)
	}
}

func TestRetryAfterFromSimulators(t *testing.T) {
	clock := providersim.NewClock(simT0)
	rot := providersim.NewRotating(providersim.RotatingOptions{ClientID: simClientID, ClientSecret: simClientSecret, Now: clock.Now})
	t.Cleanup(rot.Close)
	sah := providersim.NewSahamati(providersim.SahamatiOptions{EntityID: simEntityID, Secret: simEntitySecret, DailyLimit: 1, Now: clock.Now})
	t.Cleanup(sah.Close)
	rc := newClient(t, rotatingProvider(rot.URL(), token.AuthBasic), clock.Now, 0)
	sc := newClient(t, sahamatiProvider(sah.URL()), clock.Now, 0)

	// Seconds, from the simulator's own 429 and 503.
	rot.SetRetryAfter(90 * time.Second)
	rot.FailNext(1, 429)
	_, err := refresh(t, rot, rc, rot.Seed(""))
	if e := wantErr(t, err, provider.ErrThrottled, 429, "rate_limit_exceeded"); e.RetryAfter != 90*time.Second {
		t.Errorf("RetryAfter: got %v, want 1m30s", e.RetryAfter)
	}
	rot.FailNext(1, 503)
	_, err = refresh(t, rot, rc, rot.Seed(""))
	if e := wantErr(t, err, provider.ErrTransient, 503, "temporarily_unavailable"); e.RetryAfter != 90*time.Second {
		t.Errorf("503 RetryAfter: got %v, want 1m30s", e.RetryAfter)
	}

	// An HTTP-date, relative to the injected clock (SetRetryAfter would overwrite it).
	rot.SetRetryAfter(0)
	rot.RespondNext(429, http.Header{"Content-Type": {"application/json"}, "Retry-After": {clock.Now().Add(2 * time.Hour).Format(http.TimeFormat)}},
		[]byte(`{"error":"slow_down"}`))
	_, err = refresh(t, rot, rc, rot.Seed(""))
	if e := wantErr(t, err, provider.ErrThrottled, 429, "slow_down"); e.RetryAfter != 2*time.Hour {
		t.Errorf("RetryAfter: got %v, want 2h", e.RetryAfter)
	}

	// Sahamati's real quota 429, with and without Retry-After.
	if _, err := refresh(t, sah, sc, ""); err != nil {
		t.Fatalf("Sahamati: %v", err)
	}
	_, err = refresh(t, sah, sc, "")
	if e := wantErr(t, err, provider.ErrThrottled, 429, "Limit Exceeded"); e.RetryAfter != 0 || e.Message != "Limit Exceeded" {
		t.Errorf("got RetryAfter %v message %q, want 0 and Limit Exceeded", e.RetryAfter, e.Message)
	}
	sah.SetRetryAfter(time.Hour)
	_, err = refresh(t, sah, sc, "")
	if e := wantErr(t, err, provider.ErrThrottled, 429, "Limit Exceeded"); e.RetryAfter != time.Hour {
		t.Errorf("RetryAfter: got %v, want 1h", e.RetryAfter)
	}
}

func TestOddAnswers(t *testing.T) {
	clock := providersim.NewClock(simT0)
	rot := providersim.NewRotating(providersim.RotatingOptions{ClientID: simClientID, ClientSecret: simClientSecret, Now: clock.Now})
	t.Cleanup(rot.Close)
	vault := providersim.NewVault(providersim.VaultOptions{Now: clock.Now})
	t.Cleanup(vault.Close)
	rc := newClient(t, rotatingProvider(rot.URL(), token.AuthBasic), clock.Now, 0)
	vc := newClient(t, vaultProvider(vault.URL()), clock.Now, 0)
	jsonCT := http.Header{"Content-Type": {"application/json"}}

	// No refresh token in the answer: keep the old one.
	for _, tc := range []struct {
		s sim
		c *provider.Client
	}{{rot, rc}, {vault, vc}} {
		tc.s.RespondNext(200, jsonCT, []byte(`{"access_token":"at-kept-1","token_type":"Bearer","expires_in":900}`))
		r, err := refresh(t, tc.s, tc.c, "rt-old-kept")
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		if r.RefreshToken.Reveal() != "rt-old-kept" || r.Rotated {
			t.Errorf("got rotated=%v, want the old refresh token kept", r.Rotated)
		}
	}

	// Over 1 MiB, non-JSON, no access token: malformed.
	big := []byte(`{"access_token":"at-big","expires_in":900,"pad":"` + strings.Repeat("x", 1<<20) + `"}`)
	for name, body := range map[string][]byte{
		"over 1 MiB":      big,
		"HTML":            []byte("<html><body>Welcome</body></html>"),
		"no access token": []byte(`{"token_type":"Bearer","expires_in":900}`),
		"expires_in 0":    []byte(`{"access_token":"at-zero","expires_in":0}`),
	} {
		rot.RespondNext(200, jsonCT, body)
		_, err := refresh(t, rot, rc, rot.Seed(""))
		if e := wantErr(t, err, provider.ErrMalformed, 200, ""); e.Message == "" {
			t.Errorf("%s: want a reason in Message", name)
		}
		noLeak(t, err, "at-big", "at-zero")
	}

	// The provider echoes the refresh token it was sent.
	rt := rot.Seed("")
	rot.RespondNext(400, jsonCT, []byte(`{"error":"invalid_grant","error_description":"refresh token `+rt+` was already used"}`))
	_, err := refresh(t, rot, rc, rt)
	if e := wantErr(t, err, provider.ErrRejected, 400, "invalid_grant"); !strings.Contains(e.Message, "[redacted]") {
		t.Errorf("Message: got %q, want the echoed token redacted", e.Message)
	}
}

func TestDroppedResponseThenReuseGrace(t *testing.T) {
	clock := providersim.NewClock(simT0)
	s := providersim.NewRotating(providersim.RotatingOptions{ClientID: simClientID, ClientSecret: simClientSecret, ReuseGrace: time.Minute, Now: clock.Now})
	t.Cleanup(s.Close)
	c := newClient(t, rotatingProvider(s.URL(), token.AuthBasic), clock.Now, 0)
	rt := s.Seed("")

	s.DropNextResponse()
	_, err := refresh(t, s, c, rt)
	if e := wantErr(t, err, provider.ErrTransient, 0, ""); e != nil && !e.Unanswered {
		t.Error("a dropped answer: got Unanswered false, want true (the request was sent)")
	}
	if s.Live(rt) == rt {
		t.Fatal("the dropped request did not rotate; the test proves nothing")
	}
	// Inside the grace the same token answers again with the same successor.
	clock.Advance(30 * time.Second)
	r, err := refresh(t, s, c, rt)
	if err != nil {
		t.Fatalf("Refresh in grace: %v", err)
	}
	if r.RefreshToken.Reveal() != s.Live(rt) {
		t.Error("got a refresh token other than the live successor")
	}
}

func TestTimeoutIsTransientAtSimulator(t *testing.T) {
	s := providersim.NewVault(providersim.VaultOptions{})
	t.Cleanup(s.Close)
	s.SetLatency(time.Minute)
	c := newClient(t, vaultProvider(s.URL()), nil, 200*time.Millisecond)
	rt := s.Seed()
	_, err := refresh(t, s, c, rt)
	e := wantErr(t, err, provider.ErrTransient, 0, "")
	if !errors.Is(err, context.DeadlineExceeded) || e.Err == nil {
		t.Errorf("got %v, want the deadline in the chain", err)
	}
	if e != nil && !e.Unanswered {
		t.Error("a timed-out request: got Unanswered false, want true (the request was sent)")
	}
	s.SetLatency(0)
	if s.Live() != rt {
		t.Error("the abandoned request changed the simulator's state")
	}
}

func TestRedirectToSimulatorNotFollowed(t *testing.T) {
	s := providersim.NewRotating(providersim.RotatingOptions{ClientID: simClientID, ClientSecret: simClientSecret})
	t.Cleanup(s.Close)
	redir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, s.URL(), http.StatusFound)
	}))
	t.Cleanup(redir.Close)
	c := newClient(t, rotatingProvider(redir.URL+"/oauth2/token", token.AuthBasic), nil, 0)
	_, err := c.Refresh(context.Background(), token.Secret(s.Seed("")))
	wantErr(t, err, provider.ErrUnexpected, http.StatusFound, "")
	if n := s.Requests(); n != 0 {
		t.Errorf("the redirect target got %d requests, want 0", n)
	}
}

func vaultProvider(url string) token.Provider {
	return token.Provider{Grant: token.GrantRefreshToken, Body: token.BodyJSON, TokenURL: url}
}

func TestVault(t *testing.T) {
	clock := providersim.NewClock(simT0)
	s := providersim.NewVault(providersim.VaultOptions{Now: clock.Now})
	t.Cleanup(s.Close)
	c := newClient(t, vaultProvider(s.URL()), clock.Now, 0)
	rt0 := s.Seed()

	r, err := refresh(t, s, c, rt0)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if !r.Rotated || r.RefreshToken.Reveal() != s.Live() || !strings.HasPrefix(r.AccessToken.Reveal(), "vlt_at_") {
		t.Errorf("got rotated=%v, want vault's new live refresh token and a vlt_at_ access token", r.Rotated)
	}
	if want := simT0.Add(24 * time.Hour); !r.ExpiresAt.Equal(want) || r.Scope == "" {
		t.Errorf("got ExpiresAt %v scope %q, want %v and vault's scope", r.ExpiresAt, r.Scope, want)
	}

	_, err = refresh(t, s, c, rt0)
	e := wantErr(t, err, provider.ErrRejected, 401, "UNAUTHORIZED")
	if !strings.Contains(e.Message, "revoked") {
		t.Errorf("Message: got %q, want vault's 'revoked'", e.Message)
	}

	live := s.Live()
	s.ExpireRefresh(live)
	_, err = refresh(t, s, c, live)
	e = wantErr(t, err, provider.ErrRejected, 401, "UNAUTHORIZED")
	if !strings.HasPrefix(e.Message, "The Token has expired on ") {
		t.Errorf("Message: got %q, want the seed's 'The Token has expired on …'", e.Message)
	}
	want := "provider: rejected: 401 UNAUTHORIZED: The Token has expired on "
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Error(): got %q, want prefix %q", err, want)
	}

	// The body format is checked at the simulator: a form body is refused.
	form := vaultProvider(s.URL())
	form.Body = token.BodyForm
	_, err = refresh(t, s, newClient(t, form, clock.Now, 0), s.Seed())
	e = wantErr(t, err, provider.ErrUnexpected, 400, "BAD_REQUEST") // a request problem, not refused credentials
	if !strings.Contains(e.Message, "application/json") {
		t.Errorf("Message: got %q, want vault's Content-Type complaint", e.Message)
	}

	s.FailNext(1, 500)
	_, err = refresh(t, s, c, s.Seed())
	wantErr(t, err, provider.ErrTransient, 500, "INTERNAL_SERVER_ERROR")
	s.FailNext(1, 429)
	_, err = refresh(t, s, c, s.Seed())
	wantErr(t, err, provider.ErrThrottled, 429, "TOO_MANY_REQUESTS")
}

func TestClientCredentials(t *testing.T) {
	for _, auth := range []string{token.AuthBasic, token.AuthBody} {
		t.Run(auth, func(t *testing.T) {
			clock := providersim.NewClock(simT0)
			s := providersim.NewClientCredentials(providersim.ClientCredentialsOptions{
				ClientID: simClientID, ClientSecret: simClientSecret, Scope: "fund.read fund.write", TTL: 30 * time.Minute, Now: clock.Now})
			t.Cleanup(s.Close)
			p := token.Provider{Grant: token.GrantClientCredentials, TokenURL: s.URL(),
				ClientID: simClientID, ClientSecret: simClientSecret, ClientAuth: auth, Scope: "fund.read"}
			r, err := refresh(t, s, newClient(t, p, clock.Now, 0), "")
			if err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if !strings.HasPrefix(r.AccessToken.Reveal(), "cc_at_") || r.Scope != "fund.read" || r.Rotated || !r.RefreshToken.IsZero() {
				t.Errorf("got scope %q rotated %v, want a cc_at_ token for fund.read and no refresh token", r.Scope, r.Rotated)
			}
			if want := simT0.Add(30 * time.Minute); !r.ExpiresAt.Equal(want) {
				t.Errorf("ExpiresAt: got %v, want %v", r.ExpiresAt, want)
			}

			wide := p
			wide.Scope = "fund.read admin"
			_, err = refresh(t, s, newClient(t, wide, clock.Now, 0), "")
			wantErr(t, err, provider.ErrUnexpected, 400, "invalid_scope")

			bad := p
			bad.ClientSecret = "wrong-secret"
			_, err = refresh(t, s, newClient(t, bad, clock.Now, 0), "")
			wantErr(t, err, provider.ErrRejected, 401, "invalid_client")

			if got := s.AuthStyles(); !slices.Equal(got, []string{auth, auth, auth}) {
				t.Errorf("AuthStyles: got %v, want %s three times", got, auth)
			}

			s.FailNext(1, 429)
			_, err = refresh(t, s, newClient(t, p, clock.Now, 0), "")
			wantErr(t, err, provider.ErrThrottled, 429, "rate_limit_exceeded")
		})
	}
}

func sahamatiProvider(url string) token.Provider {
	return token.Provider{Grant: token.GrantSahamatiEntity, TokenURL: url, EntityID: simEntityID, EntitySecret: simEntitySecret}
}

func TestSahamati(t *testing.T) {
	clock := providersim.NewClock(simT0)
	s := providersim.NewSahamati(providersim.SahamatiOptions{EntityID: simEntityID, Secret: simEntitySecret, DailyLimit: 3, Now: clock.Now})
	t.Cleanup(s.Close)
	c := newClient(t, sahamatiProvider(s.URL()), clock.Now, 0)

	r, err := refresh(t, s, c, "")
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if !s.Valid(r.AccessToken.Reveal()) || r.TokenType != "Bearer" || r.Scope == "" {
		t.Errorf("got type %q scope %q, want a valid Bearer token with Sahamati's scope", r.TokenType, r.Scope)
	}
	if want := simT0.Add(24 * time.Hour); !r.ExpiresAt.Equal(want) || !r.RefreshExpiresAt.IsZero() {
		t.Errorf("got ExpiresAt %v RefreshExpiresAt %v, want %v and none", r.ExpiresAt, r.RefreshExpiresAt, want)
	}

	wrong := sahamatiProvider(s.URL())
	wrong.EntitySecret = "es-wrong-secret"
	_, err = refresh(t, s, newClient(t, wrong, clock.Now, 0), "")
	e := wantErr(t, err, provider.ErrRejected, 401, "Unauthorized")
	if e.Message != "Invalid entity id/secret or secret is expired" {
		t.Errorf("Message: got %q, want Sahamati's errorMsg", e.Message)
	}
	noLeak(t, err, "es-wrong-secret")

	s.FailNext(1, 502)
	_, err = refresh(t, s, c, "")
	wantErr(t, err, provider.ErrTransient, 502, "")

	// Quota: 3 a day, failures counted too; the 4th is 429 Limit Exceeded.
	if _, err := refresh(t, s, c, ""); err != nil {
		t.Fatalf("third request: %v", err)
	}
	_, err = refresh(t, s, c, "")
	wantErr(t, err, provider.ErrThrottled, 429, "Limit Exceeded")
	if got := s.UsedToday(); got != 4 {
		t.Errorf("UsedToday: got %d, want 4", got)
	}

	// 61 days later the entity secret has expired.
	clock.Advance(61 * 24 * time.Hour)
	_, err = refresh(t, s, c, "")
	wantErr(t, err, provider.ErrRejected, 401, "Unauthorized")
}

// TestProxyAnswersDoNotReject: a WAF, a gateway or a misroute in front of a real simulator is
// ErrUnexpected, and the simulator's refresh token stays live for the next run.
func TestProxyAnswersDoNotReject(t *testing.T) {
	clock := providersim.NewClock(simT0)
	rot := providersim.NewRotating(providersim.RotatingOptions{ClientID: simClientID, ClientSecret: simClientSecret, Now: clock.Now})
	t.Cleanup(rot.Close)
	c := newClient(t, rotatingProvider(rot.URL(), token.AuthBasic), clock.Now, 0)
	rt := rot.Seed("")
	html := http.Header{"Content-Type": {"text/html"}}
	for _, tc := range []struct {
		status     int
		body, code string
	}{
		{403, "<html><head><title>403 Forbidden</title></head><body>Request blocked by the web application firewall</body></html>", ""},
		{404, "<html><body>Not Found</body></html>", ""},
		{401, "<html><body>401 Authorization Required</body></html>", ""},
		{400, `{"error":"invalid_request","error_description":"The request is missing a required parameter."}`, "invalid_request"},
	} {
		rot.RespondNext(tc.status, html, []byte(tc.body))
		_, err := refresh(t, rot, c, rt)
		wantErr(t, err, provider.ErrUnexpected, tc.status, tc.code)
		if errors.Is(err, provider.ErrRejected) {
			t.Errorf("%d: got %v, want not rejected", tc.status, err)
		}
	}
	if rot.Live(rt) != rt {
		t.Fatal("a proxy answer consumed the refresh token")
	}
	if _, err := refresh(t, rot, c, rt); err != nil {
		t.Fatalf("Refresh after the proxy answers: %v", err)
	}
}

// TestMalformedAnswerKeepsRotatedToken: an unusable 2xx from the vault simulator that carries
// a new refresh token hands it back on the error.
func TestMalformedAnswerKeepsRotatedToken(t *testing.T) {
	s := providersim.NewVault(providersim.VaultOptions{})
	t.Cleanup(s.Close)
	c := newClient(t, vaultProvider(s.URL()), nil, 0)
	const rotated = "vlt_rt_salvaged_4Kd9"
	for name, body := range map[string]string{
		"no access_token": `{"refresh_token":"` + rotated + `","token_type":"Bearer","expires_in":86400}`,
		"expires_in zero": `{"access_token":"vlt_at_zero_1","refresh_token":"` + rotated + `","expires_in":0}`,
	} {
		s.RespondNext(200, http.Header{"Content-Type": {"application/json"}}, []byte(body))
		r, err := refresh(t, s, c, s.Seed())
		e := wantErr(t, err, provider.ErrMalformed, 200, "")
		if r != nil || e.NewRefreshToken.Reveal() != rotated {
			t.Errorf("%s: got result %v and NewRefreshToken %q, want nil and the rotated token", name, r, e.NewRefreshToken.Reveal())
		}
		noLeak(t, err, rotated, "vlt_at_zero_1")
	}
}

// A request that never reached a server cannot have spent anything.
func TestConnectionRefusedIsNotUnanswered(t *testing.T) {
	s := providersim.NewVault(providersim.VaultOptions{})
	url := s.URL()
	rt := s.Seed()
	s.Close() // nothing listens there now
	c := newClient(t, vaultProvider(url), nil, time.Second)
	_, err := c.Refresh(context.Background(), token.Secret(rt))
	var e *provider.Error
	if !errors.As(err, &e) || !errors.Is(err, provider.ErrTransient) {
		t.Fatalf("got %v, want a transient *provider.Error", err)
	}
	if e.Unanswered {
		t.Error("connection refused: got Unanswered true, want false (nothing was sent)")
	}
}
