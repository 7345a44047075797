package refresher_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
)

func sahamatiDoc(url, entity, secret string) map[string]any {
	return map[string]any{
		"provider": map[string]any{"grant": "sahamati_entity", "token_url": url, "entity_id": entity, "entity_secret": secret},
	}
}

func rotatingDoc(url, clientID, clientSecret, rt string, grace string) map[string]any {
	return map[string]any{
		"provider": map[string]any{
			"grant": "refresh_token", "body": "form", "token_url": url,
			"client_id": clientID, "client_secret": clientSecret, "client_auth": "basic",
			"reuse_grace": grace,
		},
		"refresh_token": rt,
	}
}

func vaultDoc(url, rt string) map[string]any {
	return map[string]any{
		"provider":      map[string]any{"grant": "refresh_token", "body": "json", "token_url": url, "client_auth": "none"},
		"refresh_token": rt,
	}
}

var ist = mustLoad("Asia/Kolkata")

func mustLoad(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return loc
}

// Acceptance 2: Sahamati over 7 simulated days on a 12 h schedule: exactly 14 token
// requests, and a consumer reading the access secret at any minute finds a valid token.
func TestSahamatiSevenDays(t *testing.T) {
	clock := providersim.NewClock(time.Date(2026, 11, 22, 6, 0, 0, 0, ist))
	sim := newSahamati(t, "fiu-acme", clock)
	// Reconciles alone (no sweep runs): each reconcile refreshes what expires before the
	// next one. (With a sweep configured, a due time spread inside the margin — issue 18 —
	// would fall between two 12 h reconciles that no sweep covers.)
	e := newEnv(t, clock.Now, func(o *refresher.Options) { o.SweepInterval = -1 })
	e.seed("sahamati", sahamatiDoc(sim.URL(), "fiu-acme", simSecret(sim)))

	start := clock.Now()
	end := start.Add(7 * 24 * time.Hour)
	var runs, refreshed int
	for at := start; at.Before(end); at = at.Add(12 * time.Hour) {
		clock.Set(at)
		rep := e.scheduled()
		runs++
		if outcomes(rep)["sahamati"] == refresher.OutcomeRefreshed {
			refreshed++
		}
		acc := e.accessRaw("sahamati")
		expires, err := time.Parse(time.RFC3339, acc["expires_at"].(string))
		if err != nil {
			t.Fatalf("expires_at: %v", err)
		}
		tok := acc["access_token"].(string)
		// Every minute until the next run, the published token is unexpired and the
		// provider accepts it.
		for m := at; m.Before(at.Add(12 * time.Hour)); m = m.Add(time.Minute) {
			clock.Set(m)
			if !m.Before(expires) || !sim.Valid(tok) {
				t.Fatalf("at %s the published token (expires %s) is not valid", m, expires)
			}
		}
	}
	if got := sim.Requests(); got != 14 {
		t.Errorf("got %d token requests over 7 days, want 14", got)
	}
	if refreshed != 14 || runs != 14 {
		t.Errorf("got %d refreshed of %d runs, want 14 of 14", refreshed, runs)
	}
	t.Logf("figure: 7 days on a 12 h schedule: %d token requests, %d runs, consumer checked every minute", sim.Requests(), runs)
}

// simSecret is the secret a Sahamati simulator was made with, kept by the test.
var simSecrets sync.Map

func simSecret(s *providersim.Sahamati) string {
	v, _ := simSecrets.Load(s)
	return v.(string)
}

func newSahamati(t *testing.T, entity string, clock *providersim.Clock) *providersim.Sahamati {
	secret := "sah-secret-" + randID()
	registerSecrets(secret)
	sim := providersim.NewSahamati(providersim.SahamatiOptions{EntityID: entity, Secret: secret, Now: clock.Now})
	simSecrets.Store(sim, secret)
	registerIssuer(sim)
	t.Cleanup(sim.Close)
	return sim
}

