package refresher_test

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
)

// A provider 429 sets throttled_until in the quota bucket; later runs skip the provider
// until it passes (here: the next quota day, as the seed's 429 carries no Retry-After).
func TestThrottledSkipsUntilNextDay(t *testing.T) {
	clock := providersim.NewClock(time.Date(2026, 11, 22, 10, 0, 0, 0, ist))
	secret := "sah-secret-" + randID()
	registerSecrets(secret)
	// The provider allows fewer requests than our policy thinks: a real 429 happens.
	sim := providersim.NewSahamati(providersim.SahamatiOptions{EntityID: "fiu-429", Secret: secret, DailyLimit: 1, Now: clock.Now})
	defer sim.Close()
	registerIssuer(sim)
	e := newEnv(t, clock.Now, nil)
	e.seed("s", sahamatiDoc(sim.URL(), "fiu-429", secret))

	force := refresher.Request{Tokens: []string{"s"}, Force: true}
	if rep, err := e.run(force); err != nil || outcomes(rep)["s"] != refresher.OutcomeRefreshed {
		t.Fatalf("first: got %v %v, want refreshed", rep, err)
	}
	rep, err := e.run(force)
	if err != nil {
		t.Fatalf("second: %v (throttled is not a failure)", err)
	}
	if r := row(t, rep, "s"); r.Outcome != refresher.OutcomeThrottled || !strings.Contains(r.Error, "2026-11-23T00:00:00+05:30") && !strings.Contains(r.Error, "2026-11-22T18:30:00Z") {
		t.Fatalf("second: got %s %q, want throttled until the next IST day", r.Outcome, r.Error)
	}
	before := sim.Requests()
	clock.Advance(4 * time.Hour)
	if rep, _ := e.run(force); outcomes(rep)["s"] != refresher.OutcomeThrottled {
		t.Fatalf("third: got %s, want throttled", outcomes(rep)["s"])
	}
	if sim.Requests() != before {
		t.Errorf("got %d provider requests while throttled, want 0", sim.Requests()-before)
	}
	// The committed state is untouched and still usable.
	doc, rec := e.committed("s")
	// The claim's in-flight record stays (only a commit removes it), marked unspent.
	if rec.Generation != 1 || doc.Status != "active" || rec.Interrupted() || rec.LeaseHolder != "" {
		t.Errorf("after throttle: generation %d status %s inflight %v lease %q", rec.Generation, doc.Status, rec.Inflight, rec.LeaseHolder)
	}
	clock.Set(time.Date(2026, 11, 23, 0, 1, 0, 0, ist))
	if rep, err := e.run(force); err != nil || outcomes(rep)["s"] != refresher.OutcomeRefreshed {
		t.Fatalf("next day: got %v %v, want refreshed", outcomes(rep), err)
	}
}

// Transient provider failures are retried with the same refresh token inside the
// invocation; when every attempt fails the token is failed (the invocation errors), the
// committed state is untouched, and the next run recovers.
func TestTransientFailureThenRecovery(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotating(t, clock)
	seed := sim.Seed("offline_access fund.read target:b/t")
	e := newEnv(t, clock.Now, nil) // 2 attempts
	e.seed("t", rotatingDoc(sim.URL(), "app", cs, seed, ""))

	sim.FailNext(1, 503)
	rep, err := e.run(refresher.Request{})
	if err != nil || outcomes(rep)["t"] != refresher.OutcomeRefreshed {
		t.Fatalf("one 503 then success: got %v %v, want refreshed", outcomes(rep), err)
	}
	if got := sim.Requests(); got != 2 {
		t.Errorf("got %d provider requests, want 2 (one retry)", got)
	}

	sim.FailNext(2, 502)
	rep, err = e.run(refresher.Request{Tokens: []string{"t"}, Force: true})
	if err == nil || !strings.Contains(err.Error(), "1 of 1 tokens failed") {
		t.Fatalf("two 502s: got err %v, want the invocation to fail", err)
	}
	if r := row(t, rep, "t"); r.Outcome != refresher.OutcomeFailed || !strings.Contains(r.Error, "transient") {
		t.Fatalf("two 502s: got %s %q, want failed (transient)", r.Outcome, r.Error)
	}
	doc, rec := e.committed("t")
	if rec.ConsecutiveFailures != 1 || rec.LastError == "" || rec.LeaseHolder != "" {
		t.Errorf("after failure: consecutive_failures %d last_error %q lease %q", rec.ConsecutiveFailures, rec.LastError, rec.LeaseHolder)
	}
	if sim.Live(seed) != doc.RefreshToken.Reveal() {
		t.Fatalf("after failure: the live refresh token is not the committed one")
	}
	rep, err = e.run(refresher.Request{Tokens: []string{"t"}, Force: true})
	if err != nil || outcomes(rep)["t"] != refresher.OutcomeRefreshed {
		t.Fatalf("next run: got %v %v, want refreshed", outcomes(rep), err)
	}
	doc, rec = e.committed("t")
	if rec.ConsecutiveFailures != 0 || sim.Live(seed) != doc.RefreshToken.Reveal() {
		t.Errorf("after recovery: consecutive_failures %d, live==committed %v", rec.ConsecutiveFailures, sim.Live(seed) == doc.RefreshToken.Reveal())
	}
}

