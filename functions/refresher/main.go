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
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
)

func main() {
	logger := lambdacontext.NewLogger()
	engine, err := setup(logger)
	if err != nil {
		logger.Error("setup failed", "error", err.Error())
		os.Exit(1)
	}
	lambda.Start(engine.Handle)
}

func setup(logger *slog.Logger) (*refresher.Engine, error) {
	env := envReader{}
	table := env.str("STATE_TABLE", "")
	if table == "" {
		return nil, fmt.Errorf("STATE_TABLE: required")
	}
	opts := refresher.Options{
		Prefix:           env.str("SECRET_PREFIX", "token-refresher/"),
		ScheduleInterval: env.duration("SCHEDULE_INTERVAL", 12*time.Hour),
		Concurrency:      env.int("CONCURRENCY", 8),
		// Tuning knobs, mostly for tests that need short leases; defaults suit production.
		ProviderTimeout: env.duration("PROVIDER_TIMEOUT", 10*time.Second),
		Attempts:        env.int("PROVIDER_ATTEMPTS", 3),
		Backoff:         env.duration("PROVIDER_BACKOFF", 500*time.Millisecond),
		PersistBudget:   env.duration("PERSIST_BUDGET", 10*time.Second),
		ClockSkew:       env.duration("LEASE_SKEW", 5*time.Second),
		Logger:          logger,
		Metrics:         os.Stdout,
		HTTPClient: &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout: 5 * time.Second,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     60 * time.Second,
			ForceAttemptHTTP2:   true,
		}},
	}
	if env.err != nil {
		return nil, env.err
	}
	if opts.Concurrency < 1 || opts.Concurrency > 256 {
		return nil, fmt.Errorf("CONCURRENCY: want 1 to 256")
	}
	// AWS_ENDPOINT_URL (the SDK's own setting) points the clients at a local stand-in.
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	opts.Secrets = secretstore.New(secretsmanager.NewFromConfig(cfg))
	opts.Ledger = ledger.New(dynamodb.NewFromConfig(cfg), ledger.Options{Table: table})
	return refresher.New(opts)
}

// envReader reads settings and keeps the first error, naming the variable.
type envReader struct{ err error }

func (r *envReader) str(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

func (r *envReader) duration(key string, def time.Duration) time.Duration {
	v := r.str(key, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		r.fail(fmt.Errorf("%s: want a positive duration like 12h", key))
		return def
	}
	return d
}

func (r *envReader) int(key string, def int) int {
	v := r.str(key, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.fail(fmt.Errorf("%s: want a whole number", key))
		return def
	}
	return n
}

func (r *envReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}
