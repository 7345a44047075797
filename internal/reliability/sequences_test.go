package reliability_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/internal/faultproxy"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
)

// The six sequences of issue 17 item 4, each against a provider that revokes the chain on
// reuse (the simulators' default). They failed on the engine before the fixes and run in
// every `make test`.

// seqPresentedOnce asserts the provider saw rt exactly once (its rotation): no re-spend.
func seqPresentedOnce(t *testing.T, sim *providersim.Rotating, rt, what string) {
	t.Helper()
	ps := sim.Presentations(rt)
	var res []string
	for _, p := range ps {
		res = append(res, p.Result)
	}
	if len(ps) != 1 || ps[0].Result != providersim.PresentRotated {
		t.Errorf("%s presented %d times (answers %v), want once, rotated", what, len(ps), res)
	}
}

// seqLive asserts the committed refresh token is the provider's live one and the token active.
func seqLive(t *testing.T, e *env, sim *providersim.Rotating, seed, name string) {
	t.Helper()
	doc, rec := e.committed(name)
	if live := sim.Live(seed); live == "" || live != doc.RefreshToken.Reveal() || rec.Status != ledger.StatusActive {
		t.Errorf("committed refresh token is the provider's live one: %v (family revoked %v), status %q, want true, false, active",
			live != "" && live == doc.RefreshToken.Reveal(), live == "", rec.Status)
	}
}

// Sequence 1: a refresh saves version N but its commit fails; the next run's recovery reads
// N and the read fails (500, or throttling that lasts the run). Only a not-found answer
// means N is absent: the run must report failed with the cause, keep the in-flight record
// and not present the spent refresh token; the run after rolls N forward.
func TestSeqRecoveryReadError(t *testing.T) {
	for _, fault := range []struct {
		name string
		err  *faultproxy.AWSError
	}{
		{"500", faultproxy.InternalServiceError()},
		{"throttled", faultproxy.ThrottlingError(faultproxy.SecretsManager)},
	} {
		t.Run(fault.name, func(t *testing.T) {
			e := newEnv(t)
			sim, cs := crashProvider(t, 0)
			eng := e.engine(time.Now, nil)
			const name = "seq1"
			seed := crashSeed(e, sim, cs, name, 0)

			removeCommit := e.proxy.Add(faultproxy.Rule{Op: "DynamoDB_20120810.UpdateItem", Match: bodyContains("prev_version_id"), Error: faultproxy.InternalServerError()})
			if r := run(t, eng, refresher.Request{}); r.Outcome != refresher.OutcomeFailed {
				t.Fatalf("run 1: got %s (%s), want failed (commit refused)", r.Outcome, r.Error)
			}
			removeCommit()
			_, rec := e.committed(name)
			if rec.Inflight == nil {
				t.Fatalf("after run 1: got no refresh in flight, want one")
			}
			saved := rec.Inflight.To
			e.expireLease(name)

			removeRead := e.proxy.Add(faultproxy.Rule{Op: "secretsmanager.GetSecretValue", Match: bodyContains(saved), Error: fault.err})
			r := run(t, eng, refresher.Request{})
			removeRead()
			if r.Outcome != refresher.OutcomeFailed {
				t.Errorf("run 2: got %s (%s), want failed (the saved version could not be read)", r.Outcome, r.Error)
			}
			if _, rec := e.committed(name); rec.Inflight == nil || rec.Inflight.To != saved || rec.Status != ledger.StatusActive {
				t.Errorf("after run 2: got inflight %+v status %q, want the refresh to %s still in flight, token active", rec.Inflight, rec.Status, saved)
			}
			seqPresentedOnce(t, sim, seed, "after run 2: the seed")

			e.expireLease(name)
			if r := run(t, eng, refresher.Request{}); r.Outcome != refresher.OutcomeRefreshed {
				t.Errorf("run 3: got %s (%s), want refreshed (rolled forward)", r.Outcome, r.Error)
			}
			seqLive(t, e, sim, seed, name)
		})
	}
}

