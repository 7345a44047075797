package refresher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// persist is step 4: the new version goes to Secrets Manager, as AWSCURRENT in the same
// PutSecretValue, before anything else happens. The record stays the authority: a version
// of ours at AWSCURRENT that the record has not committed is this refresh in flight (plan
// recovers it), never an operator edit. Retried while the lease holds (fenced, lease.go):
// the lease is renewed while the answer is in hand, and the first failed renewal stops every
// write. The deterministic ClientRequestToken makes retries idempotent.
func (t *tokenRun) persist(next *token.Private, to string) error {
	next.VersionID = to
	if t.doc != nil && t.doc.VersionID != t.rec.VersionID && next.BaseVersionID == "" {
		next.BaseVersionID = t.rec.VersionID // the committed document was an operator's
	}
	raw, err := next.Marshal()
	if err != nil {
		t.mayBeSpent, t.rel.Failure = true, "encode new version"
		return fmt.Errorf("encode new version: %w", err)
	}
	t.mayBeSpent = true // from here the provider may have rotated
	err = t.fenced(func(ctx context.Context) error {
		err := t.e.opts.Secrets.PutCurrentVersion(ctx, t.priv, token.Secret(raw), to)
		t.noteSecretsErr(err)
		return err
	})
	if err == nil {
		t.persisted = to
		t.log.InfoContext(t.ctx, "new version saved as AWSCURRENT", "version", to)
		return nil
	}
	if errors.Is(err, secretstore.ErrVersionConflict) {
		return err
	}
	t.rel.Failure = "new token obtained but not saved"
	if t.escrowed {
		return fmt.Errorf("the escrowed token is still not saved; the escrow is kept for the next run: %w", err)
	}
	if t.rotated {
		// Refused for good after the provider rotated: escrow at once, not at the end.
		eerr := t.escrow(token.Secret(raw), to)
		if eerr == nil {
			return fmt.Errorf("new token obtained but not saved; escrowed in the state table (the next run finishes the persist): %w", err)
		}
		t.log.ErrorContext(t.ctx, "the rotated token could not be escrowed; it is held only in this process", "version", to, "error", eerr.Error())
	}
	return fmt.Errorf("new token obtained but not saved (the next run recovers it within the provider's reuse grace): %w", err)
}

// settle is steps 5–7 for version `to`, already in Secrets Manager: commit → label check →
// publish.
func (t *tokenRun) settle(next *token.Private, to string) Row {
	if err := t.commit(next, to); err != nil {
		return rowFor(err)
	}
	t.checkLabel(t.rec.PrevVersionID, to)
	if err := t.publish(next); err != nil {
		return rowFor(err)
	}
	if next.Status == token.StatusActive && expired(next, t.e.now()) && !t.chained {
		// A version saved long ago (rolled forward, from the escrow) carries an access token
		// that has expired: it was committed for its refresh token, not published, and the
		// token is refreshed now, once, instead of waiting for the next run.
		t.chained = true
		t.log.InfoContext(t.ctx, "the committed version's access token has expired; refreshing now", "version", to)
		return t.refresh()
	}
	return doneRow(next) // finishRow adds t.note
}

// expired: doc's access token has an expiry and it has passed.
func expired(doc *token.Private, now time.Time) bool {
	return !doc.ExpiresAt.IsZero() && !doc.ExpiresAt.After(now)
}

// publishable: doc has an access token consumers may use now. An expired one is never
// published as active (invariant I3); a salvaged refresh token has none.
func publishable(doc *token.Private, now time.Time) bool {
	return !doc.AccessToken.IsZero() && !expired(doc, now)
}

// commit is step 5 for version `to`, already in Secrets Manager; it releases the lease.
func (t *tokenRun) commit(doc *token.Private, to string) error {
	rec, err := t.commitFenced(t.commitFor(doc, to))
	if err != nil {
		if errors.Is(err, ledger.ErrLeaseLost) {
			t.leaseGone()
			return fmt.Errorf("lease lost before commit: a newer refresh committed; its state is kept")
		}
		return fmt.Errorf("commit: %w", err)
	}
	t.committed(rec, doc)
	t.movedToReauth = doc.Status == token.StatusNeedsReauth
	t.log.InfoContext(t.ctx, "committed", "version", to, "generation", rec.Generation, "status", doc.Status, "next_due_at", rec.NextDueAt)
	return nil
}

