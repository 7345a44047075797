package providersim

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

var vaultErrorKeys = []string{"status", "message", "traceId", "errors"}

func newTestVault(t *testing.T, clock *Clock) *Vault {
	t.Helper()
	v := NewVault(VaultOptions{Now: clock.Now})
	t.Cleanup(v.Close)
	return v
}

func refreshVault(t *testing.T, v *Vault, rt string) reply {
	t.Helper()
	return postJSON(t, v.URL(), fmt.Sprintf(`{"grant_type":"refresh_token","refresh_token":%q}`, rt))
}

func wantVaultError(t *testing.T, r reply, status int, name, msg string) {
	t.Helper()
	wantStatus(t, r, status)
	wantContentType(t, r, "application/json")
	wantKeys(t, r, vaultErrorKeys...)
	if r.str("status") != name || r.str("message") != msg || r.str("traceId") != "TraceId unavailable" {
		t.Errorf("error body: got %s, want status %q message %q", r.raw, name, msg)
	}
}

func TestVaultRotatesOnEveryRefresh(t *testing.T) {
	clock := NewClock(t0)
	v := newTestVault(t, clock)
	if !strings.HasSuffix(v.URL(), "/v2.0/reference/gettoken") {
		t.Fatalf("URL: got %q", v.URL())
	}
	if v.Live() != "" {
		t.Fatalf("Live before Seed: got a token, want \"\"")
	}
	seed := v.Seed()
	if !strings.HasPrefix(seed, "vlt_rt_") || v.Live() != seed {
		t.Fatalf("Seed/Live: got %q/%q, want a vlt_rt_ token that is live", seed, v.Live())
	}

	seen := map[string]bool{seed: true}
	rt, userID := seed, ""
	for i := range 3 {
		r := refreshVault(t, v, rt)
		wantStatus(t, r, http.StatusOK)
		wantContentType(t, r, "application/json")
		wantKeys(t, r, "access_token", "token_type", "refresh_token", "scope", "expires_in", "user_id")
		if r.str("token_type") != "Bearer" || r.body["expires_in"] != 86400.0 || r.str("scope") == "" {
			t.Errorf("refresh %d: got %s", i, r.raw)
		}
		at, next := r.str("access_token"), r.str("refresh_token")
		if !strings.HasPrefix(at, "vlt_at_") || !strings.HasPrefix(next, "vlt_rt_") {
			t.Fatalf("refresh %d: token prefixes wrong: %s", i, r.raw)
		}
		if seen[next] || seen[at] {
			t.Fatalf("refresh %d: a token value repeated", i)
		}
		seen[next], seen[at] = true, true
		if i == 0 {
			userID = r.str("user_id")
		} else if r.str("user_id") != userID {
			t.Errorf("user_id changed: got %q, want %q", r.str("user_id"), userID)
		}
		if v.Live() != next || !v.Valid(at) {
			t.Errorf("refresh %d: Live/Valid do not reflect the new tokens", i)
		}

		// The presented refresh token is dead now.
		wantVaultError(t, refreshVault(t, v, rt), http.StatusUnauthorized, "UNAUTHORIZED", "The Token has been revoked")
		rt = next
	}
	if got := len(v.Issued()); got != 7 {
		t.Errorf("Issued: got %d tokens, want 7 (seed + 3×2)", got)
	}
}

func TestVaultExpiredRefreshToken(t *testing.T) {
	clock := NewClock(t0)
	v := newTestVault(t, clock)
	seed := v.Seed()

	clock.Advance(30*24*time.Hour - time.Second)
	r := refreshVault(t, v, seed)
	wantStatus(t, r, http.StatusOK)
	next := r.str("refresh_token")
	at := r.str("access_token")

	// Each refresh token lives 30 days from its own issue.
	clock.Advance(30 * 24 * time.Hour)
	wantVaultError(t, refreshVault(t, v, next), http.StatusUnauthorized, "UNAUTHORIZED",
		"The Token has expired on "+t0.Add(60*24*time.Hour-time.Second).Format("2006-01-02T15:04:05.000Z"))
	if v.Valid(at) {
		t.Errorf("access token Valid after 30 days: got true, want false")
	}
	if body := string(refreshVault(t, v, next).raw); !strings.Contains(body, `"errors":[]`) {
		t.Errorf("errors: got %s, want an empty array", body)
	}
}

func TestVaultExpireRefreshAndAccessTTL(t *testing.T) {
	clock := NewClock(t0)
	v := newTestVault(t, clock)
	seed := v.Seed()
	r := refreshVault(t, v, seed)
	wantStatus(t, r, http.StatusOK)
	at, next := r.str("access_token"), r.str("refresh_token")

	clock.Advance(24*time.Hour - time.Second)
	if !v.Valid(at) {
		t.Errorf("Valid 1s before 24h: got false, want true")
	}
	clock.Advance(time.Second)
	if v.Valid(at) {
		t.Errorf("Valid at 24h: got true, want false")
	}

	v.ExpireRefresh(next)
	wantVaultError(t, refreshVault(t, v, next), http.StatusUnauthorized, "UNAUTHORIZED",
		"The Token has expired on "+clock.Now().UTC().Format("2006-01-02T15:04:05.000Z"))
	wantVaultError(t, refreshVault(t, v, "vlt_rt_unknown"), http.StatusUnauthorized, "UNAUTHORIZED", "The Token is invalid")
}

func TestVaultBadRequests(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		msg         string
	}{
		{"form body", formType, "grant_type=refresh_token&refresh_token=x", "Content-Type '" + formType + "' is not supported, use 'application/json'"},
		{"not json", "application/json", "grant_type=refresh_token", "Malformed JSON request"},
		{"truncated json", "application/json", `{"grant_type":"refresh_token"`, "Malformed JSON request"},
		{"wrong grant", "application/json", `{"grant_type":"password","refresh_token":"x"}`, "Unsupported grant type: password"},
		{"missing token", "application/json", `{"grant_type":"refresh_token"}`, "Validation failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newTestVault(t, NewClock(t0))
			seed := v.Seed()
			r := send(t, newPost(t, v.URL(), tt.contentType, tt.body))
			wantVaultError(t, r, http.StatusBadRequest, "BAD_REQUEST", tt.msg)
			if v.Live() != seed {
				t.Errorf("Live changed after a bad request")
			}
		})
	}
	t.Run("field errors", func(t *testing.T) {
		v := newTestVault(t, NewClock(t0))
		r := postJSON(t, v.URL(), `{}`)
		wantStatus(t, r, http.StatusBadRequest)
		if errs, _ := r.body["errors"].([]any); len(errs) != 2 {
			t.Errorf("errors: got %s, want one per missing field", r.raw)
		}
	})
}
