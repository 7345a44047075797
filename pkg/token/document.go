// Package token holds the two documents token-refresher keeps in Secrets Manager — the
// private document (provider settings, refresh token, policy) and the access document that
// consumers read — with their parsing, validation and due policy.
package token

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
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

	StatusActive      = "active"
	StatusNeedsReauth = "needs_reauth"
)

// Sahamati's published limits (seeds/sahamati-token-circular-2025-07.txt).
const (
	SahamatiDailyLimit = 300
	SahamatiTimezone   = "Asia/Kolkata"
)

// ErrInvalid marks every validation and parse error, so callers can branch on "bad config".
var ErrInvalid = errors.New("invalid document")

// FieldError names the offending field; it never carries the field's value.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Is makes errors.Is(err, ErrInvalid) true for every FieldError.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// Provider is the private document's "provider" block.
type Provider struct {
	Grant               string
	Body                string
	TokenURL            string
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

// Policy is the private document's "policy" block.
type Policy struct {
	RefreshMargin time.Duration // 0: the engine's default (schedule interval + 1 h)
	QuotaKey      string
	DailyLimit    int
	QuotaTimezone string
	// MaxWritesPerDay caps the private versions written in any 24 h (the write
	// budget, docs/design.md §3); 0 means DefaultMaxWritesPerDay.
	MaxWritesPerDay int

	extra map[string]json.RawMessage
}

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

	extra map[string]json.RawMessage
}

// Access is the consumers' document `<prefix>access/<name>`, the public contract.
type Access struct {
	AccessToken Secret
	TokenType   string
	ExpiresAt   time.Time
	Scope       string
	Generation  int64
	Status      string
	Reason      string // only when Status is not active
}

// object reads one JSON object and hands out its fields by name with typed getters that
// name the field on error; what is not taken stays in rest.
type object struct {
	path string
	rest map[string]json.RawMessage
	err  error
}

func newObject(path string, raw []byte) (*object, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		name := path
		if name == "" {
			name = "document"
		}
		return nil, fieldErr(name, "want a JSON object")
	}
	return &object{path: path, rest: m}, nil
}

func (o *object) name(key string) string {
	if o.path == "" {
		return key
	}
	return o.path + "." + key
}

func (o *object) take(key string) (json.RawMessage, bool) {
	raw, ok := o.rest[key]
	if !ok {
		return nil, false
	}
	delete(o.rest, key)
	if string(raw) == "null" {
		return nil, false
	}
	return raw, true
}

func (o *object) fail(err error) {
	if o.err == nil {
		o.err = err
	}
}

func (o *object) str(key string) string {
	raw, ok := o.take(key)
	if !ok {
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		o.fail(fieldErr(o.name(key), "want a string, got %s", kind(raw)))
	}
	return s
}

func (o *object) secret(key string) Secret { return Secret(o.str(key)) }

func (o *object) strings(key string) []string {
	raw, ok := o.take(key)
	if !ok {
		return nil
	}
	var out []string
	if err := json.Unmarshal(raw, &out); err != nil {
		o.fail(fieldErr(o.name(key), "want a list of strings"))
		return nil
	}
	return out
}

func (o *object) int64(key string) int64 {
	raw, ok := o.take(key)
	if !ok {
		return 0
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		o.fail(fieldErr(o.name(key), "want a whole number, got %s", kind(raw)))
	}
	return n
}

func (o *object) time(key string) time.Time {
	s := o.str(key)
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, s)
	// Years outside 0000–9999 in UTC would be written back in a form RFC 3339 rejects.
	if y := t.UTC().Year(); err != nil || y < 1 || y > 9999 {
		o.fail(fieldErr(o.name(key), "want an RFC 3339 time like 2027-01-20T00:00:00Z"))
	}
	return t
}

func (o *object) duration(key string) time.Duration {
	s := o.str(key)
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		o.fail(fieldErr(o.name(key), "want a duration like \"60s\" or \"13h\""))
	}
	return d
}

func (o *object) child(key string) *object {
	raw, ok := o.take(key)
	if !ok {
		return &object{path: o.name(key), rest: map[string]json.RawMessage{}}
	}
	c, err := newObject(o.name(key), raw)
	if err != nil {
		o.fail(err)
		return &object{path: o.name(key), rest: map[string]json.RawMessage{}}
	}
	return c
}

