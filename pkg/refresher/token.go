package refresher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
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

// AccessToken is the idempotency token (and so the version id) of the access-secret write
// for private version v: a reconcile tells a lagging access secret from its AWSCURRENT id.
func AccessToken(v string) string {
	return uuid.NewSHA1(versionNamespace, []byte("access/"+v)).String()
}

// interruptedReason is what a token says when its refresh token was spent by a refresh
// whose result never reached Secrets Manager.
const interruptedReason = "refresh interrupted before the new token was saved"

// tokenRun carries one token through one invocation.
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
	rel    ledger.Release

	doc      *token.Private // the committed document, once read
	quota    token.Quota
	hasQuota bool

	note          string // said in the row and log besides the outcome (a stale edit merged)
	wasReauth     bool   // re-seeded after needs_reauth in this run
	movedToReauth bool   // this run committed needs_reauth
	invalidEdit   bool   // AWSCURRENT is an invalid operator edit of a working token
}

func (e *Engine) runToken(ctx context.Context, st *runState, j job) Row {
	t := &tokenRun{e: e, st: st, ctx: ctx, name: j.name, log: e.log.With("token", j.name),
		priv: e.privateName(j.name), access: e.accessName(j.name)}
	row := t.run(j)
	e.finishRow(ctx, st, t, &row)
	return row
}

// run gathers what plan needs, plans and executes. Adoption and reading AWSCURRENT change
// the inputs, so it plans again after them (at most a few rounds).
func (t *tokenRun) run(j job) Row {
	in := planInput{trigger: t.st.trigger, force: t.st.force, now: t.e.now(), horizon: t.e.horizon(), reach: t.e.reach(t.st.trigger),
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
	for round := 0; round < 4; round++ {
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
			force, err := t.adoptEdit(in.current, in.currentDoc, false)
			if err != nil {
				return rowFor(err)
			}
			in.force = in.force || force
			in.current, in.currentDoc = t.rec.VersionID, nil
			in.accessListed = false // the adoption published; the record now says what lags
			continue
		}
		row := t.execute(a, &in)
		if a.invalidEdit != "" {
			t.invalidEdit = true // counted as InvalidConfig (contract 4) and notified
			row.Error = joinNote(fmt.Sprintf("operator edit %s not adopted: %s; the committed version is kept (%s)", in.current, a.invalidEdit, row.Outcome), row.Error)
			if row.Outcome != OutcomeFailed {
				row.Outcome = OutcomeInvalidConfig
			}
		}
		return row
	}
	return failed("the token's state kept changing during the run; the next run settles it")
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
		return t.rollForward(a.labelFrom, a.publish, accessFrom)
	case actRecover:
		return t.recover(in)
	case actRefresh:
		if a.labelFrom != "" {
			t.label(t.rec.VersionID, a.labelFrom) // keep AWSCURRENT at most one step behind
		}
		t.log.InfoContext(t.ctx, "refreshing", "reason", a.why, "trigger", t.st.trigger.String())
		return t.refresh(false)
	}
	return failed("no executor for %s", a.kind)
}

func reasonOfRecord(r ledger.Record) string { return reasonOr(r.StatusReason) }

func reasonOf(doc *token.Private) string { return reasonOr(doc.StatusReason) }

func reasonOr(reason string) string {
	if reason != "" {
		return reason
	}
	return "a person must re-authorise this token"
}

