package faultproxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/smithy-go"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/faultproxy"
)

const (
	opCreateSecret = "secretsmanager.CreateSecret"
	opPutSecret    = "secretsmanager.PutSecretValue"
	opGetSecret    = "secretsmanager.GetSecretValue"
	opCreateTable  = "DynamoDB_20120810.CreateTable"
	opPutItem      = "DynamoDB_20120810.PutItem"
	opGetItem      = "DynamoDB_20120810.GetItem"
	opUpdateItem   = "DynamoDB_20120810.UpdateItem"
	opTransact     = "DynamoDB_20120810.TransactWriteItems"
)

// rig is one proxy in front of the shared moto, with SDK clients through the
// proxy and direct ones that bypass it (to check what really landed).
type rig struct {
	p        *faultproxy.Proxy
	sm       *secretsmanager.Client // via proxy
	ddb      *dynamodb.Client       // via proxy
	smDirect *secretsmanager.Client
	dbDirect *dynamodb.Client
	table    string
}

var nameSeq atomic.Int64

// uniq makes resource names unique across the shared moto's lifetime.
func uniq(t testing.TB, kind string) string {
	clean := regexp.MustCompile(`[^A-Za-z0-9-]+`).ReplaceAllString(t.Name(), "-")
	return fmt.Sprintf("fp-%s-%s-%d", clean, kind, nameSeq.Add(1))
}

// awsConfig builds an SDK configuration for endpoint making at most attempts
// attempts, with no backoff and no client-side retry quota so retries are
// immediate and deterministic.
func awsConfig(t testing.TB, endpoint string, attempts int) aws.Config {
	t.Helper()
	cfg, err := awsemu.AWSConfig(context.Background(), endpoint)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Retryer = func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = attempts
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
			o.RateLimiter = ratelimit.None
		})
	}
	return cfg
}

func newRig(t testing.TB, attempts int) *rig {
	t.Helper()
	moto := awsemu.Shared(t)
	p, err := faultproxy.New(moto.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	via := awsConfig(t, p.URL(), attempts)
	direct := awsConfig(t, moto.URL, 3)
	r := &rig{
		p:        p,
		sm:       secretsmanager.NewFromConfig(via),
		ddb:      dynamodb.NewFromConfig(via),
		smDirect: secretsmanager.NewFromConfig(direct),
		dbDirect: dynamodb.NewFromConfig(direct),
		table:    uniq(t, "table"),
	}
	_, err = r.dbDirect.CreateTable(context.Background(), &dynamodb.CreateTableInput{
		TableName:            aws.String(r.table),
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash}},
		BillingMode:          ddbtypes.BillingModePayPerRequest,
	})
	if err != nil {
		t.Fatalf("create table: %v", err)
	}
	return r
}

func key(pk string) map[string]ddbtypes.AttributeValue {
	return map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: pk}}
}

// item reads pk straight from moto; nil when absent.
func (r *rig) item(t *testing.T, pk string) map[string]ddbtypes.AttributeValue {
	t.Helper()
	out, err := r.dbDirect.GetItem(context.Background(), &dynamodb.GetItemInput{
		TableName: aws.String(r.table), Key: key(pk), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("direct GetItem: %v", err)
	}
	return out.Item
}

func (r *rig) putItem(ctx context.Context, pk, v string) error {
	_, err := r.ddb.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(r.table),
		Item:      map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: pk}, "v": &ddbtypes.AttributeValueMemberS{Value: v}},
	})
	return err
}

// createSecret creates a secret straight in moto.
func (r *rig) createSecret(t *testing.T, name, value string) {
	t.Helper()
	_, err := r.smDirect.CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{
		Name: aws.String(name), SecretString: aws.String(value),
	})
	if err != nil {
		t.Fatalf("direct CreateSecret: %v", err)
	}
}

// directVersion reads one version straight from moto; "" when absent.
func (r *rig) directVersion(t *testing.T, name, versionID string) string {
	t.Helper()
	out, err := r.smDirect.GetSecretValue(context.Background(), &secretsmanager.GetSecretValueInput{
		SecretId: aws.String(name), VersionId: aws.String(versionID),
	})
	var nf *smtypes.ResourceNotFoundException
	if errors.As(err, &nf) {
		return ""
	}
	if err != nil {
		t.Fatalf("direct GetSecretValue: %v", err)
	}
	return aws.ToString(out.SecretString)
}

