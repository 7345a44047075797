package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Commit moves the record's pointer to a persisted version: the commit point
// of a refresh (docs/design.md §4 step 5).
type Commit struct {
	Name, Holder         string
	FromGeneration       int64 // the generation claimed; the record moves to FromGeneration+1
	From, To             string
	Status, StatusReason string // empty Status leaves the stored status as it is
	ExpiresAt, NextDueAt time.Time
	StaleAt              time.Time   // from when the committed access token is inside its margin (ensure)
	RefreshExpiresAt     time.Time   // when the committed refresh token expires; zero: unknown
	Writes               []time.Time // private versions written in the last 24 h, this one included
	CredentialsExpireAt  time.Time   // from the committed document, for the metrics of a token not read
	MaxWrites            int         // the committed document's write budget
	// Published says the access secret will carry FromGeneration+1 once this
	// holder's publish lands; the reconcile run checks the access secret's
	// version and repairs it otherwise, so no separate write is needed.
	Published bool
}

// setOrRemove sets name to value, or removes the attribute when value is
// empty, so a stale value never survives a rewrite.
func setOrRemove(upd expression.UpdateBuilder, name, value string) expression.UpdateBuilder {
	if value == "" {
		return upd.Remove(expression.Name(name))
	}
	return upd.Set(expression.Name(name), expression.Value(value))
}

// inDueIndex is the sparse sweep index's rule, for new records and updates
// alike: only an active token (empty status counts as active) with a due
// time is in it.
func inDueIndex(status string, next time.Time) bool {
	return !next.IsZero() && (status == "" || status == StatusActive)
}

// setDue keeps the sparse sweep index in step with next_due_at.
func setDue(upd expression.UpdateBuilder, status string, next time.Time) expression.UpdateBuilder {
	upd = setOrRemove(upd, attrNextDueAt, formatTime(next))
	if !inDueIndex(status, next) {
		return upd.Remove(expression.Name(attrDueShard)).Remove(expression.Name(attrDueAt))
	}
	return upd.Set(expression.Name(attrDueShard), expression.Value(DueShard)).
		Set(expression.Name(attrDueAt), expression.Value(next.Unix()))
}

