// Package token holds the two documents token-refresher keeps in Secrets Manager — the
// private document (provider settings, refresh token, policy) and the access document that
// consumers read — with their field table, parsing, validation and timing.
package token

import (
	"encoding/json"
	"sort"
	"time"
)

// A token's status: active, or waiting for a person to authorise it again.
const (
	StatusActive      = "active"
	StatusNeedsReauth = "needs_reauth"
)

// Private is the private document `<prefix>private/<name>`. Fields it does not know are
// kept as they are and written back on every rewrite.
type Private struct {
	Provider         Provider
	Policy           Policy
	RefreshToken     Secret
	RefreshExpiresAt time.Time
	AccessToken      Secret
	TokenType        string
	ExpiresAt        time.Time
	Scope            string
	Generation       int64
	Status           string
	StatusReason     string

	// VersionID is the Secrets Manager version id the refresher wrote this document under.
	// A document whose VersionID is not its own version id was written by someone else
	// (an operator's edit copies the field along), which is how edits are told apart
	// without trusting timestamps.
	VersionID string
	// BaseVersionID is the operator-written version this refresher history descends from.
	BaseVersionID string
	// SeenRefreshTokens are fingerprints (Fingerprint) of the refresh tokens this chain has
	// held, oldest first: an operator edit carrying one of them is a stale copy and must not
	// replace the live refresh token (docs/design.md §2).
	SeenRefreshTokens []string
	// AuthorizedAt is when a person last authorised this token's refresh token (tokenctl
	// authorize, tokenctl seed --replace-refresh-token, or an operator's edit). The
	// refresher keeps it on every rewrite, so a copy of any earlier version carries a value
	// no later than the committed one: only a later AuthorizedAt marks a document as a new
	// authorisation (NewAuthorizationOver, docs/design.md §2). Zero means never marked.
	AuthorizedAt time.Time

	extra map[string]json.RawMessage
}

// ParsePrivate reads a private document. It checks JSON types (naming the field) but not
// meaning; call Validate for that.
func ParsePrivate(raw []byte) (*Private, error) {
	top, err := newObject("", raw)
	if err != nil {
		return nil, err
	}
	p := &Private{}
	prov := top.child("provider")
	p.Provider = Provider{
		Grant:               prov.str("grant"),
		Body:                prov.str("body"),
		TokenURL:            prov.str("token_url"),
		AuthorizeURL:        prov.str("authorize_url"),
		ClientID:            prov.str("client_id"),
		ClientSecret:        prov.secret("client_secret"),
		ClientAuth:          prov.str("client_auth"),
		Scope:               prov.str("scope"),
		EntityID:            prov.str("entity_id"),
		EntitySecret:        prov.secret("entity_secret"),
		CredentialsExpireAt: prov.time("credentials_expire_at"),
		ReuseGrace:          prov.duration("reuse_grace"),
		DefaultExpiresIn:    prov.duration("default_expires_in"),
		extra:               prov.rest,
	}
	pol := top.child("policy")
	_, maxWritesGiven := pol.rest["max_writes_per_day"]
	p.Policy = Policy{
		RefreshMargin:   pol.duration("refresh_margin"),
		QuotaKey:        pol.str("quota_key"),
		DailyLimit:      int(pol.int64("daily_limit")),
		QuotaTimezone:   pol.str("quota_timezone"),
		MaxWritesPerDay: int(pol.int64("max_writes_per_day")),
		maxWritesGiven:  maxWritesGiven,
		extra:           pol.rest,
	}
	p.RefreshToken = top.secret("refresh_token")
	p.RefreshExpiresAt = top.time("refresh_expires_at")
	p.AccessToken = top.secret("access_token")
	p.TokenType = top.str("token_type")
	p.ExpiresAt = top.time("expires_at")
	p.Scope = top.str("scope")
	p.Generation = top.int64("generation")
	p.Status = top.str("status")
	p.StatusReason = top.str("status_reason")
	p.VersionID = top.str("version_id")
	p.BaseVersionID = top.str("base_version_id")
	p.SeenRefreshTokens = top.strings("seen_refresh_tokens")
	p.AuthorizedAt = top.time("authorized_at")
	p.extra = top.rest
	for _, o := range []*object{top, prov, pol} {
		if o.err != nil {
			return nil, o.err
		}
	}
	if p.Status == "" {
		p.Status = StatusActive
	}
	return p, nil
}

