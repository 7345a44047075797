package token

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/fnv"
	"sort"
	"time"
)

// Write budget (docs/design.md §2–§3): Secrets Manager refuses PutSecretValue once a secret has
// gained about 100 versions in 24 h, and a refused write after the provider rotated loses
// the refresh token, so every token spends at most this many private versions a day.
const (
	DefaultMaxWritesPerDay = 90
	MaxWritesPerDayLimit   = 100
)

// KeepAliveInterval is how often a token vended on demand (its half-life is shorter than the
// write budget allows) is still refreshed, so its refresh token is rotated well inside its
// life and never lapses unused.
const KeepAliveInterval = 24 * time.Hour

// MaxWrites is the token's write budget per rolling 24 h.
func (p *Private) MaxWrites() int { return WriteBudget(p.Policy.MaxWritesPerDay) }

// WriteBudget is the write budget per rolling 24 h that a configured or recorded value n
// stands for: n itself from 1 to MaxWritesPerDayLimit, otherwise DefaultMaxWritesPerDay.
func WriteBudget(n int) int {
	if n > 0 && n <= MaxWritesPerDayLimit {
		return n
	}
	return DefaultMaxWritesPerDay
}

// Margin is how long before expiry the access token is refreshed: policy.refresh_margin, or
// by default half the lifetime it was issued with (a 24 h token every 12 h, a 1 h token every
// 30 min).
func (p *Private) Margin(issued time.Time) time.Duration {
	if p.Policy.RefreshMargin > 0 {
		return p.Policy.RefreshMargin
	}
	if p.ExpiresAt.IsZero() || !p.ExpiresAt.After(issued) {
		return 0
	}
	return p.ExpiresAt.Sub(issued) / 2
}

// Schedule is when a token is next refreshed.
type Schedule struct {
	// StaleAt: from here the access token is inside its margin; an ensure refreshes it.
	StaleAt time.Time
	// NextDueAt: when the reconcile or sweep refreshes it. Never zero for an active token.
	NextDueAt time.Time
	// OnDemand: the half-life is shorter than the write budget allows, so the token is only
	// kept alive by the schedule and refreshed for consumers by ensure.
	OnDemand bool
}

// Plan computes the schedule of a token whose access token was issued at issued, given the
// private versions written in the last 24 h (writes, this one included).
func (p *Private) Plan(issued time.Time, writes []time.Time) Schedule {
	if p.AccessToken.IsZero() || p.ExpiresAt.IsZero() || !p.ExpiresAt.After(issued) {
		// No access token, or one already expired (an adopted edit or late authorisation):
		// due at once, not kept "on demand" for a day.
		return Schedule{StaleAt: issued, NextDueAt: issued}
	}
	margin := p.Margin(issued)
	s := Schedule{StaleAt: p.ExpiresAt.Add(-margin)}
	spacing := 24 * time.Hour / time.Duration(p.MaxWrites())
	if s.StaleAt.Sub(issued) < spacing {
		s.OnDemand = true
		s.NextDueAt = issued.Add(KeepAliveInterval)
	} else {
		s.NextDueAt = s.StaleAt
	}
	if r, ok := p.keepAliveAt(issued); ok && r.Before(s.NextDueAt) {
		s.NextDueAt = r
	}
	if next := BudgetFreeAt(issued, writes, p.MaxWrites()); next.After(s.NextDueAt) {
		s.NextDueAt = next
	}
	if s.NextDueAt.Before(issued) {
		s.NextDueAt = issued
	}
	return s
}

// keepAliveAt is when the refresh token must be refreshed to stay alive (docs/design.md §3):
// as it enters its last RefreshTokenWarning (7 days); one that had no more than that left at
// issued (a 3-day refresh token) when half of what it had is gone, so a short-lived refresh
// token is kept alive from its own lifetime instead of being due at every sweep.
func (p *Private) keepAliveAt(issued time.Time) (time.Time, bool) {
	if p.RefreshExpiresAt.IsZero() {
		return time.Time{}, false
	}
	if r := p.RefreshExpiresAt.Add(-RefreshTokenWarning); r.After(issued) {
		return r, true
	}
	return issued.Add(p.RefreshExpiresAt.Sub(issued) / 2), true
}

// SpreadFraction: Spread moves a due time by at most 1/SpreadFraction of the margin.
const SpreadFraction = 10

// Spread moves a due time that starts the margin (due = expires_at - margin) later by a
// deterministic share (a hash of key, e.g. name and generation) of up to a tenth of the
// margin: tokens adopted or refreshed together leave lockstep, so their writes stop
// arriving in one burst. Later, inside the margin, rather than earlier: the access token
// still has nine tenths of its margin left, and the token is never refreshed more often
// than its lifetime says (a 24 h Sahamati token stays at two calls a day).
func Spread(due time.Time, key string, margin time.Duration) time.Time {
	if margin <= 0 {
		return due // an access token already inside (or past) its expiry: no room to spread
	}
	span := uint64(margin / SpreadFraction)
	if span == 0 {
		return due
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	return due.Add(time.Duration(h.Sum64() % span))
}

// BudgetFreeAt is the first time at or after now when one more private version fits in the
// budget of max per rolling 24 h, given the write times of the last 24 h.
func BudgetFreeAt(now time.Time, writes []time.Time, max int) time.Time {
	recent := RecentWrites(writes, now)
	if len(recent) < max {
		return now
	}
	// The (len-max+1)-th oldest write must leave the window first.
	sort.Slice(recent, func(i, j int) bool { return recent[i].Before(recent[j]) })
	return recent[len(recent)-max].Add(24 * time.Hour)
}

// RecentWrites keeps the write times inside the rolling 24 h before now: the ones that
// count against the write budget.
func RecentWrites(writes []time.Time, now time.Time) []time.Time {
	var recent []time.Time
	for _, w := range writes {
		if w.After(now.Add(-24 * time.Hour)) {
			recent = append(recent, w)
		}
	}
	return recent
}

// maxSeen bounds the refresh-token fingerprints a document keeps (about a day of a token
// refreshed at its full write budget).
const maxSeen = 100

// Fingerprint identifies a refresh token without revealing it: the first 16 hex digits of
// its SHA-256. Refresh tokens are long random strings, so this cannot be reversed.
func Fingerprint(s Secret) string {
	sum := sha256.Sum256([]byte(s.Reveal()))
	return hex.EncodeToString(sum[:8])
}

// Seen reports whether the chain has held refresh token s.
func (p *Private) Seen(s Secret) bool {
	fp := Fingerprint(s)
	for _, f := range p.SeenRefreshTokens {
		if f == fp {
			return true
		}
	}
	return false
}

// Remember records refresh token s as held by the chain.
func (p *Private) Remember(s Secret) {
	if s.IsZero() || p.Seen(s) {
		return
	}
	p.SeenRefreshTokens = append(p.SeenRefreshTokens, Fingerprint(s))
	if n := len(p.SeenRefreshTokens); n > maxSeen {
		p.SeenRefreshTokens = append([]string(nil), p.SeenRefreshTokens[n-maxSeen:]...)
	}
}
