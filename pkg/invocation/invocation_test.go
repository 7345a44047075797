package invocation

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"acme", true},
		{"acme/prod-1", true},
		{"a.b_c@d+e=f/g-h", true},
		{"9lives", true},
		{"", false},
		{"-lead", false},
		{"/lead", false},
		{"has space", false},
		{"tab\t", false},
		{"ünicode", false},
		{strings.Repeat("a", MaxNameLen), true},
		{strings.Repeat("a", MaxNameLen+1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidName(tt.name); got != tt.want {
				t.Errorf("ValidName(%q) = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
}

// FuzzValidName checks the hand-written rule against the regexp it replaced.
func FuzzValidName(f *testing.F) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+=/-]{0,200}$`)
	for _, s := range []string{"acme", "-x", "a/b", "", "a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidName(s), re.MatchString(s); got != want {
			t.Fatalf("ValidName(%q) = %v, regexp says %v", s, got, want)
		}
	})
}

func TestReportFailed(t *testing.T) {
	r := Report{Tokens: []Row{{Name: "a", Outcome: OutcomeFailed}, {Name: "b", Outcome: OutcomeRefreshed}}}
	got := r.Failed()
	if len(got) != 1 || got[0].Name != "a" {
		t.Fatalf("Failed() = %+v, want only a", got)
	}
}

// Issue 18 item 4: the error payload stays bounded whatever the number of failed rows.
func TestFailureMessageBounded(t *testing.T) {
	for _, n := range []int{0, 1, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := &Report{Summary: map[string]int{OutcomeRefreshed: 3}}
			for i := 0; i < n; i++ {
				r.Tokens = append(r.Tokens, Row{Name: fmt.Sprintf("token-%04d", i), Outcome: OutcomeFailed,
					Error: "read private version: " + strings.Repeat("operation error Secrets Manager ", 40)})
			}
			if n > 0 {
				r.Summary[OutcomeFailed] = n
			}
			msg := r.FailureMessage()
			switch {
			case n == 0 && msg != "":
				t.Fatalf("no failures: got %q, want empty", msg)
			case n == 0:
				return
			case len(msg) > MaxErrorBytes:
				t.Errorf("got %d bytes, want at most %d", len(msg), MaxErrorBytes)
			case !strings.Contains(msg, fmt.Sprintf("%d of %d tokens failed", n, n)) || !strings.Contains(msg, fmt.Sprintf("failed %d", n)) || !strings.Contains(msg, "refreshed 3"):
				t.Errorf("got %q, want the counts by outcome", msg)
			case !strings.Contains(msg, "token-0000: read private version"):
				t.Errorf("got %q, want the first failed name with its cause", msg)
			case strings.Count(msg, "token-") > MaxErrorNames:
				t.Errorf("got %d names, want at most %d", strings.Count(msg, "token-"), MaxErrorNames)
			}
			if n == 1000 && !strings.Contains(msg, "and 995 more") {
				t.Errorf("got %q, want the number not named", msg)
			}
			t.Logf("figure: %d failed rows → %d-byte error", n, len(msg))
		})
	}
}
