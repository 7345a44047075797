package refresher_test

import (
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// No fault at all: a token refreshes, its access token expires, and the operator puts the
// onboarding file back unchanged. The reconcile merges the stale copy (keeping the live
// refresh token) and must not publish the expired access token as active nor schedule the
// token centuries out: it refreshes in the same run. Before the fix the merge was published
// as active with the expired token and next_due_at landed in 2301.
func TestStaleCopyOfAnExpiredTokenIsRefreshed(t *testing.T) {
	f := newFaultEnv(t, nil)
	f.mustRefresh(t)
	doc, before := f.committed("t")
	f.clock.Advance(doc.ExpiresAt.Sub(f.clock.Now()) + 45*time.Minute) // the access token has expired
	f.edit("t", f.orig)

	rep := f.scheduled()
	if r := row(t, rep, "t"); r.Outcome != refresher.OutcomeRefreshed {
		t.Errorf("reconcile: got %s (%s), want refreshed (the merge, then a refresh)", r.Outcome, r.Error)
	}
	now := f.clock.Now()
	doc, rec := f.committed("t")
	if rec.Generation < before.Generation+2 {
		t.Errorf("generation %d, want at least %d (the merge and a refresh)", rec.Generation, before.Generation+2)
	}
	if !doc.ExpiresAt.After(now) {
		t.Errorf("committed access token expires at %s, want after now %s", doc.ExpiresAt, now)
	}
	// This provider's access tokens are short, so the token is kept on demand: due again at
	// the keep-alive interval at the latest, never centuries out.
	if rec.NextDueAt.After(now.Add(token.KeepAliveInterval)) || !rec.NextDueAt.After(now) {
		t.Errorf("next_due_at %s, want after now %s and no later than the keep-alive interval (%s)", rec.NextDueAt, now, token.KeepAliveInterval)
	}
	access := f.accessRaw("t")
	if g, _ := access["generation"].(float64); int64(g) != rec.Generation {
		t.Errorf("access secret generation %v, want %d", access["generation"], rec.Generation)
	}
	f.settled(t)
}
