package refresher

import (
	"errors"
	"fmt"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/provider"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// Every token's outcome is decided here (docs/design.md §5): the steps return errors, and
// these functions turn errors, documents and records into the row of the report.

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

// claimErr maps a refused claim or quota reservation to its outcome.
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

// doneRow is the outcome of a committed version.
func doneRow(doc *token.Private) Row {
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

// invalidEditRow is the row of a token whose AWSCURRENT is an operator edit that does not
// validate: the committed version was kept (and refreshed when due), and the row says so.
// It counts as InvalidConfig (docs/design.md §5) unless the token failed.
func invalidEditRow(row Row, editID, why string) Row {
	row.Error = joinNote(fmt.Sprintf("operator edit %s not adopted: %s; the committed version is kept (%s)", editID, why, row.Outcome), row.Error)
	if row.Outcome != OutcomeFailed {
		row.Outcome = OutcomeInvalidConfig
	}
	return row
}

// interruptedReason is what a token says when its refresh token was spent by a refresh
// whose result never reached Secrets Manager.
const interruptedReason = "refresh interrupted before the new token was saved"

// rejectedReason is the needs_reauth reason of a refresh the provider rejected. When the
// refresh is in flight from an earlier attempt (a recovery, or a retried call whose answer
// was lost), that attempt may have spent the token: the refresh was interrupted.
func (t *tokenRun) rejectedReason(err error) string {
	if t.mayBeSpent {
		return interruptedReason + " (" + rejection(err) + ")"
	}
	return "provider rejected the refresh: " + rejection(err)
}

// rejection describes a provider error by status, code and message: never a token.
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

// completeRow fills the row's name, expiry and generation from the record and adds the
// run's note (a stale edit merged) to any outcome but failed.
func (t *tokenRun) completeRow(row *Row) {
	row.Name = t.name
	if t.hasRec {
		if !t.rec.ExpiresAt.IsZero() {
			row.ExpiresAt = t.rec.ExpiresAt.UTC().Format(time.RFC3339)
		}
		row.Generation = t.rec.Generation
	}
	if t.note != "" && row.Outcome != OutcomeFailed {
		row.Error = joinNote(row.Error, t.note)
	}
}