func (r *rig) putSecret(ctx context.Context, name, token, value string) error {
	_, err := r.sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId: aws.String(name), ClientRequestToken: aws.String(token),
		SecretString: aws.String(value), VersionStages: []string{"TR_PENDING"},
	})
	return err
}

func TestForwardsSecretsManager(t *testing.T) {
	r := newRig(t, 1)
	ctx := context.Background()
	name := uniq(t, "secret")

	if _, err := r.sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name: aws.String(name), SecretString: aws.String(`{"refresh_token":"rt-1"}`),
	}); err != nil {
		t.Fatalf("CreateSecret via proxy: %v", err)
	}
	const token = "11111111-1111-4111-8111-111111111111"
	if err := r.putSecret(ctx, name, token, `{"refresh_token":"rt-2"}`); err != nil {
		t.Fatalf("PutSecretValue via proxy: %v", err)
	}
	out, err := r.sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{
		SecretId: aws.String(name), VersionStage: aws.String("TR_PENDING"),
	})
	if err != nil {
		t.Fatalf("GetSecretValue via proxy: %v", err)
	}
	if got, want := aws.ToString(out.SecretString), `{"refresh_token":"rt-2"}`; got != want {
		t.Errorf("got secret %q, want %q", got, want)
	}
	if got := aws.ToString(out.VersionId); got != token {
		t.Errorf("got version %q, want %q", got, token)
	}
	// A modelled error from moto passes through typed.
	_, err = r.sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(name + "-missing")})
	var nf *smtypes.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Errorf("got %v, want *ResourceNotFoundException relayed from moto", err)
	}
	if got := r.directVersion(t, name, token); got != `{"refresh_token":"rt-2"}` {
		t.Errorf("moto holds %q, want the value written via the proxy", got)
	}
	want := []string{opCreateSecret, opPutSecret, opGetSecret, opGetSecret}
	if got := r.p.Ops(); !slices.Equal(got, want) {
		t.Errorf("got ops %v, want %v", got, want)
	}
}

func TestForwardsDynamoDB(t *testing.T) {
	r := newRig(t, 1)
	ctx := context.Background()

	if err := r.putItem(ctx, "a", "1"); err != nil {
		t.Fatalf("PutItem via proxy: %v", err)
	}
	_, err := r.ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{
		{Update: &ddbtypes.Update{
			TableName: aws.String(r.table), Key: key("a"),
			UpdateExpression:          aws.String("SET v = :n"),
			ConditionExpression:       aws.String("v = :o"),
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":n": &ddbtypes.AttributeValueMemberS{Value: "2"}, ":o": &ddbtypes.AttributeValueMemberS{Value: "1"}},
		}},
		{Put: &ddbtypes.Put{TableName: aws.String(r.table), Item: key("b")}},
	}})
	if err != nil {
		t.Fatalf("TransactWriteItems via proxy: %v", err)
	}
	out, err := r.ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(r.table), Key: key("a"), ConsistentRead: aws.Bool(true)})
	if err != nil {
		t.Fatalf("GetItem via proxy: %v", err)
	}
	if v, _ := out.Item["v"].(*ddbtypes.AttributeValueMemberS); v == nil || v.Value != "2" {
		t.Errorf("got item %v, want v=2", out.Item)
	}
	if r.item(t, "b") == nil {
		t.Error("item b written in the transaction is missing in moto")
	}
	// A real condition failure from moto reaches the SDK typed.
	_, err = r.ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(r.table), Key: key("a"),
		UpdateExpression:          aws.String("SET v = :n"),
		ConditionExpression:       aws.String("v = :o"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":n": &ddbtypes.AttributeValueMemberS{Value: "3"}, ":o": &ddbtypes.AttributeValueMemberS{Value: "1"}},
	})
	var ccf *ddbtypes.ConditionalCheckFailedException
	if !errors.As(err, &ccf) {
		t.Errorf("got %v, want *ConditionalCheckFailedException relayed from moto", err)
	}
	want := []string{opPutItem, opTransact, opGetItem, opUpdateItem}
	if got := r.p.Ops(); !slices.Equal(got, want) {
		t.Errorf("got ops %v, want %v", got, want)
	}
}

