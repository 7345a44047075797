package refresher_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// hookedStore is the real store (moto) with counts of every Secrets Manager write and hooks
// that act before a call: a failure to inject, or an operator's edit landing mid-refresh.
type hookedStore struct {
	*secretstore.Store
	mu         sync.Mutex
	beforePut  func(name string)
	putErrs    int           // the next putErrs persists answer ErrThrottled (after the SDK's retries)
	getDelay   time.Duration // the next GetVersion answers this late (a slow Secrets Manager)
	moveErr    error         // returned by the next MoveCurrent of a private secret, once
	entries    atomic.Int64
	putCurrent atomic.Int64
	moves      atomic.Int64
	publishes  atomic.Int64
}

func (s *hookedStore) Entries(ctx context.Context, prefix string) ([]secretstore.Entry, error) {
	s.entries.Add(1)
	return s.Store.Entries(ctx, prefix)
}

func (s *hookedStore) PutCurrentVersion(ctx context.Context, name string, value token.Secret, versionID string) error {
	s.mu.Lock()
	hook := s.beforePut
	s.beforePut = nil
	throttle := s.putErrs > 0
	if throttle {
		s.putErrs--
	}
	s.mu.Unlock()
	if throttle {
		return fmt.Errorf("secretstore: put current %s: %w", name, secretstore.ErrThrottled)
	}
	if hook != nil {
		hook(name)
	}
	s.putCurrent.Add(1)
	return s.Store.PutCurrentVersion(ctx, name, value, versionID)
}

func (s *hookedStore) GetVersion(ctx context.Context, name, versionID string) (secretstore.Version, error) {
	s.mu.Lock()
	d := s.getDelay
	s.getDelay = 0
	s.mu.Unlock()
	if d > 0 {
		time.Sleep(d) // a slow dependency, not synchronisation
	}
	return s.Store.GetVersion(ctx, name, versionID)
}

