package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/internal/faultproxy"
	"github.com/seed-502fa48b/token-refresher/internal/lambdaemu"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// faultRunner runs one event either in process (engine) or through the real
// bootstrap, and reports token name's row the same way.
type faultRunner func(event, name string) crashResult

func faultEngineRunner(t *testing.T, e *env) faultRunner {
	eng := e.engine(time.Now, nil)
	return func(event, name string) crashResult {
		req, err := refresher.ParseRequest([]byte(event))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		rep, _ := runEngine(context.Background(), eng, req) // a failed row also comes back as an error
		res := crashResult{took: time.Since(start), outcome: "missing from the report"}
		if rep != nil {
			for _, r := range rep.Tokens {
				if r.Name == name {
					res.outcome, res.detail, res.gen = r.Outcome, r.Error, r.Generation
				}
			}
		}
		return res
	}
}

func faultBootstrapRunner(e *env) faultRunner {
	emu := e.function(crashFunctionTimeout)
	return func(event, name string) crashResult { return crashInvoke(emu, event, name) }
}

// TestLostProviderResponse: the provider commits the rotation and the answer is lost on
// the way back. Within the provider's reuse grace the engine's retry with the same refresh
// token gets the same successor and the invocation ends refreshed; without a grace the
// retry is refused and the token must say so — needs_reauth with the interrupted reason in
// both secrets, never refreshed, never silent.
func TestLostProviderResponse(t *testing.T) {
	type cell struct {
		grace time.Duration
		via   string
		got   string
		calls int
	}
	var cells []*cell
	for _, grace := range []time.Duration{60 * time.Second, 0} {
		for _, via := range []string{"engine", "bootstrap"} {
			c := &cell{grace: grace, via: via}
			cells = append(cells, c)
			t.Run(fmt.Sprintf("grace=%s/%s", grace, via), func(t *testing.T) {
				e := newEnv(t)
				sim, cs := crashProvider(t, grace)
				run := faultEngineRunner(t, e)
				if via == "bootstrap" {
					run = faultBootstrapRunner(e)
				}
				const name = "lost"
				seed := crashSeed(e, sim, cs, name, grace)
				if got := run(forceEvent(name), name); got.outcome != refresher.OutcomeRefreshed {
					t.Fatalf("setup run: got %v, want refreshed", got)
				}
				_, before := e.committed(name)

				sim.DropNextResponse()
				calls, dropped := sim.Requests(), sim.Count(0)
				got := run(forceEvent(name), name)
				c.got, c.calls = got.outcome, sim.Requests()-calls
				if d := sim.Count(0) - dropped; d != 1 {
					t.Fatalf("the simulator dropped %d answers, want 1", d)
				}
				// Inside the grace the same refresh token is sent once more; with no grace it
				// may be spent already and is never presented again.
				wantCalls := 2
				if grace == 0 {
					wantCalls = 1
				}
				if c.calls != wantCalls {
					t.Errorf("got %d provider requests, want %d (the lost one, and one retry with the same refresh token only inside the grace)", c.calls, wantCalls)
				}
				st := crashCheckHealed(t, e, sim, seed, name)
				if st.rec.Generation != before.Generation+1 {
					t.Errorf("generation %d, want %d", st.rec.Generation, before.Generation+1)
				}
				if grace > 0 {
					if got.outcome != refresher.OutcomeRefreshed {
						t.Errorf("got %v, want refreshed within the reuse grace", got)
					}
					if !st.liveIsOurs || st.reauth {
						t.Errorf("live refresh token is the committed one: %v, needs_reauth: %v; want true, false", st.liveIsOurs, st.reauth)
					}
					return
				}
				if got.outcome != refresher.OutcomeNeedsReauth || !strings.Contains(got.detail, crashInterrupted) {
					t.Errorf("got %v, want needs_reauth with %q", got, crashInterrupted)
				}
				if !st.reauth {
					t.Errorf("the committed state is %q (%q), want needs_reauth with the interrupted reason", st.rec.Status, st.rec.StatusReason)
				}
				if st.liveIsOurs {
					t.Errorf("the committed refresh token is the provider's live one; want the spent one (the successor was lost with the answer)")
				}
				// Reported, not retried: the next run says the same without calling the provider.
				calls = sim.Requests()
				if again := run(scheduledEvent, name); again.outcome != refresher.OutcomeNeedsReauth || !strings.Contains(again.detail, crashInterrupted) {
					t.Errorf("next run: got %v, want needs_reauth with %q", again, crashInterrupted)
				}
				if d := sim.Requests() - calls; d != 0 {
					t.Errorf("next run made %d provider requests, want 0", d)
				}
			})
		}
	}
	for _, c := range cells {
		t.Logf("figure: lost provider response, reuse grace %-5s via %-9s → %s (%d provider requests in the invocation)", c.grace, c.via, c.got, c.calls)
	}
}

