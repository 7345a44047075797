// Package ledger is the DynamoDB adapter for the state table: token records
// (the authoritative version pointer, the lease, the in-flight refresh) and
// daily quota buckets. Every state change is one conditional write, so a stale
// invocation can never overwrite newer state; every read is consistent.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// Errors callers branch on.
var (
	ErrNotFound       = errors.New("ledger: not found")
	ErrExists         = errors.New("ledger: record exists")
	ErrLeaseHeld      = errors.New("ledger: lease held")
	ErrQuotaExhausted = errors.New("ledger: quota exhausted")
	ErrLeaseLost      = errors.New("ledger: lease lost")
	ErrThrottled      = errors.New("ledger: throttled")
)

// ThrottledError says the provider asked us to wait until Until.
// errors.Is(err, ErrThrottled) holds for it.
type ThrottledError struct{ Until time.Time }

func (e *ThrottledError) Error() string {
	return "ledger: throttled until " + e.Until.UTC().Format(time.RFC3339)
}

// Is makes errors.Is(err, ErrThrottled) true.
func (e *ThrottledError) Is(target error) bool { return target == ErrThrottled }

// Record statuses: the document's (pkg/token, defined once there), and one more that only a
// record can carry.
const (
	StatusActive        = token.StatusActive
	StatusNeedsReauth   = token.StatusNeedsReauth
	StatusInvalidConfig = "invalid_config"
)

// Key prefixes and attribute names of the table.
const (
	tokenPrefix = "token#"
	quotaPrefix = "quota#"

	attrPK                  = "pk"
	attrTTL                 = "ttl"
	attrVersionID           = "version_id"
	attrPrevVersionID       = "prev_version_id"
	attrGeneration          = "generation"
	attrPublished           = "published_generation"
	attrStatus              = "status"
	attrStatusReason        = "status_reason"
	attrExpiresAt           = "expires_at"
	attrNextDueAt           = "next_due_at"
	attrLeaseHolder         = "lease_holder"
	attrLeaseUntil          = "lease_until"
	attrInflight            = "inflight"
	attrFailures            = "consecutive_failures"
	attrLastError           = "last_error"
	attrCommittedBy         = "committed_by"
	attrUsed                = "used"
	attrLimit               = "limit"
	attrThrottledUntil      = "throttled_until"
	attrStaleAt             = "stale_at"
	attrRefreshExpiresAt    = "refresh_expires_at"
	attrWrites              = "writes"
	attrCredentialsExpireAt = "credentials_expire_at"
	attrMaxWrites           = "max_writes"
	attrDueShard            = "due_shard"
	attrDueAt               = "due_at"
	attrLabelFrom           = "label_from"
)

// The sweep index (docs/design.md §3): a sparse GSI over the token records that
// are due at some time. Every such record carries due_shard = DueShard and
// due_at = next_due_at in unix seconds.
const (
	DueIndex = "due"
	DueShard = "due"
)

// bucketRetention is how long a quota bucket is kept (TTL, garbage collection
// only: the day is in the key).
const bucketRetention = 48 * time.Hour

// codeConditionFailed is a CancellationReason code of TransactWriteItems.
const codeConditionFailed = "ConditionalCheckFailed"

// dynamoAPI is the part of *dynamodb.Client the ledger uses.
type dynamoAPI interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, optFns ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, optFns ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, optFns ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
}

// Options configure a Ledger.
type Options struct {
	Table string
	Now   func() time.Time // defaults to time.Now
}

// Ledger reads and writes the state table.
type Ledger struct {
	client dynamoAPI
	table  string
	now    func() time.Time
}

// New returns a Ledger on opts.Table (client is a *dynamodb.Client in production).
func New(client dynamoAPI, opts Options) *Ledger {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Ledger{client: client, table: opts.Table, now: now}
}

// Day is the quota day of t in loc ("2006-01-02"); a nil loc means UTC.
func Day(t time.Time, loc *time.Location) string {
	if loc == nil {
		loc = time.UTC
	}
	return t.In(loc).Format(time.DateOnly)
}

