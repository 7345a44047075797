package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// TestOnlyRejectionsAreRejected: docs/design.md §1 — only invalid_grant, invalid_client,
// unauthorized_client and each profile's documented 401 body withdraw a token; anything else
// a proxy, a WAF or a misrouted URL can produce is ErrUnexpected.
func TestOnlyRejectionsAreRejected(t *testing.T) {
	html := http.Header{"Content-Type": {"text/html"}}
	tests := []struct {
		name   string
		prov   func(string) token.Provider
		status int
		header http.Header
		body   string
		want   error
	}{
		// Rejections.
		{"form 400 invalid_grant", formProvider, 400, nil, `{"error":"invalid_grant"}`, ErrRejected},
		{"form 401 invalid_client", formProvider, 401, nil, `{"error":"invalid_client"}`, ErrRejected},
		{"form 400 invalid_client", formProvider, 400, nil, `{"error":"invalid_client"}`, ErrRejected},
		{"form 400 unauthorized_client", formProvider, 400, nil, `{"error":"unauthorized_client"}`, ErrRejected},
		{"form 200 invalid_grant", formProvider, 200, nil, `{"error":"invalid_grant"}`, ErrRejected},
		{"client_credentials 401 invalid_client", ccProvider, 401, nil, `{"error":"invalid_client","error_description":"bad secret"}`, ErrRejected},
		{"vault documented 401", jsonProvider, 401, nil, `{"status":"UNAUTHORIZED","message":"The Token has been revoked","traceId":"t","errors":[]}`, ErrRejected},
		{"vault 400 invalid_grant", jsonProvider, 400, nil, `{"error":"invalid_grant"}`, ErrRejected},
		{"sahamati documented 401", sahamatiProvider, 401, nil, `{"ver":"1.0.0","txnId":"t","errorCode":"Unauthorized","errorMsg":"Invalid entity id/secret or secret is expired"}`, ErrRejected},
		// Not rejections.
		{"form 403 WAF page", formProvider, 403, html, `<html><head><title>403 Forbidden</title></head><body>Request blocked</body></html>`, ErrUnexpected},
		{"vault 403 WAF page", jsonProvider, 403, html, `<html><body>Access Denied</body></html>`, ErrUnexpected},
		{"sahamati 403 WAF page", sahamatiProvider, 403, html, `<html><body>Access Denied</body></html>`, ErrUnexpected},
		{"form 404 JSON", formProvider, 404, nil, `{"error":"not_found"}`, ErrUnexpected},
		{"form 405", formProvider, 405, nil, ``, ErrUnexpected},
		{"form 401 without a body", formProvider, 401, nil, ``, ErrUnexpected},
		{"form 401 invalid_token", formProvider, 401, nil, `{"error":"invalid_token"}`, ErrUnexpected},
		{"form 400 invalid_request", formProvider, 400, nil, `{"error":"invalid_request","error_description":"missing parameter"}`, ErrUnexpected},
		{"form 400 unsupported_grant_type", formProvider, 400, nil, `{"error":"unsupported_grant_type"}`, ErrUnexpected},
		{"form 403 invalid_grant", formProvider, 403, nil, `{"error":"invalid_grant"}`, ErrUnexpected},
		{"form 200 invalid_scope", formProvider, 200, nil, `{"error":"invalid_scope"}`, ErrUnexpected},
		{"vault 401 gateway page", jsonProvider, 401, html, `<html><body>401 Authorization Required</body></html>`, ErrUnexpected},
		{"vault 401 other status", jsonProvider, 401, nil, `{"status":"FORBIDDEN","message":"no"}`, ErrUnexpected},
		{"vault 400 BAD_REQUEST", jsonProvider, 400, nil, `{"status":"BAD_REQUEST","message":"unsupported content type"}`, ErrUnexpected},
		{"sahamati 401 gateway page", sahamatiProvider, 401, html, `<html><body>401 Unauthorized</body></html>`, ErrUnexpected},
		{"sahamati 401 JSON without errorCode", sahamatiProvider, 401, nil, `{"message":"Unauthorized"}`, ErrUnexpected},
		{"sahamati 403 with errorCode", sahamatiProvider, 403, nil, `{"errorCode":"Forbidden","errorMsg":"IP not allowed"}`, ErrUnexpected},
		// The other classes are unchanged.
		{"form 429", formProvider, 429, nil, `{"error":"invalid_grant"}`, ErrThrottled},
		{"form 503 HTML", formProvider, 503, html, `<html>busy</html>`, ErrTransient},
		{"vault 500 invalid_grant", jsonProvider, 500, nil, `{"error":"invalid_grant"}`, ErrTransient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, answer(tt.status, tt.header, tt.body))
			r, err := newTestClient(t, tt.prov(srv.tokenURL()), Options{}).Refresh(context.Background(), testRT)
			if r != nil {
				t.Fatalf("got a result, want an error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %v, want *Error", err)
			}
			for _, class := range allClasses {
				if got, want := errors.Is(err, class), class == tt.want; got != want {
					t.Errorf("errors.Is(err, %v): got %v, want %v (err %v)", class, got, want, err)
				}
			}
			if e.Status != tt.status {
				t.Errorf("Status: got %d, want %d", e.Status, tt.status)
			}
			if !e.NewRefreshToken.IsZero() {
				t.Errorf("NewRefreshToken set on a %v answer", e.Class)
			}
		})
	}
}