// TestVerbatim checks byte-level forwarding against a recording upstream:
// method, path under the upstream's prefix, query, body, SigV4 headers and
// Host go up unchanged; status, headers and body come back unchanged.
func TestVerbatim(t *testing.T) {
	type seen struct {
		method, uri, host, auth, date, target, te string
		body                                      []byte
	}
	got := make(chan seen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.RequestURI, r.Host, r.Header.Get("Authorization"), r.Header.Get("X-Amz-Date"),
			r.Header.Get("X-Amz-Target"), r.Header.Get("Proxy-Authorization"), b}
		w.Header().Set("X-Amz-Crc32", "12345")
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte(`{"answer":42}`))
	}))
	defer up.Close()
	p, err := faultproxy.New(up.URL + "/prefix/")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	body := []byte(`{"TableName":"t"}`)
	req, _ := http.NewRequest(http.MethodPost, p.URL()+"/a/b?x=1&y=%2F", bytes.NewReader(body))
	req.Host = "dynamodb.us-east-1.amazonaws.com"
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc")
	req.Header.Set("X-Amz-Date", "20260101T000000Z")
	req.Header.Set("X-Amz-Target", opGetItem)
	req.Header.Set("Proxy-Authorization", "hop-by-hop")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	s := <-got
	checks := []struct{ name, got, want string }{
		{"method", s.method, http.MethodPost},
		{"request URI", s.uri, "/prefix/a/b?x=1&y=%2F"},
		{"host", s.host, "dynamodb.us-east-1.amazonaws.com"},
		{"authorization", s.auth, req.Header.Get("Authorization")},
		{"x-amz-date", s.date, "20260101T000000Z"},
		{"x-amz-target", s.target, opGetItem},
		{"hop-by-hop header", s.te, ""},
		{"request body", string(s.body), string(body)},
		{"response body", string(rb), `{"answer":42}`},
		{"x-amz-crc32", resp.Header.Get("X-Amz-Crc32"), "12345"},
		{"content-type", resp.Header.Get("Content-Type"), "application/x-amz-json-1.0"},
		{"status", fmt.Sprint(resp.StatusCode), fmt.Sprint(http.StatusTeapot)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestNewRejectsBadUpstream(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:5000", "ftp://x", "http://"} {
		if p, err := faultproxy.New(u); err == nil {
			p.Close()
			t.Errorf("New(%q): got nil error, want one", u)
		}
	}
}

func TestOpAndMatch(t *testing.T) {
	r := newRig(t, 1)
	ctx := context.Background()
	private, access := uniq(t, "private/x"), uniq(t, "access/x")
	r.createSecret(t, private, "p0")
	r.createSecret(t, access, "a0")

	// Only PutSecretValue on private secrets is refused; GetSecretValue of
	// the same secret and puts to the access secret pass.
	r.p.Add(faultproxy.Rule{
		Op:    opPutSecret,
		Match: func(b []byte) bool { return bytes.Contains(b, []byte("private/")) },
		Error: faultproxy.ThrottlingError(faultproxy.SecretsManager),
	})
	tests := []struct {
		name    string
		call    func() error
		refused bool
	}{
		{"put private", func() error { return r.putSecret(ctx, private, "22222222-2222-4222-8222-222222222222", "p1") }, true},
		{"put access", func() error { return r.putSecret(ctx, access, "33333333-3333-4333-8333-333333333333", "a1") }, false},
		{"get private", func() error {
			_, err := r.sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(private)})
			return err
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if got := isCode(err, "ThrottlingException"); got != tc.refused {
				t.Errorf("got err %v, want refused=%v", err, tc.refused)
			}
			if !tc.refused && err != nil {
				t.Errorf("got %v, want success", err)
			}
		})
	}
	if got := r.directVersion(t, private, "22222222-2222-4222-8222-222222222222"); got != "" {
		t.Errorf("refused put reached moto: version holds %q", got)
	}
	if got := r.directVersion(t, access, "33333333-3333-4333-8333-333333333333"); got != "a1" {
		t.Errorf("got access version %q, want a1", got)
	}
}

func isCode(err error, code string) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == code
}

