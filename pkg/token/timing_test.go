package token

import (
	"fmt"
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	doc := func(ttl time.Duration, f func(*Private)) *Private {
		p := &Private{AccessToken: "at", ExpiresAt: now.Add(ttl), Status: StatusActive}
		if f != nil {
			f(p)
		}
		return p
	}
	tests := []struct {
		name         string
		doc          *Private
		writes       []time.Time
		wantStale    time.Duration // after now
		wantNext     time.Duration
		wantOnDemand bool
	}{
		{name: "24 h token: every 12 h", doc: doc(24*time.Hour, nil), wantStale: 12 * time.Hour, wantNext: 12 * time.Hour},
		{name: "1 h token: every 30 min", doc: doc(time.Hour, nil), wantStale: 30 * time.Minute, wantNext: 30 * time.Minute},
		{name: "15 min token: on demand, kept alive daily", doc: doc(15*time.Minute, nil), wantStale: 450 * time.Second, wantNext: KeepAliveInterval, wantOnDemand: true},
		{name: "refresh_margin overrides", doc: doc(24*time.Hour, func(p *Private) { p.Policy.RefreshMargin = 2 * time.Hour }), wantStale: 22 * time.Hour, wantNext: 22 * time.Hour},
		{name: "refresh token expiring within 7 days", doc: doc(24*time.Hour, func(p *Private) { p.RefreshExpiresAt = now.Add(7*24*time.Hour + time.Hour) }), wantStale: 12 * time.Hour, wantNext: time.Hour},
		{name: "a tighter budget makes a 1 h token on demand", doc: doc(time.Hour, func(p *Private) { p.Policy.MaxWritesPerDay = 24 }), wantStale: 30 * time.Minute, wantNext: KeepAliveInterval, wantOnDemand: true},
		{name: "no access token: due now", doc: &Private{Status: StatusActive}, wantStale: 0, wantNext: 0},
		// Issue 18 timing defect 2: an adopted document whose access token has expired is
		// due at once (was: on demand, next refresh 24 h away).
		{name: "access token already expired: due now", doc: doc(-time.Hour, nil), wantStale: 0, wantNext: 0},
		{name: "access token expiring now: due now", doc: doc(0, nil), wantStale: 0, wantNext: 0},
		// Issue 18 timing defect 1: a 3-day refresh token is kept alive from its own
		// lifetime (due at half of it), so the 24 h token's 12 h schedule stands (was: due now).
		{name: "3-day refresh token: every 12 h", doc: doc(24*time.Hour, func(p *Private) { p.RefreshExpiresAt = now.Add(3 * 24 * time.Hour) }), wantStale: 12 * time.Hour, wantNext: 12 * time.Hour},
		{name: "refresh token with 20 h left: due at half of it", doc: doc(24*time.Hour, func(p *Private) { p.RefreshExpiresAt = now.Add(20 * time.Hour) }), wantStale: 12 * time.Hour, wantNext: 10 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.doc.Plan(now, tc.writes)
			if got := s.StaleAt.Sub(now); got != tc.wantStale {
				t.Errorf("stale after %v, want %v", got, tc.wantStale)
			}
			if got := s.NextDueAt.Sub(now); got != tc.wantNext {
				t.Errorf("next due after %v, want %v", got, tc.wantNext)
			}
			if s.OnDemand != tc.wantOnDemand {
				t.Errorf("on demand %v, want %v", s.OnDemand, tc.wantOnDemand)
			}
		})
	}
}

