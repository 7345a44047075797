package refresher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/provider"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// versionNamespace makes version ids deterministic: every holder that refreshes from
// version V at generation g computes the same N, so the first PutSecretValue wins and a
// second one with other content fails instead of forking the history.
var versionNamespace = uuid.MustParse("5f1d3c2e-8a7b-4c6d-9e0f-1a2b3c4d5e6f")

// NextVersion is the private version id a refresh from (from, generation-1) writes.
func NextVersion(from string, generation int64) string {
	return uuid.NewSHA1(versionNamespace, []byte(fmt.Sprintf("%s/%d", from, generation))).String()
}

// AccessToken is the idempotency token of the access-secret write for private version v.
func AccessToken(v string) string {
	return uuid.NewSHA1(versionNamespace, []byte("access/"+v)).String()
}

// interruptedReason is what a token says when its refresh token was spent by a refresh
// whose result never reached Secrets Manager.
const interruptedReason = "refresh interrupted before the new token was saved"

// tokenRun carries one token through one invocation.
type tokenRun struct {
	e      *Engine
	ctx    context.Context
	log    *slog.Logger
	name   string
	priv   string
	access string

	rec    ledger.Record
	holder string // non-empty while we hold the lease

	quota    token.Quota
	hasQuota bool
	reserved int // quota units this run took

	doc *token.Private // the committed document the row reports on
}

func (e *Engine) runToken(ctx context.Context, name string, force bool) Row {
	t := &tokenRun{
		e: e, ctx: ctx, name: name,
		log:    e.log.With("token", name),
		priv:   e.privateName(name),
		access: e.accessName(name),
	}
	row := t.run(force)
	row.Name = name
	if t.doc != nil {
		if !t.doc.ExpiresAt.IsZero() {
			row.ExpiresAt = t.doc.ExpiresAt.UTC().Format(time.RFC3339)
		}
		row.Generation = t.rec.Generation
	}
	t.emitMetrics(row)
	attrs := []any{"outcome", row.Outcome, "generation", row.Generation}
	if row.Error != "" {
		attrs = append(attrs, "error", row.Error)
	}
	level := slog.LevelInfo
	switch row.Outcome {
	case OutcomeFailed, OutcomeNeedsReauth, OutcomeInvalidConfig:
		level = slog.LevelError
	case OutcomeThrottled, OutcomeQuotaExhausted:
		level = slog.LevelWarn
	}
	t.log.Log(ctx, level, "token done", attrs...)
	return row
}

func failed(format string, a ...any) Row {
	return Row{Outcome: OutcomeFailed, Error: fmt.Sprintf(format, a...)}
}

func invalid(format string, a ...any) Row {
	return Row{Outcome: OutcomeInvalidConfig, Error: fmt.Sprintf(format, a...)}
}

func (t *tokenRun) now() time.Time { return t.e.now() }