// faultOp is one AWS operation of a refresh, selected precisely enough that the fault hits
// that step and no other.
type faultOp struct {
	name    string
	op      string
	service faultproxy.Service
	match   func(prefix string) func([]byte) bool
	// firstSight: the token has no record and no access secret yet (PutItem and CreateSecret
	// only happen then).
	firstSight bool
	// want is the faulted run's outcome, heal the next clean run's; detail is what a failed
	// run's error must say (which step failed).
	want, heal, detail string
}

var faultOps = []faultOp{
	// An operator run finds AWSCURRENT with ListSecrets (no value read).
	{name: "ListSecrets (look-up)", op: "secretsmanager.ListSecrets", service: faultproxy.SecretsManager,
		detail: "list private secret", want: refresher.OutcomeFailed, heal: refresher.OutcomeNotDue},
	{name: "GetItem (record)", op: "DynamoDB_20120810.GetItem", service: faultproxy.DynamoDB,
		detail: "read token record", want: refresher.OutcomeFailed, heal: refresher.OutcomeNotDue},
	{name: "GetSecretValue (VersionId)", op: "secretsmanager.GetSecretValue", service: faultproxy.SecretsManager,
		match:  func(string) func([]byte) bool { return bodyContains(`"VersionId"`) },
		detail: "read private version", want: refresher.OutcomeFailed, heal: refresher.OutcomeNotDue},
	{name: "TransactWriteItems (claim)", op: "DynamoDB_20120810.TransactWriteItems", service: faultproxy.DynamoDB,
		detail: "claim: ", want: refresher.OutcomeFailed, heal: refresher.OutcomeNotDue},
	{name: "PutSecretValue (private, persist)", op: "secretsmanager.PutSecretValue", service: faultproxy.SecretsManager,
		match:  func(string) func([]byte) bool { return bodyContains(persistStage) },
		detail: "new token obtained but not saved", want: refresher.OutcomeFailed, heal: refresher.OutcomeRefreshed},
	{name: "UpdateItem (commit)", op: "DynamoDB_20120810.UpdateItem", service: faultproxy.DynamoDB,
		match:  func(string) func([]byte) bool { return bodyContains("prev_version_id") },
		detail: "commit: ", want: refresher.OutcomeFailed, heal: refresher.OutcomeRefreshed},
	// Moving AWSCURRENT is after the commit and only logged when it fails: the refresh is
	// committed and published, so refreshed is true; the next run moves the label.
	// DescribeSecret is read only when a label move is refused, so its fault is not met.
	{name: "DescribeSecret (label)", op: "secretsmanager.DescribeSecret", service: faultproxy.SecretsManager,
		want: refresher.OutcomeRefreshed, heal: refresher.OutcomeNotDue},
	{name: "UpdateSecretVersionStage (label)", op: "secretsmanager.UpdateSecretVersionStage", service: faultproxy.SecretsManager,
		want: refresher.OutcomeRefreshed, heal: refresher.OutcomeNotDue},
	{name: "PutSecretValue (access, publish)", op: "secretsmanager.PutSecretValue", service: faultproxy.SecretsManager,
		match:  crashAccessBody,
		detail: "publishing the access secret failed", want: refresher.OutcomeFailed, heal: refresher.OutcomeNotDue},
	{name: "PutItem (first sight: create record)", op: "DynamoDB_20120810.PutItem", service: faultproxy.DynamoDB,
		firstSight: true, detail: "create token record", want: refresher.OutcomeFailed, heal: refresher.OutcomeRefreshed},
	{name: "CreateSecret (first publish)", op: "secretsmanager.CreateSecret", service: faultproxy.SecretsManager,
		match: crashAccessBody, firstSight: true, detail: "publishing the access secret failed", want: refresher.OutcomeFailed, heal: refresher.OutcomeNotDue},
}

// faultKind is one kind of answer the fault proxy gives instead of forwarding.
type faultKind struct {
	name string
	err  func(faultproxy.Service) *faultproxy.AWSError
}

