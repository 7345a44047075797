package providersim

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testClientID     = "client-1"
	testClientSecret = "s3cr:t/+&="
	acmeScope        = "offline_access fund.read target:b/acme"
)

func newTestRotating(t *testing.T, clock *Clock, mod func(*RotatingOptions)) *Rotating {
	t.Helper()
	o := RotatingOptions{ClientID: testClientID, ClientSecret: testClientSecret, Now: clock.Now}
	if mod != nil {
		mod(&o)
	}
	p := NewRotating(o)
	t.Cleanup(p.Close)
	return p
}

// refreshReq builds a refresh request authenticated the way x/oauth2 does with
// AuthStyleInHeader: form-encoded id and secret inside Basic.
func refreshReq(t *testing.T, u, rt, scope string) *http.Request {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
	if scope != "" {
		form.Set("scope", scope)
	}
	req := newPost(t, u, formType, form.Encode())
	req.SetBasicAuth(url.QueryEscape(testClientID), url.QueryEscape(testClientSecret))
	return req
}

func refreshRotating(t *testing.T, p *Rotating, rt string) reply {
	t.Helper()
	return send(t, refreshReq(t, p.URL(), rt, ""))
}

func wantOAuthError(t *testing.T, r reply, status int, code string) {
	t.Helper()
	wantStatus(t, r, status)
	wantContentType(t, r, "application/json;charset=UTF-8")
	if r.str("error") != code || r.str("error_description") == "" {
		t.Errorf("error body: got %s, want error %q with a description", r.raw, code)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control: got %q, want no-store", r.header.Get("Cache-Control"))
	}
}

func wantOAuthSuccess(t *testing.T, r reply, expiresIn float64) {
	t.Helper()
	wantStatus(t, r, http.StatusOK)
	wantContentType(t, r, "application/json;charset=UTF-8")
	if r.header.Get("Cache-Control") != "no-store" || r.header.Get("Pragma") != "no-cache" {
		t.Errorf("cache headers: got Cache-Control %q Pragma %q, want no-store/no-cache",
			r.header.Get("Cache-Control"), r.header.Get("Pragma"))
	}
	if r.str("token_type") != "Bearer" || r.body["expires_in"] != expiresIn {
		t.Errorf("body: got %s, want token_type Bearer and expires_in %v", r.raw, expiresIn)
	}
}

func TestRotatingSingleUse(t *testing.T) {
	clock := NewClock(t0)
	// Forgiving mode, explicitly: this test checks that a rejected reuse alone
	// leaves the successor usable (TestRotatingReuseDetectionRevokesFamily covers the default).
	p := newTestRotating(t, clock, func(o *RotatingOptions) { o.ForgiveReuse = true })
	if !strings.HasSuffix(p.URL(), "/oauth2/token") {
		t.Fatalf("URL: got %q", p.URL())
	}
	seed := p.Seed(acmeScope)

	r := refreshRotating(t, p, seed)
	wantOAuthSuccess(t, r, 900)
	wantKeys(t, r, "access_token", "token_type", "expires_in", "refresh_token", "scope")
	at, rt1 := r.str("access_token"), r.str("refresh_token")
	if !strings.HasPrefix(at, "rot_at_") || !strings.HasPrefix(rt1, "rot_rt_") || rt1 == seed {
		t.Fatalf("tokens: got %s, want a new rot_at_ and a new rot_rt_", r.raw)
	}
	if r.str("scope") != acmeScope {
		t.Errorf("scope: got %q, want %q", r.str("scope"), acmeScope)
	}
	if p.Live(seed) != rt1 || p.Live(rt1) != rt1 {
		t.Errorf("Live: got %q, want the successor", p.Live(seed))
	}
	if !p.Valid(at) {
		t.Errorf("Valid(new access token): got false")
	}
	clock.Advance(15 * time.Minute)
	if p.Valid(at) {
		t.Errorf("Valid after 15 min: got true, want false")
	}

	// Strict single use: even a second later the old token is invalid_grant, and
	// without reuse detection the successor survives.
	wantOAuthError(t, refreshRotating(t, p, seed), http.StatusBadRequest, "invalid_grant")
	if p.Live(seed) != rt1 {
		t.Errorf("Live after reuse without detection: got %q, want the successor", p.Live(seed))
	}
	r = refreshRotating(t, p, rt1)
	wantOAuthSuccess(t, r, 900)
	wantOAuthError(t, refreshRotating(t, p, "rot_rt_unknown"), http.StatusBadRequest, "invalid_grant")
}

