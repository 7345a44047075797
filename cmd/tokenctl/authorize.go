package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// businessScopePrefix is the rotating provider's per-business scope (seeds/): one
// authorisation, hence one refresh token, per business.
const businessScopePrefix = "target:b/"

// exchangeTimeout bounds the code exchange at the token endpoint.
const exchangeTimeout = 30 * time.Second

// authorize runs the OAuth authorisation-code flow with PKCE (RFC 7636, S256) for a
// refresh_token profile, catches the redirect on a loopback listener (RFC 8252), stores
// the refresh token in the private secret and invokes the refresher so the token is
// adopted at once. The refresh token only ever lives in memory here: it is never printed,
// logged or written to a file.
func (a *app) authorize(ctx context.Context, args []string) int {
	fs := a.flagSet("authorize")
	file := fs.String("file", "", "settings for a NEW token (a refresh_token document without refresh_token; - for stdin); an existing token keeps its own")
	business := fs.String("business", "", "business code: authorise scope "+businessScopePrefix+"CODE (replacing any other business in the scope)")
	like := fs.String("like", "", "for a NEW token: copy the provider settings and policy of this existing token (another business of the same provider)")
	authURL := fs.String("authorize-url", "", "the provider's authorization endpoint (default: provider.authorize_url, else the provider's RFC 8414 / OpenID metadata); the one used is stored in provider.authorize_url")
	port := fs.Int("port", 0, "loopback port of the redirect listener, http://127.0.0.1:PORT/callback (default: any free port)")
	noBrowser := fs.Bool("no-browser", false, "only print the URL (headless use: open it anywhere that can reach this machine's 127.0.0.1)")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the approval")
	pos, code, ok := parse(fs, args, "authorize NAME [--business CODE] [--file DOC.json | --like TOKEN] [--authorize-url URL] [--port N] [--no-browser]")
	if !ok {
		return code
	}
	if len(pos) != 1 {
		a.errorf("authorize", "want one token NAME, got %d arguments", len(pos))
		return exitUsage
	}
	name := pos[0]
	if err := checkName(name); err != nil {
		a.errorf("authorize", "%v", err)
		return exitUsage
	}
	if *business != "" && !validBusiness(*business) {
		a.errorf("authorize", "--business: want a business code of letters, digits and ._-")
		return exitUsage
	}
	if *port < 0 || *port > 65535 {
		a.errorf("authorize", "--port: want 0 to 65535")
		return exitUsage
	}
	if *file != "" && *like != "" {
		a.errorf("authorize", "--file and --like both give the settings of a new token: pass one")
		return exitUsage
	}
	if err := a.checkFence(); err != nil {
		a.errorf("authorize", "%v", err)
		return exitUsage
	}

	sm, err := a.secretsClient(ctx)
	if err != nil {
		a.errorf("authorize", "%s", a.explainAWS(err, a.secretResource(a.privateName(name))))
		return exitFail
	}
	store := secretstore.New(sm)
	base, exists, code := a.authorizeBase(ctx, store, name, *file, *like)
	if code != exitOK {
		return code
	}
	cfg, code := a.oauthConfig(ctx, base, *authURL, *business)
	if code != exitOK {
		return code
	}

	authCode, verifier, code := a.approve(ctx, name, cfg, *port, !*noBrowser, *timeout)
	if code != exitOK {
		return code
	}
	xctx, xcancel := context.WithTimeout(ctx, exchangeTimeout)
	defer xcancel()
	xctx = context.WithValue(xctx, oauth2.HTTPClient, &http.Client{Timeout: exchangeTimeout})
	tok, err := cfg.Exchange(xctx, authCode, oauth2.VerifierOption(verifier))
	if err != nil {
		a.errorf("authorize", "%s: exchanging the code at %s: %s; nothing written", name, cfg.Endpoint.TokenURL, exchangeError(err))
		return exitFail
	}
	authorizedAt := a.now()
	if tok.RefreshToken == "" {
		a.errorf("authorize", "%s: the provider returned no refresh token (does the scope include offline_access?); nothing written", name)
		return exitFail
	}
	if code := a.storeAuthorization(ctx, sm, store, name, base, exists, cfg, tok, authorizedAt); code != exitOK {
		return code
	}
	if a.opts.function == "" {
		fmt.Fprintf(a.stderr, "tokenctl authorize: no --function / REFRESHER_FUNCTION: %s is adopted on the refresher's next scheduled run\n", name)
		return exitOK
	}
	fmt.Fprintf(a.stdout, "invoking %s so that the refresher adopts %s now:\n", a.opts.function, name)
	return a.invoke(ctx, "authorize", invocation.Request{Tokens: []string{name}, Force: true}, false)
}

