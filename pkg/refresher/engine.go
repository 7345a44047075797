// Package refresher is the engine: for each token it claims a lease and a quota unit, reads
// the committed private version, calls the provider, persists the new version first,
// commits the pointer, moves AWSCURRENT and publishes the access secret (DESIGN.md §3).
package refresher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// Outcomes, one per token per invocation (DESIGN.md §4).
const (
	OutcomeRefreshed      = "refreshed"
	OutcomeNotDue         = "not_due"
	OutcomeLeaseHeld      = "lease_held"
	OutcomeQuotaExhausted = "quota_exhausted"
	OutcomeThrottled      = "throttled"
	OutcomeNeedsReauth    = "needs_reauth"
	OutcomeInvalidConfig  = "invalid_config"
	OutcomeFailed         = "failed"
)

// reportReserve is the time kept at the end of an invocation to return the report.
const reportReserve = 500 * time.Millisecond

// PendingStage is the custom label a new private version is written under before the
// commit; AWSPENDING is left to Secrets Manager rotation, which we do not use.
const PendingStage = "TR_PENDING"

// secretStore is what the engine needs from Secrets Manager (pkg/secretstore).
type secretStore interface {
	List(ctx context.Context, prefix string) ([]string, error)
	GetVersion(ctx context.Context, name, versionID string) (secretstore.Version, error)
	GetCurrent(ctx context.Context, name string) (secretstore.Version, error)
	PutPending(ctx context.Context, name string, value token.Secret, versionID, stage string) error
	MoveCurrent(ctx context.Context, name, to, from string) error
	Publish(ctx context.Context, name string, value token.Secret, clientToken string) error
}

// stateTable is what the engine needs from DynamoDB (pkg/ledger).
type stateTable interface {
	Get(ctx context.Context, name string) (ledger.Record, error)
	Create(ctx context.Context, r ledger.Record) error
	Claim(ctx context.Context, c ledger.Claim) error
	ReserveQuota(ctx context.Context, q ledger.QuotaReservation) error
	Throttle(ctx context.Context, key, day string, until time.Time) error
	Quota(ctx context.Context, key, day string) (ledger.Bucket, error)
	Commit(ctx context.Context, c ledger.Commit) error
	Release(ctx context.Context, r ledger.Release) error
	MarkPublished(ctx context.Context, name string, generation int64) error
}

// Options configures an Engine. Zero durations take the defaults noted.
type Options struct {
	Secrets secretStore
	Ledger  stateTable
	Prefix  string // default "token-refresher/"

	ScheduleInterval time.Duration // default 12h; the default refresh margin is this plus 1h
	Concurrency      int           // tokens refreshed at once; default 8

	HTTPClient      *http.Client
	ProviderTimeout time.Duration // one provider request; default 10s
	Attempts        int           // provider attempts per refresh (transient failures); default 3
	Backoff         time.Duration // first retry delay, doubled each time; default 500ms
	PersistBudget   time.Duration // time kept for persist+commit+label+publish; default 10s
	ClockSkew       time.Duration // added to every lease; default 5s

	Logger  *slog.Logger // default: discard
	Metrics io.Writer    // CloudWatch EMF lines; default os.Stdout
	Now     func() time.Time
}

// Engine runs invocations. It is safe for concurrent use.
type Engine struct {
	opts    Options
	log     *slog.Logger
	metrics *metricWriter
	now     func() time.Time
}