func joinNote(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
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

// adoptNew creates the token record for a private secret seen for the first time; it is
// due at once.
func (t *tokenRun) adoptNew(currentID string) error {
	if currentID == "" {
		return &outcomeError{outcome: OutcomeInvalidConfig, msg: fmt.Sprintf("private secret %s has no AWSCURRENT version", t.priv)}
	}
	doc, err := t.readDoc(currentID)
	if err != nil {
		return err
	}
	rec := ledger.Record{
		Name: t.name, VersionID: currentID, Generation: doc.Generation, PublishedGeneration: -1,
		Status: doc.Status, StatusReason: doc.StatusReason, ExpiresAt: doc.ExpiresAt,
		NextDueAt: t.e.now(), StaleAt: t.e.now(), RefreshExpiresAt: doc.RefreshExpiresAt,
		CredentialsExpireAt: doc.Provider.CredentialsExpireAt, MaxWrites: doc.MaxWrites(),
	}
	err = t.e.opts.Ledger.Create(t.ctx, rec)
	switch {
	case err == nil:
		t.log.InfoContext(t.ctx, "adopted private secret", "version", currentID)
		t.rec, t.hasRec = rec, true // the record as written
		return nil
	case !errors.Is(err, ledger.ErrExists):
		return fmt.Errorf("create token record: %w", err)
	}
	// Another invocation adopted it first: work from its record.
	if t.rec, err = t.e.opts.Ledger.Get(t.ctx, t.name); err != nil {
		return fmt.Errorf("read token record: %w", err)
	}
	t.hasRec = true
	return nil
}

// rollForward finishes steps 6 and 7 of an already committed version. accessFrom is the
// access secret's AWSCURRENT when it is some other version: a publish replayed with the
// committed version's token is idempotent and does not move the label back, so it is moved.
func (t *tokenRun) rollForward(labelFrom string, publish bool, accessFrom string) Row {
	if err := t.claim(false, false); err != nil {
		return rowFor(err)
	}
	defer t.release()
	doc, err := t.readDoc(t.rec.VersionID)
	if err != nil {
		return rowFor(err)
	}
	t.doc = doc
	if labelFrom != "" {
		if err := t.e.opts.Secrets.MoveCurrent(t.ctx, t.priv, t.rec.VersionID, labelFrom); err != nil && !errors.Is(err, secretstore.ErrStageMoved) {
			t.noteSecretsErr(err)
			return failed("label committed version: %v", err)
		}
	}
	if publish {
		if err := t.publishDoc(doc, t.rec.Generation, t.rec.VersionID); err != nil {
			return failed("publish: %v", err)
		}
		if accessFrom != "" {
			err := t.e.opts.Secrets.MoveCurrent(t.ctx, t.access, AccessToken(t.rec.VersionID), accessFrom)
			if err != nil && !errors.Is(err, secretstore.ErrStageMoved) {
				return failed("publish: move the access secret's AWSCURRENT: %v", err)
			}
		}
		t.log.InfoContext(t.ctx, "access secret republished", "generation", t.rec.Generation)
		// published_generation catches up; due_at goes back to next_due_at (a failed
		// publish put the record in the sweep index early).
		t.rel.Published, t.rel.NextDueAt = t.rec.Generation, t.rec.NextDueAt
	}
	if doc.Status != token.StatusActive {
		return Row{Outcome: OutcomeNeedsReauth, Error: reasonOf(doc)}
	}
	return Row{Outcome: OutcomeNotDue}
}

// recover settles a refresh whose holder died (docs/design.md §4, recovery).
func (t *tokenRun) recover(in *planInput) Row {
	if err := t.claim(false, true); err != nil {
		return rowFor(err)
	}
	defer t.release()
	to := NextVersion(t.rec.VersionID, t.rec.Generation+1)
	if doc, ok := t.findVersion(to); ok {
		t.log.InfoContext(t.ctx, "rolling forward an interrupted refresh", "version", to)
		row := t.settle(doc, to)
		if row.Outcome != OutcomeFailed && in.currentDoc != nil && in.current != "" && in.current != to {
			// The edit that waited for this recovery is now a copy of a superseded version.
			if _, err := t.adoptEdit(in.current, in.currentDoc, false); err != nil {
				return rowFor(err)
			}
		}
		return row
	}
	if in.currentDoc != nil && in.current != t.rec.VersionID {
		force, err := t.adoptEdit(in.current, in.currentDoc, true)
		if err != nil {
			return rowFor(err)
		}
		if force || t.st.force {
			return t.refresh(false)
		}
		in.current = t.rec.VersionID
		if a := plan(planInput{trigger: in.trigger, now: t.e.now(), horizon: in.horizon, rec: &t.rec}); a.kind == actRefresh {
			return t.refresh(false)
		}
		return Row{Outcome: OutcomeNotDue}
	}
	doc, err := t.readDoc(t.rec.VersionID)
	if err != nil {
		return rowFor(err)
	}
	t.doc = doc
	if doc.Status != token.StatusActive || (t.rec.Status != "" && t.rec.Status != token.StatusActive) {
		return Row{Outcome: OutcomeNeedsReauth, Error: reasonOfRecord(t.rec)}
	}
	t.log.InfoContext(t.ctx, "retrying an interrupted refresh with the old refresh token")
	t.rel.KeepInflight = true
	return t.refresh(true)
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

func (t *tokenRun) doneRow(doc *token.Private) Row {
	switch {
	case doc.Status != token.StatusActive:
		return Row{Outcome: OutcomeNeedsReauth, Error: reasonOf(doc)}
	case doc.AccessToken.IsZero():
		// A salvaged refresh token: saved, but consumers got nothing new — a failure,
		// alarmed, and due again at once.
		return Row{Outcome: OutcomeFailed, Error: doc.StatusReason}
	}
	return Row{Outcome: OutcomeRefreshed}
}
