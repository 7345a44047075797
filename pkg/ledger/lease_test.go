package ledger_test

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
)

const day = "2026-11-22"

func TestClaim(t *testing.T) {
	lease := t0.Add(time.Minute)
	base := ledger.Record{Name: "acme", VersionID: "v1", Generation: 4, Status: ledger.StatusActive}
	claim := ledger.Claim{Name: "acme", Holder: "me", Generation: 4, From: "v1", To: "n5", LeaseUntil: lease}

	withLease := func(holder string, until time.Time) ledger.Record {
		r := base
		r.LeaseHolder, r.LeaseUntil = holder, until
		return r
	}
	withInflight := func(r ledger.Record) ledger.Record {
		r.Inflight = &ledger.Inflight{From: "v1", To: "n5", StartedAt: t0.Add(-time.Hour)}
		return r
	}

	tests := []struct {
		name    string
		record  *ledger.Record // nil: no record
		claim   func(c ledger.Claim) ledger.Claim
		wantErr error // nil: claimed
	}{
		{name: "free lease", record: &base},
		{name: "held by another", record: ptr(withLease("other", t0.Add(time.Second))), wantErr: ledger.ErrLeaseHeld},
		{name: "held by another until exactly now", record: ptr(withLease("other", t0.Truncate(time.Millisecond))), wantErr: ledger.ErrLeaseHeld},
		{name: "expired lease taken over", record: ptr(withLease("other", t0.Add(-time.Millisecond)))},
		{name: "own lease", record: ptr(withLease("me", t0.Add(time.Second)))},
		{name: "generation moved", record: &base, claim: func(c ledger.Claim) ledger.Claim { c.Generation = 3; return c }, wantErr: ledger.ErrLeaseHeld},
		{name: "inflight present, not expected", record: ptr(withInflight(base)), wantErr: ledger.ErrLeaseHeld},
		{name: "inflight expected, absent", record: &base, claim: expectInflight, wantErr: ledger.ErrLeaseHeld},
		{name: "recovery: inflight expected and present, lease expired", record: ptr(withInflight(withLease("crashed", t0.Add(-time.Second)))), claim: expectInflight},
		{name: "recovery while the holder is alive", record: ptr(withInflight(withLease("alive", t0.Add(time.Second)))), claim: expectInflight, wantErr: ledger.ErrLeaseHeld},
		{name: "no record", wantErr: ledger.ErrLeaseHeld},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.record != nil {
				e.create(t, *tc.record)
			}
			c := claim
			if tc.claim != nil {
				c = tc.claim(c)
			}
			c.Quota = &ledger.QuotaReservation{Key: "k", Day: day, Limit: 10}
			var before ledger.Record
			if tc.record != nil {
				before = e.get(t, "acme")
			}

			err := e.l.Claim(e.ctx, c)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Claim err = %v, want %v", err, tc.wantErr)
			}
			used := e.quota(t, "k", day).Used
			if tc.wantErr != nil {
				if used != 0 {
					t.Errorf("quota used = %d after a refused claim, want 0 (both or neither)", used)
				}
				if tc.record != nil {
					if got := e.get(t, "acme"); !equalRecords(got, before) {
						t.Errorf("record changed by a refused claim:\n got %+v\nwant %+v", got, before)
					}
				}
				return
			}
			if used != 1 {
				t.Errorf("quota used = %d, want 1", used)
			}
			got := e.get(t, "acme")
			if got.LeaseHolder != "me" || !got.LeaseUntil.Equal(lease.Truncate(time.Millisecond)) {
				t.Errorf("lease = %s until %v, want me until %v", got.LeaseHolder, got.LeaseUntil, lease)
			}
			wantStart := t0 // a recovery keeps the first holder's start
			if tc.record != nil && tc.record.Inflight != nil {
				wantStart = tc.record.Inflight.StartedAt
			}
			if got.Inflight == nil || got.Inflight.From != c.From || got.Inflight.To != c.To || !got.Inflight.StartedAt.Equal(wantStart) {
				t.Errorf("inflight = %+v, want {%s %s %v}", got.Inflight, c.From, c.To, wantStart)
			}
			if got.Generation != 4 || got.VersionID != "v1" {
				t.Errorf("claim changed the pointer: generation %d version %s", got.Generation, got.VersionID)
			}
		})
	}
}