// run is the decision procedure of DESIGN.md §3 for one token.
func (t *tokenRun) run(force bool) Row {
	// AWSCURRENT tells whether someone else wrote a version; the committed document itself
	// is read by the record's VersionId (Secrets Manager reads are eventually consistent).
	current, err := t.e.opts.Secrets.GetCurrent(t.ctx, t.priv)
	if errors.Is(err, secretstore.ErrNotFound) {
		return invalid("private secret %s not found", t.priv)
	}
	if err != nil {
		return failed("read private secret: %v", err)
	}
	t.rec, err = t.e.opts.Ledger.Get(t.ctx, t.name)
	if errors.Is(err, ledger.ErrNotFound) {
		if row, ok := t.adoptNew(current.ID); !ok {
			return row
		}
	} else if err != nil {
		return failed("read token record: %v", err)
	}

	if t.leaseHeldByOther() {
		return Row{Outcome: OutcomeLeaseHeld}
	}

	doc, row, ok := t.readDoc(t.rec.VersionID)
	if !ok {
		return row
	}

	// An AWSCURRENT version we did not write, other than the base we already adopted, is an
	// operator's edit (new client secret, re-authorised refresh token): it becomes the new
	// base. Our own versions carry their own version id; an edit copies a stale one.
	labelFrom := ""
	if current.ID != t.rec.VersionID {
		switch {
		case current.ID == t.rec.PrevVersionID || current.ID == doc.BaseVersionID:
			labelFrom = current.ID // committed, label not moved yet
		default:
			edited, row, ok := t.readDoc(current.ID)
			if !ok {
				return Row{Outcome: OutcomeInvalidConfig, Error: "operator edit not adopted: " + row.Error}
			}
			if edited.VersionID == current.ID {
				labelFrom = current.ID // one of ours that AWSCURRENT was left on
				break
			}
			row, ok = t.adoptEdit(current.ID, edited)
			if !ok {
				return row
			}
			force = force || row.Outcome == OutcomeNeedsReauth // re-seeded after needs_reauth: prove the new credentials now
			doc = edited
			doc.Status = token.StatusActive
		}
	}
	t.doc = doc
	t.quota, t.hasQuota = doc.Quota()

	if t.rec.Inflight != nil {
		return t.recover()
	}

	publishLag := t.rec.PublishedGeneration < t.rec.Generation && t.publishable(doc)
	if doc.Status != token.StatusActive {
		if labelFrom != "" || publishLag {
			if row, ok := t.claim(false, false); !ok {
				return row
			}
			if row := t.rollForward(labelFrom, publishLag); row.Outcome == OutcomeFailed {
				return row
			}
		}
		return Row{Outcome: OutcomeNeedsReauth, Error: reasonOf(doc)}
	}

	due, why := doc.Due(t.now(), t.e.DefaultMargin())
	if force && !due {
		due, why = true, "forced"
	}
	if !due && labelFrom == "" && !publishLag {
		return Row{Outcome: OutcomeNotDue}
	}
	if row, ok := t.claim(due, false); !ok {
		return row
	}
	if !due {
		return t.rollForward(labelFrom, publishLag)
	}
	if labelFrom != "" {
		// Keep AWSCURRENT one step behind at most, so the chain is never skipped.
		if err := t.e.opts.Secrets.MoveCurrent(t.ctx, t.priv, t.rec.VersionID, labelFrom); err != nil && !errors.Is(err, secretstore.ErrStageMoved) {
			t.log.WarnContext(t.ctx, "repairing AWSCURRENT failed; retried next run", "error", err.Error())
		}
	}
	t.log.InfoContext(t.ctx, "refreshing", "reason", why)
	return t.refresh(false)
}

func reasonOf(doc *token.Private) string {
	if doc.StatusReason != "" {
		return doc.StatusReason
	}
	return "a person must re-authorise this token"
}

func (t *tokenRun) leaseHeldByOther() bool {
	return t.rec.LeaseHolder != "" && t.rec.LeaseUntil.After(t.now())
}

// publishable: an active document with a token, or any non-active one (consumers must see
// needs_reauth).
func (t *tokenRun) publishable(doc *token.Private) bool {
	return !doc.AccessToken.IsZero() || doc.Status != token.StatusActive
}

// readDoc reads and validates a private version. A bad document is invalid_config and
// nothing is written.
func (t *tokenRun) readDoc(versionID string) (*token.Private, Row, bool) {
	v, err := t.e.opts.Secrets.GetVersion(t.ctx, t.priv, versionID)
	if err != nil {
		return nil, failed("read private version %s: %v", versionID, err), false
	}
	doc, err := token.ParsePrivate([]byte(v.Value.Reveal()))
	if err == nil {
		err = doc.Validate()
	}
	if err != nil {
		return nil, invalid("private secret %s version %s: %v", t.priv, versionID, err), false
	}
	if t.rec.Status != "" {
		doc.Status = t.rec.Status // the record is authoritative (an adopted edit is active)
	}
	return doc, Row{}, true
}

// adoptNew creates the token record for a private secret seen for the first time.
func (t *tokenRun) adoptNew(currentID string) (Row, bool) {
	saved := t.rec
	t.rec = ledger.Record{}
	doc, row, ok := t.readDoc(currentID)
	if !ok {
		t.rec = saved
		return row, false
	}
	rec := ledger.Record{
		Name:                t.name,
		VersionID:           currentID,
		Generation:          doc.Generation,
		PublishedGeneration: -1,
		Status:              doc.Status,
		StatusReason:        doc.StatusReason,
		ExpiresAt:           doc.ExpiresAt,
		NextDueAt:           doc.NextDue(t.e.DefaultMargin()),
	}
	err := t.e.opts.Ledger.Create(t.ctx, rec)
	if err != nil && !errors.Is(err, ledger.ErrExists) {
		return failed("create token record: %v", err), false
	}
	if err == nil {
		t.log.InfoContext(t.ctx, "adopted private secret", "version", currentID)
	}
	t.rec, err = t.e.opts.Ledger.Get(t.ctx, t.name)
	if err != nil {
		return failed("read token record: %v", err), false
	}
	return Row{}, true
}

