package refresher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/internal/invariant"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/notify"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// Issue 9 item 3: a 2xx that carries a new refresh token but is otherwise unusable spent the
// old one; the new refresh token is persisted with the reason and no access token published.
func TestSalvageRefreshTokenFromUnusableAnswer(t *testing.T) {
	bodies := []struct{ name, body string }{
		{"no access_token", `{"refresh_token":"%s","token_type":"Bearer","expires_in":900}`},
		{"expires_in zero", `{"access_token":"at-x","refresh_token":"%s","token_type":"Bearer","expires_in":0}`},
		{"expires_in not a number", `{"access_token":"at-x","refresh_token":"%s","token_type":"Bearer","expires_in":"soon"}`},
	}
	for _, b := range bodies {
		t.Run(b.name, func(t *testing.T) {
			clock := providersim.NewClock(time.Now())
			sim, cs := newRotating(t, clock)
			e := newEnv(t, clock.Now, nil)
			e.waiveInvariant(invariant.CommittedLive, "the answer is scripted (RespondNext): the salvaged refresh token is not one the simulator issued, so it cannot be the provider's live one")
			e.seed("salv", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
			if got := outcomes(e.scheduled())["salv"]; got != refresher.OutcomeRefreshed {
				t.Fatalf("setup: got %s, want refreshed", got)
			}
			before := e.accessRaw("salv")
			fresh := "rt-salvaged-" + randID()
			registerSecrets(fresh, "at-x")
			sim.RespondNext(200, http.Header{"Content-Type": {"application/json"}}, []byte(strings.Replace(b.body, "%s", fresh, 1)))
			rep, _ := e.run(refresher.Request{Tokens: []string{"salv"}, Force: true})
			r := row(t, rep, "salv")
			doc, rec := e.committed("salv")
			if doc.RefreshToken.Reveal() != fresh {
				t.Fatalf("outcome %s (%s): the committed refresh token is not the salvaged one: it was thrown away", r.Outcome, r.Error)
			}
			if !strings.Contains(r.Error, "new refresh token kept") || rec.Generation != 2 {
				t.Errorf("row %s %q generation %d, want the reason in the report and generation 2", r.Outcome, r.Error, rec.Generation)
			}
			if after := e.accessRaw("salv"); after["access_token"] != before["access_token"] || after["generation"] != before["generation"] {
				t.Errorf("access secret changed to generation %v: an unusable answer published", after["generation"])
			}
		})
	}
}

// Issue 9 item 4: a provider call whose result could not be stored is not made: a document
// near the 64 KiB limit, or a write budget already spent in the last 24 h.
func TestWriteBudgetBeforeCall(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotating(t, clock)
	e := newEnv(t, clock.Now, nil)

	big := rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), "")
	big["notes"] = strings.Repeat("x", 56<<10)
	e.seed("big", big)
	e.seed("busy", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	if got := outcomes(mustRun(t, e, refresher.Request{Tokens: []string{"busy"}, Force: true}))["busy"]; got != refresher.OutcomeRefreshed {
		t.Fatalf("setup: busy got %s, want refreshed", got)
	}
	// 90 versions written in the last 24 h, as a token refreshed every 16 minutes has.
	writes := make([]string, 90)
	for i := range writes {
		writes[i] = ms(clock.Now().Add(-time.Duration(i) * 15 * time.Minute))
	}
	e.setWrites("busy", writes)

	before := sim.Requests()
	rep, _ := e.run(refresher.Request{Tokens: []string{"big", "busy"}, Force: true})
	if r := row(t, rep, "big"); r.Outcome != refresher.OutcomeFailed || !strings.Contains(r.Error, "64 KiB") {
		t.Errorf("big: got %s %q, want failed naming the 64 KiB limit", r.Outcome, r.Error)
	}
	if r := row(t, rep, "busy"); r.Outcome != refresher.OutcomeNotDue || !strings.Contains(r.Error, "write budget") {
		t.Errorf("busy: got %s %q, want not_due naming the write budget (force never overrides it)", r.Outcome, r.Error)
	}
	if got := sim.Requests() - before; got != 0 {
		t.Errorf("provider requests: got %d, want 0 (checked before the call)", got)
	}
}

