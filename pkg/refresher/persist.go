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

// errTakenOver: the lease ended or a renewal failed; this holder writes nothing more.
var errTakenOver = errors.New("the lease ended before the new version was saved; the next run recovers it")

// persist is step 4: the new version goes to Secrets Manager under TR_PENDING before
// anything else happens. Retried while the lease holds; the lease is renewed (fenced by
// holder and generation) while the answer is in hand, and the first failed renewal stops
// every write. The deterministic ClientRequestToken makes retries idempotent.
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
		t.noteSecretsErr(err) // other tokens stop starting at once; this one has its answer to save
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

// maxWriteAttempts bounds the retries of one write when the invocation has no deadline
// (tests, tools); under Lambda the deadline and the lease bound them.
const maxWriteAttempts = 8

// fenced retries write while this holder's lease lasts, renewing it (fenced by holder and
// generation) whenever less than half a persist budget is left: no write starts after the
// lease ends, and the first refused renewal stops every write.
func (t *tokenRun) fenced(write func(ctx context.Context) error) error {
	_, hasDeadline := timeLeft(t.ctx)
	maxBackoff := min(2*time.Second, t.e.opts.PersistBudget/4)
	backoff := min(100*time.Millisecond, maxBackoff)
	for attempt := 1; ; attempt++ {
		if err := t.keepLease(0); err != nil {
			return err
		}
		// A write (with the SDK's own retries) never outlives the lease it started under.
		wctx, cancel := context.WithDeadline(t.ctx, t.fence)
		err := write(wctx)
		cancel()
		if err == nil || permanent(err) || (!hasDeadline && attempt >= maxWriteAttempts) || t.ctx.Err() != nil {
			return err
		}
		// Renew before sleeping when the sleep would leave too little of the lease.
		if err := t.keepLease(backoff); err != nil {
			return err
		}
		if !wait(t.ctx, backoff) {
			return err
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// keepLease renews the lease when less than half a persist budget (plus ahead) is left.
func (t *tokenRun) keepLease(ahead time.Duration) error {
	if time.Until(t.fence) < t.e.opts.PersistBudget/2+ahead {
		return t.renew()
	}
	return nil
}

// renew extends the lease by one persist budget, never past the invocation's deadline.
func (t *tokenRun) renew() error {
	d := t.e.opts.PersistBudget
	if left, ok := timeLeft(t.ctx); ok && left < d {
		d = left
	}
	until := t.e.now().Add(d + t.e.opts.ClockSkew)
	if d < t.e.opts.PersistBudget/2 {
		return errTakenOver // the invocation ends before another write could finish
	}
	if _, err := t.e.opts.Ledger.Renew(t.ctx, t.name, t.holder, t.rec.Generation, until); err != nil {
		t.log.WarnContext(t.ctx, "lease renewal refused; writing nothing more", "error", err.Error())
		t.holder = "" // not ours any more: nothing to release
		return errTakenOver
	}
	t.fence = time.Now().Add(d)
	t.log.InfoContext(t.ctx, "lease renewed while saving the new version")
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
	}
	return c
}

// commit is step 5 for version `to`, already in Secrets Manager; it releases the lease.
func (t *tokenRun) commit(doc *token.Private, to string) error {
	rec, err := t.retryCommit(t.commitFor(doc, to))
	if err != nil {
		if errors.Is(err, ledger.ErrLeaseLost) {
			t.holder = ""
			return fmt.Errorf("lease lost before commit: a newer refresh committed; its state is kept")
		}
		return fmt.Errorf("commit: %w", err)
	}
	t.rec, t.holder, t.doc = rec, "", doc
	t.movedToReauth = doc.Status == token.StatusNeedsReauth
	t.log.InfoContext(t.ctx, "committed", "version", to, "generation", rec.Generation, "status", doc.Status, "next_due_at", rec.NextDueAt)
	return nil
}

func (t *tokenRun) retryCommit(c ledger.Commit) (ledger.Record, error) {
	var rec ledger.Record
	err := t.fenced(func(ctx context.Context) error {
		var err error
		rec, err = t.e.opts.Ledger.Commit(ctx, c)
		return err
	})
	return rec, err
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

// noteSecretsErr stops the run starting refreshes once Secrets Manager throttles.
func (t *tokenRun) noteSecretsErr(err error) {
	if errors.Is(err, secretstore.ErrThrottled) && !t.st.smThrottled.Swap(true) {
		t.log.WarnContext(t.ctx, "Secrets Manager is throttling; this run starts no more refreshes")
	}
}

func permanent(err error) bool {
	return errors.Is(err, secretstore.ErrVersionConflict) ||
		errors.Is(err, secretstore.ErrNotFound) ||
		errors.Is(err, secretstore.ErrLimitExceeded) ||
		errors.Is(err, secretstore.ErrInvalidRequest) ||
		errors.Is(err, ledger.ErrLeaseLost) ||
		errors.Is(err, ledger.ErrNotFound) ||
		errors.Is(err, errTakenOver) ||
		errors.Is(err, context.Canceled)
}

func wait(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// outcomeError carries an outcome other than failed through the steps' error returns.
type outcomeError struct {
	outcome string
	msg     string
}

func (e *outcomeError) Error() string {
	if e.msg == "" {
		return e.outcome
	}
	return e.outcome + ": " + e.msg
}

func isInvalid(err error) bool {
	var oe *outcomeError
	return errors.As(err, &oe) && oe.outcome == OutcomeInvalidConfig
}

// rowFor is the one mapping from a step's error to the token's outcome.
func rowFor(err error) Row {
	var oe *outcomeError
	if errors.As(err, &oe) {
		return Row{Outcome: oe.outcome, Error: oe.msg}
	}
	return Row{Outcome: OutcomeFailed, Error: err.Error()}
}

func failed(format string, a ...any) Row {
	return Row{Outcome: OutcomeFailed, Error: fmt.Sprintf(format, a...)}
}

func invalid(format string, a ...any) Row {
	return Row{Outcome: OutcomeInvalidConfig, Error: fmt.Sprintf(format, a...)}
}
