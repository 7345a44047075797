package providersim

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// OAuthPath is the token endpoint of the RFC 6749 simulators.
const OAuthPath = "/oauth2/token"

// Client authentication styles recorded by AuthStyles.
const (
	AuthBasic = "basic" // HTTP Basic (RFC 6749 §2.3.1)
	AuthBody  = "body"  // client_id and client_secret in the form body
	AuthNone  = "none"  // no client secret at all (a public client)
)

const oauthContentType = "application/json;charset=UTF-8"

// oauthClient is the registered client and the audit of how requests
// authenticated, shared by the RFC 6749 simulators.
type oauthClient struct {
	id, secret string

	mu     sync.Mutex
	styles []string
}

// AuthStyles returns, per token request that reached the token logic (not
// injected failures, wrong paths or methods), the client authentication it
// used: "basic", "body" or "none".
func (c *oauthClient) AuthStyles() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.styles)
}

type oauthError struct {
	status      int
	code        string
	description string
	basic       bool // the client tried HTTP Basic: a 401 carries WWW-Authenticate
}

func (e *oauthError) response() response {
	resp := jsonResponse(e.status, oauthContentType, struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description,omitempty"`
	}{e.code, e.description})
	noStore(resp.header)
	if e.status == http.StatusUnauthorized && e.basic {
		resp.header.Set("WWW-Authenticate", `Basic realm="oauth2", charset="UTF-8"`)
	}
	return resp
}

// noStore marks a token response uncacheable (RFC 6749 §5.1).
func noStore(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
}

// parseTokenRequest checks the parts common to every RFC 6749 token request —
// form body, single-valued parameters, client authentication — and records
// the authentication style. It returns the form on success.
func (c *oauthClient) parseTokenRequest(r *http.Request) (url.Values, *oauthError) {
	bid, bsecret, basic := r.BasicAuth()
	var form url.Values
	var formErr *oauthError
	if mediaType(r) != "application/x-www-form-urlencoded" {
		formErr = &oauthError{status: http.StatusBadRequest, code: "invalid_request", description: "Content-Type must be application/x-www-form-urlencoded"}
	} else if err := r.ParseForm(); err != nil {
		formErr = &oauthError{status: http.StatusBadRequest, code: "invalid_request", description: "The request body could not be parsed"}
	} else {
		form = r.PostForm
	}

	style := AuthNone
	_, hasBodySecret := form["client_secret"]
	switch {
	case basic:
		style = AuthBasic
	case hasBodySecret:
		style = AuthBody
	}
	c.mu.Lock()
	c.styles = append(c.styles, style)
	c.mu.Unlock()

	if formErr != nil {
		formErr.basic = basic
		return nil, formErr
	}
	for k, v := range form {
		if len(v) > 1 {
			return nil, &oauthError{status: http.StatusBadRequest, code: "invalid_request", description: "Parameter " + k + " is included more than once", basic: basic}
		}
	}
	if basic && hasBodySecret {
		return nil, &oauthError{status: http.StatusBadRequest, code: "invalid_request", description: "The client used more than one authentication method", basic: true}
	}

	var id, secret string
	switch style {
	case AuthBasic:
		// RFC 6749 §2.3.1: id and secret are form-encoded before Basic encoding.
		id, secret = formUnescape(bid), formUnescape(bsecret)
		if bodyID, ok := form["client_id"]; ok && bodyID[0] != id {
			return nil, &oauthError{status: http.StatusBadRequest, code: "invalid_request", description: "client_id in the body does not match the authenticated client", basic: true}
		}
	default:
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	if !c.authenticate(style, id, secret) {
		return nil, &oauthError{status: http.StatusUnauthorized, code: "invalid_client", description: "Client authentication failed", basic: basic}
	}
	return form, nil
}

// authenticate accepts the registered client: with its secret when it has one
// (confidential), by client_id alone when it has none (public).
func (c *oauthClient) authenticate(style, id, secret string) bool {
	if id != c.id {
		return false
	}
	if c.secret == "" {
		return secret == ""
	}
	return style != AuthNone && subtle.ConstantTimeCompare([]byte(secret), []byte(c.secret)) == 1
}

func formUnescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// grantScope checks requested against granted (both space-delimited): an
// empty request means the whole grant; anything outside it is invalid_scope.
func grantScope(requested, granted string) (string, *oauthError) {
	if strings.TrimSpace(requested) == "" {
		return granted, nil
	}
	have := strings.Fields(granted)
	want := strings.Fields(requested)
	for _, w := range want {
		if !slices.Contains(have, w) {
			return "", &oauthError{status: http.StatusBadRequest, code: "invalid_scope", description: "The requested scope exceeds the scope granted by the resource owner"}
		}
	}
	return strings.Join(want, " "), nil
}

// oauthErrorFor answers injected failures, wrong paths and methods in the
// RFC 6749 §5.2 shape.
func oauthErrorFor(status int) response {
	if resp, ok := gatewayError(status); ok {
		return resp
	}
	e := &oauthError{status: status, code: "server_error", description: http.StatusText(status)}
	switch {
	case status == http.StatusBadRequest:
		e.code, e.description = "invalid_grant", "The refresh token is invalid, expired or revoked"
	case status == http.StatusUnauthorized:
		e.code, e.description = "invalid_client", "Client authentication failed"
	case status == http.StatusNotFound:
		e.code, e.description = "not_found", "No endpoint at this path"
	case status == http.StatusMethodNotAllowed:
		e.code, e.description = "invalid_request", "The token endpoint accepts POST only"
	case status == http.StatusTooManyRequests:
		e.code, e.description = "rate_limit_exceeded", "Too many requests"
	case status == http.StatusServiceUnavailable:
		e.code, e.description = "temporarily_unavailable", "The server is temporarily unable to handle the request"
	}
	return e.response()
}