// New checks the options and fills defaults.
func New(opts Options) (*Engine, error) {
	if opts.Secrets == nil || opts.Ledger == nil {
		return nil, errors.New("refresher: Secrets and Ledger are required")
	}
	if opts.Prefix == "" {
		opts.Prefix = "token-refresher/"
	}
	if opts.ScheduleInterval <= 0 {
		opts.ScheduleInterval = 12 * time.Hour
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 8
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	if opts.ProviderTimeout <= 0 {
		opts.ProviderTimeout = 10 * time.Second
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 3
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 500 * time.Millisecond
	}
	if opts.PersistBudget <= 0 {
		opts.PersistBudget = 10 * time.Second
	}
	if opts.ClockSkew <= 0 {
		opts.ClockSkew = 5 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	w := opts.Metrics
	if w == nil {
		w = os.Stdout
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Engine{opts: opts, log: log, metrics: &metricWriter{w: w}, now: now}, nil
}

// DefaultMargin is how long before expiry a token is refreshed when its policy does not say:
// one schedule interval plus an hour, so a 24 h token on a 12 h schedule is refreshed twice a day.
func (e *Engine) DefaultMargin() time.Duration { return e.opts.ScheduleInterval + time.Hour }

// refreshBudget is the time one refresh may take: every provider attempt with its backoff,
// then the writes.
func (e *Engine) refreshBudget() time.Duration {
	b := e.opts.PersistBudget
	backoff := e.opts.Backoff
	for i := 0; i < e.opts.Attempts; i++ {
		b += e.opts.ProviderTimeout
		if i > 0 {
			b += backoff
			backoff *= 2
		}
	}
	return b
}

// Row is one token's line in the report. It never holds a secret.
type Row struct {
	Name       string `json:"name"`
	Outcome    string `json:"outcome"`
	ExpiresAt  string `json:"expires_at,omitempty"`
	Generation int64  `json:"generation,omitempty"`
	Error      string `json:"error,omitempty"`
}

// Report is what an invocation returns.
type Report struct {
	RequestID string         `json:"request_id,omitempty"`
	Tokens    []Row          `json:"tokens"`
	Summary   map[string]int `json:"summary"`
}

// Failed lists the rows whose outcome is failed.
func (r *Report) Failed() []Row {
	var out []Row
	for _, row := range r.Tokens {
		if row.Outcome == OutcomeFailed {
			out = append(out, row)
		}
	}
	return out
}

// Handle is the Lambda handler: it parses the event, runs every token it names (or every
// token under the prefix), and returns the report — with an error when any token failed,
// so alarms and retries see it. A rerun is harmless.
func (e *Engine) Handle(ctx context.Context, event json.RawMessage) (*Report, error) {
	req, err := ParseRequest(event)
	if err != nil {
		e.log.ErrorContext(ctx, "rejected event", "error", err.Error())
		return nil, err
	}
	return e.Run(ctx, req)
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
	report := &Report{Summary: map[string]int{}}
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		report.RequestID = lc.AwsRequestID
	}
	names := req.Tokens
	if req.Scheduled {
		listed, err := e.opts.Secrets.List(ctx, e.privatePrefix())
		if err != nil {
			e.log.ErrorContext(ctx, "listing private secrets failed", "error", err.Error())
			return nil, fmt.Errorf("refresher: list tokens: %w", err)
		}
		for _, full := range listed {
			names = append(names, strings.TrimPrefix(full, e.privatePrefix()))
		}
	}
	rows := make([]Row, len(names))
	sem := make(chan struct{}, e.opts.Concurrency)
	var wg sync.WaitGroup
	for i, name := range names {
		sem <- struct{}{}
		if left, ok := e.timeLeft(ctx); ok && left < e.refreshBudget() {
			<-sem
			rows[i] = Row{Name: name, Outcome: OutcomeFailed, Error: "not started: the invocation has less time left than one refresh needs"}
			continue
		}
		if ctx.Err() != nil {
			<-sem
			rows[i] = Row{Name: name, Outcome: OutcomeFailed, Error: "not started: " + ctx.Err().Error()}
			continue
		}
		wg.Add(1)
		go func(i int, name string) {
			defer wg.Done()
			defer func() { <-sem }()
			rows[i] = e.runToken(ctx, name, req.Force)
		}(i, name)
	}
	wg.Wait()
	sort.SliceStable(rows, func(a, b int) bool { return rows[a].Name < rows[b].Name })
	report.Tokens = rows
	for _, r := range rows {
		report.Summary[r.Outcome]++
	}
	e.log.InfoContext(ctx, "invocation done", "tokens", len(rows), "summary", report.Summary)
	if failed := report.Failed(); len(failed) > 0 {
		parts := make([]string, 0, len(failed))
		for _, f := range failed {
			parts = append(parts, f.Name+": "+f.Error)
		}
		return report, fmt.Errorf("refresher: %d of %d tokens failed: %s", len(failed), len(rows), strings.Join(parts, "; "))
	}
	return report, nil
}

func (e *Engine) privatePrefix() string       { return e.opts.Prefix + "private/" }
func (e *Engine) privateName(n string) string { return e.opts.Prefix + "private/" + n }
func (e *Engine) accessName(n string) string  { return e.opts.Prefix + "access/" + n }

func (e *Engine) timeLeft(ctx context.Context) (time.Duration, bool) {
	dl, ok := ctx.Deadline()
	if !ok {
		return 0, false
	}
	return time.Until(dl), true // the deadline is wall-clock time, whatever clock e.now tells
}

func newHolder(ctx context.Context) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	id := "local"
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		id = lc.AwsRequestID
	}
	return id + "/" + hex.EncodeToString(b[:])
}
