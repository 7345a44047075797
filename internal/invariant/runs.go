package invariant

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// Runs observes a test's runs for I5 and for I3's "never publishes an expired access
// token as active": Begin before each run (engine Run or function invoke) snapshots every
// record's generation and every access secret's current version, End after it does it
// again and keeps the report. Safe for concurrent runs.
type Runs struct {
	ledger *ledger.Ledger
	store  *secretstore.Store
	prefix string
	now    func() time.Time

	mu   sync.Mutex
	done []*Run
	errs []error
}

// NewRuns observes runs against the state table l and the secrets under prefix in s
// (both read directly, not through a fault proxy); now is the engine's clock (nil: wall).
func NewRuns(l *ledger.Ledger, s *secretstore.Store, prefix string, now func() time.Time) *Runs {
	if now == nil {
		now = time.Now
	}
	return &Runs{ledger: l, store: s, prefix: prefix, now: now}
}

// Run is one observed run.
type Run struct {
	runs          *Runs
	seq           int
	start         time.Time
	before, after map[string]snap
	report        *refresher.Report
}

type snap struct {
	generation int64
	accessID   string
	access     token.Access
}

// Begin snapshots the state before a run, which starts now by the Runs' clock.
func (r *Runs) Begin() *Run { return r.BeginAt(r.now()) }

// BeginAt snapshots the state before a run that starts at start by the engine's clock.
func (r *Runs) BeginAt(start time.Time) *Run {
	run := &Run{runs: r, start: start}
	run.before = r.snapshot()
	return run
}

// End snapshots the state after the run and keeps its report (nil when the run gave none:
// killed, timed out, or a function error, whose payload Lambda drops).
func (run *Run) End(rep *refresher.Report) {
	run.after = run.runs.snapshot()
	run.report = rep
	r := run.runs
	r.mu.Lock()
	run.seq = len(r.done)
	r.done = append(r.done, run)
	r.mu.Unlock()
}

func (r *Runs) snapshot() map[string]snap {
	ctx := context.Background()
	recs, err := r.ledger.List(ctx)
	if err != nil {
		r.fail(err)
		return nil
	}
	m := make(map[string]snap, len(recs))
	for _, rec := range recs {
		s := snap{generation: rec.Generation}
		v, err := r.store.GetCurrent(ctx, r.prefix+"access/"+rec.Name)
		switch {
		case errors.Is(err, secretstore.ErrNotFound):
		case err != nil:
			r.fail(err)
		default:
			s.accessID = v.ID
			if a, err := token.ParseAccess([]byte(v.Value.Reveal())); err == nil {
				s.access = a
			}
		}
		m[rec.Name] = s
	}
	return m
}

func (r *Runs) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, fmt.Errorf("invariant: observe run: %w", err))
	r.mu.Unlock()
}

// Reports returns the reports of the runs observed so far, in the order they ended.
func (r *Runs) Reports() []*refresher.Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*refresher.Report, 0, len(r.done))
	for _, run := range r.done {
		out = append(out, run.report)
	}
	return out
}

// violations checks I5 per run and over all runs, and I3 for what each run published.
func (r *Runs) violations() []Violation {
	r.mu.Lock()
	defer r.mu.Unlock()
	var vs []Violation
	for _, err := range r.errs {
		vs = append(vs, Violation{ID: RefreshedIsCommitted, Detail: err.Error()})
	}
	refreshed := map[string]int{}
	first, last := map[string]int64{}, map[string]int64{}
	for _, run := range r.done {
		for name, s := range run.after {
			last[name] = max(last[name], s.generation)
			// A record the run did not find yet started at generation 0.
			if g, ok := first[name]; !ok || run.before[name].generation < g {
				first[name] = run.before[name].generation
			}
		}
		if run.report != nil {
			for _, row := range run.report.Tokens {
				if row.Outcome != refresher.OutcomeRefreshed {
					continue
				}
				refreshed[row.Name]++
				// Generations only grow, so a commit by this run shows however others interleave.
				if run.after[row.Name].generation <= run.before[row.Name].generation {
					vs = append(vs, Violation{ID: RefreshedIsCommitted, Token: row.Name, Detail: fmt.Sprintf(
						"run %d reported refreshed but the record stayed at generation %d", run.seq, run.after[row.Name].generation)})
				}
			}
		}
		for name, a := range run.after {
			b := run.before[name]
			if a.accessID == "" || a.accessID == b.accessID || a.access.Status != token.StatusActive || a.access.ExpiresAt.IsZero() {
				continue
			}
			if !a.access.ExpiresAt.After(run.start) {
				vs = append(vs, Violation{ID: AccessForward, Token: name, Detail: fmt.Sprintf(
					"run %d published generation %d as active with an access token that expired at %s, before the run started at %s",
					run.seq, a.access.Generation, a.access.ExpiresAt.Format(time.RFC3339), run.start.Format(time.RFC3339))})
			}
			if a.access.Generation < b.access.Generation {
				vs = append(vs, Violation{ID: AccessForward, Token: name, Detail: fmt.Sprintf(
					"run %d moved the access secret back from generation %d to %d", run.seq, b.access.Generation, a.access.Generation)})
			}
		}
	}
	for name, n := range refreshed {
		if got := last[name] - first[name]; int64(n) > got {
			vs = append(vs, Violation{ID: RefreshedIsCommitted, Token: name, Detail: fmt.Sprintf(
				"%d runs reported refreshed but the record moved %d generations", n, got)})
		}
	}
	return vs
}
