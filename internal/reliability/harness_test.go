package reliability_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/bootstrapbin"
	"github.com/seed-502fa48b/token-refresher/internal/faultproxy"
	"github.com/seed-502fa48b/token-refresher/internal/invariant"
	"github.com/seed-502fa48b/token-refresher/internal/lambdaemu"
	"github.com/seed-502fa48b/token-refresher/internal/leakscan"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/escrow"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// soak reports whether the full trial counts were asked for (make soak).
func soak() bool { return os.Getenv("TR_SOAK") != "" }

// trials is n under `make soak`, short otherwise.
func trials(full, short int) int {
	if soak() {
		return full
	}
	return short
}

// Every log line, metric and report of the suite goes to suite; every secret issued or
// seeded is checked against it after the run.
var suite = leakscan.New()

type suiteWriter struct{}

func (suiteWriter) Write(p []byte) (int, error) { return suite.Write(p) }

func registerSecrets(values ...string) { suite.Register(values...) }

func registerIssuer(i leakscan.Issuer) { suite.RegisterIssuer(i) }

func TestMain(m *testing.M) {
	code := awsemu.RunTests(m)
	if code == 0 && suite.Check(os.Stderr) > 0 {
		code = 1
	}
	os.Exit(code)
}

func randID() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// env is one isolated installation (prefix + table) in the shared moto, reached through
// its own fault proxy.
type env struct {
	t      *testing.T
	prefix string
	table  string
	proxy  *faultproxy.Proxy
	sm     *secretsmanager.Client // direct to moto: the test's own reads never see faults
	ddb    *dynamodb.Client
	store  *secretstore.Store
	ledger *ledger.Ledger
	// escrowKey is the KMS key (in moto) the engines escrow refused refresh tokens with, as
	// the template always gives the function one.
	escrowKey string

	// What the invariants (issue 17) are checked against after the test.
	runs     *invariant.Runs
	out      invariant.Capture // this env's logs, metrics, reports and errors
	injected bool              // an engine ran on an injected clock, not the wall's
	waive    map[invariant.ID]string
}

// output writes to the suite-wide scan and to this env's own capture.
func (e *env) output() io.Writer { return io.MultiWriter(suiteWriter{}, &e.out) }

// Every rotating simulator a test starts, with the test's name: an env checks I1 and I2
// against the simulators of its own test (its parents' and subtests' included).
var rotatings struct {
	mu   sync.Mutex
	list []trackedRotating
}

type trackedRotating struct {
	test string
	sim  *providersim.Rotating
}

// newRotating starts a rotating simulator (strict: reuse detection on unless o says
// ForgiveReuse), closes it after the test and registers it for the leak scan and the
// invariants.
func newRotating(t *testing.T, o providersim.RotatingOptions) *providersim.Rotating {
	t.Helper()
	sim := providersim.NewRotating(o)
	t.Cleanup(sim.Close)
	registerIssuer(sim)
	rotatings.mu.Lock()
	rotatings.list = append(rotatings.list, trackedRotating{t.Name(), sim})
	rotatings.mu.Unlock()
	return sim
}

