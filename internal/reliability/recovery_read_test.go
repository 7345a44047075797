package reliability_test

import (
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/internal/faultproxy"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
)

// A refresh dies after its persist; the recovery's read of the saved version N fails with a
// transient error (500 on every GetSecretValue of N), so the recovery cannot see N and retries
// the old refresh token, which a strict provider (no reuse grace) rejects. That must not end in
// needs_reauth while the live refresh token sits in N: the needs_reauth document is written
// as version N too, collides with the saved one (same deterministic id, other content), and the
// run fails with the refresh still in flight. The next clean run rolls N forward.
func TestRecoveryReadFaultKeepsInflight(t *testing.T) {
	e := newEnv(t)
	sim, cs := crashProvider(t, 0) // strict: no reuse grace
	eng := e.engine(time.Now, nil)
	const name = "recover-read"
	seed := crashSeed(e, sim, cs, name, 0)

	// Run 1: the provider rotates and the new version is saved, but no commit lands.
	removeCommit := e.proxy.Add(faultproxy.Rule{Op: "DynamoDB_20120810.UpdateItem", Error: faultproxy.InternalServerError()})
	if r := run(t, eng, refresher.Request{}); r.Outcome != refresher.OutcomeFailed {
		t.Fatalf("run 1: got %s (%s), want failed (commit refused)", r.Outcome, r.Error)
	}
	removeCommit()
	_, rec := e.committed(name)
	if rec.Inflight == nil {
		t.Fatalf("after run 1: got no refresh in flight, want one (record %+v)", rec)
	}
	saved := rec.Inflight.To
	e.expireLease(name)

	// Run 2: every read of version N fails.
	removeRead := e.proxy.Add(faultproxy.Rule{Op: "secretsmanager.GetSecretValue", Match: bodyContains(saved), Error: faultproxy.InternalServiceError()})
	r := run(t, eng, refresher.Request{})
	removeRead()
	if r.Outcome != refresher.OutcomeFailed {
		t.Errorf("run 2: got %s (%s), want failed (the saved version could not be read)", r.Outcome, r.Error)
	}
	if _, rec := e.committed(name); rec.Inflight == nil || rec.Inflight.To != saved || rec.Status != "active" {
		t.Errorf("after run 2: got inflight %+v status %q, want the refresh to %s still in flight and the token active", rec.Inflight, rec.Status, saved)
	}

	// Run 3, no faults: N is rolled forward; its refresh token is the provider's live one.
	e.expireLease(name)
	if r := run(t, eng, refresher.Request{}); r.Outcome != refresher.OutcomeRefreshed {
		t.Errorf("run 3: got %s (%s), want refreshed (rolled forward)", r.Outcome, r.Error)
	}
	doc, rec := e.committed(name)
	if rec.VersionID != saved || sim.Live(seed) != doc.RefreshToken.Reveal() {
		t.Errorf("after run 3: committed %s (want %s), live refresh token committed %v", rec.VersionID, saved, sim.Live(seed) == doc.RefreshToken.Reveal())
	}
}
