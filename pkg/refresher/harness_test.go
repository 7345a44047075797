package refresher_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/invariant"
	"github.com/seed-502fa48b/token-refresher/internal/leakscan"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// Every log line, metric line and report of the suite goes to suite; after the run
// TestMain fails if any token or secret the suite issued or seeded appears in it
// (acceptance 7).
var suite = leakscan.New()

type suiteWriter struct{}

func (suiteWriter) Write(p []byte) (int, error) { return suite.Write(p) }

func registerSecrets(values ...string) { suite.Register(values...) }

func registerIssuer(i leakscan.Issuer) {
	suite.RegisterIssuer(i)
	if r, ok := i.(*providersim.Rotating); ok {
		rotatings.Lock()
		rotatings.list = append(rotatings.list, r)
		rotatings.Unlock()
	}
}

// rotatings are every rotating simulator of the suite; the invariants check the ones an
// env's tokens point at.
var rotatings struct {
	sync.Mutex
	list []*providersim.Rotating
}

// checkInvariants asserts issue 17's I1–I5 (internal/invariant) after the test. A waived
// invariant is not checked at all.
func (e *env) checkInvariants() {
	e.t.Helper()
	rotatings.Lock()
	sims := append([]*providersim.Rotating(nil), rotatings.list...)
	rotatings.Unlock()
	invariant.Check(e.t, invariant.Input{
		Providers: sims,
		Ledger:    e.ledger,
		Store:     e.store,
		Prefix:    e.prefix,
		Runs:      e.runs,
		Output:    e.out.Bytes(),
		Waive:     e.waive,
		Wall:      e.now == nil || reflect.ValueOf(e.now).Pointer() == reflect.ValueOf(time.Now).Pointer(),
	})
}

// waiveInvariant turns one invariant off for a test that breaks it on purpose.
func (e *env) waiveInvariant(id invariant.ID, why string) {
	if e.waive == nil {
		e.waive = map[invariant.ID]string{}
	}
	e.waive[id] = why
}

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

// env is one isolated installation: its own prefix and state table in the shared moto.
type env struct {
	t       *testing.T
	prefix  string
	table   string
	sm      *secretsmanager.Client
	ddb     *dynamodb.Client
	store   *secretstore.Store
	ledger  *ledger.Ledger
	now     func() time.Time
	engine  *refresher.Engine
	options refresher.Options
	runs    *invariant.Runs
	out     invariant.Capture
	waive   map[invariant.ID]string // invariants a test breaks on purpose, with the reason
}

