package provider

import (
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// dialect names a profile's response fields.
type dialect struct {
	accessToken, tokenType, refreshToken, expiresIn, scope string
	refreshExpiresIn                                       []string
	errCode, errMsg                                        string
}

var (
	// oauthDialect is RFC 6749 §5.1/§5.2, also vault.ist's success body. The refresh
	// lifetime names are Keycloak's and GitHub's; RFC 6749 has none.
	oauthDialect = &dialect{
		accessToken: "access_token", tokenType: "token_type", refreshToken: "refresh_token",
		expiresIn: "expires_in", scope: "scope",
		refreshExpiresIn: []string{"refresh_expires_in", "refresh_token_expires_in"},
		errCode:          "error", errMsg: "error_description",
	}
	// sahamatiDialect is the Token Service's camelCase body.
	sahamatiDialect = &dialect{
		accessToken: "accessToken", tokenType: "tokenType", refreshToken: "refreshToken",
		expiresIn: "expiresIn", scope: "scope",
		refreshExpiresIn: []string{"refreshExpiresIn"},
		errCode:          "errorCode", errMsg: "errorMsg",
	}
)

func (c *Client) dialect() *dialect {
	if c.profile == profileSahamati {
		return sahamatiDialect
	}
	return oauthDialect
}

// tokenResponse is what a 2xx body says, whatever its spelling.
type tokenResponse struct {
	accessToken, tokenType, refreshToken, scope string
	expiresIn                                   time.Duration
	hasExpiresIn                                bool
	refreshExpiresIn                            time.Duration
	errCode, errMsg                             string
}

// parseToken reads a 2xx body. The reason it gives for a malformed body names a field, never
// a value, so it is safe in an error string. The refresh token and its lifetime are read
// first, so a body that is unusable for another reason still hands back a rotated refresh
// token (the provider may have spent the old one).
func parseToken(body []byte, d *dialect) (tokenResponse, string) {
	var tr tokenResponse
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		return tr, "the body is not a JSON object"
	}
	// An error code in a 2xx (some servers answer errors with 200) is an error answer; its
	// fields are taken leniently, like a non-2xx body's.
	if code, ok := stringField(m, d.errCode); ok && code != "" {
		tr.errCode = code
		tr.errMsg, _ = stringField(m, d.errMsg)
		return tr, ""
	}
	var ok bool
	if tr.refreshToken, ok = stringField(m, d.refreshToken); !ok {
		return tr, d.refreshToken + " is not a string"
	}
	// The refresh lifetime is advice: a bad one is ignored rather than losing the answer
	// (and with it a rotated refresh token). 0 means "none stated" (Sahamati, Keycloak).
	for _, name := range d.refreshExpiresIn {
		if raw, present := field(m, name); present {
			if secs, ok := refreshSeconds(raw); ok {
				tr.refreshExpiresIn = time.Duration(secs * float64(time.Second))
				break
			}
		}
	}
	if tr.accessToken, ok = stringField(m, d.accessToken); !ok {
		return tr, d.accessToken + " is not a string"
	}
	if tr.accessToken == "" {
		return tr, "no " + d.accessToken
	}
	if tr.tokenType, ok = stringField(m, d.tokenType); !ok {
		return tr, d.tokenType + " is not a string"
	}
	if tr.scope, ok = scopeField(m, d.scope); !ok {
		return tr, d.scope + " is not a string"
	}
	if raw, present := field(m, d.expiresIn); present {
		secs, ok := seconds(raw)
		switch {
		case !ok:
			return tr, d.expiresIn + " is not a number"
		case secs <= 0:
			return tr, d.expiresIn + " is not positive"
		case secs > maxLifetime.Seconds():
			return tr, d.expiresIn + " is over a year"
		}
		tr.expiresIn, tr.hasExpiresIn = time.Duration(secs*float64(time.Second)), true
		if tr.expiresIn <= 0 { // positive but under a nanosecond
			return tr, d.expiresIn + " is not positive"
		}
	}
	return tr, ""
}

