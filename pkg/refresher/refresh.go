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

// refresh is docs/design.md §4 for one token: canStart → read → claim → precheck → call →
// nextDoc, here in that order, then persist → commit → label → publish (persist.go). The
// committed version is read before the claim (its quota policy is needed to claim) and
// pinned by the claim's generation condition. Every step returns an error; rowFor maps
// errors to outcomes in one place (outcome.go); the lease is released once, deferred.
func (t *tokenRun) refresh() Row {
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
	if err := t.precheck(raw); err != nil {
		return rowFor(err)
	}
	res, err := t.call(doc)
	to := t.nextVersion()
	if errors.Is(err, provider.ErrRejected) {
		// Another holder refreshing from the same version may have saved N (§4): look first.
		found, ferr := t.findVersion(to)
		if ferr != nil {
			return rowFor(ferr)
		}
		if found != nil {
			return t.settle(found, to)
		}
	}
	next, err := t.nextDoc(doc, res, err)
	if next == nil {
		return rowFor(err)
	}
	t.rotated = !next.RefreshToken.IsZero() && next.RefreshToken != doc.RefreshToken
	if err := t.persist(next, to); err != nil {
		if !errors.Is(err, secretstore.ErrVersionConflict) {
			return rowFor(err)
		}
		found, ferr := t.findVersion(to) // another holder saved N first: theirs is the truth
		if ferr != nil {
			return rowFor(ferr)
		}
		if found == nil {
			return failed("version %s exists with other content but cannot be read", to)
		}
		t.log.WarnContext(t.ctx, "another holder saved this version first; using it", "version", to)
		next = found
	}
	return t.settle(next, to)
}

// canStart: a refresh starts only when its persist budget plus one bounded provider call
// fit before the deadline. A token not started is deferred, not failed: nothing was
// claimed, so it stays due and the next run takes it (docs/design.md §5).
func (t *tokenRun) canStart() error {
	if left, ok := timeLeft(t.ctx); ok && left < t.e.minStart() {
		return &outcomeError{outcome: OutcomeDeferred,
			msg: fmt.Sprintf("not started: %s left in the invocation, a refresh needs %s (persist budget plus one provider call); the next run refreshes it", max(left, 0).Round(time.Millisecond), t.e.minStart())}
	}
	return nil
}

// readDoc reads and validates a private version. A bad document is invalid_config.
func (t *tokenRun) readDoc(versionID string) (*token.Private, error) {
	doc, _, err := t.readRaw(versionID)
	return doc, err
}

func (t *tokenRun) readRaw(versionID string) (*token.Private, []byte, error) {
	v, err := t.e.opts.Secrets.GetVersion(t.ctx, t.priv, versionID)
	if errors.Is(err, secretstore.ErrBinary) {
		return nil, nil, &outcomeError{outcome: OutcomeInvalidConfig, msg: fmt.Sprintf("private secret %s version %s: it holds SecretBinary; want the JSON private document as SecretString", t.priv, versionID)}
	}
	if err != nil {
		t.noteSecretsErr(err)
		return nil, nil, fmt.Errorf("read private version %s: %w", versionID, err)
	}
	raw := []byte(v.Value.Reveal())
	doc, err := token.ParsePrivate(raw)
	if err == nil {
		err = doc.Validate()
	}
	if err != nil {
		return nil, nil, &outcomeError{outcome: OutcomeInvalidConfig, msg: fmt.Sprintf("private secret %s version %s: %v", t.priv, versionID, err)}
	}
	return doc, raw, nil
}

// findVersion reads version id: the version another holder (or an interrupted refresh) may
// already have saved. Only Secrets Manager's not-found makes it absent (nil, nil); any other
// failed read, or a document of ours that does not parse, is an error, and the caller stops
// this token's work for the run (docs/design.md §4, "an error is not absence").
func (t *tokenRun) findVersion(id string) (*token.Private, error) {
	v, err := t.e.opts.Secrets.GetVersion(t.ctx, t.priv, id)
	if errors.Is(err, secretstore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		t.noteSecretsErr(err)
		return nil, fmt.Errorf("read version %s, which an interrupted refresh may have saved (nothing changed; the next run looks again): %w", id, err)
	}
	doc, err := token.ParsePrivate([]byte(v.Value.Reveal()))
	if err != nil {
		return nil, fmt.Errorf("version %s exists but does not parse (nothing changed; an operator must look): %w", id, err)
	}
	return doc, nil
}

