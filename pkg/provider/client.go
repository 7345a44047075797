// Package provider talks to token endpoints: one Refresh call is one HTTP request to the
// provider named by a token.Provider block, in one of four profiles (docs/design.md §1):
//
//   - refresh_token + body form: RFC 6749 §6, sent with golang.org/x/oauth2;
//   - refresh_token + body json: vault.ist's JSON body, RFC 6749-shaped answer;
//   - client_credentials: RFC 6749 §4.4, sent with golang.org/x/oauth2/clientcredentials;
//   - sahamati_entity: Sahamati's entity token, form id/secret, camelCase answer.
//
// Failures come back as *Error with one of five classes (ErrRejected, ErrThrottled,
// ErrTransient, ErrMalformed, ErrUnexpected); an ErrMalformed answer that rotated the
// refresh token carries the new one in Error.NewRefreshToken. The client never retries and
// never follows a redirect: the engine retries and counts every attempt against the
// provider's quota, and a single-use refresh token must not be spent twice by accident.
package provider

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// Version is sent in the default User-Agent.
const Version = "0.1.0"

const (
	// DefaultTimeout bounds one token request when Options.Timeout is zero.
	DefaultTimeout = 10 * time.Second
	// FallbackExpiresIn is the access token lifetime assumed when the provider states none
	// and provider.default_expires_in is not set.
	FallbackExpiresIn = time.Hour
	// maxBody is the largest response body read; a bigger 2xx body is malformed.
	maxBody = 1 << 20
	// maxSalvage bounds how much of a bigger 2xx body is streamed through for a rotated
	// refresh token (salvageRefresh); a larger answer is abandoned at that point.
	maxSalvage = 8 << 20
	// maxLifetime bounds a stated lifetime; anything longer is nonsense, not a token.
	maxLifetime = 365 * 24 * time.Hour
)

// Options tunes a Client; the zero value is usable.
type Options struct {
	// HTTPClient is the base client (transport, proxy, TLS). It is copied, never
	// changed: the copy does not follow redirects. Nil means a client on
	// http.DefaultTransport.
	HTTPClient *http.Client
	// Timeout bounds each request, body included; zero means DefaultTimeout.
	Timeout time.Duration
	// UserAgent defaults to "token-refresher/<Version>".
	UserAgent string
	// Now defaults to time.Now.
	Now func() time.Time
}

type profile int

const (
	profileForm profile = iota
	profileJSON
	profileClientCredentials
	profileSahamati
)

// Client refreshes tokens at one provider. It is safe for concurrent use.
type Client struct {
	cfg     token.Provider
	profile profile
	auth    string // resolved client authentication: basic, body or none
	hc      http.Client
	base    http.RoundTripper
	timeout time.Duration
	ua      string
	now     func() time.Time
}