// Inflight is a refresh that has claimed the lease and may have reached the
// provider: From is the version it started from, To the deterministic id its
// result is written under.
type Inflight struct {
	From, To  string
	StartedAt time.Time
	// Escrow is the rotated refresh token, sealed by pkg/escrow for (name, To),
	// when Secrets Manager refused its persist (Ledger.Escrow); nil otherwise.
	// Only the commit that settles the refresh removes it.
	Escrow     []byte
	EscrowedAt time.Time
	// Unspent: the holder released it knowing the refresh token was not spent
	// (Release.Unspent); the refresh need not be recovered at once.
	Unspent bool
	// Unpresented: no request carrying the refresh token has been sent under this
	// in-flight refresh (a claim writes it; MarkPresented removes it). PresentedAt:
	// when the first such request was about to be sent. See Presented.
	Unpresented bool
	PresentedAt time.Time
	// PresentedBy is the holder that wrote the mark; HolderUntil when its invocation
	// ends at the latest (zero: not known). Until then that holder may still save the
	// rotated token (Escrow) or take its mark back (Unmark), whoever holds the lease.
	PresentedBy string
	HolderUntil time.Time
}

// Presented reports whether a request carrying the refresh token may have been sent
// under this in-flight refresh, and from when: a provider's reuse grace runs from
// then, and outside it the token is never presented again (docs/design.md §4). A
// record written before presentations were marked has neither field: its refresh
// counts as presented when it started.
func (in *Inflight) Presented() (time.Time, bool) {
	switch {
	case in == nil || in.Unpresented || in.Unspent:
		return time.Time{}, false
	case !in.PresentedAt.IsZero():
		return in.PresentedAt, true
	}
	return in.StartedAt, true
}

// Interrupted reports whether the record has a refresh in flight that may have
// spent its refresh token: recovery settles it before anything else.
func (r Record) Interrupted() bool {
	return r.Inflight != nil && (!r.Inflight.Unspent || r.Inflight.Escrow != nil)
}

// Record is one token's state.
type Record struct {
	Name                string
	VersionID           string // committed private version (the authoritative pointer)
	PrevVersionID       string
	Generation          int64
	PublishedGeneration int64
	Status              string // StatusActive, StatusNeedsReauth or StatusInvalidConfig
	StatusReason        string // never a secret
	ExpiresAt           time.Time
	NextDueAt           time.Time
	StaleAt             time.Time // from when the committed access token is inside its refresh margin
	LeaseHolder         string
	LeaseUntil          time.Time
	Inflight            *Inflight
	ConsecutiveFailures int
	LastError           string
	RefreshExpiresAt    time.Time   // when the committed refresh token expires (zero: unknown or none)
	CredentialsExpireAt time.Time   // when the provider credentials (client or entity secret) expire, if stated
	MaxWrites           int         // the token's write budget per 24 h (0: not known yet)
	Writes              []time.Time // when each private version of the last 24 h was written (write budget)
	// LabelFrom: a move of the private secret's AWSCURRENT from this version to the
	// committed one failed (MarkLabelLag); the next sweep repairs it from the record.
	LabelFrom string
}

// WritesSince counts the private versions written at or after t.
func (r Record) WritesSince(t time.Time) int {
	n := 0
	for _, w := range r.Writes {
		if !w.Before(t) {
			n++
		}
	}
	return n
}

// recordItem is the stored layout of a Record.
type recordItem struct {
	PK                  string        `dynamodbav:"pk"`
	Name                string        `dynamodbav:"name"`
	VersionID           string        `dynamodbav:"version_id,omitempty"`
	PrevVersionID       string        `dynamodbav:"prev_version_id,omitempty"`
	Generation          int64         `dynamodbav:"generation"`
	PublishedGeneration int64         `dynamodbav:"published_generation"`
	Status              string        `dynamodbav:"status,omitempty"`
	StatusReason        string        `dynamodbav:"status_reason,omitempty"`
	ExpiresAt           string        `dynamodbav:"expires_at,omitempty"`
	NextDueAt           string        `dynamodbav:"next_due_at,omitempty"`
	StaleAt             string        `dynamodbav:"stale_at,omitempty"`
	DueShard            string        `dynamodbav:"due_shard,omitempty"`
	DueAt               int64         `dynamodbav:"due_at,omitempty"`
	LeaseHolder         string        `dynamodbav:"lease_holder,omitempty"`
	LeaseUntil          int64         `dynamodbav:"lease_until,omitempty"` // unix ms
	Inflight            *inflightItem `dynamodbav:"inflight,omitempty"`
	ConsecutiveFailures int           `dynamodbav:"consecutive_failures"`
	LastError           string        `dynamodbav:"last_error,omitempty"`
	RefreshExpiresAt    string        `dynamodbav:"refresh_expires_at,omitempty"`
	Writes              []int64       `dynamodbav:"writes,omitempty"` // unix ms
	CredentialsExpireAt string        `dynamodbav:"credentials_expire_at,omitempty"`
	MaxWrites           int           `dynamodbav:"max_writes,omitempty"`
	LabelFrom           string        `dynamodbav:"label_from,omitempty"`
}