var faultKinds = []faultKind{
	{name: "throttling", err: faultproxy.ThrottlingError},
	{name: "500", err: func(s faultproxy.Service) *faultproxy.AWSError {
		if s == faultproxy.DynamoDB {
			return faultproxy.InternalServerError()
		}
		return faultproxy.InternalServiceError()
	}},
	{name: "503", err: func(faultproxy.Service) *faultproxy.AWSError { return faultproxy.ServiceUnavailable() }},
}

// faultCell is one (operation, fault kind) trial.
type faultCell struct {
	op, kind         string
	got, heal, state string
	hits             int // requests the fault answered
	lastHit          time.Duration
	took             time.Duration
	lost             bool
	done             bool
}

// TestAWSFaults makes each AWS operation of a refresh fail for longer than the SDK's own
// retries (3 attempts) hide, on a due token, through the real bootstrap: the invocation
// reports failed — or, where the fault comes after the commit and is only a label move,
// refreshed, which is then true — and never a success with unsaved state; the provider's
// live refresh token stays recoverable; once the fault is gone and the lease has run out,
// the next clean run heals everything.
func TestAWSFaults(t *testing.T) {
	kinds := faultKinds
	if !soak() {
		kinds = kinds[:2] // throttling and the service's own 500; 503 under soak
	}
	var cells []*faultCell
	for _, op := range faultOps {
		for _, k := range kinds {
			cells = append(cells, &faultCell{op: op.name, kind: k.name})
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 6)
	i := 0
	for _, op := range faultOps {
		for _, k := range kinds {
			c := cells[i]
			i++
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				t.Run(op.name+"/"+k.name, func(t *testing.T) { faultTrial(t, op, k, c) })
			}()
		}
	}
	wg.Wait()

	failures, refreshed, timedOut, lost, heals, done, slowest := 0, 0, 0, 0, 0, 0, time.Duration(0)
	t.Logf("figure: AWS faults, each held until removed (the SDK's 3 attempts cannot hide it), through the real bootstrap (%s timeout), %s wall time",
		crashFunctionTimeout, time.Since(start).Round(100*time.Millisecond))
	t.Logf("figure: %-38s %-10s | %-9s %-4s %-9s | %-30s | %s", "operation", "fault", "outcome", "hits", "run time", "state after the fault", "next clean run")
	for _, c := range cells {
		if !c.done {
			continue
		}
		done++
		switch c.got {
		case refresher.OutcomeFailed:
			failures++
		case refresher.OutcomeRefreshed:
			refreshed++
		case "TIMED OUT":
			timedOut++
		}
		if c.lost {
			lost++
		}
		if c.heal == refresher.OutcomeRefreshed || c.heal == refresher.OutcomeNotDue {
			heals++
		}
		slowest = max(slowest, c.took)
		t.Logf("figure: %-38s %-10s | %-9s %-4d %-9s | %-30s | %s", c.op, c.kind, c.got, c.hits, c.took.Round(10*time.Millisecond), c.state, c.heal)
	}
	t.Logf("figure: %d ops × %d fault kinds = %d trials: %d reported failed, %d refreshed (label faults after the commit), %d timed out (want 0); %d states lost; %d healed by the next clean run; slowest faulted invocation %s",
		len(faultOps), len(kinds), done, failures, refreshed, timedOut, lost, heals, slowest.Round(10*time.Millisecond))
}

