package refresher

import (
	"errors"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// TestPlan is the decision procedure on its own: no AWS, one row per situation.
func TestPlan(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	base := func() *ledger.Record {
		return &ledger.Record{Name: "a", VersionID: "v2", PrevVersionID: "v1", Generation: 2, PublishedGeneration: 2,
			Status: token.StatusActive, ExpiresAt: now.Add(20 * time.Hour), StaleAt: now.Add(8 * time.Hour), NextDueAt: now.Add(8 * time.Hour)}
	}
	with := func(f func(r *ledger.Record)) *ledger.Record { r := base(); f(r); return r }
	ours := &token.Private{VersionID: "v0"}
	edit := &token.Private{}
	writes := make([]time.Time, 90)
	for i := range writes {
		writes[i] = now.Add(-time.Duration(i) * time.Minute)
	}

	tests := []struct {
		name string
		in   planInput
		want actionKind
	}{
		{name: "no record: adopt", in: planInput{}, want: actAdoptNew},
		{name: "not due", in: planInput{rec: base()}, want: actNotDue},
		{name: "not due, current is the committed version", in: planInput{rec: base(), current: "v2"}, want: actNotDue},
		{name: "due", in: planInput{rec: with(func(r *ledger.Record) { r.NextDueAt = now.Add(-time.Second) })}, want: actRefresh},
		{name: "no sweep: expires before the next reconcile", in: planInput{reach: 13 * time.Hour, rec: with(func(r *ledger.Record) { r.ExpiresAt = now.Add(12 * time.Hour) })}, want: actRefresh},
		{name: "no sweep: lasts past the next reconcile", in: planInput{reach: 13 * time.Hour, rec: with(func(r *ledger.Record) { r.ExpiresAt = now.Add(14 * time.Hour) })}, want: actNotDue},
		{name: "no access token yet", in: planInput{rec: with(func(r *ledger.Record) { r.ExpiresAt = time.Time{} })}, want: actRefresh},
		// Issue 18 timing defects 3 and 4: a provider throttle and the failure back-off hold
		// for a token never refreshed and for ensure.
		{name: "never refreshed, throttled: not due", in: planInput{rec: with(func(r *ledger.Record) {
			r.ExpiresAt, r.NextDueAt, r.ConsecutiveFailures, r.LastError = time.Time{}, now.Add(time.Hour), 1, throttledFailure
		})}, want: actNotDue},
		{name: "never refreshed, throttle over: due", in: planInput{rec: with(func(r *ledger.Record) {
			r.ExpiresAt, r.NextDueAt, r.ConsecutiveFailures, r.LastError = time.Time{}, now, 1, throttledFailure
		})}, want: actRefresh},
		{name: "ensure inside the margin while throttled: not due", in: planInput{trigger: triggerEnsure, rec: with(func(r *ledger.Record) {
			r.StaleAt, r.NextDueAt, r.ConsecutiveFailures, r.LastError = now, now.Add(time.Hour), 1, throttledFailure
		})}, want: actNotDue},
		{name: "ensure inside the margin while backing off: not due", in: planInput{trigger: triggerEnsure, rec: with(func(r *ledger.Record) {
			r.StaleAt, r.NextDueAt, r.ConsecutiveFailures, r.LastError = now, now.Add(5*time.Minute), 1, "provider: 503"
		})}, want: actNotDue},
		{name: "forced while throttled", in: planInput{force: true, trigger: triggerOperator, rec: with(func(r *ledger.Record) {
			r.NextDueAt, r.ConsecutiveFailures, r.LastError = now.Add(time.Hour), 1, throttledFailure
		})}, want: actRefresh},
		{name: "forced", in: planInput{force: true, trigger: triggerOperator, rec: base()}, want: actRefresh},
		{name: "forced but the write budget is used up", in: planInput{force: true, rec: with(func(r *ledger.Record) { r.Writes = writes })}, want: actBudget},
		{name: "ensure outside the margin", in: planInput{trigger: triggerEnsure, rec: base()}, want: actNotDue},
		{name: "ensure inside the margin", in: planInput{trigger: triggerEnsure, rec: with(func(r *ledger.Record) { r.StaleAt = now })}, want: actRefresh},
		{name: "ensure of an on-demand token not yet due for keep-alive", in: planInput{trigger: triggerEnsure,
			rec: with(func(r *ledger.Record) { r.StaleAt, r.NextDueAt = now.Add(-time.Minute), now.Add(20*time.Hour) })}, want: actRefresh},
		{name: "lease held", in: planInput{rec: with(func(r *ledger.Record) { r.LeaseHolder, r.LeaseUntil = "x", now.Add(time.Second) })}, want: actLeaseHeld},
		{name: "expired lease with inflight: recover", in: planInput{rec: with(func(r *ledger.Record) {
			r.LeaseHolder, r.LeaseUntil, r.Inflight = "x", now.Add(-time.Second), &ledger.Inflight{From: "v2", To: "n3"}
		})}, want: actRecover},
		{name: "publish lags", in: planInput{rec: with(func(r *ledger.Record) { r.PublishedGeneration = 1 })}, want: actRollForward},
		{name: "access secret is not the committed version's", in: planInput{rec: base(), accessListed: true, accessCurrent: "other"}, want: actRollForward},
		{name: "access secret is the committed version's", in: planInput{rec: base(), accessListed: true, accessCurrent: AccessToken("v2")}, want: actNotDue},
		{name: "label lags one step", in: planInput{rec: base(), current: "v1"}, want: actRollForward},
		{name: "AWSCURRENT moved: read it", in: planInput{rec: base(), current: "e1"}, want: actReadCurrent},
		// Issue 18 item 2: the persist moves AWSCURRENT, so our uncommitted in-flight
		// version at AWSCURRENT is a refresh to roll forward, read or not, never an edit.
		{name: "AWSCURRENT on our in-flight version: recover", in: planInput{current: "n3", rec: with(func(r *ledger.Record) {
			r.LeaseUntil, r.Inflight = now.Add(-time.Second), &ledger.Inflight{From: "v2", To: "n3"}
		})}, want: actRecover},
		{name: "AWSCURRENT on our in-flight version, holder still at work", in: planInput{current: "n3", rec: with(func(r *ledger.Record) {
			r.LeaseHolder, r.LeaseUntil, r.Inflight = "x", now.Add(time.Second), &ledger.Inflight{From: "v2", To: "n3"}
		})}, want: actLeaseHeld},
		// Issue 18 item 3: a failed label move the record remembers is repaired by a sweep.
		{name: "sweep: label lag recorded", in: planInput{trigger: triggerSweep, rec: with(func(r *ledger.Record) { r.LabelFrom = "v1" })}, want: actRollForward},
		{name: "AWSCURRENT is one of ours", in: planInput{rec: base(), current: "v0", currentDoc: ours}, want: actRollForward},
		{name: "operator edit", in: planInput{rec: base(), current: "e1", currentDoc: edit}, want: actAdoptEdit},
		{name: "operator edit while an interrupted refresh is in flight: recover first", in: planInput{current: "e1", currentDoc: edit,
			rec: with(func(r *ledger.Record) {
				r.LeaseUntil, r.Inflight = now.Add(-time.Second), &ledger.Inflight{From: "v2", To: "n3"}
			})}, want: actRecover},
		{name: "invalid edit of a working token: keep refreshing the committed one", in: planInput{current: "e1", currentErr: errors.New("provider.token_url: required"),
			rec: with(func(r *ledger.Record) { r.NextDueAt = now })}, want: actRefresh},
		{name: "needs_reauth", in: planInput{rec: with(func(r *ledger.Record) { r.Status = token.StatusNeedsReauth })}, want: actNeedsReauth},
		{name: "needs_reauth is never refreshed, even forced", in: planInput{force: true, rec: with(func(r *ledger.Record) { r.Status = token.StatusNeedsReauth })}, want: actNeedsReauth},
		{name: "needs_reauth with a lagging publish", in: planInput{rec: with(func(r *ledger.Record) { r.Status, r.PublishedGeneration = token.StatusNeedsReauth, 1 })}, want: actRollForward},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.now = now
			got := plan(tc.in)
			if got.kind != tc.want {
				t.Errorf("plan = %s (%s), want %s", got.kind, got.why, tc.want)
			}
		})
	}
}

