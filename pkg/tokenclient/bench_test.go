package tokenclient_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/pkg/tokenclient"
)

// BenchmarkTokenCached measures the hot path: a fresh cached token, real clock.
func BenchmarkTokenCached(b *testing.B) {
	sm := secretsmanager.NewFromConfig(awsemu.Shared(b).AWSConfig(b))
	name := "token-refresher/access/bench-" + time.Now().Format("150405.000000000")
	doc := `{"access_token":"bench-token","token_type":"Bearer","expires_at":"` +
		time.Now().Add(24*time.Hour).UTC().Format(time.RFC3339) + `","generation":1,"status":"active"}`
	if err := putSecret(context.Background(), sm, name, doc); err != nil {
		b.Fatal(err)
	}
	count := &countingSM{sm: sm}
	c := tokenclient.New(count, name, tokenclient.Options{})
	ctx := context.Background()
	if _, err := c.Token(ctx); err != nil {
		b.Fatal(err)
	}

	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Token(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Token(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	if n := count.calls(); n != 1 {
		b.Errorf("GetSecretValue calls = %d, want 1", n)
	}
}