func TestSkipTimesRemoveReset(t *testing.T) {
	r := newRig(t, 1)
	ctx := context.Background()

	// Calls 2 and 3 fail on the first rule; call 1, which the first rule
	// skips, falls through to the second rule.
	r.p.Add(faultproxy.Rule{Op: opPutItem, Skip: 1, Times: 2, Error: faultproxy.InternalServerError()})
	removeSecond := r.p.Add(faultproxy.Rule{Op: opPutItem, Times: 1, Error: faultproxy.ServiceUnavailable()})
	r.p.Add(faultproxy.Rule{Op: opGetItem, Error: faultproxy.InternalFailure()}) // other op: never applies to puts

	wantCodes := []string{"ServiceUnavailable", "InternalServerError", "InternalServerError", "", ""}
	for i, want := range wantCodes {
		pk := fmt.Sprint("k", i)
		err := r.putItem(ctx, pk, "v")
		var ae smithy.APIError
		got := ""
		if errors.As(err, &ae) {
			got = ae.ErrorCode()
		} else if err != nil {
			t.Fatalf("call %d: unexpected error %v", i+1, err)
		}
		if got != want {
			t.Errorf("call %d: got code %q, want %q", i+1, got, want)
		}
		if applied := r.item(t, pk) != nil; applied != (want == "") {
			t.Errorf("call %d: applied in moto = %v, want %v", i+1, applied, want == "")
		}
	}

	// remove takes a rule out; calling it twice is harmless.
	removeSecond()
	removeSecond()
	r.p.Add(faultproxy.Rule{Op: opPutItem, Error: faultproxy.ConditionalCheckFailed()})
	if err := r.putItem(ctx, "k-after-add", "v"); !isCode(err, "ConditionalCheckFailedException") {
		t.Errorf("got %v, want ConditionalCheckFailedException from the unlimited rule", err)
	}
	r.p.Reset()
	if err := r.putItem(ctx, "k-after-reset", "v"); err != nil {
		t.Errorf("after Reset: got %v, want success", err)
	}
	if _, err := r.ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(r.table), Key: key("k0")}); err != nil {
		t.Errorf("GetItem after Reset: got %v, want success", err)
	}
}

// TestTimesUnderConcurrency: Times is consumed atomically, so exactly Times
// of many concurrent requests are hit.
func TestTimesUnderConcurrency(t *testing.T) {
	r := newRig(t, 1)
	const n, times = 16, 5
	r.p.Add(faultproxy.Rule{Op: opGetItem, Times: times, Error: faultproxy.ThrottlingError(faultproxy.DynamoDB)})
	var wg sync.WaitGroup
	var throttled, ok, other atomic.Int32
	for range n {
		wg.Go(func() {
			_, err := r.ddb.GetItem(context.Background(), &dynamodb.GetItemInput{TableName: aws.String(r.table), Key: key("x")})
			switch {
			case err == nil:
				ok.Add(1)
			case isCode(err, "ThrottlingException"):
				throttled.Add(1)
			default:
				other.Add(1)
			}
		})
	}
	wg.Wait()
	if throttled.Load() != times || ok.Load() != n-times || other.Load() != 0 {
		t.Errorf("got throttled=%d ok=%d other=%d, want %d/%d/0", throttled.Load(), ok.Load(), other.Load(), times, n-times)
	}
	if got := r.p.Count(opGetItem); got != n {
		t.Errorf("got Count %d, want %d", got, n)
	}
}