// Sequence 2: after a refresh, an operator puts back the original onboarding file (or a copy
// of an older version); the reconcile's read of the committed version fails. The edit must
// not win on a read error: the run reports failed, the spent refresh token is neither
// committed nor presented, and a clean run afterwards keeps the live chain.
func TestSeqEditAdoptionReadError(t *testing.T) {
	for _, variant := range []string{"original onboarding file", "copy of an older version"} {
		t.Run(variant, func(t *testing.T) {
			e := newEnv(t)
			sim, cs := crashProvider(t, 0)
			eng := e.engine(time.Now, nil)
			const name = "seq2"
			seed := sim.Seed("")
			original := rotatingDoc(sim.URL(), "app", cs, seed, "0s")
			e.seed(name, original)
			edit := original
			if variant != "original onboarding file" {
				if r := run(t, eng, refresher.Request{Tokens: []string{name}, Force: true}); r.Outcome != refresher.OutcomeRefreshed {
					t.Fatalf("first refresh: %+v", r)
				}
				edit = e.copyCurrent(name)
			}
			if r := run(t, eng, refresher.Request{Tokens: []string{name}, Force: true}); r.Outcome != refresher.OutcomeRefreshed {
				t.Fatalf("refresh: %+v", r)
			}
			_, rec := e.committed(name)
			committed := rec.VersionID
			e.editCurrent(name, withMargin(edit, "6m"))

			removeRead := e.proxy.Add(faultproxy.Rule{Op: "secretsmanager.GetSecretValue", Match: bodyContains(committed), Error: faultproxy.InternalServiceError()})
			r := run(t, eng, refresher.Request{Tokens: []string{name}, Force: true})
			removeRead()
			if r.Outcome != refresher.OutcomeFailed {
				t.Errorf("run with the committed version unreadable: got %s (%s), want failed with the cause", r.Outcome, r.Error)
			}
			for _, a := range sim.Audit() {
				if a.Respent() > 0 {
					t.Errorf("a spent refresh token (issued %s) was presented again: %d times", a.IssuedAt.Format(time.RFC3339Nano), a.Respent())
				}
			}
			if r := run(t, eng, refresher.Request{Tokens: []string{name}, Force: true}); r.Outcome != refresher.OutcomeRefreshed {
				t.Errorf("clean run: got %s (%s), want refreshed", r.Outcome, r.Error)
			}
			seqLive(t, e, sim, seed, name)
		})
	}
}

// Sequence 3: the claim (TransactWriteItems) is applied but its answer arrives after the
// lease ended; meanwhile another invocation recovered and refreshed. The first holder must
// count its lease from before it sent the claim, so it makes no provider call and no write:
// the provider sees the seed once, and the token stays active on a live chain.
func TestSeqSlowClaim(t *testing.T) {
	e := newEnv(t)
	sim, cs := crashProvider(t, 0)
	// A short lease (two 400 ms attempts, 400 ms persist budget, 100 ms skew: about 1.3 s)
	// keeps the delayed answer short. (With one attempt the lease leaves no room for the
	// call: refreshBudget has no slack, so Attempts 1 never reaches the provider.)
	tune := func(o *refresher.Options) {
		o.ProviderTimeout, o.Attempts, o.Backoff = 400*time.Millisecond, 2, 20*time.Millisecond
		o.PersistBudget, o.ClockSkew = 400*time.Millisecond, 100*time.Millisecond
	}
	engA, engB := e.engine(time.Now, tune), e.engine(time.Now, tune)
	const name = "seq3"
	seed := crashSeed(e, sim, cs, name, 0)

	var once sync.Once
	var rowB refresher.Row
	remove := e.proxy.Add(faultproxy.Rule{Op: "DynamoDB_20120810.TransactWriteItems", Times: 1, After: func(string) {
		once.Do(func() {
			// A's claim is applied; its answer is held until the lease it wrote has ended
			// (that wait is the fault), and B runs meanwhile.
			_, rec := e.committed(name)
			if d := time.Until(rec.LeaseUntil); d > 0 {
				<-time.After(d + 50*time.Millisecond)
			}
			rowB = run(t, engB, refresher.Request{Tokens: []string{name}, Force: true})
		})
	}})
	rowA := run(t, engA, refresher.Request{Tokens: []string{name}, Force: true})
	remove()
	if rowB.Outcome != refresher.OutcomeRefreshed {
		t.Errorf("B (ran while A's claim answer was delayed): got %s (%s), want refreshed", rowB.Outcome, rowB.Error)
	}
	if rowA.Outcome == refresher.OutcomeRefreshed {
		t.Errorf("A (claim answered after its lease ended): got refreshed, want no refresh")
	}
	seqPresentedOnce(t, sim, seed, "the seed")
	seqLive(t, e, sim, seed, name)
	if s := sim.Respent(); len(s) > 0 {
		t.Errorf("%d refresh tokens presented again after they were spent, want 0", len(s))
	}
}

// Sequence 4: a refresh saves N and its commit fails; the next run's recovery finds N and its
// commit fails too. The in-flight record is removed only by the commit that settles it, so a
// third run rolls N forward instead of presenting the spent refresh token.
func TestSeqFailedRecoveryCommitKeepsEvidence(t *testing.T) {
	e := newEnv(t)
	sim, cs := crashProvider(t, 0)
	eng := e.engine(time.Now, nil)
	const name = "seq4"
	seed := crashSeed(e, sim, cs, name, 0)

	removeCommit := e.proxy.Add(faultproxy.Rule{Op: "DynamoDB_20120810.UpdateItem", Match: bodyContains("prev_version_id"), Error: faultproxy.InternalServerError()})
	if r := run(t, eng, refresher.Request{}); r.Outcome != refresher.OutcomeFailed {
		t.Fatalf("run 1: got %s (%s), want failed (commit refused)", r.Outcome, r.Error)
	}
	_, rec := e.committed(name)
	if rec.Inflight == nil {
		t.Fatalf("after run 1: got no refresh in flight, want one")
	}
	saved := rec.Inflight.To
	e.expireLease(name)
	r := run(t, eng, refresher.Request{})
	removeCommit()
	if r.Outcome != refresher.OutcomeFailed {
		t.Errorf("run 2 (recovery commit refused): got %s (%s), want failed", r.Outcome, r.Error)
	}
	if _, rec := e.committed(name); rec.Inflight == nil || rec.Inflight.To != saved {
		t.Errorf("after run 2: got inflight %+v, want the refresh to %s still in flight", rec.Inflight, saved)
	}
	e.expireLease(name)
	if r := run(t, eng, refresher.Request{}); r.Outcome != refresher.OutcomeRefreshed {
		t.Errorf("run 3: got %s (%s), want refreshed (rolled forward)", r.Outcome, r.Error)
	}
	if _, rec := e.committed(name); rec.VersionID != saved {
		t.Errorf("after run 3: committed %s, want the saved %s", rec.VersionID, saved)
	}
	seqPresentedOnce(t, sim, seed, "the seed")
	seqLive(t, e, sim, seed, name)
}

