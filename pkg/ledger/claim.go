package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/uuid"
)

// QuotaReservation is one unit of a provider's daily quota.
type QuotaReservation struct {
	Key   string // the policy's quota_key
	Day   string // Day(now, quota timezone)
	Limit int
}

// Claim takes the lease on a token record for one refresh from From to To.
type Claim struct {
	Name, Holder   string
	Generation     int64 // the record's generation the refresh starts from
	ExpectInflight bool  // true when recovering an interrupted refresh
	// LeaseOnly takes the lease without recording a refresh in flight: a repair that
	// writes no private version (with ExpectInflight false only).
	LeaseOnly  bool
	From, To   string
	LeaseUntil time.Time
	Quota      *QuotaReservation // nil: no quota unit is reserved
}

// claimNamespace scopes the transaction tokens derived for claims.
var claimNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("urn:token-refresher:ledger:claim"))

// claimToken is the TransactWriteItems ClientRequestToken of a claim: the
// same (name, holder, generation) always gives the same token, so the
// service recognises a retried claim.
func claimToken(name, holder string, generation int64) string {
	return uuid.NewSHA1(claimNamespace, []byte(name+"\x00"+holder+"\x00"+strconv.FormatInt(generation, 10))).String()
}

// Claim takes the lease and reserves the quota unit in one transaction:
// both or neither. ErrLeaseHeld when the lease is held by another holder,
// the generation moved or the in-flight state is not the expected one;
// ErrQuotaExhausted or a *ThrottledError when the bucket refuses. A retry of a
// claim that was applied but not acknowledged returns nil.
func (l *Ledger) Claim(ctx context.Context, c Claim) error {
	if c.Name == "" || c.Holder == "" {
		return fmt.Errorf("ledger: claim %q: empty name or holder", c.Name)
	}
	now := l.now()
	nowMS := now.UnixMilli()

	leaseFree := expression.Or(
		expression.Name(attrLeaseUntil).AttributeNotExists(),
		expression.Name(attrLeaseUntil).LessThan(expression.Value(nowMS)),
		expression.Name(attrLeaseHolder).Equal(expression.Value(c.Holder)),
	)
	inflightCond := expression.Name(attrInflight).AttributeNotExists()
	upd := expression.Set(expression.Name(attrLeaseHolder), expression.Value(c.Holder)).
		Set(expression.Name(attrLeaseUntil), expression.Value(c.LeaseUntil.UnixMilli()))
	if c.ExpectInflight {
		// A recovery rewrites the refresh's fields one by one so an escrowed
		// token in the record survives it; the escrow is sealed for its To, so
		// a claim for another To is refused while one is there.
		inflightCond = expression.Name(attrInflight).AttributeExists().And(expression.Or(
			expression.Name(pathInflightEscrow).AttributeNotExists(),
			expression.Name(pathInflightTo).Equal(expression.Value(c.To)),
		))
		upd = setOrRemove(upd, pathInflightFrom, c.From)
		upd = setOrRemove(upd, pathInflightTo, c.To)
		// started_at stays the first holder's (a record from before presentations
		// were marked counts as presented from then); unpresented and presented_at stay
		// as they are: an earlier holder's presentation is not undone by a new claim.
		upd = upd.Set(expression.Name(pathInflightStartedAt), expression.IfNotExists(expression.Name(pathInflightStartedAt), expression.Value(formatTime(now)))).
			Remove(expression.Name(pathInflightUnspent)) // this holder may spend it
	} else if !c.LeaseOnly {
		upd = upd.Set(expression.Name(attrInflight), expression.Value(inflightItem{From: c.From, To: c.To, StartedAt: formatTime(now), Unpresented: true}))
	}
	cond := leaseFree.And(expression.Name(attrGeneration).Equal(expression.Value(c.Generation)), inflightCond)
	expr, err := expression.NewBuilder().WithUpdate(upd).WithCondition(cond).Build()
	if err != nil {
		return fmt.Errorf("ledger: claim %s: %w", c.Name, err)
	}
	items := []types.TransactWriteItem{{Update: &types.Update{
		TableName:                           aws.String(l.table),
		Key:                                 tokenKey(c.Name),
		UpdateExpression:                    expr.Update(),
		ConditionExpression:                 expr.Condition(),
		ExpressionAttributeNames:            expr.Names(),
		ExpressionAttributeValues:           expr.Values(),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}}}
	if c.Quota != nil {
		qexpr, err := l.bucketReservation(*c.Quota, now)
		if err != nil {
			return fmt.Errorf("ledger: claim %s: %w", c.Name, err)
		}
		items = append(items, types.TransactWriteItem{Update: &types.Update{
			TableName:                           aws.String(l.table),
			Key:                                 bucketKey(c.Quota.Key, c.Quota.Day),
			UpdateExpression:                    qexpr.Update(),
			ConditionExpression:                 qexpr.Condition(),
			ExpressionAttributeNames:            qexpr.Names(),
			ExpressionAttributeValues:           qexpr.Values(),
			ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		}})
	}

	_, err = l.client.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{
		TransactItems:      items,
		ClientRequestToken: aws.String(claimToken(c.Name, c.Holder, c.Generation)),
	})
	if err == nil {
		return nil
	}

	var canceled *types.TransactionCanceledException
	if errors.As(err, &canceled) {
		reasons := canceled.CancellationReasons
		failed := func(i int) bool { return i < len(reasons) && aws.ToString(reasons[i].Code) == codeConditionFailed }
		if failed(0) {
			if ownClaim(reasons[0].Item, c, nowMS) {
				return nil
			}
			return fmt.Errorf("ledger: claim %s: %w", c.Name, ErrLeaseHeld)
		}
		if c.Quota != nil && failed(1) {
			return fmt.Errorf("ledger: claim %s: %w", c.Name, l.refusal(ctx, *c.Quota, reasons[1].Item, nowMS))
		}
		return fmt.Errorf("ledger: claim %s: %w", c.Name, err)
	}

	// The same token was used for a claim with other parameters within the
	// service's idempotency window: an earlier attempt of ours. It may have
	// been applied; the record says.
	var mismatch *types.IdempotentParameterMismatchException
	if errors.As(err, &mismatch) {
		r, gerr := l.Get(ctx, c.Name)
		if gerr == nil && ownRecord(r, c, nowMS) {
			return nil
		}
	}
	return fmt.Errorf("ledger: claim %s: %w", c.Name, err)
}

