// Command loadtest runs internal/loadtest once on its own moto and prints the figures
// (make loadtest). Flags override the LOADTEST_* environment variables.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/loadtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "loadtest: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	var cfg loadtest.Config
	flag.IntVar(&cfg.Tokens, "tokens", envInt("LOADTEST_TOKENS", 1000), "tokens due at once (LOADTEST_TOKENS)")
	flag.IntVar(&cfg.WriteLimit, "write-limit", envInt("LOADTEST_WRITE_LIMIT", 50), "Secrets Manager writes/s the proxy allows (LOADTEST_WRITE_LIMIT)")
	flag.Float64Var(&cfg.Pace, "pace", envFloat("LOADTEST_PACE", 40), "client-side writes/s in the secret store, as the function's WRITE_RATE (default 40); 0 unpaced (LOADTEST_PACE)")
	flag.IntVar(&cfg.Concurrency, "concurrency", envInt("CONCURRENCY", 32), "the engine's CONCURRENCY (CONCURRENCY)")
	flag.DurationVar(&cfg.Deadline, "deadline", envDuration("LOADTEST_DEADLINE", 60*time.Second), "real time one invocation may run (LOADTEST_DEADLINE)")
	flag.DurationVar(&cfg.SweepInterval, "sweep", envDuration("LOADTEST_SWEEP", 5*time.Minute), "simulated time between invocations (LOADTEST_SWEEP)")
	flag.IntVar(&cfg.MaxInvocations, "max-invocations", envInt("LOADTEST_MAX_INVOCATIONS", 30), "stop after this many invocations (LOADTEST_MAX_INVOCATIONS)")
	flag.DurationVar(&cfg.ProviderLatency, "provider-latency", envDuration("LOADTEST_PROVIDER_LATENCY", 0), "provider answer time (LOADTEST_PROVIDER_LATENCY)")
	flag.Parse()
	if cfg.Tokens < 1 || cfg.Tokens > 100_000 || cfg.MaxInvocations > 1000 {
		return fmt.Errorf("want 1 to 100000 tokens and at most 1000 invocations")
	}

	moto, err := awsemu.Start(ctx)
	if err != nil {
		return err
	}
	defer moto.Close()
	cfg.MotoURL = moto.URL
	cfg.Progress = os.Stderr
	started := time.Now()
	res, err := loadtest.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Println()
	res.Print(os.Stdout)
	fmt.Printf("wall time %s\n", time.Since(started).Round(time.Second))
	return nil
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil {
		return v
	}
	return def
}

func envFloat(key string, def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(key), 64); err == nil {
		return v
	}
	return def
}

func envDuration(key string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(key)); err == nil {
		return v
	}
	return def
}