func TestErrorsAreTyped(t *testing.T) {
	r := newRig(t, 1)
	ctx := context.Background()
	secret := uniq(t, "secret")
	r.createSecret(t, secret, "v0")
	if err := r.putItem(ctx, "a", "1"); err != nil {
		t.Fatal(err)
	}

	update := func() error {
		_, err := r.ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(r.table), Key: key("a"),
			UpdateExpression:          aws.String("SET v = :n"),
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":n": &ddbtypes.AttributeValueMemberS{Value: "changed"}},
		})
		return err
	}
	getItem := func() error {
		_, err := r.ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(r.table), Key: key("a")})
		return err
	}
	transact := func() error {
		_, err := r.ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{
			{Put: &ddbtypes.Put{TableName: aws.String(r.table), Item: key("t1")}},
			{Put: &ddbtypes.Put{TableName: aws.String(r.table), Item: key("t2")}},
		}})
		return err
	}
	getSecret := func() error {
		_, err := r.sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(secret)})
		return err
	}

	tests := []struct {
		name   string
		op     string
		answer *faultproxy.AWSError
		call   func() error
		code   string
		typed  func(error) bool
	}{
		{"conditional check", opUpdateItem, faultproxy.ConditionalCheckFailed(), update, "ConditionalCheckFailedException",
			func(err error) bool { var e *ddbtypes.ConditionalCheckFailedException; return errors.As(err, &e) }},
		{"dynamodb throttling", opGetItem, faultproxy.ThrottlingError(faultproxy.DynamoDB), getItem, "ThrottlingException",
			func(err error) bool { var e *ddbtypes.ThrottlingException; return errors.As(err, &e) }},
		{"provisioned throughput", opUpdateItem, faultproxy.ProvisionedThroughputExceeded(), update, "ProvisionedThroughputExceededException",
			func(err error) bool {
				var e *ddbtypes.ProvisionedThroughputExceededException
				return errors.As(err, &e)
			}},
		{"dynamodb internal", opUpdateItem, faultproxy.InternalServerError(), update, "InternalServerError",
			func(err error) bool { var e *ddbtypes.InternalServerError; return errors.As(err, &e) }},
		{"transaction canceled", opTransact, faultproxy.TransactionCanceled("ConditionalCheckFailed", "None"), transact, "TransactionCanceledException",
			func(err error) bool {
				var e *ddbtypes.TransactionCanceledException
				if !errors.As(err, &e) || len(e.CancellationReasons) != 2 {
					return false
				}
				return aws.ToString(e.CancellationReasons[0].Code) == "ConditionalCheckFailed" &&
					aws.ToString(e.CancellationReasons[1].Code) == "None"
			}},
		{"secrets throttling", opGetSecret, faultproxy.ThrottlingError(faultproxy.SecretsManager), getSecret, "ThrottlingException",
			func(error) bool { return true }}, // not modelled by Secrets Manager: code only
		{"secrets internal", opGetSecret, faultproxy.InternalServiceError(), getSecret, "InternalServiceError",
			func(err error) bool { var e *smtypes.InternalServiceError; return errors.As(err, &e) }},
		{"versions quota", opGetSecret, faultproxy.LimitExceeded(), getSecret, "LimitExceededException",
			func(err error) bool { var e *smtypes.LimitExceededException; return errors.As(err, &e) }},
		{"secret too large", opGetSecret, faultproxy.SecretTooLarge(), getSecret, "ValidationException",
			func(error) bool { return true }}, // not modelled by Secrets Manager: code only
		{"service unavailable", opGetSecret, faultproxy.ServiceUnavailable(), getSecret, "ServiceUnavailable",
			func(error) bool { return true }},
		{"internal failure", opGetItem, faultproxy.InternalFailure(), getItem, "InternalFailure",
			func(error) bool { return true }},
		{"dynamodb access denied", opGetItem, faultproxy.AccessDenied(faultproxy.DynamoDB), getItem, "AccessDeniedException",
			func(error) bool { return true }}, // not modelled by DynamoDB: code only
		{"secrets access denied", opGetSecret, faultproxy.AccessDenied(faultproxy.SecretsManager), getSecret, "AccessDeniedException",
			func(error) bool { return true }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			remove := r.p.Add(faultproxy.Rule{Op: tc.op, Times: 1, Error: tc.answer})
			defer remove()
			before := r.p.Count(tc.op)
			err := tc.call()
			var ae smithy.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("got %v, want an APIError", err)
			}
			if ae.ErrorCode() != tc.code {
				t.Errorf("got code %q, want %q", ae.ErrorCode(), tc.code)
			}
			if ae.ErrorMessage() != tc.answer.Message {
				t.Errorf("got message %q, want %q", ae.ErrorMessage(), tc.answer.Message)
			}
			if !tc.typed(err) {
				t.Errorf("got %T (%v), want the modelled error type", err, err)
			}
			if got := r.p.Count(tc.op) - before; got != 1 {
				t.Errorf("got %d attempts, want 1 (retries disabled)", got)
			}
		})
	}
	// None of the refused writes reached moto.
	if v := r.item(t, "a")["v"].(*ddbtypes.AttributeValueMemberS).Value; v != "1" {
		t.Errorf("got v=%q, want 1: a refused UpdateItem was applied", v)
	}
	if r.item(t, "t1") != nil {
		t.Error("a refused TransactWriteItems was applied")
	}
}

