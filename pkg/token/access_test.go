package token_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

func TestAccessContract(t *testing.T) {
	base := mustParse(t, readDoc(t, "design-example"))
	tests := []struct {
		name       string
		status     string
		reason     string
		wantKeys   []string
		wantReason string
	}{
		{"active", "active", "", []string{"access_token", "expires_at", "generation", "scope", "status", "token_type"}, ""},
		{"active drops a stale reason", "active", "old trouble", []string{"access_token", "expires_at", "generation", "scope", "status", "token_type"}, ""},
		{"needs_reauth", "needs_reauth", "refresh interrupted before the new token was saved",
			[]string{"access_token", "expires_at", "generation", "reason", "scope", "status", "token_type"}, "refresh interrupted before the new token was saved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base.Clone()
			p.Status, p.StatusReason = tt.status, tt.reason
			a := p.Access()
			raw, err := a.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			if !reflect.DeepEqual(keys, tt.wantKeys) {
				t.Errorf("keys: got %v, want %v", keys, tt.wantKeys)
			}
			want := map[string]any{
				"access_token": "at-1122334455667788", "token_type": "Bearer", "expires_at": "2026-11-22T12:00:00Z",
				"scope": "offline_access fund.read target:b/acme", "generation": float64(7), "status": tt.status,
			}
			if tt.wantReason != "" {
				want["reason"] = tt.wantReason
			}
			if !reflect.DeepEqual(m, want) {
				t.Errorf("document:\n got %v\nwant %v", m, want)
			}
			for _, s := range []string{"rt-9e8d7c6b5a493827", "cs-7f3a9b2c1d4e5f60", "es-0a1b2c3d4e5f6071"} {
				if bytes.Contains(raw, []byte(s)) {
					t.Errorf("access document carries a private secret: %s", raw)
				}
			}
			back, err := token.ParseAccess(raw)
			if err != nil {
				t.Fatal(err)
			}
			if back.AccessToken != a.AccessToken || back.TokenType != a.TokenType || !back.ExpiresAt.Equal(a.ExpiresAt) ||
				back.Scope != a.Scope || back.Generation != a.Generation || back.Status != a.Status || back.Reason != a.Reason {
				t.Errorf("ParseAccess(Marshal): got %+v, want %+v", back, a)
			}
			raw2, err := back.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw, raw2) {
				t.Errorf("Marshal not stable:\n got %s\nwant %s", raw2, raw)
			}
		})
	}
}

func TestParseAccessErrors(t *testing.T) {
	tests := []struct {
		name, raw, field string
	}{
		{"not JSON", `{"access_token":`, "access"},
		{"wrong type", `{"access_token":"at-parse-access-error-1","generation":"7"}`, "access"},
		{"bad time", `{"access_token":"at-parse-access-error-2","expires_at":"noon-tomorrow-ish"}`, "expires_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := token.ParseAccess([]byte(tt.raw))
			var fe *token.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("got %v, want a %s field error", err, tt.field)
			}
			if !errors.Is(err, token.ErrInvalid) {
				t.Errorf("errors.Is(ErrInvalid) = false")
			}
			for _, s := range []string{"at-parse-access-error", "noon-tomorrow-ish"} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains the value %q", err, s)
				}
			}
		})
	}
}