type inflightItem struct {
	From       string `dynamodbav:"from_version,omitempty"`
	To         string `dynamodbav:"to_version,omitempty"`
	StartedAt  string `dynamodbav:"started_at,omitempty"`
	Escrow     []byte `dynamodbav:"escrow,omitempty"`
	EscrowedAt string `dynamodbav:"escrowed_at,omitempty"`
	Unspent    bool   `dynamodbav:"unspent,omitempty"`
	// Unpresented and PresentedAt: see Inflight.Presented.
	Unpresented bool   `dynamodbav:"unpresented,omitempty"`
	PresentedAt string `dynamodbav:"presented_at,omitempty"`
	PresentedBy string `dynamodbav:"presented_by,omitempty"`
	HolderUntil int64  `dynamodbav:"holder_until,omitempty"` // unix ms; 0: not known
}

// Attribute paths inside inflight (the names of inflightItem's fields).
const (
	pathInflightFrom       = attrInflight + ".from_version"
	pathInflightTo         = attrInflight + ".to_version"
	pathInflightStartedAt  = attrInflight + ".started_at"
	pathInflightEscrow     = attrInflight + ".escrow"
	pathInflightEscrowedAt = attrInflight + ".escrowed_at"
	pathInflightUnspent    = attrInflight + ".unspent"
	pathInflightUnpres     = attrInflight + ".unpresented"
	pathInflightPresAt     = attrInflight + ".presented_at"
	pathInflightPresBy     = attrInflight + ".presented_by"
	pathInflightHolderTill = attrInflight + ".holder_until"
)

type bucketItem struct {
	Used           int   `dynamodbav:"used"`
	Limit          int   `dynamodbav:"limit"`
	ThrottledUntil int64 `dynamodbav:"throttled_until"` // unix ms
}

func tokenKey(name string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{attrPK: &types.AttributeValueMemberS{Value: tokenPrefix + name}}
}

func bucketKey(key, day string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{attrPK: &types.AttributeValueMemberS{Value: quotaPrefix + key + "#" + day}}
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("attribute %s: %w", field, err)
	}
	return t, nil
}

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func toItem(r Record) recordItem {
	it := recordItem{
		PK:                  tokenPrefix + r.Name,
		Name:                r.Name,
		VersionID:           r.VersionID,
		PrevVersionID:       r.PrevVersionID,
		Generation:          r.Generation,
		PublishedGeneration: r.PublishedGeneration,
		Status:              r.Status,
		StatusReason:        r.StatusReason,
		ExpiresAt:           formatTime(r.ExpiresAt),
		NextDueAt:           formatTime(r.NextDueAt),
		StaleAt:             formatTime(r.StaleAt),
		LeaseHolder:         r.LeaseHolder,
		ConsecutiveFailures: r.ConsecutiveFailures,
		LastError:           r.LastError,
		RefreshExpiresAt:    formatTime(r.RefreshExpiresAt),
		CredentialsExpireAt: formatTime(r.CredentialsExpireAt),
		MaxWrites:           r.MaxWrites,
		LabelFrom:           r.LabelFrom,
	}
	for _, w := range r.Writes {
		it.Writes = append(it.Writes, w.UnixMilli())
	}
	if inDueIndex(r.Status, r.NextDueAt) {
		it.DueShard, it.DueAt = DueShard, r.NextDueAt.Unix()
	}
	if !r.LeaseUntil.IsZero() {
		it.LeaseUntil = r.LeaseUntil.UnixMilli()
	}
	if r.Inflight != nil {
		it.Inflight = &inflightItem{
			From: r.Inflight.From, To: r.Inflight.To, StartedAt: formatTime(r.Inflight.StartedAt),
			Escrow: r.Inflight.Escrow, EscrowedAt: formatTime(r.Inflight.EscrowedAt), Unspent: r.Inflight.Unspent,
			Unpresented: r.Inflight.Unpresented, PresentedAt: formatTime(r.Inflight.PresentedAt),
			PresentedBy: r.Inflight.PresentedBy,
		}
		if !r.Inflight.HolderUntil.IsZero() {
			it.Inflight.HolderUntil = r.Inflight.HolderUntil.UnixMilli()
		}
	}
	return it
}

