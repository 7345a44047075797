package ledger_test

import (
	"context"
	"errors"
	"os"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/uuid"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
)

func TestMain(m *testing.M) { os.Exit(awsemu.RunTests(m)) }

// clock is the injected time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// t0 is a fixed start time with a sub-millisecond part, to catch rounding.
var t0 = time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)

type env struct {
	ctx   context.Context
	raw   *dynamodb.Client
	table string
	clock *clock
	l     *ledger.Ledger
}

// newEnv gives every test its own table on the shared moto server.
func newEnv(t *testing.T) *env { return newEnvTB(t) }

func newEnvTB(t testing.TB) *env {
	t.Helper()
	cfg := awsemu.Shared(t).AWSConfig(t)
	raw := dynamodb.NewFromConfig(cfg)
	table := "tr-test-" + uuid.NewString()[:12]
	ctx := context.Background()
	if err := ledger.CreateTable(ctx, raw, table); err != nil {
		t.Fatalf("CreateTable: %v", err)
	}
	c := &clock{t: t0}
	return &env{ctx: ctx, raw: raw, table: table, clock: c, l: ledger.New(raw, ledger.Options{Table: table, Now: c.Now})}
}

func (e *env) create(t *testing.T, r ledger.Record) {
	t.Helper()
	if err := e.l.Create(e.ctx, r); err != nil {
		t.Fatalf("Create(%s): %v", r.Name, err)
	}
}

func (e *env) get(t *testing.T, name string) ledger.Record {
	t.Helper()
	r, err := e.l.Get(e.ctx, name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	return r
}

func (e *env) rawItem(t *testing.T, pk string) map[string]types.AttributeValue {
	t.Helper()
	out, err := e.raw.GetItem(e.ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(e.table),
		Key:            map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: pk}},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("GetItem(%s): %v", pk, err)
	}
	return out.Item
}

func (e *env) quota(t *testing.T, key, day string) ledger.Bucket {
	t.Helper()
	b, err := e.l.Quota(e.ctx, key, day)
	if err != nil {
		t.Fatalf("Quota: %v", err)
	}
	return b
}

func TestCreateTable(t *testing.T) {
	e := newEnv(t)
	// A second call on the existing table is fine.
	if err := ledger.CreateTable(e.ctx, e.raw, e.table); err != nil {
		t.Fatalf("CreateTable again: %v", err)
	}
	d, err := e.raw.DescribeTable(e.ctx, &dynamodb.DescribeTableInput{TableName: aws.String(e.table)})
	if err != nil {
		t.Fatalf("DescribeTable: %v", err)
	}
	tbl := d.Table
	if tbl.TableStatus != types.TableStatusActive {
		t.Errorf("status = %s, want ACTIVE", tbl.TableStatus)
	}
	if len(tbl.KeySchema) != 1 || aws.ToString(tbl.KeySchema[0].AttributeName) != "pk" || tbl.KeySchema[0].KeyType != types.KeyTypeHash {
		t.Errorf("key schema = %+v, want pk HASH", tbl.KeySchema)
	}
	if tbl.BillingModeSummary == nil || tbl.BillingModeSummary.BillingMode != types.BillingModePayPerRequest {
		t.Errorf("billing mode = %+v, want PAY_PER_REQUEST", tbl.BillingModeSummary)
	}
	ttl, err := e.raw.DescribeTimeToLive(e.ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(e.table)})
	if err != nil {
		t.Fatalf("DescribeTimeToLive: %v", err)
	}
	if got := ttl.TimeToLiveDescription; got == nil || aws.ToString(got.AttributeName) != "ttl" || got.TimeToLiveStatus != types.TimeToLiveStatusEnabled {
		t.Errorf("TTL = %+v, want ttl ENABLED", got)
	}
}