// NewAuthorizationOver reports whether p is a new authorisation relative to the committed
// document: its AuthorizedAt is strictly later (an absent one is the zero time). Every
// document the refresher writes keeps AuthorizedAt, so a copy of an older version or a
// replayed onboarding file is never a new authorisation, however many rotations ago it was
// taken. A nil committed document (nothing committed yet) is always superseded.
func (p *Private) NewAuthorizationOver(committed *Private) bool {
	if committed == nil {
		return true
	}
	return p.AuthorizedAt.After(committed.AuthorizedAt)
}

// RefreshTokenWarning is how long before a refresh token's stated expiry the token is
// refreshed regardless of the access token, so it never lapses unused.
const RefreshTokenWarning = 7 * 24 * time.Hour

// Clone returns a deep copy that can be changed without touching p.
func (p *Private) Clone() *Private {
	c := *p
	c.extra = cloneRaw(p.extra)
	c.SeenRefreshTokens = append([]string(nil), p.SeenRefreshTokens...)
	c.Provider.extra = cloneRaw(p.Provider.extra)
	c.Policy.extra = cloneRaw(p.Policy.extra)
	return &c
}

func cloneRaw(m map[string]json.RawMessage) map[string]json.RawMessage {
	if m == nil {
		return nil
	}
	c := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Marshal writes the private document with raw secret values, for Secrets Manager only.
func (p *Private) Marshal() ([]byte, error) {
	v := p.Provider
	prov := fields{}
	prov.str("grant", v.Grant)
	prov.str("body", v.Body)
	prov.str("token_url", v.TokenURL)
	prov.str("authorize_url", v.AuthorizeURL)
	prov.str("client_id", v.ClientID)
	prov.str("client_secret", v.ClientSecret.Reveal())
	prov.str("client_auth", v.ClientAuth)
	prov.str("scope", v.Scope)
	prov.str("entity_id", v.EntityID)
	prov.str("entity_secret", v.EntitySecret.Reveal())
	prov.time("credentials_expire_at", v.CredentialsExpireAt)
	prov.duration("reuse_grace", v.ReuseGrace)
	prov.duration("default_expires_in", v.DefaultExpiresIn)

	pol := fields{}
	pol.duration("refresh_margin", p.Policy.RefreshMargin)
	pol.str("quota_key", p.Policy.QuotaKey)
	if p.Policy.DailyLimit != 0 {
		pol["daily_limit"] = p.Policy.DailyLimit
	}
	pol.str("quota_timezone", p.Policy.QuotaTimezone)
	if p.Policy.MaxWritesPerDay != 0 {
		pol["max_writes_per_day"] = p.Policy.MaxWritesPerDay
	}

	top := fields{
		"provider":   withExtra(prov, v.extra),
		"generation": p.Generation,
		"status":     p.Status,
	}
	if len(pol) > 0 || len(p.Policy.extra) > 0 {
		top["policy"] = withExtra(pol, p.Policy.extra)
	}
	top.str("refresh_token", p.RefreshToken.Reveal())
	top.time("refresh_expires_at", p.RefreshExpiresAt)
	top.str("access_token", p.AccessToken.Reveal())
	top.str("token_type", p.TokenType)
	top.time("expires_at", p.ExpiresAt)
	top.str("scope", p.Scope)
	top.str("status_reason", p.StatusReason)
	top.str("version_id", p.VersionID)
	top.str("base_version_id", p.BaseVersionID)
	if len(p.SeenRefreshTokens) > 0 {
		top["seen_refresh_tokens"] = p.SeenRefreshTokens
	}
	// Full precision: two authorisations within one second must still be ordered.
	top.timeNano("authorized_at", p.AuthorizedAt)
	return json.Marshal(withExtra(top, p.extra))
}

// Extra lists the unknown top-level field names (sorted), for tests and tokenctl.
func (p *Private) Extra() []string {
	keys := make([]string, 0, len(p.extra))
	for k := range p.extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