// commitFor is the commit of version `to` holding doc, with its schedule (docs/design.md §3).
func (t *tokenRun) commitFor(doc *token.Private, to string) ledger.Commit {
	now := t.e.now()
	writes := append(token.RecentWrites(t.rec.Writes, now), now)
	c := ledger.Commit{
		Name: t.name, Holder: t.holder, FromGeneration: t.rec.Generation,
		From: t.rec.VersionID, To: to, Status: doc.Status, StatusReason: doc.StatusReason,
		ExpiresAt: doc.ExpiresAt, RefreshExpiresAt: doc.RefreshExpiresAt,
		CredentialsExpireAt: doc.Provider.CredentialsExpireAt, MaxWrites: doc.MaxWrites(),
		Writes: writes, Published: doc.Status != token.StatusActive || publishable(doc, now),
	}
	if doc.Status == token.StatusActive {
		s := doc.Plan(now, writes)
		c.NextDueAt, c.StaleAt = s.NextDueAt, s.StaleAt
		if !s.OnDemand && s.NextDueAt.Equal(s.StaleAt) {
			// Spread inside the margin so tokens adopted together leave lockstep (§3);
			// a keep-alive or write-budget due time is kept as it is.
			c.NextDueAt = token.Spread(s.NextDueAt, fmt.Sprintf("%s/%d", t.name, c.FromGeneration+1), doc.ExpiresAt.Sub(s.StaleAt))
		}
	}
	return c
}

// commitFenced writes the commit while the lease holds; the commit releases the lease.
func (t *tokenRun) commitFenced(c ledger.Commit) (ledger.Record, error) {
	var rec ledger.Record
	err := t.fenced(func(ctx context.Context) error {
		var err error
		rec, err = t.e.opts.Ledger.Commit(ctx, c)
		return err
	})
	return rec, err
}

// committed takes the record a commit returned: the lease went with it.
func (t *tokenRun) committed(rec ledger.Record, doc *token.Private) {
	t.rec, t.doc = rec, doc
	t.leaseGone()
}

// label is step 6 as a repair: it moves AWSCURRENT from version from (where it was seen) to
// the committed version to. A version this run has just persisted is AWSCURRENT already.
// A failed move is recorded (label_from), so the next sweep repairs it from the record.
func (t *tokenRun) label(to, from string) {
	if from == "" || from == to || t.persisted == to {
		return
	}
	t.moveLabel(to, from)
}

// moveLabel moves AWSCURRENT from version from to the committed version to, and records a
// move that did not land.
func (t *tokenRun) moveLabel(to, from string) error {
	err := t.e.opts.Secrets.MoveCurrent(t.ctx, t.priv, to, from)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, secretstore.ErrStageMoved):
		// AWSCURRENT is on neither version: the next reconcile reads where it is and tells
		// ours (a label repair) from an operator's (an edit). Nothing is claimed here.
		t.log.InfoContext(t.ctx, "AWSCURRENT is on another version; the next reconcile looks at it", "version", to)
		return nil
	}
	t.noteSecretsErr(err)
	t.log.WarnContext(t.ctx, "moving AWSCURRENT failed; the next sweep repairs it", "error", err.Error())
	if merr := t.e.opts.Ledger.MarkLabelLag(t.ctx, t.name, t.rec.Generation, from); merr != nil {
		t.log.WarnContext(t.ctx, "recording the lagging label failed; the next reconcile repairs it", "error", merr.Error())
	}
	return err
}

