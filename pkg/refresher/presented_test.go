package refresher_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/internal/faultproxy"
	"github.com/seed-502fa48b/token-refresher/internal/invariant"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// mustRefresh forces one refresh that must succeed: a test's starting state.
func (f *faultEnv) mustRefresh(t *testing.T) {
	t.Helper()
	if r := f.forced(t); r.Outcome != refresher.OutcomeRefreshed {
		t.Fatalf("setup refresh: got %s (%s), want refreshed", r.Outcome, r.Error)
	}
}

// expectRun runs once and checks its outcome, how many requests it sent to the provider,
// and that no refresh token was presented again outside the grace.
func (f *faultEnv) expectRun(t *testing.T, run func(*testing.T) refresher.Row, want string, wantPresented int) {
	t.Helper()
	before := f.pres.total()
	if r := run(t); r.Outcome != want {
		t.Errorf("got %s (%s), want %s", r.Outcome, r.Error, want)
	}
	if got := f.pres.total() - before; got != wantPresented {
		t.Errorf("sent %d requests to the provider, want %d", got, wantPresented)
	}
	if got := len(f.sim.Respent()); got != 0 {
		t.Errorf("got %d refresh tokens presented again outside the grace, want 0", got)
	}
}

// deadHolder leaves the state a holder killed mid-refresh leaves: the lease and the
// refresh in flight from the committed version, marked presented (or not), and — when
// reached — the provider having rotated the refresh token, whose answer died with it.
func (f *faultEnv) deadHolder(t *testing.T, marked, reached bool) {
	t.Helper()
	f.presentingHolder(t, marked, reached, time.Time{})
}

// presentingHolder is deadHolder whose invocation may run until until (zero: not known).
func (f *faultEnv) presentingHolder(t *testing.T, marked, reached bool, until time.Time) {
	t.Helper()
	ctx := context.Background()
	doc, rec := f.committed("t")
	now := f.clock.Now()
	c := ledger.Claim{Name: "t", Holder: "dead", Generation: rec.Generation, From: rec.VersionID, To: "dead-n", LeaseUntil: now.Add(5 * time.Second)}
	if err := f.ledger.Claim(ctx, c); err != nil {
		t.Fatalf("dead holder's claim: %v", err)
	}
	if marked {
		if err := f.ledger.MarkPresented(ctx, ledger.Presenting{Name: "t", Holder: "dead", Generation: rec.Generation, To: "dead-n", At: now, Until: until}); err != nil {
			t.Fatalf("dead holder's mark: %v", err)
		}
	}
	if reached {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {doc.RefreshToken.Reveal()}}
		req, err := http.NewRequest(http.MethodPost, f.sim.URL(), strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("app", f.secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("the dead holder's request: %v", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("the dead holder's request: got %d, want 200", resp.StatusCode)
		}
	}
}

// A holder killed around its provider request, recovered later: the presentation mark
// (docs/design.md §4, step 3 and recovery) decides whether the old refresh token may be
// presented again. Before the mark, recovery presented it whatever the grace, and a
// provider with reuse detection revoked the chain.
func TestRecoveryPresentsOnlyInsideTheGrace(t *testing.T) {
	tests := []struct {
		name            string
		grace           time.Duration
		marked, reached bool
		after           time.Duration // from the dead holder's request to the recovery
		want            string
		wantPresented   int // requests the recovery sends
		wantLive        bool
	}{
		{name: "killed before the mark, no grace", marked: false, after: time.Minute, want: refresher.OutcomeRefreshed, wantPresented: 1, wantLive: true},
		{name: "killed after the mark, never sent, no grace", marked: true, after: time.Minute, want: refresher.OutcomeNeedsReauth, wantPresented: 0, wantLive: true},
		{name: "killed after the provider rotated, no grace", marked: true, reached: true, after: time.Minute, want: refresher.OutcomeNeedsReauth, wantPresented: 0},
		{name: "killed after the provider rotated, recovered inside a 60s grace", grace: time.Minute, marked: true, reached: true, after: 10 * time.Second, want: refresher.OutcomeRefreshed, wantPresented: 1, wantLive: true},
		{name: "killed after the provider rotated, recovered after a 60s grace", grace: time.Minute, marked: true, reached: true, after: 2 * time.Minute, want: refresher.OutcomeNeedsReauth, wantPresented: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFaultEnvGrace(t, tc.grace, nil)
			if tc.reached && !tc.wantLive {
				f.waiveInvariant(invariant.CommittedLive, "the rotated token died with the holder: the loss is the test's premise; I1 is what it checks")
			}
			f.mustRefresh(t)
			f.deadHolder(t, tc.marked, tc.reached)
			f.clock.Advance(tc.after)
			f.expectRun(t, f.runOnce, tc.want, tc.wantPresented)
			doc, rec := f.committed("t")
			if rec.Inflight != nil {
				t.Errorf("the refresh is still in flight after the recovery: %+v", rec.Inflight)
			}
			if live := f.sim.Live(f.seed) == doc.RefreshToken.Reveal(); live != tc.wantLive {
				t.Errorf("committed refresh token is the provider's live one: got %v, want %v", live, tc.wantLive)
			}
			if tc.want == refresher.OutcomeNeedsReauth && (doc.Status != token.StatusNeedsReauth || !strings.Contains(doc.StatusReason, "not presented again")) {
				t.Errorf("committed status %s (%q), want needs_reauth saying the token is not presented again", doc.Status, doc.StatusReason)
			}
		})
	}
}

