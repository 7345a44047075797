package ledger_test

import (
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
)

// The sweep reads only the sparse index: records due before the horizon, never one that is
// not due, needs a person, or has no due time.
func TestDue(t *testing.T) {
	e := newEnv(t)
	recs := []ledger.Record{
		{Name: "due-now", VersionID: "v", Status: ledger.StatusActive, NextDueAt: t0.Add(-time.Minute)},
		{Name: "due-soon", VersionID: "v", Status: ledger.StatusActive, NextDueAt: t0.Add(4 * time.Minute)},
		{Name: "later", VersionID: "v", Status: ledger.StatusActive, NextDueAt: t0.Add(time.Hour)},
		{Name: "reauth", VersionID: "v", Status: ledger.StatusNeedsReauth, NextDueAt: t0.Add(-time.Hour)},
		{Name: "no-due-time", VersionID: "v", Status: ledger.StatusActive},
	}
	for _, r := range recs {
		e.create(t, r)
	}
	got, err := e.l.Due(e.ctx, t0.Add(5*time.Minute))
	if err != nil {
		t.Fatalf("Due: %v", err)
	}
	var names []string
	for _, r := range got {
		names = append(names, r.Name)
	}
	sort.Strings(names)
	if want := []string{"due-now", "due-soon"}; len(names) != len(want) || names[0] != want[0] || names[1] != want[1] {
		t.Errorf("Due = %v, want %v", names, want)
	}

	// A commit to needs_reauth takes the record out of the index; one with a due time puts it back.
	e.create(t, ledger.Record{Name: "flip", VersionID: "v1", Generation: 1, Status: ledger.StatusActive, NextDueAt: t0, LeaseHolder: "me", LeaseUntil: t0.Add(time.Minute)})
	if _, err := e.l.Commit(e.ctx, ledger.Commit{Name: "flip", Holder: "me", FromGeneration: 1, From: "v1", To: "v2", Status: ledger.StatusNeedsReauth, NextDueAt: t0}); err != nil {
		t.Fatal(err)
	}
	got, err = e.l.Due(e.ctx, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range got {
		if r.Name == "flip" {
			t.Errorf("a needs_reauth record is in the sweep index: %+v", r)
		}
	}
}

// A holder renews only while it holds the lease at its generation; after a renewal fails it
// must stop writing (docs/design.md §4, "What must never happen").
func TestRenew(t *testing.T) {
	held := ledger.Record{Name: "acme", VersionID: "v1", Generation: 4, Status: ledger.StatusActive, LeaseHolder: "me", LeaseUntil: t0.Add(time.Minute)}
	tests := []struct {
		name    string
		record  func(ledger.Record) ledger.Record
		holder  string
		gen     int64
		wantErr error
	}{
		{name: "holder renews", holder: "me", gen: 4},
		{name: "another holder", holder: "other", gen: 4, wantErr: ledger.ErrLeaseLost},
		{name: "generation moved", holder: "me", gen: 3, wantErr: ledger.ErrLeaseLost},
		{name: "lease already ended", holder: "me", gen: 4, wantErr: ledger.ErrLeaseLost,
			record: func(r ledger.Record) ledger.Record { r.LeaseUntil = t0.Add(-time.Second); return r }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			r := held
			if tc.record != nil {
				r = tc.record(r)
			}
			e.create(t, r)
			until := t0.Add(5 * time.Minute)
			got, err := e.l.Renew(e.ctx, "acme", tc.holder, tc.gen, until)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Renew err = %v, want %v", err, tc.wantErr)
			}
			stored := e.get(t, "acme")
			if tc.wantErr != nil {
				if !stored.LeaseUntil.Equal(r.LeaseUntil.Truncate(time.Millisecond)) {
					t.Errorf("lease_until = %v after a refused renewal, want %v", stored.LeaseUntil, r.LeaseUntil)
				}
				return
			}
			if !got.LeaseUntil.Equal(until.Truncate(time.Millisecond)) || !stored.LeaseUntil.Equal(got.LeaseUntil) {
				t.Errorf("lease_until returned %v stored %v, want %v", got.LeaseUntil, stored.LeaseUntil, until)
			}
		})
	}
}

// Release{Published} records the publish only at the record's generation: a slow holder
// cannot mark an older generation published over a newer commit.
func TestReleasePublished(t *testing.T) {
	e := newEnv(t)
	e.create(t, ledger.Record{Name: "acme", VersionID: "v5", Generation: 5, PublishedGeneration: 4, Status: ledger.StatusActive, LeaseHolder: "me", LeaseUntil: t0.Add(time.Minute)})
	if _, err := e.l.Release(e.ctx, ledger.Release{Name: "acme", Holder: "me", Published: 4}); !errors.Is(err, ledger.ErrLeaseLost) {
		t.Fatalf("Release(Published: 4) at generation 5: err = %v, want ErrLeaseLost", err)
	}
	got, err := e.l.Release(e.ctx, ledger.Release{Name: "acme", Holder: "me", Published: 5})
	if err != nil {
		t.Fatalf("Release(Published: 5): %v", err)
	}
	if got.PublishedGeneration != 5 || got.LeaseHolder != "" {
		t.Errorf("after Release(Published: 5): published %d holder %q, want 5 and none", got.PublishedGeneration, got.LeaseHolder)
	}
}

// A failed publish puts the record back one published generation and into the sweep index
// now; a record that moved on is left alone.
func TestMarkUnpublished(t *testing.T) {
	e := newEnv(t)
	e.create(t, ledger.Record{Name: "acme", VersionID: "v5", Generation: 5, PublishedGeneration: 5, Status: ledger.StatusActive, NextDueAt: t0.Add(time.Hour)})
	if err := e.l.MarkUnpublished(e.ctx, "acme", 4); err != nil {
		t.Fatalf("MarkUnpublished(4) at generation 5: %v", err)
	}
	if got := e.get(t, "acme").PublishedGeneration; got != 5 {
		t.Errorf("a stale MarkUnpublished moved published_generation to %d, want 5", got)
	}
	if err := e.l.MarkUnpublished(e.ctx, "acme", 5); err != nil {
		t.Fatal(err)
	}
	got := e.get(t, "acme")
	if got.PublishedGeneration != 4 || !got.NextDueAt.Equal(t0.Add(time.Hour).Truncate(time.Nanosecond)) {
		t.Errorf("after MarkUnpublished(5): published %d next_due_at %v, want 4 and unchanged", got.PublishedGeneration, got.NextDueAt)
	}
	due, err := e.l.Due(e.ctx, t0)
	if err != nil || len(due) != 1 || due[0].Name != "acme" {
		t.Errorf("Due(now) = %v %v, want acme (in the sweep index now)", due, err)
	}
}
