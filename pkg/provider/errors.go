package provider

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// Failure classes; every *Error matches exactly one with errors.Is.
var (
	// ErrRejected: the provider refused the grant or the client (docs/design.md §1): the RFC 6749
	// codes invalid_grant, invalid_client and unauthorized_client (in a 400, 401 or a 2xx
	// error answer), Sahamati's 401 {"errorCode",…} and vault.ist's 401
	// {"status":"UNAUTHORIZED"}. Nothing else. A person must act; retrying will not help.
	ErrRejected = errors.New("provider: rejected")
	// ErrThrottled: 429 (Sahamati "Limit Exceeded"); see Error.RetryAfter.
	ErrThrottled = errors.New("provider: throttled")
	// ErrTransient: 5xx, 408, a temporarily_unavailable/server_error code, timeouts,
	// connection errors, a cancelled or expired context. Worth retrying.
	ErrTransient = errors.New("provider: transient")
	// ErrMalformed: a 2xx the client cannot use — not JSON, over 1 MiB, no access token, an
	// impossible lifetime. The provider may have acted on the request and spent a single-use
	// refresh token: when the body still carried a new one, Error.NewRefreshToken has it.
	ErrMalformed = errors.New("provider: malformed response")
	// ErrUnexpected: an answer that is none of the above — a 403 from a WAF, a 404, a
	// redirect, an HTML page, a 400 or 401 with another code. Nothing says the credentials are
	// bad, so it is a failure to retry on the next run, never a reason to withdraw a token;
	// retrying within the invocation would most likely get the same answer.
	ErrUnexpected = errors.New("provider: unexpected response")
)

