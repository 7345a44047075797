package refresher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
)

// The lease (docs/design.md §4): one holder per token at a time, taken by a claim, renewed
// while a new version is being saved, and ended by the commit, a release, or a refused
// renewal. t.holder is set exactly while this run holds it; t.fence is when it must stop
// writing under it.

// errTakenOver: the lease ended or a renewal failed; this holder writes nothing more.
var errTakenOver = errors.New("the lease ended before the new version was saved; the next run recovers it")

// claimRefresh takes the lease and one quota unit in one transaction (step 1 of a refresh).
func (t *tokenRun) claimRefresh() error { return t.claim(t.quotaUnit(), claimForRefresh) }

// claimLease takes the lease alone: to recover or adopt without a provider call.
func (t *tokenRun) claimLease() error { return t.claim(nil, claimForRefresh) }

// claimRepair takes the lease for a repair that writes no private version (label, publish):
// no refresh in flight is recorded, so none is left behind.
func (t *tokenRun) claimRepair() error { return t.claim(nil, claimForRepair) }

// claimPurpose says what a lease is taken for: a refresh (or recovery, adoption) records the
// refresh in flight; a repair writes no private version and records none.
type claimPurpose int

const (
	claimForRefresh claimPurpose = iota
	claimForRepair
)

// claim takes the lease, and quota unit q when not nil, in one transaction. It holds only on
// the record as read: the same generation, and a refresh in flight exactly when the record
// showed one (a recovery's claim).
func (t *tokenRun) claim(q *ledger.QuotaReservation, purpose claimPurpose) error {
	if t.holder != "" {
		return nil
	}
	holder := newHolder(t.ctx)
	d := t.e.refreshBudget()
	if left, ok := timeLeft(t.ctx); ok && left < d {
		d = left // the lease covers what this refresh may take, never past the deadline
	}
	c := ledger.Claim{
		Name: t.name, Holder: holder, Generation: t.rec.Generation,
		ExpectInflight: t.rec.Inflight != nil, LeaseOnly: purpose == claimForRepair && t.rec.Inflight == nil,
		From: t.rec.VersionID, To: t.nextVersion(),
		Quota: q,
	}
	// The lease runs from before the request was sent: an answer that arrives late
	// must not stretch it (docs/design.md §4, "a deadline is counted from before the
	// request").
	sentWall, sent := time.Now(), t.e.now()
	c.LeaseUntil = sent.Add(d + t.e.opts.ClockSkew)
	if err := t.e.opts.Ledger.Claim(t.ctx, c); err != nil {
		return t.claimErr(err)
	}
	t.holder, t.fence, t.leaseEnd = holder, sentWall.Add(d), sent.Add(d)
	t.claimedBy = holder
	// A slow answer may have come after the lease ended in the table (a stalled process, a
	// lease taken over): the lease is read again before the provider call.
	t.lateClaim = time.Since(sentWall) > slowClaim
	// A new lease starts a new refresh (settle may chain one after a commit): nothing of the
	// last one carries over, except an earlier holder's presentation of this refresh (a new
	// refresh has none): the token may be spent if it was presented or escrowed.
	t.presentedAt, t.maybeReached = t.rec.Inflight.Presented()
	t.mayBeSpent = t.rec.Interrupted() && (t.maybeReached || len(t.rec.Inflight.Escrow) > 0)
	t.escrowed = false
	t.presentedBy, t.holderUntil, t.markedHere = "", time.Time{}, false
	if t.maybeReached {
		t.presentedBy, t.holderUntil = t.rec.Inflight.PresentedBy, t.rec.Inflight.HolderUntil
	}
	t.rel = ledger.Release{}
	if q != nil {
		t.st.noteQuota(quotaSeen{key: q.Key, day: q.Day, limit: q.Limit})
	}
	return nil
}