// kind names a JSON value's type for error messages without quoting the value.
func kind(raw json.RawMessage) string {
	s := strings.TrimSpace(string(raw))
	switch {
	case s == "":
		return "nothing"
	case s[0] == '"':
		return "a string"
	case s[0] == '{':
		return "an object"
	case s[0] == '[':
		return "an array"
	case s == "true" || s == "false":
		return "a boolean"
	default:
		return "a number"
	}
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
	p.Policy = Policy{
		RefreshMargin:   pol.duration("refresh_margin"),
		QuotaKey:        pol.str("quota_key"),
		DailyLimit:      int(pol.int64("daily_limit")),
		QuotaTimezone:   pol.str("quota_timezone"),
		MaxWritesPerDay: int(pol.int64("max_writes_per_day")),
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

// Validate checks meaning: a known grant with what it needs, an https token URL (plain
// http only to a loopback host, for tests), sane durations and policy.
func (p *Private) Validate() error {
	if err := p.Provider.Validate(); err != nil {
		return err
	}
	if p.Provider.Grant == GrantRefreshToken && p.RefreshToken.IsZero() {
		return fieldErr("refresh_token", "required for grant %q", GrantRefreshToken)
	}
	switch p.Status {
	case StatusActive, StatusNeedsReauth:
	default:
		return fieldErr("status", "want %q or %q", StatusActive, StatusNeedsReauth)
	}
	if p.Generation < 0 {
		return fieldErr("generation", "must not be negative")
	}
	return p.Policy.validate(p.Provider)
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
func ValidateTokenURL(raw string) error {
	if raw == "" {
		return fieldErr("provider.token_url", "required")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fieldErr("provider.token_url", "not an absolute URL")
	}
	if u.User != nil {
		return fieldErr("provider.token_url", "must not carry credentials")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
	}
	return fieldErr("provider.token_url", "must use https")
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (pol Policy) validate(v Provider) error {
	if pol.RefreshMargin < 0 {
		return fieldErr("policy.refresh_margin", "must not be negative")
	}
	if pol.MaxWritesPerDay < 0 || pol.MaxWritesPerDay > MaxWritesPerDayLimit {
		return fieldErr("policy.max_writes_per_day", "want 1 to %d (Secrets Manager keeps about 100 versions a day)", MaxWritesPerDayLimit)
	}
	if pol.DailyLimit < 0 {
		return fieldErr("policy.daily_limit", "must not be negative")
	}
	if pol.QuotaTimezone != "" {
		if _, err := time.LoadLocation(pol.QuotaTimezone); err != nil {
			return fieldErr("policy.quota_timezone", "unknown time zone")
		}
	}
	if pol.QuotaKey != "" && pol.DailyLimit == 0 && v.Grant != GrantSahamatiEntity {
		return fieldErr("policy.daily_limit", "required with policy.quota_key")
	}
	return nil
}

// Quota is the resolved quota for a token: which bucket, how many a day, whose day.
type Quota struct {
	Key      string
	Limit    int
	Location *time.Location
}

// Quota resolves the policy. Sahamati entities always have one (300 a day, IST days, one
// bucket per entity id, shared by every token of that entity); others only when
// daily_limit is set. ok is false when the token has no quota.
func (p *Private) Quota() (q Quota, ok bool) {
	pol, v := p.Policy, p.Provider
	q.Key, q.Limit = pol.QuotaKey, pol.DailyLimit
	tz := pol.QuotaTimezone
	if v.Grant == GrantSahamatiEntity {
		if q.Key == "" {
			q.Key = "sahamati#" + v.EntityID
		}
		if q.Limit == 0 {
			q.Limit = SahamatiDailyLimit
		}
		if tz == "" {
			tz = SahamatiTimezone
		}
	}
	if q.Limit == 0 {
		return Quota{}, false
	}
	if q.Key == "" {
		host := v.TokenURL
		if u, err := url.Parse(v.TokenURL); err == nil {
			host = u.Host
		}
		q.Key = host + "#" + v.ClientID
	}
	q.Location = time.UTC
	if tz != "" {
		if loc, err := time.LoadLocation(tz); err == nil {
			q.Location = loc
		}
	}
	return q, true
}

// RefreshTokenWarning is how long before a refresh token's stated expiry the token is
// refreshed regardless of the access token, so it never lapses unused.
const RefreshTokenWarning = 7 * 24 * time.Hour

// Due reports whether the token should be refreshed now and why.
func (p *Private) Due(now time.Time, margin time.Duration) (bool, string) {
	if p.Status != StatusActive {
		return false, ""
	}
	if p.Policy.RefreshMargin > 0 {
		margin = p.Policy.RefreshMargin
	}
	switch {
	case p.AccessToken.IsZero() || p.ExpiresAt.IsZero():
		return true, "no access token yet"
	case p.ExpiresAt.Sub(now) <= margin:
		return true, "access token expires within the refresh margin"
	case !p.RefreshExpiresAt.IsZero() && p.RefreshExpiresAt.Sub(now) <= RefreshTokenWarning:
		return true, "refresh token expires within 7 days"
	}
	return false, ""
}

// NextDue is when the token becomes due if nothing changes.
func (p *Private) NextDue(margin time.Duration) time.Time {
	if p.ExpiresAt.IsZero() {
		return time.Time{} // due now; nothing to schedule
	}
	if p.Policy.RefreshMargin > 0 {
		margin = p.Policy.RefreshMargin
	}
	next := p.ExpiresAt.Add(-margin)
	if !p.RefreshExpiresAt.IsZero() {
		if r := p.RefreshExpiresAt.Add(-RefreshTokenWarning); r.Before(next) {
			next = r
		}
	}
	return next
}

// Access derives the consumers' document.
func (p *Private) Access() Access {
	a := Access{
		AccessToken: p.AccessToken,
		TokenType:   p.TokenType,
		ExpiresAt:   p.ExpiresAt,
		Scope:       p.Scope,
		Generation:  p.Generation,
		Status:      p.Status,
	}
	if p.Status != StatusActive {
		a.Reason = p.StatusReason
	}
	return a
}

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

// fields collects a JSON object: known fields set when non-zero, unknown ones kept.
type fields map[string]any

func (f fields) str(k, v string) {
	if v != "" {
		f[k] = v
	}
}

func (f fields) time(k string, t time.Time) {
	if !t.IsZero() {
		f[k] = t.UTC().Format(time.RFC3339)
	}
}

func (f fields) duration(k string, d time.Duration) {
	if d != 0 {
		f[k] = d.String()
	}
}

func withExtra(f fields, extra map[string]json.RawMessage) fields {
	for k, v := range extra {
		if _, known := f[k]; !known {
			f[k] = v
		}
	}
	return f
}

// Marshal writes the private document with raw secret values, for Secrets Manager only.
func (p *Private) Marshal() ([]byte, error) {
	v := p.Provider
	prov := fields{}
	prov.str("grant", v.Grant)
	prov.str("body", v.Body)
	prov.str("token_url", v.TokenURL)
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
	return json.Marshal(withExtra(top, p.extra))
}

// accessWire is the access document's exact shape (docs/design.md §2).
type accessWire struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresAt   string `json:"expires_at,omitempty"` // RFC 3339 or absent, never ""
	Scope       string `json:"scope"`
	Generation  int64  `json:"generation"`
	Status      string `json:"status"`
	Reason      string `json:"reason,omitempty"`
}

// Marshal writes the access document with the raw token, for Secrets Manager only.
func (a Access) Marshal() ([]byte, error) {
	w := accessWire{
		AccessToken: a.AccessToken.Reveal(),
		TokenType:   a.TokenType,
		Scope:       a.Scope,
		Generation:  a.Generation,
		Status:      a.Status,
		Reason:      a.Reason,
	}
	if !a.ExpiresAt.IsZero() {
		w.ExpiresAt = a.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return json.Marshal(w)
}

// ParseAccess reads an access document.
func ParseAccess(raw []byte) (Access, error) {
	var w accessWire
	if err := json.Unmarshal(raw, &w); err != nil {
		return Access{}, fieldErr("access", "not the access document")
	}
	a := Access{AccessToken: Secret(w.AccessToken), TokenType: w.TokenType, Scope: w.Scope, Generation: w.Generation, Status: w.Status, Reason: w.Reason}
	if w.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339, w.ExpiresAt)
		if err != nil {
			return Access{}, fieldErr("expires_at", "want an RFC 3339 time")
		}
		a.ExpiresAt = t
	}
	return a, nil
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
