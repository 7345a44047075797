package refresher

import "github.com/seed-502fa48b/token-refresher/pkg/token"

// recover settles a refresh whose holder died (docs/design.md §4, recovery): roll its saved
// version forward, or give it up for an operator's edit, or retry it with the old refresh
// token.
func (t *tokenRun) recover(in *planInput) Row {
	if err := t.claimLease(); err != nil {
		return rowFor(err)
	}
	defer t.release()
	to := t.nextVersion()
	doc, err := t.findVersion(to)
	if err != nil {
		return rowFor(err) // not absence: the old refresh token is not presented again
	}
	if doc == nil && t.rec.Inflight != nil && len(t.rec.Inflight.Escrow) > 0 {
		// The rotated token is in the escrow: finish its persist, never retry the old one.
		if doc, err = t.fromEscrow(to); err != nil {
			return rowFor(err)
		}
	}
	if doc != nil {
		t.log.InfoContext(t.ctx, "rolling forward an interrupted refresh", "version", to)
		row := t.settle(doc, to)
		if row.Outcome != OutcomeFailed && in.currentDoc != nil && in.current != "" && in.current != to {
			// The edit that waited for this recovery is now a copy of a superseded version.
			if _, err := t.adoptEdit(in.current, in.currentDoc); err != nil {
				return rowFor(err)
			}
		}
		return row
	}
	if in.currentDoc != nil && in.current != t.rec.VersionID {
		// The interrupted refresh's version was never written: the edit supersedes it.
		force, err := t.adoptEdit(in.current, in.currentDoc)
		if err != nil {
			return rowFor(err)
		}
		if force || t.st.force {
			return t.refresh()
		}
		in.current = t.rec.VersionID
		if a := plan(planInput{trigger: in.trigger, now: t.e.now(), rec: &t.rec}); a.kind == actRefresh {
			return t.refresh()
		}
		return Row{Outcome: OutcomeNotDue}
	}
	doc, err = t.readDoc(t.rec.VersionID)
	if err != nil {
		return rowFor(err)
	}
	t.doc = doc
	if doc.Status != token.StatusActive || (t.rec.Status != "" && t.rec.Status != token.StatusActive) {
		return Row{Outcome: OutcomeNeedsReauth, Error: reasonOfRecord(t.rec)}
	}
	return t.refreshInterrupted()
}

// refreshInterrupted retries the interrupted refresh under the recovery's lease. When the
// old refresh token may have been presented (the claim set mayBeSpent from the mark), the
// refresh stays in flight until it commits, and a rejection says the refresh was
// interrupted rather than that the provider refused it.
func (t *tokenRun) refreshInterrupted() Row {
	t.log.InfoContext(t.ctx, "retrying an interrupted refresh with the old refresh token")
	return t.refresh()
}
