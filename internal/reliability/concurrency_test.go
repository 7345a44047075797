package reliability_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/internal/faultproxy"
	"github.com/seed-502fa48b/token-refresher/internal/lambdaemu"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// concTimeout is each invocation's Lambda timeout: far above one refresh (about 6 s with the
// harness's tuning), so a slow moment on 2 cores never turns into "not started".
const concTimeout = 30 * time.Second

// concInvocations is how many separate bootstrap processes race for one token.
const concInvocations = 50

// concRotating starts a rotating-refresh-token provider with the given reuse grace.
func concRotating(t *testing.T, grace time.Duration) (sim *providersim.Rotating, clientID, clientSecret string) {
	t.Helper()
	clientID, clientSecret = "app-"+randID(), "cs-"+randID()+randID()
	registerSecrets(clientSecret)
	sim = newRotating(t, providersim.RotatingOptions{ClientID: clientID, ClientSecret: clientSecret, ReuseGrace: grace})
	return sim, clientID, clientSecret
}

// concTokensEvent is a direct invoke for names without force: the engine refreshes only
// what is due, so a late invocation that finds the refresh committed says not_due.
func concTokensEvent(names ...string) string {
	b, _ := json.Marshal(map[string]any{"tokens": names})
	return string(b)
}

// concResult is one invocation's outcome for one token. A function error (some token
// failed) has no payload, so its message stands in as detail.
type concResult struct {
	outcome string
	detail  string
	err     error // the emulator's own error (timeout, killed): never expected
}

func concInvoke(ctx context.Context, emu *lambdaemu.Emulator, event, name string) concResult {
	rep, err := invoke(ctx, emu, event)
	if err != nil {
		var fe *lambdaemu.FunctionError
		if errors.As(err, &fe) {
			return concResult{outcome: refresher.OutcomeFailed, detail: fe.Message}
		}
		return concResult{outcome: "invoke error", detail: err.Error(), err: err}
	}
	for _, r := range rep.Tokens {
		if r.Name == name {
			return concResult{outcome: r.Outcome, detail: r.Error}
		}
	}
	return concResult{outcome: "missing", detail: fmt.Sprintf("no row for %s in the report", name)}
}

// concState is what a reader sees of one token: the record's pointer, AWSCURRENT, the
// committed and published documents, and every private version. Values stay inside the
// test; failures only say which part differs.
type concState struct {
	versionID    string
	generation   int64
	status       string
	reason       string
	leaseHolder  string
	inflight     bool
	current      string
	committed    string // raw committed private document
	refreshToken string
	access       string // raw access document
	versions     []string
}

func (e *env) concSnapshot(t *testing.T, name string) concState {
	t.Helper()
	ctx := context.Background()
	priv := e.prefix + "private/" + name
	rec, err := e.ledger.Get(ctx, name)
	if err != nil {
		t.Fatalf("record %s: %v", name, err)
	}
	raw, err := e.store.GetVersion(ctx, priv, rec.VersionID)
	if err != nil {
		t.Fatalf("private %s@%s: %v", name, rec.VersionID, err)
	}
	doc, err := token.ParsePrivate([]byte(raw.Value.Reveal()))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := e.store.GetCurrent(ctx, priv)
	if err != nil {
		t.Fatal(err)
	}
	s := concState{
		versionID: rec.VersionID, generation: rec.Generation, status: rec.Status, reason: rec.StatusReason,
		leaseHolder: rec.LeaseHolder, inflight: rec.Inflight != nil,
		current:      cur.ID,
		committed:    raw.Value.Reveal(),
		refreshToken: doc.RefreshToken.Reveal(),
	}
	if acc, err := e.store.GetCurrent(ctx, e.prefix+"access/"+name); err == nil {
		s.access = acc.Value.Reveal()
	}
	s.versions = e.concVersions(t, name)
	return s
}

