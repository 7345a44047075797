package ledger_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
)

// sealed stands for a value pkg/escrow sealed; the ledger stores it opaque.
var sealed = []byte{0x01, 0x00, 0x02, 0xde, 0xad, 0xbe, 0xef}

// claimed is a record "me" claimed at generation 4 for a refresh v1 → n5,
// with its lease ending at t0+1m.
func claimed(t *testing.T, e *env) {
	t.Helper()
	e.create(t, ledger.Record{Name: "acme", VersionID: "v1", Generation: 4, Status: ledger.StatusActive, NextDueAt: t0})
	if err := e.l.Claim(e.ctx, ledger.Claim{Name: "acme", Holder: "me", Generation: 4, From: "v1", To: "n5", LeaseUntil: t0.Add(time.Minute)}); err != nil {
		t.Fatalf("Claim: %v", err)
	}
}

func escrowWrite() ledger.EscrowWrite {
	return ledger.EscrowWrite{Name: "acme", Holder: "me", Generation: 4, To: "n5", Sealed: sealed, At: t0.Add(30 * time.Second)}
}

// takeOver lets the lease run out and has "next" claim the record to recover.
func takeOver(t *testing.T, e *env, to string) error {
	t.Helper()
	e.clock.Advance(2 * time.Minute)
	return e.l.Claim(e.ctx, ledger.Claim{Name: "acme", Holder: "next", Generation: 4, ExpectInflight: true, From: "v1", To: to, LeaseUntil: e.clock.Now().Add(time.Minute)})
}

func TestEscrow(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, e *env) // after the claim
		write   func(w ledger.EscrowWrite) ledger.EscrowWrite
		wantErr error
	}{
		{name: "holder inside its lease"},
		{name: "holder after its lease ended", setup: func(t *testing.T, e *env) {
			e.clock.Advance(time.Hour)
			// The lease is over: a renewal is refused, the escrow is not.
			if _, err := e.l.Renew(e.ctx, "acme", "me", 4, e.clock.Now().Add(time.Minute)); !errors.Is(err, ledger.ErrLeaseLost) {
				t.Fatalf("Renew after the lease: err = %v, want ErrLeaseLost", err)
			}
		}},
		{name: "wrong holder", write: func(w ledger.EscrowWrite) ledger.EscrowWrite { w.Holder = "other"; return w }, wantErr: ledger.ErrLeaseLost},
		{name: "wrong generation", write: func(w ledger.EscrowWrite) ledger.EscrowWrite { w.Generation = 3; return w }, wantErr: ledger.ErrLeaseLost},
		{name: "another refresh in flight", write: func(w ledger.EscrowWrite) ledger.EscrowWrite { w.To = "n6"; return w }, wantErr: ledger.ErrLeaseLost},
		{name: "after a successor's claim", setup: func(t *testing.T, e *env) {
			if err := takeOver(t, e, "n5"); err != nil {
				t.Fatalf("successor's Claim: %v", err)
			}
		}, wantErr: ledger.ErrLeaseLost},
		{name: "after the commit", setup: func(t *testing.T, e *env) {
			if _, err := e.l.Commit(e.ctx, ledger.Commit{Name: "acme", Holder: "me", FromGeneration: 4, From: "v1", To: "n5"}); err != nil {
				t.Fatalf("Commit: %v", err)
			}
		}, wantErr: ledger.ErrLeaseLost},
		{name: "after a release without the inflight", setup: func(t *testing.T, e *env) {
			if _, err := e.l.Release(e.ctx, ledger.Release{Name: "acme", Holder: "me"}); err != nil {
				t.Fatalf("Release: %v", err)
			}
		}, wantErr: ledger.ErrLeaseLost},
		{name: "no record", write: func(w ledger.EscrowWrite) ledger.EscrowWrite { w.Name = "missing"; return w }, wantErr: ledger.ErrLeaseLost},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			claimed(t, e)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			w := escrowWrite()
			if tc.write != nil {
				w = tc.write(w)
			}
			before := e.get(t, "acme")

			err := e.l.Escrow(e.ctx, w)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Escrow err = %v, want %v", err, tc.wantErr)
			}
			got := e.get(t, "acme")
			if tc.wantErr != nil {
				if !equalRecords(got, before) {
					t.Errorf("record changed by a refused escrow:\n got %+v\nwant %+v", got, before)
				}
				return
			}
			want := before
			want.Inflight = &ledger.Inflight{From: "v1", To: "n5", StartedAt: t0, Unpresented: true, Escrow: sealed, EscrowedAt: w.At}
			if !equalRecords(got, want) {
				t.Errorf("after Escrow:\n got %+v\nwant %+v", got, want)
			}
			in, ok := e.rawItem(t, "token#acme")["inflight"].(*types.AttributeValueMemberM)
			if !ok {
				t.Fatal("inflight is not a map")
			}
			if b, ok := in.Value["escrow"].(*types.AttributeValueMemberB); !ok || !bytes.Equal(b.Value, sealed) {
				t.Errorf("inflight.escrow = %#v, want binary %x", in.Value["escrow"], sealed)
			}
		})
	}
}