func (s *hookedStore) MoveCurrent(ctx context.Context, name, to, from string) error {
	s.moves.Add(1)
	s.mu.Lock()
	err := s.moveErr
	if strings.Contains(name, "/private/") {
		s.moveErr = nil
	} else {
		err = nil
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.Store.MoveCurrent(ctx, name, to, from)
}

func (s *hookedStore) Publish(ctx context.Context, name string, value token.Secret, clientToken string) error {
	s.publishes.Add(1)
	return s.Store.Publish(ctx, name, value, clientToken)
}

func (s *hookedStore) writes() int64 {
	return s.putCurrent.Load() + s.moves.Load() + s.publishes.Load()
}

func newHookedEnv(t *testing.T, now func() time.Time) (*env, *hookedStore) {
	var hs *hookedStore
	e := newEnv(t, now, func(o *refresher.Options) {
		hs = &hookedStore{Store: o.Secrets.(*secretstore.Store)}
		o.Secrets = hs
	})
	return e, hs
}

// Issue 18 item 2: a refresh makes two Secrets Manager writes — the private version, which
// becomes AWSCURRENT in the same PutSecretValue, and the access secret — and leaves no
// TR_PENDING label.
func TestTwoWritesPerRefresh(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotatingTTL(t, clock, time.Hour)
	e, hs := newHookedEnv(t, clock.Now)
	const n = 5
	for i := 0; i < n; i++ {
		e.seed("w"+string(rune('0'+i)), rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	}
	e.scheduled()
	clock.Advance(34 * time.Minute)
	before := hs.writes()
	rep := mustRun(t, e, refresher.Request{Sweep: true})
	if rep.Summary[refresher.OutcomeRefreshed] != n {
		t.Fatalf("sweep: %v, want %d refreshed", rep.Summary, n)
	}
	if got := float64(hs.writes()-before) / n; got != 2 {
		t.Errorf("Secrets Manager writes per refresh: got %.1f, want 2", got)
	}
	_, rec := e.committed("w0")
	if _, cur := e.current("w0"); cur != rec.VersionID {
		t.Errorf("AWSCURRENT is %s, want the committed version %s", cur, rec.VersionID)
	}
	vs, err := e.store.Versions(context.Background(), e.prefix+"private/w0")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.HasStage("TR_PENDING") {
			t.Errorf("version %s carries TR_PENDING; want no such label", v.ID)
		}
	}
	t.Logf("figure: %d refreshes, %.1f Secrets Manager writes each", n, float64(hs.writes()-before)/n)
}

// Issue 18 item 3: a label move that fails is recorded, and the next sweep repairs it from
// the record, with no ListSecrets; our own version left without AWSCURRENT is a label
// repair, never an operator edit.
func TestLabelRepairedBySweep(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotatingTTL(t, clock, time.Hour)
	e, hs := newHookedEnv(t, clock.Now)
	first := e.seed("lbl", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	e.scheduled()
	_, rec := e.committed("lbl")
	// AWSCURRENT left on our previous version (as a three-write refresh whose label move
	// was throttled left it).
	if err := e.store.MoveCurrent(context.Background(), e.prefix+"private/lbl", first, rec.VersionID); err != nil {
		t.Fatal(err)
	}
	hs.mu.Lock()
	hs.moveErr = secretstore.ErrThrottled
	hs.mu.Unlock()
	rep, _ := e.run(refresher.Request{})
	r := row(t, rep, "lbl")
	if r.Outcome != refresher.OutcomeFailed || strings.Contains(r.Error, "edit") {
		t.Fatalf("reconcile with a throttled label move: got %s %q, want failed, not an edit", r.Outcome, r.Error)
	}
	if _, got := e.committed("lbl"); got.LabelFrom != first || got.VersionID != rec.VersionID {
		t.Fatalf("record: label_from %q version %s, want %q and %s kept", got.LabelFrom, got.VersionID, first, rec.VersionID)
	}
	lists := hs.entries.Load()
	clock.Advance(time.Minute)
	if r := row(t, mustRun(t, e, refresher.Request{Sweep: true}), "lbl"); r.Outcome != refresher.OutcomeNotDue {
		t.Errorf("sweep: got %s %q, want not_due (label repaired)", r.Outcome, r.Error)
	}
	if _, cur := e.current("lbl"); cur != rec.VersionID {
		t.Errorf("AWSCURRENT is %s, want the committed %s", cur, rec.VersionID)
	}
	if got := hs.entries.Load() - lists; got != 0 {
		t.Errorf("the sweep listed secrets %d times, want 0", got)
	}
	if _, got := e.committed("lbl"); got.LabelFrom != "" {
		t.Errorf("label_from %q after the repair, want cleared", got.LabelFrom)
	}
	if rep := mustRun(t, e, refresher.Request{Sweep: true}); len(rep.Tokens) != 0 {
		t.Errorf("next sweep: got %+v, want nothing due (due_at back to next_due_at)", rep.Tokens)
	}
}

// Issue 18 item 2: an operator edit landing while the token is being refreshed is not hidden
// by the persist that moves AWSCURRENT: the label goes back to the edit and the next
// reconcile adopts it.
func TestEditDuringRefreshNotHidden(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotatingTTL(t, clock, time.Hour)
	e, hs := newHookedEnv(t, clock.Now)
	e.seed("mid", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	e.scheduled()
	clock.Advance(34 * time.Minute)
	var edit string
	reauth := rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), "")
	reauth["authorized_at"] = clock.Now().UTC().Format(time.RFC3339) // a new authorisation (docs/design.md §2)
	hs.mu.Lock()
	hs.beforePut = func(string) { edit = e.edit("mid", reauth) }
	hs.mu.Unlock()
	if r := row(t, mustRun(t, e, refresher.Request{Sweep: true}), "mid"); r.Outcome != refresher.OutcomeRefreshed {
		t.Fatalf("sweep: got %s %q, want refreshed", r.Outcome, r.Error)
	}
	if _, cur := e.current("mid"); cur != edit {
		t.Fatalf("AWSCURRENT is %s after the refresh, want the operator's edit %s given back", cur, edit)
	}
	e.scheduled()
	// The edit (a re-authorisation with no access token yet) is adopted and, due at once,
	// refreshed from: it is the committed version or the one before it.
	if _, rec := e.committed("mid"); rec.VersionID != edit && rec.PrevVersionID != edit {
		t.Errorf("committed %s (from %s) after the reconcile, want the edit %s adopted", rec.VersionID, rec.PrevVersionID, edit)
	}
}

// runMetrics is the run-level EMF line of a run (the one without a Token).
func runMetrics(t *testing.T, lines string) map[string]any {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(lines))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %v", err)
		}
		if m["Token"] == nil && m["QuotaKey"] == nil {
			return m
		}
	}
	t.Fatalf("no run-level metric line in %s", lines)
	return nil
}

