package provider

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// The secrets of every fuzzed call; a fuzzed body may echo them in any way.
const (
	fuzzRT = "rt-FUZZ-q8Wm2Ks9"
	fuzzCS = "cs-FUZZ-Lp4Xv7Nd"
	fuzzES = "es-FUZZ-Tg3Hy6Rb"
)

// Real bodies from the seeds and the providers' specs, plus the edges the parsers decide.
var seedBodies = []struct {
	status int
	body   string
}{
	{200, `{"access_token":"eyJraWQiOiJmODAyNjg0OC1mNTJkLTRmY","token_type":"Bearer","refresh_token":"eyJraWQiOiJmFGGghrwghhnEGFGrehrnjdf7653kFZ_uusa3WYE","scope":"accounts:create accounts:read withdraw_other_account:show","expires_in":86400,"user_id":"usr:b06d9aaa-4310-4c0d-9e5343c1b35"}`},
	{401, `{"status":"UNAUTHORIZED","message":"The Token has expired on 2025-01-01T00:00:00.000Z","traceId":"TraceId unavailable","errors":[]}`},
	{200, `{"ver":"1.0.0","timestamp":"2025-07-03T06:00:00.000Z","txnId":"3c2e8c4e-1f0b-4c1e-9d4a-2f7f1b1e9a10","accessToken":"eyJhbGciOiJSUzI1NiJ9.e30.sig","expiresIn":86400,"refreshExpiresIn":0,"tokenType":"Bearer","notBeforePolicy":0,"scope":"email microprofile-jwt profile address phone offline_access"}`},
	{401, `{"ver":"1.0.0","timestamp":"2025-07-03T06:00:00.000Z","txnId":"9f1d","errorCode":"Unauthorized","errorMsg":"Invalid entity id/secret or secret is expired"}`},
	{429, `{"ver":"1.0.0","timestamp":"2025-07-03T06:00:00.000Z","txnId":"9f1e","errorCode":"Limit Exceeded","errorMsg":"Limit Exceeded"}`},
	{429, "Limit Exceeded"},
	{400, `{"error":"invalid_grant","error_description":"The refresh token has already been used"}`},
	{200, `{"access_token":"rot_at_x","token_type":"Bearer","expires_in":900,"refresh_token":"rot_rt_y","scope":"offline_access fund.read target:b/testbusiness"}`},
	{401, `{"error":"invalid_client","error_description":"Client authentication failed"}`},
	{502, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"},
	{200, `{"access_token":"at","expires_in":"3600"}`},
	{200, `{"access_token":"at","expires_in":0}`},
	{200, `{"access_token":"at","expires_in":1e400}`},
	{200, `{"access_token":"at","refresh_expires_in":2592000,"scope":["a","b"]}`},
	{200, `{"error":"invalid_grant","error_description":"token rt-FUZZ-q8Wm2Ks9 reused"}`},
	{400, `{"error":{"status":"PERMISSION_DENIED","message":"secret cs-FUZZ-Lp4Xv7Nd rejected"}}`},
	{400, "error=invalid_grant&error_description=rt-FUZZ-q8Wm2Ks9"},
	{302, ""},
	{200, `[]`},
	{200, `null`},
	{200, `{"refresh_token":"rt-rotated-but-no-access","expires_in":900}`},
	{200, `{"access_token":"at","refresh_token":"rt-rotated-bad-expiry","expires_in":315360000,"refresh_expires_in":2592000}`},
	{403, "<html><head><title>403 Forbidden</title></head><body>Request blocked by WAF</body></html>"},
	{400, `{"error":"invalid_grant","error_description":"The provided authorization grant (e.g., authorization code, resource owner credentials) or refresh token is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client. The refresh token was already used."}`},
}

func fuzzClient(t testing.TB, p token.Provider) *Client {
	p.TokenURL = "https://auth.example.com/token"
	p.ClientSecret, p.EntitySecret = fuzzCS, fuzzES
	c, err := New(p, Options{Now: fixedNow})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func addSeeds(f *testing.F) {
	for _, s := range seedBodies {
		f.Add(s.status, []byte(s.body))
	}
}

// checkInterpret is the property every response parser must keep: no panic, no success
// without an access token or outside 2xx, one class per error, and no secret of the call —
// nor a token the body carries — in an error.
func checkInterpret(t *testing.T, c *Client, status int, body []byte) {
	resp := &captured{status: status, header: http.Header{}, body: body}
	if len(body) > maxBody {
		resp.body, resp.tooLarge = body[:maxBody], true
	}
	r, err := c.interpret(resp, nil, fuzzRT, t0, t0)
	if err == nil {
		if status < 200 || status > 299 {
			t.Fatalf("success for status %d", status)
		}
		if r.AccessToken.IsZero() || r.RefreshToken.IsZero() || r.TokenType == "" {
			t.Fatalf("success without an access token, refresh token or type: %+v", r)
		}
		if !r.ExpiresAt.After(t0) || r.ExpiresAt.After(t0.Add(maxLifetime)) {
			t.Fatalf("ExpiresAt %v is not within a year after %v", r.ExpiresAt, t0)
		}
		return
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got %T %v, want *Error", err, err)
	}
	classes := 0
	for _, class := range allClasses {
		if errors.Is(err, class) {
			classes++
		}
	}
	if classes != 1 {
		t.Fatalf("error matches %d classes, want 1: %v", classes, err)
	}
	if utf8.RuneCountInString(e.Message) > maxText || utf8.RuneCountInString(e.Code) > maxText {
		t.Fatalf("Message or Code over %d characters", maxText)
	}
	text := err.Error()
	for _, s := range []string{fuzzRT, fuzzCS, fuzzES} {
		if strings.Contains(text, s) {
			t.Fatalf("error leaks %q: %s", s, text)
		}
	}
	if !e.NewRefreshToken.IsZero() {
		// Only an unusable 2xx hands back a refresh token, and only a new one from the body.
		if e.Class != ErrMalformed || status < 200 || status > 299 || e.NewRefreshToken.Reveal() == fuzzRT {
			t.Fatalf("NewRefreshToken set on %v (status %d)", e.Class, status)
		}
		if rt := e.NewRefreshToken.Reveal(); len(rt) >= 8 && !strings.Contains(redactedText, rt) && strings.Contains(fmt.Sprintf("%s %v %+v %#v", err, err, err, e), rt) {
			t.Fatalf("error prints the salvaged refresh token: %s", text)
		}
	}
	if e.Class == ErrMalformed {
		return // a fixed reason, never body text
	}
	for _, s := range bodySecrets(body) {
		// Short values and ones that could be formed around "[redacted]" prove nothing.
		if len(s) < 8 || strings.ContainsAny(s, "[]") || strings.Contains(redactedText, s) {
			continue
		}
		if strings.Contains(e.Message, s) || strings.Contains(e.Code, s) {
			t.Fatalf("error quotes a token from the body: %s", text)
		}
	}
}

func FuzzParseOAuth(f *testing.F) {
	addSeeds(f)
	form := fuzzClient(f, token.Provider{Grant: token.GrantRefreshToken, ClientID: "c", ClientAuth: token.AuthBasic})
	cc := fuzzClient(f, token.Provider{Grant: token.GrantClientCredentials, ClientID: "c", Scope: "a b"})
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		checkInterpret(t, form, status, body)
		checkInterpret(t, cc, status, body)
	})
}