// quotaUnit is the quota unit one provider attempt spends now; nil without a quota policy.
func (t *tokenRun) quotaUnit() *ledger.QuotaReservation {
	if !t.hasQuota {
		return nil
	}
	return &ledger.QuotaReservation{Key: t.quota.Key, Day: ledger.Day(t.e.now(), t.quota.Location), Limit: t.quota.Limit}
}

func newHolder(ctx context.Context) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	id := "local"
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		id = lc.AwsRequestID
	}
	return id + "/" + hex.EncodeToString(b[:])
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
	if t.leaseLeft() < t.e.opts.PersistBudget/2+ahead {
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
	if d < t.e.opts.PersistBudget/2 {
		return errTakenOver // the invocation ends before another write could finish
	}
	sentWall, sent := time.Now(), t.e.now() // counted from before the request, like the claim
	if _, err := t.e.opts.Ledger.Renew(t.ctx, t.name, t.holder, t.rec.Generation, sent.Add(d+t.e.opts.ClockSkew)); err != nil {
		t.log.WarnContext(t.ctx, "lease renewal refused; writing nothing more", "error", err.Error())
		t.leaseGone()
		return errTakenOver
	}
	t.fence, t.leaseEnd = sentWall.Add(d), sent.Add(d)
	t.log.InfoContext(t.ctx, "lease renewed while saving the new version")
	return nil
}

// slowClaim is the claim round trip past which the lease is confirmed (one consistent read)
// before the provider is called; a claim normally answers in milliseconds.
const slowClaim = 100 * time.Millisecond

// errLeaseLostBeforeCall: a late claim's lease was already taken over; nothing was called.
var errLeaseLostBeforeCall = errors.New("lease lost before the provider call: another run took the refresh over (the claim's answer came late); the provider was not called")

// confirmLease reads the record (consistently) after a late claim answer: the provider is
// called only while the table still shows this holder's lease.
func (t *tokenRun) confirmLease() error {
	if !t.lateClaim {
		return nil
	}
	rec, err := t.e.opts.Ledger.Get(t.ctx, t.name)
	if err != nil {
		return fmt.Errorf("confirm the lease after a late claim answer (the provider was not called): %w", err)
	}
	if rec.LeaseHolder != t.holder || !rec.LeaseUntil.After(t.e.now()) {
		t.leaseGone()
		return errLeaseLostBeforeCall
	}
	t.lateClaim = false
	return nil
}

// leaseLeft is how long the lease still covers this holder: the earlier of its wall-clock
// fence and its end on the engine's clock.
func (t *tokenRun) leaseLeft() time.Duration {
	return min(time.Until(t.fence), t.leaseEnd.Sub(t.e.now()))
}

// release gives the lease back without a commit, with what the steps recorded in t.rel.
// After a commit (which released the lease) it does nothing.
func (t *tokenRun) release() {
	if t.holder == "" {
		return
	}
	r := t.rel
	r.Name, r.Holder = t.name, t.holder
	r.Unspent = !t.mayBeSpent // the in-flight record stays either way; only a commit removes it
	t.leaseGone()
	rec, err := t.e.opts.Ledger.Release(t.ctx, r)
	if r.Unspent && t.markedHere && (errors.Is(err, ledger.ErrLeaseLost) ||
		err == nil && rec.Inflight != nil && rec.Inflight.PresentedBy == r.Holder) {
		// Another run claimed meanwhile (and may have released already, so the release found
		// the lease free and marked nothing): take our mark back, so the token is not given
		// up for a request that was never sent.
		if uerr := t.e.opts.Ledger.Unmark(t.ctx, t.name, r.Holder, t.rec.Generation, t.nextVersion()); uerr != nil {
			t.log.WarnContext(t.ctx, "taking back the presentation mark failed", "error", uerr.Error())
		}
	}
	if err != nil {
		t.log.WarnContext(t.ctx, "release lease failed; it expires by itself", "error", err.Error())
		return
	}
	t.rec = rec
}

// leaseGone records that the lease is no longer ours — a commit ended it, another holder
// took it, or it was released — so nothing releases it again.
func (t *tokenRun) leaseGone() { t.holder = "" }

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
