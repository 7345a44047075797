package refresher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// countingTransport counts the AWS requests the SDK sends.
type countingTransport struct {
	next  http.RoundTripper
	calls atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.calls.Add(1)
	return c.next.RoundTrip(r)
}

// benchEnv is an installation for benchmarks: n tokens of a 1 h rotating provider that
// answers after latency, an engine with the given concurrency, AWS calls counted.
type benchEnv struct {
	engine *refresher.Engine
	clock  *providersim.Clock
	calls  *countingTransport
	n      int
}

func newBenchEnv(b *testing.B, n, concurrency int, latency time.Duration) *benchEnv {
	b.Helper()
	cfg := awsemu.Shared(b).AWSConfig(b)
	ct := &countingTransport{next: http.DefaultTransport}
	cfg.HTTPClient = &http.Client{Transport: ct}
	ctx := context.Background()
	prefix, table := "bench-"+randID()+"/", "bench-"+randID()
	ddb := dynamodb.NewFromConfig(cfg)
	if err := ledger.CreateTable(ctx, ddb, table); err != nil {
		b.Fatal(err)
	}
	clock := providersim.NewClock(time.Now())
	cs := "cs-" + randID()
	registerSecrets(cs)
	sim := providersim.NewRotating(providersim.RotatingOptions{ClientID: "app", ClientSecret: cs, AccessTTL: time.Hour, Now: clock.Now})
	b.Cleanup(sim.Close)
	registerIssuer(sim)
	sim.SetLatency(latency)
	store := secretstore.New(secretsmanager.NewFromConfig(cfg))
	for i := 0; i < n; i++ {
		raw, _ := json.Marshal(rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""))
		if _, err := store.Create(ctx, fmt.Sprintf("%sprivate/t%03d", prefix, i), token.Secret(raw)); err != nil {
			b.Fatal(err)
		}
	}
	eng, err := refresher.New(refresher.Options{
		Secrets: store, Ledger: ledger.New(ddb, ledger.Options{Table: table, Now: clock.Now}), Prefix: prefix,
		Concurrency: concurrency, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: io.Discard, Now: clock.Now,
	})
	if err != nil {
		b.Fatal(err)
	}
	be := &benchEnv{engine: eng, clock: clock, calls: ct, n: n}
	if rep, err := eng.Run(ctx, refresher.Request{}); err != nil || rep.Summary[refresher.OutcomeRefreshed] != n {
		b.Fatalf("first reconcile: %v %v", rep.Summary, err)
	}
	return be
}

// BenchmarkSweepRefresh: one sweep invocation refreshing 64 due tokens against a provider
// that answers in 50 ms, at CONCURRENCY 8 and 32. tokens/s is per invocation.
func BenchmarkSweepRefresh(b *testing.B) {
	for _, c := range []int{8, 32} {
		b.Run(fmt.Sprintf("concurrency=%d", c), func(b *testing.B) {
			be := newBenchEnv(b, 64, c, 50*time.Millisecond)
			var refreshed int
			var elapsed time.Duration
			calls0 := be.calls.calls.Load()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				be.clock.Advance(34 * time.Minute) // every token past half its hour and its spread
				start := time.Now()
				rep, err := be.engine.Run(context.Background(), refresher.Request{Sweep: true})
				elapsed += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				refreshed += rep.Summary[refresher.OutcomeRefreshed]
			}
			b.StopTimer()
			if refreshed != be.n*b.N {
				b.Fatalf("refreshed %d, want %d", refreshed, be.n*b.N)
			}
			b.ReportMetric(float64(refreshed)/elapsed.Seconds(), "tokens/s")
			b.ReportMetric(float64(be.calls.calls.Load()-calls0-int64(b.N))/float64(refreshed), "aws-calls/refresh")
		})
	}
}

// BenchmarkNotDue: a reconcile and a sweep over 64 tokens none of which is due: the AWS
// calls each makes per token (the listing calls are shared).
func BenchmarkNotDue(b *testing.B) {
	be := newBenchEnv(b, 64, 8, 0)
	for _, req := range []refresher.Request{{}, {Sweep: true}} {
		kind := "reconcile"
		if req.Sweep {
			kind = "sweep"
		}
		b.Run(kind, func(b *testing.B) {
			calls0 := be.calls.calls.Load()
			for i := 0; i < b.N; i++ {
				rep, err := be.engine.Run(context.Background(), req)
				if err != nil || (kind == "reconcile" && rep.Summary[refresher.OutcomeNotDue] != be.n) {
					b.Fatalf("%s: %v %v", kind, rep.Summary, err)
				}
			}
			b.ReportMetric(float64(be.calls.calls.Load()-calls0)/float64(b.N), "aws-calls/run")
			b.ReportMetric(float64(be.calls.calls.Load()-calls0)/float64(b.N*be.n), "aws-calls/token")
		})
	}
}