// concVersions lists every private version id of name, sorted.
func (e *env) concVersions(t *testing.T, name string) []string {
	t.Helper()
	vs, err := e.store.Versions(context.Background(), e.prefix+"private/"+name)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, len(vs))
	for _, v := range vs {
		ids = append(ids, v.ID)
	}
	sort.Strings(ids)
	return ids
}

// concSeed writes a new private secret (as an operator would) and returns its version id.
func (e *env) concSeed(t *testing.T, name string, doc map[string]any) string {
	t.Helper()
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.store.Create(context.Background(), e.prefix+"private/"+name, token.Secret(raw))
	if err != nil {
		t.Fatalf("seed %s: %v", name, err)
	}
	return id
}

// concDiff names the parts of b that differ from a (never their values).
func concDiff(a, b concState) []string {
	var d []string
	if a.versionID != b.versionID {
		d = append(d, "record version_id")
	}
	if a.generation != b.generation {
		d = append(d, fmt.Sprintf("record generation (%d → %d)", a.generation, b.generation))
	}
	if a.status != b.status {
		d = append(d, fmt.Sprintf("record status (%s → %s)", a.status, b.status))
	}
	if a.current != b.current {
		d = append(d, "AWSCURRENT")
	}
	if a.committed != b.committed {
		d = append(d, "committed private document")
	}
	if a.access != b.access {
		d = append(d, "access secret")
	}
	if strings.Join(a.versions, ",") != strings.Join(b.versions, ",") {
		d = append(d, fmt.Sprintf("private versions (%d → %d)", len(a.versions), len(b.versions)))
	}
	return d
}

// concQuotaUsed reads the quota bucket a document spends, over every quota day in days.
func (e *env) concQuotaUsed(t *testing.T, doc map[string]any, at ...time.Time) int {
	t.Helper()
	raw, _ := json.Marshal(doc)
	p, err := token.ParsePrivate(raw)
	if err != nil {
		t.Fatal(err)
	}
	q, ok := p.Quota()
	if !ok {
		t.Fatal("document has no quota")
	}
	seen := map[string]bool{}
	used := 0
	for _, when := range at {
		day := ledger.Day(when, q.Location)
		if seen[day] {
			continue
		}
		seen[day] = true
		b, err := e.ledger.Quota(context.Background(), q.Key, day)
		if err != nil {
			t.Fatal(err)
		}
		used += b.Used
	}
	return used
}

