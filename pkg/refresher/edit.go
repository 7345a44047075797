package refresher

import (
	"fmt"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// mergeEdit decides what an operator's edit becomes (docs/design.md §2). A copy of a version the
// chain has moved past — it carries one of our version ids other than the committed one, or
// a refresh token the chain has already held — takes the operator's provider and policy and
// keeps the committed refresh token, unless the copy brings a refresh token the chain has
// never seen (a re-authorisation pasted into an old copy): only such a token replaces it.
// Anything else is adopted whole. fresh reports that the edit's refresh token is taken.
func mergeEdit(committed *token.Private, committedID string, edit *token.Private) (merged *token.Private, stale, fresh bool) {
	if committed == nil {
		return edit.Clone(), edit.VersionID != "" && edit.VersionID != committedID, true
	}
	rt := edit.RefreshToken
	unseen := !rt.IsZero() && rt != committed.RefreshToken && !committed.Seen(rt)
	stale = (edit.VersionID != "" && edit.VersionID != committedID) ||
		(!rt.IsZero() && rt != committed.RefreshToken && !unseen)
	if !stale {
		merged = edit.Clone()
		merged.SeenRefreshTokens = append([]string(nil), committed.SeenRefreshTokens...)
		merged.Remember(rt)
		return merged, false, unseen
	}
	merged = committed.Clone()
	merged.Provider, merged.Policy = edit.Provider, edit.Policy
	if unseen {
		merged.RefreshToken, merged.RefreshExpiresAt = rt, edit.RefreshExpiresAt
		merged.Status, merged.StatusReason = token.StatusActive, ""
		merged.Remember(rt)
	}
	return merged, true, unseen
}

// adoptEdit makes an operator's AWSCURRENT version the committed base, active again, or —
// for a stale copy — writes a merged version that keeps the live refresh token. force
// reports a re-seed after needs_reauth, which refreshes at once to prove the credentials.
// supersede: an interrupted refresh whose version was never written is given up for it.
func (t *tokenRun) adoptEdit(editID string, edit *token.Private, supersede bool) (force bool, err error) {
	committed, cerr := t.readDoc(t.rec.VersionID)
	if cerr != nil {
		committed = nil // an unreadable base cannot tell staleness; the edit wins
	}
	merged, stale, fresh := mergeEdit(committed, t.rec.VersionID, edit)
	if t.holder == "" {
		if err := t.claim(false, t.rec.Inflight != nil); err != nil {
			return false, err
		}
	}
	defer t.release()
	before := t.rec.Status
	if stale {
		kept := "the committed refresh token is kept"
		if fresh {
			kept = "its new refresh token replaces the committed one"
		}
		t.note = "operator edit " + editID + " was based on an older version: its provider and policy settings are taken, " + kept
		t.log.WarnContext(t.ctx, "operator edit based on an older version", "edit_version", editID, "committed_version", t.rec.VersionID, "refresh_token_taken", fresh)
		merged.Generation = t.rec.Generation + 1
		to := NextVersion(t.rec.VersionID, t.rec.Generation+1)
		if err := t.persist(merged, to); err != nil {
			return false, err
		}
		if err := t.commit(merged, to); err != nil {
			return false, err
		}
		t.label(to, editID)
		return false, t.publish(merged)
	}
	if supersede {
		t.log.WarnContext(t.ctx, "an operator edit supersedes an interrupted refresh", "inflight_version", t.rec.Inflight.To)
	}
	merged.Status, merged.StatusReason = token.StatusActive, ""
	c := t.commitFor(merged, editID)
	c.Published = false
	rec, err := t.retryCommit(c)
	if err != nil {
		return false, fmt.Errorf("adopt operator edit: %w", err)
	}
	t.rec, t.holder = rec, ""
	t.doc = merged
	t.log.InfoContext(t.ctx, "adopted operator edit", "version", editID, "previous_status", before)
	if before == token.StatusNeedsReauth {
		t.wasReauth = true
		return true, nil
	}
	return false, nil
}