func decodeRecord(av map[string]types.AttributeValue) (Record, error) {
	var it recordItem
	if err := attributevalue.UnmarshalMap(av, &it); err != nil {
		return Record{}, err
	}
	r := Record{
		Name:                it.Name,
		VersionID:           it.VersionID,
		PrevVersionID:       it.PrevVersionID,
		Generation:          it.Generation,
		PublishedGeneration: it.PublishedGeneration,
		Status:              it.Status,
		StatusReason:        it.StatusReason,
		LeaseHolder:         it.LeaseHolder,
		LeaseUntil:          msTime(it.LeaseUntil),
		ConsecutiveFailures: it.ConsecutiveFailures,
		LastError:           it.LastError,
		MaxWrites:           it.MaxWrites,
		LabelFrom:           it.LabelFrom,
	}
	if r.Name == "" {
		r.Name = strings.TrimPrefix(it.PK, tokenPrefix)
	}
	var err error
	if r.ExpiresAt, err = parseTime(attrExpiresAt, it.ExpiresAt); err != nil {
		return Record{}, err
	}
	if r.NextDueAt, err = parseTime(attrNextDueAt, it.NextDueAt); err != nil {
		return Record{}, err
	}
	if r.CredentialsExpireAt, err = parseTime(attrCredentialsExpireAt, it.CredentialsExpireAt); err != nil {
		return Record{}, err
	}
	if r.StaleAt, err = parseTime(attrStaleAt, it.StaleAt); err != nil {
		return Record{}, err
	}
	if r.RefreshExpiresAt, err = parseTime(attrRefreshExpiresAt, it.RefreshExpiresAt); err != nil {
		return Record{}, err
	}
	for _, ms := range it.Writes {
		r.Writes = append(r.Writes, msTime(ms))
	}
	if it.Inflight != nil {
		started, err := parseTime("inflight.started_at", it.Inflight.StartedAt)
		if err != nil {
			return Record{}, err
		}
		escrowedAt, err := parseTime("inflight.escrowed_at", it.Inflight.EscrowedAt)
		if err != nil {
			return Record{}, err
		}
		presentedAt, err := parseTime("inflight.presented_at", it.Inflight.PresentedAt)
		if err != nil {
			return Record{}, err
		}
		r.Inflight = &Inflight{From: it.Inflight.From, To: it.Inflight.To, StartedAt: started, Escrow: it.Inflight.Escrow, EscrowedAt: escrowedAt, Unspent: it.Inflight.Unspent,
			Unpresented: it.Inflight.Unpresented, PresentedAt: presentedAt, PresentedBy: it.Inflight.PresentedBy}
		if it.Inflight.HolderUntil > 0 {
			r.Inflight.HolderUntil = msTime(it.Inflight.HolderUntil)
		}
	}
	return r, nil
}

// Get reads a token record (consistently). ErrNotFound when there is none.
func (l *Ledger) Get(ctx context.Context, name string) (Record, error) {
	out, err := l.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(l.table),
		Key:            tokenKey(name),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return Record{}, fmt.Errorf("ledger: get %s: %w", name, err)
	}
	if out.Item == nil {
		return Record{}, fmt.Errorf("ledger: get %s: %w", name, ErrNotFound)
	}
	r, err := decodeRecord(out.Item)
	if err != nil {
		return Record{}, fmt.Errorf("ledger: get %s: %w", name, err)
	}
	return r, nil
}