// Issue 9 item 5: an access secret behind the committed generation is republished by the
// next reconcile, without a provider call.
func TestLaggingPublishRepaired(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotating(t, clock)
	e := newEnv(t, clock.Now, nil)
	e.seed("lag", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	e.scheduled()
	old := e.accessRaw("lag")
	clock.Advance(20 * time.Minute)
	if got := outcomes(mustRun(t, e, refresher.Request{Tokens: []string{"lag"}, Force: true}))["lag"]; got != refresher.OutcomeRefreshed {
		t.Fatalf("second refresh: got %s", got)
	}
	// A slow holder's late publish of the older generation lands over the newer one.
	raw, _ := json.Marshal(old)
	if _, err := e.store.PutCurrent(context.Background(), e.prefix+"access/lag", token.Secret(raw)); err != nil {
		t.Fatal(err)
	}
	before := sim.Requests()
	if got := outcomes(e.scheduled())["lag"]; got != refresher.OutcomeNotDue {
		t.Errorf("repair run: got %s, want not_due", got)
	}
	_, rec := e.committed("lag")
	if got := e.accessRaw("lag")["generation"]; got != float64(rec.Generation) {
		t.Errorf("access generation %v after the repair run, want the committed %d", got, rec.Generation)
	}
	if sim.Requests() != before {
		t.Errorf("the repair made %d provider requests, want 0", sim.Requests()-before)
	}
}

// Issue 9 item 6: a 403 from a WAF is a failure, not needs_reauth: the published token stays.
func TestUnexpectedAnswerKeepsPublishedToken(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotating(t, clock)
	e := newEnv(t, clock.Now, nil)
	e.seed("waf", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	e.scheduled()
	before := e.accessRaw("waf")
	sim.RespondNext(403, http.Header{"Content-Type": {"text/html"}}, []byte("<html>Request blocked</html>"))
	rep, err := e.run(refresher.Request{Tokens: []string{"waf"}, Force: true})
	if r := row(t, rep, "waf"); err == nil || r.Outcome != refresher.OutcomeFailed {
		t.Fatalf("got %s (%v), want failed", r.Outcome, err)
	}
	_, rec := e.committed("waf")
	if rec.Status != "active" || e.accessRaw("waf")["access_token"] != before["access_token"] || e.accessRaw("waf")["status"] != "active" {
		t.Errorf("after a 403: record %s, access status %v; want active and the published token untouched", rec.Status, e.accessRaw("waf")["status"])
	}
	if got := outcomes(mustRun(t, e, refresher.Request{Tokens: []string{"waf"}, Force: true}))["waf"]; got != refresher.OutcomeRefreshed {
		t.Errorf("next run: got %s, want refreshed", got)
	}
}

// Issue 9 item 7: Retry-After is honoured for a token without a quota policy, and a
// multi-day Retry-After marks every quota day it covers.
func TestRetryAfterHonoured(t *testing.T) {
	t.Run("no quota policy", func(t *testing.T) {
		clock := providersim.NewClock(time.Now())
		sim, cs := newRotatingTTL(t, clock, time.Hour)
		e := newEnv(t, clock.Now, nil)
		e.seed("ra", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
		e.scheduled()
		clock.Advance(34 * time.Minute) // past half the hour and its spread (a tenth of the margin): due
		sim.RespondNext(429, http.Header{"Retry-After": {"3600"}}, []byte(`{"error":"slow_down"}`))
		if got := outcomes(e.scheduled())["ra"]; got != refresher.OutcomeThrottled {
			t.Fatalf("got %s, want throttled", got)
		}
		before := sim.Requests()
		for i := 0; i < 5; i++ { // sweeps and reconciles inside the hour
			clock.Advance(10 * time.Minute)
			e.scheduled()
			mustRun(t, e, refresher.Request{Sweep: true})
		}
		if got := sim.Requests() - before; got != 0 {
			t.Errorf("provider requests inside Retry-After: got %d, want 0", got)
		}
		clock.Advance(15 * time.Minute)
		if got := outcomes(mustRun(t, e, refresher.Request{Sweep: true}))["ra"]; got != refresher.OutcomeRefreshed {
			t.Errorf("after Retry-After: got %s, want refreshed", got)
		}
	})
	// Issue 18 timing defect 4: Retry-After holds for a token never refreshed (was: "no
	// access token yet" made it due at every run: 3 reconciles, 3 requests).
	t.Run("never refreshed", func(t *testing.T) {
		clock := providersim.NewClock(time.Now())
		sim, cs := newRotatingTTL(t, clock, time.Hour)
		e := newEnv(t, clock.Now, nil)
		e.seed("new", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
		sim.RespondNext(429, http.Header{"Retry-After": {"3600"}}, []byte(`{"error":"slow_down"}`))
		before := sim.Requests()
		for i := 0; i < 3; i++ {
			if got := outcomes(e.scheduled())["new"]; i == 0 && got != refresher.OutcomeThrottled {
				t.Fatalf("first reconcile: got %s, want throttled", got)
			}
			clock.Advance(10 * time.Minute)
		}
		if got := sim.Requests() - before; got != 1 {
			t.Errorf("3 reconciles inside Retry-After: got %d provider requests, want 1", got)
		}
	})
	// Issue 18 timing defect 3: ensure honours Retry-After and answers from the published
	// secret with the reason (was: 10 ensures, 10 requests).
	t.Run("ensure", func(t *testing.T) {
		clock := providersim.NewClock(time.Now())
		sim, cs := newRotatingTTL(t, clock, time.Hour)
		e := newEnv(t, clock.Now, nil)
		e.seed("ens", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
		e.scheduled()
		published := e.accessRaw("ens")["access_token"]
		clock.Advance(31 * time.Minute) // inside the margin: ensure refreshes
		sim.RespondNext(429, http.Header{"Retry-After": {"3600"}}, []byte(`{"error":"slow_down"}`))
		before := sim.Requests()
		for i := 0; i < 10; i++ {
			r := row(t, mustRun(t, e, refresher.Request{Ensure: []string{"ens"}}), "ens")
			if r.Outcome != refresher.OutcomeThrottled || !strings.Contains(r.Error, "throttled until") {
				t.Errorf("ensure %d: got %s %q, want throttled with the time", i, r.Outcome, r.Error)
			}
		}
		if got := sim.Requests() - before; got != 1 {
			t.Errorf("10 ensures after a 429 with Retry-After 3600: got %d provider requests, want 1", got)
		}
		if got := e.accessRaw("ens")["access_token"]; got != published {
			t.Error("the published access token changed; want it kept")
		}
	})
	t.Run("three days marks every quota day", func(t *testing.T) {
		clock := providersim.NewClock(time.Date(2026, 11, 22, 10, 0, 0, 0, ist))
		sim := newSahamati(t, "fiu-ra", clock)
		e := newEnv(t, clock.Now, nil)
		e.seed("s", sahamatiDoc(sim.URL(), "fiu-ra", simSecret(sim)))
		sim.RespondNext(429, http.Header{"Retry-After": {"259200"}}, []byte(`{"errorCode":"LimitExceeded","errorMsg":"Limit Exceeded"}`))
		if got := outcomes(e.scheduled())["s"]; got != refresher.OutcomeThrottled {
			t.Fatalf("got %s, want throttled", got)
		}
		until := clock.Now().Add(72 * time.Hour)
		for d := 0; d <= 3; d++ {
			day := ledger.Day(clock.Now().Add(time.Duration(d)*24*time.Hour), ist)
			b, err := e.ledger.Quota(context.Background(), "sahamati#fiu-ra", day)
			if err != nil {
				t.Fatal(err)
			}
			if b.ThrottledUntil.Before(until.Add(-time.Second)) {
				t.Errorf("quota day %s: throttled until %v, want %v", day, b.ThrottledUntil, until)
			}
		}
	})
}

// Issue 9 item 8: an invalid operator edit of a working token is reported (and counted),
// and the committed version keeps being refreshed.
func TestInvalidEditKeepsRefreshing(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotating(t, clock)
	var metrics strings.Builder
	e := newEnv(t, clock.Now, func(o *refresher.Options) { o.Metrics = &teeBuilder{b: &metrics} })
	e.seed("typo", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	e.scheduled()
	bad := rotatingDoc(sim.URL(), "app", cs, "rt-typo-"+randID(), "")
	bad["provider"].(map[string]any)["token_url"] = "ftp://nowhere"
	e.edit("typo", bad)
	clock.Advance(20 * time.Minute) // due again (15-minute token kept alive; force below)
	rep, _ := e.run(refresher.Request{Tokens: []string{"typo"}, Force: true})
	r := row(t, rep, "typo")
	if r.Outcome != refresher.OutcomeInvalidConfig || !strings.Contains(r.Error, "not adopted") || !strings.Contains(r.Error, "token_url") {
		t.Errorf("got %s %q, want invalid_config saying the edit was not adopted and naming provider.token_url", r.Outcome, r.Error)
	}
	doc, rec := e.committed("typo")
	if rec.Generation != 2 || sim.Live(doc.RefreshToken.Reveal()) == "" {
		t.Errorf("generation %d, want 2: the committed version must keep being refreshed", rec.Generation)
	}
	if !strings.Contains(metrics.String(), `"InvalidConfig":1`) {
		t.Error("no InvalidConfig metric for the invalid edit")
	}
}

// Issue 9 item 9: a SecretBinary private secret is invalid_config (not failed every run);
// a secret scheduled for deletion and one whose name breaks the name rule are in the report.
func TestEdgesInReport(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	e := newEnv(t, clock.Now, nil)
	ctx := context.Background()
	if _, err := e.sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(e.prefix + "private/bin"), SecretBinary: []byte{0, 1}}); err != nil {
		t.Fatal(err)
	}
	e.seedRaw("gone", `{}`)
	if _, err := e.sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String(e.prefix + "private/gone")}); err != nil {
		t.Fatal(err)
	}
	e.seedRaw("-bad", `{}`)
	rep, err := e.run(refresher.Request{})
	if err != nil {
		t.Fatalf("run: %v (none of these is a failure)", err)
	}
	for name, want := range map[string]string{"bin": "SecretBinary", "gone": "scheduled for deletion", "-bad": "not a valid token name"} {
		if r := row(t, rep, name); r.Outcome != refresher.OutcomeInvalidConfig || !strings.Contains(r.Error, want) {
			t.Errorf("%s: got %s %q, want invalid_config saying %q", name, r.Outcome, r.Error, want)
		}
	}
}

// Issue 9 item 10: under a 20 s invocation deadline with the default budgets, a not-due
// check needs no refresh budget and a due token is refreshed.
func TestTwentySecondDeadline(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotating(t, clock)
	e := newEnv(t, clock.Now, func(o *refresher.Options) {
		o.ProviderTimeout, o.Attempts, o.Backoff, o.PersistBudget, o.ClockSkew = 0, 0, 0, 0, 0 // the defaults: 10 s, 3, 500 ms, 10 s, 5 s
	})
	e.seed("fresh", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	e.scheduled()
	e.seed("new", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	rep, err := e.runWithin(20*time.Second, refresher.Request{})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if got := outcomes(rep); got["fresh"] != refresher.OutcomeNotDue || got["new"] != refresher.OutcomeRefreshed {
		t.Errorf("got %v, want fresh not_due and new refreshed", got)
	}
	_, rec := e.committed("new")
	if d := rec.StaleAt.Sub(clock.Now()); d < 7*time.Minute || d > 8*time.Minute {
		t.Errorf("stale in %v, want half the 15-minute lifetime", d)
	}

	// Too little time left for a refresh: deferred with a row, not started, and not an
	// error (issue 18: the next run takes it).
	rep, err = e.runWithin(5*time.Second, refresher.Request{Tokens: []string{"fresh"}, Force: true})
	if r := row(t, rep, "fresh"); err != nil || r.Outcome != refresher.OutcomeDeferred || !strings.Contains(r.Error, "not started") {
		t.Errorf("5 s deadline: got %s %q (error %v), want deferred: not started, no error", r.Outcome, r.Error, err)
	}
}

// Issue 10 §3: ensure refreshes only inside the margin, once for any number of callers,
// and answers with expires_at and generation, never a token.
func TestEnsure(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotating(t, clock)
	e := newEnv(t, clock.Now, nil)
	e.seed("short", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	e.scheduled()
	ensure := refresher.Request{Ensure: []string{"short"}}
	before := sim.Requests()
	r := row(t, mustRun(t, e, ensure), "short")
	if r.Outcome != refresher.OutcomeNotDue || r.ExpiresAt == "" || r.Generation != 1 || sim.Requests() != before {
		t.Errorf("fresh token: got %+v with %d provider requests, want not_due with expires_at and generation 1, no request", r, sim.Requests()-before)
	}
	clock.Advance(8 * time.Minute) // inside the 7.5-minute margin
	const callers = 6
	outs := make(chan string, callers)
	for i := 0; i < callers; i++ {
		go func() {
			rep, _ := e.run(ensure)
			outs <- row(t, rep, "short").Outcome
		}()
	}
	counts := map[string]int{}
	for i := 0; i < callers; i++ {
		counts[<-outs]++
	}
	if counts[refresher.OutcomeRefreshed] != 1 || sim.Requests()-before != 1 {
		t.Errorf("%d concurrent ensures: outcomes %v and %d provider requests, want exactly one refresh", callers, counts, sim.Requests()-before)
	}
	raw, _ := json.Marshal(mustRun(t, e, ensure))
	if strings.Contains(string(raw), "access_token") {
		t.Errorf("ensure answer names a token field: %s", raw)
	}
}

// Contract 3: through the "ensure" alias only ensure is accepted.
func TestEnsureAlias(t *testing.T) {
	e := newEnv(t, time.Now, nil)
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{
		InvokedFunctionArn: "arn:aws:lambda:us-east-1:123456789012:function:refresher:ensure"})
	for _, ev := range []string{`{"tokens":["a"],"force":true}`, `{}`, `{"sweep":true}`} {
		if _, err := e.engine.Handle(ctx, json.RawMessage(ev)); err == nil || !strings.Contains(err.Error(), "ensure") {
			t.Errorf("%s through the ensure alias: err %v, want a refusal", ev, err)
		}
	}
	if _, err := e.engine.Handle(ctx, json.RawMessage(`{"ensure":["missing"]}`)); err != nil && strings.Contains(err.Error(), "alias") {
		t.Errorf("ensure through the alias refused: %v", err)
	}
}

// newRotatingTTL is newRotating with access tokens of lifetime ttl.
func newRotatingTTL(t *testing.T, clock *providersim.Clock, ttl time.Duration) (*providersim.Rotating, string) {
	cs := "cs-" + randID()
	registerSecrets(cs)
	sim := providersim.NewRotating(providersim.RotatingOptions{ClientID: "app", ClientSecret: cs, AccessTTL: ttl, Now: clock.Now})
	t.Cleanup(sim.Close)
	registerIssuer(sim)
	return sim, cs
}

func mustRun(t *testing.T, e *env, req refresher.Request) *refresher.Report {
	t.Helper()
	rep, err := e.run(req)
	if err != nil {
		t.Fatalf("run %+v: %v", req, err)
	}
	return rep
}

func ms(t time.Time) string { return strings.TrimSpace(jsonNumber(t.UnixMilli())) }

func jsonNumber(n int64) string { b, _ := json.Marshal(n); return string(b) }

// setWrites stands for a history of private versions the record already counts.
func (e *env) setWrites(name string, writes []string) {
	e.t.Helper()
	ns := make([]string, len(writes))
	copy(ns, writes)
	_, err := e.ddb.UpdateItem(context.Background(), &dynamodb.UpdateItemInput{
		TableName:                 aws.String(e.table),
		Key:                       map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "token#" + name}},
		UpdateExpression:          aws.String("SET writes = :w"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":w": &ddbtypes.AttributeValueMemberNS{Value: ns}},
	})
	if err != nil {
		e.t.Fatalf("set writes: %v", err)
	}
}

// fakeNotifier records what the engine would publish to EventBridge (pkg/notify has its
// own tests against the real client shape).
type fakeNotifier struct {
	mu     sync.Mutex
	events []notify.Event
}

func (f *fakeNotifier) Publish(_ context.Context, evs ...notify.Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, evs...)
	return nil
}

func (f *fakeNotifier) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, ev := range f.events {
		out = append(out, ev.DetailType+"/"+ev.Token)
	}
	f.events = nil
	return out
}