func newEnv(t *testing.T, now func() time.Time, tune func(*refresher.Options)) *env {
	t.Helper()
	srv := awsemu.Shared(t)
	cfg := srv.AWSConfig(t)
	e := &env{t: t, prefix: "tr-" + randID() + "/", table: "tr-" + randID(), now: now}
	e.sm = secretsmanager.NewFromConfig(cfg)
	e.ddb = dynamodb.NewFromConfig(cfg)
	if err := ledger.CreateTable(context.Background(), e.ddb, e.table); err != nil {
		t.Fatalf("create table: %v", err)
	}
	e.store = secretstore.New(e.sm)
	e.ledger = ledger.New(e.ddb, ledger.Options{Table: e.table, Now: now})
	e.runs = invariant.NewRuns(e.ledger, e.store, e.prefix, now)
	t.Cleanup(e.checkInvariants)
	e.options = refresher.Options{
		Secrets:         e.store,
		Ledger:          e.ledger,
		Prefix:          e.prefix,
		ProviderTimeout: 5 * time.Second,
		Attempts:        2,
		Backoff:         10 * time.Millisecond,
		PersistBudget:   2 * time.Second,
		ClockSkew:       time.Second,
		Logger:          slog.New(slog.NewJSONHandler(io.MultiWriter(logSink(), &e.out), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:         suiteWriter{},
		Now:             now,
	}
	if tune != nil {
		tune(&e.options)
	}
	if e.options.Metrics != nil { // the suite's writer or a test's own, captured for I4 either way
		e.options.Metrics = io.MultiWriter(e.options.Metrics, &e.out)
	}
	eng, err := refresher.New(e.options)
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	e.engine = eng
	return e
}

// seed writes a private document as an operator would.
func (e *env) seed(name string, doc map[string]any) string {
	e.t.Helper()
	raw, err := json.Marshal(doc)
	if err != nil {
		e.t.Fatal(err)
	}
	registerSecretsIn(doc)
	id, err := e.store.Create(context.Background(), e.prefix+"private/"+name, token.Secret(raw))
	if err != nil {
		e.t.Fatalf("seed %s: %v", name, err)
	}
	return id
}

// seedRaw writes any bytes, for the bad-input tests.
func (e *env) seedRaw(name, raw string) {
	e.t.Helper()
	if _, err := e.store.Create(context.Background(), e.prefix+"private/"+name, token.Secret(raw)); err != nil {
		e.t.Fatalf("seed %s: %v", name, err)
	}
}

// edit puts a new AWSCURRENT version, as an operator re-seeding a token would.
func (e *env) edit(name string, doc map[string]any) string {
	e.t.Helper()
	raw, err := json.Marshal(doc)
	if err != nil {
		e.t.Fatal(err)
	}
	registerSecretsIn(doc)
	id, err := e.store.PutCurrent(context.Background(), e.prefix+"private/"+name, token.Secret(raw))
	if err != nil {
		e.t.Fatalf("edit %s: %v", name, err)
	}
	return id
}

func registerSecretsIn(doc map[string]any) {
	for k, v := range doc {
		switch val := v.(type) {
		case map[string]any:
			registerSecretsIn(val)
		case string:
			if strings.Contains(k, "secret") || strings.Contains(k, "token") && k != "token_url" && k != "token_type" {
				registerSecrets(val)
			}
		}
	}
}

func (e *env) run(req refresher.Request) (*refresher.Report, error) {
	e.t.Helper()
	return e.runCtx(context.Background(), req)
}

// runWithin runs under a deadline d from now, counted after the run's observation starts.
func (e *env) runWithin(d time.Duration, req refresher.Request) (*refresher.Report, error) {
	e.t.Helper()
	run := e.runs.Begin()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return e.observed(ctx, run, req)
}

// runCtx is one engine run, observed for the invariants (I3, I5) and captured for I4.
func (e *env) runCtx(ctx context.Context, req refresher.Request) (*refresher.Report, error) {
	e.t.Helper()
	return e.observed(ctx, e.runs.Begin(), req)
}

func (e *env) observed(ctx context.Context, run *invariant.Run, req refresher.Request) (*refresher.Report, error) {
	rep, err := e.engine.Run(ctx, req)
	run.End(rep)
	if rep != nil {
		b, _ := json.Marshal(rep)
		_, _ = io.MultiWriter(suiteWriter{}, &e.out).Write(append(b, '\n'))
	}
	if err != nil {
		_, _ = e.out.Write([]byte(err.Error() + "\n"))
	}
	return rep, err
}

func (e *env) scheduled() *refresher.Report {
	e.t.Helper()
	rep, err := e.run(refresher.Request{})
	if err != nil {
		e.t.Fatalf("scheduled run: %v", err)
	}
	return rep
}

func outcomes(rep *refresher.Report) map[string]string {
	m := map[string]string{}
	for _, r := range rep.Tokens {
		m[r.Name] = r.Outcome
	}
	return m
}

func row(t *testing.T, rep *refresher.Report, name string) refresher.Row {
	t.Helper()
	for _, r := range rep.Tokens {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no row for %s in %+v", name, rep.Tokens)
	return refresher.Row{}
}

// committed reads the private document the token record points at (by VersionId).
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
		e.t.Fatalf("parse private %s: %v", name, err)
	}
	return doc, rec
}

// current reads AWSCURRENT of the private secret.
func (e *env) current(name string) (*token.Private, string) {
	e.t.Helper()
	v, err := e.store.GetCurrent(context.Background(), e.prefix+"private/"+name)
	if err != nil {
		e.t.Fatalf("current %s: %v", name, err)
	}
	doc, err := token.ParsePrivate([]byte(v.Value.Reveal()))
	if err != nil {
		e.t.Fatalf("parse current %s: %v", name, err)
	}
	return doc, v.ID
}

// accessRaw reads the consumers' secret as raw JSON fields.
func (e *env) accessRaw(name string) map[string]any {
	e.t.Helper()
	v, err := e.store.GetCurrent(context.Background(), e.prefix+"access/"+name)
	if err != nil {
		e.t.Fatalf("access %s: %v", name, err)
	}
	m := map[string]any{}
	if err := json.Unmarshal([]byte(v.Value.Reveal()), &m); err != nil {
		e.t.Fatalf("access %s: %v", name, err)
	}
	return m
}

func (e *env) accessExists(name string) bool {
	_, err := e.store.GetCurrent(context.Background(), e.prefix+"access/"+name)
	return err == nil
}

func (e *env) versionCount(name string) int {
	e.t.Helper()
	vs, err := e.store.Versions(context.Background(), e.prefix+"private/"+name)
	if err != nil {
		e.t.Fatalf("versions %s: %v", name, err)
	}
	return len(vs)
}

// logSink sends engine logs to the suite's scan buffer, and also to stderr with TR_DEBUG=1.
func logSink() io.Writer {
	if os.Getenv("TR_DEBUG") != "" {
		return io.MultiWriter(suiteWriter{}, os.Stderr)
	}
	return suiteWriter{}
}