// TestConcurrentInvocations: 50 separate bootstrap processes, released at once on one due
// token of a strict single-use provider (grace 0, so any second use of the refresh token
// is an invalid_grant). Exactly one refreshes; the provider sees exactly one request.
func TestConcurrentInvocations(t *testing.T) {
	e := newEnv(t)
	sim, clientID, clientSecret := concRotating(t, 0)

	emus := make([]*lambdaemu.Emulator, concInvocations)
	for i := range emus {
		emus[i] = e.function(concTimeout)
	}

	n := trials(20, 2)
	var leaseHeld, notDue, requests, invalidGrant int
	for trial := range n {
		// A fresh token each trial is due without force: force would make an invocation
		// that starts after the commit refresh again, legitimately.
		name := fmt.Sprintf("conc-%d-%s", trial, randID())
		seed := sim.Seed("")
		e.concSeed(t, name, rotatingDoc(sim.URL(), clientID, clientSecret, seed, "0s"))
		req0, bad0 := sim.Requests(), sim.Count(400)

		ctx, cancel := context.WithTimeout(context.Background(), 2*concTimeout)
		start := make(chan struct{})
		results := make([]concResult, len(emus))
		var wg sync.WaitGroup
		for i, emu := range emus {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				results[i] = concInvoke(ctx, emu, concTokensEvent(name), name)
			}()
		}
		close(start)
		wg.Wait()
		cancel()

		counts := map[string]int{}
		for i, r := range results {
			counts[r.outcome]++
			switch r.outcome {
			case refresher.OutcomeRefreshed, refresher.OutcomeLeaseHeld, refresher.OutcomeNotDue:
			default:
				t.Errorf("trial %d invocation %d: outcome %s (%s), want refreshed, lease_held or not_due", trial, i, r.outcome, r.detail)
			}
		}
		gotReq, gotBad := sim.Requests()-req0, sim.Count(400)-bad0
		requests += gotReq
		invalidGrant += gotBad
		leaseHeld += counts[refresher.OutcomeLeaseHeld]
		notDue += counts[refresher.OutcomeNotDue]
		if counts[refresher.OutcomeRefreshed] != 1 {
			t.Errorf("trial %d: %d invocations refreshed, want exactly 1 (outcomes %v)", trial, counts[refresher.OutcomeRefreshed], counts)
		}
		if gotReq != 1 {
			t.Errorf("trial %d: %d provider requests, want 1", trial, gotReq)
		}
		if gotBad != 0 {
			t.Errorf("trial %d: %d invalid_grant answers, want 0", trial, gotBad)
		}

		s := e.concSnapshot(t, name)
		if s.refreshToken != sim.Live(seed) || s.refreshToken == seed {
			t.Errorf("trial %d: committed refresh token is not the provider's live one", trial)
		}
		if s.generation != 1 {
			t.Errorf("trial %d: record generation %d, want 1", trial, s.generation)
		}
		if s.current != s.versionID {
			t.Errorf("trial %d: AWSCURRENT is not the committed version", trial)
		}
		if s.leaseHolder != "" || s.inflight {
			t.Errorf("trial %d: lease or inflight left behind (holder set %v, inflight %v)", trial, s.leaseHolder != "", s.inflight)
		}
		if len(s.versions) != 2 {
			t.Errorf("trial %d: %d private versions, want 2 (seed + one refresh)", trial, len(s.versions))
		}
	}
	t.Logf("figure: %d invocations × %d trials: %.2f provider requests per trial, %d invalid_grant, %d lease_held, %d not_due",
		concInvocations, n, float64(requests)/float64(n), invalidGrant, leaseHeld, notDue)
}

