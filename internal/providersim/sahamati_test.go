package providersim

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

var sahamatiErrorKeys = []string{"ver", "timestamp", "txnId", "errorCode", "errorMsg"}

func newTestSahamati(t *testing.T, clock *Clock, mod func(*SahamatiOptions)) *Sahamati {
	t.Helper()
	o := SahamatiOptions{EntityID: "FIU-1", Secret: "s3cret", Now: clock.Now}
	if mod != nil {
		mod(&o)
	}
	s := NewSahamati(o)
	t.Cleanup(s.Close)
	return s
}

func sahamatiCreds(id, secret string) url.Values {
	return url.Values{"id": {id}, "secret": {secret}}
}

func TestSahamatiIssuesDocumentedToken(t *testing.T) {
	clock := NewClock(t0)
	s := newTestSahamati(t, clock, nil)
	if !strings.HasSuffix(s.URL(), "/iam/v1/entity/token/generate") || !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL: got %q", s.URL())
	}

	r := postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret"))
	wantStatus(t, r, http.StatusOK)
	wantContentType(t, r, "application/json")
	wantKeys(t, r, "ver", "timestamp", "txnId", "accessToken", "expiresIn", "refreshExpiresIn", "tokenType", "notBeforePolicy", "scope")
	for k, want := range map[string]any{"expiresIn": 86400.0, "refreshExpiresIn": 0.0, "tokenType": "Bearer", "notBeforePolicy": 0.0, "ver": "1.0.0"} {
		if got := r.body[k]; got != want {
			t.Errorf("%s: got %v, want %v", k, got, want)
		}
	}
	if ts, err := time.Parse(time.RFC3339Nano, r.str("timestamp")); err != nil || !ts.Equal(t0) {
		t.Errorf("timestamp: got %q (%v), want %v", r.str("timestamp"), err, t0)
	}
	at := r.str("accessToken")
	if !strings.HasPrefix(at, "sah_at_") {
		t.Fatalf("accessToken: got %q, want prefix sah_at_", at)
	}

	// 24 h validity.
	clock.Advance(24*time.Hour - time.Second)
	if !s.Valid(at) {
		t.Errorf("Valid 1s before 24h: got false, want true")
	}
	clock.Advance(time.Second)
	if s.Valid(at) {
		t.Errorf("Valid at 24h: got true, want false")
	}
	if s.Valid("sah_at_never-issued") {
		t.Errorf("Valid(unknown): got true, want false")
	}
	if got := s.Issued(); len(got) != 1 || got[0] != at {
		t.Errorf("Issued: got %d tokens, want exactly the one access token", len(got))
	}
}

func TestSahamatiRejects(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		status      int
		code, msg   string
	}{
		{"wrong secret", formType, "id=FIU-1&secret=nope", 401, "Unauthorized", "Invalid entity id/secret or secret is expired"},
		{"wrong id", formType, "id=FIU-2&secret=s3cret", 401, "Unauthorized", "Invalid entity id/secret or secret is expired"},
		{"missing secret", formType, "id=FIU-1", 400, "Bad Request", "Entity Id/Secret is missing in the request"},
		{"missing id", formType, "secret=s3cret", 400, "Bad Request", "Entity Id/Secret is missing in the request"},
		{"json body", "application/json", `{"id":"FIU-1","secret":"s3cret"}`, 400, "Bad Request", "Content-Type must be application/x-www-form-urlencoded"},
		{"no content type", "", "id=FIU-1&secret=s3cret", 400, "Bad Request", "Content-Type must be application/x-www-form-urlencoded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSahamati(t, NewClock(t0), nil)
			r := send(t, newPost(t, s.URL(), tt.contentType, tt.body))
			wantStatus(t, r, tt.status)
			wantContentType(t, r, "application/json")
			wantKeys(t, r, sahamatiErrorKeys...)
			if r.str("errorCode") != tt.code || r.str("errorMsg") != tt.msg {
				t.Errorf("error: got %q/%q, want %q/%q", r.str("errorCode"), r.str("errorMsg"), tt.code, tt.msg)
			}
			if len(s.Issued()) != 0 {
				t.Errorf("Issued: got %d tokens, want 0", len(s.Issued()))
			}
		})
	}
}

func TestSahamatiSecretExpiryAndReset(t *testing.T) {
	clock := NewClock(t0)
	s := newTestSahamati(t, clock, func(o *SahamatiOptions) { o.SecretExpiresAt = t0.Add(time.Hour) })

	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret")), http.StatusOK)
	clock.Advance(time.Hour)
	r := postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret"))
	wantStatus(t, r, http.StatusUnauthorized)
	if got, want := r.str("errorMsg"), "Invalid entity id/secret or secret is expired"; got != want {
		t.Errorf("errorMsg: got %q, want %q", got, want)
	}

	// An operator reset: the new secret works for 60 days, the old one never again.
	s.SetSecret("n3w", time.Time{})
	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret")), http.StatusUnauthorized)
	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "n3w")), http.StatusOK)
	clock.Advance(60*24*time.Hour - time.Second)
	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "n3w")), http.StatusOK)
	clock.Advance(time.Second)
	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "n3w")), http.StatusUnauthorized)
}

