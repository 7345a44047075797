package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/smithy-go/logging"
)

func TestSetupRejectsBadEnvironment(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no table", map[string]string{"STATE_TABLE": ""}, "STATE_TABLE: required"},
		{"bad interval", map[string]string{"STATE_TABLE": "t", "SCHEDULE_INTERVAL": "twelve hours"}, "SCHEDULE_INTERVAL: want a positive duration"},
		{"negative timeout", map[string]string{"STATE_TABLE": "t", "PROVIDER_TIMEOUT": "-1s"}, "PROVIDER_TIMEOUT: want a positive duration"},
		{"concurrency not a number", map[string]string{"STATE_TABLE": "t", "CONCURRENCY": "many"}, "CONCURRENCY: want a whole number"},
		{"concurrency out of range", map[string]string{"STATE_TABLE": "t", "CONCURRENCY": "0"}, "CONCURRENCY: want 1 to 256"},
		{"write rate not a number", map[string]string{"STATE_TABLE": "t", "WRITE_RATE": "fast"}, "WRITE_RATE: want writes per second"},
		{"write rate above the service's", map[string]string{"STATE_TABLE": "t", "WRITE_RATE": "60"}, "WRITE_RATE: want writes per second above 0 and at most 50"},
		{"write rate zero", map[string]string{"STATE_TABLE": "t", "WRITE_RATE": "0"}, "WRITE_RATE: want writes per second"},
		{"bad sweep interval", map[string]string{"STATE_TABLE": "t", "SWEEP_INTERVAL": "often"}, "SWEEP_INTERVAL: want a positive duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := setup(slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got err %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestSetupDefaults(t *testing.T) {
	t.Setenv("STATE_TABLE", "tokens")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	eng, err := setup(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("got err %v, want none", err)
	}
	if got := eng.SweepInterval(); got != 5*time.Minute {
		t.Errorf("got sweep interval %s, want 5m", got)
	}
}

func TestSetupSweepOff(t *testing.T) {
	for _, v := range []string{"0", "off"} {
		t.Setenv("STATE_TABLE", "tokens")
		t.Setenv("AWS_REGION", "us-east-1")
		t.Setenv("SWEEP_INTERVAL", v)
		t.Setenv("EVENT_BUS_NAME", "default")
		eng, err := setup(slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatalf("SWEEP_INTERVAL=%s: %v", v, err)
		}
		if got := eng.SweepInterval(); got >= 0 {
			t.Errorf("SWEEP_INTERVAL=%s: got %s, want no sweep (negative)", v, got)
		}
	}
}

// ESCROW_KEY_ID builds the KMS sealer; without it the function says a refused persist after
// a rotation is held only in memory.
func TestSetupEscrow(t *testing.T) {
	for _, tt := range []struct {
		key      string
		wantWarn bool
	}{{"", true}, {"alias/token-refresher-escrow", false}} {
		t.Setenv("STATE_TABLE", "tokens")
		t.Setenv("AWS_REGION", "us-east-1")
		t.Setenv("ESCROW_KEY_ID", tt.key)
		var out strings.Builder
		if _, err := setup(slog.New(slog.NewTextHandler(&out, nil))); err != nil {
			t.Fatalf("ESCROW_KEY_ID=%q: %v", tt.key, err)
		}
		if got := strings.Contains(out.String(), "held only in memory"); got != tt.wantWarn {
			t.Errorf("ESCROW_KEY_ID=%q: got warning %v, want %v (log %q)", tt.key, got, tt.wantWarn, out.String())
		}
	}
}

// Logs are JSON whatever AWS_LAMBDA_LOG_FORMAT says, with the invocation's request id.
func TestLogsAreJSON(t *testing.T) {
	var buf strings.Builder
	log := slog.New(&requestIDHandler{slog.NewJSONHandler(&buf, nil)})
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "req-1"})
	log.With("token", "a").InfoContext(ctx, "token done")
	var m map[string]any
	if err := json.Unmarshal([]byte(buf.String()), &m); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	if m["requestId"] != "req-1" || m["token"] != "a" {
		t.Errorf("log line %v, want requestId req-1 and token a", m)
	}
}

// The AWS SDK's own log lines go through the function's JSON handler, not its default
// text logger on stderr.
func TestSDKLoggerWritesJSON(t *testing.T) {
	var buf strings.Builder
	l := sdkLogger{slog.New(slog.NewJSONHandler(&buf, nil))}
	l.Logf(logging.Warn, "failed to discard remaining HTTP response body: %s", "use of closed network connection")
	var line struct {
		Level, Msg, Source string
	}
	if err := json.Unmarshal([]byte(buf.String()), &line); err != nil {
		t.Fatalf("got %q, want one JSON line: %v", buf.String(), err)
	}
	if line.Level != "WARN" || line.Source != "aws-sdk" || !strings.Contains(line.Msg, "use of closed network connection") {
		t.Errorf("got %+v, want level WARN, source aws-sdk and the SDK's message", line)
	}
}