func TestBudgetFreeAt(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	every := func(n int, step time.Duration) []time.Time {
		ws := make([]time.Time, n)
		for i := range ws {
			ws[i] = now.Add(-time.Duration(i) * step)
		}
		return ws
	}
	tests := []struct {
		name   string
		writes []time.Time
		max    int
		want   time.Time
	}{
		{name: "room left", writes: every(89, 15*time.Minute), max: 90, want: now},
		{name: "full: the oldest leaves the window first", writes: every(90, 15*time.Minute), max: 90, want: now.Add(-89 * 15 * time.Minute).Add(24 * time.Hour)},
		{name: "writes older than 24 h do not count", writes: every(90, 20*time.Minute), max: 90, want: now},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := BudgetFreeAt(now, tc.writes, tc.max); !got.Equal(tc.want) {
				t.Errorf("BudgetFreeAt = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSeenRefreshTokens(t *testing.T) {
	var p Private
	for i := 0; i < maxSeen+5; i++ {
		p.Remember(Secret("rt-" + string(rune('a'+i%26)) + string(rune('a'+i/26))))
	}
	if len(p.SeenRefreshTokens) != maxSeen {
		t.Errorf("kept %d fingerprints, want %d", len(p.SeenRefreshTokens), maxSeen)
	}
	if p.Seen("rt-aa") || !p.Seen(Secret("rt-"+string(rune('a'+(maxSeen+4)%26))+string(rune('a'+(maxSeen+4)/26)))) {
		t.Error("want the oldest forgotten and the newest remembered")
	}
	raw, err := (&Private{Provider: Provider{Grant: GrantClientCredentials}, SeenRefreshTokens: []string{Fingerprint("x")}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParsePrivate(raw)
	if err != nil || !back.Seen("x") {
		t.Errorf("round trip lost the fingerprints: %v", err)
	}
	if len(Fingerprint("x")) != 16 || Fingerprint("x") == Fingerprint("y") {
		t.Errorf("Fingerprint = %q", Fingerprint("x"))
	}
}

// The access document's expires_at is an RFC 3339 time or absent, never "" (docs/design.md §6).
func TestAccessExpiresAtNeverEmpty(t *testing.T) {
	raw, err := Access{Status: StatusNeedsReauth, Reason: "r"}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(raw); got != `{"access_token":"","token_type":"","scope":"","generation":0,"status":"needs_reauth","reason":"r"}` {
		t.Errorf("got %s, want no expires_at", got)
	}
}

func TestMaxWritesPerDayValidated(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want bool
	}{{0, true}, {1, true}, {100, true}, {101, false}, {-1, false}} {
		err := Policy{MaxWritesPerDay: tc.n}.validate(Provider{})
		if (err == nil) != tc.want {
			t.Errorf("max_writes_per_day %d: err %v, want ok %v", tc.n, err, tc.want)
		}
	}
}

func TestSpread(t *testing.T) {
	due := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	margin := 12 * time.Hour
	seen := map[time.Time]bool{}
	for i := 0; i < 100; i++ {
		key := fmt.Sprintf("token-%03d/1", i)
		got := Spread(due, key, margin)
		if got.Before(due) || !got.Before(due.Add(margin/SpreadFraction)) {
			t.Fatalf("%s: got %v, want within a tenth of the margin after %v", key, got, due)
		}
		if again := Spread(due, key, margin); !again.Equal(got) {
			t.Fatalf("%s: got %v then %v, want the same (deterministic)", key, got, again)
		}
		seen[got] = true
	}
	if len(seen) < 90 {
		t.Errorf("got %d distinct due times of 100 tokens, want them spread", len(seen))
	}
	if got := Spread(due, "x", 0); !got.Equal(due) {
		t.Errorf("no margin: got %v, want %v", got, due)
	}
}

// An access token already past its expiry leaves no margin: the due time is kept, never
// pushed by a wrapped-around span (it once landed up to ~290 years out).
func TestSpreadNoMargin(t *testing.T) {
	due := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for _, margin := range []time.Duration{0, -time.Nanosecond, -105 * time.Minute, -24 * time.Hour} {
		for i := 0; i < 50; i++ {
			key := fmt.Sprintf("token-%03d/2", i)
			if got := Spread(due, key, margin); !got.Equal(due) {
				t.Fatalf("Spread(due, %q, %s): got %s, want %s", key, margin, got, due)
			}
		}
	}
}
