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
)

// Failure classes; every *Error matches exactly one with errors.Is.
var (
	// ErrRejected: the provider refused the credentials or the request (invalid_grant,
	// invalid_client, the 401s, other 4xx, a redirect). A person must act; retrying the same
	// request will not help.
	ErrRejected = errors.New("provider: rejected")
	// ErrThrottled: 429 (Sahamati "Limit Exceeded"); see Error.RetryAfter.
	ErrThrottled = errors.New("provider: throttled")
	// ErrTransient: 5xx, 408, a temporarily_unavailable/server_error code, timeouts,
	// connection errors, a cancelled or expired context. Worth retrying.
	ErrTransient = errors.New("provider: transient")
	// ErrMalformed: a 2xx the client cannot use — not JSON, over 1 MiB, no access token, an
	// impossible lifetime — or a status outside 2xx–5xx. The provider may have acted on
	// the request (and spent a single-use refresh token).
	ErrMalformed = errors.New("provider: malformed response")
)

// Error is every failure of Refresh that reached the network. No field holds a token or
// secret value of the request, even when the provider echoed one.
type Error struct {
	Class      error  // ErrRejected, ErrThrottled, ErrTransient or ErrMalformed
	Status     int    // HTTP status; 0 when there was no response
	Code       string // provider's code: "invalid_grant", Sahamati errorCode, vault "UNAUTHORIZED"
	Message    string // provider's message (or ours for malformed), redacted, at most 200 characters
	RetryAfter time.Duration
	Err        error // the network error, redacted; nil when there was a response
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
	}
	return "error"
}

// classify maps a non-2xx status (or a 2xx carrying an error code) to a class.
//
// 429 is throttled; 408, 5xx and the RFC 6749 codes temporarily_unavailable and server_error
// are transient; 3xx and every other 4xx are rejected (a wrong URL, method or request needs
// a person as much as a revoked token does); 1xx and 6xx+ are malformed.
func classify(status int, code string) error {
	switch {
	case status == http.StatusTooManyRequests:
		return ErrThrottled
	case status == http.StatusRequestTimeout, status >= 500 && status <= 599:
		return ErrTransient
	case code == "temporarily_unavailable", code == "server_error":
		return ErrTransient
	case status >= 200 && status <= 499:
		return ErrRejected
	}
	return ErrMalformed
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
// every secret, then truncates — in that order, so truncation can't cut a secret in two
// and leave half of it.
func (r *redactor) text(s string) string {
	s = cleanText(s)
	for _, v := range r.values {
		s = strings.ReplaceAll(s, v, redactedText)
	}
	return truncate(s, maxText)
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

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	const ellipsis = "..."
	kept := 0
	for i := range s {
		if kept == n-len(ellipsis) {
			return s[:i] + ellipsis
		}
		kept++
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