func TestRotatingReuseGrace(t *testing.T) {
	clock := NewClock(t0)
	// Forgiving mode, explicitly: the grace's edges are checked by reusing past it
	// and then carrying on with the chain.
	p := newTestRotating(t, clock, func(o *RotatingOptions) { o.ReuseGrace = time.Minute; o.ForgiveReuse = true })
	seed := p.Seed(acmeScope)

	first := refreshRotating(t, p, seed)
	wantOAuthSuccess(t, first, 900)
	rt1 := first.str("refresh_token")

	clock.Advance(time.Minute) // the grace's last instant
	again := refreshRotating(t, p, seed)
	wantOAuthSuccess(t, again, 900)
	if again.str("refresh_token") != rt1 {
		t.Errorf("refresh_token in grace: got a different token, want the successor already issued")
	}
	if again.str("access_token") == first.str("access_token") || !p.Valid(again.str("access_token")) {
		t.Errorf("access_token in grace: want a new, valid one")
	}
	if p.Live(seed) != rt1 {
		t.Errorf("Live after grace reuse: want the successor")
	}

	clock.Advance(time.Nanosecond) // past the grace
	wantOAuthError(t, refreshRotating(t, p, seed), http.StatusBadRequest, "invalid_grant")
	if p.Live(seed) != rt1 {
		t.Errorf("Live after reuse without detection: want the successor")
	}

	// Grace covers only the token just rotated, not an older one.
	r := refreshRotating(t, p, rt1)
	wantOAuthSuccess(t, r, 900)
	rt2 := r.str("refresh_token")
	wantOAuthSuccess(t, refreshRotating(t, p, rt1), 900) // rt1 is the just-rotated one
	wantOAuthError(t, refreshRotating(t, p, seed), http.StatusBadRequest, "invalid_grant")
	r = refreshRotating(t, p, rt2)
	wantOAuthSuccess(t, r, 900)
	wantOAuthError(t, refreshRotating(t, p, rt1), http.StatusBadRequest, "invalid_grant") // rt1's successor was used
}

func TestRotatingReuseDetectionRevokesFamily(t *testing.T) {
	clock := NewClock(t0)
	p := newTestRotating(t, clock, func(o *RotatingOptions) { o.ReuseGrace = 10 * time.Second })
	seed := p.Seed(acmeScope)
	other := p.Seed("offline_access fund.read target:b/other")

	r := refreshRotating(t, p, seed)
	wantOAuthSuccess(t, r, 900)
	at, rt1 := r.str("access_token"), r.str("refresh_token")
	// Within the grace a reuse is a retry, not an attack.
	wantOAuthSuccess(t, refreshRotating(t, p, seed), 900)
	if p.Live(seed) != rt1 {
		t.Fatalf("Live after grace reuse: want the successor")
	}

	clock.Advance(11 * time.Second)
	wantOAuthError(t, refreshRotating(t, p, seed), http.StatusBadRequest, "invalid_grant")
	if got := p.Live(seed); got != "" {
		t.Errorf("Live after detected reuse: got a token, want \"\" (family revoked)")
	}
	wantOAuthError(t, refreshRotating(t, p, rt1), http.StatusBadRequest, "invalid_grant")
	if p.Valid(at) {
		t.Errorf("Valid(access token of revoked family): got true, want false")
	}
	// The audit: the seed was presented three times (rotated, in grace, re-spent),
	// rt1 once after the revocation, which is no re-spend of rt1.
	var got []string
	for _, pr := range p.Presentations(seed) {
		got = append(got, fmt.Sprintf("%s/spent=%v/grace=%v", pr.Result, pr.Spent, pr.InGrace))
	}
	want := []string{"rotated/spent=false/grace=false", "grace/spent=true/grace=true", "reused/spent=true/grace=false"}
	if !slices.Equal(got, want) {
		t.Errorf("Presentations(seed): got %v, want %v", got, want)
	}
	if a, ok := p.AuditOf(rt1); !ok || len(a.Presentations) != 1 || a.Presentations[0].Result != PresentRevoked || a.Respent() != 0 || !a.Revoked || a.Live {
		t.Errorf("AuditOf(rt1): got %+v (ok %v), want one presentation answered revoked, no re-spend, revoked, not live", a.Presentations, ok)
	}
	if rs := p.Respent(); len(rs) != 1 || rs[0].Token != seed || rs[0].Respent() != 1 {
		t.Errorf("Respent: got %d tokens, want the seed once", len(rs))
	}
	if f, ok := p.Family(seed); !ok || !f.Revoked || !f.RevokedAt.Equal(clock.Now()) {
		t.Errorf("Family(seed): got %+v, want revoked now", f)
	}
	// Other businesses are untouched.
	if p.Live(other) != other {
		t.Errorf("Live(other family): want its seed")
	}
	wantOAuthSuccess(t, refreshRotating(t, p, other), 900)
	if p.Families() != 2 {
		t.Errorf("Families: got %d, want 2", p.Families())
	}
}

