package token

import (
	"encoding/json"
	"net"
	"net/url"
	"time"
)

// Grants and the options a provider block may name.
const (
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"
	GrantSahamatiEntity    = "sahamati_entity"

	BodyForm = "form"
	BodyJSON = "json"

	AuthBasic = "basic"
	AuthBody  = "body"
	AuthNone  = "none"
)

// Provider is the private document's "provider" block.
type Provider struct {
	Grant    string
	Body     string
	TokenURL string
	// AuthorizeURL is the authorization endpoint tokenctl authorize sends a person to
	// (refresh_token grant); the refresher never calls it.
	AuthorizeURL        string
	ClientID            string
	ClientSecret        Secret
	ClientAuth          string
	Scope               string
	EntityID            string
	EntitySecret        Secret
	CredentialsExpireAt time.Time
	ReuseGrace          time.Duration
	DefaultExpiresIn    time.Duration

	extra map[string]json.RawMessage
}

// Validate checks the provider block on its own.
func (v Provider) Validate() error {
	switch v.Grant {
	case "":
		return fieldErr("provider.grant", "required: %q, %q or %q", GrantRefreshToken, GrantClientCredentials, GrantSahamatiEntity)
	case GrantRefreshToken, GrantClientCredentials, GrantSahamatiEntity:
	default:
		return fieldErr("provider.grant", "unknown grant; want %q, %q or %q", GrantRefreshToken, GrantClientCredentials, GrantSahamatiEntity)
	}
	if err := ValidateTokenURL(v.TokenURL); err != nil {
		return err
	}
	if v.AuthorizeURL != "" {
		if err := ValidateAuthorizeURL(v.AuthorizeURL); err != nil {
			return err
		}
	}
	switch v.Body {
	case "", BodyForm:
	case BodyJSON:
		if v.Grant != GrantRefreshToken {
			return fieldErr("provider.body", "%q is only for grant %q", BodyJSON, GrantRefreshToken)
		}
	default:
		return fieldErr("provider.body", "want %q or %q", BodyForm, BodyJSON)
	}
	switch v.ClientAuth {
	case "", AuthBasic, AuthBody, AuthNone:
	default:
		return fieldErr("provider.client_auth", "want %q, %q or %q", AuthBasic, AuthBody, AuthNone)
	}
	switch v.Grant {
	case GrantClientCredentials:
		if v.ClientID == "" {
			return fieldErr("provider.client_id", "required for grant %q", v.Grant)
		}
		if v.ClientSecret.IsZero() {
			return fieldErr("provider.client_secret", "required for grant %q", v.Grant)
		}
		if v.ClientAuth == AuthNone {
			return fieldErr("provider.client_auth", "%q cannot authenticate grant %q", AuthNone, v.Grant)
		}
	case GrantSahamatiEntity:
		if v.EntityID == "" {
			return fieldErr("provider.entity_id", "required for grant %q", v.Grant)
		}
		if v.EntitySecret.IsZero() {
			return fieldErr("provider.entity_secret", "required for grant %q", v.Grant)
		}
	case GrantRefreshToken:
		if (v.ClientAuth == AuthBasic || v.ClientAuth == AuthBody) && v.ClientID == "" {
			return fieldErr("provider.client_id", "required for client_auth %q", v.ClientAuth)
		}
		if (v.ClientAuth == AuthBasic || v.ClientAuth == AuthBody) && v.ClientSecret.IsZero() {
			return fieldErr("provider.client_secret", "required for client_auth %q (use client_auth %q for a public client)", v.ClientAuth, AuthNone)
		}
	}
	if v.ReuseGrace < 0 {
		return fieldErr("provider.reuse_grace", "must not be negative")
	}
	if v.DefaultExpiresIn < 0 {
		return fieldErr("provider.default_expires_in", "must not be negative")
	}
	return nil
}

// ValidateTokenURL requires an absolute https URL; plain http is allowed only for a
// loopback host so tests can use httptest servers.
func ValidateTokenURL(raw string) error { return validateEndpoint("provider.token_url", raw) }

// ValidateAuthorizeURL holds the authorization endpoint to the token URL's rule: the person
// approving access types their credentials there.
func ValidateAuthorizeURL(raw string) error {
	if validateEndpoint("provider.authorize_url", raw) != nil {
		return fieldErr("provider.authorize_url", "must be an absolute https URL (http only on a loopback host)")
	}
	return nil
}

func validateEndpoint(field, raw string) error {
	if raw == "" {
		return fieldErr(field, "required")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fieldErr(field, "not an absolute URL")
	}
	if u.User != nil {
		return fieldErr(field, "must not carry credentials")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
	}
	return fieldErr(field, "must use https")
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