// approve sends the person to the authorization endpoint and waits on the loopback
// listener for the redirect. It returns the authorization code and the PKCE verifier.
func (a *app) approve(ctx context.Context, name string, cfg *oauth2.Config, port int, browser bool, timeout time.Duration) (string, string, int) {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		a.errorf("authorize", "listen on 127.0.0.1:%d for the redirect: %v (choose another --port)", port, err)
		return "", "", exitFail
	}
	cfg.RedirectURL = fmt.Sprintf("http://%s/callback", ln.Addr().String())
	verifier := oauth2.GenerateVerifier()
	state := randomState()
	authCodeURL := cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))

	cb := newCallback(name, state)
	srv := &http.Server{Handler: cb, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	fmt.Fprintf(a.stdout, "Open this URL in a browser and approve access for %s (scope %q):\n\n  %s\n\nwaiting up to %s for the redirect to %s ...\n",
		name, strings.Join(cfg.Scopes, " "), authCodeURL, timeout, cfg.RedirectURL)
	if browser && a.openBrowser != nil {
		if err := a.openBrowser(authCodeURL); err != nil {
			fmt.Fprintf(a.stderr, "tokenctl authorize: no browser opened (%v): open the URL above yourself\n", err)
		}
	}

	wait, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case r := <-cb.result:
		if r.err != nil {
			a.errorf("authorize", "%s: %v; nothing written", name, r.err)
			return "", "", exitFail
		}
		return r.code, verifier, exitOK
	case <-wait.Done():
		if ctx.Err() != nil {
			a.errorf("authorize", "%s: interrupted while waiting for the redirect; nothing written", name)
		} else {
			a.errorf("authorize", "%s: no redirect within %s (--timeout); nothing written", name, timeout)
		}
		return "", "", exitFail
	}
}

// storeAuthorization writes the new refresh token and access token into base's settings:
// a new AWSCURRENT version of an existing token, or a new (fenced) secret. authorizedAt,
// the time of the code exchange, marks it as a new authorisation.
func (a *app) storeAuthorization(ctx context.Context, sm resourcePolicyAPI, store *secretstore.Store, name string, base *token.Private, exists bool, cfg *oauth2.Config, tok *oauth2.Token, authorizedAt time.Time) int {
	secret := a.privateName(name)
	doc := base.Clone()
	doc.RefreshToken = token.Secret(tok.RefreshToken)
	doc.RefreshExpiresAt = time.Time{}
	doc.AccessToken = token.Secret(tok.AccessToken)
	doc.TokenType = tok.TokenType
	doc.ExpiresAt = tok.Expiry.UTC()
	doc.Scope = strings.Join(cfg.Scopes, " ")
	if s, ok := tok.Extra("scope").(string); ok && s != "" {
		doc.Scope = s
	}
	doc.Provider.Scope = strings.Join(cfg.Scopes, " ")
	// The endpoint this authorisation used, given or discovered: authorising again is
	// then `tokenctl authorize NAME` with nothing else to remember.
	doc.Provider.AuthorizeURL = cfg.Endpoint.AuthURL
	doc.Status = token.StatusActive
	doc.StatusReason = ""
	// A new authorisation is a document the refresher did not write: no version ids of
	// ours, so it is adopted as an operator edit whose refresh token replaces the chain's.
	doc.VersionID, doc.BaseVersionID = "", ""
	// The refresher adopts a refresh token over the live chain's only from a document whose
	// authorized_at is later than the committed one's (docs/design.md §2).
	doc.AuthorizedAt = authorizationTime(authorizedAt, base)
	body, err := doc.Marshal()
	if err != nil {
		a.errorf("authorize", "%s: %v", name, err)
		return exitFail
	}
	var version string
	if exists {
		version, err = store.PutCurrent(ctx, secret, token.Secret(body))
	} else {
		version, err = store.Create(ctx, secret, token.Secret(body))
	}
	if err != nil {
		// The provider's grant is lost with this process; the token's old chain, if any, is untouched.
		a.errorf("authorize", "%s: storing the new refresh token failed, run authorize again: %s", name, a.explainAWS(err, a.secretResource(secret)))
		return exitFail
	}
	verb := "created"
	if exists {
		verb = "updated"
	}
	fmt.Fprintf(a.stdout, "%s %s (version %s): new refresh token stored, scope %q\n", verb, secret, version, doc.Provider.Scope)
	if !exists {
		if err := a.fence(ctx, "authorize", sm, secret); err != nil {
			a.errorf("authorize", "%s: created, but not fenced: %v", secret, err)
			return exitFail
		}
	}
	return exitOK
}