func TestRotatingRefreshTokenExpiresAfter30Days(t *testing.T) {
	clock := NewClock(t0)
	p := newTestRotating(t, clock, nil)
	seed := p.Seed("")
	clock.Advance(30*24*time.Hour - time.Second)
	r := refreshRotating(t, p, seed)
	wantOAuthSuccess(t, r, 900)
	if r.str("scope") != DefaultRotatingScope {
		t.Errorf("scope of Seed(\"\"): got %q, want %q", r.str("scope"), DefaultRotatingScope)
	}
	rt1 := r.str("refresh_token")
	clock.Advance(30 * 24 * time.Hour)
	wantOAuthError(t, refreshRotating(t, p, rt1), http.StatusBadRequest, "invalid_grant")
	if p.Live(seed) != rt1 {
		t.Errorf("Live: an expired token stays the family's live one")
	}
}

func TestRotatingScopeSubset(t *testing.T) {
	clock := NewClock(t0)
	p := newTestRotating(t, clock, nil)
	seed := p.Seed(acmeScope)

	r := send(t, refreshReq(t, p.URL(), seed, "fund.read target:b/acme"))
	wantOAuthSuccess(t, r, 900)
	if r.str("scope") != "fund.read target:b/acme" {
		t.Errorf("scope: got %q, want the requested subset", r.str("scope"))
	}
	rt1 := r.str("refresh_token")

	for _, bad := range []string{"fund.write", "fund.read target:b/other", "offline_access fund.read target:b/acme extra"} {
		wantOAuthError(t, send(t, refreshReq(t, p.URL(), rt1, bad)), http.StatusBadRequest, "invalid_scope")
		if p.Live(seed) != rt1 {
			t.Fatalf("Live after invalid_scope %q: the token must not be consumed", bad)
		}
	}
	// The successor keeps the original grant, not the subset asked for.
	r = refreshRotating(t, p, rt1)
	wantOAuthSuccess(t, r, 900)
	if r.str("scope") != acmeScope {
		t.Errorf("scope without a request: got %q, want the original %q", r.str("scope"), acmeScope)
	}
}

func TestRotatingClientAuthentication(t *testing.T) {
	clock := NewClock(t0)
	p := newTestRotating(t, clock, nil)
	seed := p.Seed(acmeScope)

	// basic
	r := refreshRotating(t, p, seed)
	wantOAuthSuccess(t, r, 900)
	rt := r.str("refresh_token")
	// body
	r = postForm(t, p.URL(), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt},
		"client_id": {testClientID}, "client_secret": {testClientSecret}})
	wantOAuthSuccess(t, r, 900)
	rt = r.str("refresh_token")
	// none: a confidential client must authenticate.
	r = postForm(t, p.URL(), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {testClientID}})
	wantOAuthError(t, r, http.StatusUnauthorized, "invalid_client")
	if r.header.Get("WWW-Authenticate") != "" {
		t.Errorf("WWW-Authenticate without Basic: got %q, want none", r.header.Get("WWW-Authenticate"))
	}
	// wrong secret over basic: 401 with a challenge
	req := refreshReq(t, p.URL(), rt, "")
	req.SetBasicAuth(testClientID, "wrong")
	r = send(t, req)
	wantOAuthError(t, r, http.StatusUnauthorized, "invalid_client")
	if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic") {
		t.Errorf("WWW-Authenticate with Basic: got %q, want a Basic challenge", r.header.Get("WWW-Authenticate"))
	}
	// wrong secret in the body: 401 without one
	r = postForm(t, p.URL(), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt},
		"client_id": {testClientID}, "client_secret": {"wrong"}})
	wantOAuthError(t, r, http.StatusUnauthorized, "invalid_client")
	if r.header.Get("WWW-Authenticate") != "" {
		t.Errorf("WWW-Authenticate with body auth: got %q, want none", r.header.Get("WWW-Authenticate"))
	}
	// two methods at once
	req = newPost(t, p.URL(), formType, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt},
		"client_secret": {testClientSecret}}.Encode())
	req.SetBasicAuth(url.QueryEscape(testClientID), url.QueryEscape(testClientSecret))
	wantOAuthError(t, send(t, req), http.StatusBadRequest, "invalid_request")

	want := []string{"basic", "body", "none", "basic", "body", "basic"}
	if got := p.AuthStyles(); !slices.Equal(got, want) {
		t.Errorf("AuthStyles: got %v, want %v", got, want)
	}
	if p.Live(seed) != rt {
		t.Errorf("Live: failed authentication must not consume the token")
	}
}

