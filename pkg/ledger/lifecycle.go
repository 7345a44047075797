package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Commit moves the record's pointer to a persisted version: the commit point
// of a refresh.
type Commit struct {
	Name, Holder         string
	FromGeneration       int64 // the generation claimed; the record moves to FromGeneration+1
	From, To             string
	Status, StatusReason string // empty Status leaves the stored status as it is
	ExpiresAt, NextDueAt time.Time
}

// setOrRemove sets name to value, or removes the attribute when value is
// empty, so a stale value never survives a rewrite.
func setOrRemove(upd expression.UpdateBuilder, name, value string) expression.UpdateBuilder {
	if value == "" {
		return upd.Remove(expression.Name(name))
	}
	return upd.Set(expression.Name(name), expression.Value(value))
}

// Commit writes version_id = To, generation = FromGeneration+1 and releases
// the lease, if Holder still holds it at FromGeneration. A retry of a commit
// that was applied but not acknowledged returns nil; anything else that fails
// the condition is ErrLeaseLost.
func (l *Ledger) Commit(ctx context.Context, c Commit) error {
	if c.Name == "" || c.Holder == "" || c.To == "" {
		return fmt.Errorf("ledger: commit %q: empty name, holder or version", c.Name)
	}
	next := c.FromGeneration + 1
	upd := expression.Set(expression.Name(attrVersionID), expression.Value(c.To)).
		Set(expression.Name(attrGeneration), expression.Value(next)).
		Set(expression.Name(attrFailures), expression.Value(0)).
		// Who committed: every holder refreshing from the same version computes the same
		// To, so To alone cannot tell our lost-response commit from another holder's.
		Set(expression.Name(attrCommittedBy), expression.Value(c.Holder)).
		Remove(expression.Name(attrInflight)).
		Remove(expression.Name(attrLeaseHolder)).
		Remove(expression.Name(attrLeaseUntil)).
		Remove(expression.Name(attrLastError))
	upd = setOrRemove(upd, attrPrevVersionID, c.From)
	if c.Status != "" {
		upd = upd.Set(expression.Name(attrStatus), expression.Value(c.Status))
	}
	upd = setOrRemove(upd, attrStatusReason, c.StatusReason)
	upd = setOrRemove(upd, attrExpiresAt, formatTime(c.ExpiresAt))
	upd = setOrRemove(upd, attrNextDueAt, formatTime(c.NextDueAt))
	cond := expression.Name(attrLeaseHolder).Equal(expression.Value(c.Holder)).
		And(expression.Name(attrGeneration).Equal(expression.Value(c.FromGeneration)))

	old, failed, err := l.update(ctx, tokenKey(c.Name), upd, cond)
	if err != nil {
		return fmt.Errorf("ledger: commit %s: %w", c.Name, err)
	}
	if !failed {
		return nil
	}
	if old != nil {
		r, err := decodeRecord(old)
		by, _ := old[attrCommittedBy].(*types.AttributeValueMemberS)
		if err == nil && r.VersionID == c.To && r.Generation == next && by != nil && by.Value == c.Holder {
			return nil // our own commit, applied before the response was lost
		}
	}
	return fmt.Errorf("ledger: commit %s: %w", c.Name, ErrLeaseLost)
}

// Release gives the lease up without committing.
type Release struct {
	Name, Holder string
	Failure      string    // non-empty: count a failure and record it as last_error (never a secret)
	KeepInflight bool      // keep inflight for recovery (the provider may have rotated)
	NextDueAt    time.Time // non-zero: when to try again
}

// Release drops the lease if Holder holds it. ErrLeaseLost when another
// holder has it; nil when it is already free with nothing of ours left (a
// retried release).
func (l *Ledger) Release(ctx context.Context, r Release) error {
	if r.Name == "" || r.Holder == "" {
		return fmt.Errorf("ledger: release %q: empty name or holder", r.Name)
	}
	upd := expression.Remove(expression.Name(attrLeaseHolder)).Remove(expression.Name(attrLeaseUntil))
	if !r.KeepInflight {
		upd = upd.Remove(expression.Name(attrInflight))
	}
	if r.Failure != "" {
		upd = upd.Add(expression.Name(attrFailures), expression.Value(1)).
			Set(expression.Name(attrLastError), expression.Value(r.Failure))
	}
	if !r.NextDueAt.IsZero() {
		upd = upd.Set(expression.Name(attrNextDueAt), expression.Value(formatTime(r.NextDueAt)))
	}
	cond := expression.Name(attrLeaseHolder).Equal(expression.Value(r.Holder))

	old, failed, err := l.update(ctx, tokenKey(r.Name), upd, cond)
	if err != nil {
		return fmt.Errorf("ledger: release %s: %w", r.Name, err)
	}
	if !failed {
		return nil
	}
	if old != nil {
		rec, err := decodeRecord(old)
		if err == nil && rec.LeaseHolder == "" && (r.KeepInflight || rec.Inflight == nil) {
			return nil
		}
	}
	return fmt.Errorf("ledger: release %s: %w", r.Name, ErrLeaseLost)
}

// MarkPublished records that the access secret carries generation. It never
// moves backwards: already at or past generation is nil.
func (l *Ledger) MarkPublished(ctx context.Context, name string, generation int64) error {
	upd := expression.Set(expression.Name(attrPublished), expression.Value(generation))
	cond := expression.Name(attrPK).AttributeExists().And(expression.Or(
		expression.Name(attrPublished).AttributeNotExists(),
		expression.Name(attrPublished).LessThan(expression.Value(generation)),
	))
	old, failed, err := l.update(ctx, tokenKey(name), upd, cond)
	if err != nil {
		return fmt.Errorf("ledger: mark published %s: %w", name, err)
	}
	if failed && old == nil {
		return fmt.Errorf("ledger: mark published %s: %w", name, ErrNotFound)
	}
	return nil
}

// SetStatus sets status and its reason without a lease (for marking a token
// invalid_config). ErrNotFound when there is no record.
func (l *Ledger) SetStatus(ctx context.Context, name, status, reason string) error {
	if status == "" {
		return errors.New("ledger: set status: empty status")
	}
	upd := setOrRemove(expression.Set(expression.Name(attrStatus), expression.Value(status)), attrStatusReason, reason)
	old, failed, err := l.update(ctx, tokenKey(name), upd, expression.Name(attrPK).AttributeExists())
	if err != nil {
		return fmt.Errorf("ledger: set status %s: %w", name, err)
	}
	if failed && old == nil {
		return fmt.Errorf("ledger: set status %s: %w", name, ErrNotFound)
	}
	return nil
}