// refreshSeconds reads a stated refresh-token lifetime; ok is false for one that is not a
// positive number of at most ten years.
func refreshSeconds(raw json.RawMessage) (float64, bool) {
	secs, ok := seconds(raw)
	return secs, ok && secs > 0 && secs <= 10*maxLifetime.Seconds()
}

// salvageRefresh streams an oversized 2xx body — at most maxSalvage bytes of it — for the
// top-level refresh token and its lifetime, which an over-cap answer may still carry after
// the provider spent the old refresh token. A json.Decoder walks the tokens, so no map of
// the whole body is built; a member past the bound is not seen.
func salvageRefresh(r io.Reader, d *dialect) (rt string, lifetime time.Duration) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", 0
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return rt, lifetime
		}
		key, _ := t.(string)
		switch {
		case key == d.refreshToken, slices.Contains(d.refreshExpiresIn, key):
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return rt, lifetime
			}
			if key == d.refreshToken {
				var s string
				if json.Unmarshal(raw, &s) == nil {
					rt = s
				}
			} else if secs, ok := refreshSeconds(raw); ok && lifetime == 0 {
				lifetime = time.Duration(secs * float64(time.Second))
			}
		default:
			if err := skipValue(dec); err != nil {
				return rt, lifetime
			}
		}
	}
	return rt, lifetime
}

// skipValue consumes one JSON value, however deeply nested, token by token.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

// field returns a member; JSON null counts as absent.
func field(m map[string]json.RawMessage, key string) (json.RawMessage, bool) {
	raw, ok := m[key]
	if !ok || string(raw) == "null" {
		return nil, false
	}
	return raw, true
}

// stringField returns the member as a string; ok is false when it is present but not a string.
func stringField(m map[string]json.RawMessage, key string) (s string, ok bool) {
	raw, present := field(m, key)
	if !present {
		return "", true
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// scopeField accepts RFC 6749's space-delimited string and, leniently, an array of strings.
func scopeField(m map[string]json.RawMessage, key string) (string, bool) {
	if s, ok := stringField(m, key); ok {
		return s, true
	}
	var list []string
	if err := json.Unmarshal(m[key], &list); err != nil {
		return "", false
	}
	return strings.Join(list, " "), true
}

// seconds reads a lifetime: a JSON number, or a string holding one (PayPal sends strings).
func seconds(raw json.RawMessage) (float64, bool) {
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, false
	}
	f, err := n.Float64()
	if err != nil {
		return 0, false
	}
	return f, true
}

// parseErrorBody reads a non-2xx body in any of the known shapes: RFC 6749 §5.2
// {"error","error_description"}, Sahamati {"errorCode","errorMsg"}, vault.ist
// {"status","message"}, and {"error":{"status"|"code","message"}}. m is the parsed body, for
// classify to judge its shape without parsing it again; nil when the body is not a JSON object
// (code and msg are then empty).
func parseErrorBody(body []byte) (code, msg string, m map[string]json.RawMessage) {
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		return "", "", nil
	}
	code = firstString(m, "error", "errorCode", "error_code", "code", "status")
	msg = firstString(m, "error_description", "errorMsg", "errorMessage", "error_message", "message", "detail")
	if raw, present := field(m, "error"); present && (code == "" || msg == "") {
		var nested map[string]json.RawMessage
		if json.Unmarshal(raw, &nested) == nil {
			if code == "" {
				code = firstString(nested, "status", "code")
			}
			if msg == "" {
				msg = firstString(nested, "message")
			}
		}
	}
	return code, msg, m
}

func firstString(m map[string]json.RawMessage, keys ...string) string {
	for _, k := range keys {
		if s, ok := stringField(m, k); ok && s != "" {
			return s
		}
	}
	return ""
}

