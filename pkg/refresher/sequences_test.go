package refresher_test

// The six sequences of issue 17 (docs/design.md §4, the four rules and the escrow), each
// against a rotating provider that revokes the whole chain when a spent refresh token is
// presented again (the simulator's default, no reuse grace), with AWS faults injected by
// internal/faultproxy between the SDK and moto.

import (
	"bytes"
	"context"
	"io"
	"maps"
	"net/http"
	"net/url"
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
	"github.com/seed-502fa48b/token-refresher/internal/faultproxy"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/escrow"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// presentations counts every refresh token presented to the provider.
type presentations struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen map[string]int
}

func (p *presentations) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		body, err := io.ReadAll(r.Body)
		_ = r.Body.Close()
		if err != nil {
			return nil, err
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if form, err := url.ParseQuery(string(body)); err == nil && form.Get("refresh_token") != "" {
			p.mu.Lock()
			p.seen[form.Get("refresh_token")]++
			p.mu.Unlock()
		}
	}
	return p.next.RoundTrip(r)
}

// twice is how many refresh tokens were presented more than once (I1, no grace here).
func (p *presentations) twice() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.seen {
		if c > 1 {
			n++
		}
	}
	return n
}

func (p *presentations) total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.seen {
		n += c
	}
	return n
}

// faultEnv is env whose engine reaches moto through a fault proxy and the provider through
// a presentation counter; the test's own reads (env.committed …) go straight to moto.
type faultEnv struct {
	*env
	proxy *faultproxy.Proxy
	pres  *presentations
	clock *providersim.Clock
	sim   *providersim.Rotating
	seed  string         // the onboarding refresh token: sim.Live(seed) is the chain's live token
	orig  map[string]any // the onboarding file
	// secret is the client secret, for a test that plays a request of its own.
	secret string
}

// newFaultEnv starts a strict rotating provider (reuse detection on, no grace) and one
// token "t" seeded with it.
func newFaultEnv(t *testing.T, tune func(*refresher.Options)) *faultEnv {
	t.Helper()
	return newFaultEnvGrace(t, 0, tune)
}