func TestEscrowRefusesEmpty(t *testing.T) {
	e := newEnv(t)
	claimed(t, e)
	for _, w := range []ledger.EscrowWrite{
		{Holder: "me", Generation: 4, To: "n5", Sealed: sealed},
		{Name: "acme", Generation: 4, To: "n5", Sealed: sealed},
		{Name: "acme", Holder: "me", Generation: 4, Sealed: sealed},
		{Name: "acme", Holder: "me", Generation: 4, To: "n5"},
	} {
		if err := e.l.Escrow(e.ctx, w); err == nil || errors.Is(err, ledger.ErrLeaseLost) {
			t.Errorf("Escrow(%+v) err = %v, want an argument error", w, err)
		}
	}
	if got := e.get(t, "acme").Inflight; got == nil || got.Escrow != nil {
		t.Errorf("inflight = %+v, want no escrow", got)
	}
}

// TestEscrowRetry: an escrow applied but unacknowledged, retried after a
// successor claimed, is recognised as applied; any other value is refused.
func TestEscrowRetry(t *testing.T) {
	e := newEnv(t)
	claimed(t, e)
	w := escrowWrite()
	if err := e.l.Escrow(e.ctx, w); err != nil {
		t.Fatalf("Escrow: %v", err)
	}
	if err := takeOver(t, e, "n5"); err != nil {
		t.Fatalf("successor's Claim: %v", err)
	}
	if err := e.l.Escrow(e.ctx, w); err != nil {
		t.Errorf("retried Escrow err = %v, want nil (already applied)", err)
	}
	other := w
	other.Sealed = []byte{0x01, 0x00, 0x01, 0x00}
	if err := e.l.Escrow(e.ctx, other); !errors.Is(err, ledger.ErrLeaseLost) {
		t.Errorf("Escrow of another value after the takeover err = %v, want ErrLeaseLost", err)
	}
	if got := e.get(t, "acme").Inflight; got == nil || !bytes.Equal(got.Escrow, sealed) {
		t.Errorf("inflight = %+v, want the first escrow kept", got)
	}
}