// A lost answer inside one invocation: the engine retries with the same refresh token only
// inside the grace; with none the token may be spent and is not sent again.
func TestLostAnswerRetriedOnlyInsideTheGrace(t *testing.T) {
	tests := []struct {
		name          string
		grace         time.Duration
		want          string
		wantPresented int
	}{
		{name: "no grace", want: refresher.OutcomeNeedsReauth, wantPresented: 1},
		{name: "60s grace", grace: time.Minute, want: refresher.OutcomeRefreshed, wantPresented: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFaultEnvGrace(t, tc.grace, nil)
			if tc.want == refresher.OutcomeNeedsReauth {
				f.waiveInvariant(invariant.CommittedLive, "the rotated token was lost with the answer: the loss is the test's premise; I1 is what it checks")
			}
			f.mustRefresh(t)
			f.sim.DropNextResponse()
			f.expectRun(t, f.forced, tc.want, tc.wantPresented)
		})
	}
}

// A mark that cannot be written sends nothing, and the refresh is left as never presented:
// the next run refreshes normally instead of giving the token up.
func TestMarkRefusedSendsNothing(t *testing.T) {
	f := newFaultEnv(t, nil)
	f.mustRefresh(t)
	remove := f.proxy.Add(faultproxy.Rule{Op: "DynamoDB_20120810.UpdateItem", Match: bodyHas(`presented_at`, `if_not_exists`), Error: faultproxy.InternalServerError()})
	before := f.pres.total()
	r := f.forced(t)
	remove()
	if r.Outcome != refresher.OutcomeFailed {
		t.Errorf("mark refused: got %s (%s), want failed", r.Outcome, r.Error)
	}
	if got := f.pres.total() - before; got != 0 {
		t.Errorf("sent %d requests with the mark refused, want 0", got)
	}
	if _, rec := f.committed("t"); rec.Inflight != nil {
		if _, presented := rec.Inflight.Presented(); presented {
			t.Errorf("the refresh in flight counts as presented after a refused mark: %+v", rec.Inflight)
		}
	}
	if r := f.forced(t); r.Outcome != refresher.OutcomeRefreshed {
		t.Errorf("next run: got %s (%s), want refreshed", r.Outcome, r.Error)
	}
	f.settled(t)
}

// A recovery that finds the presenting holder's invocation possibly still running waits for
// it (that holder may yet escrow the provider's answer or take its mark back) and gives
// the token up only after it has certainly ended.
func TestRecoveryWaitsForThePresentingHolder(t *testing.T) {
	f := newFaultEnv(t, nil)
	f.waiveInvariant(invariant.CommittedLive, "the rotated token died with the holder: the loss is the test's premise; I1 is what it checks")
	f.mustRefresh(t)
	f.presentingHolder(t, true, true, f.clock.Now().Add(5*time.Minute))
	f.clock.Advance(time.Minute) // the lease is over, the holder's invocation may not be
	r := f.runOnce(t)
	if r.Outcome != refresher.OutcomeFailed || !strings.Contains(r.Error, "waiting until") {
		t.Errorf("while the holder may run: got %s (%s), want failed, waiting for it", r.Outcome, r.Error)
	}
	if _, rec := f.committed("t"); rec.Inflight == nil {
		t.Error("the refresh in flight is gone while its holder may still save it")
	}
	f.clock.Advance(5 * time.Minute)
	f.expectRun(t, f.runOnce, refresher.OutcomeNeedsReauth, 0)
}
