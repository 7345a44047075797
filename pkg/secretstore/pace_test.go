package secretstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// virtualLimiter is a rate.Limiter run on a virtual clock: Wait takes the
// next slot and moves the clock to it instead of sleeping, so the schedule
// the limiter imposes can be read without timing anything.
type virtualLimiter struct {
	mu    sync.Mutex
	lim   *rate.Limiter
	start time.Time
	now   time.Time
	waits int
}

func newVirtualLimiter(r rate.Limit, burst int) *virtualLimiter {
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	return &virtualLimiter{lim: rate.NewLimiter(r, burst), start: t0, now: t0}
}

func (v *virtualLimiter) Wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.waits++
	v.now = v.now.Add(v.lim.ReserveN(v.now, 1).DelayFrom(v.now))
	return nil
}

func (v *virtualLimiter) elapsed() (time.Duration, int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.now.Sub(v.start), v.waits
}

// TestWritesShareOnePace: writes from several goroutines through one Store
// all go through its one limiter (every write waits once, no read does), so
// N writes at rate R with burst B span at least (N-B)/R of the limiter's time.
func TestWritesShareOnePace(t *testing.T) {
	const (
		workers = 4
		puts    = 4 // PutCurrentVersion per worker, after its CreateSecret
		r       = 20
		burst   = 2
	)
	cfg := awsemu.Shared(t).AWSConfig(t)
	vl := newVirtualLimiter(r, burst)
	store := secretstore.NewWithOptions(secretsmanager.NewFromConfig(cfg), secretstore.Options{WriteLimiter: vl})
	ctx := context.Background()
	base := uniqueName(t, "paced")

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("%s-%d", base, w)
			if _, err := store.Create(ctx, name, token.Secret("v0")); err != nil {
				errs <- err
				return
			}
			for i := range puts {
				if err := store.PutCurrentVersion(ctx, name, token.Secret(fmt.Sprint("v", i+1)), uuid.NewString()); err != nil {
					errs <- err
					return
				}
				// Reads are not writes: they must not take a slot.
				if _, err := store.GetCurrent(ctx, name); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	elapsed, waits := vl.elapsed()
	const writes = workers * (1 + puts)
	if waits != writes {
		t.Errorf("limiter waits = %d, want %d (one per write, none per read)", waits, writes)
	}
	if min := time.Duration(float64(writes-burst) / r * float64(time.Second)); elapsed < min-time.Millisecond {
		t.Errorf("%d writes at %d/s (burst %d) spanned %v of limiter time, want at least %v", writes, r, burst, elapsed, min)
	}
}

// TestPaceDeadline: a write whose turn would come after its context's
// deadline is not sent, and says deadline (or cancelled), never throttled.
func TestPaceDeadline(t *testing.T) {
	cfg := awsemu.Shared(t).AWSConfig(t)
	raw := secretsmanager.NewFromConfig(cfg)
	tests := []struct {
		name     string
		opts     secretstore.Options
		ctx      func() (context.Context, context.CancelFunc)
		wantErr  error // nil: the second write goes through
		wantSent bool
	}{
		{name: "unpaced", opts: secretstore.Options{},
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), time.Minute)
			}, wantSent: true},
		{name: "next slot past the deadline", opts: secretstore.Options{WritesPerSecond: 1.0 / 3600},
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), time.Minute)
			}, wantErr: context.DeadlineExceeded},
		{name: "cancelled while waiting", opts: secretstore.Options{WriteLimiter: rate.NewLimiter(rate.Every(time.Hour), 1)},
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			}, wantErr: context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := secretstore.NewWithOptions(raw, tc.opts)
			name := uniqueName(t, "private")
			if _, err := store.Create(context.Background(), name, token.Secret("v0")); err != nil {
				t.Fatalf("Create: %v", err) // the burst's one slot
			}
			ctx, cancel := tc.ctx()
			defer cancel()
			n := uuid.NewString()
			err := store.PutCurrentVersion(ctx, name, token.Secret("v1"), n)
			if tc.wantErr == nil && err != nil {
				t.Fatalf("PutCurrentVersion: %v", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("PutCurrentVersion err = %v, want %v", err, tc.wantErr)
			}
			if errors.Is(err, secretstore.ErrThrottled) {
				t.Errorf("err = %v: a pacing wait is not a throttle", err)
			}
			_, gerr := store.GetVersion(context.Background(), name, n)
			if sent := gerr == nil; sent != tc.wantSent {
				t.Errorf("version written = %v (%v), want %v", sent, gerr, tc.wantSent)
			}
		})
	}
}

// nopWrites answers every write at once, so the benchmark measures the pace.
type nopWrites struct{ raceFake }

func (*nopWrites) PutSecretValue(context.Context, *secretsmanager.PutSecretValueInput, ...func(*secretsmanager.Options)) (*secretsmanager.PutSecretValueOutput, error) {
	return &secretsmanager.PutSecretValueOutput{}, nil
}

// BenchmarkPacedWrites: writes from parallel goroutines through one Store
// paced at 200/s; writes/s stays at or under 200 however many goroutines.
func BenchmarkPacedWrites(b *testing.B) {
	const r = 200
	store := secretstore.NewWithOptions(&nopWrites{}, secretstore.Options{WritesPerSecond: r})
	ctx := context.Background()
	start := time.Now()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := store.PutCurrentVersion(ctx, "s", token.Secret("v"), "id"); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
}