// Commit writes version_id = To, generation = FromGeneration+1 and releases
// the lease, if Holder still holds it at FromGeneration, and returns the
// record as stored. A retry of a commit that was applied but not acknowledged
// returns the stored record; anything else that fails the condition is
// ErrLeaseLost.
func (l *Ledger) Commit(ctx context.Context, c Commit) (Record, error) {
	if c.Name == "" || c.Holder == "" || c.To == "" {
		return Record{}, fmt.Errorf("ledger: commit %q: empty name, holder or version", c.Name)
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
		Remove(expression.Name(attrLastError)).
		Remove(expression.Name(attrLabelFrom))
	upd = setOrRemove(upd, attrPrevVersionID, c.From)
	status := c.Status
	if status != "" {
		upd = upd.Set(expression.Name(attrStatus), expression.Value(status))
	}
	if c.Published {
		upd = upd.Set(expression.Name(attrPublished), expression.Value(next))
	}
	upd = setOrRemove(upd, attrStatusReason, c.StatusReason)
	upd = setOrRemove(upd, attrExpiresAt, formatTime(c.ExpiresAt))
	upd = setOrRemove(upd, attrStaleAt, formatTime(c.StaleAt))
	upd = setOrRemove(upd, attrRefreshExpiresAt, formatTime(c.RefreshExpiresAt))
	upd = setOrRemove(upd, attrCredentialsExpireAt, formatTime(c.CredentialsExpireAt))
	if c.MaxWrites > 0 {
		upd = upd.Set(expression.Name(attrMaxWrites), expression.Value(c.MaxWrites))
	}
	upd = setDue(upd, status, c.NextDueAt)
	if len(c.Writes) > 0 {
		ms := make([]int64, len(c.Writes))
		for i, w := range c.Writes {
			ms[i] = w.UnixMilli()
		}
		upd = upd.Set(expression.Name(attrWrites), expression.Value(ms))
	}
	cond := expression.Name(attrLeaseHolder).Equal(expression.Value(c.Holder)).
		And(expression.Name(attrGeneration).Equal(expression.Value(c.FromGeneration)))

	res, err := l.update(ctx, tokenKey(c.Name), upd, cond)
	if err != nil {
		return Record{}, fmt.Errorf("ledger: commit %s: %w", c.Name, err)
	}
	if !res.failed {
		return res.record("commit", c.Name)
	}
	if res.item != nil {
		r, err := decodeRecord(res.item)
		by, _ := res.item[attrCommittedBy].(*types.AttributeValueMemberS)
		if err == nil && r.VersionID == c.To && r.Generation == next && by != nil && by.Value == c.Holder {
			return r, nil // our own commit, applied before the response was lost
		}
	}
	return Record{}, fmt.Errorf("ledger: commit %s: %w", c.Name, ErrLeaseLost)
}

// Release gives the lease up without committing. It never removes the
// in-flight record: only the commit that settles the refresh does
// (docs/design.md §4, "evidence outlives failure").
type Release struct {
	Name, Holder string
	Failure      string // non-empty: count a failure and record it as last_error (never a secret)
	// Unspent marks the in-flight record as a refresh that cannot have spent
	// the refresh token (the provider was never called, or refused it for
	// sure), so the next run follows the token's own timing instead of
	// recovering at once. Ignored when the record holds an escrow. The next
	// claim clears the mark.
	Unspent   bool
	NextDueAt time.Time // non-zero: when to try again
	// Published, when positive, records that the access secret now carries
	// this generation; it is taken only while the record is at that
	// generation, so it never runs ahead of or behind the commit.
	Published int64
	// LabelRepaired removes label_from: AWSCURRENT is on the committed version again.
	LabelRepaired bool
}

// Release drops the lease if Holder holds it and returns the record as
// stored. ErrLeaseLost when another holder has it; nil (and the record as it
// is) when it is already free (a retried release).
func (l *Ledger) Release(ctx context.Context, r Release) (Record, error) {
	if r.Name == "" || r.Holder == "" {
		return Record{}, fmt.Errorf("ledger: release %q: empty name or holder", r.Name)
	}
	upd := expression.Remove(expression.Name(attrLeaseHolder)).Remove(expression.Name(attrLeaseUntil))
	cond := expression.Name(attrLeaseHolder).Equal(expression.Value(r.Holder))
	if r.Unspent {
		// Nothing this holder sent spent the token, and nothing before it had (else it
		// would not say so): the refresh counts as never presented again.
		upd = upd.Set(expression.Name(pathInflightUnspent), expression.Value(true)).
			Set(expression.Name(pathInflightUnpres), expression.Value(true)).
			Remove(expression.Name(pathInflightPresAt)).
			Remove(expression.Name(pathInflightPresBy)).
			Remove(expression.Name(pathInflightHolderTill))
		cond = cond.And(expression.Name(attrInflight).AttributeExists(), expression.Name(pathInflightEscrow).AttributeNotExists())
	}
	if r.Failure != "" {
		upd = upd.Add(expression.Name(attrFailures), expression.Value(1)).
			Set(expression.Name(attrLastError), expression.Value(r.Failure))
	}
	if !r.NextDueAt.IsZero() {
		upd = setDue(upd, "", r.NextDueAt)
	}
	if r.Published > 0 {
		upd = upd.Set(expression.Name(attrPublished), expression.Value(r.Published))
		cond = cond.And(expression.Name(attrGeneration).Equal(expression.Value(r.Published)))
	}
	if r.LabelRepaired {
		upd = upd.Remove(expression.Name(attrLabelFrom))
	}

	res, err := l.update(ctx, tokenKey(r.Name), upd, cond)
	if err != nil {
		return Record{}, fmt.Errorf("ledger: release %s: %w", r.Name, err)
	}
	if !res.failed {
		return res.record("release", r.Name)
	}
	if res.item != nil {
		rec, err := decodeRecord(res.item)
		if err == nil && r.Unspent && rec.LeaseHolder == r.Holder {
			// No inflight, or an escrow: nothing to mark; release without it.
			r.Unspent = false
			return l.Release(ctx, r)
		}
		if err == nil && rec.LeaseHolder == "" && (r.Published == 0 || rec.PublishedGeneration >= r.Published) {
			return rec, nil
		}
	}
	return Record{}, fmt.Errorf("ledger: release %s: %w", r.Name, ErrLeaseLost)
}

// Renew extends a lease that holder still holds at generation, to until, and
// returns the record as stored. A holder with the provider's answer in hand
// renews while it retries the persist (docs/design.md §4) and stops writing the
// moment a renewal fails: ErrLeaseLost.
func (l *Ledger) Renew(ctx context.Context, name, holder string, generation int64, until time.Time) (Record, error) {
	if name == "" || holder == "" {
		return Record{}, fmt.Errorf("ledger: renew %q: empty name or holder", name)
	}
	upd := expression.Set(expression.Name(attrLeaseUntil), expression.Value(until.UnixMilli()))
	cond := expression.Name(attrLeaseHolder).Equal(expression.Value(holder)).
		And(expression.Name(attrGeneration).Equal(expression.Value(generation))).
		And(expression.Name(attrLeaseUntil).GreaterThanEqual(expression.Value(l.now().UnixMilli())))
	res, err := l.update(ctx, tokenKey(name), upd, cond)
	if err != nil {
		return Record{}, fmt.Errorf("ledger: renew %s: %w", name, err)
	}
	if res.failed {
		return Record{}, fmt.Errorf("ledger: renew %s: %w", name, ErrLeaseLost)
	}
	return res.record("renew", name)
}

// inflightFence: holder still holds the record at generation, and the refresh in flight is
// the one to version to. The lease's time is not part of it (see Escrow).
func inflightFence(holder string, generation int64, to string) expression.ConditionBuilder {
	return expression.Name(attrLeaseHolder).Equal(expression.Value(holder)).
		And(expression.Name(attrGeneration).Equal(expression.Value(generation))).
		And(expression.Name(pathInflightTo).Equal(expression.Value(to)))
}

// Presenting is the mark a holder writes just before it sends the in-flight
// refresh's refresh token to the provider (docs/design.md §4, step 3).
type Presenting struct {
	Name, Holder string
	Generation   int64     // the generation claimed
	To           string    // the in-flight target version
	At           time.Time // when the request is about to be sent
	// Until is when the holder's invocation ends at the latest (zero: not known): a
	// recovery before then waits, because the holder may still save what it got.
	Until time.Time
}

// MarkPresented records, before a provider call, that the in-flight refresh's
// refresh token is about to be presented: a recovery that finds the mark and no
// saved version knows the provider may have rotated it, and presents it again only
// inside the provider's reuse grace, counted from the first mark (a later mark
// keeps it). Fenced by holder, generation and the in-flight target; ErrLeaseLost
// when the fence fails, and then nothing may be sent.
func (l *Ledger) MarkPresented(ctx context.Context, p Presenting) error {
	if p.Name == "" || p.Holder == "" || p.To == "" || p.At.IsZero() {
		return fmt.Errorf("ledger: mark presented %q: empty name, holder, version or time", p.Name)
	}
	var until int64
	if !p.Until.IsZero() {
		until = p.Until.UnixMilli()
	}
	// The three fields are written and removed together (holder_until 0 when unknown), so a
	// second mark (a recovery inside the grace) keeps all of the first holder's.
	upd := expression.Set(expression.Name(pathInflightPresAt), expression.IfNotExists(expression.Name(pathInflightPresAt), expression.Value(formatTime(p.At)))).
		Set(expression.Name(pathInflightPresBy), expression.IfNotExists(expression.Name(pathInflightPresBy), expression.Value(p.Holder))).
		Set(expression.Name(pathInflightHolderTill), expression.IfNotExists(expression.Name(pathInflightHolderTill), expression.Value(until))).
		Remove(expression.Name(pathInflightUnpres)).
		Remove(expression.Name(pathInflightUnspent))
	res, err := l.update(ctx, tokenKey(p.Name), upd, inflightFence(p.Holder, p.Generation, p.To))
	if err != nil {
		return fmt.Errorf("ledger: mark presented %s: %w", p.Name, err)
	}
	if res.failed {
		return fmt.Errorf("ledger: mark presented %s: %w", p.Name, ErrLeaseLost)
	}
	return nil
}

// Unmark takes back the presentation mark of holder, who learned it never sent the
// request (the mark's answer came too late to call), when its lease is gone and Release
// could not: fenced by generation, the in-flight target, the mark being holder's, no
// escrow, and no other live lease (a holder inside the grace may be sending on the same
// mark). ErrLeaseLost when the fence fails.
func (l *Ledger) Unmark(ctx context.Context, name, holder string, generation int64, to string) error {
	if name == "" || holder == "" || to == "" {
		return fmt.Errorf("ledger: unmark %q: empty name, holder or version", name)
	}
	upd := expression.Set(expression.Name(pathInflightUnpres), expression.Value(true)).
		Remove(expression.Name(pathInflightPresAt)).
		Remove(expression.Name(pathInflightPresBy)).
		Remove(expression.Name(pathInflightHolderTill))
	noLease := expression.Name(attrLeaseHolder).AttributeNotExists().
		Or(expression.Name(attrLeaseHolder).Equal(expression.Value(holder))).
		Or(expression.Name(attrLeaseUntil).LessThan(expression.Value(l.now().UnixMilli())))
	cond := expression.Name(pathInflightPresBy).Equal(expression.Value(holder)).
		And(expression.Name(attrGeneration).Equal(expression.Value(generation))).
		And(expression.Name(pathInflightTo).Equal(expression.Value(to))).
		And(expression.Name(pathInflightEscrow).AttributeNotExists()).
		And(noLease)
	res, err := l.update(ctx, tokenKey(name), upd, cond)
	if err != nil {
		return fmt.Errorf("ledger: unmark %s: %w", name, err)
	}
	if res.failed {
		return fmt.Errorf("ledger: unmark %s: %w", name, ErrLeaseLost)
	}
	return nil
}

// EscrowWrite puts a rotated refresh token, sealed by pkg/escrow for (Name,
// To), into the in-flight record, when Secrets Manager refused its persist.
type EscrowWrite struct {
	Name, Holder string
	Generation   int64  // the generation claimed (the record's, unchanged until the commit)
	To           string // the in-flight target version the value is sealed for
	Sealed       []byte
	At           time.Time // when it was escrowed; zero: now
}

// Escrow writes w.Sealed as inflight.escrow if Holder still holds the record
// at Generation and the refresh in flight is the one to To. The lease's end
// is deliberately not part of the fence: the writer may have the only copy
// of a rotated token, and until a successor claims (which changes the
// holder) nobody else can have acted on the refresh. ErrLeaseLost when the
// fence fails; a retry of a write that was applied but not acknowledged
// returns nil.
func (l *Ledger) Escrow(ctx context.Context, w EscrowWrite) error {
	if w.Name == "" || w.Holder == "" || w.To == "" || len(w.Sealed) == 0 {
		return fmt.Errorf("ledger: escrow %q: empty name, holder, version or value", w.Name)
	}
	at := w.At
	if at.IsZero() {
		at = l.now()
	}
	upd := expression.Set(expression.Name(pathInflightEscrow), expression.Value(w.Sealed)).
		Set(expression.Name(pathInflightEscrowedAt), expression.Value(formatTime(at)))
	// The holder, or the holder that presented the token: a successor's claim does not
	// take away the presenting holder's right to save what the provider gave it, until
	// a commit settles the refresh (the generation moves).
	holder := expression.Name(attrLeaseHolder).Equal(expression.Value(w.Holder)).
		Or(expression.Name(pathInflightPresBy).Equal(expression.Value(w.Holder)))
	cond := holder.And(expression.Name(attrGeneration).Equal(expression.Value(w.Generation))).
		And(expression.Name(pathInflightTo).Equal(expression.Value(w.To)))
	res, err := l.update(ctx, tokenKey(w.Name), upd, cond)
	if err != nil {
		return fmt.Errorf("ledger: escrow %s: %w", w.Name, err)
	}
	if !res.failed {
		return nil
	}
	if res.item != nil {
		// Sealed values are randomised, so an equal one is this very write.
		r, err := decodeRecord(res.item)
		if err == nil && r.Inflight != nil && r.Inflight.To == w.To && bytes.Equal(r.Inflight.Escrow, w.Sealed) {
			return nil
		}
	}
	return fmt.Errorf("ledger: escrow %s: %w", w.Name, ErrLeaseLost)
}

// errNoItem is returned when an update that should return the item did not.
var errNoItem = errors.New("no item returned")

// MarkUnpublished records that the publish of generation failed after its commit (which had
// recorded it as published): published_generation goes back one and the record enters the
// sweep index now, so the next sweep republishes it instead of the next reconcile. A record
// that has moved on is left alone.
func (l *Ledger) MarkUnpublished(ctx context.Context, name string, generation int64) error {
	upd := expression.Set(expression.Name(attrPublished), expression.Value(generation-1)).
		Set(expression.Name(attrDueShard), expression.Value(DueShard)).
		Set(expression.Name(attrDueAt), expression.Value(l.now().Unix()))
	cond := expression.Name(attrGeneration).Equal(expression.Value(generation)).
		And(expression.Name(attrPublished).Equal(expression.Value(generation)))
	if _, err := l.update(ctx, tokenKey(name), upd, cond); err != nil {
		return fmt.Errorf("ledger: mark unpublished %s: %w", name, err)
	}
	return nil
}

// MarkLabelLag records that moving the private secret's AWSCURRENT from version from to
// the committed version of generation failed: label_from = from, and the record enters the
// sweep index now, so the next sweep repairs the label from the record (no ListSecrets).
// A record that has moved on is left alone; the commit and a repairing release clear it.
func (l *Ledger) MarkLabelLag(ctx context.Context, name string, generation int64, from string) error {
	upd := expression.Set(expression.Name(attrLabelFrom), expression.Value(from)).
		Set(expression.Name(attrDueShard), expression.Value(DueShard)).
		Set(expression.Name(attrDueAt), expression.Value(l.now().Unix()))
	cond := expression.Name(attrGeneration).Equal(expression.Value(generation))
	if _, err := l.update(ctx, tokenKey(name), upd, cond); err != nil {
		return fmt.Errorf("ledger: mark label lag %s: %w", name, err)
	}
	return nil
}