// plainText is a non-JSON body as a message: markup dropped, so a gateway's HTML page reads
// "502 Bad Gateway …". Cleaning and redaction happen later.
func plainText(body []byte) string {
	var b strings.Builder
	inTag := false
	for _, r := range string(body) {
		switch {
		case r == '<':
			inTag = true
		case r == '>' && inTag:
			inTag = false
			b.WriteByte(' ')
		case !inTag:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// bodySecrets returns the token values a response carries, so an error that quotes them
// (a 2xx error answer, a description echoing the token) can redact them too.
func bodySecrets(body []byte) []string {
	keys := []string{"access_token", "refresh_token", "id_token", "accessToken", "refreshToken", "idToken", "client_secret", "secret"}
	var out []string
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) == nil {
		for _, k := range keys {
			if s, ok := stringField(m, k); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	vals, _ := url.ParseQuery(string(body)) // partial results are still worth redacting
	for _, k := range keys {
		for _, s := range vals[k] {
			if s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// interpret judges the one response of a call. sendErr is what the sending library said
// (x/oauth2's *RetrieveError supplies code and description for non-JSON error bodies).
func (c *Client) interpret(resp *captured, sendErr error, old token.Secret, start, now time.Time) (*Result, error) {
	red := c.redactor(old)
	red.add(bodySecrets(resp.body)...)
	e := &Error{Status: resp.status}

	switch {
	case resp.status >= 300 && resp.status <= 399:
		e.Class = ErrUnexpected
		msg := "redirect not followed"
		if loc := resp.header.Get("Location"); loc != "" {
			msg += " (to " + loc + ")"
		}
		e.Message = red.text(msg + "; provider.token_url must be the token endpoint itself")
		return nil, e
	case resp.status < 200 || resp.status > 299:
		code, msg, m := parseErrorBody(resp.body)
		if m == nil {
			var re *oauth2.RetrieveError
			if errors.As(sendErr, &re) && re.ErrorCode != "" {
				code, msg = re.ErrorCode, re.ErrorDescription // a form-encoded error body
			} else {
				msg = plainText(resp.body)
			}
		}
		e.Class = c.classify(resp.status, code, m)
		e.Code, e.Message = red.text(code), red.text(msg)
		e.RetryAfter = retryAfter(resp.header, now)
		return nil, e
	case resp.tooLarge:
		e.Class, e.Message = ErrMalformed, "the body is over 1 MiB"
		c.salvaged(e, resp.salvagedRT, resp.salvagedLife, old, start)
		return nil, e
	}

	d := c.dialect()
	tr, reason := parseToken(resp.body, d)
	switch {
	case reason != "":
		e.Class, e.Message = ErrMalformed, reason
		c.salvaged(e, tr.refreshToken, tr.refreshExpiresIn, old, start)
		return nil, e
	case tr.errCode != "":
		e.Class = c.classify(resp.status, tr.errCode, nil) // a 2xx is never a documented 401
		e.Code, e.Message = red.text(tr.errCode), red.text(tr.errMsg)
		return nil, e
	}

	r := &Result{
		AccessToken:  token.Secret(tr.accessToken),
		TokenType:    tr.tokenType,
		RefreshToken: old,
		Scope:        tr.scope,
	}
	if r.TokenType == "" || strings.EqualFold(r.TokenType, "bearer") {
		r.TokenType = "Bearer"
	}
	lifetime := tr.expiresIn
	if !tr.hasExpiresIn {
		lifetime = c.cfg.DefaultExpiresIn
		if lifetime <= 0 {
			lifetime = FallbackExpiresIn
		}
	}
	r.ExpiresAt = start.Add(lifetime)
	if tr.refreshToken != "" {
		r.RefreshToken = token.Secret(tr.refreshToken)
		r.Rotated = tr.refreshToken != old.Reveal()
	}
	if tr.refreshExpiresIn > 0 {
		r.RefreshExpiresAt = start.Add(tr.refreshExpiresIn)
	}
	if r.Scope == "" && c.profile == profileClientCredentials {
		r.Scope = strings.Join(strings.Fields(c.cfg.Scope), " ")
	}
	return r, nil
}

// salvaged keeps a refresh token that an unusable 2xx answer carried, when it differs from
// the one sent: the provider has then rotated, and the old one may already be spent.
func (c *Client) salvaged(e *Error, rt string, lifetime time.Duration, old token.Secret, start time.Time) {
	if rt == "" || rt == old.Reveal() {
		return
	}
	e.NewRefreshToken = token.Secret(rt)
	if lifetime > 0 {
		e.RefreshExpiresAt = start.Add(lifetime)
	}
}