// New validates cfg (errors name the field and match token.ErrInvalid) and picks the profile.
//
// An empty client_auth means: for client_credentials "basic" (RFC 6749 §2.3.1, which every
// server must support); for refresh_token "basic" when both client_id and client_secret are
// set, otherwise "none" (a public client: client_id, if any, goes in the body).
func New(cfg token.Provider, opts Options) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	c := &Client{cfg: cfg, timeout: opts.Timeout, ua: opts.UserAgent, now: opts.Now}
	switch {
	case cfg.Grant == token.GrantSahamatiEntity:
		c.profile = profileSahamati
	case cfg.Grant == token.GrantClientCredentials:
		c.profile = profileClientCredentials
	case cfg.Body == token.BodyJSON:
		c.profile = profileJSON
	default:
		c.profile = profileForm
	}
	c.auth = cfg.ClientAuth
	if c.auth == "" {
		switch {
		case cfg.Grant == token.GrantClientCredentials:
			c.auth = token.AuthBasic
		case cfg.ClientID != "" && !cfg.ClientSecret.IsZero():
			c.auth = token.AuthBasic
		default:
			c.auth = token.AuthNone
		}
	}
	if opts.HTTPClient != nil {
		c.hc = *opts.HTTPClient
	}
	// A redirect is answered, never followed: following would resend credentials to
	// another URL and could spend a single-use refresh token twice.
	c.hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.base = c.hc.Transport
	if c.base == nil {
		c.base = http.DefaultTransport
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.ua == "" {
		c.ua = "token-refresher/" + Version
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// Result is a successful token response.
type Result struct {
	AccessToken token.Secret
	// TokenType is the provider's token_type, "Bearer" when absent ("bearer" is
	// normalised to "Bearer").
	TokenType string
	// ExpiresAt is the request's start plus expires_in (so it errs early). When the
	// provider states no lifetime, provider.default_expires_in is used, and when that is
	// not set either, FallbackExpiresIn (1h). A stated lifetime of zero, below zero or over
	// a year makes the response malformed.
	ExpiresAt time.Time
	// RefreshToken is the new refresh token, or the one passed to Refresh when the
	// response carries none.
	RefreshToken token.Secret
	// Rotated is true when the response carried a refresh token different from the one
	// passed in.
	Rotated bool
	// RefreshExpiresAt is set when the provider states a positive refresh token lifetime
	// (refresh_expires_in, refresh_token_expires_in, Sahamati refreshExpiresIn); else zero.
	RefreshExpiresAt time.Time
	// Scope is the provider's scope. For client_credentials an omitted scope means the
	// requested one (RFC 6749 §5.1); for a refresh it stays empty (the scope is unchanged).
	Scope string
}

// Refresh makes one token request. refreshToken is required for grant refresh_token and
// ignored by client_credentials and sahamati_entity (it is only handed back as
// Result.RefreshToken when the response carries none). Errors are *Error, except a missing
// refresh token, which matches token.ErrInvalid and sends nothing.
func (c *Client) Refresh(ctx context.Context, refreshToken token.Secret) (*Result, error) {
	if c.cfg.Grant == token.GrantRefreshToken && refreshToken.IsZero() {
		return nil, fmt.Errorf("provider: refresh_token: required for grant %q: %w", token.GrantRefreshToken, token.ErrInvalid)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	rec := &recorder{base: c.base, userAgent: c.ua, dialect: c.dialect()}
	// Whether the request reached the wire decides whether a lost answer may have spent a
	// single-use refresh token (Error.Unanswered).
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
		if i.Err == nil {
			wrote.Store(true)
		}
	}})
	hc := c.hc
	hc.Transport = rec
	start := c.now()
	var err error
	switch c.profile {
	case profileForm:
		err = c.sendForm(ctx, &hc, refreshToken)
	case profileClientCredentials:
		err = c.sendClientCredentials(ctx, &hc)
	case profileJSON:
		err = c.sendJSON(ctx, &hc, refreshToken)
	case profileSahamati:
		err = c.sendSahamati(ctx, &hc)
	}
	red := c.redactor(refreshToken)
	if rec.resp == nil {
		// No response at all: connection refused or reset, TLS, timeout, cancelled.
		if err == nil {
			err = errors.New("no response")
		}
		return nil, &Error{Class: ErrTransient, Err: sanitizeErr(err, red), Unanswered: wrote.Load()}
	}
	return c.interpret(rec.resp, err, refreshToken, start, c.now())
}

// sendForm refreshes through x/oauth2 with an explicit AuthStyle: AuthStyleAutoDetect would
// send a second request after a failure and spend a single-use refresh token. No scope is
// sent: RFC 6749 §6 makes an omitted scope "the scope originally granted", and sending
// provider.scope could only fail (invalid_scope) or narrow the grant for good.
// x/oauth2's own answer is not used for success: the recorded response is parsed strictly
// in interpret. Its *oauth2.RetrieveError still supplies the code for non-JSON error bodies.
func (c *Client) sendForm(ctx context.Context, hc *http.Client, rt token.Secret) error {
	conf := &oauth2.Config{
		ClientID: c.cfg.ClientID,
		Endpoint: oauth2.Endpoint{TokenURL: c.cfg.TokenURL, AuthStyle: oauth2.AuthStyleInParams},
	}
	switch c.auth {
	case token.AuthBasic:
		conf.ClientSecret = c.cfg.ClientSecret.Reveal()
		conf.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
	case token.AuthBody:
		conf.ClientSecret = c.cfg.ClientSecret.Reveal()
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	_, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: rt.Reveal()}).Token()
	return err
}