// The function writes CloudWatch Embedded Metric Format lines (docs/design.md §4): per token its
// outcome and gauges (with the [Token] and [] dimension sets), per run the heartbeat and the
// quota of every key it spent — without a DynamoDB read per token.
func TestEmbeddedMetrics(t *testing.T) {
	clock := providersim.NewClock(time.Date(2026, 11, 22, 10, 0, 0, 0, ist))
	sim := newSahamati(t, "fiu-emf", clock)
	var buf strings.Builder
	e := newEnv(t, clock.Now, func(o *refresher.Options) { o.Metrics = &teeBuilder{b: &buf} })
	doc := sahamatiDoc(sim.URL(), "fiu-emf", simSecret(sim))
	doc["provider"].(map[string]any)["credentials_expire_at"] = clock.Now().Add(10 * 24 * time.Hour).UTC().Format(time.RFC3339)
	e.seed("m", doc)
	e.scheduled()
	sc := bufio.NewScanner(strings.NewReader(buf.String()))
	var tokenLines, runLines, quotaLines int
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %v", err)
		}
		aws, ok := m["_aws"].(map[string]any)
		if !ok || aws["Timestamp"] == nil {
			t.Fatalf("no _aws block: %v", m)
		}
		raw, _ := json.Marshal(aws["CloudWatchMetrics"])
		if !strings.Contains(string(raw), `"Namespace":"TokenRefresher"`) {
			t.Errorf("namespace: got %s", raw)
		}
		switch {
		case m["Token"] != nil:
			tokenLines++
			if m["Outcome"] != "refreshed" || m["Outcomes"] != float64(1) || m["Token"] != "m" {
				t.Errorf("outcome fields: got %v", m)
			}
			if s, ok := m["SecondsToExpiry"].(float64); !ok || s < 23*3600 || s > 24*3600 {
				t.Errorf("SecondsToExpiry: got %v, want about 24 h", m["SecondsToExpiry"])
			}
			if d, ok := m["DaysToCredentialExpiry"].(float64); !ok || d < 9.9 || d > 10.1 {
				t.Errorf("DaysToCredentialExpiry: got %v, want 10", m["DaysToCredentialExpiry"])
			}
			if p, ok := m["WriteBudgetUsedPercent"].(float64); !ok || p <= 0 || p > 2 {
				t.Errorf("WriteBudgetUsedPercent: got %v, want 1 of 90 (about 1.1)", m["WriteBudgetUsedPercent"])
			}
			if !strings.Contains(string(raw), `"Dimensions":[["Token"],[]]`) {
				t.Errorf("per-token gauges: got %s, want dimension sets [Token] and []", raw)
			}
		case m["QuotaKey"] != nil:
			quotaLines++
			if m["QuotaUsed"] != float64(1) || m["QuotaKey"] != "sahamati#fiu-emf" {
				t.Errorf("quota: got %v %v, want 1 for sahamati#fiu-emf", m["QuotaUsed"], m["QuotaKey"])
			}
		case m["Reconciled"] != nil:
			runLines++
		}
	}
	if tokenLines != 1 || runLines != 1 || quotaLines != 1 {
		t.Errorf("got %d token, %d run and %d quota EMF lines, want 1 each", tokenLines, runLines, quotaLines)
	}
}

// teeBuilder keeps the metric lines for the test and the leak scan (the engine serialises writes).
type teeBuilder struct{ b *strings.Builder }

func (l *teeBuilder) Write(p []byte) (int, error) {
	_, _ = suiteWriter{}.Write(p)
	return l.b.Write(p)
}

// An operator's edit made while a failed refresh is still in flight is adopted (the edit
// wins) instead of leaving the token stuck behind the in-flight record.
func TestOperatorEditSupersedesInflight(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotating(t, clock)
	e := newEnv(t, clock.Now, nil) // 2 attempts
	e.seed("op", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access fund.read target:b/op"), ""))
	sim.FailNext(2, 502)
	if _, err := e.run(refresher.Request{}); err == nil {
		t.Fatal("two 502s: got no error, want a failed token")
	}
	if _, rec := e.committed("op"); rec.Inflight == nil {
		t.Fatal("after an uncertain provider failure: got no inflight record, want one kept for recovery")
	}
	fresh := sim.Seed("offline_access fund.read target:b/op")
	edit := rotatingDoc(sim.URL(), "app", cs, fresh, "")
	edit["authorized_at"] = clock.Now().UTC().Format(time.RFC3339) // a new authorisation (docs/design.md §2)
	editID := e.edit("op", edit)
	rep := e.scheduled()
	if got := row(t, rep, "op"); got.Outcome != refresher.OutcomeRefreshed {
		t.Fatalf("after the edit: got %s (%s), want refreshed", got.Outcome, got.Error)
	}
	doc, rec := e.committed("op")
	if rec.PrevVersionID != editID || rec.Inflight != nil || sim.Live(fresh) != doc.RefreshToken.Reveal() {
		t.Errorf("after the edit: prev %s (want the edit %s), inflight %v, live==committed %v", rec.PrevVersionID, editID, rec.Inflight, sim.Live(fresh) == doc.RefreshToken.Reveal())
	}
}