// claimOrReserve takes the lease and one quota unit (step 1), or only the quota unit when the
// lease is already ours (recovery, adoption).
func (t *tokenRun) claimOrReserve() error {
	if t.holder != "" {
		return t.reserve()
	}
	return t.claimRefresh()
}

// reserve spends one more quota unit for another provider attempt.
func (t *tokenRun) reserve() error {
	q := t.quotaUnit()
	if q == nil {
		return nil
	}
	if err := t.e.opts.Ledger.ReserveQuota(t.ctx, *q); err != nil {
		return t.claimErr(err)
	}
	t.st.noteQuota(quotaSeen{key: q.Key, day: q.Day, limit: q.Limit})
	return nil
}

// precheck refuses a provider call whose result could not be stored (docs/design.md §4): the
// document near Secrets Manager's 64 KiB limit, or the write budget (which keeps the secret
// under the ~100 versions a day Secrets Manager accepts) used up. Recovery reaches here
// without plan's budget check, so it is asked again, of the same rule.
func (t *tokenRun) precheck(raw []byte) error {
	if len(raw)+sizeHeadroom > maxSecretSize {
		t.rel.Failure = "private document too large"
		t.rel.NextDueAt = t.e.now().Add(retryDelay(t.rec.ConsecutiveFailures + 1))
		return &outcomeError{outcome: OutcomeFailed, msg: fmt.Sprintf("not called: the private document is %d bytes; with a new token it may pass Secrets Manager's 64 KiB limit (remove unused fields)", len(raw))}
	}
	now := t.e.now()
	if free := budgetFreeAt(&t.rec, now); free.After(now) {
		t.rel.NextDueAt = free
		return &outcomeError{outcome: OutcomeNotDue, msg: fmt.Sprintf("not called: write budget of %d private versions in 24 h used; next refresh at %s", maxWrites(&t.rec), free.UTC().Format(time.RFC3339))}
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
	single := doc.Provider.Grant == token.GrantRefreshToken // a refresh token the call may spend
	backoff := t.e.opts.Backoff
	for attempt := 0; ; attempt++ {
		if single {
			if err := t.withinGrace(doc); err != nil {
				return nil, err
			}
		}
		if attempt > 0 {
			if err := t.reserve(); err != nil {
				t.rel.Failure = "quota ran out between attempts"
				return nil, err
			}
		}
		if err := t.confirmLease(); err != nil {
			return nil, err
		}
		// No provider call starts without time left, inside the lease, to persist its answer.
		callTimeout, err := t.callTimeout(attempt)
		if err != nil {
			return nil, err
		}
		if single && t.presentedAt.IsZero() {
			if err := t.markPresented(); err != nil {
				return nil, err
			}
			if callTimeout, err = t.callTimeout(attempt); err != nil {
				return nil, err // marked but not sent: the release says unspent and removes the mark
			}
		}
		callCtx, cancel := context.WithTimeout(t.ctx, callTimeout)
		res, err := client.Refresh(callCtx, doc.RefreshToken)
		cancel()
		var pe *provider.Error
		if errors.As(err, &pe) && pe.Unanswered {
			// The request went out and no answer came back: the provider may have rotated.
			t.mayBeSpent, t.maybeReached = true, true
		}
		if err == nil || !errors.Is(err, provider.ErrTransient) || attempt+1 >= t.e.opts.Attempts {
			return res, err
		}
		t.log.WarnContext(t.ctx, "provider attempt failed; retrying with the same refresh token", "attempt", attempt+1, "error", err.Error())
		if !wait(t.ctx, backoff) {
			return nil, err
		}
		backoff *= 2
	}
}

// nextDoc maps the provider's answer to the version to persist, or to nil and the error
// that says why nothing is written.
func (t *tokenRun) nextDoc(doc *token.Private, res *provider.Result, err error) (*token.Private, error) {
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
		next.Status, next.StatusReason = token.StatusNeedsReauth, t.rejectedReason(err)
		return next, nil

	case errors.As(err, new(*graceOverError)):
		// Given up without a call: the token may be spent and cannot be presented again.
		next.Status, next.StatusReason = token.StatusNeedsReauth, interruptedReason+" ("+err.Error()+")"
		t.log.WarnContext(t.ctx, "refresh token not presented again: the provider's reuse grace is over", "error", err.Error())
		return next, nil

	case errors.Is(err, provider.ErrThrottled):
		until := t.throttledUntil(err)
		t.markThrottled(until)
		t.rel.Failure, t.rel.NextDueAt = throttledFailure, until
		return nil, &outcomeError{outcome: OutcomeThrottled, msg: "provider throttled until " + until.UTC().Format(time.RFC3339)}
	}
	if errors.Is(err, provider.ErrMalformed) {
		t.mayBeSpent, t.maybeReached = true, true // a garbled 2xx may still have rotated the token
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

// callTimeout is how long the next provider call may take: it must end, inside the lease,
// with time left to persist its answer.
func (t *tokenRun) callTimeout(attempt int) (time.Duration, error) {
	d := min(t.e.opts.ProviderTimeout, t.leaseLeft()-t.e.opts.PersistBudget)
	if d >= min(t.e.opts.ProviderTimeout, minProviderCall) {
		return d, nil
	}
	if attempt == 0 {
		// Nothing was sent: like canStart, the deadline came first (the claim and the read
		// took what was left). The token stays due for the next run.
		return 0, &outcomeError{outcome: OutcomeDeferred, msg: "not started: not enough time left in the lease for a provider call and the writes after it; the next run refreshes it"}
	}
	return 0, errors.New("not enough time left in the lease for a provider call and the writes after it")
}

// markPresented records in the in-flight record, before the first request carrying the
// refresh token is sent, that it is about to be presented (ledger.MarkPresented): a
// recovery that finds the mark and no saved version knows the provider may have rotated it.
func (t *tokenRun) markPresented() error {
	now := t.e.now()
	p := ledger.Presenting{Name: t.name, Holder: t.holder, Generation: t.rec.Generation, To: t.nextVersion(), At: now}
	if left, ok := timeLeft(t.ctx); ok {
		// Until then this invocation may still escrow what the provider answers (the escrow
		// is tried for escrowWriteTime past the deadline): a recovery waits for it.
		p.Until = now.Add(left + escrowWriteTime)
	}
	err := t.e.opts.Ledger.MarkPresented(t.ctx, p)
	if errors.Is(err, ledger.ErrLeaseLost) {
		t.leaseGone()
		return errLeaseLostBeforeCall
	}
	if err != nil {
		return fmt.Errorf("mark the refresh token presented (nothing was sent to the provider): %w", err)
	}
	t.presentedAt, t.presentedBy, t.holderUntil, t.markedHere = now, t.holder, p.Until, true
	return nil
}

// graceOverError: the refresh token may already have been spent by a request whose answer
// was never saved, and the provider's reuse grace since then is over. Presenting it again
// would be a reuse, which a provider with reuse detection answers by revoking the chain
// (RFC 9700 §4.14.2), so it is not presented: the token goes to needs_reauth without a call.
type graceOverError struct {
	presentedAt time.Time
	grace       time.Duration
}

func (e *graceOverError) Error() string {
	return fmt.Sprintf("the refresh token may have been spent by a request sent at %s whose answer was never saved; the provider's reuse grace (%s) is over, so it is not presented again",
		e.presentedAt.UTC().Format(time.RFC3339), e.grace)
}

// withinGrace: a refresh token that may have reached the provider unanswered is presented
// again only while now, plus the clock skew, is inside the provider's reuse grace from the
// first presentation (docs/design.md §4, recovery).
func (t *tokenRun) withinGrace(doc *token.Private) error {
	if !t.maybeReached {
		return nil
	}
	grace := doc.Provider.ReuseGrace
	now := t.e.now()
	if now.Add(t.e.opts.ClockSkew).Before(t.presentedAt.Add(grace)) {
		return nil
	}
	if !t.markedHere && now.Before(t.holderUntil.Add(t.e.opts.ClockSkew)) {
		// The invocation that presented it may still be running: it escrows what the
		// provider gave it, or takes its mark back if it never sent. Wait for it.
		return &outcomeError{outcome: OutcomeFailed, msg: fmt.Sprintf("waiting until %s for the invocation that presented the refresh token at %s: it may still save the provider's answer; nothing was presented again",
			t.holderUntil.Add(t.e.opts.ClockSkew).UTC().Format(time.RFC3339), t.presentedAt.UTC().Format(time.RFC3339))}
	}
	return &graceOverError{presentedAt: t.presentedAt, grace: grace}
}
