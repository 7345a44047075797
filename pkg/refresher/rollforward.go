package refresher

import (
	"errors"

	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// rollForward finishes steps 6 and 7 of an already committed version: it moves AWSCURRENT
// from a.labelFrom and republishes when a.publish. accessFrom is the access secret's
// AWSCURRENT when it is some other version: a publish replayed with the committed version's
// token is idempotent and does not move the label back, so it is moved.
func (t *tokenRun) rollForward(a action, accessFrom string) Row {
	if err := t.claimRepair(); err != nil {
		return rowFor(err)
	}
	defer t.release()
	doc, err := t.readDoc(t.rec.VersionID)
	if err != nil {
		return rowFor(err)
	}
	t.doc = doc
	if a.labelFrom != "" {
		if err := t.e.opts.Secrets.MoveCurrent(t.ctx, t.priv, t.rec.VersionID, a.labelFrom); err != nil && !errors.Is(err, secretstore.ErrStageMoved) {
			t.noteSecretsErr(err)
			if t.rec.LabelFrom != a.labelFrom {
				// Seen by a reconcile: remember it so the next sweep repairs it.
				if merr := t.e.opts.Ledger.MarkLabelLag(t.ctx, t.name, t.rec.Generation, a.labelFrom); merr != nil {
					t.log.WarnContext(t.ctx, "recording the lagging label failed", "error", merr.Error())
				}
			}
			return failed("label committed version: %v", err)
		}
		if t.rec.LabelFrom != "" {
			// label_from is cleared; due_at goes back to next_due_at.
			t.rel.LabelRepaired, t.rel.NextDueAt = true, t.rec.NextDueAt
		}
	}
	if a.publish && doc.Status == token.StatusActive && !publishable(doc, t.e.now()) {
		// Never publish an expired access token as active: plan refreshes such a token.
		a.publish = false
	}
	if a.publish {
		if err := t.publishDoc(doc, t.rec.Generation, t.rec.VersionID); err != nil {
			return failed("publish: %v", err)
		}
		if accessFrom != "" {
			err := t.e.opts.Secrets.MoveCurrent(t.ctx, t.access, AccessToken(t.rec.VersionID), accessFrom)
			if err != nil && !errors.Is(err, secretstore.ErrStageMoved) {
				return failed("publish: move the access secret's AWSCURRENT: %v", err)
			}
		}
		t.log.InfoContext(t.ctx, "access secret republished", "generation", t.rec.Generation)
		// published_generation catches up; due_at goes back to next_due_at (a failed
		// publish put the record in the sweep index early).
		t.rel.Published, t.rel.NextDueAt = t.rec.Generation, t.rec.NextDueAt
	}
	if doc.Status != token.StatusActive {
		return Row{Outcome: OutcomeNeedsReauth, Error: reasonOf(doc)}
	}
	return Row{Outcome: OutcomeNotDue}
}