// TestSDKRetriesInjectedThrottle: with retries on, a throttle answered once
// is retried by the SDK and succeeds, as against real AWS.
func TestSDKRetriesInjectedThrottle(t *testing.T) {
	r := newRig(t, 3)
	r.p.Add(faultproxy.Rule{Op: opPutItem, Times: 1, Error: faultproxy.ProvisionedThroughputExceeded()})
	if err := r.putItem(context.Background(), "a", "1"); err != nil {
		t.Fatalf("got %v, want success after an SDK retry", err)
	}
	if got := r.p.Count(opPutItem); got != 2 {
		t.Errorf("got %d attempts, want 2", got)
	}
	want := []faultproxy.Event{{Op: opPutItem, Action: faultproxy.Error}, {Op: opPutItem, Action: faultproxy.Forward}}
	if got := r.p.Events(); !slices.Equal(got, want) {
		t.Errorf("got events %v, want %v", got, want)
	}
}

func TestDropAfterForward(t *testing.T) {
	ctx := context.Background()
	t.Run("secret applied but unacknowledged", func(t *testing.T) {
		r := newRig(t, 1)
		name := uniq(t, "private/tok")
		r.createSecret(t, name, "v0")
		r.p.Add(faultproxy.Rule{Op: opPutSecret, Times: 1, Drop: faultproxy.DropAfterForward})
		const token = "44444444-4444-4444-8444-444444444444"
		err := r.putSecret(ctx, name, token, "v1")
		if err == nil {
			t.Fatal("got success, want a connection error")
		}
		var ae smithy.APIError
		if errors.As(err, &ae) {
			t.Errorf("got API error %v, want a connection error", err)
		}
		if got := r.directVersion(t, name, token); got != "v1" {
			t.Errorf("got version %q in moto, want v1 (the write must be applied)", got)
		}
		// The design's recovery: the same ClientRequestToken again is idempotent.
		if err := r.putSecret(ctx, name, token, "v1"); err != nil {
			t.Errorf("retry with the same token: got %v, want success", err)
		}
	})
	t.Run("item applied but unacknowledged", func(t *testing.T) {
		r := newRig(t, 1)
		r.p.Add(faultproxy.Rule{Op: opPutItem, Times: 1, Drop: faultproxy.DropAfterForward})
		if err := r.putItem(ctx, "a", "1"); err == nil {
			t.Fatal("got success, want a connection error")
		}
		if r.item(t, "a") == nil {
			t.Error("item missing in moto, want it applied")
		}
		if got, want := r.p.Events(), []faultproxy.Event{{Op: opPutItem, Action: faultproxy.DropResponse}}; !slices.Equal(got, want) {
			t.Errorf("got events %v, want %v", got, want)
		}
	})
	t.Run("SDK retries the lost answer", func(t *testing.T) {
		r := newRig(t, 3)
		name := uniq(t, "private/tok")
		r.createSecret(t, name, "v0")
		r.p.Add(faultproxy.Rule{Op: opPutSecret, Times: 1, Drop: faultproxy.DropAfterForward})
		const token = "55555555-5555-4555-8555-555555555555"
		if err := r.putSecret(ctx, name, token, "v1"); err != nil {
			t.Fatalf("got %v, want success after the SDK retried", err)
		}
		if got := r.p.Count(opPutSecret); got != 2 {
			t.Errorf("got %d attempts, want 2", got)
		}
		if got := r.directVersion(t, name, token); got != "v1" {
			t.Errorf("got %q, want v1", got)
		}
	})
}

func TestDropBeforeForward(t *testing.T) {
	r := newRig(t, 1)
	r.p.Add(faultproxy.Rule{Op: opPutItem, Times: 1, Drop: faultproxy.DropBeforeForward})
	if err := r.putItem(context.Background(), "a", "1"); err == nil {
		t.Fatal("got success, want a connection error")
	}
	if r.item(t, "a") != nil {
		t.Error("item present in moto, want the request never forwarded")
	}
	if err := r.putItem(context.Background(), "b", "1"); err != nil {
		t.Errorf("next call: got %v, want success (Times: 1)", err)
	}
	want := []faultproxy.Event{{Op: opPutItem, Action: faultproxy.DropRequest}, {Op: opPutItem, Action: faultproxy.Forward}}
	if got := r.p.Events(); !slices.Equal(got, want) {
		t.Errorf("got events %v, want %v", got, want)
	}
}