func TestRotatingPublicClient(t *testing.T) {
	p := newTestRotating(t, NewClock(t0), func(o *RotatingOptions) { o.ClientSecret = "" })
	seed := p.Seed(acmeScope)
	r := postForm(t, p.URL(), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {seed}, "client_id": {"someone-else"}})
	wantOAuthError(t, r, http.StatusUnauthorized, "invalid_client")
	r = postForm(t, p.URL(), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {seed}, "client_id": {testClientID}})
	wantOAuthSuccess(t, r, 900)
	if got := p.AuthStyles(); !slices.Equal(got, []string{"none", "none"}) {
		t.Errorf("AuthStyles: got %v, want [none none]", got)
	}
}

func TestRotatingRequestErrors(t *testing.T) {
	basic := func(req *http.Request) *http.Request {
		req.SetBasicAuth(testClientID, url.QueryEscape(testClientSecret))
		return req
	}
	tests := []struct {
		name        string
		contentType string
		body        string
		code        string
	}{
		{"unsupported grant", formType, "grant_type=client_credentials", "unsupported_grant_type"},
		{"unknown authorization code", formType, "grant_type=authorization_code&code=x", "invalid_grant"},
		{"authorization code missing", formType, "grant_type=authorization_code", "invalid_request"},
		{"missing grant", formType, "refresh_token=x", "invalid_request"},
		{"missing refresh_token", formType, "grant_type=refresh_token", "invalid_request"},
		{"repeated parameter", formType, "grant_type=refresh_token&refresh_token=a&refresh_token=b", "invalid_request"},
		{"json body", "application/json", `{"grant_type":"refresh_token","refresh_token":"x"}`, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestRotating(t, NewClock(t0), nil)
			p.Seed(acmeScope)
			wantOAuthError(t, send(t, basic(newPost(t, p.URL(), tt.contentType, tt.body))), http.StatusBadRequest, tt.code)
			if got := len(p.Issued()); got != 1 {
				t.Errorf("Issued: got %d, want only the seed", got)
			}
		})
	}
}

func TestRotatingConcurrentRefreshOneWinner(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grace time.Duration
		wins  int
	}{
		{"strict", 0, 1},
		{"grace", time.Minute, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestRotating(t, NewClock(t0), func(o *RotatingOptions) { o.ReuseGrace = tc.grace })
			seed := p.Seed(acmeScope)
			const n = 100
			start := make(chan struct{})
			results := make([]reply, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				req := refreshReq(t, p.URL(), seed, "")
				wg.Go(func() {
					<-start
					results[i], errs[i] = try(req)
				})
			}
			close(start)
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("requests: %v", err)
			}

			wins, successors := 0, map[string]bool{}
			for _, r := range results {
				switch r.status {
				case http.StatusOK:
					wins++
					successors[r.str("refresh_token")] = true
				case http.StatusBadRequest:
					if r.str("error") != "invalid_grant" {
						t.Errorf("loser: got %s, want invalid_grant", r.raw)
					}
				default:
					t.Errorf("status: got %d, want 200 or 400", r.status)
				}
			}
			if wins != tc.wins {
				t.Fatalf("successes: got %d, want %d", wins, tc.wins)
			}
			// Strict (the default, reuse detection on): the 99 late presentations are
			// re-spends and the first of them revokes the family; in grace they are retries.
			wantLive, wantRespent := p.Live(seed), 0
			if tc.grace == 0 {
				wantLive, wantRespent = "", n-1
				if f, _ := p.Family(seed); !f.Revoked {
					t.Errorf("family after %d re-spends: got not revoked, want revoked", n-1)
				}
			}
			if len(successors) != 1 || p.Live(seed) != wantLive || (wantLive != "" && !successors[wantLive]) {
				t.Errorf("successors: got %d distinct (live %v), want 1 and the family live only with a grace", len(successors), p.Live(seed) != "")
			}
			if a, _ := p.AuditOf(seed); len(a.Presentations) != n || a.Respent() != wantRespent {
				t.Errorf("audit of the seed: got %d presentations, %d re-spent, want %d and %d", len(a.Presentations), a.Respent(), n, wantRespent)
			}
			if p.Requests() != n || p.Count(http.StatusOK) != tc.wins || p.Count(http.StatusBadRequest) != n-tc.wins {
				t.Errorf("audit: got %d requests, %d×200, %d×400", p.Requests(), p.Count(200), p.Count(400))
			}
		})
	}
}