// newFaultEnvGrace is newFaultEnv with a provider (and document) reuse grace.
func newFaultEnvGrace(t *testing.T, grace time.Duration, tune func(*refresher.Options)) *faultEnv {
	t.Helper()
	clock := providersim.NewClock(time.Now())
	cs := "cs-" + randID()
	registerSecrets(cs)
	sim := providersim.NewRotating(providersim.RotatingOptions{ClientID: "app", ClientSecret: cs, ReuseGrace: grace, Now: clock.Now}) // reuse detection on: the default
	t.Cleanup(sim.Close)
	registerIssuer(sim)

	p, err := faultproxy.New(awsemu.Shared(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	pres := &presentations{next: http.DefaultTransport, seen: map[string]int{}}
	e := newEnv(t, clock.Now, nil)
	cfg := awsemu.Shared(t).AWSConfig(t)
	cfg.BaseEndpoint = aws.String(p.URL())
	o := e.options
	o.Secrets = secretstore.New(secretsmanager.NewFromConfig(cfg))
	o.Ledger = ledger.New(dynamodb.NewFromConfig(cfg), ledger.Options{Table: e.table, Now: clock.Now})
	o.HTTPClient = &http.Client{Transport: pres}
	if tune != nil {
		tune(&o)
	}
	eng, err := refresher.New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.engine, e.options = eng, o
	f := &faultEnv{env: e, proxy: p, pres: pres, clock: clock, sim: sim}
	f.seed = sim.Seed("offline_access fund.read target:b/t")
	f.orig = rotatingDoc(sim.URL(), "app", cs, f.seed, "")
	if grace > 0 {
		f.orig = rotatingDoc(sim.URL(), "app", cs, f.seed, grace.String())
	}
	f.secret = cs
	e.seed("t", f.orig)
	return f
}

func bodyHas(parts ...string) func([]byte) bool {
	return func(body []byte) bool {
		for _, p := range parts {
			if !bytes.Contains(body, []byte(p)) {
				return false
			}
		}
		return true
	}
}

// commitOnly matches the ledger's commit (the only UpdateItem that writes committed_by).
var commitOnly = bodyHas(`"committed_by"`)

// settled asserts I1 and I2: no refresh token presented twice, and the committed refresh
// token is the provider's live one.
func (f *faultEnv) settled(t *testing.T) {
	t.Helper()
	if n := f.pres.twice(); n != 0 {
		t.Errorf("got %d refresh tokens presented twice, want 0", n)
	}
	doc, rec := f.committed("t")
	live := f.sim.Live(f.seed)
	switch {
	case live == "":
		t.Errorf("the provider revoked the chain (a spent refresh token was presented); committed status %s", rec.Status)
	case live != doc.RefreshToken.Reveal():
		t.Errorf("the committed refresh token (generation %d) is not the provider's live one", rec.Generation)
	}
}

func (f *faultEnv) runOnce(t *testing.T) refresher.Row {
	t.Helper()
	rep, _ := f.run(refresher.Request{Tokens: []string{"t"}})
	return row(t, rep, "t")
}

// interrupt makes one refresh save version N and fail its commit: the refresh stays in
// flight, its lease then ends.
func (f *faultEnv) interrupt(t *testing.T) string {
	t.Helper()
	remove := f.proxy.Add(faultproxy.Rule{Op: "DynamoDB_20120810.UpdateItem", Match: commitOnly, Error: faultproxy.InternalServerError()})
	r := f.runOnce(t)
	remove()
	if r.Outcome != refresher.OutcomeFailed {
		t.Fatalf("interrupted refresh: got %s (%s), want failed (commit refused)", r.Outcome, r.Error)
	}
	_, rec := f.committed("t")
	if rec.Inflight == nil {
		t.Fatalf("interrupted refresh: got no refresh in flight, want one")
	}
	f.clock.Advance(time.Hour) // the lease ends
	return rec.Inflight.To
}

// Sequence 1: recovery's read of the saved version N fails (500). Before the fix the
// failed read was taken for "N is absent" and the spent refresh token was presented again.
func TestSeq1RecoveryReadErrorIsNotAbsence(t *testing.T) {
	f := newFaultEnv(t, nil)
	saved := f.interrupt(t)

	remove := f.proxy.Add(faultproxy.Rule{Op: "secretsmanager.GetSecretValue", Match: bodyHas(saved), Error: faultproxy.InternalServiceError()})
	r := f.runOnce(t)
	remove()
	if r.Outcome != refresher.OutcomeFailed || !strings.Contains(r.Error, saved) {
		t.Errorf("recovery with a failed read: got %s (%s), want failed naming version %s", r.Outcome, r.Error, saved)
	}
	if _, rec := f.committed("t"); rec.Inflight == nil || rec.Inflight.To != saved || rec.Status != "active" {
		t.Errorf("after the failed read: got inflight %+v status %q, want the refresh to %s in flight and the token active", rec.Inflight, rec.Status, saved)
	}
	if n := f.pres.total(); n != 1 {
		t.Errorf("got %d provider presentations, want 1 (the interrupted refresh only)", n)
	}

	f.clock.Advance(time.Hour)
	if r := f.runOnce(t); r.Outcome != refresher.OutcomeRefreshed {
		t.Errorf("clean run: got %s (%s), want refreshed (rolled forward)", r.Outcome, r.Error)
	}
	// The saved version is committed; its access token expired meanwhile, so the same run
	// refreshes once more on top of it (never publishing the expired one).
	if _, rec := f.committed("t"); rec.PrevVersionID != saved {
		t.Errorf("clean run: committed %s on top of %s, want it on top of the saved version %s", rec.VersionID, rec.PrevVersionID, saved)
	}
	if n := f.pres.total(); n != 2 {
		t.Errorf("got %d provider presentations, want 2 (the interrupted refresh, then one with the saved version's refresh token)", n)
	}
	f.settled(t)
}

// Sequence 2: an operator puts back the original onboarding file after a refresh; the read
// of the committed version fails during the adoption. Before the fix the edit won and its
// spent refresh token was committed and presented.
func TestSeq2AdoptEditReadErrorIsNotAbsence(t *testing.T) {
	f := newFaultEnv(t, nil)
	if r := f.runOnce(t); r.Outcome != refresher.OutcomeRefreshed {
		t.Fatalf("first refresh: got %s (%s)", r.Outcome, r.Error)
	}
	_, before := f.committed("t")
	f.edit("t", f.orig) // the onboarding file, put back

	remove := f.proxy.Add(faultproxy.Rule{Op: "secretsmanager.GetSecretValue", Match: bodyHas(before.VersionID), Error: faultproxy.InternalServiceError()})
	rep, _ := f.run(refresher.Request{}) // a reconcile adopts edits
	remove()
	if r := row(t, rep, "t"); r.Outcome != refresher.OutcomeFailed {
		t.Errorf("adoption with a failed read: got %s (%s), want failed", r.Outcome, r.Error)
	}
	if _, rec := f.committed("t"); rec.VersionID != before.VersionID || rec.Generation != before.Generation {
		t.Errorf("after the failed read: committed %s generation %d, want %s %d unchanged", rec.VersionID, rec.Generation, before.VersionID, before.Generation)
	}

	f.clock.Advance(time.Hour)
	rep = f.scheduled()
	if r := row(t, rep, "t"); r.Outcome == refresher.OutcomeFailed || r.Outcome == refresher.OutcomeNeedsReauth {
		t.Errorf("clean reconcile: got %s (%s), want the copy merged and the chain kept", r.Outcome, r.Error)
	}
	f.clock.Advance(time.Hour)
	if r := f.forced(t); r.Outcome != refresher.OutcomeRefreshed {
		t.Errorf("forced refresh after the merge: got %s (%s), want refreshed", r.Outcome, r.Error)
	}
	f.settled(t)
}

// Sequence 3: the claim is applied but its answer arrives after the lease ended; meanwhile
// another invocation recovered the refresh and refreshed. Before the fix the first holder
// counted its lease from the late answer and presented the spent refresh token.
func TestSeq3SlowClaimMakesNoProviderCall(t *testing.T) {
	f := newFaultEnv(t, nil)
	var other refresher.Row
	f.proxy.Add(faultproxy.Rule{Op: "DynamoDB_20120810.TransactWriteItems", Times: 1, After: func(string) {
		// The claim is applied; its answer is late: the lease ends, another run works.
		f.clock.Advance(time.Hour)
		rep, _ := f.run(refresher.Request{Tokens: []string{"t"}})
		if rep != nil && len(rep.Tokens) == 1 {
			other = rep.Tokens[0]
		}
	}})
	first := f.runOnce(t)
	if other.Outcome != refresher.OutcomeRefreshed {
		t.Errorf("the other invocation: got %s (%s), want refreshed (it recovered the expired claim)", other.Outcome, other.Error)
	}
	if first.Outcome == refresher.OutcomeRefreshed {
		t.Errorf("the slow holder: got refreshed, want no refresh (its lease ended before the answer came)")
	}
	if n := f.pres.total(); n != 1 {
		t.Errorf("got %d provider presentations, want 1 (the other invocation's)", n)
	}
	f.settled(t)
}

// Sequence 4: recovery finds N but its commit fails too. Before the fix the deferred
// release removed the in-flight record and a later refresh presented the spent token.
func TestSeq4FailedRecoveryCommitKeepsEvidence(t *testing.T) {
	f := newFaultEnv(t, nil)
	saved := f.interrupt(t)

	remove := f.proxy.Add(faultproxy.Rule{Op: "DynamoDB_20120810.UpdateItem", Match: commitOnly, Error: faultproxy.InternalServerError()})
	r := f.runOnce(t)
	remove()
	if r.Outcome != refresher.OutcomeFailed {
		t.Errorf("recovery with a failed commit: got %s (%s), want failed", r.Outcome, r.Error)
	}
	if _, rec := f.committed("t"); rec.Inflight == nil || rec.Inflight.To != saved {
		t.Fatalf("after the failed recovery commit: got inflight %+v, want the refresh to %s still in flight", rec.Inflight, saved)
	}

	f.clock.Advance(time.Hour)
	if r := f.forced(t); r.Outcome != refresher.OutcomeRefreshed {
		t.Errorf("next run: got %s (%s), want refreshed", r.Outcome, r.Error)
	}
	f.settled(t)
}

func (f *faultEnv) forced(t *testing.T) refresher.Row {
	t.Helper()
	rep, _ := f.run(refresher.Request{Tokens: []string{"t"}, Force: true})
	return row(t, rep, "t")
}

// Sequence 5: after 101 rotations the onboarding file, put back, is no longer in the
// bounded seen_refresh_tokens. Before the fix its refresh token, "never seen", replaced the
// live chain and was presented (spent) again. A new authorisation — a later authorized_at —
// is still adopted.
func TestSeq5OldCopyAfter101Rotations(t *testing.T) {
	f := newFaultEnv(t, nil)
	for i := 0; i < 101; i++ {
		if r := f.forced(t); r.Outcome != refresher.OutcomeRefreshed {
			t.Fatalf("rotation %d: got %s (%s), want refreshed", i+1, r.Outcome, r.Error)
		}
		f.clock.Advance(time.Hour) // inside the write budget
	}
	doc, _ := f.committed("t")
	if doc.Seen(token.Secret(f.seed)) {
		t.Fatalf("after 101 rotations the onboarding refresh token is still remembered; the test needs more rotations")
	}

	f.edit("t", f.orig) // the onboarding file, put back with the AWS CLI
	rep := f.scheduled()
	if r := row(t, rep, "t"); r.Outcome == refresher.OutcomeFailed || r.Outcome == refresher.OutcomeNeedsReauth {
		t.Errorf("reconcile after the old copy: got %s (%s), want the copy merged and the chain kept", r.Outcome, r.Error)
	}
	f.clock.Advance(time.Hour)
	if r := f.forced(t); r.Outcome != refresher.OutcomeRefreshed {
		t.Errorf("refresh after the old copy: got %s (%s), want refreshed", r.Outcome, r.Error)
	}
	f.settled(t)

	// A new authorisation (tokenctl authorize, or an operator's edit marked as one).
	fresh := f.sim.Seed("offline_access fund.read target:b/t")
	edit := maps.Clone(f.orig)
	edit["refresh_token"] = fresh
	edit["authorized_at"] = f.clock.Now().UTC().Format(time.RFC3339)
	registerSecrets(fresh)
	f.edit("t", edit)
	f.clock.Advance(time.Hour)
	if r := row(t, f.scheduled(), "t"); r.Outcome == refresher.OutcomeFailed || r.Outcome == refresher.OutcomeNeedsReauth {
		t.Errorf("reconcile after the new authorisation: got %s (%s), want it adopted", r.Outcome, r.Error)
	}
	f.clock.Advance(time.Hour)
	if r := f.forced(t); r.Outcome != refresher.OutcomeRefreshed {
		t.Errorf("refresh after the new authorisation: got %s (%s), want refreshed", r.Outcome, r.Error)
	}
	doc, _ = f.committed("t")
	if live := f.sim.Live(fresh); live == "" || live != doc.RefreshToken.Reveal() {
		t.Errorf("after the new authorisation: the committed refresh token is not the new chain's live one")
	}
	if n := f.pres.twice(); n != 0 {
		t.Errorf("got %d refresh tokens presented twice, want 0", n)
	}
}

// newSealer creates a KMS key in moto and a Sealer with it.
func newSealer(t *testing.T) *escrow.Sealer {
	t.Helper()
	client := kms.NewFromConfig(awsemu.Shared(t).AWSConfig(t))
	out, err := client.CreateKey(context.Background(), &kms.CreateKeyInput{Description: aws.String(t.Name())})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	s, err := escrow.New(client, escrow.Options{KeyID: aws.ToString(out.KeyMetadata.KeyId)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Sequence 6: PutSecretValue is refused for good after the provider rotated. Before the fix
// the new refresh token lived only in the dying process and, with no reuse grace, was lost
// (the next run presented the spent one). Now it is escrowed in the in-flight record; the
// next run with writes accepted finishes the persist and commits it.
func TestSeq6RefusedPersistIsEscrowed(t *testing.T) {
	tests := []struct {
		name     string
		fault    *faultproxy.AWSError
		deadline time.Duration // non-zero: the run's deadline, so the fault outlasts the lease
	}{
		{name: "LimitExceededException", fault: faultproxy.LimitExceeded()},
		{name: "AccessDenied", fault: &faultproxy.AWSError{Status: http.StatusBadRequest, Type: "AccessDeniedException", Message: "User is not authorized to perform: secretsmanager:PutSecretValue"}},
		{name: "throttling past the lease", fault: faultproxy.ThrottlingError(faultproxy.SecretsManager), deadline: 6 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sealer := newSealer(t)
			f := newFaultEnv(t, func(o *refresher.Options) { o.Sealer = sealer })
			remove := f.proxy.Add(faultproxy.Rule{Op: "secretsmanager.PutSecretValue", Error: tc.fault})
			req := refresher.Request{Tokens: []string{"t"}}
			var rep *refresher.Report
			if tc.deadline > 0 {
				rep, _ = f.runWithin(tc.deadline, req)
			} else {
				rep, _ = f.run(req)
			}
			remove()
			if r := row(t, rep, "t"); r.Outcome != refresher.OutcomeFailed || !strings.Contains(r.Error, "escrowed") {
				t.Errorf("refused persist: got %s (%s), want failed, saying the token is escrowed", r.Outcome, r.Error)
			}
			_, rec := f.committed("t")
			if rec.Inflight == nil || len(rec.Inflight.Escrow) == 0 {
				t.Fatalf("refused persist: got inflight %+v, want an escrow", rec.Inflight)
			}
			to := rec.Inflight.To

			f.clock.Advance(time.Hour) // the lease ends; past any grace
			if r := f.runOnce(t); r.Outcome != refresher.OutcomeRefreshed {
				t.Errorf("next run: got %s (%s), want refreshed (the escrow persisted and committed)", r.Outcome, r.Error)
			}
			// The escrowed version is committed; its access token expired meanwhile, so the
			// same run refreshes once more on top of it, with the escrowed refresh token.
			if _, rec := f.committed("t"); rec.PrevVersionID != to || rec.Inflight != nil {
				t.Errorf("next run: committed %s on top of %s, inflight %+v; want it on top of %s and the escrow gone", rec.VersionID, rec.PrevVersionID, rec.Inflight, to)
			}
			if n := f.pres.total(); n != 2 {
				t.Errorf("got %d provider presentations, want 2 (the rotation, then one with the escrowed refresh token; the escrow itself needs none)", n)
			}
			f.settled(t)
		})
	}
}

// An escrow that stays refused stays; one that does not open fails loudly; neither ever
// presents the old refresh token.
func TestEscrowNeverFallsBackToOldToken(t *testing.T) {
	sealer := newSealer(t)
	f := newFaultEnv(t, func(o *refresher.Options) { o.Sealer = sealer })
	remove := f.proxy.Add(faultproxy.Rule{Op: "secretsmanager.PutSecretValue", Error: faultproxy.LimitExceeded()})
	f.runOnce(t)
	f.clock.Advance(time.Hour)
	if r := f.runOnce(t); r.Outcome != refresher.OutcomeFailed {
		t.Errorf("still refused: got %s (%s), want failed", r.Outcome, r.Error)
	}
	remove()
	_, rec := f.committed("t")
	if rec.Inflight == nil || len(rec.Inflight.Escrow) == 0 {
		t.Fatalf("still refused: got inflight %+v, want the escrow kept", rec.Inflight)
	}

	// A tampered escrow does not open: the run fails loudly and presents nothing.
	good := rec.Inflight.Escrow
	f.setEscrow(t, append([]byte{good[0]}, make([]byte, len(good)-1)...))
	f.clock.Advance(time.Hour)
	if r := f.runOnce(t); r.Outcome != refresher.OutcomeFailed || !strings.Contains(r.Error, "does not open") {
		t.Errorf("tampered escrow: got %s (%s), want failed, saying the escrow does not open", r.Outcome, r.Error)
	}
	f.setEscrow(t, good)
	if n := f.pres.total(); n != 1 {
		t.Errorf("got %d provider presentations, want 1 (the old refresh token is never presented again)", n)
	}

	f.clock.Advance(time.Hour)
	if r := f.runOnce(t); r.Outcome != refresher.OutcomeRefreshed {
		t.Errorf("writes accepted again: got %s (%s), want refreshed", r.Outcome, r.Error)
	}
	f.settled(t)
}

// setEscrow overwrites the in-flight record's sealed value, as a corruption would.
func (f *faultEnv) setEscrow(t *testing.T, sealed []byte) {
	t.Helper()
	_, err := f.ddb.UpdateItem(context.Background(), &dynamodb.UpdateItemInput{
		TableName:                 aws.String(f.table),
		Key:                       map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "token#t"}},
		UpdateExpression:          aws.String("SET inflight.escrow = :v"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":v": &ddbtypes.AttributeValueMemberB{Value: sealed}},
	})
	if err != nil {
		t.Fatalf("set escrow: %v", err)
	}
}
