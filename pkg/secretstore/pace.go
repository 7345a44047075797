package secretstore

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"golang.org/x/time/rate"
)

// WriteLimiter paces writes; *rate.Limiter is one. Wait blocks until one
// write may go or ctx ends.
type WriteLimiter interface {
	Wait(ctx context.Context) error
}

// newWriteLimiter builds the limiter Options ask for, nil when unpaced.
func newWriteLimiter(opts Options) WriteLimiter {
	if opts.WriteLimiter != nil {
		return opts.WriteLimiter
	}
	if opts.WritesPerSecond <= 0 {
		return nil
	}
	// Burst 1 spreads writes evenly: Secrets Manager counts its 50 writes/s
	// over short windows, so a burst of queued workers must not land at once.
	return rate.NewLimiter(rate.Limit(opts.WritesPerSecond), max(opts.WriteBurst, 1))
}

// pacedClient waits on the limiter before every Secrets Manager write the
// account-wide write quota counts (PutSecretValue, UpdateSecretVersionStage,
// CreateSecret); reads pass straight through. One per Store, so every worker
// sharing the Store shares the pace.
type pacedClient struct {
	secretsAPI
	lim WriteLimiter
}

// wait maps the limiter's refusal to a context error: a write whose deadline
// (a lease's end) would pass before its turn is a deadline, not a throttle,
// and rate.Limiter says so early with an error of its own.
func (c pacedClient) wait(ctx context.Context) error {
	if err := c.lim.Wait(ctx); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("secretstore: write pace: %w", cerr)
		}
		return fmt.Errorf("secretstore: write pace: the next write slot is past the deadline: %w", context.DeadlineExceeded)
	}
	return nil
}

func (c pacedClient) PutSecretValue(ctx context.Context, in *secretsmanager.PutSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.PutSecretValueOutput, error) {
	if err := c.wait(ctx); err != nil {
		return nil, err
	}
	return c.secretsAPI.PutSecretValue(ctx, in, optFns...)
}

func (c pacedClient) UpdateSecretVersionStage(ctx context.Context, in *secretsmanager.UpdateSecretVersionStageInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.UpdateSecretVersionStageOutput, error) {
	if err := c.wait(ctx); err != nil {
		return nil, err
	}
	return c.secretsAPI.UpdateSecretVersionStage(ctx, in, optFns...)
}

func (c pacedClient) CreateSecret(ctx context.Context, in *secretsmanager.CreateSecretInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.CreateSecretOutput, error) {
	if err := c.wait(ctx); err != nil {
		return nil, err
	}
	return c.secretsAPI.CreateSecret(ctx, in, optFns...)
}