// adoptEdit makes an operator's AWSCURRENT version the committed base, active again.
// The returned row's outcome is needs_reauth when the token was in that state before.
// An interrupted refresh in flight is superseded: the operator's document wins.
func (t *tokenRun) adoptEdit(versionID string, doc *token.Private) (Row, bool) {
	if t.rec.Inflight != nil {
		t.log.WarnContext(t.ctx, "an operator edit supersedes an interrupted refresh", "inflight_version", t.rec.Inflight.To)
	}
	if row, ok := t.claim(false, t.rec.Inflight != nil); !ok {
		return row, false
	}
	before := t.rec.Status
	c := ledger.Commit{
		Name: t.name, Holder: t.holder, FromGeneration: t.rec.Generation,
		From: t.rec.VersionID, To: versionID,
		Status:    token.StatusActive,
		ExpiresAt: doc.ExpiresAt, NextDueAt: doc.NextDue(t.e.DefaultMargin()),
	}
	if err := t.commit(c); err != nil {
		return failed("adopt operator edit: %v", err), false
	}
	t.holder = "" // the commit released the lease
	t.log.InfoContext(t.ctx, "adopted operator edit", "version", versionID, "previous_status", before)
	t.rec.PrevVersionID, t.rec.VersionID = t.rec.VersionID, versionID
	t.rec.Generation++
	t.rec.Status, t.rec.StatusReason = token.StatusActive, ""
	t.rec.Inflight = nil
	if before == token.StatusNeedsReauth {
		return Row{Outcome: OutcomeNeedsReauth}, true
	}
	return Row{}, true
}

// claim takes the lease (and a quota unit when withQuota) in one transaction (step 1).
func (t *tokenRun) claim(withQuota, expectInflight bool) (Row, bool) {
	if t.holder != "" {
		if withQuota {
			return t.reserve()
		}
		return Row{}, true
	}
	holder := newHolder(t.ctx)
	from := t.rec.VersionID
	to := NextVersion(from, t.rec.Generation+1)
	c := ledger.Claim{
		Name: t.name, Holder: holder, Generation: t.rec.Generation,
		ExpectInflight: expectInflight, From: from, To: to,
		LeaseUntil: t.leaseUntil(),
	}
	var day string
	if withQuota && t.hasQuota {
		day = ledger.Day(t.now(), t.quota.Location)
		c.Quota = &ledger.QuotaReservation{Key: t.quota.Key, Day: day, Limit: t.quota.Limit}
	}
	err := t.e.opts.Ledger.Claim(t.ctx, c)
	if err != nil {
		return t.claimFailed(err), false
	}
	t.holder = holder
	if c.Quota != nil {
		t.reserved++
	}
	return Row{}, true
}

func (t *tokenRun) claimFailed(err error) Row {
	var th *ledger.ThrottledError
	switch {
	case errors.Is(err, ledger.ErrLeaseHeld):
		return Row{Outcome: OutcomeLeaseHeld}
	case errors.Is(err, ledger.ErrQuotaExhausted):
		return Row{Outcome: OutcomeQuotaExhausted, Error: fmt.Sprintf("daily quota %s of %d used up", t.quota.Key, t.quota.Limit)}
	case errors.As(err, &th):
		return Row{Outcome: OutcomeThrottled, Error: "provider throttled until " + th.Until.UTC().Format(time.RFC3339)}
	}
	return failed("claim: %v", err)
}

// reserve spends one more quota unit for another provider attempt.
func (t *tokenRun) reserve() (Row, bool) {
	if !t.hasQuota {
		return Row{}, true
	}
	q := ledger.QuotaReservation{Key: t.quota.Key, Day: ledger.Day(t.now(), t.quota.Location), Limit: t.quota.Limit}
	if err := t.e.opts.Ledger.ReserveQuota(t.ctx, q); err != nil {
		return t.claimFailed(err), false
	}
	t.reserved++
	return Row{}, true
}

// leaseUntil is the time one refresh may take, capped at the invocation's deadline, plus
// clock skew: a crashed holder is recovered within about a minute, not hours.
func (t *tokenRun) leaseUntil() time.Time {
	d := t.e.refreshBudget()
	if left, ok := t.e.timeLeft(t.ctx); ok && left < d {
		d = left
	}
	return t.now().Add(d + t.e.opts.ClockSkew)
}