func related(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

func (e *env) rotatings() []*providersim.Rotating {
	rotatings.mu.Lock()
	defer rotatings.mu.Unlock()
	var out []*providersim.Rotating
	for _, r := range rotatings.list {
		if related(r.test, e.t.Name()) {
			out = append(out, r.sim)
		}
	}
	return out
}

// knownLosses are the tests whose sequence loses a rotated refresh token whatever the code
// does: the rotated token existed only in a process that stopped being allowed to write
// (docs/reliability.md, the known window). I2 is waived for them, with the reason; I1 and
// every other invariant are checked, and their simulators revoke the chain on reuse.
var knownLosses = map[string]string{
	"TestCrashMatrix/provider_answered,_not_persisted/grace=0s": "killed after the provider rotated and before the first save, with no reuse grace: the rotated token died with the process, and the old one may not be presented again",
	"TestLostProviderResponse/grace=0s":                         "the provider rotated and its answer was lost, with no reuse grace: the old refresh token may not be presented again",
}

func knownLoss(test string) (string, bool) {
	for k, why := range knownLosses {
		if related(k, test) {
			return why, true
		}
	}
	return "", false
}

// waiveInvariant turns one invariant off for this env, for a test that breaks it on purpose.
func (e *env) waiveInvariant(id invariant.ID, why string) {
	if e.waive == nil {
		e.waive = map[invariant.ID]string{}
	}
	e.waive[id] = why
}

// checkInvariants asserts I1–I5 (internal/invariant) over everything this env saw.
func (e *env) checkInvariants() {
	e.t.Helper()
	if why, ok := knownLoss(e.t.Name()); ok {
		e.waiveInvariant(invariant.CommittedLive, why)
	}
	invariant.Check(e.t, invariant.Input{
		Providers: e.rotatings(),
		Ledger:    e.ledger,
		Store:     e.store,
		Prefix:    e.prefix,
		Runs:      e.runs,
		Output:    e.out.Bytes(),
		Wall:      !e.injected,
		Waive:     e.waive,
	})
}

// The env and clock each engine and emulator belongs to, so runs are observed wherever
// a test starts them.
var (
	engines  sync.Map // *refresher.Engine → engineOf
	emulator sync.Map // *lambdaemu.Emulator → *env
)

type engineOf struct {
	env *env
	now func() time.Time
}

// runEngine runs eng once, observed for the invariants.
func runEngine(ctx context.Context, eng *refresher.Engine, req refresher.Request) (*refresher.Report, error) {
	v, ok := engines.Load(eng)
	if !ok {
		return eng.Run(ctx, req)
	}
	o := v.(engineOf)
	run := o.env.runs.BeginAt(o.now())
	rep, err := eng.Run(ctx, req)
	run.End(rep)
	if err != nil {
		_, _ = o.env.out.Write([]byte(err.Error() + "\n"))
	}
	return rep, err
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := awsemu.Shared(t)
	cfg := srv.AWSConfig(t)
	p, err := faultproxy.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	e := &env{t: t, prefix: "rel-" + randID() + "/", table: "rel-" + randID(), proxy: p}
	e.sm = secretsmanager.NewFromConfig(cfg)
	e.ddb = dynamodb.NewFromConfig(cfg)
	if err := ledger.CreateTable(context.Background(), e.ddb, e.table); err != nil {
		t.Fatal(err)
	}
	e.store = secretstore.New(e.sm)
	e.ledger = ledger.New(e.ddb, ledger.Options{Table: e.table})
	key, err := kms.NewFromConfig(cfg).CreateKey(context.Background(), &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	e.escrowKey = aws.ToString(key.KeyMetadata.Arn)
	e.runs = invariant.NewRuns(e.ledger, e.store, e.prefix, nil)
	t.Cleanup(e.checkInvariants)
	return e
}

// functionEnv is the bootstrap's environment: AWS through the fault proxy, short leases so
// a crashed holder is recoverable in seconds.
func (e *env) functionEnv(extra ...string) []string {
	base := append(awsemu.Shared(e.t).Env(),
		"AWS_ENDPOINT_URL="+e.proxy.URL(),
		"STATE_TABLE="+e.table,
		"SECRET_PREFIX="+e.prefix,
		"ESCROW_KEY_ID="+e.escrowKey,
		"PROVIDER_TIMEOUT=2s",
		"PROVIDER_ATTEMPTS=2",
		"PROVIDER_BACKOFF=50ms",
		"PERSIST_BUDGET=2s",
		"LEASE_SKEW=500ms",
		// The SDK's own retries are part of the system under test; keep the default.
	)
	return append(base, extra...)
}

// function starts one real bootstrap process behind the runtime emulator.
func (e *env) function(timeout time.Duration, extra ...string) *lambdaemu.Emulator {
	e.t.Helper()
	bin, err := bootstrapbin.Path(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	emu, err := lambdaemu.Start(context.Background(), lambdaemu.Options{
		Binary:  bin,
		Env:     e.functionEnv(extra...),
		Timeout: timeout,
		Stdout:  e.output(),
		Stderr:  e.output(),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = emu.Close() })
	emulator.Store(emu, e)
	return emu
}

// invoke runs one event and decodes the report; a function error is returned as err with
// the report nil (Lambda drops the payload on error).
func invoke(ctx context.Context, emu *lambdaemu.Emulator, event string) (rep *refresher.Report, err error) {
	w := io.Writer(suiteWriter{})
	if v, ok := emulator.Load(emu); ok {
		e := v.(*env)
		w = e.output()
		run := e.runs.BeginAt(time.Now())
		defer func() { run.End(rep) }()
	}
	res, err := emu.Invoke(ctx, []byte(event))
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		_, _ = w.Write([]byte(res.Err.Message + "\n"))
		return nil, res.Err
	}
	_, _ = w.Write(append(res.Payload, '\n'))
	var r refresher.Report
	if err := json.Unmarshal(res.Payload, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func outcomeOf(rep *refresher.Report, name string) string {
	if rep == nil {
		return ""
	}
	for _, r := range rep.Tokens {
		if r.Name == name {
			return r.Outcome
		}
	}
	return ""
}

// engine builds an in-process engine against moto through the proxy (for tests that need
// an injected clock rather than a process).
func (e *env) engine(now func() time.Time, tune func(*refresher.Options)) *refresher.Engine {
	e.t.Helper()
	cfg := awsemu.Shared(e.t).AWSConfig(e.t)
	cfg.BaseEndpoint = aws.String(e.proxy.URL())
	sealer, err := escrow.New(kms.NewFromConfig(cfg), escrow.Options{KeyID: e.escrowKey})
	if err != nil {
		e.t.Fatal(err)
	}
	opts := refresher.Options{
		Sealer:          sealer,
		Secrets:         secretstore.New(secretsmanager.NewFromConfig(cfg)),
		Ledger:          ledger.New(dynamodb.NewFromConfig(cfg), ledger.Options{Table: e.table, Now: now}),
		Prefix:          e.prefix,
		ProviderTimeout: 2 * time.Second,
		Attempts:        2,
		Backoff:         20 * time.Millisecond,
		PersistBudget:   2 * time.Second,
		ClockSkew:       500 * time.Millisecond,
		Logger:          slog.New(slog.NewJSONHandler(e.logSink(), nil)),
		Metrics:         e.output(),
		Now:             now,
	}
	if tune != nil {
		tune(&opts)
	}
	eng, err := refresher.New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if reflect.ValueOf(opts.Now).Pointer() != reflect.ValueOf(time.Now).Pointer() {
		e.injected = true
	}
	engines.Store(eng, engineOf{e, opts.Now})
	return eng
}

func (e *env) logSink() io.Writer {
	if os.Getenv("TR_DEBUG") != "" {
		return io.MultiWriter(e.output(), os.Stderr)
	}
	return e.output()
}

func (e *env) seed(name string, doc map[string]any) string {
	e.t.Helper()
	raw, err := json.Marshal(doc)
	if err != nil {
		e.t.Fatal(err)
	}
	id, err := e.store.Create(context.Background(), e.prefix+"private/"+name, token.Secret(raw))
	if err != nil {
		e.t.Fatalf("seed %s: %v", name, err)
	}
	return id
}

// committed reads the document the token record points at (by VersionId).
func (e *env) committed(name string) (*token.Private, ledger.Record) {
	e.t.Helper()
	ctx := context.Background()
	rec, err := e.ledger.Get(ctx, name)
	if err != nil {
		e.t.Fatalf("record %s: %v", name, err)
	}
	v, err := e.store.GetVersion(ctx, e.prefix+"private/"+name, rec.VersionID)
	if err != nil {
		e.t.Fatalf("private %s@%s: %v", name, rec.VersionID, err)
	}
	doc, err := token.ParsePrivate([]byte(v.Value.Reveal()))
	if err != nil {
		e.t.Fatal(err)
	}
	return doc, rec
}

func (e *env) currentID(name string) string {
	e.t.Helper()
	v, err := e.store.GetCurrent(context.Background(), e.prefix+"private/"+name)
	if err != nil {
		e.t.Fatal(err)
	}
	return v.ID
}

// expireLease stands for time passing past a crashed (or returned) holder's lease and its
// invocation: it moves lease_until and the presenting holder's holder_until into the past
// (waiting would only make the suite slow).
func (e *env) expireLease(name string) {
	e.t.Helper()
	e.expireLeaseOnly(name)
	e.setPast(name, "inflight.holder_until") // the holder is gone: recovery need not wait for it
}

// expireLeaseOnly moves lease_until into the past for a holder that is still alive (frozen):
// a recovery then waits for that holder's invocation to end before giving a presented
// refresh token up (docs/design.md §4, recovery).
func (e *env) expireLeaseOnly(name string) {
	e.t.Helper()
	e.setPast(name, "lease_until")
}

// setPast sets the record's time attribute at path (unix ms) a minute into the past, if
// the record has it.
func (e *env) setPast(name, path string) {
	e.t.Helper()
	past := strconv.FormatInt(time.Now().Add(-time.Minute).UnixMilli(), 10)
	_, err := e.ddb.UpdateItem(context.Background(), &dynamodb.UpdateItemInput{
		TableName:                 aws.String(e.table),
		Key:                       map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "token#" + name}},
		UpdateExpression:          aws.String("SET " + path + " = :past"),
		ConditionExpression:       aws.String("attribute_exists(" + path + ")"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":past": &ddbtypes.AttributeValueMemberN{Value: past}},
	})
	if err != nil && !strings.Contains(err.Error(), "ConditionalCheckFailed") {
		e.t.Fatalf("set %s in the past: %v", path, err)
	}
}

// bodyContains matches a request body (a fault-proxy Rule.Match) holding every one of parts.
// persistStage tells the private persist's PutSecretValue on the wire: it names the
// AWSCURRENT stage it moves (issue 18: no TR_PENDING any more); the access publish names none.
const persistStage = `"AWSCURRENT"`

func bodyContains(parts ...string) func([]byte) bool {
	return func(body []byte) bool {
		for _, p := range parts {
			if !strings.Contains(string(body), p) {
				return false
			}
		}
		return true
	}
}

func rotatingDoc(url, clientID, clientSecret, rt, grace string) map[string]any {
	registerSecrets(clientSecret, rt)
	return map[string]any{
		"provider": map[string]any{
			"grant": "refresh_token", "body": "form", "token_url": url,
			"client_id": clientID, "client_secret": clientSecret, "client_auth": "basic",
			"reuse_grace": grace,
		},
		"policy":        map[string]any{"refresh_margin": "5m"},
		"refresh_token": rt,
	}
}

const scheduledEvent = `{"version":"0","id":"0d0f1a2b-0000-4000-8000-000000000001","detail-type":"Scheduled Event","source":"aws.events","account":"123456789012","time":"2026-11-22T00:00:00Z","region":"us-east-1","resources":["arn:aws:events:us-east-1:123456789012:rule/token-refresher"],"detail":{}}`

func forceEvent(names ...string) string {
	b, _ := json.Marshal(map[string]any{"tokens": names, "force": true})
	return string(b)
}
