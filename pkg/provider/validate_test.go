package provider

import (
	"errors"
	"strings"
	"testing"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

func TestNewRejectsBadProvider(t *testing.T) {
	const ok = "https://auth.example.com/oauth2/token"
	tests := []struct {
		name string
		p    token.Provider
		want string
	}{
		{"no grant", token.Provider{TokenURL: ok}, "provider.grant: required"},
		{"unknown grant", token.Provider{Grant: "password", TokenURL: ok}, "provider.grant: unknown grant"},
		{"no token_url", token.Provider{Grant: token.GrantRefreshToken}, "provider.token_url: required"},
		{"plain http", token.Provider{Grant: token.GrantRefreshToken, TokenURL: "http://auth.example.com/token"}, "provider.token_url: must use https"},
		{"other scheme", token.Provider{Grant: token.GrantRefreshToken, TokenURL: "ftp://auth.example.com/token"}, "provider.token_url: must use https"},
		{"relative url", token.Provider{Grant: token.GrantRefreshToken, TokenURL: "/oauth2/token"}, "provider.token_url: not an absolute URL"},
		{"credentials in url", token.Provider{Grant: token.GrantRefreshToken, TokenURL: "https://u:p@auth.example.com/token"}, "provider.token_url: must not carry credentials"},
		{"bad body", token.Provider{Grant: token.GrantRefreshToken, TokenURL: ok, Body: "xml"}, "provider.body: want"},
		{"json body for client_credentials", token.Provider{Grant: token.GrantClientCredentials, TokenURL: ok, Body: token.BodyJSON, ClientID: "c", ClientSecret: "s"}, "provider.body:"},
		{"bad client_auth", token.Provider{Grant: token.GrantRefreshToken, TokenURL: ok, ClientAuth: "jwt"}, "provider.client_auth: want"},
		{"basic without client_id", token.Provider{Grant: token.GrantRefreshToken, TokenURL: ok, ClientAuth: token.AuthBasic}, "provider.client_id: required"},
		{"client_credentials without client_id", token.Provider{Grant: token.GrantClientCredentials, TokenURL: ok, ClientSecret: "s"}, "provider.client_id: required"},
		{"client_credentials without secret", token.Provider{Grant: token.GrantClientCredentials, TokenURL: ok, ClientID: "c"}, "provider.client_secret: required"},
		{"client_credentials with none", token.Provider{Grant: token.GrantClientCredentials, TokenURL: ok, ClientID: "c", ClientSecret: "s", ClientAuth: token.AuthNone}, "provider.client_auth:"},
		{"sahamati without entity_id", token.Provider{Grant: token.GrantSahamatiEntity, TokenURL: ok, EntitySecret: "s"}, "provider.entity_id: required"},
		{"sahamati without entity_secret", token.Provider{Grant: token.GrantSahamatiEntity, TokenURL: ok, EntityID: "e"}, "provider.entity_secret: required"},
		{"negative default_expires_in", token.Provider{Grant: token.GrantRefreshToken, TokenURL: ok, DefaultExpiresIn: -1}, "provider.default_expires_in:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.p, Options{})
			if err == nil {
				t.Fatalf("got a client, want an error containing %q", tt.want)
			}
			if c != nil {
				t.Errorf("got a client with the error, want nil")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to contain %q", err, tt.want)
			}
			if !errors.Is(err, token.ErrInvalid) {
				t.Errorf("got %v, want it to match token.ErrInvalid", err)
			}
		})
	}
}

func TestNewAcceptsGoodProviders(t *testing.T) {
	tests := []struct {
		name string
		p    token.Provider
		want profile
	}{
		{"https form", token.Provider{Grant: token.GrantRefreshToken, TokenURL: "https://auth.example.com/t"}, profileForm},
		{"loopback http json", token.Provider{Grant: token.GrantRefreshToken, Body: token.BodyJSON, TokenURL: "http://127.0.0.1:8080/t"}, profileJSON},
		{"localhost client_credentials", token.Provider{Grant: token.GrantClientCredentials, TokenURL: "http://localhost/t", ClientID: "c", ClientSecret: "s"}, profileClientCredentials},
		{"ipv6 loopback sahamati", token.Provider{Grant: token.GrantSahamatiEntity, TokenURL: "http://[::1]:9/t", EntityID: "e", EntitySecret: "s"}, profileSahamati},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.p, Options{})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if c.profile != tt.want {
				t.Errorf("profile: got %d, want %d", c.profile, tt.want)
			}
			if c.timeout != DefaultTimeout || c.ua != "token-refresher/"+Version || c.now == nil {
				t.Errorf("defaults: got timeout %v, UA %q, now set %v", c.timeout, c.ua, c.now != nil)
			}
		})
	}
}