// List returns every token record, sorted by name (for the operator CLI).
func (l *Ledger) List(ctx context.Context) ([]Record, error) {
	expr, err := expression.NewBuilder().WithFilter(expression.Name(attrPK).BeginsWith(tokenPrefix)).Build()
	if err != nil {
		return nil, fmt.Errorf("ledger: list: %w", err)
	}
	p := dynamodb.NewScanPaginator(l.client, &dynamodb.ScanInput{
		TableName:                 aws.String(l.table),
		FilterExpression:          expr.Filter(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
		ConsistentRead:            aws.Bool(true),
	})
	var recs []Record
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("ledger: list: %w", err)
		}
		for _, av := range out.Items {
			r, err := decodeRecord(av)
			if err != nil {
				return nil, fmt.Errorf("ledger: list: %w", err)
			}
			recs = append(recs, r)
		}
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Name < recs[j].Name })
	return recs, nil
}

// Create writes a new token record. ErrExists when one is already there.
func (l *Ledger) Create(ctx context.Context, r Record) error {
	if r.Name == "" {
		return errors.New("ledger: create: empty name")
	}
	av, err := attributevalue.MarshalMap(toItem(r))
	if err != nil {
		return fmt.Errorf("ledger: create %s: %w", r.Name, err)
	}
	expr, err := expression.NewBuilder().WithCondition(expression.Name(attrPK).AttributeNotExists()).Build()
	if err != nil {
		return fmt.Errorf("ledger: create %s: %w", r.Name, err)
	}
	_, err = l.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(l.table),
		Item:                      av,
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return fmt.Errorf("ledger: create %s: %w", r.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("ledger: create %s: %w", r.Name, err)
	}
	return nil
}

// updateResult is one conditional UpdateItem's answer: the item as stored
// (ALL_NEW) on success, or as the failed condition saw it (nil when there is
// none) with failed = true.
type updateResult struct {
	item   map[string]types.AttributeValue
	failed bool
}

func (u updateResult) record(op, name string) (Record, error) {
	if u.item == nil {
		return Record{}, fmt.Errorf("ledger: %s %s: %w", op, name, errNoItem)
	}
	r, err := decodeRecord(u.item)
	if err != nil {
		return Record{}, fmt.Errorf("ledger: %s %s: %w", op, name, err)
	}
	return r, nil
}

// update runs one conditional UpdateItem that returns the item as stored, so
// callers never re-derive it by hand.
func (l *Ledger) update(ctx context.Context, key map[string]types.AttributeValue, upd expression.UpdateBuilder, cond expression.ConditionBuilder) (updateResult, error) {
	expr, err := expression.NewBuilder().WithUpdate(upd).WithCondition(cond).Build()
	if err != nil {
		return updateResult{}, err
	}
	out, err := l.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(l.table),
		Key:                       key,
		UpdateExpression:          expr.Update(),
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
		ReturnValues:              types.ReturnValueAllNew,
		// The item as the condition saw it, atomically: no second read that
		// could observe a later state.
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return updateResult{item: ccf.Item, failed: true}, nil
	}
	if err != nil {
		return updateResult{}, err
	}
	return updateResult{item: out.Attributes}, nil
}

// Due returns the token records in the sweep index whose next_due_at is at or
// before before (docs/design.md §3 sweep): one Query per page of the sparse index,
// never a read of a token that is not due. Index reads are eventually
// consistent; every action on a record is a conditional write on its
// generation, so a stale entry costs at most a refused claim.
func (l *Ledger) Due(ctx context.Context, before time.Time) ([]Record, error) {
	kc := expression.Key(attrDueShard).Equal(expression.Value(DueShard)).
		And(expression.Key(attrDueAt).LessThanEqual(expression.Value(before.Unix())))
	expr, err := expression.NewBuilder().WithKeyCondition(kc).Build()
	if err != nil {
		return nil, fmt.Errorf("ledger: due: %w", err)
	}
	p := dynamodb.NewQueryPaginator(l.client, &dynamodb.QueryInput{
		TableName:                 aws.String(l.table),
		IndexName:                 aws.String(DueIndex),
		KeyConditionExpression:    expr.KeyCondition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	var recs []Record
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("ledger: due: %w", err)
		}
		for _, av := range out.Items {
			r, err := decodeRecord(av)
			if err != nil {
				return nil, fmt.Errorf("ledger: due: %w", err)
			}
			recs = append(recs, r)
		}
	}
	return recs, nil
}
