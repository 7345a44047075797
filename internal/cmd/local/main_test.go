package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadInput: a bad flag or event file is refused before anything starts, naming the flag.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	notJSON := filepath.Join(dir, "event.json")
	if err := os.WriteFile(notJSON, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing event file", []string{"-invoke", filepath.Join(dir, "missing.json")}, "-invoke"},
		{"event not JSON", []string{"-invoke", notJSON}, "-invoke: " + notJSON + " is not JSON"},
		{"stray argument", []string{"events/scheduled.json"}, `unexpected argument "events/scheduled.json"`},
		{"unknown flag", []string{"-nope"}, "-nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // anything that got past validation would stop at once
			err := run(ctx, tc.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
