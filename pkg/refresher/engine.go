// Package refresher is the engine: for each token it claims a lease and a quota unit, reads
// the committed private version, calls the provider, persists the new version first,
// commits the pointer and publishes the access secret (docs/design.md §4). The persist moves
// AWSCURRENT with the new version: two Secrets Manager writes per refresh.
// plan (plan.go) decides what one token needs; the executors in this package do it.
package refresher

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/notify"
	"github.com/seed-502fa48b/token-refresher/pkg/secretname"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// The invoke contract lives in pkg/invocation; these names keep the engine's callers short.
type (
	Request = invocation.Request
	Row     = invocation.Row
	Report  = invocation.Report
)

// Outcomes, one per token per invocation (docs/design.md §5).
const (
	OutcomeRefreshed      = invocation.OutcomeRefreshed
	OutcomeNotDue         = invocation.OutcomeNotDue
	OutcomeLeaseHeld      = invocation.OutcomeLeaseHeld
	OutcomeQuotaExhausted = invocation.OutcomeQuotaExhausted
	OutcomeThrottled      = invocation.OutcomeThrottled
	OutcomeNeedsReauth    = invocation.OutcomeNeedsReauth
	OutcomeInvalidConfig  = invocation.OutcomeInvalidConfig
	OutcomeFailed         = invocation.OutcomeFailed
	OutcomeDeferred       = invocation.OutcomeDeferred
)

// reportReserve is the time kept at the end of an invocation to return the report.
const reportReserve = 500 * time.Millisecond

// secretStore is what the engine needs from Secrets Manager (pkg/secretstore).
type secretStore interface {
	Entries(ctx context.Context, prefix string) ([]secretstore.Entry, error)
	GetVersion(ctx context.Context, name, versionID string) (secretstore.Version, error)
	Stages(ctx context.Context, name string) (map[string][]string, error)
	PutCurrentVersion(ctx context.Context, name string, value token.Secret, versionID string) error
	MoveCurrent(ctx context.Context, name, to, from string) error
	Publish(ctx context.Context, name string, value token.Secret, clientToken string) error
}

// stateTable is what the engine needs from DynamoDB (pkg/ledger).
type stateTable interface {
	Get(ctx context.Context, name string) (ledger.Record, error)
	List(ctx context.Context) ([]ledger.Record, error)
	Due(ctx context.Context, before time.Time) ([]ledger.Record, error)
	Create(ctx context.Context, r ledger.Record) error
	Claim(ctx context.Context, c ledger.Claim) error
	Renew(ctx context.Context, name, holder string, generation int64, until time.Time) (ledger.Record, error)
	ReserveQuota(ctx context.Context, q ledger.QuotaReservation) error
	Throttle(ctx context.Context, key, day string, until time.Time) error
	Quota(ctx context.Context, key, day string) (ledger.Bucket, error)
	Commit(ctx context.Context, c ledger.Commit) (ledger.Record, error)
	Release(ctx context.Context, r ledger.Release) (ledger.Record, error)
	MarkUnpublished(ctx context.Context, name string, generation int64) error
	MarkLabelLag(ctx context.Context, name string, generation int64, from string) error
	Escrow(ctx context.Context, w ledger.EscrowWrite) error
	MarkPresented(ctx context.Context, p ledger.Presenting) error
	Unmark(ctx context.Context, name, holder string, generation int64, to string) error
}

// sealer encrypts a rotated private document for the state table (pkg/escrow), bound to
// the token and the in-flight version id.
type sealer interface {
	Seal(ctx context.Context, name, to string, plaintext token.Secret) ([]byte, error)
	Open(ctx context.Context, name, to string, sealed []byte) (token.Secret, error)
}

// notifier publishes token-level events (pkg/notify).
type notifier interface {
	Publish(ctx context.Context, events ...notify.Event) error
}

// Options configures an Engine. Zero values take the defaults noted, which New alone fills:
// a caller sets only what it was told.
type Options struct {
	Secrets secretStore
	Ledger  stateTable
	Prefix  string // default "token-refresher/"

	ScheduleInterval time.Duration // the reconcile interval; default 12h
	// SweepInterval is the time between two sweeps: a run refreshes what falls due before
	// the next one. 0 takes the default 5m; negative means no sweep runs, so a reconcile
	// refreshes what would expire before the next reconcile.
	SweepInterval time.Duration
	Concurrency   int      // tokens refreshed at once; default 8
	Notifier      notifier // optional: EventBridge notifications
	// Sealer, optional, escrows a rotated token in the state table when Secrets Manager
	// refuses its persist (docs/design.md §4). nil: no escrow; such a token is held only
	// in the dying process.
	Sealer sealer

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
		opts.Prefix = secretname.DefaultPrefix
	}
	if opts.ScheduleInterval <= 0 {
		opts.ScheduleInterval = 12 * time.Hour
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = 5 * time.Minute
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

// SweepInterval is the configured time between sweeps; negative when no sweep runs.
func (e *Engine) SweepInterval() time.Duration { return e.opts.SweepInterval }

// reach is how far ahead a reconcile looks at expiry when no sweep runs: to the next
// reconcile plus an hour, so a run a little early still refreshes what would lapse.
func (e *Engine) reach(tr trigger) time.Duration {
	if tr != triggerReconcile || e.opts.SweepInterval > 0 {
		return 0
	}
	return e.opts.ScheduleInterval + time.Hour
}

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

// minProviderCall is the shortest provider call worth starting: the call is bounded by what
// the lease leaves after the persist budget, but never below this.
const minProviderCall = 3 * time.Second

// minStart is the least time a refresh needs to start: its persist budget plus one bounded
// provider call (docs/design.md §3). With the defaults a 20 s invocation still refreshes.
func (e *Engine) minStart() time.Duration {
	return e.opts.PersistBudget + min(e.opts.ProviderTimeout, minProviderCall)
}

func timeLeft(ctx context.Context) (time.Duration, bool) {
	dl, ok := ctx.Deadline()
	if !ok {
		return 0, false
	}
	return time.Until(dl), true // the deadline is wall-clock time, whatever clock e.now tells
}

// runState is what the token runs of one invocation share.
type runState struct {
	trigger trigger
	force   bool
	// smThrottles counts Secrets Manager calls that came back throttled after the SDK's
	// retries (a metric): writes are paced and retried under their leases, and the run
	// keeps going until its deadline (docs/design.md §10).
	smThrottles atomic.Int64
	quotaMu     sync.Mutex
	quotaKeys   map[string]quotaSeen
}

type quotaSeen struct {
	key   string
	day   string
	limit int
}

func (s *runState) noteQuota(q quotaSeen) {
	s.quotaMu.Lock()
	s.quotaKeys[q.key+"#"+q.day] = q
	s.quotaMu.Unlock()
}
