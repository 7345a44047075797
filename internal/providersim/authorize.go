package providersim

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// AuthorizePath is the rotating provider's authorization endpoint (RFC 6749 §4.1.1).
const AuthorizePath = "/authorize"

// codeTTL is how long an authorization code can be redeemed (RFC 6749 §4.1.2
// recommends at most 10 minutes).
const codeTTL = 10 * time.Minute

// rotCode is an authorization code waiting to be exchanged: bound to the redirect
// URI and the PKCE challenge it was issued for (RFC 7636 §4.4). The simulator has
// one client, which parseTokenRequest authenticates, so the code names none.
type rotCode struct {
	redirectURI string
	challenge   string // S256 of the verifier
	scope       string
	expires     time.Time
	used        bool
	family      *rotFamily // what the first redemption issued; revoked on a second
}

// AuthorizeURL returns the authorization endpoint's full URL.
func (p *Rotating) AuthorizeURL() string { return p.srv.URL + AuthorizePath }

// Scope returns the scope originally granted to the family rt belongs to; ""
// if rt is unknown.
func (p *Rotating) Scope(rt string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := p.refresh[rt]; t != nil {
		return t.family.scope
	}
	return ""
}

// Authorizations returns how many authorization codes /authorize issued.
func (p *Rotating) Authorizations() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.codes)
}

// authorize plays the resource owner who approves at once: it checks the request
// as a real server would and redirects to the client's loopback redirect URI with
// a code and the state. A request whose client or redirect URI is wrong gets a
// 400 page, never a redirect (RFC 6749 §4.1.2.1); every other error is
// redirected with error and state.
func (p *Rotating) authorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "the authorization endpoint accepts GET only", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	if q.Get("client_id") != p.oauthClient.id {
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	}
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || !loopbackRedirect(redirect) {
		// RFC 8252 §7.3: a native app's redirect is http on a loopback IP, any port.
		http.Error(w, "redirect_uri must be http://127.0.0.1:PORT/… or http://[::1]:PORT/…", http.StatusBadRequest)
		return
	}
	state := q.Get("state")
	fail := func(code, desc string) {
		v := redirect.Query()
		v.Set("error", code)
		v.Set("error_description", desc)
		if state != "" {
			v.Set("state", state)
		}
		redirect.RawQuery = v.Encode()
		http.Redirect(w, r, redirect.String(), http.StatusFound)
	}
	if q.Get("response_type") != "code" {
		fail("unsupported_response_type", "response_type must be code")
		return
	}
	// PKCE is required, and only S256 (RFC 9700 §2.1.1).
	challenge := q.Get("code_challenge")
	if challenge == "" || q.Get("code_challenge_method") != "S256" {
		fail("invalid_request", "PKCE is required: code_challenge with code_challenge_method S256")
		return
	}
	scope := strings.Join(strings.Fields(q.Get("scope")), " ")
	businesses := 0
	for _, s := range strings.Fields(scope) {
		if strings.HasPrefix(s, "target:b/") {
			businesses++
		}
	}
	if businesses != 1 {
		// The seed: "An authorisation flow is limited to a single business."
		fail("invalid_scope", "exactly one target:b/<business_code> scope is required")
		return
	}
	code := p.newToken("rot_code_")
	p.mu.Lock()
	p.codes[code] = &rotCode{redirectURI: redirect.String(), challenge: challenge, scope: scope, expires: p.now().Add(codeTTL)}
	p.mu.Unlock()
	v := redirect.Query()
	v.Set("code", code)
	if state != "" {
		v.Set("state", state)
	}
	redirect.RawQuery = v.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

func loopbackRedirect(u *url.URL) bool {
	if u.Scheme != "http" || u.Port() == "" || u.User != nil || u.Fragment != "" {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

// exchange is the authorization_code grant (RFC 6749 §4.1.3 with RFC 7636 §4.6):
// the code once, from the client it was issued to, with the same redirect URI and
// the verifier whose S256 is the challenge. Every failure is invalid_grant. A code
// presented twice revokes what its first use issued (RFC 6749 §4.1.2).
func (p *Rotating) exchange(form url.Values) response {
	code := form.Get("code")
	if code == "" {
		return (&oauthError{status: http.StatusBadRequest, code: "invalid_request", description: "Missing code"}).response()
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.codes[code]
	switch {
	case c == nil:
		return invalidGrant("The authorization code is invalid").response()
	case c.used:
		if c.family != nil {
			c.family.revoked, c.family.revokedAt = true, now
			c.family.live = ""
		}
		return invalidGrant("The authorization code has already been used").response()
	case !now.Before(c.expires):
		return invalidGrant("The authorization code has expired").response()
	case form.Get("redirect_uri") != c.redirectURI:
		return invalidGrant("The redirect_uri does not match the authorization request").response()
	case !pkceMatches(form.Get("code_verifier"), c.challenge):
		return invalidGrant("The code_verifier does not match the code_challenge").response()
	}
	c.used = true
	p.families++
	f := &rotFamily{id: p.families, scope: c.scope}
	c.family = f
	rt := ""
	if strings.Contains(" "+c.scope+" ", " offline_access ") {
		// Without offline_access there is no refresh token (the seed).
		rt = p.newToken("rot_rt_")
		p.addRefresh(rt, f, now)
		f.live = rt
	}
	return p.issue(now, f, rt, c.scope)
}

// pkceMatches checks a verifier against an S256 challenge (RFC 7636 §4.6).
func pkceMatches(verifier, challenge string) bool {
	if len(verifier) < 43 || len(verifier) > 128 {
		return false
	}
	sum := sha256.Sum256([]byte(verifier))
	return subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) == 1
}

// MetadataPath is where the rotating provider publishes its authorization server
// metadata (RFC 8414), as real providers do, so clients can discover /authorize.
const MetadataPath = "/.well-known/oauth-authorization-server"

// metadata answers RFC 8414 §3: the endpoints and what the server supports.
func (p *Rotating) metadata(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	resp := jsonResponse(http.StatusOK, "application/json", map[string]any{
		"issuer":                                p.srv.URL,
		"authorization_endpoint":                p.AuthorizeURL(),
		"token_endpoint":                        p.URL(),
		"response_types_supported":              []string{"code"},
		"grant_types_supported":                 []string{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":      []string{"S256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
	})
	for k, v := range resp.header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
}