func TestHooks(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		rule      faultproxy.Rule
		wantSteps []string
		wantErr   bool
		applied   bool
	}{
		{"forward", faultproxy.Rule{}, []string{"before:absent", "after:present", "returned"}, false, true},
		{"drop after forward", faultproxy.Rule{Drop: faultproxy.DropAfterForward}, []string{"before:absent", "after:present", "returned"}, true, true},
		{"error", faultproxy.Rule{Error: faultproxy.ThrottlingError(faultproxy.DynamoDB)}, []string{"before:absent", "returned"}, true, false},
		{"drop before forward", faultproxy.Rule{Drop: faultproxy.DropBeforeForward}, []string{"before:absent", "returned"}, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 1)
			var mu sync.Mutex
			var steps []string
			step := func(s string) { mu.Lock(); steps = append(steps, s); mu.Unlock() }
			state := func() string {
				if r.item(t, "a") != nil {
					return "present"
				}
				return "absent"
			}
			rule := tc.rule
			rule.Op = opPutItem
			rule.Before = func(op string) {
				if op != opPutItem {
					t.Errorf("Before got op %q, want %q", op, opPutItem)
				}
				step("before:" + state())
			}
			rule.After = func(op string) {
				if op != opPutItem {
					t.Errorf("After got op %q, want %q", op, opPutItem)
				}
				step("after:" + state())
			}
			r.p.Add(rule)
			err := r.putItem(ctx, "a", "1")
			step("returned")
			if (err != nil) != tc.wantErr {
				t.Errorf("got err %v, want error=%v", err, tc.wantErr)
			}
			if !slices.Equal(steps, tc.wantSteps) {
				t.Errorf("got steps %v, want %v", steps, tc.wantSteps)
			}
			if got := r.item(t, "a") != nil; got != tc.applied {
				t.Errorf("got applied=%v, want %v", got, tc.applied)
			}
		})
	}
}

func TestDelay(t *testing.T) {
	ctx := context.Background()
	t.Run("honoured", func(t *testing.T) {
		r := newRig(t, 1)
		const d = 150 * time.Millisecond
		r.p.Add(faultproxy.Rule{Op: opPutItem, Times: 1, Delay: d})
		start := time.Now()
		if err := r.putItem(ctx, "a", "1"); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got < d {
			t.Errorf("call took %v, want at least the %v delay", got, d)
		}
		if r.item(t, "a") == nil {
			t.Error("delayed write missing in moto")
		}
		if got, want := r.p.Events(), []faultproxy.Event{{Op: opPutItem, Action: faultproxy.Delay}}; !slices.Equal(got, want) {
			t.Errorf("got events %v, want %v", got, want)
		}
	})
	t.Run("client cancels", func(t *testing.T) {
		r := newRig(t, 1)
		arrived := make(chan struct{}, 1)
		var beforeCalled atomic.Bool
		r.p.Add(faultproxy.Rule{
			Op:     opPutItem,
			Match:  func([]byte) bool { arrived <- struct{}{}; return true },
			Delay:  time.Hour,
			Before: func(string) { beforeCalled.Store(true) },
		})
		cctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- r.putItem(cctx, "a", "1") }()
		<-arrived
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want context.Canceled", err)
		}
		// The proxy must notice the caller left and stop waiting, without
		// being closed. A generous bound only turns a hang into a failure.
		idle := make(chan struct{})
		go func() { faultproxy.WaitHandlers(r.p); close(idle) }()
		select {
		case <-idle:
		case <-time.After(10 * time.Second):
			t.Fatal("proxy still holding the request after the client cancelled")
		}
		if beforeCalled.Load() {
			t.Error("Before was called for a request whose client gave up during the delay")
		}
		if r.item(t, "a") != nil {
			t.Error("cancelled request reached moto")
		}
	})
	t.Run("close aborts", func(t *testing.T) {
		r := newRig(t, 1)
		arrived := make(chan struct{}, 1)
		r.p.Add(faultproxy.Rule{Op: opPutItem, Delay: time.Hour,
			Match: func([]byte) bool { arrived <- struct{}{}; return true }})
		errc := make(chan error, 1)
		go func() { errc <- r.putItem(ctx, "a", "1") }()
		<-arrived
		r.p.Close()
		if err := <-errc; err == nil {
			t.Error("got success, want an error once the proxy closed")
		}
		if r.item(t, "a") != nil {
			t.Error("aborted request reached moto")
		}
	})
}