// TestEscrowSurvivesRecoveryClaim: the successor's recovery claim keeps the
// escrow (it is what the successor finishes the persist from), and a claim
// for another target version, which the escrow was not sealed for, is refused.
func TestEscrowSurvivesRecoveryClaim(t *testing.T) {
	t.Run("same target", func(t *testing.T) {
		e := newEnv(t)
		claimed(t, e)
		w := escrowWrite()
		if err := e.l.Escrow(e.ctx, w); err != nil {
			t.Fatalf("Escrow: %v", err)
		}
		if err := takeOver(t, e, "n5"); err != nil {
			t.Fatalf("successor's Claim: %v", err)
		}
		got := e.get(t, "acme")
		// started_at stays the first holder's; nothing was presented.
		want := &ledger.Inflight{From: "v1", To: "n5", StartedAt: t0, Unpresented: true, Escrow: sealed, EscrowedAt: w.At}
		if got.LeaseHolder != "next" || !equalRecords(ledger.Record{Inflight: got.Inflight}, ledger.Record{Inflight: want}) {
			t.Errorf("after the recovery claim: holder %q inflight %+v, want next, %+v", got.LeaseHolder, got.Inflight, want)
		}
	})
	t.Run("other target", func(t *testing.T) {
		e := newEnv(t)
		claimed(t, e)
		if err := e.l.Escrow(e.ctx, escrowWrite()); err != nil {
			t.Fatalf("Escrow: %v", err)
		}
		before := e.get(t, "acme")
		if err := takeOver(t, e, "n6"); !errors.Is(err, ledger.ErrLeaseHeld) {
			t.Fatalf("recovery Claim for n6 err = %v, want ErrLeaseHeld", err)
		}
		if got := e.get(t, "acme"); !equalRecords(got, before) {
			t.Errorf("record changed by a refused claim:\n got %+v\nwant %+v", got, before)
		}
	})
	t.Run("no escrow, other target", func(t *testing.T) {
		// Unchanged behaviour: without an escrow a recovery may name any target.
		e := newEnv(t)
		claimed(t, e)
		if err := takeOver(t, e, "n6"); err != nil {
			t.Fatalf("recovery Claim for n6: %v", err)
		}
		if got := e.get(t, "acme").Inflight; got == nil || got.To != "n6" || got.Escrow != nil {
			t.Errorf("inflight = %+v, want to n6 without escrow", got)
		}
	})
	t.Run("fresh claim refused", func(t *testing.T) {
		e := newEnv(t)
		claimed(t, e)
		if err := e.l.Escrow(e.ctx, escrowWrite()); err != nil {
			t.Fatalf("Escrow: %v", err)
		}
		e.clock.Advance(2 * time.Minute)
		err := e.l.Claim(e.ctx, ledger.Claim{Name: "acme", Holder: "next", Generation: 4, From: "v1", To: "n5", LeaseUntil: e.clock.Now().Add(time.Minute)})
		if !errors.Is(err, ledger.ErrLeaseHeld) {
			t.Fatalf("Claim without ExpectInflight err = %v, want ErrLeaseHeld", err)
		}
	})
}

