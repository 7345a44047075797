package token

import (
	"encoding/json"
	"net/url"
	"time"
)

// Sahamati's published limits (seeds/sahamati-token-circular-2025-07.txt).
const (
	SahamatiDailyLimit = 300
	SahamatiTimezone   = "Asia/Kolkata"
)

// Policy is the private document's "policy" block.
type Policy struct {
	RefreshMargin time.Duration // 0: half the lifetime the access token was issued with (Margin)
	QuotaKey      string
	DailyLimit    int
	QuotaTimezone string
	// MaxWritesPerDay caps the private versions written in any 24 h (the write
	// budget, docs/design.md §3); 0 means DefaultMaxWritesPerDay.
	MaxWritesPerDay int

	// maxWritesGiven: the document names max_writes_per_day, even as 0 or null.
	maxWritesGiven bool

	extra map[string]json.RawMessage
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