// Sequence 5: the private document remembers the last 100 refresh tokens; after 101
// rotations (two days of a 1-hour token) the original onboarding file, put back with the AWS
// CLI, must still not replace the live chain. Engine and provider share an injected clock.
func TestSeqOldCopyAfter101Rotations(t *testing.T) {
	e := newEnv(t)
	clock := providersim.NewClock(time.Now())
	cs := "cs-" + randID()
	registerSecrets(cs)
	sim := newRotating(t, providersim.RotatingOptions{ClientID: "app", ClientSecret: cs, AccessTTL: time.Hour, Now: clock.Now})
	eng := e.engine(clock.Now, nil)
	const name = "seq5"
	seed := sim.Seed("")
	original := rotatingDocMargin(sim.URL(), "app", cs, seed, "")
	e.seed(name, original)
	for i := range 101 {
		if r := run(t, eng, refresher.Request{}); r.Outcome != refresher.OutcomeRefreshed {
			t.Fatalf("rotation %d: got %s (%s), want refreshed", i+1, r.Outcome, r.Error)
		}
		clock.Advance(time.Hour)
	}
	e.editCurrent(name, original)
	r := run(t, eng, refresher.Request{Tokens: []string{name}, Force: true})
	if r.Outcome != refresher.OutcomeRefreshed || !strings.Contains(r.Error, "older version") {
		t.Errorf("run after the old copy: got %s (%q), want refreshed, saying the edit was based on an older version", r.Outcome, r.Error)
	}
	seqPresentedOnce(t, sim, seed, "the seed (101 rotations ago)")
	seqLive(t, e, sim, seed, name)
}

// Sequence 6 (escrow): the provider rotated, then Secrets Manager refused the persist —
// LimitExceeded (versions quota), AccessDenied (policy or key change), or throttling that
// outlasts the lease — and the provider has no reuse grace. The new refresh token must be
// escrowed in the token's in-flight record (KMS-encrypted, fenced by holder and generation),
// and the first run after Secrets Manager accepts writes again commits it: the rotated token
// ends up committed, 0 lost (never needs_reauth), 0 presented twice.
func TestSeqPersistRefusedEscrow(t *testing.T) {
	for _, fault := range []struct {
		name string
		err  *faultproxy.AWSError
	}{
		{"versions quota", faultproxy.LimitExceeded()},
		{"access denied", &faultproxy.AWSError{Status: 400, Type: "AccessDeniedException", Message: "User is not authorized to perform: secretsmanager:PutSecretValue"}},
		{"throttled past the lease", faultproxy.ThrottlingError(faultproxy.SecretsManager)},
	} {
		t.Run(fault.name, func(t *testing.T) {
			e := newEnv(t)
			sim, cs := crashProvider(t, 0)
			eng := e.engine(time.Now, nil)
			const name = "seq6"
			seed := crashSeed(e, sim, cs, name, 0)

			remove := e.proxy.Add(faultproxy.Rule{Op: "secretsmanager.PutSecretValue", Error: fault.err})
			r := run(t, eng, refresher.Request{Tokens: []string{name}, Force: true})
			if r.Outcome != refresher.OutcomeFailed {
				t.Errorf("run 1 (persist refused): got %s (%s), want failed", r.Outcome, r.Error)
			}
			if live := sim.Live(seed); live == "" || live == seed {
				t.Fatalf("run 1: the provider did not rotate; the test needs it to")
			}
			e.expireLease(name)
			// Still refused: nothing may be lost or re-spent while Secrets Manager refuses.
			r = run(t, eng, refresher.Request{})
			remove()
			if r.Outcome == refresher.OutcomeNeedsReauth {
				t.Errorf("run 2 (still refused): got needs_reauth (%s), want failed with the token escrowed", r.Error)
			}
			e.expireLease(name)
			if r := run(t, eng, refresher.Request{}); r.Outcome != refresher.OutcomeRefreshed {
				t.Errorf("run 3 (Secrets Manager accepts writes): got %s (%s), want refreshed from the escrow", r.Outcome, r.Error)
			}
			seqPresentedOnce(t, sim, seed, "the seed")
			seqLive(t, e, sim, seed, name)
			if _, rec := e.committed(name); rec.Inflight != nil {
				t.Errorf("after the commit: in-flight record (with the escrow) still there, want it removed by the commit")
			}
		})
	}
}
