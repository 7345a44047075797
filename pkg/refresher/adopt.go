package refresher

import (
	"errors"
	"fmt"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// adoptNew creates the token record for a private secret seen for the first time; it is
// due at once.
func (t *tokenRun) adoptNew(currentID string) error {
	if currentID == "" {
		return &outcomeError{outcome: OutcomeInvalidConfig, msg: fmt.Sprintf("private secret %s has no AWSCURRENT version", t.priv)}
	}
	doc, err := t.readDoc(currentID)
	if err != nil {
		return err
	}
	rec := ledger.Record{
		Name: t.name, VersionID: currentID, Generation: doc.Generation, PublishedGeneration: -1,
		Status: doc.Status, StatusReason: doc.StatusReason, ExpiresAt: doc.ExpiresAt,
		NextDueAt: t.e.now(), StaleAt: t.e.now(), RefreshExpiresAt: doc.RefreshExpiresAt,
		CredentialsExpireAt: doc.Provider.CredentialsExpireAt, MaxWrites: doc.MaxWrites(),
	}
	err = t.e.opts.Ledger.Create(t.ctx, rec)
	switch {
	case err == nil:
		t.log.InfoContext(t.ctx, "adopted private secret", "version", currentID)
		t.rec, t.hasRec = rec, true // the record as written
		return nil
	case !errors.Is(err, ledger.ErrExists):
		return fmt.Errorf("create token record: %w", err)
	}
	// Another invocation adopted it first: work from its record.
	if t.rec, err = t.e.opts.Ledger.Get(t.ctx, t.name); err != nil {
		return fmt.Errorf("read token record: %w", err)
	}
	t.hasRec = true
	return nil
}

// mergedEdit is what an operator's edit becomes.
type mergedEdit struct {
	doc *token.Private
	// stale: the edit copied a version the chain has moved past; doc is the committed
	// document with the edit's provider and policy settings.
	stale bool
	// newRefreshToken: the edit is a new authorisation (or the chain was dead) and doc
	// carries its refresh token.
	newRefreshToken bool
}

// mergeEdit decides what an operator's edit becomes (docs/design.md §2). An edit's refresh
// token replaces the committed one only when the edit is a new authorisation —
// edit.NewAuthorizationOver(committed): its authorized_at is later than the committed
// document's — or the chain is already dead (chainDead: needs_reauth), and never when the
// chain has held that token (seen_refresh_tokens is a hint: a token in it is never taken
// back, but a token missing from it proves nothing, the list being bounded). Any other edit
// that carries another refresh token, or one of our version ids other than the committed
// one, is a copy: it gives its provider and policy settings and keeps the committed refresh
// token. Anything else is adopted whole.
func mergeEdit(committed *token.Private, committedID string, edit *token.Private, recStatus string) mergedEdit {
	chainDead := recStatus == token.StatusNeedsReauth
	if committed == nil {
		return mergedEdit{doc: edit.Clone(), stale: edit.VersionID != "" && edit.VersionID != committedID, newRefreshToken: true}
	}
	rt := edit.RefreshToken
	other := !rt.IsZero() && rt != committed.RefreshToken
	take := other && !committed.Seen(rt) && (chainDead || committed.Status == token.StatusNeedsReauth || edit.NewAuthorizationOver(committed))
	stale := (edit.VersionID != "" && edit.VersionID != committedID) || (other && !take)
	if !stale {
		merged := edit.Clone()
		merged.SeenRefreshTokens = append([]string(nil), committed.SeenRefreshTokens...)
		merged.Remember(rt)
		if merged.AuthorizedAt.Before(committed.AuthorizedAt) {
			merged.AuthorizedAt = committed.AuthorizedAt // a mark is never taken back either
		}
		return mergedEdit{doc: merged, newRefreshToken: take}
	}
	merged := committed.Clone()
	merged.Provider, merged.Policy = edit.Provider, edit.Policy
	if take {
		merged.RefreshToken, merged.RefreshExpiresAt = rt, edit.RefreshExpiresAt
		merged.Status, merged.StatusReason = token.StatusActive, ""
		if edit.AuthorizedAt.After(merged.AuthorizedAt) {
			merged.AuthorizedAt = edit.AuthorizedAt
		}
		merged.Remember(rt)
	}
	return mergedEdit{doc: merged, stale: true, newRefreshToken: take}
}

// adoptEdit makes an operator's AWSCURRENT version the committed base, active again, or —
// for a stale copy — writes a merged version that keeps the live refresh token. An
// interrupted refresh whose version was never written is given up for the edit. force
// reports a re-seed after needs_reauth, which refreshes at once to prove the credentials.
func (t *tokenRun) adoptEdit(editID string, edit *token.Private) (force bool, err error) {
	committed, cerr := t.readDoc(t.rec.VersionID)
	switch {
	case cerr == nil:
	case isInvalid(cerr) || errors.Is(cerr, secretstore.ErrNotFound):
		// Only a committed version that is gone or not a valid document lets the edit be
		// judged without it: there is no live chain in it to protect.
		t.log.WarnContext(t.ctx, "the committed version is unusable; the edit is judged alone", "error", cerr.Error())
		committed = nil
	default:
		// A failed read is not absence: the edit could be a stale copy (docs/design.md §4).
		return false, fmt.Errorf("adopt operator edit: %w", cerr)
	}
	m := mergeEdit(committed, t.rec.VersionID, edit, t.rec.Status)
	if err := t.claimLease(); err != nil {
		return false, err
	}
	defer t.release()
	if m.stale {
		return false, t.adoptStaleEdit(editID, m)
	}
	if t.rec.Interrupted() {
		t.log.WarnContext(t.ctx, "an operator edit supersedes an interrupted refresh", "inflight_version", t.rec.Inflight.To)
	}
	before := t.rec.Status
	m.doc.Status, m.doc.StatusReason = token.StatusActive, ""
	c := t.commitFor(m.doc, editID)
	c.Published = false
	rec, err := t.commitFenced(c)
	if err != nil {
		return false, fmt.Errorf("adopt operator edit: %w", err)
	}
	t.committed(rec, m.doc)
	t.log.InfoContext(t.ctx, "adopted operator edit", "version", editID, "previous_status", before)
	if before == token.StatusNeedsReauth {
		t.wasReauth = true
		return true, nil
	}
	return false, nil
}

// adoptStaleEdit writes, commits, labels and publishes the merge of a stale copy as the next
// version, under the lease adoptEdit holds.
func (t *tokenRun) adoptStaleEdit(editID string, m mergedEdit) error {
	kept := "the committed refresh token is kept (to replace it, mark the edit as a new authorisation: authorized_at later than the committed version's)"
	if m.newRefreshToken {
		kept = "its new refresh token replaces the committed one"
	}
	t.note = "operator edit " + editID + " was based on an older version: its provider and policy settings are taken, " + kept
	t.log.WarnContext(t.ctx, "operator edit based on an older version", "edit_version", editID, "committed_version", t.rec.VersionID, "refresh_token_taken", m.newRefreshToken)
	m.doc.Generation = t.rec.Generation + 1
	to := t.nextVersion()
	if err := t.persist(m.doc, to); err != nil {
		return err
	}
	if err := t.commit(m.doc, to); err != nil {
		return err
	}
	t.label(to, editID)
	return t.publish(m.doc)
}