// Acceptance 3: 200 consecutive rotations; the live refresh token at the provider is always
// the one in the committed private version, and generation strictly increases.
func TestRotatingTwoHundredRefreshes(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotating(t, clock)
	seed := sim.Seed("offline_access fund.read target:b/acme")
	e := newEnv(t, clock.Now, nil)
	e.seed("acme", rotatingDoc(sim.URL(), "app", cs, seed, ""))

	n := 200
	if testing.Short() {
		n = 40
	}
	var last int64 = -1
	for i := 0; i < n; i++ {
		rep, err := e.run(refresher.Request{Tokens: []string{"acme"}, Force: true})
		if err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
		if got := row(t, rep, "acme").Outcome; got != refresher.OutcomeRefreshed {
			t.Fatalf("refresh %d: got %s, want refreshed", i, got)
		}
		doc, rec := e.committed("acme")
		if live := sim.Live(seed); live != doc.RefreshToken.Reveal() {
			t.Fatalf("refresh %d: the provider's live refresh token is not the committed one", i)
		}
		if rec.Generation <= last {
			t.Fatalf("refresh %d: generation %d after %d", i, rec.Generation, last)
		}
		last = rec.Generation
		// Past the write budget's pace (90 versions a day: one per 16 min); force never
		// overrides the budget (TestWriteBudgetBeforeCall).
		clock.Advance(17 * time.Minute)
	}
	if got := sim.Requests(); got != n {
		t.Errorf("got %d provider requests, want %d", got, n)
	}
	t.Logf("figure: %d consecutive rotations, 0 mismatches, final generation %d", n, last)
}

// newRotating starts a strict single-use provider for client "app" and returns it with
// the client secret; both are registered for the leak scan.
func newRotating(t *testing.T, clock *providersim.Clock) (*providersim.Rotating, string) {
	cs := "cs-" + randID()
	registerSecrets(cs)
	sim := providersim.NewRotating(providersim.RotatingOptions{ClientID: "app", ClientSecret: cs, Now: clock.Now})
	t.Cleanup(sim.Close)
	registerIssuer(sim)
	return sim, cs
}

// Acceptance 4: a quota of 300 shared by several tokens; 400 due refreshes → exactly 300
// provider requests, 100 quota_exhausted, no 429 from the provider.
func TestQuotaSharedByTokens(t *testing.T) {
	clock := providersim.NewClock(time.Date(2026, 11, 22, 9, 0, 0, 0, ist))
	sim := newSahamati(t, "fiu-shared", clock)
	e := newEnv(t, clock.Now, func(o *refresher.Options) { o.Concurrency = 4 })
	names := []string{"q1", "q2", "q3", "q4"}
	for _, n := range names {
		e.seed(n, sahamatiDoc(sim.URL(), "fiu-shared", simSecret(sim)))
	}
	counts := map[string]int{}
	for i := 0; i < 100; i++ {
		rep, err := e.run(refresher.Request{Tokens: names, Force: true})
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		for _, r := range rep.Tokens {
			counts[r.Outcome]++
		}
		clock.Advance(time.Second)
	}
	if counts[refresher.OutcomeRefreshed] != 300 || counts[refresher.OutcomeQuotaExhausted] != 100 {
		t.Errorf("got outcomes %v, want 300 refreshed and 100 quota_exhausted", counts)
	}
	if got := sim.Requests(); got != 300 {
		t.Errorf("got %d provider requests, want 300", got)
	}
	if got := sim.Count(429); got != 0 {
		t.Errorf("got %d provider 429s, want 0", got)
	}
	b, err := e.ledger.Quota(context.Background(), "sahamati#fiu-shared", ledger.Day(clock.Now(), ist))
	if err != nil || b.Used != 300 {
		t.Errorf("got bucket used %d (err %v), want 300", b.Used, err)
	}
	t.Logf("figure: 400 due refreshes against a 300/day quota: %d provider requests, %d quota_exhausted, %d provider 429s", sim.Requests(), counts[refresher.OutcomeQuotaExhausted], sim.Count(429))
}