// release gives the lease back without a commit.
func (t *tokenRun) release(r ledger.Release) {
	if t.holder == "" {
		return
	}
	r.Name, r.Holder = t.name, t.holder
	if err := t.e.opts.Ledger.Release(t.ctx, r); err != nil {
		t.log.WarnContext(t.ctx, "release lease failed; it expires by itself", "error", err.Error())
	}
	t.holder = ""
}

// rollForward finishes steps 6 and 7 of an already committed version.
func (t *tokenRun) rollForward(labelFrom string, publish bool) Row {
	defer t.release(ledger.Release{})
	if labelFrom != "" {
		if err := t.e.opts.Secrets.MoveCurrent(t.ctx, t.priv, t.rec.VersionID, labelFrom); err != nil && !errors.Is(err, secretstore.ErrStageMoved) {
			return failed("label committed version: %v", err)
		}
	}
	if publish {
		if err := t.publish(t.doc, t.rec.Generation, t.rec.VersionID); err != nil {
			return failed("publish: %v", err)
		}
	}
	if t.doc.Status != token.StatusActive {
		return Row{Outcome: OutcomeNeedsReauth, Error: reasonOf(t.doc)}
	}
	return Row{Outcome: OutcomeNotDue}
}

// recover settles a refresh whose holder died (DESIGN.md §3, recovery).
func (t *tokenRun) recover() Row {
	if row, ok := t.claim(false, true); !ok {
		return row
	}
	to := NextVersion(t.rec.VersionID, t.rec.Generation+1)
	if doc, ok := t.findVersion(to); ok {
		t.log.InfoContext(t.ctx, "rolling forward an interrupted refresh", "version", to)
		return t.commitAndPublish(doc, to, outcomeFor(doc))
	}
	if t.doc.Status != token.StatusActive {
		t.release(ledger.Release{})
		return Row{Outcome: OutcomeNeedsReauth, Error: reasonOf(t.doc)}
	}
	t.log.InfoContext(t.ctx, "retrying an interrupted refresh with the old refresh token")
	if row, ok := t.reserve(); !ok {
		t.release(ledger.Release{KeepInflight: true})
		return row
	}
	return t.refresh(true)
}

func outcomeFor(doc *token.Private) string {
	if doc.Status == token.StatusActive {
		return OutcomeRefreshed
	}
	return OutcomeNeedsReauth
}

// findVersion reads version id if it exists and is a valid document.
func (t *tokenRun) findVersion(id string) (*token.Private, bool) {
	v, err := t.e.opts.Secrets.GetVersion(t.ctx, t.priv, id)
	if err != nil {
		return nil, false
	}
	doc, err := token.ParsePrivate([]byte(v.Value.Reveal()))
	if err != nil {
		return nil, false
	}
	return doc, true
}

