package refresher

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretname"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// tokenRun carries one token through one invocation. Its methods live in files named for
// what they do: the lease (lease.go), one refresh in the order it runs (refresh.go, then
// persist.go), recovery (recover.go), repairs (rollforward.go), adoption (adopt.go), the
// version ids (version.go), retry times (retry.go) and every outcome (outcome.go).
type tokenRun struct {
	e      *Engine
	st     *runState
	ctx    context.Context
	log    *slog.Logger
	name   string
	priv   string
	access string

	rec    ledger.Record
	hasRec bool
	holder string    // non-empty while we hold the lease
	fence  time.Time // wall-clock time after which we must not write under the lease
	// leaseEnd is fence on the engine's clock (the ledger's): both are counted from
	// before the claim or renewal was sent (docs/design.md §4).
	leaseEnd time.Time
	rel      ledger.Release
	// mayBeSpent: the refresh token may have been spent under this lease (a provider
	// call that may have rotated it, or a claim over an interrupted refresh); the
	// release then leaves the in-flight record for recovery at once.
	mayBeSpent bool
	// presentedAt: when the refresh token was first about to be sent under the refresh in
	// flight (the record's mark, an earlier holder's or ours); zero while nothing was sent.
	// maybeReached: a request carrying it may have reached the provider and its answer was
	// never saved (an earlier holder's, or ours unanswered). It is then presented again only
	// inside the provider's reuse grace, counted from presentedAt (docs/design.md §4).
	presentedAt  time.Time
	maybeReached bool
	// presentedBy and holderUntil: the holder whose mark it is and when its invocation ends
	// at the latest; markedHere: this run wrote the mark.
	presentedBy string
	holderUntil time.Time
	markedHere  bool
	// claimedBy is the holder of this run's last claim, kept after the lease is gone: the
	// escrow write is fenced by it (ledger.Escrow), not by the lease's time.
	claimedBy string
	rotated   bool // the provider returned a new refresh token that is not saved yet
	lateClaim bool // the claim's answer came late: confirm the lease before the provider call
	escrowed  bool // the in-flight record holds this refresh's escrow
	chained   bool // settle refreshed at once because the committed access token had expired

	doc      *token.Private // the committed document, once read
	quota    token.Quota
	hasQuota bool

	note          string // said in the row and log besides the outcome (a stale edit merged)
	persisted     string // the version this run saved as AWSCURRENT (persist)
	wasReauth     bool   // re-seeded after needs_reauth in this run
	movedToReauth bool   // this run committed needs_reauth
	invalidEdit   bool   // AWSCURRENT is an invalid operator edit of a working token
}

func (e *Engine) newTokenRun(ctx context.Context, st *runState, name string) *tokenRun {
	return &tokenRun{e: e, st: st, ctx: ctx, name: name, log: e.log.With("token", name),
		priv: secretname.Private(e.opts.Prefix, name), access: secretname.Access(e.opts.Prefix, name)}
}

func (e *Engine) runToken(ctx context.Context, st *runState, j job) Row {
	t := e.newTokenRun(ctx, st, j.name)
	row := t.run(j)
	e.finishRow(ctx, st, t, &row)
	return row
}

