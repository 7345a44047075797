// Command bootstrap is the refresher Lambda: wiring only. It reads the environment once,
// builds the AWS clients once and hands every invocation to the engine.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
	_ "time/tzdata" // quota days in Asia/Kolkata etc. without relying on the image's zoneinfo

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go/logging"

	"github.com/seed-502fa48b/token-refresher/pkg/escrow"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/notify"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
)

func main() {
	logger := slog.New(&requestIDHandler{slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: logLevel()})})
	// aws-lambda-go echoes a returned error through the standard logger; routing it
	// through the same handler keeps every line JSON for Logs Insights and the alarms.
	slog.SetDefault(logger)
	engine, err := setup(logger)
	if err != nil {
		logger.Error("setup failed", "error", err.Error())
		os.Exit(1)
	}
	lambda.Start(engine.Handle)
}

// defaultWriteRate is WRITE_RATE's default, in Secrets Manager writes per second: below the
// account's 50/s per region, leaving room for its other writers (docs/design.md §10).
const defaultWriteRate = 40

func setup(logger *slog.Logger) (*refresher.Engine, error) {
	env := envReader{}
	table := env.str("STATE_TABLE")
	if table == "" {
		return nil, fmt.Errorf("STATE_TABLE: required")
	}
	// Only what the environment sets: refresher.New fills every default.
	opts := refresher.Options{
		Prefix:           env.str("SECRET_PREFIX"),
		ScheduleInterval: env.duration("SCHEDULE_INTERVAL"),
		SweepInterval:    env.sweep("SWEEP_INTERVAL"),
		Concurrency:      env.intIn("CONCURRENCY", 1, 256),
		// Tuning knobs, mostly for tests that need short leases; defaults suit production.
		ProviderTimeout: env.duration("PROVIDER_TIMEOUT"),
		Attempts:        env.int("PROVIDER_ATTEMPTS"),
		Backoff:         env.duration("PROVIDER_BACKOFF"),
		PersistBudget:   env.duration("PERSIST_BUDGET"),
		ClockSkew:       env.duration("LEASE_SKEW"),
		Logger:          logger,
		HTTPClient: &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout: 5 * time.Second,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     60 * time.Second,
			ForceAttemptHTTP2:   true,
		}},
	}
	writeRate := env.rate("WRITE_RATE", defaultWriteRate)
	if env.err != nil {
		return nil, env.err
	}
	// AWS_ENDPOINT_URL (the SDK's own setting) points the clients at a local stand-in.
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithLogger(sdkLogger{logger}))
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	// One paced Store for every worker: the limiter keeps the run under WRITE_RATE, and the
	// SDK's adaptive retry slows down on what Secrets Manager still throttles.
	sm := secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) {
		o.Retryer = retry.NewAdaptiveMode()
	})
	opts.Secrets = secretstore.NewWithOptions(sm, secretstore.Options{KMSKeyID: env.str("KMS_KEY_ID"), WritesPerSecond: writeRate})
	opts.Ledger = ledger.New(dynamodb.NewFromConfig(cfg), ledger.Options{Table: table})
	if key := env.str("ESCROW_KEY_ID"); key != "" {
		sealer, err := escrow.New(kms.NewFromConfig(cfg), escrow.Options{KeyID: key})
		if err != nil {
			return nil, fmt.Errorf("ESCROW_KEY_ID: %w", err)
		}
		opts.Sealer = sealer
	} else {
		logger.Warn("ESCROW_KEY_ID is not set: a rotated token that Secrets Manager refuses is held only in memory and lost when the invocation ends")
	}
	if bus := env.str("EVENT_BUS_NAME"); bus != "" {
		opts.Notifier = notify.New(eventbridge.NewFromConfig(cfg), notify.Options{EventBusName: bus, Logger: logger})
	}
	return refresher.New(opts)
}

// maxWriteRate is Secrets Manager's own limit: a pace above it only meets throttling.
const maxWriteRate = 50

// rate reads a writes-per-second pace in (0, maxWriteRate]; unset takes def.
func (r *envReader) rate(key string, def float64) float64 {
	v := r.str(key)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 || f > maxWriteRate {
		r.fail(fmt.Errorf("%s: want writes per second above 0 and at most %d", key, maxWriteRate))
		return 0
	}
	return f
}

// sweep reads SWEEP_INTERVAL: a duration, or "0"/"off" when no sweep schedule runs.
func (r *envReader) sweep(key string) time.Duration {
	switch r.str(key) {
	case "0", "off":
		return -1
	}
	return r.duration(key)
}

// logLevel reads AWS_LAMBDA_LOG_LEVEL (Lambda's advanced logging controls); default INFO.
func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("AWS_LAMBDA_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}

// requestIDHandler writes JSON always (whatever the function's log format setting) and adds
// the Lambda request id of the invocation a line belongs to.
type requestIDHandler struct{ slog.Handler }

func (h *requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		r.AddAttrs(slog.String("requestId", lc.AwsRequestID))
	}
	return h.Handler.Handle(ctx, r)
}

func (h *requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &requestIDHandler{h.Handler.WithAttrs(attrs)}
}

func (h *requestIDHandler) WithGroup(name string) slog.Handler {
	return &requestIDHandler{h.Handler.WithGroup(name)}
}

// envReader reads settings and keeps the first error, naming the variable. An unset
// variable reads as the zero value, which the engine takes as "use the default".
type envReader struct{ err error }

func (r *envReader) str(key string) string { return os.Getenv(key) }

func (r *envReader) duration(key string) time.Duration {
	v := r.str(key)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		r.fail(fmt.Errorf("%s: want a positive duration like 12h", key))
		return 0
	}
	return d
}

func (r *envReader) int(key string) int {
	v := r.str(key)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.fail(fmt.Errorf("%s: want a whole number", key))
		return 0
	}
	return n
}

// intIn reads a whole number that, when set, must lie in [lo, hi].
func (r *envReader) intIn(key string, lo, hi int) int {
	n := r.int(key)
	if r.str(key) != "" && r.err == nil && (n < lo || n > hi) {
		r.fail(fmt.Errorf("%s: want %d to %d", key, lo, hi))
	}
	return n
}

func (r *envReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// sdkLogger routes the AWS SDK's own log lines (e.g. "failed to discard remaining HTTP
// response body") through slog: its default logger writes text to stderr, and every line
// the function writes must be JSON. The SDK logs no request or response bodies unless
// ClientLogMode asks for them, which the function never sets.
type sdkLogger struct{ l *slog.Logger }

func (s sdkLogger) Logf(c logging.Classification, format string, v ...any) {
	level := slog.LevelInfo
	if c == logging.Warn {
		level = slog.LevelWarn
	}
	s.l.Log(context.Background(), level, fmt.Sprintf(format, v...), "source", "aws-sdk")
}
