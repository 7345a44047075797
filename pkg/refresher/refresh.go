package refresher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/provider"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// maxSecretSize is Secrets Manager's limit on a secret value; sizeHeadroom is what a
// refresh may add (new access and refresh tokens), checked before the provider is called.
const (
	maxSecretSize = 64 << 10
	sizeHeadroom  = 16 << 10
)

// refresh is docs/design.md §4 for one token: claim → read → call → persist → commit → label →
// publish. The committed version is read before the claim (its quota policy is needed to
// claim) and pinned by the claim's generation condition. Every step returns an error; rowFor
// maps errors to outcomes in one place; the lease is released once, deferred.
// interrupted: we hold the lease of a recovery and the old refresh token may be spent.
func (t *tokenRun) refresh(interrupted bool) Row {
	defer t.release() // a no-op once the commit released the lease
	if err := t.canStart(); err != nil {
		return rowFor(err)
	}
	doc, raw, err := t.readRaw(t.rec.VersionID)
	if err != nil {
		return rowFor(err)
	}
	t.doc = doc
	t.quota, t.hasQuota = doc.Quota()
	if err := t.claimOrReserve(); err != nil {
		return rowFor(err)
	}
	if err := t.precheck(doc, raw); err != nil {
		return rowFor(err)
	}
	res, err := t.call(doc)
	to := NextVersion(t.rec.VersionID, t.rec.Generation+1)
	if errors.Is(err, provider.ErrRejected) {
		// Another holder refreshing from the same version may have saved N (§4): look first.
		if found, ok := t.findVersion(to); ok {
			return t.settle(found, to)
		}
	}
	next, err := t.nextDoc(doc, res, err, interrupted)
	if next == nil {
		return rowFor(err)
	}
	if err := t.persist(next, to); err != nil {
		if !errors.Is(err, secretstore.ErrVersionConflict) {
			return rowFor(err)
		}
		found, ok := t.findVersion(to) // another holder saved N first: theirs is the truth
		if !ok {
			return failed("version %s exists with other content but cannot be read", to)
		}
		t.log.WarnContext(t.ctx, "another holder saved this version first; using it", "version", to)
		next = found
	}
	return t.settle(next, to)
}

// settle is steps 5–7 for version `to`, already in Secrets Manager.
func (t *tokenRun) settle(next *token.Private, to string) Row {
	if err := t.commit(next, to); err != nil {
		return rowFor(err)
	}
	t.label(to, t.rec.PrevVersionID)
	if err := t.publish(next); err != nil {
		return rowFor(err)
	}
	return t.doneRow(next) // finishRow adds t.note
}

// canStart: a refresh starts only when its persist budget plus one bounded provider call
// fit before the deadline, and not after Secrets Manager throttled this run.
func (t *tokenRun) canStart() error {
	if t.st.smThrottled.Load() {
		return &outcomeError{outcome: OutcomeFailed, msg: "not started: Secrets Manager throttled this run's writes; the next run refreshes it"}
	}
	if left, ok := timeLeft(t.ctx); ok && left < t.e.minStart() {
		return &outcomeError{outcome: OutcomeFailed,
			msg: fmt.Sprintf("not started: %s left in the invocation, a refresh needs %s (persist budget plus one provider call)", left.Round(time.Millisecond), t.e.minStart())}
	}
	return nil
}

// claimOrReserve takes the lease and one quota unit (step 1), or only the quota unit when the
// lease is already ours (recovery, adoption).
func (t *tokenRun) claimOrReserve() error {
	if t.holder != "" {
		return t.reserve()
	}
	return t.claim(true, false)
}

// claim takes the lease (and a quota unit when withQuota) in one transaction.
func (t *tokenRun) claim(withQuota, expectInflight bool) error {
	if t.holder != "" {
		return nil
	}
	holder := newHolder(t.ctx)
	d := t.e.refreshBudget()
	if left, ok := timeLeft(t.ctx); ok && left < d {
		d = left // the lease covers what this refresh may take, never past the deadline
	}
	now := t.e.now()
	c := ledger.Claim{
		Name: t.name, Holder: holder, Generation: t.rec.Generation,
		ExpectInflight: expectInflight, From: t.rec.VersionID, To: NextVersion(t.rec.VersionID, t.rec.Generation+1),
		LeaseUntil: now.Add(d + t.e.opts.ClockSkew),
	}
	if withQuota && t.hasQuota {
		day := ledger.Day(now, t.quota.Location)
		c.Quota = &ledger.QuotaReservation{Key: t.quota.Key, Day: day, Limit: t.quota.Limit}
	}
	if err := t.e.opts.Ledger.Claim(t.ctx, c); err != nil {
		return t.claimErr(err)
	}
	t.holder, t.fence = holder, time.Now().Add(d)
	t.rel = ledger.Release{}
	if c.Quota != nil {
		t.st.noteQuota(quotaSeen{key: t.quota.Key, day: c.Quota.Day, limit: t.quota.Limit})
	}
	return nil
}