// refresh is steps 3–7 with the lease held and the first quota unit reserved.
// interrupted: a previous holder may already have spent the refresh token.
func (t *tokenRun) refresh(interrupted bool) Row {
	doc := t.doc
	client, err := provider.New(doc.Provider, provider.Options{
		HTTPClient: t.e.opts.HTTPClient,
		Timeout:    t.e.opts.ProviderTimeout,
		Now:        t.e.now,
	})
	if err != nil {
		t.release(ledger.Release{KeepInflight: interrupted})
		return invalid("%v", err)
	}
	to := NextVersion(t.rec.VersionID, t.rec.Generation+1)
	maybeSpent := interrupted
	var res *provider.Result
	backoff := t.e.opts.Backoff
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if row, ok := t.reserve(); !ok {
				t.release(ledger.Release{KeepInflight: maybeSpent, Failure: "quota ran out between attempts"})
				return row
			}
		}
		// No provider call starts without time left to persist what it returns.
		callTimeout := t.e.opts.ProviderTimeout
		if left, ok := t.e.timeLeft(t.ctx); ok {
			if left-t.e.opts.PersistBudget < callTimeout {
				callTimeout = left - t.e.opts.PersistBudget
			}
			if callTimeout <= 0 {
				err = errors.New("not enough time left for a provider call and the writes after it")
				break
			}
		}
		callCtx, cancel := context.WithTimeout(t.ctx, callTimeout)
		res, err = client.Refresh(callCtx, doc.RefreshToken)
		cancel()
		if err == nil || !(errors.Is(err, provider.ErrTransient) || errors.Is(err, provider.ErrMalformed)) {
			break
		}
		maybeSpent = true // a lost or garbled answer may still have rotated the token
		if attempt+1 >= t.e.opts.Attempts {
			break
		}
		t.log.WarnContext(t.ctx, "provider attempt failed; retrying with the same refresh token", "attempt", attempt+1, "error", err.Error())
		if !wait(t.ctx, backoff) {
			break
		}
		backoff *= 2
	}

	switch {
	case err == nil:
		next := doc.Clone()
		next.AccessToken = res.AccessToken
		next.TokenType = res.TokenType
		next.ExpiresAt = res.ExpiresAt
		if res.Scope != "" {
			next.Scope = res.Scope
		}
		if !res.RefreshToken.IsZero() {
			next.RefreshToken = res.RefreshToken
		}
		if res.Rotated || !res.RefreshExpiresAt.IsZero() {
			next.RefreshExpiresAt = res.RefreshExpiresAt
		}
		next.Generation = t.rec.Generation + 1
		next.Status, next.StatusReason = token.StatusActive, ""
		return t.persist(next, to)

	case errors.Is(err, provider.ErrRejected):
		// Another holder may have refreshed from the same version and saved N: look first.
		if found, ok := t.findVersion(to); ok {
			return t.commitAndPublish(found, to, outcomeFor(found))
		}
		reason := "provider rejected the refresh: " + rejection(err)
		if maybeSpent { // an earlier attempt (this run's or a crashed one's) may have rotated it
			reason = interruptedReason + " (" + rejection(err) + ")"
		}
		next := doc.Clone()
		next.Generation = t.rec.Generation + 1
		next.Status, next.StatusReason = token.StatusNeedsReauth, reason
		return t.persist(next, to)

	case errors.Is(err, provider.ErrThrottled):
		until := t.throttledUntil(err)
		if t.hasQuota {
			// The throttle lives in each quota day's bucket it covers (at most today and tomorrow).
			days := []string{ledger.Day(t.now(), t.quota.Location)}
			if d := ledger.Day(until, t.quota.Location); d != days[0] {
				days = append(days, d)
			}
			for _, day := range days {
				if terr := t.e.opts.Ledger.Throttle(t.ctx, t.quota.Key, day, until); terr != nil {
					t.log.WarnContext(t.ctx, "recording the throttle failed", "error", terr.Error())
				}
			}
		}
		t.release(ledger.Release{KeepInflight: maybeSpent, Failure: "throttled by provider", NextDueAt: until})
		return Row{Outcome: OutcomeThrottled, Error: "provider throttled until " + until.UTC().Format(time.RFC3339)}
	}
	msg := err.Error()
	t.release(ledger.Release{KeepInflight: maybeSpent, Failure: msg})
	return failed("%s", msg)
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

// throttledUntil honours Retry-After; otherwise the next quota day (or the next run).
func (t *tokenRun) throttledUntil(err error) time.Time {
	now := t.now()
	var pe *provider.Error
	if errors.As(err, &pe) && pe.RetryAfter > 0 {
		return now.Add(pe.RetryAfter)
	}
	if t.hasQuota {
		local := now.In(t.quota.Location)
		y, m, d := local.Date()
		return time.Date(y, m, d+1, 0, 0, 0, 0, t.quota.Location)
	}
	return now.Add(t.e.opts.ScheduleInterval)
}

// persist is step 4: the new version goes to Secrets Manager under TR_PENDING before
// anything else happens — no log line, no other write. Retried until the deadline: the
// deterministic ClientRequestToken makes retries idempotent.
func (t *tokenRun) persist(next *token.Private, to string) Row {
	next.VersionID = to
	if t.doc.VersionID != t.rec.VersionID {
		next.BaseVersionID = t.rec.VersionID // the committed document was an operator's
	}
	raw, err := next.Marshal()
	if err != nil {
		t.release(ledger.Release{KeepInflight: true, Failure: "encode new version"})
		return failed("encode new version: %v", err)
	}
	err = t.retryWrite(func() error {
		return t.e.opts.Secrets.PutPending(t.ctx, t.priv, token.Secret(raw), to, PendingStage)
	})
	if errors.Is(err, secretstore.ErrVersionConflict) {
		// Someone refreshing from the same version saved N first: theirs is the truth.
		found, ok := t.findVersion(to)
		if !ok {
			t.release(ledger.Release{KeepInflight: true, Failure: "version conflict"})
			return failed("version %s exists with other content but cannot be read", to)
		}
		t.log.WarnContext(t.ctx, "another holder saved this version first; using it", "version", to)
		next = found
	} else if err != nil {
		// The lease stays until it expires and inflight says what to look for.
		return failed("new token obtained but not saved (the next run recovers it within the provider's reuse grace): %v", err)
	} else {
		t.log.InfoContext(t.ctx, "new version saved", "version", to, "stage", PendingStage)
	}
	return t.commitAndPublish(next, to, outcomeFor(next))
}