// Acceptance 5: a rejection → needs_reauth in both secrets with a clear reason; no provider
// request on later runs; re-seeding makes it active again.
func TestRejectionNeedsReauthAndReseed(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotating(t, clock)
	e := newEnv(t, clock.Now, nil)
	e.seed("biz", rotatingDoc(sim.URL(), "app", cs, "rot_rt_not-a-token-"+randID(), ""))

	rep, err := e.run(refresher.Request{})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	r := row(t, rep, "biz")
	if r.Outcome != refresher.OutcomeNeedsReauth || !strings.Contains(r.Error, "invalid_grant") {
		t.Fatalf("got %s %q, want needs_reauth naming invalid_grant", r.Outcome, r.Error)
	}
	doc, rec := e.committed("biz")
	if doc.Status != "needs_reauth" || rec.Status != "needs_reauth" || !strings.Contains(doc.StatusReason, "invalid_grant") {
		t.Errorf("private: got status %q reason %q (record %q), want needs_reauth with the provider's code", doc.Status, doc.StatusReason, rec.Status)
	}
	acc := e.accessRaw("biz")
	if acc["status"] != "needs_reauth" || !strings.Contains(fmt.Sprint(acc["reason"]), "invalid_grant") {
		t.Errorf("access: got status %v reason %v, want needs_reauth with a reason", acc["status"], acc["reason"])
	}
	if cur, _ := e.current("biz"); cur.Status != "needs_reauth" {
		t.Errorf("AWSCURRENT: got status %q, want needs_reauth", cur.Status)
	}
	before := sim.Requests()
	for i := 0; i < 3; i++ {
		clock.Advance(12 * time.Hour)
		rep, _ := e.run(refresher.Request{Tokens: []string{"biz"}, Force: true})
		if got := row(t, rep, "biz").Outcome; got != refresher.OutcomeNeedsReauth {
			t.Errorf("later run %d: got %s, want needs_reauth", i, got)
		}
	}
	if got := sim.Requests() - before; got != 0 {
		t.Errorf("got %d provider requests while needs_reauth, want 0", got)
	}

	// An operator re-authorises and re-seeds (a new AWSCURRENT version).
	fresh := sim.Seed("offline_access fund.read target:b/biz")
	e.edit("biz", rotatingDoc(sim.URL(), "app", cs, fresh, ""))
	rep = e.scheduled()
	if got := row(t, rep, "biz").Outcome; got != refresher.OutcomeRefreshed {
		t.Fatalf("after re-seed: got %s (%s), want refreshed", got, row(t, rep, "biz").Error)
	}
	doc, rec = e.committed("biz")
	if doc.Status != "active" || rec.Status != "active" || e.accessRaw("biz")["status"] != "active" {
		t.Errorf("after re-seed: got private %q record %q access %v, want active", doc.Status, rec.Status, e.accessRaw("biz")["status"])
	}
	if sim.Live(fresh) != doc.RefreshToken.Reveal() {
		t.Errorf("after re-seed: the committed refresh token is not the provider's live one")
	}
}