func (t *tokenRun) claimErr(err error) error {
	var th *ledger.ThrottledError
	switch {
	case errors.Is(err, ledger.ErrLeaseHeld):
		return &outcomeError{outcome: OutcomeLeaseHeld}
	case errors.Is(err, ledger.ErrQuotaExhausted):
		return &outcomeError{outcome: OutcomeQuotaExhausted, msg: fmt.Sprintf("daily quota %s of %d used up", t.quota.Key, t.quota.Limit)}
	case errors.As(err, &th):
		return &outcomeError{outcome: OutcomeThrottled, msg: "provider throttled until " + th.Until.UTC().Format(time.RFC3339)}
	}
	return fmt.Errorf("claim: %w", err)
}

// reserve spends one more quota unit for another provider attempt.
func (t *tokenRun) reserve() error {
	if !t.hasQuota {
		return nil
	}
	q := ledger.QuotaReservation{Key: t.quota.Key, Day: ledger.Day(t.e.now(), t.quota.Location), Limit: t.quota.Limit}
	if err := t.e.opts.Ledger.ReserveQuota(t.ctx, q); err != nil {
		return t.claimErr(err)
	}
	t.st.noteQuota(quotaSeen{key: q.Key, day: q.Day, limit: q.Limit})
	return nil
}

// release gives the lease back without a commit, with what the steps recorded in t.rel.
// After a commit (which released the lease) it does nothing.
func (t *tokenRun) release() {
	if t.holder == "" {
		return
	}
	r := t.rel
	r.Name, r.Holder = t.name, t.holder
	t.holder = ""
	rec, err := t.e.opts.Ledger.Release(t.ctx, r)
	if err != nil {
		t.log.WarnContext(t.ctx, "release lease failed; it expires by itself", "error", err.Error())
		return
	}
	t.rec = rec
}

// precheck refuses a provider call whose result could not be stored (docs/design.md §4): the
// document near Secrets Manager's 64 KiB limit, or the write budget (which keeps the secret
// under the ~100 versions a day Secrets Manager accepts) used up.
func (t *tokenRun) precheck(doc *token.Private, raw []byte) error {
	if len(raw)+sizeHeadroom > maxSecretSize {
		t.rel.Failure = "private document too large"
		t.rel.NextDueAt = t.e.now().Add(retryDelay(t.rec.ConsecutiveFailures + 1))
		return &outcomeError{outcome: OutcomeFailed, msg: fmt.Sprintf("not called: the private document is %d bytes; with a new token it may pass Secrets Manager's 64 KiB limit (remove unused fields)", len(raw))}
	}
	now := t.e.now()
	if free := token.BudgetFreeAt(now, t.rec.Writes, doc.MaxWrites()); free.After(now) {
		t.rel.NextDueAt = free
		return &outcomeError{outcome: OutcomeNotDue, msg: fmt.Sprintf("not called: write budget of %d private versions in 24 h used; next refresh at %s", doc.MaxWrites(), free.UTC().Format(time.RFC3339))}
	}
	return nil
}

// call is step 3: the provider, with the same refresh token, retried on transient failures
// while the lease leaves time to persist what it returns. Every attempt spends quota.
func (t *tokenRun) call(doc *token.Private) (*provider.Result, error) {
	client, err := provider.New(doc.Provider, provider.Options{HTTPClient: t.e.opts.HTTPClient, Timeout: t.e.opts.ProviderTimeout, Now: t.e.now})
	if err != nil {
		return nil, &outcomeError{outcome: OutcomeInvalidConfig, msg: err.Error()}
	}
	backoff := t.e.opts.Backoff
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := t.reserve(); err != nil {
				t.rel.Failure = "quota ran out between attempts"
				return nil, err
			}
		}
		// No provider call starts without time left, inside the lease, to persist its answer.
		callTimeout := min(t.e.opts.ProviderTimeout, time.Until(t.fence)-t.e.opts.PersistBudget)
		if callTimeout < min(t.e.opts.ProviderTimeout, minProviderCall) {
			return nil, errors.New("not enough time left in the lease for a provider call and the writes after it")
		}
		callCtx, cancel := context.WithTimeout(t.ctx, callTimeout)
		res, err := client.Refresh(callCtx, doc.RefreshToken)
		cancel()
		if err == nil || !errors.Is(err, provider.ErrTransient) || attempt+1 >= t.e.opts.Attempts {
			return res, err
		}
		t.rel.KeepInflight = true // a lost answer may still have rotated the token
		t.log.WarnContext(t.ctx, "provider attempt failed; retrying with the same refresh token", "attempt", attempt+1, "error", err.Error())
		if !wait(t.ctx, backoff) {
			return nil, err
		}
		backoff *= 2
	}
}