// checkLabel follows the persist of `to` (a refresh from `from`): our PutSecretValue moved
// AWSCURRENT, and the version it took the label from is now AWSPREVIOUS. That should be
// from. If it is an operator's version instead, an edit landed while the token was being
// refreshed and our write hid it: AWSCURRENT is given back to it, so the next reconcile
// adopts it (docs/design.md §2) exactly as if it had landed after the refresh. One read on
// the normal path (reads are 10 000/s; writes, 50/s, are what a refresh is counted in).
func (t *tokenRun) checkLabel(from, to string) {
	if from == "" || t.persisted != to {
		return // a roll-forward of a version saved earlier: plan saw AWSCURRENT
	}
	v, err := t.e.opts.Secrets.GetVersion(t.ctx, t.priv, from)
	if err != nil {
		t.log.WarnContext(t.ctx, "checking AWSPREVIOUS after the persist failed; the next reconcile looks at AWSCURRENT", "error", err.Error())
		return
	}
	if v.HasStage(stagePrevious) {
		return
	}
	if v.HasStage(secretstore.StageCurrent) {
		_ = t.moveLabel(to, from) // our write did not move it (a retried put): repair
		return
	}
	stages, err := t.e.opts.Secrets.Stages(t.ctx, t.priv)
	if err != nil {
		t.log.WarnContext(t.ctx, "reading the labels after the persist failed", "error", err.Error())
		return
	}
	var prev, cur string
	for id, ss := range stages {
		for _, s := range ss {
			switch s {
			case stagePrevious:
				prev = id
			case secretstore.StageCurrent:
				cur = id
			}
		}
	}
	if prev == "" || prev == to || cur != to {
		return
	}
	doc, err := t.readDoc(prev)
	if err == nil && doc.VersionID == prev {
		return // one of ours (a label that lagged before this refresh): nothing hidden
	}
	t.log.WarnContext(t.ctx, "an operator edit landed while the token was being refreshed; AWSCURRENT goes back to it and the next reconcile adopts it", "edit_version", prev, "version", to)
	if err := t.e.opts.Secrets.MoveCurrent(t.ctx, t.priv, prev, to); err != nil && !errors.Is(err, secretstore.ErrStageMoved) {
		t.noteSecretsErr(err)
		t.log.ErrorContext(t.ctx, "giving AWSCURRENT back to the operator's edit failed; it is AWSPREVIOUS until the next write", "edit_version", prev, "error", err.Error())
	}
}

// stagePrevious is the label Secrets Manager moves to the version AWSCURRENT left.
const stagePrevious = "AWSPREVIOUS"

// publish is step 7 right after a commit, which already recorded published_generation: a
// publish that does not land is seen by the next reconcile (the access secret's AWSCURRENT
// is not this version's) and repaired.
func (t *tokenRun) publish(doc *token.Private) error {
	if doc.Status == token.StatusActive && !publishable(doc, t.e.now()) {
		return nil // a salvaged refresh token or an expired access token: nothing for consumers yet
	}
	if err := t.publishDoc(doc, t.rec.Generation, t.rec.VersionID); err != nil {
		// The commit recorded the publish; say it lags so the next sweep repairs it.
		if merr := t.e.opts.Ledger.MarkUnpublished(t.ctx, t.name, t.rec.Generation); merr != nil {
			t.log.WarnContext(t.ctx, "recording the failed publish failed; the next reconcile repairs it", "error", merr.Error())
		}
		return fmt.Errorf("committed generation %d but publishing the access secret failed (the next run publishes it): %w", t.rec.Generation, err)
	}
	return nil
}

// publishDoc writes the consumers' document for generation gen of private version v.
func (t *tokenRun) publishDoc(doc *token.Private, gen int64, v string) error {
	a := doc.Access()
	a.Generation = gen
	raw, err := a.Marshal()
	if err != nil {
		return err
	}
	if err := t.e.opts.Secrets.Publish(t.ctx, t.access, token.Secret(raw), AccessToken(v)); err != nil {
		t.noteSecretsErr(err)
		return err
	}
	return nil
}

// noteSecretsErr counts a call Secrets Manager still throttled after the SDK's adaptive
// retries (metric SecretsManagerThrottled). The run goes on: writes are paced, a throttled
// write is retried under its lease, and what the deadline does not reach is deferred.
func (t *tokenRun) noteSecretsErr(err error) {
	if errors.Is(err, secretstore.ErrThrottled) {
		t.st.smThrottles.Add(1)
	}
}