func TestCountAndOps(t *testing.T) {
	r := newRig(t, 1)
	ctx := context.Background()
	secret := uniq(t, "secret")
	r.createSecret(t, secret, "v0")
	r.p.Add(faultproxy.Rule{Op: opGetItem, Times: 1, Error: faultproxy.InternalFailure()})

	_ = r.putItem(ctx, "a", "1")
	_, _ = r.ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(r.table), Key: key("a")})
	_, _ = r.ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(r.table), Key: key("a")})
	_, _ = r.sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(secret)})

	wantOps := []string{opPutItem, opGetItem, opGetItem, opGetSecret}
	if got := r.p.Ops(); !slices.Equal(got, wantOps) {
		t.Errorf("got ops %v, want %v", got, wantOps)
	}
	counts := map[string]int{opPutItem: 1, opGetItem: 2, opGetSecret: 1, opPutSecret: 0, "": 4}
	for op, want := range counts {
		if got := r.p.Count(op); got != want {
			t.Errorf("Count(%q): got %d, want %d", op, got, want)
		}
	}
	wantEvents := []faultproxy.Event{
		{Op: opPutItem, Action: faultproxy.Forward}, {Op: opGetItem, Action: faultproxy.Error},
		{Op: opGetItem, Action: faultproxy.Forward}, {Op: opGetSecret, Action: faultproxy.Forward},
	}
	if got := r.p.Events(); !slices.Equal(got, wantEvents) {
		t.Errorf("got events %v, want %v", got, wantEvents)
	}
	// The log holds operation names only, never bodies.
	for _, op := range r.p.Ops() {
		if strings.Contains(op, "v0") || strings.Contains(op, "{") {
			t.Errorf("op log entry %q carries request content", op)
		}
	}
}

// TestErrorBody pins the wire format the SDK parses: body members, headers
// and the JSON protocol version echoed from the request.
func TestErrorBody(t *testing.T) {
	p, err := faultproxy.New("http://127.0.0.1:1") // never reached
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Add(faultproxy.Rule{Error: faultproxy.TransactionCanceled("ConditionalCheckFailed")})
	tests := []struct{ target, ctype, wantCType string }{
		{opTransact, "application/x-amz-json-1.0", "application/x-amz-json-1.0"},
		{opPutSecret, "application/x-amz-json-1.1", "application/x-amz-json-1.1"},
		{opTransact, "", "application/x-amz-json-1.0"},
		{opPutSecret, "", "application/x-amz-json-1.1"},
	}
	for _, tc := range tests {
		t.Run(tc.target+" "+tc.ctype, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, p.URL()+"/", strings.NewReader("{}"))
			req.Header.Set("X-Amz-Target", tc.target)
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Type                string `json:"__type"`
				Message             string `json:"message"`
				CancellationReasons []struct{ Code string }
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			wantType := "com.amazonaws.dynamodb.v20120810#TransactionCanceledException"
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("got status %d, want 400", resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.wantCType {
				t.Errorf("got Content-Type %q, want %q", got, tc.wantCType)
			}
			if got := resp.Header.Get("X-Amzn-ErrorType"); got != wantType {
				t.Errorf("got x-amzn-ErrorType %q, want %q", got, wantType)
			}
			if body.Type != wantType || !strings.Contains(body.Message, "ConditionalCheckFailed") {
				t.Errorf("got body type %q message %q", body.Type, body.Message)
			}
			if len(body.CancellationReasons) != 1 || body.CancellationReasons[0].Code != "ConditionalCheckFailed" {
				t.Errorf("got reasons %+v, want [ConditionalCheckFailed]", body.CancellationReasons)
			}
		})
	}
}

// BenchmarkGetItem compares a DynamoDB GetItem straight to moto with one
// through the proxy, to show what the proxy adds to a test's run time.
func BenchmarkGetItem(b *testing.B) {
	r := newRig(b, 1)
	if err := r.putItem(context.Background(), "a", "1"); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		c    *dynamodb.Client
	}{{"direct", r.dbDirect}, {"proxy", r.ddb}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := bc.c.GetItem(context.Background(), &dynamodb.GetItemInput{TableName: aws.String(r.table), Key: key("a")}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