// run gathers what plan needs, plans and executes. Adoption and reading AWSCURRENT change
// the inputs, so it plans again after them (at most a few rounds).
func (t *tokenRun) run(j job) Row {
	in := planInput{trigger: t.st.trigger, force: t.st.force, now: t.e.now(), reach: t.e.reach(t.st.trigger),
		current: j.current, accessCurrent: j.accessCurrent, accessListed: j.accessListed}
	if j.recKnown {
		if j.rec != nil {
			t.rec, t.hasRec = *j.rec, true
		}
	} else {
		rec, err := t.e.opts.Ledger.Get(t.ctx, t.name)
		switch {
		case errors.Is(err, ledger.ErrNotFound):
		case err != nil:
			return failed("read token record: %v", err)
		default:
			t.rec, t.hasRec = rec, true
		}
	}
	// Operator runs (and an ensure for a token never seen) look at AWSCURRENT, with
	// ListSecrets, to adopt edits; ensure otherwise trusts the record.
	if !j.accessListed && (t.st.trigger == triggerOperator || !t.hasRec) {
		row, ok := t.lookUp(&in)
		if !ok {
			return row
		}
	}
	waited := false
	for round := 0; round < 5; round++ {
		if t.hasRec {
			in.rec = &t.rec
		}
		in.now = t.e.now()
		a := plan(in)
		t.log.DebugContext(t.ctx, "plan", "action", a.kind.String(), "why", a.why)
		switch a.kind {
		case actReadCurrent:
			doc, err := t.readDoc(in.current)
			if err != nil && !isInvalid(err) {
				return rowFor(err)
			}
			in.currentDoc, in.currentErr = doc, err
			continue
		case actAdoptNew:
			if err := t.adoptNew(in.current); err != nil {
				return rowFor(err)
			}
			continue
		case actAdoptEdit:
			force, err := t.adoptEdit(in.current, in.currentDoc)
			if err != nil {
				return rowFor(err)
			}
			in.force = in.force || force
			in.current, in.currentDoc = t.rec.VersionID, nil
			in.accessListed = false // the adoption published; the record now says what lags
			continue
		}
		row := t.execute(a, &in)
		if row.Outcome == OutcomeLeaseHeld && t.st.trigger == triggerEnsure && !waited {
			// Another holder is refreshing this token: wait for its commit and answer from
			// the record it leaves (not_due with the new expires_at), instead of sending the
			// consumer to a secret that is not yet published.
			waited = true
			if t.waitLease() {
				continue
			}
		}
		if a.invalidEdit != "" {
			t.invalidEdit = true
			return invalidEditRow(row, in.current, a.invalidEdit)
		}
		return row
	}
	return failed("the token's state kept changing during the run; the next run settles it")
}

// ensureWait bounds how long an ensure waits for another holder's refresh to commit.
const ensureWait = 5 * time.Second

// waitLease polls the record, with backoff, until no live lease is on it (true, t.rec is
// the record then) or ensureWait, the invocation's deadline or a failed read ends the wait.
func (t *tokenRun) waitLease() bool {
	ctx, cancel := context.WithTimeout(t.ctx, ensureWait)
	defer cancel()
	backoff := 50 * time.Millisecond
	for {
		if !wait(ctx, backoff) {
			return false
		}
		rec, err := t.e.opts.Ledger.Get(ctx, t.name)
		if err != nil {
			return false
		}
		if rec.LeaseHolder == "" || !rec.LeaseUntil.After(t.e.now()) {
			t.rec, t.hasRec = rec, true
			return true
		}
		backoff = min(2*backoff, 800*time.Millisecond)
	}
}

// lookUp finds the private secret's AWSCURRENT id with ListSecrets (no value is read).
func (t *tokenRun) lookUp(in *planInput) (Row, bool) {
	entries, err := t.e.opts.Secrets.Entries(t.ctx, t.priv)
	if err != nil {
		return failed("list private secret: %v", err), false
	}
	for _, en := range entries {
		if en.Name != t.priv {
			continue
		}
		if !en.DeletedDate.IsZero() {
			return invalid("private secret %s is scheduled for deletion on %s; not refreshed", t.priv, en.DeletedDate.UTC().Format(time.RFC3339)), false
		}
		in.current = en.Current
		return Row{}, true
	}
	return invalid("private secret %s not found", t.priv), false
}

// execute does one planned action.
func (t *tokenRun) execute(a action, in *planInput) Row {
	switch a.kind {
	case actNotDue:
		if t.st.trigger == triggerEnsure && a.why != "" {
			// Backing off or throttled: the consumer reads the published secret, and the
			// row says why it was not refreshed. No provider call.
			if t.rec.LastError == throttledFailure {
				return Row{Outcome: OutcomeThrottled, Error: a.why}
			}
			return Row{Outcome: OutcomeNotDue, Error: a.why}
		}
		return Row{Outcome: OutcomeNotDue}
	case actLeaseHeld:
		return Row{Outcome: OutcomeLeaseHeld}
	case actNeedsReauth:
		return Row{Outcome: OutcomeNeedsReauth, Error: reasonOfRecord(t.rec)}
	case actBudget:
		return Row{Outcome: OutcomeNotDue, Error: a.why}
	case actRollForward:
		accessFrom := ""
		if in.accessListed && in.accessCurrent != "" && in.accessCurrent != AccessToken(t.rec.VersionID) {
			accessFrom = in.accessCurrent
		}
		return t.rollForward(a, accessFrom)
	case actRecover:
		return t.recover(in)
	case actRefresh:
		// A lagging label needs no move first: the persist makes the new version AWSCURRENT.
		t.log.InfoContext(t.ctx, "refreshing", "reason", a.why, "trigger", t.st.trigger.String())
		return t.refresh()
	}
	return failed("no executor for %s", a.kind)
}
