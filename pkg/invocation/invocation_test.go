package invocation

import (
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