// authorizeBase is the document whose settings the authorisation uses: the token's
// current private document, or for a new token --file or --like's settings. exists says
// whether the token exists.
func (a *app) authorizeBase(ctx context.Context, store *secretstore.Store, name, file, like string) (*token.Private, bool, int) {
	secret := a.privateName(name)
	cur, err := store.GetCurrent(ctx, secret)
	switch {
	case err == nil:
		if file != "" || like != "" {
			a.errorf("authorize", "%s exists: authorize keeps its settings and replaces only the refresh token; drop --file/--like (change settings with tokenctl seed)", secret)
			return nil, false, exitUsage
		}
		p, err := token.ParsePrivate([]byte(cur.Value.Reveal()))
		if err == nil {
			err = p.Provider.Validate()
		}
		if err != nil {
			a.errorf("authorize", "%s: the current document is not valid (%v): fix it with tokenctl seed first", secret, err)
			return nil, false, exitInvalid
		}
		return p, true, exitOK
	case errors.Is(err, secretstore.ErrNotFound):
	default:
		a.errorf("authorize", "%s", a.explainAWS(err, a.secretResource(secret)))
		return nil, false, exitFail
	}
	if like != "" {
		return a.settingsOf(ctx, store, like)
	}
	if file == "" {
		a.errorf("authorize", "%s does not exist: pass --file DOC.json with its provider settings (tokenctl template refresh_token), or --like TOKEN", secret)
		return nil, false, exitNotFound
	}
	raw, err := a.readDocument(file)
	if err != nil {
		a.errorf("authorize", "%v", err)
		return nil, false, exitFail
	}
	// The document has no refresh token yet (or the template's placeholder): check it as
	// if it had one.
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // keep numbers as written
	if json.Valid(raw) && dec.Decode(&m) == nil && m != nil {
		if rt, ok := m["refresh_token"]; !ok || rt == placeholder {
			m["refresh_token"] = "(to be authorised)"
			raw, _ = json.Marshal(m)
		}
	}
	p, notes, err := checkDocument(raw, a.now())
	if err != nil {
		a.errorf("authorize", "%s: invalid document, nothing written: %v", name, err)
		return nil, false, exitInvalid
	}
	a.printNotes("authorize", notes)
	return p, false, exitOK
}

// settingsOf is token like's current document without its tokens and state: the settings
// for another authorisation (another business) at the same provider.
func (a *app) settingsOf(ctx context.Context, store *secretstore.Store, like string) (*token.Private, bool, int) {
	if err := checkName(like); err != nil {
		a.errorf("authorize", "--like: %v", err)
		return nil, false, exitUsage
	}
	secret := a.privateName(like)
	cur, err := store.GetCurrent(ctx, secret)
	if errors.Is(err, secretstore.ErrNotFound) {
		a.errorf("authorize", "--like: no private secret %s", secret)
		return nil, false, exitNotFound
	}
	if err != nil {
		a.errorf("authorize", "--like: %s", a.explainAWS(err, a.secretResource(secret)))
		return nil, false, exitFail
	}
	p, err := token.ParsePrivate([]byte(cur.Value.Reveal()))
	if err == nil {
		err = p.Provider.Validate()
	}
	if err != nil {
		a.errorf("authorize", "--like: %s is not a valid document (%v)", secret, err)
		return nil, false, exitInvalid
	}
	p.RefreshToken, p.AccessToken, p.TokenType, p.Scope = "", "", "", ""
	p.RefreshExpiresAt, p.ExpiresAt = time.Time{}, time.Time{}
	p.Generation, p.Status, p.StatusReason = 0, token.StatusActive, ""
	p.AuthorizedAt = time.Time{}
	return p, false, exitOK
}