// An edit made from a copy of a version the chain has moved past keeps the live refresh token
// (docs/design.md §2); only a new authorisation (a later authorized_at), or an edit of a dead
// chain, replaces it, and never with a refresh token the chain has held.
func TestMergeEdit(t *testing.T) {
	authorized := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	later := authorized.Add(time.Hour)
	committed := &token.Private{VersionID: "n5", RefreshToken: "rt-live", Provider: token.Provider{ClientID: "old"}, AuthorizedAt: authorized}
	committed.Remember("rt-seed")
	committed.Remember("rt-older")
	committed.Remember("rt-live")
	tests := []struct {
		name      string
		edit      token.Private
		dead      bool // the record is needs_reauth
		wantStale bool
		wantRT    string
	}{
		{name: "copy of an older version of ours", edit: token.Private{VersionID: "n4", RefreshToken: "rt-older"}, wantStale: true, wantRT: "rt-live"},
		{name: "copy of an older version with a new client secret", edit: token.Private{VersionID: "n4", RefreshToken: "rt-older"}, wantStale: true, wantRT: "rt-live"},
		{name: "copy of an older version with a re-authorised refresh token", edit: token.Private{VersionID: "n4", RefreshToken: "rt-new", AuthorizedAt: later}, wantStale: true, wantRT: "rt-new"},
		{name: "copy of an older version with an unmarked new refresh token", edit: token.Private{VersionID: "n4", RefreshToken: "rt-new", AuthorizedAt: authorized}, wantStale: true, wantRT: "rt-live"},
		{name: "copy of the committed version", edit: token.Private{VersionID: "n5", RefreshToken: "rt-live"}, wantRT: "rt-live"},
		{name: "re-seed of the original onboarding file", edit: token.Private{RefreshToken: "rt-seed"}, wantStale: true, wantRT: "rt-live"},
		{name: "re-authorised: a later authorized_at", edit: token.Private{RefreshToken: "rt-fresh", AuthorizedAt: later}, wantRT: "rt-fresh"},
		{name: "a refresh token never seen, not marked (the seen list is bounded)", edit: token.Private{RefreshToken: "rt-fresh"}, wantStale: true, wantRT: "rt-live"},
		{name: "a refresh token never seen, the chain dead", edit: token.Private{RefreshToken: "rt-fresh"}, dead: true, wantRT: "rt-fresh"},
		{name: "a later authorized_at with a token the chain held", edit: token.Private{RefreshToken: "rt-older", AuthorizedAt: later}, wantStale: true, wantRT: "rt-live"},
		{name: "no refresh token (Sahamati)", edit: token.Private{}, wantRT: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.edit.Provider.ClientID = "new"
			status := token.StatusActive
			if tc.dead {
				status = token.StatusNeedsReauth
			}
			m := mergeEdit(committed, "n5", &tc.edit, status)
			merged, stale := m.doc, m.stale
			if stale != tc.wantStale {
				t.Errorf("stale = %v, want %v", stale, tc.wantStale)
			}
			if got := merged.RefreshToken.Reveal(); got != tc.wantRT {
				t.Errorf("refresh token = %q, want %q", got, tc.wantRT)
			}
			if merged.Provider.ClientID != "new" {
				t.Errorf("provider.client_id = %q, want the operator's %q", merged.Provider.ClientID, "new")
			}
			if !merged.Seen("rt-live") {
				t.Error("the merged document forgot the refresh tokens the chain has held")
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	for _, tc := range []struct {
		failures int
		want     time.Duration
	}{{1, 5 * time.Minute}, {2, 10 * time.Minute}, {4, 40 * time.Minute}, {5, time.Hour}, {30, time.Hour}} {
		if got := retryDelay(tc.failures); got != tc.want {
			t.Errorf("retryDelay(%d) = %v, want %v", tc.failures, got, tc.want)
		}
	}
}