// commitAndPublish is steps 5–7 for version `to`, already in Secrets Manager.
func (t *tokenRun) commitAndPublish(next *token.Private, to, outcome string) Row {
	from := t.rec.VersionID
	c := ledger.Commit{
		Name: t.name, Holder: t.holder, FromGeneration: t.rec.Generation,
		From: from, To: to,
		Status: next.Status, StatusReason: next.StatusReason,
		ExpiresAt: next.ExpiresAt, NextDueAt: next.NextDue(t.e.DefaultMargin()),
	}
	if next.Status != token.StatusActive {
		c.NextDueAt = time.Time{}
	}
	if err := t.commit(c); err != nil {
		if errors.Is(err, ledger.ErrLeaseLost) {
			t.holder = ""
			return failed("lease lost before commit: a newer refresh committed; its state is kept")
		}
		return failed("commit: %v", err)
	}
	t.holder = "" // the commit released the lease
	t.rec.PrevVersionID, t.rec.VersionID = from, to
	t.rec.Generation++
	t.rec.Status, t.rec.StatusReason = next.Status, next.StatusReason
	t.rec.Inflight = nil
	t.doc = next
	t.log.InfoContext(t.ctx, "committed", "version", to, "generation", t.rec.Generation, "status", next.Status)

	// Step 6: people and tools reading AWSCURRENT see the committed version.
	if err := t.e.opts.Secrets.MoveCurrent(t.ctx, t.priv, to, from); err != nil {
		if errors.Is(err, secretstore.ErrStageMoved) {
			t.log.WarnContext(t.ctx, "AWSCURRENT was moved by someone else; the next run adopts it", "version", to)
		} else {
			t.log.WarnContext(t.ctx, "moving AWSCURRENT failed; the next run repairs it", "error", err.Error())
		}
	}
	// Step 7.
	if err := t.publish(next, t.rec.Generation, to); err != nil {
		return failed("committed generation %d but publishing the access secret failed (the next run publishes it): %v", t.rec.Generation, err)
	}
	if outcome == OutcomeNeedsReauth {
		return Row{Outcome: OutcomeNeedsReauth, Error: reasonOf(next)}
	}
	return Row{Outcome: outcome}
}

// commit is step 5, retried on transient errors until the deadline.
func (t *tokenRun) commit(c ledger.Commit) error {
	return t.retryWrite(func() error { return t.e.opts.Ledger.Commit(t.ctx, c) })
}

// publish writes the consumers' document for generation gen of private version v.
func (t *tokenRun) publish(doc *token.Private, gen int64, v string) error {
	a := doc.Access()
	a.Generation = gen
	raw, err := a.Marshal()
	if err != nil {
		return err
	}
	if err := t.e.opts.Secrets.Publish(t.ctx, t.access, token.Secret(raw), AccessToken(v)); err != nil {
		return err
	}
	if err := t.e.opts.Ledger.MarkPublished(t.ctx, t.name, gen); err != nil {
		return err
	}
	t.rec.PublishedGeneration = gen
	return nil
}

// retryWrite retries a write that is safe to repeat until it succeeds, fails for good, or
// the invocation is about to end.
func (t *tokenRun) retryWrite(write func() error) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := write()
		if err == nil || permanent(err) {
			return err
		}
		if dl, ok := t.ctx.Deadline(); ok {
			if time.Until(dl) < backoff {
				return err
			}
		} else if attempt >= 8 {
			return err
		}
		if !wait(t.ctx, backoff) {
			return err
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

func permanent(err error) bool {
	return errors.Is(err, secretstore.ErrVersionConflict) ||
		errors.Is(err, secretstore.ErrNotFound) ||
		errors.Is(err, ledger.ErrLeaseLost) ||
		errors.Is(err, ledger.ErrNotFound) ||
		errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded)
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
