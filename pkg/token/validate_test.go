package token_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// validCases are valid documents per grant; Validate's table edits them.
func validBase(t *testing.T, grant string) []byte {
	t.Helper()
	switch grant {
	case "form":
		return readDoc(t, "rotating")
	case "json":
		return readDoc(t, "vault-ist")
	case "cc":
		return readDoc(t, "client-credentials")
	case "sahamati":
		return edit(t, readDoc(t, "sahamati"), func(d map[string]any) { d["status"] = "active" })
	}
	t.Fatalf("unknown base %q", grant)
	return nil
}

func TestValidate(t *testing.T) {
	secretValues := []string{
		"rot-client-secret-5b6c7d8e", "rot-refresh-token-0f1e2d3c4b5a", "vault-refresh-token-a1b2c3d4e5",
		"vault-access-token-f6e5d4c3b2", "cc-secret-9a8b7c6d5e4f", "sahamati-entity-secret-3c2b1a09", "hunter2-password",
	}
	prov := func(key string, v any) func(map[string]any) {
		return func(d map[string]any) {
			if v == nil {
				delete(sub(d, "provider"), key)
				return
			}
			sub(d, "provider")[key] = v
		}
	}
	pol := func(key string, v any) func(map[string]any) {
		return func(d map[string]any) { sub(d, "policy")[key] = v }
	}
	top := func(key string, v any) func(map[string]any) {
		return func(d map[string]any) {
			if v == nil {
				delete(d, key)
				return
			}
			d[key] = v
		}
	}
	tests := []struct {
		name  string
		base  string
		edit  func(map[string]any)
		field string // "" means valid
		msg   string // substring of the message
	}{
		{"rotating form ok", "form", nil, "", ""},
		{"vault json ok", "json", nil, "", ""},
		{"client_credentials ok", "cc", nil, "", ""},
		{"sahamati ok", "sahamati", nil, "", ""},
		{"needs_reauth is a valid status", "sahamati", top("status", "needs_reauth"), "", ""},

		{"unknown grant", "form", prov("grant", "password"), "provider.grant", "unknown grant"},
		{"missing grant", "form", prov("grant", nil), "provider.grant", "required"},
		{"http non-loopback", "form", prov("token_url", "http://auth.example.com/oauth2/token"), "provider.token_url", "must use https"},
		{"http loopback v4", "form", prov("token_url", "http://127.0.0.1:8080/oauth2/token"), "", ""},
		{"http loopback v4 other", "form", prov("token_url", "http://127.0.0.2/t"), "", ""},
		{"http loopback v6", "form", prov("token_url", "http://[::1]:9000/t"), "", ""},
		{"http localhost", "form", prov("token_url", "http://localhost:8080/oauth2/token"), "", ""},
		{"http localhost look-alike", "form", prov("token_url", "http://localhost.example.com/t"), "provider.token_url", "must use https"},
		{"http 127 look-alike", "form", prov("token_url", "http://127.0.0.1.nip.io/t"), "provider.token_url", "must use https"},
		{"https ok", "form", prov("token_url", "https://auth.example.com:8443/oauth2/token?tenant=x"), "", ""},
		{"other scheme", "form", prov("token_url", "ftp://auth.example.com/t"), "provider.token_url", "must use https"},
		{"credentials in URL", "form", prov("token_url", "https://admin:hunter2-password@auth.example.com/t"), "provider.token_url", "credentials"},
		{"user only in URL", "form", prov("token_url", "https://admin@auth.example.com/t"), "provider.token_url", "credentials"},
		{"relative URL", "form", prov("token_url", "/oauth2/token"), "provider.token_url", "absolute"},
		{"host without scheme", "form", prov("token_url", "auth.example.com/oauth2/token"), "provider.token_url", "absolute"},
		{"opaque URL", "form", prov("token_url", "https:auth.example.com"), "provider.token_url", "absolute"},
		{"missing URL", "form", prov("token_url", nil), "provider.token_url", "required"},

		{"refresh_token grant without refresh_token", "form", top("refresh_token", nil), "refresh_token", "required"},
		{"vault without refresh_token", "json", top("refresh_token", ""), "refresh_token", "required"},
		{"refresh_token grant basic auth without client_id", "form", prov("client_id", nil), "provider.client_id", "client_auth"},
		{"refresh_token grant basic auth without client_secret", "form", prov("client_secret", nil), "provider.client_secret", `required for client_auth "basic" (use client_auth "none"`},
		{"refresh_token grant body auth without client_secret", "form", func(d map[string]any) {
			prov("client_auth", "body")(d)
			prov("client_secret", nil)(d)
		}, "provider.client_secret", `required for client_auth "body"`},
		{"refresh_token grant default auth without client_secret", "form", func(d map[string]any) {
			prov("client_auth", nil)(d)
			prov("client_secret", nil)(d)
		}, "", ""},
		{"authorize_url https", "form", prov("authorize_url", "https://auth.example.com/authorize"), "", ""},
		{"authorize_url loopback http", "form", prov("authorize_url", "http://127.0.0.1:8080/authorize"), "", ""},
		{"authorize_url http", "form", prov("authorize_url", "http://auth.example.com/authorize"), "provider.authorize_url", "must be an absolute https URL"},
		{"authorize_url relative", "form", prov("authorize_url", "/authorize"), "provider.authorize_url", "must be an absolute https URL"},
		{"refresh_token grant auth none without client", "form", func(d map[string]any) {
			prov("client_id", nil)(d)
			prov("client_secret", nil)(d)
			prov("client_auth", "none")(d)
		}, "", ""},
		{"client_credentials without client_id", "cc", prov("client_id", nil), "provider.client_id", "required"},
		{"client_credentials without client_secret", "cc", prov("client_secret", nil), "provider.client_secret", "required"},
		{"client_credentials with auth none", "cc", prov("client_auth", "none"), "provider.client_auth", "cannot authenticate"},
		{"client_credentials needs no refresh_token", "cc", top("refresh_token", nil), "", ""},
		{"sahamati without entity_id", "sahamati", prov("entity_id", nil), "provider.entity_id", "required"},
		{"sahamati without entity_secret", "sahamati", prov("entity_secret", ""), "provider.entity_secret", "required"},
		{"body json on client_credentials", "cc", prov("body", "json"), "provider.body", "only for grant"},
		{"body json on sahamati", "sahamati", prov("body", "json"), "provider.body", "only for grant"},
		{"body form on client_credentials", "cc", prov("body", "form"), "", ""},
		{"unknown body", "form", prov("body", "xml"), "provider.body", "want"},
		{"bad client_auth", "form", prov("client_auth", "digest"), "provider.client_auth", "want"},
		{"bad status", "form", top("status", "paused"), "status", "want"},
		{"negative generation", "form", top("generation", -1), "generation", "negative"},
		{"negative reuse_grace", "form", prov("reuse_grace", "-1s"), "provider.reuse_grace", "negative"},
		{"negative default_expires_in", "form", prov("default_expires_in", "-1h"), "provider.default_expires_in", ""},
		{"negative refresh_margin", "form", pol("refresh_margin", "-30m"), "policy.refresh_margin", "negative"},
		{"negative daily_limit", "cc", pol("daily_limit", -1), "policy.daily_limit", "negative"},
		{"unknown quota_timezone", "cc", pol("quota_timezone", "Mars/Olympus_Mons"), "policy.quota_timezone", "unknown time zone"},
		{"known quota_timezone", "cc", pol("quota_timezone", "Europe/London"), "", ""},
		{"quota_key without daily_limit", "form", pol("quota_key", "rotating-prod"), "policy.daily_limit", "quota_key"},
		{"quota_key with daily_limit", "form", func(d map[string]any) {
			pol("quota_key", "rotating-prod")(d)
			pol("daily_limit", 50)(d)
		}, "", ""},
		{"sahamati quota_key takes the default limit", "sahamati", pol("quota_key", "sahamati-prod"), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := validBase(t, tt.base)
			if tt.edit != nil {
				raw = edit(t, raw, tt.edit)
			}
			err := mustParse(t, raw).Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: got %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: got nil, want a %s error", tt.field)
			}
			var fe *token.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("got %T %v, want *token.FieldError", err, err)
			}
			if fe.Field != tt.field {
				t.Errorf("field: got %q (%v), want %q", fe.Field, err, tt.field)
			}
			if !strings.HasPrefix(err.Error(), tt.field+": ") || !strings.Contains(fe.Msg, tt.msg) {
				t.Errorf("message: got %q, want %q prefix and %q inside", err, tt.field+": ", tt.msg)
			}
			if !errors.Is(err, token.ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
			}
			for _, s := range secretValues {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains secret %q", err, s)
				}
			}
		})
	}
}

