package refresher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretname"
)

// EnsureAlias is the Lambda alias consumers invoke: through it only {"ensure":[…]} is
// accepted, so a consumer's invoke permission cannot force a refresh (docs/design.md §3,
// triggers).
const EnsureAlias = "ensure"

// Handle is the Lambda handler: it parses the event, runs it and returns the report — with
// an error when any token failed, so alarms and retries see it (deferred is not a failure).
// A rerun is harmless.
func (e *Engine) Handle(ctx context.Context, event json.RawMessage) (*Report, error) {
	req, err := ParseRequest(event)
	if err == nil {
		err = checkAlias(ctx, req)
	}
	if err != nil {
		e.log.ErrorContext(ctx, "rejected event", "error", err.Error())
		return nil, err
	}
	return e.Run(ctx, req)
}

// checkAlias refuses anything but ensure through the ensure alias.
func checkAlias(ctx context.Context, req Request) error {
	lc, ok := lambdacontext.FromContext(ctx)
	if !ok || !strings.HasSuffix(lc.InvokedFunctionArn, ":"+EnsureAlias) {
		return nil
	}
	if len(req.Ensure) == 0 {
		return errors.New(`refresher: event: through the "ensure" alias only {"ensure":["name"]} is accepted`)
	}
	return nil
}

// job is one token of an invocation, with what the listing already told about it.
type job struct {
	name          string
	rec           *ledger.Record // from the listing; nil: read it (or none yet)
	recKnown      bool           // rec is what the table holds (nil = no record)
	current       string
	accessCurrent string
	accessListed  bool
	row           *Row // already decided (bad name, scheduled for deletion)
}

// Run executes one request.
func (e *Engine) Run(ctx context.Context, req Request) (*Report, error) {
	// Keep a moment after the last AWS call to return the report: a write retried up to the
	// Lambda deadline would get the invocation killed and its report lost.
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-reportReserve))
		defer cancel()
	}
	st := &runState{trigger: triggerOf(req), force: req.Force, quotaKeys: map[string]quotaSeen{}}
	report := &Report{Summary: map[string]int{}}
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		report.RequestID = lc.AwsRequestID
	}
	jobs, err := e.jobs(ctx, st.trigger, req)
	if err != nil {
		e.log.ErrorContext(ctx, "listing tokens failed", "trigger", st.trigger.String(), "error", err.Error())
		return nil, err
	}

	rows := make([]Row, len(jobs))
	sem := make(chan struct{}, e.opts.Concurrency)
	var wg sync.WaitGroup
	for i := range jobs {
		if jobs[i].row != nil {
			rows[i] = *jobs[i].row
			e.finishRow(ctx, st, e.newTokenRun(ctx, st, jobs[i].name), &rows[i])
			continue
		}
		sem <- struct{}{}
		if ctx.Err() != nil {
			// The deadline came while this token waited for a worker: left due for the next run.
			<-sem
			rows[i] = Row{Outcome: OutcomeDeferred, Error: "not started: the invocation's deadline came first; the next run refreshes it"}
			e.finishRow(ctx, st, e.newTokenRun(ctx, st, jobs[i].name), &rows[i])
			continue
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			rows[i] = e.runToken(ctx, st, jobs[i])
		}(i)
	}
	wg.Wait()
	sort.SliceStable(rows, func(a, b int) bool { return rows[a].Name < rows[b].Name })
	report.Tokens = rows
	for _, r := range rows {
		report.Summary[r.Outcome]++
	}
	e.emitRun(ctx, st, report.Summary[OutcomeDeferred])
	e.log.InfoContext(ctx, "invocation done", "trigger", st.trigger.String(), "tokens", len(rows), "summary", report.Summary)
	// Bounded (invocation.MaxErrorBytes): the rows are in the report and each token's log line.
	if msg := report.FailureMessage(); msg != "" {
		return report, errors.New("refresher: " + msg)
	}
	return report, nil
}

func triggerOf(req Request) trigger {
	switch {
	case req.Sweep:
		return triggerSweep
	case len(req.Ensure) > 0:
		return triggerEnsure
	case len(req.Tokens) > 0:
		return triggerOperator
	}
	return triggerReconcile
}

// jobs gathers the tokens of one invocation with as few calls as it can: a reconcile lists
// secrets and records once (no secret is read for a token that is not due); a sweep reads
// only the sparse index; ensure and operator runs name their tokens.
func (e *Engine) jobs(ctx context.Context, tr trigger, req Request) ([]job, error) {
	switch tr {
	case triggerSweep:
		recs, err := e.opts.Ledger.Due(ctx, e.now())
		if err != nil {
			return nil, fmt.Errorf("refresher: sweep: %w", err)
		}
		jobs := make([]job, 0, len(recs))
		for i := range recs {
			jobs = append(jobs, job{name: recs[i].Name, rec: &recs[i], recKnown: true})
		}
		return jobs, nil
	case triggerEnsure:
		return namedJobs(req.Ensure), nil
	case triggerOperator:
		return namedJobs(req.Tokens), nil
	}
	entries, err := e.opts.Secrets.Entries(ctx, e.opts.Prefix)
	if err != nil {
		return nil, fmt.Errorf("refresher: list tokens: %w", err)
	}
	recs, err := e.opts.Ledger.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("refresher: list records: %w", err)
	}
	byName := make(map[string]*ledger.Record, len(recs))
	for i := range recs {
		byName[recs[i].Name] = &recs[i]
	}
	access := map[string]string{}
	for _, en := range entries {
		if n, ok := secretname.TokenOfAccess(e.opts.Prefix, en.Name); ok && en.DeletedDate.IsZero() {
			access[n] = en.Current
		}
	}
	var jobs []job
	for _, en := range entries {
		name, ok := secretname.TokenOfPrivate(e.opts.Prefix, en.Name)
		if !ok {
			continue
		}
		j := job{name: name, rec: byName[name], recKnown: true, current: en.Current, accessCurrent: access[name], accessListed: true}
		switch {
		case !invocation.ValidName(name):
			j.row = &Row{Name: name, Outcome: OutcomeInvalidConfig, Error: fmt.Sprintf("secret %s: the part after the prefix is not a valid token name (letters, digits, . _ @ + = / -)", en.Name)}
		case !en.DeletedDate.IsZero():
			j.row = &Row{Name: name, Outcome: OutcomeInvalidConfig, Error: "private secret is scheduled for deletion on " + en.DeletedDate.UTC().Format(time.RFC3339) + "; not refreshed (restore it to keep the token)"}
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

func namedJobs(names []string) []job {
	jobs := make([]job, len(names))
	for i, n := range names {
		jobs[i] = job{name: n}
	}
	return jobs
}
