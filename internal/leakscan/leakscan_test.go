package leakscan

import (
	"fmt"
	"strings"
	"testing"
)

type issuer []string

func (i issuer) Issued() []string { return i }

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		output string
		want   int
	}{
		{"clean", "token refreshed generation=2", 0},
		{"registered value", "oops access_token=at-123456789", 1},
		{"issued value", "refresh rt-abcdefgh was used", 1},
		{"both", "at-123456789 and rt-abcdefgh", 2},
		{"short values ignored", "abc", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			s.Register("at-123456789", "abc")
			s.RegisterIssuer(issuer{"rt-abcdefgh"})
			fmt.Fprint(s, tt.output)
			var summary strings.Builder
			if got := s.Check(&summary); got != tt.want {
				t.Errorf("got %d leaks, want %d", got, tt.want)
			}
			if strings.Contains(summary.String(), "at-123456789") || strings.Contains(summary.String(), "rt-abcdefgh") {
				t.Errorf("the summary prints a secret: %q", summary.String())
			}
		})
	}
}