// ownClaim reports whether item (the record as the failed condition saw it)
// already carries this very claim, still valid.
func ownClaim(item map[string]types.AttributeValue, c Claim, nowMS int64) bool {
	if item == nil {
		return false
	}
	r, err := decodeRecord(item)
	return err == nil && ownRecord(r, c, nowMS)
}

func ownRecord(r Record, c Claim, nowMS int64) bool {
	return r.LeaseHolder == c.Holder && r.Generation == c.Generation &&
		r.LeaseUntil.UnixMilli() >= nowMS &&
		(c.LeaseOnly && r.Inflight == nil || r.Inflight != nil && r.Inflight.From == c.From && r.Inflight.To == c.To)
}

// bucketReservation is "one more unit, if under the limit and not
// throttled", shared by Claim and ReserveQuota.
func (l *Ledger) bucketReservation(q QuotaReservation, now time.Time) (expression.Expression, error) {
	if q.Key == "" || q.Day == "" {
		return expression.Expression{}, errors.New("quota reservation without key or day")
	}
	if q.Limit < 1 {
		return expression.Expression{}, fmt.Errorf("quota %s: limit %d, want at least 1", q.Key, q.Limit)
	}
	upd := expression.Add(expression.Name(attrUsed), expression.Value(1)).
		Set(expression.Name(attrLimit), expression.Value(q.Limit)).
		Set(expression.Name(attrTTL), expression.Value(now.Add(bucketRetention).Unix()))
	cond := expression.Or(
		expression.Name(attrUsed).AttributeNotExists(),
		expression.Name(attrUsed).LessThan(expression.Value(q.Limit)),
	).And(expression.Or(
		expression.Name(attrThrottledUntil).AttributeNotExists(),
		expression.Name(attrThrottledUntil).LessThanEqual(expression.Value(now.UnixMilli())),
	))
	return expression.NewBuilder().WithUpdate(upd).WithCondition(cond).Build()
}