func TestSahamatiDefaultSecretLifeIs60Days(t *testing.T) {
	clock := NewClock(t0)
	s := newTestSahamati(t, clock, nil)
	clock.Advance(60*24*time.Hour - time.Second)
	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret")), http.StatusOK)
	clock.Advance(time.Second)
	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret")), http.StatusUnauthorized)
}

func TestSahamatiDailyLimitThen429ThenNextKolkataDay(t *testing.T) {
	// 23:30 in Kolkata is 18:00 UTC: the quota day turns at 18:30 UTC, while the
	// UTC day does not, so this also proves the day is Kolkata's.
	start := time.Date(2025, 7, 3, 18, 0, 0, 0, time.UTC)
	clock := NewClock(start)
	s := newTestSahamati(t, clock, nil)

	for i := range 300 {
		r := postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret"))
		if r.status != http.StatusOK {
			t.Fatalf("request %d: got %d, want 200 (body %s)", i+1, r.status, r.raw)
		}
	}
	if got := s.UsedToday(); got != 300 {
		t.Fatalf("UsedToday: got %d, want 300", got)
	}
	r := postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret"))
	wantStatus(t, r, http.StatusTooManyRequests)
	wantContentType(t, r, "application/json")
	wantKeys(t, r, sahamatiErrorKeys...)
	if r.str("errorCode") != "Limit Exceeded" || r.str("errorMsg") != "Limit Exceeded" {
		t.Errorf("429 body: got %s, want errorCode and errorMsg \"Limit Exceeded\"", r.raw)
	}
	if r.header.Get("Retry-After") != "" {
		t.Errorf("Retry-After: got %q, want none by default", r.header.Get("Retry-After"))
	}
	// Every request counts, the refused ones too.
	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "wrong")), http.StatusTooManyRequests)
	if got := s.UsedToday(); got != 302 {
		t.Fatalf("UsedToday after two 429s: got %d, want 302", got)
	}

	clock.Set(start.Add(29*time.Minute + 59*time.Second)) // 23:59:59 IST
	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret")), http.StatusTooManyRequests)
	clock.Set(start.Add(30 * time.Minute)) // 00:00 IST, same UTC day
	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret")), http.StatusOK)
	if got := s.UsedToday(); got != 1 {
		t.Fatalf("UsedToday on the new quota day: got %d, want 1", got)
	}
	if got, want := s.Count(http.StatusOK), 301; got != want {
		t.Errorf("Count(200): got %d, want %d", got, want)
	}
	if got, want := s.Count(http.StatusTooManyRequests), 3; got != want {
		t.Errorf("Count(429): got %d, want %d", got, want)
	}
	if got, want := s.Requests(), 304; got != want {
		t.Errorf("Requests: got %d, want %d", got, want)
	}
}

func TestSahamatiQuotaIsPerEntityAndCountsFailures(t *testing.T) {
	clock := NewClock(t0)
	s := newTestSahamati(t, clock, func(o *SahamatiOptions) { o.DailyLimit = 3 })
	s.SetRetryAfter(90 * time.Second)

	// Someone else's failures do not spend this entity's quota.
	for range 5 {
		postForm(t, s.URL(), sahamatiCreds("FIU-2", "x"))
	}
	// This entity's own failures do.
	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "wrong")), http.StatusUnauthorized)
	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret")), http.StatusOK)
	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret")), http.StatusOK)
	r := postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret"))
	wantStatus(t, r, http.StatusTooManyRequests)
	if got := r.header.Get("Retry-After"); got != "90" {
		t.Errorf("Retry-After: got %q, want \"90\"", got)
	}
	if got := s.UsedToday(); got != 4 {
		t.Errorf("UsedToday: got %d, want 4", got)
	}
}

func TestSahamatiLocationOption(t *testing.T) {
	clock := NewClock(time.Date(2025, 7, 3, 23, 59, 0, 0, time.UTC))
	s := newTestSahamati(t, clock, func(o *SahamatiOptions) { o.DailyLimit = 1; o.Location = time.UTC; o.TokenTTL = time.Hour })
	r := postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret"))
	wantStatus(t, r, http.StatusOK)
	if got := r.body["expiresIn"]; got != 3600.0 {
		t.Errorf("expiresIn with TokenTTL 1h: got %v, want 3600", got)
	}
	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret")), http.StatusTooManyRequests)
	clock.Advance(time.Minute)
	wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret")), http.StatusOK)
}