// TestUnacknowledgedWrites: a write AWS applied whose answer was lost (the proxy forwards
// it, then drops the connection). The SDK and the engine retry it; the ledger and the
// idempotency tokens must recognise it as ours.
func TestUnacknowledgedWrites(t *testing.T) {
	e := newEnv(t)
	emu := e.function(concTimeout)

	sahEntity, sahSecret := "FIU-"+randID(), "es-"+randID()+randID()
	registerSecrets(sahSecret)
	sah := providersim.NewSahamati(providersim.SahamatiOptions{EntityID: sahEntity, Secret: sahSecret})
	t.Cleanup(sah.Close)
	registerIssuer(sah)
	rot, clientID, clientSecret := concRotating(t, 0)

	type counter interface{ Requests() int }
	cases := []struct {
		name string
		rule func(tok string) faultproxy.Rule
		doc  func(quotaKey string) (map[string]any, counter, func(*concState) bool)
	}{
		{
			name: "claim TransactWriteItems (Sahamati, 300/day)",
			rule: func(tok string) faultproxy.Rule {
				return faultproxy.Rule{Op: "DynamoDB_20120810.TransactWriteItems", Match: bodyContains(tok)}
			},
			doc: func(quotaKey string) (map[string]any, counter, func(*concState) bool) {
				return map[string]any{
					"provider": map[string]any{"grant": "sahamati_entity", "token_url": sah.URL(), "entity_id": sahEntity, "entity_secret": sahSecret},
					"policy":   map[string]any{"quota_key": quotaKey},
				}, sah, nil
			},
		},
		{
			name: "commit UpdateItem (rotating, quota policy)",
			rule: func(tok string) faultproxy.Rule {
				return faultproxy.Rule{Op: "DynamoDB_20120810.UpdateItem", Match: bodyContains(tok, "prev_version_id")}
			},
			doc: func(quotaKey string) (map[string]any, counter, func(*concState) bool) {
				seed := rot.Seed("")
				d := rotatingDoc(rot.URL(), clientID, clientSecret, seed, "0s")
				d["policy"] = map[string]any{"refresh_margin": "5m", "quota_key": quotaKey, "daily_limit": 100}
				return d, rot, func(s *concState) bool { return s.refreshToken == rot.Live(seed) && s.refreshToken != seed }
			},
		},
		{
			name: "persist PutSecretValue TR_PENDING (rotating, quota policy)",
			rule: func(tok string) faultproxy.Rule {
				return faultproxy.Rule{Op: "secretsmanager.PutSecretValue", Match: bodyContains(tok, persistStage)}
			},
			doc: func(quotaKey string) (map[string]any, counter, func(*concState) bool) {
				seed := rot.Seed("")
				d := rotatingDoc(rot.URL(), clientID, clientSecret, seed, "0s")
				d["policy"] = map[string]any{"refresh_margin": "5m", "quota_key": quotaKey, "daily_limit": 100}
				return d, rot, func(s *concState) bool { return s.refreshToken == rot.Live(seed) && s.refreshToken != seed }
			},
		},
	}

	n := trials(10, 2)
	var faults, over, under, provider, runs int
	var lines []string
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var cFaults, cOver, cUnder, cProvider int
			for trial := range n {
				name := fmt.Sprintf("unack-%d-%s", trial, randID())
				doc, sim, liveOK := c.doc("conc-q-" + randID())
				seedID := e.concSeed(t, name, doc)
				before := concState{versionID: seedID, versions: e.concVersions(t, name)} // not adopted yet: generation 0

				var fired atomic.Int32
				rule := c.rule(name)
				rule.Drop, rule.Times = faultproxy.DropAfterForward, 1
				rule.After = func(string) { fired.Add(1) }
				remove := e.proxy.Add(rule)

				t0 := time.Now()
				req0 := sim.Requests()
				ctx, cancel := context.WithTimeout(context.Background(), 2*concTimeout)
				r := concInvoke(ctx, emu, concTokensEvent(name), name)
				cancel()
				remove()
				made := sim.Requests() - req0
				used := e.concQuotaUsed(t, doc, t0, time.Now())
				after := e.concSnapshot(t, name)

				cFaults += int(fired.Load())
				cProvider += made
				if used < made {
					cUnder++
				} else {
					cOver += used - made
				}
				if fired.Load() != 1 {
					t.Errorf("trial %d: the fault fired %d times, want 1", trial, fired.Load())
				}
				if r.outcome != refresher.OutcomeRefreshed {
					t.Errorf("trial %d: outcome %s (%s), want refreshed", trial, r.outcome, r.detail)
				}
				if made != 1 {
					t.Errorf("trial %d: %d provider requests, want 1", trial, made)
				}
				if used < made {
					t.Errorf("trial %d: quota used %d < %d provider requests (under-count)", trial, used, made)
				}
				if used > made+int(fired.Load()) {
					t.Errorf("trial %d: quota used %d, more than %d provider requests + 1 per fault", trial, used, made)
				}
				if after.generation != before.generation+1 {
					t.Errorf("trial %d: generation %d → %d, want exactly +1", trial, before.generation, after.generation)
				}
				if after.current != after.versionID || after.versionID == before.versionID {
					t.Errorf("trial %d: AWSCURRENT is not the newly committed version", trial)
				}
				if len(after.versions) != len(before.versions)+1 {
					t.Errorf("trial %d: private versions %d → %d, want exactly one new version", trial, len(before.versions), len(after.versions))
				}
				if after.leaseHolder != "" || after.inflight {
					t.Errorf("trial %d: lease or inflight left behind", trial)
				}
				if after.access == "" {
					t.Errorf("trial %d: access secret not published", trial)
				}
				if liveOK != nil && !liveOK(&after) {
					t.Errorf("trial %d: committed refresh token is not the provider's live one", trial)
				}
			}
			perFault := 0.0
			if cFaults > 0 {
				perFault = float64(cOver) / float64(cFaults)
			}
			lines = append(lines, fmt.Sprintf("%s: %d faults, %d provider requests, over-count %.2f per fault, %d under-counts", c.name, cFaults, cProvider, perFault, cUnder))
			faults += cFaults
			over += cOver
			under += cUnder
			provider += cProvider
			runs += n
		})
	}
	for _, l := range lines {
		t.Logf("figure: %s", l)
	}
	perFault := 0.0
	if faults > 0 {
		perFault = float64(over) / float64(faults)
	}
	t.Logf("figure: applied-but-unacknowledged writes: %d faults injected over %d refreshes, %d provider requests, over-count %.2f per fault, %d under-counts",
		faults, runs, provider, perFault, under)
}