// Acceptance 6: bad input → invalid_config naming the field, nothing written, others go on.
func TestBadInputChangesNothing(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim := providersim.NewVault(providersim.VaultOptions{Now: clock.Now})
	defer sim.Close()
	registerIssuer(sim)
	e := newEnv(t, clock.Now, nil)
	e.seed("good", vaultDoc(sim.URL(), sim.Seed()))
	bad := map[string]struct {
		raw  string
		want string
	}{
		"malformed":     {`{"provider": {"grant": "refresh_token",`, "want a JSON object"},
		"unknown-grant": {`{"provider":{"grant":"password","token_url":"https://a.example/t"}}`, "provider.grant"},
		"http-endpoint": {`{"provider":{"grant":"refresh_token","token_url":"http://auth.example.com/token"},"refresh_token":"x-rt-123456"}`, "provider.token_url: must use https"},
		"missing-rt":    {`{"provider":{"grant":"refresh_token","token_url":"https://a.example/t"}}`, "refresh_token: required"},
		"wrong-type":    {`{"provider":{"grant":"refresh_token","token_url":"https://a.example/t"},"refresh_token":"x-rt-123456","generation":"7"}`, "generation: want a whole number"},
		"missing-url":   {`{"provider":{"grant":"sahamati_entity","entity_id":"e","entity_secret":"s-123456"}}`, "provider.token_url: required"},
		"not-object":    {`["provider"]`, "want a JSON object"},
	}
	registerSecrets("x-rt-123456", "s-123456")
	var names []string
	for name, b := range bad {
		e.seedRaw(name, b.raw)
		names = append(names, name)
	}
	sort.Strings(names)
	rep, err := e.run(refresher.Request{})
	if err != nil {
		t.Fatalf("run: %v (invalid_config is not a failure)", err)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			r := row(t, rep, name)
			if r.Outcome != refresher.OutcomeInvalidConfig || !strings.Contains(r.Error, bad[name].want) {
				t.Errorf("got %s %q, want invalid_config containing %q", r.Outcome, r.Error, bad[name].want)
			}
			if n := e.versionCount(name); n != 1 {
				t.Errorf("got %d private versions, want 1 (nothing written)", n)
			}
			if e.accessExists(name) {
				t.Errorf("an access secret was written for a bad document")
			}
			if _, err := e.ledger.Get(context.Background(), name); !errors.Is(err, ledger.ErrNotFound) {
				t.Errorf("got record err %v, want none written", err)
			}
		})
	}
	if got := row(t, rep, "good").Outcome; got != refresher.OutcomeRefreshed {
		t.Errorf("the good token: got %s, want refreshed", got)
	}

	// An unknown event is an error naming the cause; nothing runs.
	before := sim.Requests()
	for _, ev := range []string{`{"Records":[{"s3":{}}]}`, `{"tokens":"good"}`, `{"detail-type":"Object Created","source":"aws.s3"}`, `[1,2]`} {
		if _, err := e.engine.Handle(context.Background(), []byte(ev)); err == nil || !strings.Contains(err.Error(), "event") {
			t.Errorf("event %s: got err %v, want an event error", ev, err)
		}
	}
	if sim.Requests() != before {
		t.Errorf("an unknown event caused provider requests")
	}
}

// A second scheduled run right after a refresh is not_due with no provider request.
func TestSecondRunNotDue(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim := newSahamati(t, "fiu-nd", clock)
	e := newEnv(t, clock.Now, nil)
	e.seed("s", sahamatiDoc(sim.URL(), "fiu-nd", simSecret(sim)))
	if got := outcomes(e.scheduled())["s"]; got != refresher.OutcomeRefreshed {
		t.Fatalf("first run: got %s, want refreshed", got)
	}
	if got := outcomes(e.scheduled())["s"]; got != refresher.OutcomeNotDue {
		t.Fatalf("second run: got %s, want not_due", got)
	}
	if sim.Requests() != 1 {
		t.Errorf("got %d provider requests, want 1", sim.Requests())
	}
	_, rec := e.committed("s")
	if rec.PublishedGeneration != rec.Generation || rec.LeaseHolder != "" || rec.Inflight != nil {
		t.Errorf("record after refresh: published %d generation %d lease %q inflight %v", rec.PublishedGeneration, rec.Generation, rec.LeaseHolder, rec.Inflight)
	}
	if _, id := e.current("s"); id != rec.VersionID {
		t.Errorf("AWSCURRENT %s is not the committed version %s", id, rec.VersionID)
	}
}
