package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"
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
	if got := eng.DefaultMargin().String(); got != "13h0m0s" {
		t.Errorf("got default margin %s, want 13h0m0s (12h schedule + 1h)", got)
	}
}