// TestStaleHolder: invocation A is frozen (SIGSTOP) while it holds the lease, its lease
// runs out, invocation B refreshes, then A wakes up and finishes. Nothing A does may
// overwrite B's committed state, and no refresh token may be lost silently.
func TestStaleHolder(t *testing.T) {
	e := newEnv(t)
	graceSim, graceID, graceSecret := concRotating(t, 60*time.Second)
	strictSim, strictID, strictSecret := concRotating(t, 0)
	emuA := e.function(concTimeout)
	emuB := e.function(concTimeout)

	afterProviderCall := func(sim *providersim.Rotating) concPauseFn {
		return func(t *testing.T, tok string, paused func(), _ <-chan struct{}) func() {
			// Only A talks to the provider until B starts; the request has arrived and is
			// processed (rotation done) while A cannot read the answer.
			sim.OnRequest(func() {
				if err := emuA.Signal(syscall.SIGSTOP); err != nil {
					t.Errorf("SIGSTOP A: %v", err)
				}
				paused()
			})
			return func() { sim.OnRequest(nil) }
		}
	}
	persistInFlight := func(t *testing.T, tok string, paused func(), hold <-chan struct{}) func() {
		return e.proxy.Add(faultproxy.Rule{
			Op: "secretsmanager.PutSecretValue", Match: bodyContains(tok, persistStage), Times: 1,
			Before: func(string) {
				if err := emuA.Signal(syscall.SIGSTOP); err != nil {
					t.Errorf("SIGSTOP A: %v", err)
				}
				paused()
				<-hold // A's write reaches Secrets Manager only after B has committed
			},
		})
	}
	beforeProviderCall := func(t *testing.T, tok string, paused func(), _ <-chan struct{}) func() {
		return e.proxy.Add(faultproxy.Rule{
			Op: "DynamoDB_20120810.TransactWriteItems", Match: bodyContains(tok), Times: 1,
			After: func(string) {
				// The claim is applied; A gets its answer only when it wakes up.
				if err := emuA.Signal(syscall.SIGSTOP); err != nil {
					t.Errorf("SIGSTOP A: %v", err)
				}
				paused()
			},
		})
	}

	persistLanded := func(t *testing.T, tok string, paused func(), _ <-chan struct{}) func() {
		return e.proxy.Add(faultproxy.Rule{
			Op: "secretsmanager.PutSecretValue", Match: bodyContains(tok, persistStage), Times: 1,
			After: func(string) {
				// A's new version is in Secrets Manager; A learns it only when it wakes up.
				if err := emuA.Signal(syscall.SIGSTOP); err != nil {
					t.Errorf("SIGSTOP A: %v", err)
				}
				paused()
			},
		})
	}

	variants := []concStaleVariant{
		{"after A's provider call, grace 60s", graceSim, graceID, graceSecret, "60s", afterProviderCall(graceSim), refresher.OutcomeRefreshed, token.StatusActive, 2, false},
		// With no grace B does not present the old token again (A's request was sent: marked),
		// nor give it up while A's invocation may still run: B waits, A saves its answer, and
		// the next run rolls it forward. Nothing is lost.
		{"after A's provider call, strict single use", strictSim, strictID, strictSecret, "0s", afterProviderCall(strictSim), refresher.OutcomeFailed, token.StatusActive, 1, true},
		{"with A's persist in flight, grace 60s", graceSim, graceID, graceSecret, "60s", persistInFlight, refresher.OutcomeRefreshed, token.StatusActive, 2, false},
		{"after A's persist landed, strict single use", strictSim, strictID, strictSecret, "0s", persistLanded, refresher.OutcomeRefreshed, token.StatusActive, 1, false},
		// Before A's provider call: A, whose claim answer came late, confirms its lease and calls
		// nothing (issue 17 sequence 3), so the provider sees only B.
		{"before A's provider call, grace 60s", graceSim, graceID, graceSecret, "60s", beforeProviderCall, refresher.OutcomeRefreshed, token.StatusActive, 1, false},
		{"before A's provider call, strict single use", strictSim, strictID, strictSecret, "0s", beforeProviderCall, refresher.OutcomeRefreshed, token.StatusActive, 1, false},
	}

	n := trials(5, 1)
	var lines []string
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			aOut, bOut := map[string]int{}, map[string]int{}
			var overwrites, reqs, bad int
			kept := map[string]int{}
			for range n {
				r := concStaleTrial(t, e, emuA, emuB, v)
				aOut[r.a]++
				bOut[r.b]++
				overwrites += r.overwrites
				reqs += r.requests
				bad += r.invalidGrant
				kept[r.kept]++
			}
			lines = append(lines, fmt.Sprintf("A frozen %s, %d trials: B %s; A %s; %d overwrites; %.1f provider requests per trial (%d invalid_grant); token kept: %s",
				v.name, n, concCounts(bOut), concCounts(aOut), overwrites, float64(reqs)/float64(n), bad, concCounts(kept)))
		})
	}
	for _, l := range lines {
		t.Logf("figure: %s", l)
	}
}