func expectInflight(c ledger.Claim) ledger.Claim { c.ExpectInflight = true; return c }

func ptr[T any](v T) *T { return &v }

func equalRecords(a, b ledger.Record) bool { return reflect.DeepEqual(a, b) }

// TestClaimRetry: a claim that was applied but whose response was lost is
// retried; the retry must recognise itself and not spend quota again.
func TestClaimRetry(t *testing.T) {
	e := newEnv(t)
	e.create(t, ledger.Record{Name: "acme", VersionID: "v1", Generation: 4})
	c := ledger.Claim{Name: "acme", Holder: "me", Generation: 4, From: "v1", To: "n5", LeaseUntil: t0.Add(time.Minute),
		Quota: &ledger.QuotaReservation{Key: "k", Day: day, Limit: 10}}
	if err := e.l.Claim(e.ctx, c); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	e.clock.Advance(time.Second)
	if err := e.l.Claim(e.ctx, c); err != nil {
		t.Fatalf("Claim retry: %v", err)
	}
	if used := e.quota(t, "k", day).Used; used != 1 {
		t.Errorf("quota used = %d after a retried claim, want 1", used)
	}
	// The same holder claiming a different refresh is not a retry.
	other := c
	other.To = "n5-other"
	if err := e.l.Claim(e.ctx, other); !errors.Is(err, ledger.ErrLeaseHeld) {
		t.Errorf("Claim(other target) err = %v, want ErrLeaseHeld", err)
	}
	// Once the lease has expired, the holder's own claim is no longer valid.
	e.clock.Advance(2 * time.Minute)
	if err := e.l.Claim(e.ctx, c); !errors.Is(err, ledger.ErrLeaseHeld) {
		t.Errorf("Claim retry after expiry err = %v, want ErrLeaseHeld", err)
	}
}

func TestClaimQuota(t *testing.T) {
	e := newEnv(t)
	q := &ledger.QuotaReservation{Key: "sahamati-prod", Day: day, Limit: 2}
	for _, n := range []string{"a", "b", "c"} {
		e.create(t, ledger.Record{Name: n, VersionID: "v1", Generation: 1})
	}
	claim := func(name string) error {
		return e.l.Claim(e.ctx, ledger.Claim{Name: name, Holder: "me", Generation: 1, From: "v1", To: "n2", LeaseUntil: t0.Add(time.Minute), Quota: q})
	}
	for _, n := range []string{"a", "b"} {
		if err := claim(n); err != nil {
			t.Fatalf("Claim(%s): %v", n, err)
		}
	}
	err := claim("c")
	if !errors.Is(err, ledger.ErrQuotaExhausted) {
		t.Fatalf("Claim(c) err = %v, want ErrQuotaExhausted", err)
	}
	if r := e.get(t, "c"); r.LeaseHolder != "" || r.Inflight != nil {
		t.Errorf("record c = %+v after a quota refusal, want no lease and no inflight", r)
	}
	if b := e.quota(t, q.Key, q.Day); b.Used != 2 || b.Limit != 2 {
		t.Errorf("bucket = %+v, want used 2 limit 2", b)
	}
	// Another day is another bucket.
	q.Day = "2026-11-23"
	if err := claim("c"); err != nil {
		t.Errorf("Claim(c) on the next day: %v", err)
	}
	// Without a reservation the bucket is not consulted.
	e.create(t, ledger.Record{Name: "d", VersionID: "v1", Generation: 1})
	q.Day = day
	if err := e.l.Claim(e.ctx, ledger.Claim{Name: "d", Holder: "me", Generation: 1, From: "v1", To: "n2", LeaseUntil: t0.Add(time.Minute)}); err != nil {
		t.Errorf("Claim(d) without quota: %v", err)
	}
	if b := e.quota(t, q.Key, day); b.Used != 2 {
		t.Errorf("used = %d after a claim without quota, want 2", b.Used)
	}
}