// Issue 18 item 1: a throttled Secrets Manager write no longer stops the run (was: every
// later token "failed: not started"); the persist is retried under its lease, every token is
// refreshed, and the throttles are counted.
func TestThrottledWritesKeepTheRunGoing(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotatingTTL(t, clock, time.Hour)
	var buf strings.Builder
	var hs *hookedStore
	e := newEnv(t, clock.Now, func(o *refresher.Options) {
		hs = &hookedStore{Store: o.Secrets.(*secretstore.Store), putErrs: 3}
		o.Secrets, o.Concurrency, o.Metrics = hs, 1, &teeBuilder{b: &buf}
	})
	const n = 4
	for i := 0; i < n; i++ {
		e.seed(fmt.Sprintf("th%d", i), rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	}
	rep, err := e.run(refresher.Request{})
	if err != nil || rep.Summary[refresher.OutcomeRefreshed] != n {
		t.Fatalf("got %v, error %v; want %d refreshed and no error", rep.Summary, err, n)
	}
	if got := sim.Requests(); got != n {
		t.Errorf("provider requests: got %d, want %d (one each)", got, n)
	}
	if m := runMetrics(t, buf.String()); m["SecretsManagerThrottled"] != float64(3) || m[refresher.BacklogMetric] != float64(0) {
		t.Errorf("run metrics: got SecretsManagerThrottled %v, Backlog %v; want 3 and 0", m["SecretsManagerThrottled"], m[refresher.BacklogMetric])
	}
}

// Issue 18 item 1: due tokens the deadline leaves no time for are deferred — not an error,
// left due for the next sweep, counted in the Backlog metric.
func TestDeferredIsBacklogNotError(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotatingTTL(t, clock, time.Hour)
	var buf strings.Builder
	e := newEnv(t, clock.Now, func(o *refresher.Options) { o.Metrics = &teeBuilder{b: &buf} })
	const n = 3
	for i := 0; i < n; i++ {
		e.seed(fmt.Sprintf("d%d", i), rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	}
	e.scheduled()
	clock.Advance(34 * time.Minute)
	buf.Reset()
	// The harness's minimum start is 5 s (2 s persist budget + a 3 s provider call).
	rep, err := e.runWithin(5*time.Second, refresher.Request{Sweep: true})
	if err != nil || rep.Summary[refresher.OutcomeDeferred] != n {
		t.Fatalf("short sweep: got %v, error %v; want %d deferred and no error", rep.Summary, err, n)
	}
	if m := runMetrics(t, buf.String()); m[refresher.BacklogMetric] != float64(n) {
		t.Errorf("Backlog: got %v, want %d", m[refresher.BacklogMetric], n)
	}
	if rep := mustRun(t, e, refresher.Request{Sweep: true}); rep.Summary[refresher.OutcomeRefreshed] != n {
		t.Errorf("next sweep: got %v, want the %d deferred tokens refreshed", rep.Summary, n)
	}
}

// Issue 18 item 1 (seen in the load test): a refresh whose claim and read used up the time
// the provider call needed is deferred, not failed — nothing was sent, it stays due.
func TestNoTimeForProviderCallIsDeferred(t *testing.T) {
	clock := providersim.NewClock(time.Now())
	sim, cs := newRotatingTTL(t, clock, time.Hour)
	e, hs := newHookedEnv(t, clock.Now)
	e.seed("slow", rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
	e.scheduled()
	clock.Advance(34 * time.Minute)
	before := sim.Requests()
	hs.mu.Lock()
	hs.getDelay = 1500 * time.Millisecond
	hs.mu.Unlock()
	// 5.9 s: 5.4 s after the report reserve passes the 5 s minimum start; the slow read
	// leaves the lease less than the 2 s persist budget plus a 3 s provider call.
	rep, err := e.runWithin(5900*time.Millisecond, refresher.Request{Sweep: true})
	if err != nil || rep.Summary[refresher.OutcomeDeferred] != 1 || sim.Requests() != before {
		t.Fatalf("got %+v, error %v, %d provider requests; want deferred, no error, no request", rep.Tokens, err, sim.Requests()-before)
	}
	// The claim's in-flight record stays (only a commit removes it, docs/design.md §4), marked
	// unspent: nothing was sent, so it is no interrupted refresh.
	if _, rec := e.committed("slow"); rec.ConsecutiveFailures != 0 || rec.Interrupted() {
		t.Errorf("record: %d failures, inflight %+v; want none and not interrupted (nothing was sent)", rec.ConsecutiveFailures, rec.Inflight)
	}
	if rep := mustRun(t, e, refresher.Request{Sweep: true}); rep.Summary[refresher.OutcomeRefreshed] != 1 {
		t.Errorf("next sweep: got %v, want it refreshed", rep.Summary)
	}
}