// TestCommitClearsEscrow: the commit that settles the refresh removes the
// inflight and the escrow with it, whether the holder or its successor
// commits, and even after the holder's lease ended.
func TestCommitClearsEscrow(t *testing.T) {
	tests := []struct {
		name   string
		holder string
		setup  func(t *testing.T, e *env)
	}{
		{name: "holder", holder: "me"},
		{name: "holder after its lease ended", holder: "me", setup: func(t *testing.T, e *env) { e.clock.Advance(time.Hour) }},
		{name: "successor", holder: "next", setup: func(t *testing.T, e *env) {
			if err := takeOver(t, e, "n5"); err != nil {
				t.Fatalf("successor's Claim: %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			claimed(t, e)
			if err := e.l.Escrow(e.ctx, escrowWrite()); err != nil {
				t.Fatalf("Escrow: %v", err)
			}
			if tc.setup != nil {
				tc.setup(t, e)
			}
			stored, err := e.l.Commit(e.ctx, ledger.Commit{Name: "acme", Holder: tc.holder, FromGeneration: 4, From: "v1", To: "n5", Status: ledger.StatusActive})
			if err != nil {
				t.Fatalf("Commit: %v", err)
			}
			if stored.Inflight != nil || stored.VersionID != "n5" || stored.Generation != 5 {
				t.Errorf("Commit returned version %s generation %d inflight %+v, want n5, 5, none", stored.VersionID, stored.Generation, stored.Inflight)
			}
			if _, ok := e.rawItem(t, "token#acme")["inflight"]; ok {
				t.Error("inflight (with its escrow) kept after the commit")
			}
		})
	}
}

// TestReleaseKeepsEscrow: an escrowed inflight survives every release; only
// the commit removes it.
func TestReleaseKeepsEscrow(t *testing.T) {
	due := t0.Add(time.Hour)
	tests := []struct {
		name    string
		release ledger.Release
		expire  bool // the lease ended before the release
	}{
		{name: "plain", release: ledger.Release{Name: "acme", Holder: "me"}},
		{name: "failure counted", release: ledger.Release{Name: "acme", Holder: "me", Failure: "persist: LimitExceededException", NextDueAt: due}},
		{name: "lease ended", release: ledger.Release{Name: "acme", Holder: "me", Failure: "persist: throttled"}, expire: true},
		{name: "unspent asked", release: ledger.Release{Name: "acme", Holder: "me", Unspent: true, Failure: "persist: AccessDenied"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			claimed(t, e)
			w := escrowWrite()
			if err := e.l.Escrow(e.ctx, w); err != nil {
				t.Fatalf("Escrow: %v", err)
			}
			if tc.expire {
				e.clock.Advance(time.Hour)
			}
			for i := range 2 { // the second call is a retry and must change nothing
				rec, err := e.l.Release(e.ctx, tc.release)
				if err != nil {
					t.Fatalf("Release call %d: %v", i+1, err)
				}
				if rec.Inflight == nil || !bytes.Equal(rec.Inflight.Escrow, sealed) {
					t.Errorf("Release call %d returned inflight %+v, want the escrow", i+1, rec.Inflight)
				}
			}
			got := e.get(t, "acme")
			if got.LeaseHolder != "" || !got.LeaseUntil.IsZero() {
				t.Errorf("lease = %s until %v, want released", got.LeaseHolder, got.LeaseUntil)
			}
			want := &ledger.Inflight{From: "v1", To: "n5", StartedAt: t0, Unpresented: true, Escrow: sealed, EscrowedAt: w.At}
			if !equalRecords(ledger.Record{Inflight: got.Inflight}, ledger.Record{Inflight: want}) {
				t.Errorf("inflight = %+v, want %+v", got.Inflight, want)
			}
			wantFailures, wantLastErr := 0, ""
			if tc.release.Failure != "" {
				wantFailures, wantLastErr = 1, tc.release.Failure
			}
			if got.ConsecutiveFailures != wantFailures || got.LastError != wantLastErr {
				t.Errorf("failures = %d %q, want %d %q (counted once)", got.ConsecutiveFailures, got.LastError, wantFailures, wantLastErr)
			}
			wantDue := t0
			if !tc.release.NextDueAt.IsZero() {
				wantDue = tc.release.NextDueAt
			}
			if !got.NextDueAt.Equal(wantDue) {
				t.Errorf("next_due_at = %v, want %v", got.NextDueAt, wantDue)
			}
		})
	}

	t.Run("another holder", func(t *testing.T) {
		e := newEnv(t)
		claimed(t, e)
		if err := e.l.Escrow(e.ctx, escrowWrite()); err != nil {
			t.Fatalf("Escrow: %v", err)
		}
		if err := takeOver(t, e, "n5"); err != nil {
			t.Fatalf("successor's Claim: %v", err)
		}
		before := e.get(t, "acme")
		if _, err := e.l.Release(e.ctx, ledger.Release{Name: "acme", Holder: "me"}); !errors.Is(err, ledger.ErrLeaseLost) {
			t.Fatalf("Release by the old holder err = %v, want ErrLeaseLost", err)
		}
		if got := e.get(t, "acme"); !equalRecords(got, before) {
			t.Errorf("record changed by a refused release:\n got %+v\nwant %+v", got, before)
		}
	})
}

// TestEscrowReadPaths: Get, List and Due return the escrow, and Create
// stores one given in the record.
func TestEscrowReadPaths(t *testing.T) {
	e := newEnv(t)
	claimed(t, e) // "acme", due at t0
	w := escrowWrite()
	if err := e.l.Escrow(e.ctx, w); err != nil {
		t.Fatalf("Escrow: %v", err)
	}
	created := &ledger.Inflight{From: "u1", To: "u2", StartedAt: t0, Escrow: []byte{9, 8, 7}, EscrowedAt: t0.Add(time.Second)}
	e.create(t, ledger.Record{Name: "beta", VersionID: "u1", Generation: 1, Status: ledger.StatusActive, NextDueAt: t0, Inflight: created})
	want := map[string]*ledger.Inflight{
		"acme": {From: "v1", To: "n5", StartedAt: t0, Unpresented: true, Escrow: sealed, EscrowedAt: w.At},
		"beta": created,
	}
	check := func(op string, recs []ledger.Record) {
		t.Helper()
		if len(recs) != len(want) {
			t.Errorf("%s returned %d records, want %d", op, len(recs), len(want))
		}
		for _, r := range recs {
			if !equalRecords(ledger.Record{Inflight: r.Inflight}, ledger.Record{Inflight: want[r.Name]}) {
				t.Errorf("%s: %s inflight = %+v, want %+v", op, r.Name, r.Inflight, want[r.Name])
			}
		}
	}

	var got []ledger.Record
	for _, name := range []string{"acme", "beta"} {
		got = append(got, e.get(t, name))
	}
	check("Get", got)
	listed, err := e.l.List(e.ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	check("List", listed)
	due, err := e.l.Due(e.ctx, t0.Add(time.Minute))
	if err != nil {
		t.Fatalf("Due: %v", err)
	}
	check("Due", due)
}

// TestUnspentMark: a release may mark the refresh in flight unspent (it stays), an escrowed
// one is never marked, and the next claim clears the mark.
func TestUnspentMark(t *testing.T) {
	e := newEnv(t)
	claimed(t, e)
	rec, err := e.l.Release(e.ctx, ledger.Release{Name: "acme", Holder: "me", Unspent: true})
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	if rec.Inflight == nil || !rec.Inflight.Unspent || rec.Interrupted() {
		t.Fatalf("after an unspent release: inflight %+v interrupted %v, want kept, unspent, not interrupted", rec.Inflight, rec.Interrupted())
	}
	if err := takeOver(t, e, "n5"); err != nil {
		t.Fatalf("claim over the unspent refresh: %v", err)
	}
	if got := e.get(t, "acme"); got.Inflight == nil || got.Inflight.Unspent {
		t.Errorf("after the next claim: inflight %+v, want kept with the mark cleared", got.Inflight)
	}
	if err := e.l.Escrow(e.ctx, ledger.EscrowWrite{Name: "acme", Holder: "next", Generation: 4, To: "n5", Sealed: sealed}); err != nil {
		t.Fatalf("Escrow: %v", err)
	}
	rec, err = e.l.Release(e.ctx, ledger.Release{Name: "acme", Holder: "next", Unspent: true})
	if err != nil {
		t.Fatalf("Release of an escrowed refresh: %v", err)
	}
	if rec.Inflight == nil || rec.Inflight.Unspent || !rec.Interrupted() || len(rec.Inflight.Escrow) == 0 {
		t.Errorf("after releasing an escrowed refresh as unspent: inflight %+v, want the escrow kept, unmarked", rec.Inflight)
	}
}

// TestClaimLeaseOnly: a repair's claim takes the lease and records no refresh in flight.
func TestClaimLeaseOnly(t *testing.T) {
	e := newEnv(t)
	e.create(t, ledger.Record{Name: "acme", VersionID: "v1", Generation: 4, Status: ledger.StatusActive, NextDueAt: t0})
	c := ledger.Claim{Name: "acme", Holder: "me", Generation: 4, LeaseOnly: true, From: "v1", To: "n5", LeaseUntil: t0.Add(time.Minute)}
	for i := range 2 { // the second call is a retry
		if err := e.l.Claim(e.ctx, c); err != nil {
			t.Fatalf("Claim call %d: %v", i+1, err)
		}
	}
	if got := e.get(t, "acme"); got.LeaseHolder != "me" || got.Inflight != nil {
		t.Errorf("after a lease-only claim: holder %q inflight %+v, want me and none", got.LeaseHolder, got.Inflight)
	}
}