// oauthConfig builds the x/oauth2 configuration from the document, --authorize-url and
// --business. The authorization endpoint is --authorize-url, else provider.authorize_url,
// else what the provider's metadata names.
func (a *app) oauthConfig(ctx context.Context, p *token.Private, authURL, business string) (*oauth2.Config, int) {
	v := p.Provider
	if v.Grant != token.GrantRefreshToken || (v.Body != "" && v.Body != token.BodyForm) {
		a.errorf("authorize", "provider.grant: authorize is for grant %q with a form body (an OAuth 2.0 provider)", token.GrantRefreshToken)
		return nil, exitUsage
	}
	if authURL == "" {
		authURL = v.AuthorizeURL
	}
	if authURL == "" {
		authURL = discoverAuthorizeURL(ctx, v.TokenURL)
	}
	if authURL == "" {
		a.errorf("authorize", "no authorization endpoint: pass --authorize-url URL or set provider.authorize_url in the document "+
			"(the provider publishes no RFC 8414 or OpenID metadata naming %s)", v.TokenURL)
		return nil, exitUsage
	}
	if err := token.ValidateAuthorizeURL(authURL); err != nil {
		a.errorf("authorize", "authorization endpoint: must be an absolute https URL (http only on a loopback host)")
		return nil, exitUsage
	}
	style := oauth2.AuthStyleInHeader
	secret := v.ClientSecret.Reveal()
	switch v.ClientAuth {
	case token.AuthBody:
		style = oauth2.AuthStyleInParams
	case token.AuthNone:
		style, secret = oauth2.AuthStyleInParams, ""
	case "":
		if secret == "" {
			style = oauth2.AuthStyleInParams
		}
	}
	var scopes []string
	for _, s := range strings.Fields(v.Scope) {
		if business != "" && strings.HasPrefix(s, businessScopePrefix) {
			continue // one business per authorisation (seeds/)
		}
		scopes = append(scopes, s)
	}
	if business != "" {
		scopes = append(scopes, businessScopePrefix+business)
	}
	return &oauth2.Config{
		ClientID:     v.ClientID,
		ClientSecret: secret,
		Endpoint:     oauth2.Endpoint{AuthURL: authURL, TokenURL: v.TokenURL, AuthStyle: style},
		Scopes:       scopes,
	}, exitOK
}

// discoverAuthorizeURL asks the token URL's origin for its authorization server metadata
// (RFC 8414, then OpenID Connect Discovery) and returns the authorization endpoint when
// the metadata names this very token endpoint; "" otherwise.
func discoverAuthorizeURL(ctx context.Context, tokenURL string) string {
	u, err := url.Parse(tokenURL)
	if err != nil || u.Host == "" {
		return ""
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.Scheme+"://"+u.Host+path, nil)
		if err != nil {
			return ""
		}
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		var meta struct {
			AuthorizationEndpoint string `json:"authorization_endpoint"`
			TokenEndpoint         string `json:"token_endpoint"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&meta)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || meta.TokenEndpoint != tokenURL {
			continue
		}
		if token.ValidateAuthorizeURL(meta.AuthorizationEndpoint) == nil {
			return meta.AuthorizationEndpoint
		}
	}
	return ""
}

func validBusiness(s string) bool {
	if len(s) > 128 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func randomState() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b)
}

// exchangeError describes a failed code exchange by the provider's error code and
// description only: x/oauth2's message would include the whole response body.
func exchangeError(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		if re.ErrorCode != "" {
			return fmt.Sprintf("HTTP %d %s: %s", status, re.ErrorCode, oneLine(re.ErrorDescription, 200))
		}
		return fmt.Sprintf("HTTP %d", status)
	}
	return oneLine(err.Error(), 200)
}

// callback is the redirect listener: it answers the browser and hands the code (or the
// provider's refusal) over once. A request whose state is not ours is answered and
// ignored, so a stray or forged request cannot end the wait.
type callback struct {
	name, state string
	once        sync.Once
	result      chan callbackResult
}

type callbackResult struct {
	code string
	err  error
}

func newCallback(name, state string) *callback {
	return &callback{name: name, state: state, result: make(chan callbackResult, 1)}
}

func (c *callback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/callback" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(c.state)) != 1 {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, page("This is not the answer to the authorisation tokenctl is waiting for (state mismatch); it was ignored."))
		return
	}
	var res callbackResult
	switch {
	case q.Get("error") != "":
		res.err = fmt.Errorf("the provider refused the authorisation: %s: %s", oneLine(q.Get("error"), 64), oneLine(q.Get("error_description"), 200))
	case q.Get("code") == "":
		res.err = errors.New("the redirect carried neither a code nor an error")
	default:
		res.code = q.Get("code")
	}
	delivered := false
	c.once.Do(func() { c.result <- res; delivered = true })
	switch {
	case !delivered:
		fmt.Fprint(w, page("tokenctl has already received an answer; you can close this window."))
	case res.err != nil:
		fmt.Fprint(w, page("Authorisation of "+c.name+" failed: "+res.err.Error()+". See the terminal."))
	default:
		fmt.Fprint(w, page("tokenctl: authorised "+c.name+". You can close this window; the terminal shows the rest."))
	}
}

func page(msg string) string {
	return "<!doctype html><title>tokenctl</title><p>" + html.EscapeString(msg) + "</p>\n"
}