func FuzzParseVault(f *testing.F) {
	addSeeds(f)
	c := fuzzClient(f, token.Provider{Grant: token.GrantRefreshToken, Body: token.BodyJSON, ClientID: "c", ClientAuth: token.AuthBody})
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		checkInterpret(t, c, status, body)
	})
}

func FuzzParseSahamati(f *testing.F) {
	addSeeds(f)
	c := fuzzClient(f, token.Provider{Grant: token.GrantSahamatiEntity, EntityID: "AA-1"})
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		checkInterpret(t, c, status, body)
	})
}

// FuzzParseError covers the error-body parser and the redactor on their own.
func FuzzParseError(f *testing.F) {
	for _, s := range seedBodies {
		f.Add([]byte(s.body))
	}
	red := newRedactor(fuzzRT, fuzzCS, fuzzES)
	f.Fuzz(func(t *testing.T, body []byte) {
		code, msg, m := parseErrorBody(body)
		if m == nil {
			if code != "" || msg != "" {
				t.Fatalf("non-JSON body gave code %q message %q", code, msg)
			}
			msg = plainText(body)
		}
		for _, s := range []string{red.text(code), red.text(msg)} {
			if !utf8.ValidString(s) || utf8.RuneCountInString(s) > maxText {
				t.Fatalf("text %q is not valid UTF-8 of at most %d characters", s, maxText)
			}
			if strings.ContainsAny(s, "\r\n\t\x00") {
				t.Fatalf("text %q carries control characters", s)
			}
			for _, secret := range []string{fuzzRT, fuzzCS, fuzzES} {
				if strings.Contains(s, secret) {
					t.Fatalf("text %q leaks %q", s, secret)
				}
			}
		}
	})
}

func FuzzRetryAfter(f *testing.F) {
	for _, v := range []string{"120", "0", "-1", "Wed, 21 Oct 2015 07:28:00 GMT", t0.Add(time.Minute).Format(http.TimeFormat), "999999999999999999999", " 5 ", ""} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := retryAfter(http.Header{"Retry-After": {v}}, t0)
		if d < 0 || d > maxLifetime {
			t.Fatalf("Retry-After %q gave %v, want 0..1y", v, d)
		}
	})
}