func TestCreateGet(t *testing.T) {
	e := newEnv(t)
	full := ledger.Record{
		Name:                "acme",
		VersionID:           "v2",
		PrevVersionID:       "v1",
		Generation:          7,
		PublishedGeneration: 6,
		Status:              ledger.StatusActive,
		StatusReason:        "ok",
		ExpiresAt:           t0.Add(24 * time.Hour),
		NextDueAt:           t0.Add(12 * time.Hour),
		LeaseHolder:         "inv-1",
		LeaseUntil:          t0.Add(time.Minute).Truncate(time.Millisecond),
		Inflight:            &ledger.Inflight{From: "v2", To: "v3", StartedAt: t0},
		ConsecutiveFailures: 2,
		LastError:           "provider: 503",
	}
	e.create(t, full)
	e.create(t, ledger.Record{Name: "bare", VersionID: "b1", Status: ledger.StatusActive})

	if got := e.get(t, "acme"); !reflect.DeepEqual(got, full) {
		t.Errorf("Get(acme) =\n%+v\nwant\n%+v", got, full)
	}
	bare := e.get(t, "bare")
	if bare.Inflight != nil || !bare.LeaseUntil.IsZero() || !bare.ExpiresAt.IsZero() || bare.Generation != 0 {
		t.Errorf("Get(bare) = %+v, want zero lease, inflight and times", bare)
	}

	// The stored layout is a contract with operators and tokenctl.
	item := e.rawItem(t, "token#acme")
	wantTypes := map[string]string{
		"pk": "S", "name": "S", "version_id": "S", "prev_version_id": "S", "generation": "N",
		"published_generation": "N", "status": "S", "status_reason": "S", "expires_at": "S",
		"next_due_at": "S", "lease_holder": "S", "lease_until": "N", "inflight": "M",
		"consecutive_failures": "N", "last_error": "S",
		"due_shard": "S", "due_at": "N", // the sweep index (docs/design.md §2)
	}
	for attr, typ := range wantTypes {
		if got := avType(item[attr]); got != typ {
			t.Errorf("attribute %s type = %s, want %s", attr, got, typ)
		}
	}
	if len(item) != len(wantTypes) {
		t.Errorf("item has %d attributes, want %d: %v", len(item), len(wantTypes), keys(item))
	}
	if got := item["lease_until"].(*types.AttributeValueMemberN).Value; got != "1795341660123" {
		t.Errorf("lease_until = %s, want unix milliseconds 1795341660123", got)
	}
	if got := item["expires_at"].(*types.AttributeValueMemberS).Value; got != "2026-11-23T10:00:00.123456789Z" {
		t.Errorf("expires_at = %s, want RFC3339Nano UTC", got)
	}
	infl := item["inflight"].(*types.AttributeValueMemberM).Value
	if got := keys(infl); !reflect.DeepEqual(got, []string{"from_version", "started_at", "to_version"}) {
		t.Errorf("inflight attributes = %v", got)
	}
	for _, absent := range []string{"expires_at", "next_due_at", "lease_until", "inflight", "lease_holder"} {
		if _, ok := e.rawItem(t, "token#bare")[absent]; ok {
			t.Errorf("bare record stores %s, want it omitted when zero", absent)
		}
	}

	if err := e.l.Create(e.ctx, ledger.Record{Name: "acme"}); !errors.Is(err, ledger.ErrExists) {
		t.Errorf("Create(existing) err = %v, want ErrExists", err)
	}
	if got := e.get(t, "acme"); got.Generation != 7 {
		t.Errorf("generation after refused Create = %d, want 7", got.Generation)
	}
	if _, err := e.l.Get(e.ctx, "missing"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("Get(missing) err = %v, want ErrNotFound", err)
	}
}

func avType(av types.AttributeValue) string {
	switch av.(type) {
	case *types.AttributeValueMemberS:
		return "S"
	case *types.AttributeValueMemberN:
		return "N"
	case *types.AttributeValueMemberM:
		return "M"
	case nil:
		return "absent"
	default:
		return "other"
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestList(t *testing.T) {
	e := newEnv(t)
	for _, n := range []string{"charlie", "alpha", "bravo"} {
		e.create(t, ledger.Record{Name: n, VersionID: "v-" + n, Status: ledger.StatusActive})
	}
	// A quota bucket in the same table must not show up as a token.
	if err := e.l.ReserveQuota(e.ctx, ledger.QuotaReservation{Key: "k", Day: "2026-11-22", Limit: 5}); err != nil {
		t.Fatalf("ReserveQuota: %v", err)
	}
	recs, err := e.l.List(e.ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Name+"="+r.VersionID)
	}
	want := []string{"alpha=v-alpha", "bravo=v-bravo", "charlie=v-charlie"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
}

func TestDay(t *testing.T) {
	ist := time.FixedZone("IST", 5*3600+1800)
	tests := []struct {
		name string
		t    time.Time
		loc  *time.Location
		want string
	}{
		{name: "UTC evening is the next day in India", t: time.Date(2026, 1, 1, 20, 0, 0, 0, time.UTC), loc: ist, want: "2026-01-02"},
		{name: "same instant in UTC", t: time.Date(2026, 1, 1, 20, 0, 0, 0, time.UTC), loc: time.UTC, want: "2026-01-01"},
		{name: "nil location is UTC", t: time.Date(2026, 1, 1, 23, 59, 0, 0, ist), loc: nil, want: "2026-01-01"},
		{name: "just before midnight in India", t: time.Date(2026, 1, 1, 18, 29, 59, 0, time.UTC), loc: ist, want: "2026-01-01"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ledger.Day(tc.t, tc.loc); got != tc.want {
				t.Errorf("Day = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestThrottledError(t *testing.T) {
	var err error = &ledger.ThrottledError{Until: time.Date(2026, 11, 22, 15, 30, 0, 0, time.FixedZone("IST", 19800))}
	if got, want := err.Error(), "ledger: throttled until 2026-11-22T10:00:00Z"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	wrapped := errors.Join(errors.New("context"), err)
	if !errors.Is(wrapped, ledger.ErrThrottled) {
		t.Error("errors.Is(err, ErrThrottled) = false, want true")
	}
	if errors.Is(wrapped, ledger.ErrQuotaExhausted) {
		t.Error("errors.Is(err, ErrQuotaExhausted) = true, want false")
	}
}

func numAttr(t *testing.T, item map[string]types.AttributeValue, name string) int64 {
	t.Helper()
	n, ok := item[name].(*types.AttributeValueMemberN)
	if !ok {
		t.Fatalf("attribute %s = %T, want N", name, item[name])
	}
	v, err := strconv.ParseInt(n.Value, 10, 64)
	if err != nil {
		t.Fatalf("attribute %s = %q: %v", name, n.Value, err)
	}
	return v
}