// Contract 5: a token moving to needs_reauth, recovering after a re-seed, and an invalid
// edit each raise one notification naming the token, never a secret.
func TestNotifications(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotating(t, clock)
	n := &fakeNotifier{}
	e := newEnv(t, clock.Now, func(o *refresher.Options) { o.Notifier = n })
	e.seed("nt", rotatingDoc(sim.URL(), "app", cs, "rot_rt_not-a-token-"+randID(), ""))
	e.run(refresher.Request{})
	if got := n.take(); len(got) != 1 || got[0] != notify.DetailNeedsReauth+"/nt" {
		t.Errorf("after the rejection: %v, want one %q", got, notify.DetailNeedsReauth)
	}
	e.run(refresher.Request{})
	if got := n.take(); len(got) != 0 {
		t.Errorf("a second run while needs_reauth: %v, want no repeat", got)
	}
	e.edit("nt", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	e.run(refresher.Request{})
	if got := n.take(); len(got) != 1 || got[0] != notify.DetailRecovered+"/nt" {
		t.Errorf("after the re-seed: %v, want one %q", got, notify.DetailRecovered)
	}
	bad := rotatingDoc(sim.URL(), "app", cs, "rt-x", "")
	bad["provider"].(map[string]any)["client_auth"] = "carrier-pigeon"
	registerSecrets("rt-x")
	e.edit("nt", bad)
	e.run(refresher.Request{})
	if got := n.take(); len(got) != 1 || got[0] != notify.DetailInvalidConfig+"/nt" {
		t.Errorf("after an invalid edit: %v, want one %q", got, notify.DetailInvalidConfig)
	}
}

// Issue 18: eight consumers ensuring one stale token at once: one refreshes, the seven
// others wait for its commit and answer not_due with the new expires_at and generation
// (was: lease_held, and a re-read of a secret not yet published).
func TestEnsureWaitsForHolder(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotating(t, clock)
	e := newEnv(t, clock.Now, nil)
	e.seed("stale", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	e.scheduled()
	clock.Advance(8 * time.Minute) // inside the 7.5-minute margin
	sim.SetLatency(time.Second)    // the holder keeps its lease while the others arrive
	before := sim.Requests()
	const callers = 8
	rows := make(chan refresher.Row, callers)
	for i := 0; i < callers; i++ {
		go func() {
			rep, err := e.run(refresher.Request{Ensure: []string{"stale"}})
			if err != nil || rep == nil {
				rows <- refresher.Row{Outcome: "error: " + fmt.Sprint(err)}
				return
			}
			rows <- rep.Tokens[0]
		}()
	}
	counts := map[string]int{}
	var got []refresher.Row
	for i := 0; i < callers; i++ {
		r := <-rows
		counts[r.Outcome]++
		got = append(got, r)
	}
	_, rec := e.committed("stale")
	if counts[refresher.OutcomeRefreshed] != 1 || counts[refresher.OutcomeNotDue] != callers-1 || sim.Requests()-before != 1 {
		t.Fatalf("got outcomes %v and %d provider requests, want 1 refreshed, %d not_due, 1 request", counts, sim.Requests()-before, callers-1)
	}
	for _, r := range got {
		if r.Generation != rec.Generation || r.ExpiresAt != rec.ExpiresAt.UTC().Format(time.RFC3339) {
			t.Errorf("row %+v: want generation %d and expires_at %s (the holder's commit)", r, rec.Generation, rec.ExpiresAt.UTC().Format(time.RFC3339))
		}
	}
}

// Issue 18 timing defect 2: an operator edit (or a late tokenctl authorize) whose access
// token has already expired is refreshed at once (was: adopted as not_due, the expired token
// published as active and the next refresh a day away).
func TestExpiredEditDueAtOnce(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotatingTTL(t, clock, time.Hour)
	e := newEnv(t, clock.Now, nil)
	e.seed("exp", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	e.scheduled()
	clock.Advance(10 * time.Minute)
	edit := rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), "")
	edit["access_token"] = "expired-" + randID()
	edit["token_type"] = "Bearer"
	edit["expires_at"] = clock.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	edit["authorized_at"] = clock.Now().UTC().Format(time.RFC3339) // a new authorisation (docs/design.md §2)
	e.edit("exp", edit)
	before := sim.Requests()
	r := row(t, e.scheduled(), "exp")
	if r.Outcome != refresher.OutcomeRefreshed || sim.Requests()-before != 1 {
		t.Fatalf("reconcile after the edit: got %s %q with %d provider requests, want refreshed with 1", r.Outcome, r.Error, sim.Requests()-before)
	}
	if exp, _ := time.Parse(time.RFC3339, e.accessRaw("exp")["expires_at"].(string)); !exp.After(clock.Now()) {
		t.Errorf("published expires_at %v, want a fresh token", exp)
	}
}

// Issue 18 timing defect 1: a 24 h access token with a 3-day refresh token is kept alive
// from the refresh token's own lifetime, not due at every sweep (was: 6 provider requests in
// 6 sweeps 5 s apart).
func TestShortRefreshTokenNotDueEverySweep(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotating(t, clock)
	e := newEnv(t, clock.Now, nil)
	e.waiveInvariant(invariant.CommittedLive, "the answer is scripted (RespondNext) to carry refresh_expires_in, which the simulator never sends: the committed refresh token is not one the simulator issued")
	e.seed("short-rt", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	at, rt := "at-"+randID(), "rt-"+randID()
	registerSecrets(at, rt)
	sim.RespondNext(200, http.Header{"Content-Type": {"application/json"}},
		[]byte(`{"access_token":"`+at+`","token_type":"Bearer","expires_in":86400,"refresh_token":"`+rt+`","refresh_expires_in":259200}`))
	if r := row(t, e.scheduled(), "short-rt"); r.Outcome != refresher.OutcomeRefreshed {
		t.Fatalf("first reconcile: got %s %q, want refreshed", r.Outcome, r.Error)
	}
	if doc, _ := e.committed("short-rt"); doc.RefreshExpiresAt.Sub(clock.Now()).Round(time.Hour) != 72*time.Hour {
		t.Fatalf("refresh token expires in %v, want 72 h", doc.RefreshExpiresAt.Sub(clock.Now()))
	}
	before := sim.Requests()
	for i := 0; i < 6; i++ {
		clock.Advance(5 * time.Second)
		mustRun(t, e, refresher.Request{Sweep: true})
	}
	if got := sim.Requests() - before; got != 0 {
		t.Errorf("6 sweeps 5 s apart: got %d provider requests, want 0", got)
	}
	_, rec := e.committed("short-rt")
	if d := rec.NextDueAt.Sub(clock.Now()); d < 11*time.Hour {
		t.Errorf("next due in %v, want about 12 h (the access token's half-life)", d)
	}
}
