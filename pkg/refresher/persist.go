package refresher

import (
	"context"
	"errors"
	"fmt"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// persist is step 4: the new version goes to Secrets Manager under TR_PENDING before
// anything else happens. Retried while the lease holds (fenced, lease.go): the lease is
// renewed while the answer is in hand, and the first failed renewal stops every write. The
// deterministic ClientRequestToken makes retries idempotent.
func (t *tokenRun) persist(next *token.Private, to string) error {
	next.VersionID = to
	if t.doc != nil && t.doc.VersionID != t.rec.VersionID && next.BaseVersionID == "" {
		next.BaseVersionID = t.rec.VersionID // the committed document was an operator's
	}
	raw, err := next.Marshal()
	if err != nil {
		t.rel.KeepInflight, t.rel.Failure = true, "encode new version"
		return fmt.Errorf("encode new version: %w", err)
	}
	t.rel.KeepInflight = true // from here the provider may have rotated
	err = t.fenced(func(ctx context.Context) error {
		err := t.e.opts.Secrets.PutPending(ctx, t.priv, token.Secret(raw), to, PendingStage)
		t.noteSecretsErr(err)
		return err
	})
	if err == nil {
		t.log.InfoContext(t.ctx, "new version saved", "version", to, "stage", PendingStage)
		return nil
	}
	if errors.Is(err, secretstore.ErrVersionConflict) {
		return err
	}
	t.rel.Failure = "new token obtained but not saved"
	return fmt.Errorf("new token obtained but not saved (the next run recovers it within the provider's reuse grace): %w", err)
}

// settle is steps 5–7 for version `to`, already in Secrets Manager: commit → label → publish.
func (t *tokenRun) settle(next *token.Private, to string) Row {
	if err := t.commit(next, to); err != nil {
		return rowFor(err)
	}
	t.label(to, t.rec.PrevVersionID)
	if err := t.publish(next); err != nil {
		return rowFor(err)
	}
	return doneRow(next) // finishRow adds t.note
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
		Writes: writes, Published: doc.Status != token.StatusActive || !doc.AccessToken.IsZero(),
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

// label is step 6: people and tools reading AWSCURRENT see the committed version. A failure
// is repaired by the next reconcile.
func (t *tokenRun) label(to, from string) {
	if from == "" || from == to {
		return
	}
	err := t.e.opts.Secrets.MoveCurrent(t.ctx, t.priv, to, from)
	switch {
	case err == nil:
	case errors.Is(err, secretstore.ErrStageMoved):
		t.log.WarnContext(t.ctx, "AWSCURRENT was moved by someone else; the next run adopts it", "version", to)
	default:
		t.noteSecretsErr(err)
		t.log.WarnContext(t.ctx, "moving AWSCURRENT failed; the next run repairs it", "error", err.Error())
	}
}

// publish is step 7 right after a commit, which already recorded published_generation: a
// publish that does not land is seen by the next reconcile (the access secret's AWSCURRENT
// is not this version's) and repaired.
func (t *tokenRun) publish(doc *token.Private) error {
	if doc.Status == token.StatusActive && doc.AccessToken.IsZero() {
		return nil // a salvaged refresh token: nothing for consumers yet
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