func TestClaimThrottled(t *testing.T) {
	e := newEnv(t)
	e.create(t, ledger.Record{Name: "acme", VersionID: "v1", Generation: 1})
	until := t0.Add(30 * time.Minute)
	if err := e.l.Throttle(e.ctx, "k", day, until); err != nil {
		t.Fatalf("Throttle: %v", err)
	}
	c := ledger.Claim{Name: "acme", Holder: "me", Generation: 1, From: "v1", To: "n2", LeaseUntil: t0.Add(time.Minute),
		Quota: &ledger.QuotaReservation{Key: "k", Day: day, Limit: 10}}
	err := e.l.Claim(e.ctx, c)
	var te *ledger.ThrottledError
	if !errors.As(err, &te) || !errors.Is(err, ledger.ErrThrottled) {
		t.Fatalf("Claim err = %v, want a *ThrottledError", err)
	}
	if !te.Until.Equal(until.Truncate(time.Millisecond)) {
		t.Errorf("Until = %v, want %v", te.Until, until)
	}
	if r := e.get(t, "acme"); r.LeaseHolder != "" {
		t.Errorf("lease taken while throttled: %+v", r)
	}
	// Throttled and the lease held: the lease is what the caller acts on.
	e.create(t, ledger.Record{Name: "held", VersionID: "v1", Generation: 1, LeaseHolder: "other", LeaseUntil: t0.Add(time.Hour)})
	held := c
	held.Name = "held"
	if err := e.l.Claim(e.ctx, held); !errors.Is(err, ledger.ErrLeaseHeld) {
		t.Errorf("Claim(held, throttled) err = %v, want ErrLeaseHeld", err)
	}

	e.clock.Advance(30 * time.Minute) // exactly at the end of the throttle
	c.LeaseUntil = e.clock.Now().Add(time.Minute)
	if err := e.l.Claim(e.ctx, c); err != nil {
		t.Fatalf("Claim after the throttle: %v", err)
	}
}

// TestClaimQuotaConcurrent: many invocations claim different tokens against
// one bucket at once; exactly limit of them get through.
func TestClaimQuotaConcurrent(t *testing.T) {
	e := newEnv(t)
	const tokens, limit = 16, 5
	for i := range tokens {
		e.create(t, ledger.Record{Name: fmt.Sprintf("t%02d", i), VersionID: "v1", Generation: 1})
	}
	results := runConcurrently(tokens, func(i int) error {
		return e.l.Claim(e.ctx, ledger.Claim{Name: fmt.Sprintf("t%02d", i), Holder: fmt.Sprintf("inv-%d", i), Generation: 1,
			From: "v1", To: "n2", LeaseUntil: t0.Add(time.Minute), Quota: &ledger.QuotaReservation{Key: "k", Day: day, Limit: limit}})
	})
	ok, exhausted := 0, 0
	for i, err := range results {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ledger.ErrQuotaExhausted):
			exhausted++
			if r := e.get(t, fmt.Sprintf("t%02d", i)); r.LeaseHolder != "" {
				t.Errorf("t%02d holds a lease without a quota unit", i)
			}
		default:
			t.Errorf("claim %d: unexpected error %v", i, err)
		}
	}
	if ok != limit || exhausted != tokens-limit {
		t.Errorf("claims: %d succeeded, %d exhausted; want %d and %d", ok, exhausted, limit, tokens-limit)
	}
	if used := e.quota(t, "k", day).Used; used != limit {
		t.Errorf("used = %d, want %d", used, limit)
	}
}

// TestClaimSameTokenConcurrent: many invocations race for one token's lease;
// exactly one wins.
func TestClaimSameTokenConcurrent(t *testing.T) {
	e := newEnv(t)
	e.create(t, ledger.Record{Name: "acme", VersionID: "v1", Generation: 1})
	const n = 12
	results := runConcurrently(n, func(i int) error {
		return e.l.Claim(e.ctx, ledger.Claim{Name: "acme", Holder: fmt.Sprintf("inv-%d", i), Generation: 1,
			From: "v1", To: "n2", LeaseUntil: t0.Add(time.Minute), Quota: &ledger.QuotaReservation{Key: "k", Day: day, Limit: 100}})
	})
	winner := -1
	for i, err := range results {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Errorf("claims %d and %d both won the lease", winner, i)
			}
			winner = i
		case !errors.Is(err, ledger.ErrLeaseHeld):
			t.Errorf("claim %d: unexpected error %v", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no claim won the lease")
	}
	if got := e.get(t, "acme").LeaseHolder; got != fmt.Sprintf("inv-%d", winner) {
		t.Errorf("lease holder = %s, want inv-%d", got, winner)
	}
	if used := e.quota(t, "k", day).Used; used != 1 {
		t.Errorf("used = %d, want 1 (losers spend nothing)", used)
	}
}