// Hydra's two invalid_grant answers share a 237-character first sentence; the reason is the
// last one.
const hydraGrantPrefix = "The provided authorization grant (e.g., authorization code, resource owner credentials) or refresh token is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client."

func TestMessageKeepsLastSentence(t *testing.T) {
	used := hydraGrantPrefix + " The refresh token was already used."
	bad := hydraGrantPrefix + " The refresh token is malformed or not valid."
	var got []string
	for _, desc := range []string{used, bad} {
		body, _ := json.Marshal(map[string]string{"error": "invalid_grant", "error_description": desc})
		srv := newTestServer(t, answer(400, nil, string(body)))
		_, err := newTestClient(t, formProvider(srv.tokenURL()), Options{}).Refresh(context.Background(), testRT)
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrRejected) {
			t.Fatalf("got %v, want rejected", err)
		}
		if n := utf8.RuneCountInString(e.Message); n > maxText {
			t.Errorf("Message has %d characters, want at most %d", n, maxText)
		}
		if !strings.HasPrefix(e.Message, "The provided authorization grant") {
			t.Errorf("Message: got %q, want the start kept", e.Message)
		}
		got = append(got, e.Message)
	}
	if !strings.HasSuffix(got[0], " The refresh token was already used.") {
		t.Errorf("got %q, want it to end with the reuse sentence", got[0])
	}
	if !strings.HasSuffix(got[1], " The refresh token is malformed or not valid.") {
		t.Errorf("got %q, want it to end with the malformed sentence", got[1])
	}
	if got[0] == got[1] {
		t.Errorf("both answers read %q, want them told apart", got[0])
	}
}

func TestShorten(t *testing.T) {
	long := strings.Repeat("word ", 50) // 250 characters, no sentence boundary
	tests := []struct {
		name, in, wantSuffix, wantPrefix string
	}{
		{"short is unchanged", "The refresh token was already used.", "The refresh token was already used.", "The refresh token"},
		{"last sentence kept", strings.Repeat("a", 300) + ". Last one.", " ... Last one.", "aaaa"},
		{"e.g. is no boundary", strings.Repeat("a", 300) + " e.g. the end", "e.g. the end", "..."},
		{"no boundary keeps the end", long + "END", "word END", "..."},
		{"last sentence too long keeps the end", "Short. " + strings.Repeat("b", 300), "bbbb", "..."},
		{"multi-byte runes", strings.Repeat("ä", 300) + ". Ende ü.", " ... Ende ü.", "ää"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := shorten(tt.in, maxText)
			if n := utf8.RuneCountInString(got); n > maxText {
				t.Errorf("got %d characters, want at most %d", n, maxText)
			}
			if !utf8.ValidString(got) {
				t.Errorf("got invalid UTF-8 %q", got)
			}
			if !strings.HasSuffix(got, tt.wantSuffix) || !strings.HasPrefix(got, tt.wantPrefix) {
				t.Errorf("got %q, want prefix %q and suffix %q", got, tt.wantPrefix, tt.wantSuffix)
			}
		})
	}
	// A secret in the last sentence is redacted before the cut.
	if got := newRedactor(testRT).text(hydraGrantPrefix + " Token " + testRT + " was already used."); strings.Contains(got, testRT) || !strings.HasSuffix(got, "Token [redacted] was already used.") {
		t.Errorf("got %q, want the last sentence with the token redacted", got)
	}
}

