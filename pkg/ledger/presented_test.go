package ledger_test

import (
	"errors"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
)

func presenting(at time.Time) ledger.Presenting {
	return ledger.Presenting{Name: "acme", Holder: "me", Generation: 4, To: "n5", At: at}
}

// A refresh's presentation mark: what recovery reads to know whether the old refresh
// token may have reached the provider, and since when (docs/design.md §4).
func TestMarkPresented(t *testing.T) {
	first, later := t0.Add(10*time.Second), t0.Add(40*time.Second)
	tests := []struct {
		name    string
		steps   func(t *testing.T, e *env) error // after the claim; the last error is checked
		wantErr error
		wantOK  bool      // Presented's answer afterwards
		wantAt  time.Time // and its time
	}{
		{name: "claimed, nothing sent", steps: func(t *testing.T, e *env) error { return nil }},
		{name: "marked", steps: func(t *testing.T, e *env) error {
			return e.l.MarkPresented(e.ctx, presenting(first))
		}, wantOK: true, wantAt: first},
		{name: "a second mark keeps the first time", steps: func(t *testing.T, e *env) error {
			if err := e.l.MarkPresented(e.ctx, presenting(first)); err != nil {
				return err
			}
			return e.l.MarkPresented(e.ctx, presenting(later))
		}, wantOK: true, wantAt: first},
		{name: "another holder may not mark", steps: func(t *testing.T, e *env) error {
			p := presenting(first)
			p.Holder = "other"
			return e.l.MarkPresented(e.ctx, p)
		}, wantErr: ledger.ErrLeaseLost},
		{name: "another in-flight target may not mark", steps: func(t *testing.T, e *env) error {
			p := presenting(first)
			p.To = "n6"
			return e.l.MarkPresented(e.ctx, p)
		}, wantErr: ledger.ErrLeaseLost},
		{name: "a successor's claim keeps the mark", steps: func(t *testing.T, e *env) error {
			if err := e.l.MarkPresented(e.ctx, presenting(first)); err != nil {
				return err
			}
			return takeOver(t, e, "n5")
		}, wantOK: true, wantAt: first},
		{name: "a successor marks after a holder that never sent", steps: func(t *testing.T, e *env) error {
			if err := takeOver(t, e, "n5"); err != nil {
				return err
			}
			p := presenting(later)
			p.Holder = "next"
			return e.l.MarkPresented(e.ctx, p)
		}, wantOK: true, wantAt: later},
		{name: "released as unspent, the mark goes", steps: func(t *testing.T, e *env) error {
			if err := e.l.MarkPresented(e.ctx, presenting(first)); err != nil {
				return err
			}
			_, err := e.l.Release(e.ctx, ledger.Release{Name: "acme", Holder: "me", Unspent: true})
			return err
		}},
		{name: "released maybe spent, the mark stays", steps: func(t *testing.T, e *env) error {
			if err := e.l.MarkPresented(e.ctx, presenting(first)); err != nil {
				return err
			}
			_, err := e.l.Release(e.ctx, ledger.Release{Name: "acme", Holder: "me"})
			return err
		}, wantOK: true, wantAt: first},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			claimed(t, e)
			if err := tc.steps(t, e); !errors.Is(err, tc.wantErr) {
				t.Fatalf("got err %v, want %v", err, tc.wantErr)
			}
			rec, err := e.l.Get(e.ctx, "acme")
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			at, ok := rec.Inflight.Presented()
			if ok != tc.wantOK || !at.Equal(tc.wantAt) {
				t.Errorf("Presented: got (%s, %v), want (%s, %v)", at, ok, tc.wantAt, tc.wantOK)
			}
		})
	}
}

// A record written before presentations were marked counts as presented when its
// refresh started, so an upgrade never turns an earlier holder's call into "never sent".
func TestPresentedLegacyRecord(t *testing.T) {
	e := newEnv(t)
	e.create(t, ledger.Record{Name: "acme", VersionID: "v1", Generation: 4, Status: ledger.StatusActive,
		Inflight: &ledger.Inflight{From: "v1", To: "n5", StartedAt: t0}})
	if err := takeOver(t, e, "n5"); err != nil {
		t.Fatalf("recovery claim: %v", err)
	}
	rec, err := e.l.Get(e.ctx, "acme")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if at, ok := rec.Inflight.Presented(); !ok || !at.Equal(t0) {
		t.Errorf("Presented: got (%s, %v), want (%s, true): the first holder's start", at, ok, t0)
	}
}

// The holder that presented the token may still save what the provider gave it after a
// successor claimed (until a commit moves the generation), and may take back a mark for a
// request it never sent while no other lease is live.
func TestPresentingHolderAfterATakeOver(t *testing.T) {
	later := t0.Add(3 * time.Minute)
	tests := []struct {
		name    string
		steps   func(t *testing.T, e *env) error // after the claim, the mark and the successor's claim; the last error is checked
		wantErr error
	}{
		{name: "escrow by the presenting holder", steps: func(t *testing.T, e *env) error {
			return e.l.Escrow(e.ctx, escrowWrite())
		}},
		{name: "escrow by another holder", steps: func(t *testing.T, e *env) error {
			w := escrowWrite()
			w.Holder = "other"
			return e.l.Escrow(e.ctx, w)
		}, wantErr: ledger.ErrLeaseLost},
		{name: "escrow after the successor committed", steps: func(t *testing.T, e *env) error {
			if _, err := e.l.Commit(e.ctx, ledger.Commit{Name: "acme", Holder: "next", FromGeneration: 4, From: "v1", To: "n5"}); err != nil {
				t.Fatalf("successor's Commit: %v", err)
			}
			return e.l.Escrow(e.ctx, escrowWrite())
		}, wantErr: ledger.ErrLeaseLost},
		{name: "unmark while the successor's lease is live", steps: func(t *testing.T, e *env) error {
			return e.l.Unmark(e.ctx, "acme", "me", 4, "n5")
		}, wantErr: ledger.ErrLeaseLost},
		{name: "unmark after the successor released", steps: func(t *testing.T, e *env) error {
			if _, err := e.l.Release(e.ctx, ledger.Release{Name: "acme", Holder: "next"}); err != nil {
				t.Fatalf("successor's Release: %v", err)
			}
			return e.l.Unmark(e.ctx, "acme", "me", 4, "n5")
		}},
		{name: "unmark by another holder", steps: func(t *testing.T, e *env) error {
			if _, err := e.l.Release(e.ctx, ledger.Release{Name: "acme", Holder: "next"}); err != nil {
				t.Fatalf("successor's Release: %v", err)
			}
			return e.l.Unmark(e.ctx, "acme", "next", 4, "n5")
		}, wantErr: ledger.ErrLeaseLost},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			claimed(t, e)
			p := presenting(t0.Add(10 * time.Second))
			p.Until = later
			if err := e.l.MarkPresented(e.ctx, p); err != nil {
				t.Fatalf("mark: %v", err)
			}
			if err := takeOver(t, e, "n5"); err != nil {
				t.Fatalf("successor's claim: %v", err)
			}
			rec, err := e.l.Get(e.ctx, "acme")
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if rec.Inflight.PresentedBy != "me" || !rec.Inflight.HolderUntil.Equal(later.Truncate(time.Millisecond)) {
				t.Fatalf("after the successor's claim: presented by %q until %s, want me until %s", rec.Inflight.PresentedBy, rec.Inflight.HolderUntil, later)
			}
			if err := tc.steps(t, e); !errors.Is(err, tc.wantErr) {
				t.Errorf("got err %v, want %v", err, tc.wantErr)
			}
		})
	}
}