// refusal explains why the bucket refused a unit, from the bucket as the
// failed condition saw it (read again only if the service did not return it).
func (l *Ledger) refusal(ctx context.Context, q QuotaReservation, item map[string]types.AttributeValue, nowMS int64) error {
	var b bucketItem
	if item != nil {
		if err := attributevalue.UnmarshalMap(item, &b); err != nil {
			return err
		}
	} else {
		got, err := l.Quota(ctx, q.Key, q.Day)
		if err != nil {
			return err
		}
		b.ThrottledUntil = got.ThrottledUntil.UnixMilli()
	}
	if b.ThrottledUntil > nowMS {
		return &ThrottledError{Until: msTime(b.ThrottledUntil)}
	}
	return ErrQuotaExhausted
}

// ReserveQuota takes one more unit (a retry attempt inside one refresh).
// ErrQuotaExhausted or a *ThrottledError when the bucket refuses.
func (l *Ledger) ReserveQuota(ctx context.Context, q QuotaReservation) error {
	now := l.now()
	expr, err := l.bucketReservation(q, now)
	if err != nil {
		return fmt.Errorf("ledger: reserve quota: %w", err)
	}
	_, err = l.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                           aws.String(l.table),
		Key:                                 bucketKey(q.Key, q.Day),
		UpdateExpression:                    expr.Update(),
		ConditionExpression:                 expr.Condition(),
		ExpressionAttributeNames:            expr.Names(),
		ExpressionAttributeValues:           expr.Values(),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return fmt.Errorf("ledger: reserve quota %s %s: %w", q.Key, q.Day, l.refusal(ctx, q, ccf.Item, now.UnixMilli()))
	}
	if err != nil {
		return fmt.Errorf("ledger: reserve quota %s %s: %w", q.Key, q.Day, err)
	}
	return nil
}

// Throttle records that the provider refuses requests until until. An
// existing later throttle stands. The bucket is created if missing, and kept
// at least until the throttle ends.
func (l *Ledger) Throttle(ctx context.Context, key, day string, until time.Time) error {
	if key == "" || day == "" {
		return errors.New("ledger: throttle: empty key or day")
	}
	now := l.now()
	expiry := now.Add(bucketRetention)
	if until.After(expiry) {
		expiry = until
	}
	upd := expression.Set(expression.Name(attrThrottledUntil), expression.Value(until.UnixMilli())).
		Set(expression.Name(attrTTL), expression.Value(expiry.Unix()))
	cond := expression.Or(
		expression.Name(attrThrottledUntil).AttributeNotExists(),
		expression.Name(attrThrottledUntil).LessThan(expression.Value(until.UnixMilli())),
	)
	if _, err := l.update(ctx, bucketKey(key, day), upd, cond); err != nil {
		return fmt.Errorf("ledger: throttle %s %s: %w", key, day, err)
	}
	// A failed condition means a later throttle is already recorded.
	return nil
}

// Bucket is a quota bucket's state.
type Bucket struct {
	Used, Limit    int
	ThrottledUntil time.Time
}

// Quota reads a bucket; a missing bucket is the zero Bucket.
func (l *Ledger) Quota(ctx context.Context, key, day string) (Bucket, error) {
	out, err := l.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(l.table),
		Key:            bucketKey(key, day),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return Bucket{}, fmt.Errorf("ledger: quota %s %s: %w", key, day, err)
	}
	var b bucketItem
	if out.Item != nil {
		if err := attributevalue.UnmarshalMap(out.Item, &b); err != nil {
			return Bucket{}, fmt.Errorf("ledger: quota %s %s: %w", key, day, err)
		}
	}
	return Bucket{Used: b.Used, Limit: b.Limit, ThrottledUntil: msTime(b.ThrottledUntil)}, nil
}