// concCounts prints a tally as "a ×2, b ×1", sorted.
func concCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

type concStaleVariant struct {
	name                 string
	sim                  *providersim.Rotating
	clientID, secret     string
	grace                string
	pause                concPauseFn
	wantB                string // B's outcome
	wantFinal            string // final status: active (live == committed) or needs_reauth (interrupted)
	wantProviderRequests int
	// bWaits: B finds A's presentation mark with A's invocation still running and waits
	// (commits nothing); after A, one more run settles what A left.
	bWaits bool
}

// concPauseFn installs the hook that freezes A at its moment (calling paused once it is
// frozen) and returns a function that removes it; a hook that holds A's request in the
// proxy waits for hold.
type concPauseFn func(t *testing.T, tok string, paused func(), hold <-chan struct{}) (remove func())

type concStaleResult struct {
	a, b                               string
	overwrites, requests, invalidGrant int
	kept                               string
}

// concStaleTrial freezes A at v's moment, expires its lease, lets B run, wakes A and
// checks that nothing of A's replaced B's committed state.
func concStaleTrial(t *testing.T, e *env, emuA, emuB *lambdaemu.Emulator, v concStaleVariant) concStaleResult {
	t.Helper()
	name := "stale-" + randID()
	seed := v.sim.Seed("")
	e.concSeed(t, name, rotatingDoc(v.sim.URL(), v.clientID, v.secret, seed, v.grace))
	req0, bad0 := v.sim.Requests(), v.sim.Count(400)

	pausedCh := make(chan struct{})
	var pausedOnce sync.Once
	hold := make(chan struct{})
	var holdOnce sync.Once
	release := func() { holdOnce.Do(func() { close(hold) }) }
	// Whatever happens, never leave a proxy handler waiting nor A frozen.
	defer release()
	defer func() { _ = emuA.Signal(syscall.SIGCONT) }()
	remove := v.pause(t, name, func() { pausedOnce.Do(func() { close(pausedCh) }) }, hold)
	defer remove()

	ctx, cancel := context.WithTimeout(context.Background(), 2*concTimeout)
	defer cancel()
	aDone := make(chan concResult, 1)
	go func() { aDone <- concInvoke(ctx, emuA, concTokensEvent(name), name) }()
	select {
	case <-pausedCh:
	case r := <-aDone:
		t.Fatalf("A finished without reaching the pause point: %s (%s)", r.outcome, r.detail)
	case <-ctx.Done():
		t.Fatal("A never reached the pause point")
	}
	remove()
	if rec, err := e.ledger.Get(ctx, name); err != nil || rec.LeaseHolder == "" || rec.Inflight == nil {
		t.Fatalf("A is frozen but holds no lease with inflight (err %v, holder set %v, inflight %v)", err, rec.LeaseHolder != "", rec.Inflight != nil)
	}
	e.expireLeaseOnly(name) // A stays frozen (alive) past its lease

	b := concInvoke(ctx, emuB, concTokensEvent(name), name)
	if b.outcome != v.wantB {
		t.Errorf("B: outcome %s (%s), want %s", b.outcome, b.detail, v.wantB)
	}
	afterB := e.concSnapshot(t, name)
	wantGen := int64(1)
	if v.bWaits {
		wantGen = 0
		if !strings.Contains(b.detail, "waiting until") || !afterB.inflight {
			t.Errorf("B: %q, refresh in flight %v; want B waiting for A, the refresh left in flight", b.detail, afterB.inflight)
		}
	}
	if afterB.generation != wantGen || afterB.current != afterB.versionID {
		t.Errorf("after B: generation %d (want %d), AWSCURRENT on the committed version %v", afterB.generation, wantGen, afterB.current == afterB.versionID)
	}

	if err := emuA.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT A: %v", err)
	}
	release()
	var a concResult
	select {
	case a = <-aDone:
	case <-ctx.Done():
		t.Fatal("A never finished after SIGCONT")
	}
	afterA := e.concSnapshot(t, name)

	var diff []string
	if v.bWaits {
		// B committed nothing for A to overwrite; the next run settles what A saved.
		if c := concInvoke(ctx, emuB, concTokensEvent(name), name); c.outcome != refresher.OutcomeRefreshed {
			t.Errorf("the run after A: outcome %s (%s), want refreshed (A's saved answer rolled forward)", c.outcome, c.detail)
		}
		afterA = e.concSnapshot(t, name)
	} else if diff = concDiff(afterB, afterA); len(diff) > 0 {
		t.Errorf("A overwrote B's committed state: %s differ", strings.Join(diff, ", "))
	}
	if afterA.leaseHolder != "" || afterA.inflight {
		t.Errorf("lease or inflight left behind (holder set %v, inflight %v)", afterA.leaseHolder != "", afterA.inflight)
	}
	// A's commit must not succeed: B committed that generation and A no longer holds the
	// lease (docs/design.md §4 step 5; ledger.Commit: "anything else … is ErrLeaseLost").
	if a.outcome != refresher.OutcomeFailed || !strings.Contains(a.detail, "lease lost") {
		t.Errorf("A (stale holder): outcome %s (%q), want failed with \"lease lost\"", a.outcome, a.detail)
	}

	live := v.sim.Live(seed)
	switch v.wantFinal {
	case token.StatusActive:
		if afterA.status != token.StatusActive || afterA.refreshToken != live || live == seed {
			t.Errorf("final: status %s, committed refresh token is live %v; want active with the live token", afterA.status, afterA.refreshToken == live)
		}
	case token.StatusNeedsReauth:
		if afterA.status != token.StatusNeedsReauth || !strings.Contains(afterA.reason, "refresh interrupted before the new token was saved") {
			t.Errorf("final: status %s reason %q; want needs_reauth with the interrupted reason", afterA.status, afterA.reason)
		}
	}
	r := concStaleResult{a: a.outcome, b: b.outcome, overwrites: len(diff),
		requests: v.sim.Requests() - req0, invalidGrant: v.sim.Count(400) - bad0, kept: "live == committed"}
	if r.requests != v.wantProviderRequests {
		t.Errorf("%d provider requests, want %d", r.requests, v.wantProviderRequests)
	}
	if afterA.status == token.StatusNeedsReauth {
		r.kept = "needs_reauth (interrupted)"
	} else if afterA.refreshToken != live {
		r.kept = "committed != live"
	}
	return r
}