// TestMalformedKeepsNewRefreshToken: a 2xx that rotated the refresh token but is unusable
// otherwise hands the new refresh token back on the error (issue 9 item 3), and never prints it.
func TestMalformedKeepsNewRefreshToken(t *testing.T) {
	const rotated = "rt-salvaged-7Hq2Zp0Lx"
	pad := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name     string
		prov     func(string) token.Provider
		body     string
		wantRT   string
		wantLife time.Duration
		wantMsg  string
	}{
		{"no access_token", formProvider, `{"refresh_token":"` + rotated + `","expires_in":900}`, rotated, 0, "no access_token"},
		{"empty access_token", jsonProvider, `{"access_token":"","refresh_token":"` + rotated + `","refresh_expires_in":2592000}`, rotated, 30 * 24 * time.Hour, "no access_token"},
		{"access_token not a string", formProvider, `{"access_token":7,"refresh_token":"` + rotated + `"}`, rotated, 0, "access_token is not a string"},
		{"expires_in zero", formProvider, `{"access_token":"at-z","refresh_token":"` + rotated + `","expires_in":0}`, rotated, 0, "expires_in is not positive"},
		{"expires_in negative", jsonProvider, `{"access_token":"at-n","refresh_token":"` + rotated + `","expires_in":-1}`, rotated, 0, "expires_in is not positive"},
		{"expires_in not numeric", jsonProvider, `{"access_token":"at-w","refresh_token":"` + rotated + `","expires_in":"soon"}`, rotated, 0, "expires_in is not a number"},
		{"expires_in ten years", formProvider, `{"access_token":"at-t","refresh_token":"` + rotated + `","expires_in":315360000,"refresh_token_expires_in":86400}`, rotated, 24 * time.Hour, "expires_in is over a year"},
		{"expires_in overflows", formProvider, `{"access_token":"at-o","refresh_token":"` + rotated + `","expires_in":1e400}`, rotated, 0, "expires_in is not a number"},
		{"over 1 MiB, token first", formProvider, `{"refresh_token":"` + rotated + `","refresh_expires_in":3600,"access_token":"at-big","pad":"` + pad(maxBody) + `"}`, rotated, time.Hour, "over 1 MiB"},
		{"over 1 MiB, token after the padding", jsonProvider, `{"access_token":"at-big","pad":{"a":["` + pad(3*maxBody) + `",1,{"b":null}]},"expires_in":60,"refresh_token":"` + rotated + `"}`, rotated, 0, "over 1 MiB"},
		{"over 1 MiB, token past the salvage bound", formProvider, `{"pad":"` + pad(maxSalvage) + `","refresh_token":"` + rotated + `"}`, "", 0, "over 1 MiB"},
		{"same refresh token is not new", formProvider, `{"refresh_token":"` + strings.ReplaceAll(testRT, "/", `\/`) + `","expires_in":900}`, "", 0, "no access_token"},
		{"refresh token not a string", formProvider, `{"refresh_token":["` + rotated + `"],"access_token":"at"}`, "", 0, "refresh_token is not a string"},
		{"not JSON", formProvider, `refresh_token=` + rotated, "", 0, "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, answer(200, nil, tt.body))
			var logs bytes.Buffer
			r, err := newTestClient(t, tt.prov(srv.tokenURL()), Options{}).Refresh(context.Background(), testRT)
			if r != nil {
				t.Fatalf("got a result, want nil")
			}
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want a malformed *Error", err)
			}
			if got := e.NewRefreshToken.Reveal(); got != tt.wantRT {
				t.Errorf("NewRefreshToken: got %q, want %q", got, tt.wantRT)
			}
			var wantAt time.Time
			if tt.wantLife > 0 {
				wantAt = t0.Add(tt.wantLife)
			}
			if !e.RefreshExpiresAt.Equal(wantAt) {
				t.Errorf("RefreshExpiresAt: got %v, want %v", e.RefreshExpiresAt, wantAt)
			}
			if !strings.Contains(e.Message, tt.wantMsg) {
				t.Errorf("Message: got %q, want it to contain %q", e.Message, tt.wantMsg)
			}
			// Leak check: every way the error may be shown.
			slog.New(slog.NewJSONHandler(&logs, nil)).Error("refresh failed", "error", err, "detail", e, "class", e.Class)
			js, _ := json.Marshal(e)
			text := strings.Join([]string{err.Error(), fmt.Sprintf("%v %+v %#v %s %q", err, err, e, e, e.NewRefreshToken), logs.String(), string(js)}, "\n")
			if strings.Contains(text, rotated) || strings.Contains(text, testRT) {
				t.Errorf("the error shows a refresh token:\n%s", text)
			}
			if n := len(srv.requests()); n != 1 {
				t.Errorf("got %d requests, want 1", n)
			}
		})
	}
}