// sendClientCredentials asks for a token with x/oauth2/clientcredentials, explicit
// AuthStyle, scopes from provider.scope.
func (c *Client) sendClientCredentials(ctx context.Context, hc *http.Client) error {
	conf := &clientcredentials.Config{
		ClientID:     c.cfg.ClientID,
		ClientSecret: c.cfg.ClientSecret.Reveal(),
		TokenURL:     c.cfg.TokenURL,
		Scopes:       strings.Fields(c.cfg.Scope),
		AuthStyle:    oauth2.AuthStyleInHeader,
	}
	if c.auth == token.AuthBody {
		conf.AuthStyle = oauth2.AuthStyleInParams
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	_, err := conf.Token(ctx)
	return err
}

// jsonRefresh is vault.ist's request body.
type jsonRefresh struct {
	GrantType    string `json:"grant_type"`
	RefreshToken string `json:"refresh_token"`
	ClientID     string `json:"client_id,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`
}

func (c *Client) sendJSON(ctx context.Context, hc *http.Client, rt token.Secret) error {
	body := jsonRefresh{GrantType: "refresh_token", RefreshToken: rt.Reveal()}
	switch c.auth {
	case token.AuthBody:
		body.ClientID, body.ClientSecret = c.cfg.ClientID, c.cfg.ClientSecret.Reveal()
	case token.AuthNone:
		body.ClientID = c.cfg.ClientID
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.TokenURL, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.auth == token.AuthBasic {
		// RFC 6749 §2.3.1: form-encode id and secret before Basic encoding, as x/oauth2 does.
		req.SetBasicAuth(url.QueryEscape(c.cfg.ClientID), url.QueryEscape(c.cfg.ClientSecret.Reveal()))
	}
	return do(hc, req)
}

func (c *Client) sendSahamati(ctx context.Context, hc *http.Client) error {
	form := url.Values{"id": {c.cfg.EntityID}, "secret": {c.cfg.EntitySecret.Reveal()}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(hc, req)
}

// do sends req; the recorder has already kept the response.
func do(hc *http.Client, req *http.Request) error {
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// captured is the one response of a call, body read up to maxBody+1 bytes.
type captured struct {
	status   int
	header   http.Header
	body     []byte
	tooLarge bool
	// From a tooLarge 2xx body: the refresh token and lifetime found by salvageRefresh.
	salvagedRT   string
	salvagedLife time.Duration
}

// recorder sets the common headers and keeps the response, so every profile — including
// the x/oauth2 ones, which truncate bodies at 1 MiB silently — is judged on the same bytes.
// One recorder serves one call.
type recorder struct {
	base      http.RoundTripper
	userAgent string
	dialect   *dialect // names the refresh token salvaged from an oversized 2xx body
	resp      *captured
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context()) // a RoundTripper must not change the caller's request
	out.Header.Set("User-Agent", r.userAgent)
	out.Header.Set("Accept", "application/json")
	resp, err := r.base.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		_ = resp.Body.Close()
		return nil, err // a body cut off mid-way is no answer: transient
	}
	c := &captured{status: resp.StatusCode, header: resp.Header, body: body}
	if len(body) > maxBody {
		c.tooLarge = true
		if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
			rest := io.LimitReader(resp.Body, maxSalvage-int64(len(body)))
			c.salvagedRT, c.salvagedLife = salvageRefresh(io.MultiReader(bytes.NewReader(body), rest), r.dialect)
		}
		c.body = body[:maxBody]
	}
	_ = resp.Body.Close()
	r.resp = c
	resp.Body = io.NopCloser(bytes.NewReader(c.body))
	return resp, nil
}

// redactor collects the secret values of one call, including the Basic credentials as
// sent, in case a provider echoes the Authorization header.
func (c *Client) redactor(rt token.Secret) *redactor {
	r := newRedactor(rt.Reveal(), c.cfg.ClientSecret.Reveal(), c.cfg.EntitySecret.Reveal())
	if c.auth == token.AuthBasic && !c.cfg.ClientSecret.IsZero() {
		r.add(basicCredentials(c.cfg.ClientID, c.cfg.ClientSecret.Reveal()))
	}
	return r
}

// basicCredentials is the base64 part of the Authorization header x/oauth2 and sendJSON send.
func basicCredentials(id, secret string) string {
	return base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret)))
}