// TestDuplicateScheduledEvent: EventBridge delivers at least once, so the same scheduled
// event may arrive several times within a second, to separate execution environments.
func TestDuplicateScheduledEvent(t *testing.T) {
	e := newEnv(t)
	sim, clientID, clientSecret := concRotating(t, 0)
	emus := []*lambdaemu.Emulator{e.function(concTimeout), e.function(concTimeout), e.function(concTimeout)}

	n := trials(10, 2)
	var lines []string
	for _, mode := range []string{"concurrently", "sequentially"} {
		var requests, refreshed, held, notDue, trialsRun int
		for trial := range n {
			name := fmt.Sprintf("dup-%s-%d-%s", mode[:3], trial, randID())
			seed := sim.Seed("")
			e.concSeed(t, name, rotatingDoc(sim.URL(), clientID, clientSecret, seed, "0s"))
			req0, bad0 := sim.Requests(), sim.Count(400)

			ctx, cancel := context.WithTimeout(context.Background(), 2*concTimeout)
			results := make([]concResult, len(emus))
			if mode == "concurrently" {
				start := make(chan struct{})
				var wg sync.WaitGroup
				for i, emu := range emus {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						results[i] = concInvoke(ctx, emu, scheduledEvent, name)
					}()
				}
				close(start)
				wg.Wait()
			} else {
				for i, emu := range emus {
					results[i] = concInvoke(ctx, emu, scheduledEvent, name)
				}
			}
			cancel()

			counts := map[string]int{}
			for _, r := range results {
				counts[r.outcome]++
			}
			got := sim.Requests() - req0
			requests += got
			refreshed += counts[refresher.OutcomeRefreshed]
			held += counts[refresher.OutcomeLeaseHeld]
			notDue += counts[refresher.OutcomeNotDue]
			trialsRun++
			if got != 1 || sim.Count(400) != bad0 {
				t.Errorf("%s trial %d: %d provider requests (%d invalid_grant), want exactly 1 (0)", mode, trial, got, sim.Count(400)-bad0)
			}
			if counts[refresher.OutcomeRefreshed] != 1 || counts[refresher.OutcomeLeaseHeld]+counts[refresher.OutcomeNotDue] != len(emus)-1 {
				t.Errorf("%s trial %d: outcomes %v, want 1 refreshed and the others lease_held or not_due", mode, trial, counts)
			}
			if mode == "sequentially" && results[0].outcome != refresher.OutcomeRefreshed {
				t.Errorf("sequential trial %d: first delivery %s, want refreshed", trial, results[0].outcome)
			}
			if s := e.concSnapshot(t, name); s.refreshToken != sim.Live(seed) || s.generation != 1 {
				t.Errorf("%s trial %d: generation %d (want 1), committed refresh token live %v", mode, trial, s.generation, s.refreshToken == sim.Live(seed))
			}
		}
		lines = append(lines, fmt.Sprintf("same scheduled event ×%d %s, %d trials: %.2f provider requests per trial, %d refreshed, %d lease_held, %d not_due",
			len(emus), mode, trialsRun, float64(requests)/float64(trialsRun), refreshed, held, notDue))
	}
	for _, l := range lines {
		t.Logf("figure: %s", l)
	}
}