// ValidateForStore adds to Validate the rules for a document a person is about to store.
func TestValidateForStore(t *testing.T) {
	now := mustTime(t, "2026-11-22T00:00:00Z")
	tests := []struct {
		name  string
		base  string
		edit  func(map[string]any)
		field string // "" means valid
	}{
		{"valid", "cc", nil, ""},
		{"Validate's rules apply", "cc", func(d map[string]any) { sub(d, "provider")["client_auth"] = "none" }, "provider.client_auth"},
		{"entity credentials expired", "sahamati", func(d map[string]any) { sub(d, "provider")["credentials_expire_at"] = "2026-11-21T00:00:00Z" }, "provider.credentials_expire_at"},
		{"entity credentials expire now", "sahamati", func(d map[string]any) { sub(d, "provider")["credentials_expire_at"] = "2026-11-22T00:00:00Z" }, "provider.credentials_expire_at"},
		{"entity credentials expire later", "sahamati", func(d map[string]any) { sub(d, "provider")["credentials_expire_at"] = "2026-11-23T00:00:00Z" }, ""},
		{"max_writes_per_day 0", "cc", func(d map[string]any) { sub(d, "policy")["max_writes_per_day"] = 0 }, "policy.max_writes_per_day"},
		{"max_writes_per_day null", "cc", func(d map[string]any) { sub(d, "policy")["max_writes_per_day"] = nil }, "policy.max_writes_per_day"},
		{"max_writes_per_day 50", "cc", func(d map[string]any) { sub(d, "policy")["max_writes_per_day"] = 50 }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := validBase(t, tt.base)
			if tt.edit != nil {
				raw = edit(t, raw, tt.edit)
			}
			p := mustParse(t, raw)
			err := p.ValidateForStore(now)
			var fe *token.FieldError
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("got %v, want nil", err)
			case tt.field != "" && (!errors.As(err, &fe) || fe.Field != tt.field):
				t.Fatalf("got %v, want a %s error", err, tt.field)
			}
			// The refresher does not apply the store-time rules to what is stored.
			if tt.field != "" && tt.name != "Validate's rules apply" {
				if err := p.Validate(); err != nil {
					t.Errorf("Validate: got %v, want nil", err)
				}
			}
		})
	}
}

func TestValidateHTTPSMessage(t *testing.T) {
	// The exact wording operators see for the most common mistake.
	err := token.ValidateTokenURL("http://auth.example.com/oauth2/token")
	if got, want := errString(err), "provider.token_url: must use https"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