// Error is every failure of Refresh that reached the network. No text field holds a token or
// secret value of the request, even when the provider echoed one; the one token it may carry,
// NewRefreshToken, is a token.Secret.
type Error struct {
	Class  error  // ErrRejected, ErrThrottled, ErrTransient, ErrMalformed or ErrUnexpected
	Status int    // HTTP status; 0 when there was no response
	Code   string // provider's code: "invalid_grant", Sahamati errorCode, vault "UNAUTHORIZED"
	// Message is the provider's message (or ours for malformed), redacted, at most 200
	// characters; a longer one keeps its start and its last sentence, where servers put
	// the reason.
	Message    string
	RetryAfter time.Duration
	Err        error // the network error, redacted; nil when there was a response
	// Unanswered: the request was written to the connection and no answer was read (a
	// timeout, a reset, a body cut off). The provider may have acted on it and spent a
	// single-use refresh token; presenting that token again is safe only inside the
	// provider's reuse grace. False when nothing was sent or an answer came back.
	Unanswered bool

	// NewRefreshToken is set only with ErrMalformed, when the unusable 2xx body still
	// carried a refresh token other than the one sent: the old one may be spent, so this one
	// must be kept. It redacts itself in every format and is never part of Error().
	NewRefreshToken token.Secret
	// RefreshExpiresAt goes with NewRefreshToken when the body stated its lifetime.
	RefreshExpiresAt time.Time
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("provider: ")
	b.WriteString(className(e.Class))
	sep := ": "
	if e.Status != 0 {
		b.WriteString(sep)
		b.WriteString(strconv.Itoa(e.Status))
		sep = " "
	}
	if e.Code != "" {
		b.WriteString(sep)
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if !e.NewRefreshToken.IsZero() {
		b.WriteString(" (the answer carried a new refresh token)")
	}
	if e.RetryAfter > 0 {
		b.WriteString(" (retry after ")
		b.WriteString(e.RetryAfter.String())
		b.WriteString(")")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap exposes the class and the network error to errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 2)
	if e.Class != nil {
		errs = append(errs, e.Class)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

func className(class error) string {
	switch class {
	case ErrRejected:
		return "rejected"
	case ErrThrottled:
		return "throttled"
	case ErrTransient:
		return "transient"
	case ErrMalformed:
		return "malformed response"
	case ErrUnexpected:
		return "unexpected response"
	}
	return "error"
}

// classify maps a non-2xx status (or a 2xx carrying an error code) to a class.
//
// 429 is throttled; 408, 5xx and the RFC 6749 codes temporarily_unavailable and server_error
// are transient; only the rejection codes and the profile's documented 401 body are rejected
// (docs/design.md §1); everything else — 3xx, 403, 404, 1xx, 6xx, other codes — is unexpected, so
// one bad answer from a proxy cannot withdraw a working token.
func (c *Client) classify(status int, code string, m map[string]json.RawMessage) error {
	switch {
	case status == http.StatusTooManyRequests:
		return ErrThrottled
	case status == http.StatusRequestTimeout, status >= 500 && status <= 599:
		return ErrTransient
	case code == "temporarily_unavailable", code == "server_error":
		return ErrTransient
	case rejectionCode(code) && (status == http.StatusBadRequest || status == http.StatusUnauthorized || status >= 200 && status <= 299):
		return ErrRejected
	case status == http.StatusUnauthorized && c.documented401(m):
		return ErrRejected
	}
	return ErrUnexpected
}

// rejectionCode reports the RFC 6749 §5.2 codes that say the grant or the client is no
// longer accepted. invalid_request, invalid_scope and unsupported_grant_type describe the
// request, which a proxy or a misconfiguration can break as well: not a reason to withdraw.
func rejectionCode(code string) bool {
	switch code {
	case "invalid_grant", "invalid_client", "unauthorized_client":
		return true
	}
	return false
}

// documented401 reports whether a 401 body has the shape the profile's provider documents
// for refused credentials: Sahamati {"errorCode","errorMsg"}, vault.ist
// {"status":"UNAUTHORIZED","message"}. A bare 401 from a gateway is not one. m is the body
// as parseErrorBody read it, nil when it is not a JSON object.
func (c *Client) documented401(m map[string]json.RawMessage) bool {
	switch c.profile {
	case profileSahamati:
		code, ok := stringField(m, "errorCode")
		return ok && code != ""
	case profileJSON:
		status, ok := stringField(m, "status")
		return ok && status == "UNAUTHORIZED"
	}
	return false
}

// retryAfter reads Retry-After as delay-seconds or an HTTP-date relative to now (RFC 9110
// §10.2.3). Absent, unparsable or past means 0; longer than a year is cut to a year.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs > int64(maxLifetime/time.Second) {
			return maxLifetime
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d <= 0 {
		return 0
	}
	return min(d, maxLifetime)
}

const (
	redactedText = "[redacted]"
	maxText      = 200
)

// redactor replaces every known secret value in provider-supplied text.
type redactor struct{ values []string }

// newRedactor keeps each non-empty value in the forms it may be echoed in (as is, cleaned,
// form-, path- and JSON-escaped), longest first so a longer secret is never half-replaced by a
// shorter one inside it.
func newRedactor(values ...string) *redactor {
	r := &redactor{}
	r.add(values...)
	return r
}

func (r *redactor) add(values ...string) {
	seen := make(map[string]bool, len(r.values))
	for _, v := range r.values {
		seen[v] = true
	}
	for _, v := range values {
		for _, form := range []string{v, cleanText(v), url.QueryEscape(v), url.PathEscape(v), jsonEscape(v)} {
			if form != "" && !seen[form] {
				seen[form] = true
				r.values = append(r.values, form)
			}
		}
	}
	sort.SliceStable(r.values, func(i, j int) bool { return len(r.values[i]) > len(r.values[j]) })
}

// jsonEscape is v as it appears inside a JSON string (json.Marshal escapes <, >, &).
func jsonEscape(v string) string {
	b, _ := json.Marshal(v) // a string always marshals
	return strings.TrimSuffix(strings.TrimPrefix(string(b), `"`), `"`)
}

// text cleans s (valid UTF-8, no control characters, runs of space collapsed), replaces
// every secret, then shortens — in that order, so shortening can't cut a secret in two
// and leave half of it.
func (r *redactor) text(s string) string {
	s = cleanText(s)
	for _, v := range r.values {
		s = strings.ReplaceAll(s, v, redactedText)
	}
	return shorten(s, maxText)
}

func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, c := range s {
		if unicode.IsSpace(c) || unicode.IsControl(c) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(c)
	}
	return b.String()
}

// shorten cuts s to at most n characters, keeping its last sentence whole when it fits:
// servers put the reason there (Hydra's invalid_grant answers share a long first sentence
// and differ only in the last, "The refresh token was already used." vs "… is malformed or
// not valid."). Without a sentence that fits, the end of s is kept.
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	const gap, ellipsis = " ... ", "..."
	if i := lastSentence(s); i > 0 {
		last := s[i:]
		if budget := n - utf8.RuneCountInString(last) - len(gap); budget >= 0 {
			head := strings.TrimRight(firstRunes(s[:i], budget), " ")
			return strings.TrimLeft(head+gap, " ") + last
		}
	}
	return ellipsis + lastRunes(s, n-len(ellipsis))
}

// lastSentence returns where the last sentence of s starts: after the last ". ", "! " or
// "? " followed by an upper-case letter or digit (so "e.g. foo" is no boundary); 0 if none.
func lastSentence(s string) int {
	for i := len(s) - 3; i >= 0; i-- {
		if (s[i] == '.' || s[i] == '!' || s[i] == '?') && s[i+1] == ' ' {
			r, _ := utf8.DecodeRuneInString(s[i+2:])
			if unicode.IsUpper(r) || unicode.IsDigit(r) {
				return i + 2
			}
		}
	}
	return 0
}

func firstRunes(s string, n int) string {
	kept := 0
	for i := range s {
		if kept == n {
			return s[:i]
		}
		kept++
	}
	return s
}

func lastRunes(s string, n int) string {
	for i := len(s); i > 0; {
		if n == 0 {
			return s[i:]
		}
		_, size := utf8.DecodeLastRuneInString(s[:i])
		i -= size
		n--
	}
	return s
}

// netError is a network error with its text redacted. It keeps only the context errors in
// its chain so errors.Is(err, context.DeadlineExceeded) still works, without exposing the
// unredacted original.
type netError struct {
	msg   string
	cause error
}

func (e *netError) Error() string { return e.msg }
func (e *netError) Unwrap() error { return e.cause }

func sanitizeErr(err error, red *redactor) error {
	ne := &netError{msg: red.text(err.Error())}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		ne.cause = context.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		ne.cause = context.Canceled
	}
	return ne
}