// nextDoc maps the provider's answer to the version to persist, or to nil and the error
// that says why nothing is written.
func (t *tokenRun) nextDoc(doc *token.Private, res *provider.Result, err error, interrupted bool) (*token.Private, error) {
	next := doc.Clone()
	next.Generation = t.rec.Generation + 1
	next.Remember(doc.RefreshToken)
	var pe *provider.Error
	switch {
	case err == nil:
		next.AccessToken, next.TokenType, next.ExpiresAt = res.AccessToken, res.TokenType, res.ExpiresAt
		if res.Scope != "" {
			next.Scope = res.Scope
		}
		if !res.RefreshToken.IsZero() {
			next.RefreshToken = res.RefreshToken
		}
		if res.Rotated || !res.RefreshExpiresAt.IsZero() {
			next.RefreshExpiresAt = res.RefreshExpiresAt
		}
		next.Status, next.StatusReason = token.StatusActive, ""
		next.Remember(next.RefreshToken)
		return next, nil

	case errors.As(err, &pe) && errors.Is(err, provider.ErrMalformed) && !pe.NewRefreshToken.IsZero():
		// The old refresh token is spent: keep the new one, publish no access token.
		next.RefreshToken, next.RefreshExpiresAt = pe.NewRefreshToken, pe.RefreshExpiresAt
		next.AccessToken, next.ExpiresAt = "", time.Time{}
		next.StatusReason = "provider answer unusable, new refresh token kept: " + rejection(err)
		next.Remember(next.RefreshToken)
		return next, nil

	case errors.Is(err, provider.ErrRejected):
		reason := "provider rejected the refresh: " + rejection(err)
		if interrupted || t.rel.KeepInflight { // an earlier attempt may have rotated it
			reason = interruptedReason + " (" + rejection(err) + ")"
		}
		next.Status, next.StatusReason = token.StatusNeedsReauth, reason
		return next, nil

	case errors.Is(err, provider.ErrThrottled):
		until := t.throttledUntil(err)
		t.markThrottled(until)
		t.rel.Failure, t.rel.NextDueAt = "throttled by provider", until
		return nil, &outcomeError{outcome: OutcomeThrottled, msg: "provider throttled until " + until.UTC().Format(time.RFC3339)}
	}
	if errors.Is(err, provider.ErrMalformed) {
		t.rel.KeepInflight = true // a garbled 2xx may still have rotated the token
	}
	var oe *outcomeError
	if errors.As(err, &oe) {
		return nil, err
	}
	// A failure: counted, retried later with backoff, the published token untouched.
	t.rel.Failure = err.Error()
	t.rel.NextDueAt = t.e.now().Add(retryDelay(t.rec.ConsecutiveFailures + 1))
	return nil, err
}

// retryDelay backs a failing token off: 5 min doubling to 1 h.
func retryDelay(failures int) time.Duration {
	d := 5 * time.Minute
	for i := 1; i < failures && d < time.Hour; i++ {
		d *= 2
	}
	return min(d, time.Hour)
}

func rejection(err error) string {
	var pe *provider.Error
	if errors.As(err, &pe) {
		s := fmt.Sprintf("%d", pe.Status)
		if pe.Code != "" {
			s += " " + pe.Code
		}
		if pe.Message != "" {
			s += ": " + pe.Message
		}
		return s
	}
	return err.Error()
}

// throttledUntil honours Retry-After; otherwise the next quota day, or the next reconcile.
func (t *tokenRun) throttledUntil(err error) time.Time {
	now := t.e.now()
	var pe *provider.Error
	if errors.As(err, &pe) && pe.RetryAfter > 0 {
		return now.Add(pe.RetryAfter)
	}
	if t.hasQuota {
		y, m, d := now.In(t.quota.Location).Date()
		return time.Date(y, m, d+1, 0, 0, 0, 0, t.quota.Location)
	}
	return now.Add(t.e.opts.ScheduleInterval)
}

// markThrottled records the throttle in every quota day it covers, so other tokens of the
// same quota wait too; the token's own next_due_at moves with the release either way.
func (t *tokenRun) markThrottled(until time.Time) {
	if !t.hasQuota {
		return
	}
	last := ledger.Day(until, t.quota.Location)
	for at := t.e.now(); ; at = at.Add(24 * time.Hour) {
		day := ledger.Day(at, t.quota.Location)
		if err := t.e.opts.Ledger.Throttle(t.ctx, t.quota.Key, day, until); err != nil {
			t.log.WarnContext(t.ctx, "recording the throttle failed", "error", err.Error())
		}
		if day >= last {
			return
		}
	}
}
