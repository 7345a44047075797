package refresher

import (
	"fmt"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// trigger is what started the invocation (docs/design.md §3, triggers).
type trigger int

const (
	triggerReconcile trigger = iota // scheduled: list, adopt, repair, publish, refresh what is due
	triggerSweep                    // {"sweep":true}: the records due before the next sweep
	triggerEnsure                   // {"ensure":[…]}: refresh only inside the margin
	triggerOperator                 // {"tokens":[…],"force":true}
)

func (t trigger) String() string {
	switch t {
	case triggerSweep:
		return "sweep"
	case triggerEnsure:
		return "ensure"
	case triggerOperator:
		return "operator"
	}
	return "reconcile"
}

// planInput is everything the decision needs; gathering it is the executor's job.
type planInput struct {
	trigger trigger
	force   bool
	now     time.Time
	// reach, when set (a reconcile with no sweep running), also makes due a token whose
	// access token would expire before the next reconcile plus an hour.
	reach time.Duration
	rec   *ledger.Record // nil: no record yet
	// current is the private secret's AWSCURRENT version id; "" when not known (sweep, ensure).
	current string
	// currentDoc is the AWSCURRENT document, read only when current is neither the committed
	// version nor the one before it; currentErr says why it is unusable.
	currentDoc *token.Private
	currentErr error
	// accessCurrent is the access secret's AWSCURRENT version id, when listed (reconcile).
	accessCurrent string
	accessListed  bool
}

// actionKind is the one thing an invocation does for a token.
type actionKind int

const (
	actNotDue      actionKind = iota // nothing to do
	actLeaseHeld                     // another holder is working on it
	actAdoptNew                      // first sight of the private secret: create the record
	actReadCurrent                   // AWSCURRENT moved: read it, then plan again
	actAdoptEdit                     // an operator's AWSCURRENT version becomes the base
	actRecover                       // an interrupted refresh: roll forward or retry (§4 recovery)
	actRollForward                   // label and/or publish the committed version, no provider call
	actRefresh                       // claim → read → call → persist → commit → label → publish
	actNeedsReauth                   // a person must act; nothing to do
	actBudget                        // due, but the write budget has no room (force included)
)

func (k actionKind) String() string {
	return [...]string{"not_due", "lease_held", "adopt_new", "read_current", "adopt_edit", "recover", "roll_forward", "refresh", "needs_reauth", "write_budget"}[k]
}

// action is plan's answer.
type action struct {
	kind actionKind
	why  string
	// labelFrom: AWSCURRENT is on this version of ours; move it to the committed one.
	labelFrom string
	// publish: the access secret lags the committed generation.
	publish bool
	// invalidEdit: AWSCURRENT is an operator edit that does not validate; the committed
	// version is kept (and refreshed when due) and the edit is reported.
	invalidEdit string
}

// plan is the decision procedure of docs/design.md §3–§4 for one token: pure, no AWS.
func plan(in planInput) action {
	rec := in.rec
	if rec == nil {
		return action{kind: actAdoptNew, why: "new private secret"}
	}
	if rec.LeaseHolder != "" && rec.LeaseUntil.After(in.now) {
		return action{kind: actLeaseHeld}
	}
	var a action
	if in.current == "" && rec.LabelFrom != "" && rec.LabelFrom != rec.VersionID {
		a.labelFrom = rec.LabelFrom // a failed label move the record remembers (sweep, ensure)
	}
	if in.current != "" && in.current != rec.VersionID {
		switch {
		case rec.Inflight != nil && in.current == rec.Inflight.To:
			// Our in-flight refresh saved its version as AWSCURRENT and did not commit: roll
			// it forward. The record, not the label, is the authority; never an edit.
			return action{kind: actRecover, why: "interrupted refresh (its version is saved)"}
		case in.current == rec.PrevVersionID:
			a.labelFrom = in.current // committed, label not moved yet
		case in.currentDoc == nil && in.currentErr == nil:
			return action{kind: actReadCurrent}
		case in.currentErr != nil:
			a.invalidEdit = in.currentErr.Error()
		case in.currentDoc.VersionID == in.current:
			a.labelFrom = in.current // one of ours that AWSCURRENT was left on
		case rec.Interrupted() && rec.LeaseUntil.Before(in.now):
			// Settle the interrupted refresh first: if its version exists it is rolled
			// forward and the edit, now a copy of a superseded version, is merged next.
			return action{kind: actRecover, why: "interrupted refresh, then an operator edit"}
		default:
			return action{kind: actAdoptEdit, why: "operator edit"}
		}
	}
	if rec.Interrupted() {
		return action{kind: actRecover, why: "interrupted refresh", invalidEdit: a.invalidEdit}
	}
	a.publish = rec.PublishedGeneration < rec.Generation ||
		(in.accessListed && in.accessCurrent != AccessToken(rec.VersionID))
	if rec.Status != "" && rec.Status != token.StatusActive {
		if a.labelFrom != "" || a.publish {
			a.kind, a.why = actRollForward, "repair a needs_reauth token's label or access secret"
			return a
		}
		a.kind = actNeedsReauth
		return a
	}
	due, why := isDue(in)
	if due {
		if free := budgetFreeAt(rec, in.now); free.After(in.now) {
			a.kind, a.why = actBudget, "write budget used up until "+free.UTC().Format(time.RFC3339)
			return a
		}
		a.kind, a.why = actRefresh, why
		return a
	}
	if a.labelFrom != "" || a.publish {
		a.kind, a.why = actRollForward, "repair label or access secret"
		return a
	}
	a.kind, a.why = actNotDue, why
	return a
}

// isDue applies the timing of docs/design.md §3 to the record alone: no secret is read for a
// token that is not due.
func isDue(in planInput) (bool, string) {
	rec := in.rec
	switch {
	case in.force:
		return true, "forced"
	case rec.NextDueAt.IsZero():
		return true, "no access token yet"
	case rec.ConsecutiveFailures > 0 && rec.NextDueAt.After(in.now) &&
		(rec.LastError == throttledFailure || rec.NextDueAt.Sub(in.now) <= maxRetryDelay):
		// A provider throttle or the failure back-off holds for every trigger, ensure and a
		// token never refreshed included; ensure answers from the published secret.
		return false, backingOff(rec)
	case rec.ExpiresAt.IsZero():
		return true, "no access token yet"
	case in.trigger == triggerEnsure:
		if !rec.StaleAt.After(in.now) {
			return true, "ensure: the access token is inside its margin"
		}
		return false, ""
	case !rec.NextDueAt.After(in.now):
		return true, "due"
	case !rec.ExpiresAt.After(in.now):
		// Whatever next_due_at says (a record scheduled by an older release may say 2223).
		return true, "the access token has expired"
	case in.reach > 0 && !rec.ExpiresAt.After(in.now.Add(in.reach)):
		return true, "expires before the next reconcile (no sweep runs)"
	}
	return false, ""
}

// throttledFailure is the last_error of a token the provider throttled (refresh.go), which
// plan tells from other failures.
const throttledFailure = "throttled by provider"

// backingOff says why a failing token is not refreshed before its next_due_at.
func backingOff(rec *ledger.Record) string {
	until := rec.NextDueAt.UTC().Format(time.RFC3339)
	if rec.LastError == throttledFailure {
		return "provider throttled until " + until + "; the published access token is unchanged"
	}
	return fmt.Sprintf("backing off after %d failed attempts until %s; the published access token is unchanged", rec.ConsecutiveFailures, until)
}

// budgetFreeAt is the write budget decided (docs/design.md §3): the first time at or after
// now when the token may write one more private version. plan asks it before a refresh and
// precheck again for the refreshes a recovery starts. The record is the one source: every
// commit stores the committed document's budget in it.
func budgetFreeAt(rec *ledger.Record, now time.Time) time.Time {
	return token.BudgetFreeAt(now, rec.Writes, maxWrites(rec))
}

// maxWrites is the record's write budget per rolling 24 h.
func maxWrites(rec *ledger.Record) int { return token.WriteBudget(rec.MaxWrites) }