func faultTrial(t *testing.T, op faultOp, kind faultKind, c *faultCell) {
	e := newEnv(t)
	const grace = 60 * time.Second // a lost-before-persist refresh is recovered with the old token
	sim, cs := crashProvider(t, grace)
	emu := e.function(crashFunctionTimeout)
	const name = "faulty"
	seed := crashSeed(e, sim, cs, name, grace)
	var beforeGen int64 = -1
	if !op.firstSight {
		if got := crashInvoke(emu, forceEvent(name), name); got.outcome != refresher.OutcomeRefreshed {
			t.Fatalf("setup run: got %v, want refreshed", got)
		}
		_, rec := e.committed(name)
		beforeGen = rec.Generation
	}

	// The hook records when each faulted request arrived (it runs in the proxy, before the
	// error answer), so a run that overruns its deadline shows where the time went.
	var mu sync.Mutex
	var at []time.Duration
	faultStart := time.Now()
	rule := faultproxy.Rule{Op: op.op, Error: kind.err(op.service), Before: func(string) {
		mu.Lock()
		at = append(at, time.Since(faultStart))
		mu.Unlock()
	}}
	if op.match != nil {
		rule.Match = op.match(e.prefix)
	}
	remove := e.proxy.Add(rule)
	got := crashInvoke(emu, forceEvent(name), name)
	remove()
	mu.Lock()
	c.got, c.took, c.hits = got.outcome, got.took, len(at)
	switch {
	case errors.Is(got.err, lambdaemu.ErrTimeout):
		c.got = "TIMED OUT"
	case got.err != nil:
		c.got = got.err.Error()
	}
	if len(at) > 0 {
		c.lastHit = at[len(at)-1]
	}
	mu.Unlock()
	if got.err == nil {
		c.got = got.outcome
	}
	switch {
	case errors.Is(got.err, lambdaemu.ErrTimeout):
		// The function must answer before its deadline: a timeout loses the whole report
		// (every token's row) and says nothing about what was left to recover.
		t.Errorf("faulted run: the invocation overran its %s deadline and was killed (Task timed out) instead of reporting %s; "+
			"the fault answered %d request(s), the last %s after the invocation started", crashFunctionTimeout, op.want, c.hits, c.lastHit.Round(time.Millisecond))
	case got.outcome != op.want:
		t.Errorf("faulted run: got %v, want %s", got, op.want)
	case !strings.Contains(got.detail, op.detail):
		t.Errorf("faulted run: error %q, want it to say %q", got.detail, op.detail)
	}
	if got.outcome == refresher.OutcomeFailed && strings.Contains(got.detail, "function error") {
		t.Errorf("faulted run: %v", got)
	}

	// What the fault left: the live refresh token must be committed, saved under the
	// in-flight version, or still inside the provider's grace with inflight recorded.
	c.state = faultState(t, e, sim, seed, name, got.outcome, beforeGen)
	c.lost = c.state == "LOST"

	e.expireLease(name)
	calls := sim.Requests()
	healed := crashInvoke(emu, scheduledEvent, name)
	c.heal = healed.String()
	if healed.outcome != op.heal {
		t.Errorf("heal run: got %v, want %s", healed, op.heal)
	}
	st := crashCheckHealed(t, e, sim, seed, name)
	if !st.liveIsOurs || st.reauth {
		c.lost = true
		t.Errorf("after the heal run: the live refresh token is committed: %v, needs_reauth: %v; want true, false", st.liveIsOurs, st.reauth)
	}
	if st.doc.Status != token.StatusActive {
		t.Errorf("after the heal run: status %q, want active", st.doc.Status)
	}
	if op.heal == refresher.OutcomeNotDue && sim.Requests() != calls {
		t.Errorf("heal run made %d provider requests, want 0", sim.Requests()-calls)
	}
	c.done = true
}

// faultState classifies and checks the state a faulted run left.
func faultState(t *testing.T, e *env, sim *providersim.Rotating, seed, name, outcome string, beforeGen int64) string {
	t.Helper()
	ctx := context.Background()
	live := sim.Live(seed)
	rec, err := e.ledger.Get(ctx, name)
	if err != nil {
		// First sight with the record never created: nothing was claimed, so the provider
		// cannot have been called.
		if live != seed {
			t.Errorf("no record, yet the provider rotated the seed")
			return "LOST"
		}
		return "untouched (no record)"
	}
	doc, _ := e.committed(name)
	if outcome == refresher.OutcomeRefreshed && (rec.Generation != beforeGen+1 && !(beforeGen < 0 && rec.Generation == 1)) {
		t.Errorf("reported refreshed but the record is at generation %d (before %d)", rec.Generation, beforeGen)
	}
	switch {
	case doc.RefreshToken.Reveal() == live:
		if outcome == refresher.OutcomeRefreshed && rec.Inflight != nil {
			t.Errorf("reported refreshed with inflight still set")
		}
		if rec.Inflight != nil {
			return "committed, inflight (not spent)"
		}
		return "committed"
	case rec.Inflight == nil:
		t.Errorf("the live refresh token is not committed and nothing is in flight: lost")
		return "LOST"
	default:
		if outcome == refresher.OutcomeRefreshed {
			t.Errorf("reported refreshed with the new refresh token not committed")
		}
		v, err := e.store.GetVersion(ctx, e.prefix+"private/"+name, rec.Inflight.To)
		if err == nil {
			pend, perr := token.ParsePrivate([]byte(v.Value.Reveal()))
			if perr != nil || pend.RefreshToken.Reveal() != live {
				t.Errorf("in-flight version %s exists but does not hold the live refresh token", rec.Inflight.To)
				return "LOST"
			}
			return "saved as inflight version"
		}
		return "in provider grace, inflight"
	}
}