// runConcurrently starts n calls of f together and returns their errors by index.
func runConcurrently(n int, f func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = f(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

func TestReserveQuota(t *testing.T) {
	e := newEnv(t)
	q := ledger.QuotaReservation{Key: "k", Day: day, Limit: 3}
	if b := e.quota(t, "k", day); b != (ledger.Bucket{}) {
		t.Fatalf("missing bucket = %+v, want zero", b)
	}
	for i := range 3 {
		if err := e.l.ReserveQuota(e.ctx, q); err != nil {
			t.Fatalf("ReserveQuota %d: %v", i+1, err)
		}
	}
	if err := e.l.ReserveQuota(e.ctx, q); !errors.Is(err, ledger.ErrQuotaExhausted) {
		t.Fatalf("ReserveQuota over the limit err = %v, want ErrQuotaExhausted", err)
	}
	if b := e.quota(t, "k", day); b.Used != 3 || b.Limit != 3 {
		t.Errorf("bucket = %+v, want used 3 limit 3", b)
	}
	// The bucket's ttl is garbage collection two days out, in epoch seconds.
	item := e.rawItem(t, "quota#k#"+day)
	if got, want := numAttr(t, item, "ttl"), t0.Add(48*time.Hour).Unix(); got != want {
		t.Errorf("ttl = %d, want %d", got, want)
	}

	until := t0.Add(time.Hour)
	q2 := ledger.QuotaReservation{Key: "k2", Day: day, Limit: 3}
	if err := e.l.Throttle(e.ctx, "k2", day, until); err != nil {
		t.Fatalf("Throttle: %v", err)
	}
	var te *ledger.ThrottledError
	if err := e.l.ReserveQuota(e.ctx, q2); !errors.As(err, &te) || !te.Until.Equal(until.Truncate(time.Millisecond)) {
		t.Fatalf("ReserveQuota while throttled err = %v, want ThrottledError until %v", err, until)
	}
	if b := e.quota(t, "k2", day); b.Used != 0 {
		t.Errorf("used = %d while throttled, want 0", b.Used)
	}

	for _, bad := range []ledger.QuotaReservation{{Key: "k", Day: day, Limit: 0}, {Day: day, Limit: 1}, {Key: "k", Limit: 1}} {
		if err := e.l.ReserveQuota(e.ctx, bad); err == nil || errors.Is(err, ledger.ErrQuotaExhausted) {
			t.Errorf("ReserveQuota(%+v) err = %v, want a validation error", bad, err)
		}
	}
}

func TestThrottle(t *testing.T) {
	e := newEnv(t)
	steps := []struct {
		until time.Time
		want  time.Time
	}{
		{until: t0.Add(time.Hour), want: t0.Add(time.Hour)},
		{until: t0.Add(10 * time.Minute), want: t0.Add(time.Hour)}, // an earlier one never shortens it
		{until: t0.Add(2 * time.Hour), want: t0.Add(2 * time.Hour)},
	}
	for _, s := range steps {
		if err := e.l.Throttle(e.ctx, "k", day, s.until); err != nil {
			t.Fatalf("Throttle(%v): %v", s.until, err)
		}
		if got := e.quota(t, "k", day).ThrottledUntil; !got.Equal(s.want.Truncate(time.Millisecond)) {
			t.Errorf("after Throttle(%v) throttled_until = %v, want %v", s.until, got, s.want)
		}
	}
	item := e.rawItem(t, "quota#k#"+day)
	if got, want := numAttr(t, item, "ttl"), t0.Add(48*time.Hour).Unix(); got != want {
		t.Errorf("ttl = %d, want %d", got, want)
	}
	// A throttle beyond the retention keeps the bucket until it ends.
	far := t0.Add(72 * time.Hour)
	if err := e.l.Throttle(e.ctx, "k", day, far); err != nil {
		t.Fatalf("Throttle(far): %v", err)
	}
	if got := numAttr(t, e.rawItem(t, "quota#k#"+day), "ttl"); got != far.Unix() {
		t.Errorf("ttl = %d, want %d", got, far.Unix())
	}
}

func TestCommit(t *testing.T) {
	expires, due := t0.Add(24*time.Hour), t0.Add(12*time.Hour)
	claimed := ledger.Record{Name: "acme", VersionID: "v1", PrevVersionID: "v0", Generation: 4, Status: ledger.StatusActive,
		StatusReason: "old reason", LeaseHolder: "me", LeaseUntil: t0.Add(time.Minute),
		Inflight: &ledger.Inflight{From: "v1", To: "n5", StartedAt: t0}, ConsecutiveFailures: 3, LastError: "provider: 503", PublishedGeneration: 4}
	commit := ledger.Commit{Name: "acme", Holder: "me", FromGeneration: 4, From: "v1", To: "n5", Status: ledger.StatusActive, ExpiresAt: expires, NextDueAt: due}

	t.Run("commits and is idempotent", func(t *testing.T) {
		e := newEnv(t)
		e.create(t, claimed)
		for i := range 2 { // the second call is the retry of an applied but unacknowledged commit
			stored, err := e.l.Commit(e.ctx, commit)
			if err != nil {
				t.Fatalf("Commit call %d: %v", i+1, err)
			}
			if stored.VersionID != "n5" || stored.Generation != 5 || stored.LeaseHolder != "" {
				t.Errorf("Commit call %d returned %+v, want the stored record at n5, generation 5, no lease", i+1, stored)
			}
		}
		got := e.get(t, "acme")
		want := ledger.Record{Name: "acme", VersionID: "n5", PrevVersionID: "v1", Generation: 5, PublishedGeneration: 4,
			Status: ledger.StatusActive, ExpiresAt: expires, NextDueAt: due}
		if !equalRecords(got, want) {
			t.Errorf("after Commit:\n got %+v\nwant %+v", got, want)
		}
	})

	refused := []struct {
		name   string
		record func(r ledger.Record) ledger.Record
		commit func(c ledger.Commit) ledger.Commit
	}{
		{name: "stale holder: lease taken over", record: func(r ledger.Record) ledger.Record {
			r.LeaseHolder, r.LeaseUntil = "newcomer", t0.Add(time.Hour)
			return r
		}},
		{name: "stale holder: another commit moved the generation", record: func(r ledger.Record) ledger.Record {
			r.LeaseHolder, r.LeaseUntil, r.Inflight = "", time.Time{}, nil
			r.VersionID, r.PrevVersionID, r.Generation = "x5", "v1", 5
			return r
		}},
		{name: "generation does not match", commit: func(c ledger.Commit) ledger.Commit { c.FromGeneration = 3; return c }},
		{name: "lease released", record: func(r ledger.Record) ledger.Record {
			r.LeaseHolder, r.LeaseUntil = "", time.Time{}
			return r
		}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			r := claimed
			if tc.record != nil {
				r = tc.record(r)
			}
			e.create(t, r)
			before := e.get(t, "acme")
			c := commit
			if tc.commit != nil {
				c = tc.commit(c)
			}
			if _, err := e.l.Commit(e.ctx, c); !errors.Is(err, ledger.ErrLeaseLost) {
				t.Fatalf("Commit err = %v, want ErrLeaseLost", err)
			}
			if got := e.get(t, "acme"); !equalRecords(got, before) {
				t.Errorf("record changed by a refused commit:\n got %+v\nwant %+v", got, before)
			}
		})
	}

	t.Run("missing record", func(t *testing.T) {
		e := newEnv(t)
		if _, err := e.l.Commit(e.ctx, commit); !errors.Is(err, ledger.ErrLeaseLost) {
			t.Fatalf("Commit err = %v, want ErrLeaseLost", err)
		}
		if item := e.rawItem(t, "token#acme"); item != nil {
			t.Error("Commit created a record")
		}
	})

	t.Run("empty optional fields are removed", func(t *testing.T) {
		e := newEnv(t)
		e.create(t, claimed)
		c := commit
		c.ExpiresAt, c.NextDueAt, c.StatusReason, c.Status = time.Time{}, time.Time{}, "", ""
		if _, err := e.l.Commit(e.ctx, c); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		item := e.rawItem(t, "token#acme")
		for _, attr := range []string{"expires_at", "next_due_at", "status_reason", "lease_holder", "lease_until", "inflight", "last_error"} {
			if _, ok := item[attr]; ok {
				t.Errorf("attribute %s kept after Commit", attr)
			}
		}
		if got := e.get(t, "acme").Status; got != ledger.StatusActive {
			t.Errorf("status = %q, want the stored status kept when Commit.Status is empty", got)
		}
	})
}

func TestRelease(t *testing.T) {
	due := t0.Add(time.Hour)
	held := ledger.Record{Name: "acme", VersionID: "v1", Generation: 4, Status: ledger.StatusActive, LeaseHolder: "me",
		LeaseUntil: t0.Add(time.Minute), Inflight: &ledger.Inflight{From: "v1", To: "n5", StartedAt: t0}, ConsecutiveFailures: 1, LastError: "old"}

	tests := []struct {
		name         string
		release      ledger.Release
		wantFailures int
		wantLastErr  string
		wantInflight bool
		wantUnspent  bool
		wantDue      time.Time
	}{
		{name: "plain", release: ledger.Release{Name: "acme", Holder: "me"}, wantFailures: 1, wantLastErr: "old", wantInflight: true},
		{name: "failure counted", release: ledger.Release{Name: "acme", Holder: "me", Failure: "provider: 503 Service Unavailable", NextDueAt: due},
			wantFailures: 2, wantLastErr: "provider: 503 Service Unavailable", wantDue: due, wantInflight: true},
		{name: "unspent", release: ledger.Release{Name: "acme", Holder: "me", Unspent: true, Failure: "persist: timeout"},
			wantFailures: 2, wantLastErr: "persist: timeout", wantInflight: true, wantUnspent: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.create(t, held)
			for i := range 2 { // the second call is a retry and must change nothing
				if _, err := e.l.Release(e.ctx, tc.release); err != nil {
					t.Fatalf("Release call %d: %v", i+1, err)
				}
			}
			got := e.get(t, "acme")
			if got.LeaseHolder != "" || !got.LeaseUntil.IsZero() {
				t.Errorf("lease = %s until %v, want released", got.LeaseHolder, got.LeaseUntil)
			}
			if (got.Inflight != nil) != tc.wantInflight {
				t.Errorf("inflight = %+v, want present %v", got.Inflight, tc.wantInflight)
			}
			if got.Inflight != nil && got.Inflight.Unspent != tc.wantUnspent {
				t.Errorf("inflight unspent = %v, want %v", got.Inflight.Unspent, tc.wantUnspent)
			}
			if got.ConsecutiveFailures != tc.wantFailures || got.LastError != tc.wantLastErr {
				t.Errorf("failures = %d %q, want %d %q", got.ConsecutiveFailures, got.LastError, tc.wantFailures, tc.wantLastErr)
			}
			if !got.NextDueAt.Equal(tc.wantDue) {
				t.Errorf("next_due_at = %v, want %v", got.NextDueAt, tc.wantDue)
			}
			if got.Generation != 4 || got.VersionID != "v1" {
				t.Errorf("release moved the pointer: %+v", got)
			}
		})
	}

	lost := []struct {
		name    string
		record  ledger.Record
		release ledger.Release
	}{
		{name: "another holder has the lease", record: func() ledger.Record { r := held; r.LeaseHolder = "newcomer"; return r }(),
			release: ledger.Release{Name: "acme", Holder: "me", Failure: "x"}},
	}
	for _, tc := range lost {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.create(t, tc.record)
			before := e.get(t, "acme")
			if _, err := e.l.Release(e.ctx, tc.release); !errors.Is(err, ledger.ErrLeaseLost) {
				t.Fatalf("Release err = %v, want ErrLeaseLost", err)
			}
			if got := e.get(t, "acme"); !equalRecords(got, before) {
				t.Errorf("record changed by a refused release:\n got %+v\nwant %+v", got, before)
			}
		})
	}
}
